//! Differential tests: `uevd test` against systemd-udevd 252's `udevadm test`, on the same rule
//! files and the same devices (real ones of this machine's `/sys`, and a fake sysfs), comparing
//! properties (with DEVLINKS, TAGS, CURRENT_TAGS), node owner/group/mode and RUN lists.
//!
//! `udevadm test` writes to `/run/udev` and `/dev`, so it runs in a private mount namespace
//! with tmpfs over `/run`, `/dev` and every udev rules directory; the corpus files are copied
//! into its `/etc/udev/rules.d`, and a fake sysfs is bind-mounted over `/sys` there. The host
//! is not touched. Intentional differences are listed in `IGNORED` with their reason.

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

/// Runs `udevadm -d test --action=add /sys/DEVPATH` with only `rule_file` as rules.
fn udevadm(rule_file: &Path, sysfs: Option<&Path>, devpath: &str) -> Outcome {
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(rule_file, work.path().join(rule_file.file_name().unwrap())).unwrap();
    let bind_sys = match sysfs {
        Some(s) => format!("mount --bind '{}' /sys", s.display()),
        None => String::new(),
    };
    let script = format!(
        "set -e
         mount -t tmpfs tmpfs /run
         for d in /etc/udev/rules.d /usr/lib/udev/rules.d /usr/local/lib/udev/rules.d; do
             [ -d $d ] && mount -t tmpfs tmpfs $d
         done
         cp '{rules}'/*.rules /etc/udev/rules.d/
         mount -t tmpfs tmpfs /dev
         mknod -m 666 /dev/null c 1 3
         {bind_sys}
         exec udevadm -d test --action=add '/sys{devpath}' 2>&1",
        rules = work.path().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
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
        // Trace lines: "dev: file:line OWNER 1", "… GROUP 6", "… MODE 0640".
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [.., key, value] = words.as_slice() {
            match *key {
                "OWNER" => o.uid = value.parse().ok(),
                "GROUP" => o.gid = value.parse().ok(),
                "MODE" => o.mode = Some((*value).to_owned()),
                _ => {}
            }
        }
    }
    o
}

/// Runs `uevd test --json` with only `rule_file`.
fn uevd_test(rule_file: &Path, sysfs: Option<&Path>, devpath: &str) -> Outcome {
    let sysfs = sysfs.map_or("/sys".to_owned(), |s| s.display().to_string());
    let rules = rule_file.display().to_string();
    let out = uevd(&[
        "test", "--json", "--sysfs", &sysfs, "--rules", &rules, devpath,
    ])
    .output()
    .unwrap();
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
fn compare(rule_file: &str, sysfs: Option<&Path>, devpath: &str) {
    let file = corpus().join(rule_file);
    let theirs = udevadm(&file, sysfs, devpath);
    let mut ours = uevd_test(&file, sysfs, devpath);
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

fn available() -> bool {
    let ok = Command::new("udevadm").arg("--version").output().is_ok();
    assert!(ok, "udevadm is required (apt-get install udev)");
    ok
}

#[test]
fn match_keys_agree_with_udevadm_on_real_devices() {
    if available() {
        for dev in real_devices() {
            compare("10-match-keys.rules", None, dev);
        }
    }
}

#[test]
fn assignments_and_substitutions_agree_with_udevadm_on_real_devices() {
    if available() {
        for dev in real_devices() {
            compare("20-assignments.rules", None, dev);
        }
    }
}

#[test]
fn goto_and_label_agree_with_udevadm() {
    if available() {
        for dev in real_devices() {
            compare("30-goto.rules", None, dev);
        }
    }
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
            compare("40-parents.rules", None, dev);
        }
    }
}
