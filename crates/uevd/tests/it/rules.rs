//! Rules in the running daemon (`--rules`, `--mdev-conf`, reload, diagnostics) and the
//! `uevd test` / `uevd verify-rules` commands, on a fake sysfs.

use super::daemon::{listing, Daemon};
use super::util::{db_record, uevd, TIMEOUT};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use uevd_testkit::{char_event, event, in_private_netns, Action, FakeSysfs, Injector};

const USB: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-2";
const TTY: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0";
const DISK_A: &str = "/devices/virtual/block/vda";
const DISK_B: &str = "/devices/virtual/block/vdb";

/// A USB serial adapter and two disks.
fn tree() -> FakeSysfs {
    let sys = FakeSysfs::new().unwrap();
    sys.device(
        USB,
        "usb",
        &[("DEVTYPE", "usb_device"), ("PRODUCT", "abcd/1234/100")],
    )
    .unwrap();
    sys.attr(USB, "idVendor", "abcd").unwrap();
    sys.attr(USB, "serial", "XY Z1").unwrap();
    sys.device(
        &format!("{USB}/1-2:1.0"),
        "usb",
        &[("DEVTYPE", "usb_interface")],
    )
    .unwrap();
    sys.device(
        TTY,
        "tty",
        &[("MAJOR", "188"), ("MINOR", "0"), ("DEVNAME", "ttyUSB0")],
    )
    .unwrap();
    for (path, minor, name) in [(DISK_A, "0", "vda"), (DISK_B, "16", "vdb")] {
        sys.device(
            path,
            "block",
            &[
                ("MAJOR", "254"),
                ("MINOR", minor),
                ("DEVNAME", name),
                ("DEVTYPE", "disk"),
            ],
        )
        .unwrap();
    }
    sys
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never written", path.display());
}

#[test]
fn rules_set_nodes_links_properties_and_run_helpers_after_the_node_exists() {
    in_private_netns(|| {
        let sys = tree();
        let work = tempfile::tempdir().unwrap();
        let dev = tempfile::tempdir().unwrap();
        let out = work.path().join("helper-ran");
        let rules = work.path().join("rules.d");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(
            rules.join("50-test.rules"),
            format!(
                r#"# a comment
SUBSYSTEM=="tty", KERNEL=="ttyUSB*", SUBSYSTEMS=="usb", ATTRS{{idVendor}}=="abcd", \
  GROUP="20", MODE="0660", SYMLINK+="serial/by-id/usb-$attr{{serial}}", \
  ENV{{ID_TEST}}="yes", TAG+="uaccess", \
  RUN+="/bin/sh -c 'test -c {dev}/%k && echo $ID_TEST $DEVNAME $DEVLINKS `umask` > {out}'"
ENV{{DEVTYPE}}=="usb_interface", ENV{{ID_IFACE_RULE}}="iface", ENV{{ID_IFACE_KERNEL}}="%k", TAG+="seat"
SUBSYSTEM=="tty", IMPORT{{parent}}="ID_IFACE_*"
SUBSYSTEM=="tty", TAGS=="seat", ENV{{PARENT_SEAT}}="1"
SUBSYSTEM=="block", GROUP="6"
KERNEL=="vd*", SYMLINK+="disk/shared"
KERNEL=="vdb", OPTIONS+="link_priority=10"
BROKEN_KEY=="1", MODE="0666"
"#,
                dev = dev.path().display(),
                out = out.display()
            ),
        )
        .unwrap();
        let run = tempfile::tempdir().unwrap();
        let rules_arg = rules.display().to_string();
        let d = Daemon::start_in(sys.root(), dev, run, &["--rules", &rules_arg]);
        d.settle();
        let ls = listing(d.dev.path());
        for want in [
            "ttyUSB0 c 188:0 660 0:20",
            "serial/by-id/usb-XY_Z1 -> ../../ttyUSB0",
            "vda b 254:0 660 0:6",
            "vdb b 254:16 660 0:6",
            "disk/shared -> ../vdb",
        ] {
            assert!(ls.iter().any(|l| l == want), "missing {want:?} in {ls:#?}");
        }
        assert_eq!(
            wait_for_file(&out),
            "yes /dev/ttyUSB0 /dev/serial/by-id/usb-XY_Z1 0022\n",
            "the RUN helper saw the node and the rules' environment, with udevd's umask"
        );
        // Link claims are root's alone: a claim planted by anyone else would steal a link.
        let links = d.run.path().join("links");
        let modes: Vec<(String, u32)> = walkdir(&links)
            .into_iter()
            .map(|p| {
                let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777;
                (p.strip_prefix(&links).unwrap().display().to_string(), mode)
            })
            .collect();
        assert!(modes.len() >= 3, "{modes:?}");
        for (path, mode) in &modes {
            let dir = std::fs::symlink_metadata(links.join(path)).unwrap().is_dir();
            assert_eq!(*mode, if dir { 0o755 } else { 0o644 }, "{path}");
        }
        let record = db_record(d.run.path(), "c188:0");
        assert!(record.contains("E:ID_TEST=yes\n"), "{record}");
        assert!(record.contains("G:uaccess\n"), "{record}");
        assert!(record.contains("E:DEVNAME=/dev/ttyUSB0\n"), "{record}");
        // The parent's record (what its rules set, its tags) reaches the child, at coldplug
        // (parents as the walk read them) and for a kernel event (parents read live).
        let parent_facts = |record: &str| {
            for want in [
                "E:ID_IFACE_RULE=iface\n",
                "E:ID_IFACE_KERNEL=1-2:1.0\n",
                "E:PARENT_SEAT=1\n",
            ] {
                assert!(record.contains(want), "missing {want:?} in\n{record}");
            }
        };
        parent_facts(&record);
        let inj = Injector::open().unwrap();
        inj.send_all(&[event(Action::Change, TTY, "tty")
            .var("MAJOR", "188")
            .var("MINOR", "0")
            .var("DEVNAME", "ttyUSB0")
            .var("MARK", "kernel")
            .to_bytes()])
            .unwrap();
        d.settle();
        let record = db_record(d.run.path(), "c188:0");
        assert!(record.contains("E:MARK=kernel\n"), "{record}");
        parent_facts(&record);
        let (_, _, transcript) = d.stop();
        assert!(
            transcript.contains("50-test.rules:12:1: error: invalid key 'BROKEN_KEY'"),
            "the broken line is reported with file:line:column\n{transcript}"
        );
    })
    .unwrap();
}

#[test]
fn a_shared_link_moves_to_the_next_claimant_when_the_winner_goes() {
    in_private_netns(|| {
        let sys = tree();
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            rules.path(),
            "KERNEL==\"vda\", SYMLINK+=\"disk/shared\"\nKERNEL==\"vdb\", SYMLINK+=\"disk/shared\", OPTIONS+=\"link_priority=10\"\n",
        )
        .unwrap();
        let rules_arg = rules.path().display().to_string();
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg]);
        d.settle();
        assert!(listing(d.dev.path()).contains(&"disk/shared -> ../vdb".to_string()));
        // vdb goes away: a resync (trigger of a reconcile through overflow is heavy; use a
        // restart instead) must hand the link to vda.
        sys.remove_device(DISK_B).unwrap();
        let (dev, run, _) = d.stop();
        let d = Daemon::start_in(sys.root(), dev, run, &["--rules", &rules_arg]);
        d.settle();
        let ls = listing(d.dev.path());
        assert!(ls.contains(&"disk/shared -> ../vda".to_string()), "{ls:#?}");
        assert!(!ls.iter().any(|l| l.starts_with("vdb ")), "{ls:#?}");
        d.stop();
    })
    .unwrap();
}

#[test]
fn reload_swaps_rules_and_a_bad_reload_keeps_the_good_lines() {
    in_private_netns(|| {
        let sys = tree();
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(rules.path(), "KERNEL==\"vda\", MODE=\"0640\"\n").unwrap();
        let rules_arg = rules.path().display().to_string();
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg]);
        d.settle();
        assert!(listing(d.dev.path()).contains(&"vda b 254:0 640 0:0".to_string()));
        std::fs::write(
            rules.path(),
            "KERNEL==\"vda\", MODE=\"0604\"\nKERNEL==\"vda\", NOT_A_KEY=\"x\"\n",
        )
        .unwrap();
        let (code, out, err) = d.client("control", &["reload"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("1 errors"),
            "the reply says the reload had errors: {out}"
        );
        // A change event re-applies the rules to the device.
        let inj = Injector::open().unwrap();
        inj.send_all(&[char_event(Action::Change, DISK_A, "block", (254, 0), "vda")])
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while !listing(d.dev.path()).contains(&"vda b 254:0 604 0:0".to_string()) {
            assert!(Instant::now() < deadline, "{:#?}", listing(d.dev.path()));
            std::thread::sleep(Duration::from_millis(20));
        }
        d.stop();
    })
    .unwrap();
}

#[test]
fn mdev_conf_renames_links_and_runs_commands() {
    in_private_netns(|| {
        let sys = tree();
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("mdev-cmd");
        let conf = work.path().join("mdev.conf");
        std::fs::write(
            &conf,
            format!(
                "# mdev.conf as busybox reads it\nttyUSB([0-9]) 0:20 0620 >usb-serial/%1 @echo $MDEV $ACTION > {}\nvd[a-z] 0:6 640 =storage/\n-vda 0:0 600\n",
                out.display()
            ),
        )
        .unwrap();
        let conf_arg = conf.display().to_string();
        let d = Daemon::start(sys.root(), &["--mdev-conf", &conf_arg]);
        d.settle();
        let ls = listing(d.dev.path());
        for want in [
            "usb-serial/0 c 188:0 620 0:20",
            "ttyUSB0 -> usb-serial/0",
            "storage/vda b 254:0 640 0:6",
            "storage/vdb b 254:16 640 0:6",
        ] {
            assert!(ls.iter().any(|l| l == want), "missing {want:?} in {ls:#?}");
        }
        assert_eq!(wait_for_file(&out), "usb-serial/0 add\n");
        d.stop();
    })
    .unwrap();
}

#[test]
fn uevd_test_prints_the_outcome_without_side_effects() {
    let sys = tree();
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "SUBSYSTEMS==\"usb\", ATTRS{idVendor}==\"abcd\", GROUP=\"20\", SYMLINK+=\"by-vendor/%b-%k\", ATTR{power/control}=\"auto\", RUN+=\"/bin/false\"\n",
    )
    .unwrap();
    let sysfs = sys.root().display().to_string();
    let rules_arg = rules.path().display().to_string();
    let out = uevd(&[
        "test", "--sysfs", &sysfs, "--rules", &rules_arg, "--json", TTY,
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node"]["path"], "/dev/ttyUSB0");
    assert_eq!(v["mode"], "0660", "a group without a mode means 0660");
    assert_eq!(v["gid"], 20);
    assert_eq!(v["symlinks"][0], "/dev/by-vendor/1-2-ttyUSB0");
    assert_eq!(v["run"][0], "/bin/false");
    assert_eq!(v["properties"]["DEVNAME"], "/dev/ttyUSB0");
    let write = v["writes"][0].as_str().unwrap();
    assert!(
        write.ends_with("ttyUSB0/power/control = \"auto\""),
        "{write}"
    );
    assert!(
        !sys.root().join(&TTY[1..]).join("power/control").exists(),
        "uevd test wrote nothing"
    );
    // Text form, udevadm-like.
    let out = uevd(&["test", "--sysfs", &sysfs, "--rules", &rules_arg, TTY])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nDEVNAME=/dev/ttyUSB0\n"), "{text}");
    assert!(text.contains("run: '/bin/false'"), "{text}");
    assert!(
        text.contains("symlink: /dev/by-vendor/1-2-ttyUSB0"),
        "{text}"
    );
    // A device that does not exist is an error naming it.
    let out = uevd(&[
        "test",
        "--sysfs",
        &sysfs,
        "--rules",
        &rules_arg,
        "/devices/nope",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/devices/nope: no such device"));
}

#[test]
fn verify_rules_exit_status_tells() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-good.rules"),
        "KERNEL==\"x\", MODE=\"0600\"\n",
    )
    .unwrap();
    let good = dir.path().display().to_string();
    let out = uevd(&["verify-rules", &good]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 files, 1 rules, 0 errors"));
    std::fs::write(
        dir.path().join("20-bad.rules"),
        "KERNEL==\"x\", SYMLINK-=\"y\"\n",
    )
    .unwrap();
    let out = uevd(&["verify-rules", &good]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("20-bad.rules:1:14: error: invalid operator '-=' for SYMLINK"),
        "{err}"
    );
    // Warnings pass unless --strict.
    std::fs::write(
        dir.path().join("20-bad.rules"),
        "KERNEL==\"x\", OPTIONS+=\"frobnicate\"\n",
    )
    .unwrap();
    assert_eq!(
        uevd(&["verify-rules", &good])
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        uevd(&["verify-rules", "--strict", &good])
            .output()
            .unwrap()
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn a_watched_node_closed_after_writing_yields_a_synthetic_change_also_after_a_restart() {
    const LOOP0: &str = "/sys/devices/virtual/block/loop0/uevent";
    assert!(Path::new(LOOP0).exists(), "needs loop0 (modprobe loop)");
    let _real = super::util::making_real_events();
    in_private_netns(|| {
        let work = tempfile::tempdir().unwrap();
        let seen = work.path().join("seen");
        let rules = work.path().join("watch.rules");
        std::fs::write(
            &rules,
            format!(
                "KERNEL==\"loop0\", OPTIONS+=\"watch\"\nKERNEL==\"loop0\", ENV{{SYNTH_ARG_UDEV_WATCH}}==\"1\", ENV{{SYNTH_ARG_UDEVWATCH}}==\"1\", RUN+=\"/bin/sh -c 'echo $$SYNTH_UUID >> {}'\"\n",
                seen.display()
            ),
        )
        .unwrap();
        let rules_arg = rules.display().to_string();
        let args = ["--no-coldplug", "--rules", &rules_arg];
        let d = Daemon::start(Path::new("/sys"), &args);
        let (code, _, err) = d.client(
            "trigger",
            &["--sysfs", "/sys", "--subsystem-match", "block", "--sysname-match", "loop0", "--wait"],
        );
        assert_eq!(code, 0, "{err}");
        let node = d.dev.path().join("loop0");
        let count = |want: usize| {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let lines = std::fs::read_to_string(&seen).unwrap_or_default().lines().count();
                if lines >= want {
                    return lines;
                }
                assert!(Instant::now() < deadline, "no watch event #{want}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        assert!(!seen.exists(), "no synthetic change before a writer closes the node");
        drop(std::fs::OpenOptions::new().write(true).open(&node).unwrap());
        assert_eq!(count(1), 1);
        // Opening for reading only does not count, and a forged request (right argument, a
        // UUID the daemon did not issue) does not pass for a watch event.
        drop(std::fs::File::open(&node).unwrap());
        let (code, _, err) = d.client(
            "trigger",
            &["--sysfs", "/sys", "--subsystem-match", "block", "--sysname-match", "loop0", "--env", "UDEVWATCH=1", "--wait"],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&seen).unwrap().lines().count(), 1);
        // The watch is in the database: a restarted daemon watches again without any event.
        let (dev, run, _) = d.stop();
        let record = db_record(run.path(), "b7:0");
        assert!(record.contains("W:1\n"), "{record}");
        let d = Daemon::start_in(Path::new("/sys"), dev, run, &args);
        drop(std::fs::OpenOptions::new().write(true).open(&node).unwrap());
        assert_eq!(count(2), 2);
        let uuids = std::fs::read_to_string(&seen).unwrap();
        let uuids: Vec<&str> = uuids.lines().collect();
        assert_ne!(uuids[0], uuids[1], "each request has its own UUID");
        assert!(uuids.iter().all(|u| u.len() == 36), "{uuids:?}");
        d.stop();
    })
    .unwrap();
}

#[test]
fn helpers_can_skip_or_refuse_when_the_node_already_existed() {
    in_private_netns(|| {
        let sys = tree();
        let work = tempfile::tempdir().unwrap();
        let log = work.path().join("ran");
        let rules = work.path().join("exist.rules");
        std::fs::write(
            &rules,
            format!(
                "SUBSYSTEM==\"block\", KERNEL==\"vd*\", RUN+=\"/bin/sh -c 'echo run %k >> {log}'\"\n\
                 SUBSYSTEM==\"block\", KERNEL==\"vd*\", OPTIONS+=\"if_exists=skip\", RUN+=\"/bin/sh -c 'echo skip %k >> {log}'\"\n\
                 SUBSYSTEM==\"block\", KERNEL==\"vd*\", OPTIONS+=\"if_exists=error\", RUN+=\"/bin/sh -c 'echo error %k >> {log}'\"\n",
                log = log.display()
            ),
        )
        .unwrap();
        // (`KERNEL=="vd*"`: other tests' real loop0 events reach every network namespace.)
        // vda's node is already there (as devtmpfs or an earlier run would have left it).
        let dev = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dev.path().join("vda"),
            rustix::fs::FileType::BlockDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(254, 0),
        )
        .unwrap();
        let run = tempfile::tempdir().unwrap();
        let rules_arg = rules.display().to_string();
        let d = Daemon::start_in(sys.root(), dev, run, &["--rules", &rules_arg]);
        d.settle();
        let mut ran: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
        ran.sort();
        assert_eq!(ran, ["error vdb", "run vda", "run vdb", "skip vdb"]);
        let (_, _, transcript) = d.stop();
        assert!(
            transcript.contains("add /devices/virtual/block/vda: node existed before the event; not running '/bin/sh -c 'echo error vda"),
            "{transcript}"
        );
    })
    .unwrap();
}

#[test]
fn helpers_run_beside_other_events_settle_waits_for_them_and_late_ones_are_killed() {
    in_private_netns(|| {
        let sys = tree();
        let work = tempfile::tempdir().unwrap();
        let log = work.path().join("log");
        let rules = work.path().join("slow.rules");
        std::fs::write(
            &rules,
            format!(
                "KERNEL==\"vda\", RUN+=\"/bin/sh -c 'sleep 0.5; echo vda >> {log}'\"\n\
                 KERNEL==\"vdb\", RUN+=\"/bin/sh -c 'echo vdb >> {log}'\"\n\
                 KERNEL==\"ttyUSB0\", RUN+=\"/bin/sleep 30\", RUN+=\"/bin/sh -c 'echo after-timeout >> {log}'\"\n",
                log = log.display()
            ),
        )
        .unwrap();
        let rules_arg = rules.display().to_string();
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg, "--helper-timeout", "1"]);
        // Readiness (coldplug done) and settle both wait for every helper.
        d.settle();
        let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "vdb", "vdb's helper ran while vda's was still sleeping: {lines:?}");
        assert!(lines.contains(&"vda".to_string()) && lines.contains(&"after-timeout".to_string()));
        // While a helper runs, `settle --timeout 0` says so at once.
        Injector::open()
            .unwrap()
            .send_all(&[event(Action::Change, TTY, "tty")
                .var("MAJOR", "188")
                .var("MINOR", "0")
                .var("DEVNAME", "ttyUSB0")
                .to_bytes()])
            .unwrap();
        let (code, _, err) = d.client("settle", &["--timeout", "0"]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("still queued or being processed"), "{err}");
        d.settle();
        let (_, _, transcript) = d.stop();
        assert!(
            transcript.contains("RUN: '/bin/sleep' timed out after 1.0s and was killed"),
            "{transcript}"
        );
    })
    .unwrap();
}

#[test]
fn with_a_worker_a_fast_event_is_done_while_a_slow_unrelated_one_runs() {
    in_private_netns(|| {
        let sys = tree();
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            rules.path(),
            "ACTION==\"change\", KERNEL==\"vda\", PROGRAM=\"/bin/sleep 4\"\n",
        )
        .unwrap();
        let rules_arg = rules.path().display().to_string();
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg, "--children", "1"]);
        d.settle();
        // The fast event first, the slow one behind it on the same worker: the worker does
        // not signal its first completion while the second is queued, but the event thread
        // still collects it (and writes its record) without waiting for the slow one.
        // Both wait in the socket while the daemon is stopped, so that they are read and
        // handed to the worker together.
        let signal = |sig: &str| {
            let status = std::process::Command::new("kill")
                .args([sig, &d.child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        };
        signal("-STOP");
        let inj = Injector::open().unwrap();
        inj.send_all(&[
            event(Action::Change, TTY, "tty")
                .var("MAJOR", "188")
                .var("MINOR", "0")
                .var("DEVNAME", "ttyUSB0")
                .var("MARK", "fast")
                .to_bytes(),
            event(Action::Change, DISK_A, "block")
                .var("MAJOR", "254")
                .var("MINOR", "0")
                .var("DEVNAME", "vda")
                .var("DEVTYPE", "disk")
                .to_bytes(),
        ])
        .unwrap();
        signal("-CONT");
        let sent = std::time::Instant::now();
        while !db_record(d.run.path(), "c188:0").contains("E:MARK=fast\n") {
            assert!(
                sent.elapsed() < std::time::Duration::from_secs(3),
                "the fast event's record waited for the slow event"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        d.settle();
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_missing_modprobe_is_reported_once_naming_it() {
    in_private_netns(|| {
        let sys = tree();
        let work = tempfile::tempdir().unwrap();
        let rules = work.path().join("kmod.rules");
        std::fs::write(
            &rules,
            "KERNEL==\"vd*|ttyUSB*\", RUN{builtin}+=\"kmod load mod_%k\"\n",
        )
        .unwrap();
        let missing = work.path().join("no-such-modprobe");
        let (rules_arg, missing_arg) = (rules.display().to_string(), missing.display().to_string());
        let d = Daemon::start(
            sys.root(),
            &["--rules", &rules_arg, "--modprobe", &missing_arg],
        );
        d.settle();
        // More batches after the coldplug's: one event at a time, each settled.
        let inj = Injector::open().unwrap();
        for i in 0..3 {
            inj.send_all(&[event(Action::Change, TTY, "tty")
                .var("MAJOR", "188")
                .var("MINOR", "0")
                .var("DEVNAME", format!("ttyUSB{}", i + 1))
                .to_bytes()])
                .unwrap();
            d.settle();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let (_, _, transcript) = d.stop();
        let reports: Vec<&str> = transcript
            .lines()
            .filter(|l| l.contains("cannot run") && l.contains("no-such-modprobe"))
            .collect();
        assert_eq!(reports.len(), 1, "{transcript}");
        assert!(reports[0].contains("not loaded: "), "{}", reports[0]);
    })
    .unwrap();
}

#[test]
fn name_renames_a_network_interface_and_the_kernels_move_follows() {
    // In this test's own network namespace, whose only interface is its loopback (index 1).
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let work = tempfile::tempdir().unwrap();
        let rules = work.path().join("net.rules");
        std::fs::write(
            &rules,
            "SUBSYSTEM==\"net\", ACTION==\"add\", KERNEL==\"lo\", NAME=\"uevd lo:0\"\n",
        )
        .unwrap();
        let rules_arg = rules.display().to_string();
        let d = Daemon::start(sys.root(), &["--no-coldplug", "--rules", &rules_arg]);
        let links = || {
            let out = Command::new("ip")
                .args(["-o", "link", "show"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(links().contains(": lo:"), "{}", links());
        Injector::open()
            .unwrap()
            .send_all(&[event(Action::Add, "/devices/virtual/net/lo", "net")
                .var("INTERFACE", "lo")
                .var("IFINDEX", "1")
                .to_bytes()])
            .unwrap();
        // Characters an interface name cannot have become '_' (udev's string_escape).
        let renamed = "/devices/virtual/net/uevd_lo_0";
        d.wait_for_stat("processed", 2, TIMEOUT);
        d.settle();
        assert!(links().contains(": uevd_lo_0:"), "{}", links());
        // The kernel announced the new name with a move, which re-keyed the record.
        let (code, out, err) = d.client("info", &[renamed]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("E:INTERFACE=uevd_lo_0\n"), "{out}");
        d.stop();
        // `uevd test` shows the name without renaming anything.
        let out = super::util::uevd(&[
            "test",
            "--json",
            "--rules",
            &rules_arg,
            "/devices/virtual/net/lo",
        ])
        .output()
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["interface_name"], "uevd_lo_0", "{v}");
    })
    .unwrap();
}

#[test]
fn kmod_loads_through_modprobe_and_missing_builtins_are_named() {
    in_private_netns(|| {
        let sys = tree();
        let work = tempfile::tempdir().unwrap();
        let calls = work.path().join("modprobe-calls");
        let modprobe = work.path().join("modprobe");
        std::fs::write(&modprobe, format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display())).unwrap();
        std::fs::set_permissions(&modprobe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let rules = work.path().join("builtins.rules");
        std::fs::write(
            &rules,
            "KERNEL==\"vda\", RUN{builtin}+=\"kmod load virtio_blk crc32c\"\n\
             KERNEL==\"vdb\", ENV{MODALIAS}=\"virtio:d00000002v00001AF4\", RUN{builtin}+=\"kmod load\"\n\
             KERNEL==\"vd*\", IMPORT{builtin}=\"path_id\", ENV{NOT_REACHED}=\"1\"\n\
             KERNEL==\"vd*\", RUN{builtin}+=\"uaccess\"\n",
        )
        .unwrap();
        let (rules_arg, modprobe_arg) = (rules.display().to_string(), modprobe.display().to_string());
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg, "--modprobe", &modprobe_arg]);
        d.settle();
        let record = db_record(d.run.path(), "b254:0");
        assert!(!record.contains("NOT_REACHED"), "a failed IMPORT fails its line: {record}");
        let (_, _, transcript) = d.stop();
        // Module loading is batched in the background; the daemon finishes queued loads
        // before it exits, so the calls file is complete now.
        let text = std::fs::read_to_string(&calls).unwrap_or_default();
        let mut names: Vec<String> =
            text.split_whitespace().filter(|w| !w.starts_with('-')).map(str::to_owned).collect();
        names.sort();
        assert_eq!(names, ["crc32c", "virtio:d00000002v00001AF4", "virtio_blk"]);
        assert!(
            transcript.contains("builtin 'path_id' is not implemented"),
            "{transcript}"
        );
        assert!(transcript.contains("builtin 'uaccess' is not implemented"), "{transcript}");
    })
    .unwrap();
}

/// Every path below `dir` (not following links), `dir` included.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_owned()];
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        for e in std::fs::read_dir(dir).unwrap() {
            all.extend(walkdir(&e.unwrap().path()));
        }
    }
    all
}

/// Makes a char node in `dev` as `kmod static-nodes` would (no device, no uevent).
fn static_node(dev: &Path, name: &str, minor: u32) {
    let path = dev.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(10, minor),
    )
    .unwrap();
}

#[test]
fn static_node_permissions_apply_at_start_and_on_reload_and_tags_are_linked() {
    in_private_netns(|| {
        let sys = tree();
        let (dev, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        static_node(dev.path(), "fuse", 229);
        static_node(dev.path(), "snd/seq", 1);
        // A name a rule line gives but nobody made: not created.
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            rules.path(),
            concat!(
                "KERNEL==\"fuse\", MODE=\"0666\", OPTIONS+=\"static_node=fuse\"\n",
                "SUBSYSTEM==\"sound\", OPTIONS+=\"static_node=snd/seq\", GROUP=\"4321\", ",
                "TAG+=\"uaccess\"\n",
                "KERNEL==\"vhost-net\", MODE=\"0660\", OPTIONS+=\"static_node=vhost-net\"\n",
            ),
        )
        .unwrap();
        let rules_arg = rules.path().display().to_string();
        let dev_path = dev.path().to_owned();
        let run_path = run.path().to_owned();
        let d = Daemon::start_in(sys.root(), dev, run, &["--rules", &rules_arg]);
        d.settle();
        let nodes = listing(d.dev.path());
        assert!(
            nodes.contains(&"fuse c 10:229 666 0:0".to_string()),
            "{nodes:#?}"
        );
        // A group and no mode: 0660, as udev does.
        assert!(
            nodes.contains(&"snd/seq c 10:1 660 0:4321".to_string()),
            "{nodes:#?}"
        );
        assert!(!d.dev.path().join("vhost-net").exists());
        let link = run_path.join("static_node-tags/uaccess/snd\\x2fseq");
        let dev_abs = std::fs::canonicalize(&dev_path).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), dev_abs.join("snd/seq"));

        // Other rules: the new permissions apply, the tag nobody asks for goes.
        std::fs::write(
            rules.path(),
            "KERNEL==\"fuse\", MODE=\"0640\", OPTIONS+=\"static_node=fuse\"\n",
        )
        .unwrap();
        let (code, out, err) = d.client("control", &["reload"]);
        assert_eq!(code, 0, "{out}{err}");
        let nodes = listing(d.dev.path());
        assert!(
            nodes.contains(&"fuse c 10:229 640 0:0".to_string()),
            "{nodes:#?}"
        );
        assert!(
            nodes.contains(&"snd/seq c 10:1 660 0:4321".to_string()),
            "{nodes:#?}"
        );
        assert!(!link.exists() && !run_path.join("static_node-tags/uaccess").exists());
        d.stop();
    })
    .unwrap();
}

#[test]
fn edited_rule_files_are_reloaded_by_themselves_when_events_come() {
    in_private_netns(|| {
        let sys = tree();
        let rules = tempfile::tempdir().unwrap();
        let file = rules.path().join("50-mine.rules");
        std::fs::write(&file, "KERNEL==\"vda\", MODE=\"0640\"\n").unwrap();
        let rules_arg = rules.path().display().to_string();
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg]);
        d.settle();
        assert!(listing(d.dev.path()).contains(&"vda b 254:0 640 0:0".to_string()));
        // Edited in place (same inode, no `reload`), and a new file beside it.
        std::fs::write(&file, "KERNEL==\"vda\", MODE=\"0604\"\n").unwrap();
        std::fs::write(
            rules.path().join("60-new.rules"),
            "KERNEL==\"vda\", SYMLINK+=\"from-new-file\"\n",
        )
        .unwrap();
        // The daemon looks at its rule files at most every 3 s, when events come.
        std::thread::sleep(Duration::from_millis(3100));
        let inj = Injector::open().unwrap();
        inj.send_all(&[char_event(Action::Change, DISK_A, "block", (254, 0), "vda")])
            .unwrap();
        d.settle();
        let nodes = listing(d.dev.path());
        assert!(
            nodes.contains(&"vda b 254:0 604 0:0".to_string()),
            "{nodes:#?}"
        );
        assert!(
            nodes.contains(&"from-new-file -> vda".to_string()),
            "{nodes:#?}"
        );
        d.stop();
    })
    .unwrap();
}

/// The security label `name` of `path`, if set.
fn xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn seclabels_are_set_on_add_for_the_active_security_modules_only() {
    in_private_netns(|| {
        let sys = tree();
        // SELinux active, SMACK not (the daemon reads this from its --sysfs).
        std::fs::create_dir_all(sys.root().join("fs/selinux")).unwrap();
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            rules.path(),
            concat!(
                "KERNEL==\"vda\", SECLABEL{selinux}=\"system_u:object_r:fixed_disk_device_t:s0\", ",
                "SECLABEL{smack}+=\"disk\"\n",
                "KERNEL==\"vdb\", SECLABEL{nosuch}=\"x\"\n",
            ),
        )
        .unwrap();
        let rules_arg = rules.path().display().to_string();
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg]);
        d.settle();
        let vda = d.dev.path().join("vda");
        assert_eq!(
            xattr(&vda, "security.selinux").as_deref(),
            Some("system_u:object_r:fixed_disk_device_t:s0\0")
        );
        assert_eq!(xattr(&vda, "security.SMACK64"), None, "SMACK is not active");
        assert_eq!(xattr(&d.dev.path().join("vdb"), "security.selinux"), None);
        let log = d.stop().2;
        assert!(
            log.contains("SECLABEL{nosuch}: unknown security module"),
            "{log}"
        );

        // `uevd test` shows them.
        let out = uevd(&[
            "test",
            "--sysfs",
            &sys.root().display().to_string(),
            "--rules",
            &rules_arg,
            DISK_A,
        ])
        .output()
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("seclabel: selinux system_u:object_r:fixed_disk_device_t:s0"),
            "{text}"
        );
    })
    .unwrap();
}

#[test]
fn dot_properties_serve_one_event_and_are_not_recorded() {
    in_private_netns(|| {
        let sys = tree();
        let out = tempfile::tempdir().unwrap();
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            rules.path(),
            format!(
                concat!(
                    "KERNEL==\"vda\", ACTION==\"add\", ENV{{.SCRATCH}}=\"x\", ENV{{KEEP}}=\"$env{{.SCRATCH}}\"\n",
                    "KERNEL==\"vda\", ACTION==\"change\", IMPORT{{db}}=\".SCRATCH\", ENV{{FOUND}}=\"1\"\n",
                    "KERNEL==\"vda\", ACTION==\"change\", IMPORT{{db}}=\"KEEP\", ENV{{SAW}}=\"[$env{{KEEP}}]\"\n",
                    // The shell drops names that are not identifiers: read what it was given.
                    "KERNEL==\"vda\", RUN+=\"/bin/sh -c 'cat /proc/$$$$/environ > {}/env-$env{{ACTION}}'\"\n",
                ),
                out.path().display()
            ),
        )
        .unwrap();
        let rules_arg = rules.path().display().to_string();
        let d = Daemon::start(sys.root(), &["--rules", &rules_arg]);
        d.settle();
        let record = db_record(d.run.path(), "b254:0");
        assert!(record.contains("E:KEEP=x"), "{record}");
        assert!(!record.contains(".SCRATCH"), "{record}");
        let env = std::fs::read_to_string(out.path().join("env-add")).unwrap();
        assert!(env.split('\0').any(|l| l == ".SCRATCH=x"), "helpers see it: {env}");

        let inj = Injector::open().unwrap();
        inj.send_all(&[char_event(Action::Change, DISK_A, "block", (254, 0), "vda")])
            .unwrap();
        d.settle();
        let record = db_record(d.run.path(), "b254:0");
        assert!(record.contains("E:SAW=[x]"), "{record}");
        assert!(!record.contains("FOUND"), "IMPORT{{db}} finds no .X: {record}");
        d.stop();
    })
    .unwrap();
}
