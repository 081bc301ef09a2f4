//! Differential tests: `uevd test` against systemd-udevd 252's `udevadm test`, on the same rule
//! files and the same real devices of this machine's `/sys`, comparing properties (with
//! DEVLINKS, TAGS, CURRENT_TAGS), node owner/group/mode and RUN lists: a focused corpus
//! (`tests/oracle/*.rules`) and Debian's full rule set.
//!
//! `udevadm test` writes to `/run/udev` and `/dev`, and with Debian's rules even renames network
//! interfaces, so it runs in a private mount and network namespace with tmpfs over `/run`,
//! `/dev` and every udev rules directory (the corpus files are copied into its
//! `/etc/udev/rules.d`). The host is not touched. Intentional differences: `IGNORED` (values
//! that differ by nature) and `from_missing_builtins` (what builtins uevd does not have yet
//! produce). A fake sysfs cannot be compared: udevadm 252 refuses any syspath that is not on a
//! sysfs filesystem ("outside of sysfs"), so fake trees are covered by `uevd-rules`' unit tests.

use super::util::uevd;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Properties whose values differ by design.
const IGNORED: &[(&str, &str)] = &[
    (
        "USEC_INITIALIZED",
        "a timestamp: when each tool first saw the device",
    ),
    (
        "SEQNUM",
        "synthesized events have no kernel sequence number",
    ),
];

/// What one tool decided for one device.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    properties: BTreeMap<String, String>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<String>,
    run: Vec<String>,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle")
}

/// Normalises a property value that is a set in udev (its order is a hash order).
fn normalise(key: &str, value: &str) -> String {
    match key {
        "DEVLINKS" => {
            let links: BTreeSet<&str> = value.split(' ').filter(|l| !l.is_empty()).collect();
            links.into_iter().collect::<Vec<_>>().join(" ")
        }
        "TAGS" | "CURRENT_TAGS" => {
            let tags: BTreeSet<&str> = value.split(':').filter(|t| !t.is_empty()).collect();
            format!(":{}:", tags.into_iter().collect::<Vec<_>>().join(":"))
        }
        _ => value.to_owned(),
    }
}

fn keep(key: &str) -> bool {
    !IGNORED.iter().any(|(k, _)| *k == key)
}

/// Runs `udevadm -d test --action=add /sys/DEVPATH` with only `rule_file` as rules (`None`:
/// the system's rule directories as they are).
fn udevadm(rule_file: Option<&Path>, devpath: &str) -> Outcome {
    let work = tempfile::tempdir().unwrap();
    let only_these_rules = match rule_file {
        Some(file) => {
            std::fs::copy(file, work.path().join(file.file_name().unwrap())).unwrap();
            format!(
                "for d in /etc/udev/rules.d /usr/lib/udev/rules.d /usr/local/lib/udev/rules.d; do
                     [ -d $d ] && mount -t tmpfs tmpfs $d
                 done
                 cp '{}'/*.rules /etc/udev/rules.d/",
                work.path().display()
            )
        }
        None => String::new(),
    };
    let script = format!(
        "set -e
         mount -t tmpfs tmpfs /run
         {only_these_rules}
         mount -t tmpfs tmpfs /dev
         mknod -m 666 /dev/null c 1 3
         exec udevadm -d test --action=add '/sys{devpath}' 2>&1"
    );
    let out = private_sh(&script).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "udevadm test failed:\n{text}");
    let mut o = Outcome::default();
    let mut in_properties = false;
    for line in text.lines() {
        if line.contains("some values may be different") {
            in_properties = true;
            continue;
        }
        if let Some(run) = line.strip_prefix("run: '") {
            o.run.push(run.trim_end_matches('\'').to_owned());
            continue;
        }
        if in_properties {
            if let Some((k, v)) = line.split_once('=') {
                if keep(k) {
                    o.properties.insert(k.to_owned(), normalise(k, v));
                }
            }
            continue;
        }
        // Trace lines: "dev: file:line OWNER 1", "… GROUP 6", "… MODE 0640"; a name resolved
        // per event shows as "OWNER name(1)"; 4294967295 (-1) is "not set".
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [.., key, value] = words.as_slice() {
            let id = || {
                let id = value
                    .strip_suffix(')')
                    .and_then(|v| v.rsplit_once('('))
                    .map_or(*value, |(_, id)| id);
                id.parse().ok().filter(|&id: &u32| id != u32::MAX)
            };
            match *key {
                "OWNER" => o.uid = id(),
                "GROUP" => o.gid = id(),
                "MODE" => o.mode = Some((*value).to_owned()),
                _ => {}
            }
        }
    }
    o
}

/// Runs `uevd test --json` with only `rule_file` (`None`: the default rule directories).
fn uevd_test(rule_file: Option<&Path>, devpath: &str) -> Outcome {
    let mut args = vec!["test".to_owned(), "--json".into(), devpath.into()];
    if let Some(file) = rule_file {
        args.extend(["--rules".into(), file.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = uevd(&args).output().unwrap();
    assert!(
        out.status.success(),
        "uevd test failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut o = Outcome::default();
    for (k, val) in v["properties"].as_object().unwrap() {
        if keep(k) {
            o.properties
                .insert(k.clone(), normalise(k, val.as_str().unwrap()));
        }
    }
    if !v["node"].is_null() {
        o.uid = v["uid"].as_u64().map(|u| u as u32);
        o.gid = v["gid"].as_u64().map(|g| g as u32);
        o.mode = v["mode"].as_str().map(str::to_owned);
    }
    o.run = v["run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_str().unwrap();
            r.strip_prefix("builtin ").unwrap_or(r).to_owned()
        })
        .collect();
    o
}

/// Compares; where udev printed no owner/group/mode (no rule set one), uevd must report the
/// defaults (root, root, the kernel's DEVMODE or 0600/0660).
fn compare(rule_file: &str, devpath: &str) {
    let file = corpus().join(rule_file);
    let theirs = udevadm(Some(&file), devpath);
    let ours = uevd_test(Some(&file), devpath);
    compare_outcomes(rule_file, devpath, theirs, ours);
}

fn compare_outcomes(rule_file: &str, devpath: &str, theirs: Outcome, mut ours: Outcome) {
    let has_node = ours.mode.is_some();
    if has_node {
        if theirs.uid.is_none() {
            assert_eq!(ours.uid, Some(0), "{rule_file} {devpath}: default owner");
            ours.uid = None;
        }
        if theirs.gid.is_none() {
            assert_eq!(ours.gid, Some(0), "{rule_file} {devpath}: default group");
            ours.gid = None;
        }
        if theirs.mode.is_none() {
            ours.mode = None;
        }
    } else {
        ours.uid = theirs.uid;
        ours.gid = theirs.gid;
        ours.mode = theirs.mode.clone();
    }
    let only_theirs: Vec<_> = theirs
        .properties
        .iter()
        .filter(|(k, v)| ours.properties.get(*k) != Some(v))
        .collect();
    let only_ours: Vec<_> = ours
        .properties
        .iter()
        .filter(|(k, v)| theirs.properties.get(*k) != Some(v))
        .collect();
    assert!(
        only_theirs.is_empty() && only_ours.is_empty(),
        "{rule_file} on {devpath}: properties differ\n  udevadm only: {only_theirs:?}\n  uevd only:    {only_ours:?}"
    );
    assert_eq!(
        (ours.uid, ours.gid, &ours.mode),
        (theirs.uid, theirs.gid, &theirs.mode),
        "{rule_file} on {devpath}: owner, group, mode"
    );
    assert_eq!(ours.run, theirs.run, "{rule_file} on {devpath}: RUN");
}

fn real_devices() -> Vec<&'static str> {
    [
        "/devices/virtual/block/loop0",
        "/devices/virtual/mem/null",
        "/devices/virtual/net/lo",
        "/devices/virtual/tty/tty1",
    ]
    .into_iter()
    .filter(|d| Path::new("/sys").join(&d[1..]).join("uevent").exists())
    .collect()
}

/// [`compare`] on each of [`real_devices`] (when udevadm is there, which CI makes sure of).
fn compare_on_real_devices(rule_file: &str) {
    if available() {
        for dev in real_devices() {
            compare(rule_file, dev);
        }
    }
}

fn available() -> bool {
    let ok = Command::new("udevadm").arg("--version").output().is_ok();
    assert!(ok, "udevadm is required (apt-get install udev)");
    ok
}

#[test]
fn match_keys_agree_with_udevadm_on_real_devices() {
    compare_on_real_devices("10-match-keys.rules");
}

#[test]
fn match_edge_cases_agree_with_udevadm_on_real_devices() {
    compare_on_real_devices("15-match-edges.rules");
}

#[test]
fn test_paths_of_other_devices_and_subdirectories_agree_with_udevadm_on_real_devices() {
    compare_on_real_devices("16-test-paths.rules");
}

#[test]
fn assignments_and_substitutions_agree_with_udevadm_on_real_devices() {
    compare_on_real_devices("20-assignments.rules");
}

#[test]
fn assignments_run_in_udevs_order_of_kinds_on_real_devices() {
    compare_on_real_devices("25-line-order.rules");
}

#[test]
fn unknown_owners_and_bad_modes_drop_only_their_key_on_real_devices() {
    compare_on_real_devices("26-owner-mode.rules");
}

#[test]
fn goto_and_label_agree_with_udevadm() {
    compare_on_real_devices("30-goto.rules");
}

/// Devices with a chain of parents (a disk or network card on a bus), for the parent walks:
/// the first of each kind this machine has. udevadm 252 refuses a fake sysfs (sd-device checks
/// that the path is on a sysfs filesystem), so parent walks are compared on real devices only;
/// the unit tests in `uevd-rules` cover fake trees.
fn devices_with_parents() -> Vec<String> {
    let mut out = Vec::new();
    for class in ["/sys/block", "/sys/class/net", "/sys/class/input"] {
        let Ok(entries) = std::fs::read_dir(class) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .filter_map(|e| std::fs::canonicalize(e.path()).ok())
            .filter(|p| !p.starts_with("/sys/devices/virtual"))
            .collect();
        paths.sort();
        if let Some(p) = paths.first() {
            out.push(format!("/{}", p.strip_prefix("/sys").unwrap().display()));
        }
    }
    out
}

#[test]
fn parent_walks_agree_with_udevadm() {
    if available() {
        let devices = devices_with_parents();
        assert!(!devices.is_empty(), "no device with parents in /sys");
        for dev in devices.iter().map(String::as_str).chain(real_devices()) {
            compare("40-parents.rules", dev);
            compare("45-import-parent.rules", dev);
        }
    }
}

/// What the builtins uevd does not have yet (`path_id`, `input_id`, `usb_id`, `blkid`,
/// `net_id`, `hwdb`, `keyboard`, `uaccess`) add in Debian's rules: properties, and the links
/// made from them.
fn from_missing_builtins(key: &str) -> bool {
    [
        "ID_PATH",
        "ID_INPUT",
        "ID_USB",
        "ID_BUS",
        "ID_SERIAL",
        "ID_MODEL",
        "ID_VENDOR",
        "ID_REVISION",
        "ID_TYPE",
        "ID_FS_",
        "ID_PART_",
        "ID_NET_",
        "ID_PCI_",
        "ID_OUI_",
        "ID_IGNORE",
        "SYSTEMD_",
        "ID_MM_",
        "ID_SEAT",
        "ID_FOR_SEAT",
        "KEYBOARD_",
        "EVDEV_",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

fn without_missing_builtins(mut o: Outcome) -> Outcome {
    o.properties.retain(|k, _| !from_missing_builtins(k));
    if let Some(links) = o.properties.get_mut("DEVLINKS") {
        *links = links
            .split(' ')
            .filter(|l| {
                ![
                    "by-path",
                    "by-uuid",
                    "by-label",
                    "by-partuuid",
                    "by-partlabel",
                    "by-id/wwn",
                ]
                .iter()
                .any(|b| l.contains(b))
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    o.run.retain(|r| !r.starts_with("uaccess"));
    o
}

#[test]
fn debians_full_rule_set_agrees_with_udevadm_apart_from_missing_builtins() {
    if available() {
        // Network interfaces are left out: their names come from the net_id and
        // net_setup_link builtins, which uevd does not have yet.
        let devices: Vec<String> = devices_with_parents()
            .into_iter()
            .filter(|d| !d.contains("/net/"))
            .collect();
        let real = real_devices().into_iter().filter(|d| !d.contains("/net/"));
        for dev in devices.iter().map(String::as_str).chain(real) {
            let theirs = without_missing_builtins(udevadm(None, dev));
            let ours = without_missing_builtins(uevd_test(None, dev));
            compare_outcomes("Debian's rules", dev, theirs, ours);
        }
    }
}

/// `sh -c SCRIPT` in private mount and network namespaces, where the script may mount over
/// `/run` and `/dev`: with Debian's rules `udevadm test` really renames network interfaces
/// (NAME= from net_setup_link), which must never reach the host.
fn private_sh(script: &str) -> Command {
    let mut command = Command::new("unshare");
    command.args([
        "--mount",
        "--net",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ]);
    command
}

/// The devices `udevadm trigger --dry-run --verbose ARGS` and `uevd trigger` pick on this
/// machine's `/sys`: neither writes anything with `--dry-run`.
fn triggered(udevadm: bool, args: &[&str]) -> BTreeSet<String> {
    let out = if udevadm {
        let script = "mount -t tmpfs tmpfs /run; exec udevadm trigger --dry-run --verbose \"$@\"";
        private_sh(script).arg("sh").args(args).output().unwrap()
    } else {
        let mut all = vec!["trigger", "--dry-run", "--verbose"];
        all.extend_from_slice(args);
        uevd(&all).output().unwrap()
    };
    assert!(
        out.status.success(),
        "{udevadm} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn trigger_filters_pick_what_udevadm_trigger_picks() {
    if available() {
        for args in [
            &["-s", "block"][..],
            &["-S", "block"],
            &["-s", "block", "-s", "mem"],
            &["-y", "loop*"],
            &["-s", "block", "-y", "loop[12]"],
            &["-a", "ro"],
            &["-a", "ro=0"],
            &["-s", "net", "-a", "address"],
            &["-p", "DEVNAME=/dev/loop0"],
            &["-p", "DEVNAME=loop*"],
            &["-p", "DEVPATH=/devices/virtual/block/loop0"],
            &["-p", "SUBSYSTEM=mem", "-p", "DEVNAME=/dev/null"],
        ] {
            let (theirs, ours) = (triggered(true, args), triggered(false, args));
            assert_eq!(
                ours,
                theirs,
                "uevd trigger {args:?}: only ours {:?}, only udevadm's {:?}",
                ours.difference(&theirs).collect::<Vec<_>>(),
                theirs.difference(&ours).collect::<Vec<_>>()
            );
        }
    }
}

/// The nodes `kmod static-nodes` would have made before their modules load: (name, major,
/// minor), each 0600 root:root.
const STATIC_NODES: &[(&str, u32, u32)] = &[
    ("fuse", 10, 229),
    ("snd/seq", 116, 1),
    ("snd/timer", 116, 33),
    ("kvm", 10, 232),
    ("vhost-net", 10, 238),
    ("net/tun", 10, 200),
    ("loop-control", 10, 237),
    ("uinput", 10, 223),
    ("vfio/vfio", 10, 196),
];

/// Shell commands that list the device nodes under `dev` (`name mode uid:gid`) and the tag
/// links under `tags` (`tag/name -> target`), sorted.
fn list_static(dev: &str, tags: &str) -> String {
    format!(
        "find {dev} -mindepth 1 \\( -type c -o -type b \\) ! -name null -printf '%P %m %U:%G\\n' | sort
         find {tags} -type l -printf '%P -> %l\\n' 2>/dev/null | sort"
    )
}

#[test]
fn static_nodes_get_what_systemd_udevd_gives_them() {
    if !available() {
        return;
    }
    let rules = corpus().join("27-static-nodes.rules");
    let make_nodes = |dev: &str| -> String {
        STATIC_NODES
            .iter()
            .map(|(name, major, minor)| {
                format!("mkdir -p \"$(dirname {dev}/{name})\"; mknod -m 600 {dev}/{name} c {major} {minor}\n")
            })
            .collect()
    };

    // systemd-udevd applies static_node= once its rules are read, before it answers a ping.
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(&rules, work.path().join("27-static-nodes.rules")).unwrap();
    let script = format!(
        "set -e
         mount -t tmpfs tmpfs /run
         for d in /etc/udev/rules.d /usr/lib/udev/rules.d /usr/local/lib/udev/rules.d; do
             [ -d $d ] && mount -t tmpfs tmpfs $d
         done
         cp '{work}'/*.rules /etc/udev/rules.d/
         mount -t tmpfs tmpfs /dev
         mknod -m 666 /dev/null c 1 3
         {nodes}
         /lib/systemd/systemd-udevd >/dev/null 2>&1 &
         trap 'kill $!' EXIT
         # The control socket appears once the rules are read and applied.
         tries=0
         until udevadm control --ping -t 5 2>/dev/null; do
             tries=$((tries + 1)); [ $tries -lt 500 ]; sleep 0.01
         done
         {list}",
        work = work.path().display(),
        nodes = make_nodes("/dev"),
        list = list_static("/dev", "/run/udev/static_node-tags"),
    );
    let out = private_sh(&script).output().unwrap();
    assert!(
        out.status.success(),
        "systemd-udevd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8_lossy(&out.stdout).into_owned();

    // uevd, on an empty sysfs (no device makes any node), with the same nodes in its --dev.
    let sys = uevd_testkit::FakeSysfs::new().unwrap();
    let (dev, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dev_abs = std::fs::canonicalize(dev.path()).unwrap();
    let made = Command::new("sh")
        .args(["-c", &make_nodes(&dev_abs.display().to_string())])
        .status()
        .unwrap();
    assert!(made.success());
    let tags = run.path().join("static_node-tags");
    let rules_arg = rules.display().to_string();
    let d = super::daemon::Daemon::start_in(sys.root(), dev, run, &["--rules", &rules_arg]);
    let out = Command::new("sh")
        .args([
            "-c",
            &list_static(&dev_abs.display().to_string(), &tags.display().to_string()),
        ])
        .output()
        .unwrap();
    d.stop();
    // uevd's links point into its own --dev.
    let ours =
        String::from_utf8_lossy(&out.stdout).replace(&format!("{}/", dev_abs.display()), "/dev/");

    assert_eq!(ours, theirs, "uevd (left) and systemd-udevd (right) differ");
    assert!(
        theirs.contains("fuse 666 0:0\n") && theirs.contains("uaccess/net\\x2ftun -> /dev/net/tun"),
        "{theirs}"
    );
}
