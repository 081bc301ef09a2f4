//! `uevd daemon` as a real process: coldplug, injected bursts, hostile names, overflow,
//! restart, SIGTERM, settle and trigger. Each test has its own network namespace, fake sysfs,
//! `--dev` and `--run` directories.

use super::util::{db_ids, db_record, spawn, uevd, TIMEOUT};
use rustix::process::Signal;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use uevd_testkit::{
    char_event, char_move, event, in_private_netns, unique, Action, Child, CpuTime, FakeSysfs,
    Injector, Line,
};

/// A daemon under test with its directories.
pub struct Daemon {
    pub child: Child,
    pub dev: tempfile::TempDir,
    pub run: tempfile::TempDir,
    /// On a fake sysfs: keeps real kernel events out while it runs (see `util`).
    _quiet: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

impl Daemon {
    /// Starts `uevd daemon` on `sysfs` with fresh `--dev`/`--run` and waits until it is ready.
    pub fn start(sysfs: &Path, extra: &[&str]) -> Daemon {
        let dev = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        Daemon::start_in(sysfs, dev, run, extra)
    }

    /// Like [`Daemon::start`] with given directories (to restart on the same state).
    pub fn start_in(
        sysfs: &Path,
        dev: tempfile::TempDir,
        run: tempfile::TempDir,
        extra: &[&str],
    ) -> Daemon {
        let quiet = (sysfs != Path::new("/sys")).then(super::util::without_real_events);
        let mut args = vec![
            "daemon".to_string(),
            "--sysfs".into(),
            sysfs.display().to_string(),
            "--dev".into(),
            dev.path().display().to_string(),
            "--run".into(),
            run.path().display().to_string(),
        ];
        if !extra.contains(&"--modprobe") {
            args.push("--modprobe".into());
            args.push("none".into());
        }
        // The core tests run without rules (kernel defaults) unless they bring their own.
        if !extra
            .iter()
            .any(|a| a.starts_with("--rules") || *a == "--builtin-rules" || *a == "--mdev-conf")
        {
            let empty = run.path().join("no-rules");
            std::fs::create_dir_all(&empty).expect("create empty rules dir");
            args.push("--rules".into());
            args.push(empty.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn(&args);
        let line = child.wait_for(
            TIMEOUT,
            |l| matches!(l, Line::Err(s) if s.contains("ready after")),
        );
        assert!(
            line.is_some(),
            "daemon never became ready\n{}",
            child.transcript()
        );
        assert!(
            run.path().join("control").exists(),
            "ready but no control socket"
        );
        Daemon {
            child,
            dev,
            run,
            _quiet: quiet,
        }
    }

    /// `uevd CMD --run RUN ARGS…`, returning (exit code, stdout, stderr).
    pub fn client(&self, cmd: &str, args: &[&str]) -> (i32, String, String) {
        let run = self.run.path().display().to_string();
        let mut all = vec![cmd, "--run", &run];
        all.extend_from_slice(args);
        let out = uevd(&all).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits until the daemon's queue is empty.
    pub fn settle(&self) {
        let (code, _, err) = self.client("settle", &["--timeout", "20"]);
        assert_eq!(code, 0, "settle failed: {err}");
    }

    /// The daemon's counters.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let (code, out, err) = self.client("control", &["stats"]);
        assert_eq!(code, 0, "stats failed: {err}");
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
            .collect()
    }

    /// Waits until counter `key` reaches `at_least`; fails the test (with the counters and
    /// the daemon's output) after `timeout`.
    pub fn wait_for_stat(&self, key: &str, at_least: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.stats()[key] < at_least {
            assert!(
                Instant::now() < deadline,
                "{key} never reached {at_least}: {:?}\n{}",
                self.stats(),
                self.child.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM and checks it exits 0.
    pub fn stop(mut self) -> (tempfile::TempDir, tempfile::TempDir, String) {
        self.child.signal(Signal::TERM).unwrap();
        let status = self
            .child
            .wait_exit(TIMEOUT)
            .expect("daemon exits on SIGTERM");
        assert!(status.success(), "{status}\n{}", self.child.transcript());
        assert!(
            !self.run.path().join("control").exists(),
            "control socket left behind"
        );
        let transcript = self.child.transcript();
        (self.dev, self.run, transcript)
    }
}

/// Every entry under `dir` as `path kind major:minor mode uid:gid` (or `-> target` for links).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            if ft.is_dir() {
                out.push(format!("{rel}/ {:o}", m.mode() & 0o7777));
                walk(root, &path, out);
            } else if ft.is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&path).unwrap().display()
                ));
            } else {
                let kind = if ft.is_char_device() {
                    "c"
                } else if ft.is_block_device() {
                    "b"
                } else {
                    "f"
                };
                let rdev = m.rdev();
                out.push(format!(
                    "{rel} {kind} {}:{} {:o} {}:{}",
                    rustix::fs::major(rdev),
                    rustix::fs::minor(rdev),
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn small_tree() -> FakeSysfs {
    let sys = FakeSysfs::new().unwrap();
    sys.device(
        "/devices/virtual/tty/tty0",
        "tty",
        &[("MAJOR", "4"), ("MINOR", "0"), ("DEVNAME", "tty0")],
    )
    .unwrap();
    sys.device(
        "/devices/virtual/misc/fuse",
        "misc",
        &[
            ("MAJOR", "10"),
            ("MINOR", "229"),
            ("DEVNAME", "fuse"),
            ("DEVMODE", "0666"),
        ],
    )
    .unwrap();
    sys.device(
        "/devices/platform/i8042/serio0/input/input3",
        "input",
        &[("PRODUCT", "11/1/1/ab41")],
    )
    .unwrap();
    sys.device(
        "/devices/platform/i8042/serio0/input/input3/event3",
        "input",
        &[
            ("MAJOR", "13"),
            ("MINOR", "67"),
            ("DEVNAME", "input/event3"),
        ],
    )
    .unwrap();
    sys.device(
        "/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        "block",
        &[
            ("MAJOR", "8"),
            ("MINOR", "0"),
            ("DEVNAME", "sda"),
            ("DEVTYPE", "disk"),
        ],
    )
    .unwrap();
    sys.device(
        "/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1",
        "block",
        &[
            ("MAJOR", "8"),
            ("MINOR", "1"),
            ("DEVNAME", "sda1"),
            ("DEVTYPE", "partition"),
        ],
    )
    .unwrap();
    sys.device(
        "/devices/pci0000:00/0000:00:14.0/usb1/1-1",
        "usb",
        &[
            ("MAJOR", "189"),
            ("MINOR", "1"),
            ("DEVNAME", "bus/usb/001/002"),
            ("DEVTYPE", "usb_device"),
        ],
    )
    .unwrap();
    sys
}

const SMALL_TREE_DEV: &[&str] = &[
    "bus/ 755",
    "bus/usb/ 755",
    "bus/usb/001/ 755",
    "bus/usb/001/002 c 189:1 600 0:0",
    "fuse c 10:229 666 0:0",
    "input/ 755",
    "input/event3 c 13:67 600 0:0",
    "sda b 8:0 600 0:0",
    "sda1 b 8:1 600 0:0",
    "tty0 c 4:0 600 0:0",
];

#[test]
fn coldplug_creates_exactly_the_expected_nodes() {
    in_private_netns(|| {
        let sys = small_tree();
        let d = Daemon::start(sys.root(), &[]);
        assert_eq!(listing(d.dev.path()), SMALL_TREE_DEV);
        // One record per device, named like udev's ids.
        assert_eq!(
            db_ids(d.run.path()),
            [
                "+input:input3",
                "b8:0",
                "b8:1",
                "c10:229",
                "c13:67",
                "c189:1",
                "c4:0"
            ]
        );
        let stats = d.stats();
        assert_eq!(stats["processed"], 7, "{stats:?}");
        assert_eq!(stats["devices"], 7);

        // `uevd info` finds a record by id, devpath (with or without /sys) and node.
        let sda1 = "/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1";
        let sys_sda1 = format!("/sys{sda1}");
        for name in ["b8:1", sda1, sys_sda1.as_str(), "/dev/sda1", "sda1"] {
            let (code, out, err) = d.client("info", &[name]);
            assert_eq!(code, 0, "{name}: {err}");
            assert!(
                out.starts_with(&format!("V:1\nP:{sda1}\n")),
                "{name}: {out}"
            );
            assert!(out.contains("N:b 8:1 0600 0 0 sda1\n"), "{name}: {out}");
            assert!(out.contains("E:DEVTYPE=partition\n"), "{name}: {out}");
        }
        // Every record, parents first, one blank line between records.
        let (code, out, _) = d.client("info", &[]);
        assert_eq!(code, 0);
        let devpaths: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("P:")).collect();
        assert_eq!(devpaths.len(), 7, "{out}");
        assert_eq!(out.matches("\n\nV:1\n").count(), 6, "{out}");
        let pos = |p: &str| devpaths.iter().position(|d| d.ends_with(p)).unwrap();
        assert!(pos("/input3") < pos("/input3/event3"), "{devpaths:?}");
        let (code, _, err) = d.client("info", &["/dev/nope"]);
        assert_eq!(code, 1);
        assert!(err.contains("no record for \"/dev/nope\""), "{err}");
        d.stop();
    })
    .unwrap();
}

#[test]
fn ready_fd_gets_one_newline_then_eof_and_helpers_never_inherit_it() {
    in_private_netns(|| {
        let sys = small_tree();
        let (work, dev, run) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let fifo = work.path().join("ready");
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        // A helper that leaves a process behind: had it inherited the descriptor, the
        // reader would see no end of file until that process exits.
        let rules = work.path().join("50-bg.rules");
        // And one that tells whether it got a descriptor the daemon's parent left open.
        let leak = work.path().join("leaked");
        std::fs::write(
            &rules,
            format!(
                "SUBSYSTEM==\"tty\", RUN+=\"/bin/sh -c 'sleep 5 &'\"\n\
                 SUBSYSTEM==\"tty\", RUN+=\"/bin/sh -c 'test -e /proc/self/fd/7 && touch {}'\"\n",
                leak.display()
            ),
        )
        .unwrap();
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .unwrap();
        let binary = std::env::var_os("UEVD_TEST_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_uevd").into());
        let mut daemon = Command::new("/bin/sh")
            .args(["-c", "exec \"$@\" 3>\"$READY\" 7</dev/null", "sh"])
            .arg(binary)
            .args(["daemon", "--modprobe", "none", "--ready-fd", "3"])
            .arg("--sysfs")
            .arg(sys.root())
            .arg("--dev")
            .arg(dev.path())
            .arg("--run")
            .arg(run.path())
            .arg("--rules")
            .arg(&rules)
            .env("READY", &fifo)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (mut got, mut newline_at) = (Vec::new(), None);
        let deadline = Instant::now() + TIMEOUT;
        let eof = loop {
            assert!(Instant::now() < deadline, "no readiness: {got:?}");
            let mut buf = [0u8; 16];
            match std::io::Read::read(&mut &reader, &mut buf) {
                // End of file: only once the writer was there (before, a FIFO reads empty).
                Ok(0) if newline_at.is_some() => break Instant::now(),
                Ok(0) => {}
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    newline_at.get_or_insert_with(Instant::now);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(got, b"\n");
        let waited = eof - newline_at.unwrap();
        assert!(
            waited < Duration::from_secs(2),
            "end of file {waited:?} after the newline"
        );
        assert!(dev.path().join("tty0").exists(), "ready after coldplug");
        assert!(
            !leak.exists(),
            "a helper inherited the daemon's descriptor 7"
        );
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&daemon),
            rustix::process::Signal::TERM,
        );
        assert!(daemon.wait().unwrap().success());
    })
    .unwrap();
}

#[test]
fn a_transaction_watcher_busy_elsewhere_gets_every_answer_once_it_reads() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let uuid = "0b2c3d4e-1111-4222-8333-944455556666";
        let mut watcher = uevd::control::Client::connect(d.run.path()).unwrap();
        watcher
            .send(&uevd::control::Request::WatchUuid(uuid.into()))
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        assert_eq!(watcher.read_line(deadline).unwrap().as_deref(), Some("ok"));
        // Like `trigger --wait` over thousands of devices: far more answers than a socket
        // buffer holds arrive while the watcher is not reading.
        let tag = unique("watch");
        let n = 3000;
        let events: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                event(Action::Change, &format!("/devices/virtual/{tag}/d{i}"), "t")
                    .var("SYNTH_UUID", uuid)
                    .to_bytes()
            })
            .collect();
        Injector::open().unwrap().send_all(&events).unwrap();
        d.wait_for_stat("processed", n as u64, TIMEOUT);
        let mut answered = std::collections::BTreeSet::new();
        while answered.len() < n {
            match watcher.read_line(deadline) {
                Ok(Some(line)) => {
                    let devpath = line.strip_prefix("processed ").expect("a processed line");
                    assert!(answered.insert(devpath.to_owned()), "twice: {devpath}");
                }
                other => panic!("after {} answers: {other:?}", answered.len()),
            }
        }
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_request_cut_short_by_the_end_of_input_is_still_answered() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        // `printf ping | socat - UNIX-CONNECT:…`: no newline, then the write side closes.
        let mut s = std::os::unix::net::UnixStream::connect(d.run.path().join("control")).unwrap();
        std::io::Write::write_all(&mut s, b"ping").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
        assert_eq!(answer, "ok\n");
        d.stop();
    })
    .unwrap();
}

#[test]
fn control_clients_are_capped_idle_ones_dropped_and_running_out_of_descriptors_does_not_spin() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let mut d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let control = d.run.path().join("control");
        let pid = d.child.id();
        // A script gone wrong: connections that never send a request.
        let idle: Vec<UnixStream> = (0..256)
            .map(|_| UnixStream::connect(&control).unwrap())
            .collect();
        let mut extra = UnixStream::connect(&control).unwrap();
        extra.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut answer = String::new();
        extra.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "error: too many clients\n");
        // They are dropped after 10 s; then requests are answered again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.client("control", &["ping"]).0 != 0 {
            assert!(Instant::now() < deadline, "idle clients never dropped");
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(idle);
        // Out of descriptors: connections wait in the backlog, the loop does not spin on
        // them, and it says so once.
        // The soft limit only: putting it back needs no privilege.
        let limited = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), "--nofile=24:"])
            .status()
            .unwrap();
        assert!(limited.success());
        let waiting: Vec<UnixStream> = (0..40)
            .map(|_| UnixStream::connect(&control).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let before = CpuTime::of_process(pid).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let used = CpuTime::of_process(pid).unwrap().since(before).total();
        assert!(used < Duration::from_millis(300), "{used:?} of CPU in 1 s");
        drop(waiting);
        let said = d.child.wait_for(
            TIMEOUT,
            |l| matches!(l, Line::Err(s) if s.contains("out of file descriptors")),
        );
        assert!(said.is_some(), "{}", d.child.transcript());
        let restored = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), "--nofile=1024:"])
            .status()
            .unwrap();
        assert!(restored.success());
        let deadline = Instant::now() + TIMEOUT;
        while d.client("control", &["ping"]).0 != 0 {
            assert!(Instant::now() < deadline, "never accepting again");
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = d.child.transcript();
        assert_eq!(log.matches("out of file descriptors").count(), 1, "{log}");
        d.stop();
    })
    .unwrap();
}

#[test]
fn malformed_events_are_counted_and_a_flood_of_them_logged_ten_times() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let mut d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let tag = unique("bad");
        // From the kernel's port, but without SUBSYSTEM.
        let bad: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                let p = format!("/devices/virtual/{tag}/b{i}");
                format!("add@{p}\0ACTION=add\0DEVPATH={p}\0").into_bytes()
            })
            .collect();
        let inj = Injector::open().unwrap();
        inj.send_all(&bad).unwrap();
        d.wait_for_stat("malformed", 50, TIMEOUT);
        let deadline = Instant::now() + TIMEOUT;
        let logged = |d: &Daemon| d.child.transcript().matches("SUBSYSTEM is missing").count();
        while logged(&d) < 10 {
            assert!(Instant::now() < deadline, "{}", d.child.transcript());
            let _ = d.child.wait_for(Duration::from_millis(100), |_| false);
        }
        let _ = d.child.wait_for(Duration::from_millis(300), |_| false);
        assert_eq!(logged(&d), 10, "{}", d.child.transcript());
        // Nothing else suffers.
        inj.send(&char_event(
            Action::Add,
            &format!("/devices/virtual/{tag}/good"),
            "t",
            (240, 1),
            "good",
        ))
        .unwrap();
        d.wait_for_stat("processed", 1, TIMEOUT);
        assert!(d.dev.path().join("good").exists());
        d.stop();
    })
    .unwrap();
}

#[test]
fn the_last_node_out_of_a_directory_takes_it_whoever_made_it() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let tag = unique("prune");
        let ev = |action, i: usize| {
            char_event(
                action,
                &format!("/devices/virtual/{tag}/e{i}"),
                "input",
                (13, 64 + i),
                &format!("input/deep/event{i}"),
            )
        };
        let inj = Injector::open().unwrap();
        // event1 makes input/deep; event2 finds it there; event1 goes first.
        inj.send_all(&[
            ev(Action::Add, 1),
            ev(Action::Add, 2),
            ev(Action::Remove, 1),
        ])
        .unwrap();
        d.wait_for_stat("processed", 3, TIMEOUT);
        d.settle();
        assert!(d.dev.path().join("input/deep/event2").exists());
        inj.send(&ev(Action::Remove, 2)).unwrap();
        d.wait_for_stat("processed", 4, TIMEOUT);
        d.settle();
        assert_eq!(
            listing(d.dev.path()),
            Vec::<String>::new(),
            "input/deep and input pruned"
        );
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_parents_move_takes_its_childrens_records_along() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let tag = unique("mv");
        let (a, b) = (
            format!("/devices/virtual/{tag}/a"),
            format!("/devices/virtual/{tag}/b"),
        );
        let kid = |parent: &str| format!("{parent}/kid");
        let inj = Injector::open().unwrap();
        inj.send_all(&[
            char_event(Action::Add, &a, "t", (240, 0), "a0"),
            char_event(Action::Add, &kid(&a), "t", (240, 1), "kid0"),
        ])
        .unwrap();
        d.wait_for_stat("processed", 2, TIMEOUT);
        // The kernel sends a move for the parent only.
        inj.send(&char_move(&b, &a, "t", (240, 0), "a0")).unwrap();
        d.wait_for_stat("processed", 3, TIMEOUT);
        d.settle();
        let (code, out, err) = d.client("info", &[&kid(&b)]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("P:{}\n", kid(&b))), "{out}");
        assert_ne!(
            d.client("info", &[&kid(&a)]).0,
            0,
            "no record left at the old path"
        );
        inj.send_all(&[
            char_event(Action::Remove, &kid(&b), "t", (240, 1), "kid0"),
            char_event(Action::Remove, &b, "t", (240, 0), "a0"),
        ])
        .unwrap();
        d.wait_for_stat("processed", 5, TIMEOUT);
        d.settle();
        assert_eq!(d.stats()["devices"], 0);
        assert_eq!(listing(d.dev.path()), Vec::<String>::new());
        assert!(
            db_ids(d.run.path()).is_empty(),
            "{:?}",
            db_ids(d.run.path())
        );
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_move_onto_a_path_whose_remove_was_lost_cleans_up_the_old_device_and_its_children() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let tag = unique("mvover");
        let (a, b) = (
            format!("/devices/virtual/{tag}/a"),
            format!("/devices/virtual/{tag}/b"),
        );
        let inj = Injector::open().unwrap();
        // b and its children's removes never arrive (lost); then a moves to b's path,
        // taking its own child along.
        inj.send_all(&[
            char_event(Action::Add, &a, "t", (240, 0), "a0"),
            char_event(Action::Add, &format!("{a}/k"), "t", (240, 4), "a0k"),
            char_event(Action::Add, &b, "t", (240, 1), "b1"),
            char_event(Action::Add, &format!("{b}/c"), "t", (240, 2), "b1c"),
            char_event(Action::Add, &format!("{b}/c/d"), "t", (240, 3), "sub/b1cd"),
        ])
        .unwrap();
        d.wait_for_stat("processed", 5, TIMEOUT);
        inj.send(&char_move(&b, &a, "t", (240, 0), "a0")).unwrap();
        d.wait_for_stat("processed", 6, TIMEOUT);
        d.settle();
        assert_eq!(
            listing(d.dev.path()),
            ["a0 c 240:0 600 0:0", "a0k c 240:4 600 0:0"],
            "b1's node and its children's went with it"
        );
        assert_eq!(d.stats()["devices"], 2);
        let mut ids = db_ids(d.run.path());
        ids.sort();
        assert_eq!(ids, ["c240:0", "c240:4"]);
        // The moved child is known under its new path: its remove takes its node.
        inj.send(&char_event(
            Action::Remove,
            &format!("{b}/k"),
            "t",
            (240, 4),
            "a0k",
        ))
        .unwrap();
        d.wait_for_stat("processed", 7, TIMEOUT);
        assert_eq!(listing(d.dev.path()), ["a0 c 240:0 600 0:0"]);
        d.stop();
    })
    .unwrap();
}

#[test]
fn restart_neither_redoes_work_nor_keeps_stale_nodes() {
    in_private_netns(|| {
        let sys = small_tree();
        let d = Daemon::start(sys.root(), &[]);
        let (dev, run, _) = d.stop();
        // While it was down: a device vanished, another changed.
        sys.remove_device("/devices/pci0000:00/0000:00:14.0/usb1/1-1")
            .unwrap();
        sys.device(
            "/devices/virtual/tty/tty0",
            "tty",
            &[
                ("MAJOR", "4"),
                ("MINOR", "0"),
                ("DEVNAME", "tty0"),
                ("NEW", "1"),
            ],
        )
        .unwrap();
        let d = Daemon::start_in(sys.root(), dev, run, &[]);
        let summary = d.child.transcript();
        assert!(
            summary.contains("queued 0 add, 1 change, 1 remove; 5 unchanged"),
            "{summary}"
        );
        let expect: Vec<&str> = SMALL_TREE_DEV
            .iter()
            .copied()
            .filter(|l| !l.starts_with("bus"))
            .collect();
        assert_eq!(
            listing(d.dev.path()),
            expect,
            "usb node and its directories removed"
        );
        assert_eq!(d.stats()["processed"], 2);
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_device_that_took_a_vanished_ones_number_while_uevd_was_down_keeps_its_node() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let node = [("MAJOR", "240"), ("MINOR", "0"), ("DEVNAME", "foo0")];
        sys.device("/devices/virtual/foo/a", "foo", &node).unwrap();
        let d = Daemon::start(sys.root(), &[]);
        let (dev, run, _) = d.stop();
        // Unplugged and another plugged in while uevd was down: same number, same name.
        sys.remove_device("/devices/virtual/foo/a").unwrap();
        sys.device("/devices/virtual/foo/b", "foo", &node).unwrap();
        let d = Daemon::start_in(sys.root(), dev, run, &[]);
        assert_eq!(listing(d.dev.path()), ["foo0 c 240:0 600 0:0"]);
        let (code, out, err) = d.client("info", &["/dev/foo0"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("P:/devices/virtual/foo/b\n"), "{out}");
        assert_eq!(d.stats()["devices"], 1);
        d.stop();
    })
    .unwrap();
}

#[test]
fn injected_bursts_leave_dev_and_db_equal_to_the_truth() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug", "--children", "2"]);
        let inj = Injector::open().unwrap();
        let tag = unique("burst");
        let n = 600;
        let devpath = |i: usize| format!("/devices/virtual/{tag}/dev{i}");
        let adds: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                event(Action::Add, &devpath(i), "widget")
                    .var("MAJOR", "240")
                    .var("MINOR", i.to_string())
                    .var("DEVNAME", format!("widgets/w{i}"))
                    .to_bytes()
            })
            .collect();
        inj.send_all(&adds).unwrap();
        // Remove every third; rename (move) every fifth of the rest.
        let mut later = Vec::new();
        for i in 0..n {
            if i % 3 == 0 {
                later.push(char_event(
                    Action::Remove,
                    &devpath(i),
                    "widget",
                    (240, i),
                    &format!("widgets/w{i}"),
                ));
            } else if i % 5 == 0 {
                later.push(char_move(
                    &format!("/devices/virtual/{tag}/moved{i}"),
                    &devpath(i),
                    "widget",
                    (240, i),
                    &format!("widgets/m{i}"),
                ));
            }
        }
        inj.send_all(&later).unwrap();
        // Wait until everything injected was received, then settle.
        let total = (adds.len() + later.len()) as u64;
        d.wait_for_stat("received", total, TIMEOUT);
        d.settle();

        let mut expect = vec!["widgets/ 755".to_string()];
        let mut names: Vec<(String, usize)> = (0..n)
            .filter(|i| i % 3 != 0)
            .map(|i| {
                (
                    if i % 5 == 0 {
                        format!("m{i}")
                    } else {
                        format!("w{i}")
                    },
                    i,
                )
            })
            .collect();
        names.sort();
        expect.extend(
            names
                .iter()
                .map(|(name, i)| format!("widgets/{name} c 240:{i} 600 0:0")),
        );
        assert_eq!(listing(d.dev.path()), expect);

        let mut ids: Vec<String> = (0..n)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("c240:{i}"))
            .collect();
        ids.sort();
        assert_eq!(db_ids(d.run.path()), ids);
        // A moved device's record has its new devpath and node.
        let moved = db_record(d.run.path(), "c240:5");
        assert!(
            moved.contains(&format!("P:/devices/virtual/{tag}/moved5\n")),
            "{moved}"
        );
        assert!(moved.contains(" widgets/m5\n"), "{moved}");
        let stats = d.stats();
        assert_eq!(stats["processed"], total, "{stats:?}");
        assert_eq!(stats["errors"], 0, "{}", d.child.transcript());
        d.stop();
    })
    .unwrap();
}

#[test]
fn hostile_devnames_are_refused_and_nothing_outside_dev_changes() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut d = Daemon::start(sys.root(), &["--no-coldplug"]);
        // A symlink planted inside --dev that points outside it.
        std::os::unix::fs::symlink(outside.path(), d.dev.path().join("planted")).unwrap();
        let escape = format!(
            "../{}/x",
            outside.path().file_name().unwrap().to_string_lossy()
        );
        let inj = Injector::open().unwrap();
        let tag = unique("hostile");
        let names = [
            "../../etc/uevd-pwned".to_string(),
            outside.path().join("abs").display().to_string(),
            "planted/through-symlink".to_string(),
            escape,
            "a//b".to_string(),
            "ok/./x".to_string(),
        ];
        let events: Vec<Vec<u8>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                event(
                    Action::Add,
                    &format!("/devices/virtual/{tag}/h{i}"),
                    "widget",
                )
                .var("MAJOR", "241")
                .var("MINOR", i.to_string())
                .var("DEVNAME", name)
                .to_bytes()
            })
            .collect();
        inj.send_all(&events).unwrap();
        d.wait_for_stat("processed", names.len() as u64, TIMEOUT);
        let stats = d.stats();
        assert_eq!(
            stats["refused_nodes"],
            names.len() as u64,
            "{stats:?}\n{}",
            d.child.transcript()
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "something was created outside --dev"
        );
        assert!(!Path::new("/etc/uevd-pwned").exists());
        assert_eq!(
            listing(d.dev.path()),
            [format!("planted -> {}", outside.path().display())]
        );
        // Each refusal is logged naming the event and the culprit.
        d.child.wait_for(Duration::from_millis(200), |_| false);
        let log = d.child.transcript();
        assert!(
            log.contains(&format!("add /devices/virtual/{tag}/h0")),
            "{log}"
        );
        assert!(
            log.contains("refusing node name \"../../etc/uevd-pwned\": '.' or '..' component"),
            "{log}"
        );
        assert!(
            log.contains("refusing \"planted/through-symlink\""),
            "{log}"
        );
        d.stop();
    })
    .unwrap();
}

#[test]
fn overflow_ends_in_a_reconciled_state() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let tag = unique("ovf");
        let n = 300;
        for i in 0..n {
            sys.device(
                &format!("/devices/virtual/{tag}/d{i}"),
                "widget",
                &[
                    ("MAJOR", "242"),
                    ("MINOR", &i.to_string()),
                    ("DEVNAME", &format!("o{i}")),
                ],
            )
            .unwrap();
        }
        let d = Daemon::start(sys.root(), &["--no-coldplug", "--recv-buffer", "1"]);
        let inj = Injector::open().unwrap();
        // Freeze the daemon so its tiny buffer overflows while the devices "appear".
        d.child.signal(Signal::STOP).unwrap();
        let adds: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                event(
                    Action::Add,
                    &format!("/devices/virtual/{tag}/d{i}"),
                    "widget",
                )
                .var("MAJOR", "242")
                .var("MINOR", i.to_string())
                .var("DEVNAME", format!("o{i}"))
                .to_bytes()
            })
            .collect();
        inj.send_all(&adds).unwrap();
        d.child.signal(Signal::CONT).unwrap();
        // Settled means reconciled: the answer waits for the resync the overflow calls for.
        d.settle();
        let stats = d.stats();
        assert!(stats["overflows"] >= 1, "{stats:?}");
        assert!(stats["resyncs"] >= 1, "{stats:?}");
        assert!(
            stats["received"] < n as u64,
            "the buffer really overflowed: {stats:?}"
        );
        let mut expect: Vec<String> = (0..n).map(|i| format!("o{i} c 242:{i} 600 0:0")).collect();
        expect.sort();
        assert_eq!(listing(d.dev.path()), expect);
        assert_eq!(db_ids(d.run.path()).len(), n);
        d.stop();
    })
    .unwrap();
}

#[test]
fn sigterm_mid_burst_loses_no_processed_state() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug", "--children", "2"]);
        let inj = Injector::open().unwrap();
        let tag = unique("term");
        let adds: Vec<Vec<u8>> = (0..3000)
            .map(|i| {
                event(
                    Action::Add,
                    &format!("/devices/virtual/{tag}/d{i}"),
                    "widget",
                )
                .var("MAJOR", "243")
                .var("MINOR", i.to_string())
                .var("DEVNAME", format!("t/{i}"))
                .to_bytes()
            })
            .collect();
        inj.send_all(&adds).unwrap();
        let (dev, run, log) = d.stop();
        // Every record on disk has its node, and every node its record; no temporaries.
        let ids = db_ids(run.path());
        let nodes: Vec<String> = listing(dev.path())
            .into_iter()
            .filter(|l| !l.starts_with("t/ "))
            .collect();
        assert_eq!(nodes.len(), ids.len(), "{log}");
        for id in &ids {
            let minor = id.strip_prefix("c243:").unwrap();
            assert!(
                nodes.contains(&format!("t/{minor} c 243:{minor} 600 0:0")),
                "{id} has no node"
            );
        }
        assert!(!listing(dev.path()).iter().any(|l| l.contains(".uevd-tmp")));
        assert!(log.contains("exiting:"), "{log}");
    })
    .unwrap();
}

#[test]
fn settle_on_an_idle_daemon_returns_at_once_and_fails_without_one() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let t = Instant::now();
        d.settle();
        assert!(t.elapsed() < Duration::from_secs(5));
        // `--timeout 0` only asks (as udevadm settle -t 0); a timeout that is no number of
        // seconds is a usage error, not a crash.
        let (code, _, err) = d.client("settle", &["--timeout", "0"]);
        assert_eq!(code, 0, "{err}");
        for bad in ["-1", "nan", "inf", "1e30"] {
            let (code, _, err) = d.client("settle", &[&format!("--timeout={bad}")]);
            assert_eq!(code, 2, "{bad}: {err}");
            assert!(err.contains("is not a number of seconds"), "{bad}: {err}");
        }
        let (code, out, _) = d.client("control", &["ping"]);
        assert_eq!((code, out.as_str()), (0, ""));
        let (dev, run, _) = d.stop();
        drop(dev);
        let out = uevd(&["settle", "--run", &run.path().display().to_string()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is uevd daemon running"));
    })
    .unwrap();
}

#[test]
fn trigger_wait_times_out_naming_devices_whose_event_never_comes() {
    in_private_netns(|| {
        // A fake sysfs: writing its uevent files makes no kernel event.
        let sys = small_tree();
        let d = Daemon::start(sys.root(), &[]);
        let root = sys.root().display().to_string();
        let (code, _, err) = d.client(
            "trigger",
            &[
                "--sysfs",
                &root,
                "--subsystem-match",
                "tty",
                "--wait",
                "--timeout",
                "1",
            ],
        );
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains("timed out after 1s waiting for 1 device(s)"),
            "{err}"
        );
        assert!(err.contains("/devices/virtual/tty/tty0"), "{err}");
        // What trigger wrote: ACTION UUID.
        let written =
            std::fs::read_to_string(sys.root().join("devices/virtual/tty/tty0/uevent")).unwrap();
        assert!(written.starts_with("change "), "{written}");
        d.stop();
    })
    .unwrap();
}

#[test]
fn trigger_wait_on_a_real_device_returns_once_processed() {
    const LOOP0: &str = "/sys/devices/virtual/block/loop0";
    let _real = super::util::making_real_events();
    assert!(
        Path::new(LOOP0).exists(),
        "load the loop module to run this test"
    );
    in_private_netns(|| {
        // The real sysfs, no coldplug: only the triggered event makes the node.
        let d = Daemon::start(Path::new("/sys"), &["--no-coldplug"]);
        let uuid = "5c0e7a1e-0000-4000-8000-00000000cafe";
        let (code, out, err) = d.client(
            "trigger",
            &[
                "--subsystem-match",
                "block",
                "--sysname-match",
                "loop0",
                "--uuid",
                uuid,
                "--env",
                "WHY=test",
                "--wait",
                "--verbose",
            ],
        );
        assert_eq!(code, 0, "{out}{err}\n{}", "");
        assert_eq!(out.trim(), format!("/sys{}", &LOOP0[4..]));
        // Processed before trigger returned: the node and the record exist.
        assert_eq!(listing(d.dev.path()), ["loop0 b 7:0 600 0:0"]);
        let record = db_record(d.run.path(), "b7:0");
        assert!(
            record.contains("P:/devices/virtual/block/loop0\n"),
            "{record}"
        );
        d.stop();
    })
    .unwrap();
}

/// `n` events of `action` for char devices `/devices/virtual/TAG/d{i}` (MAJOR `major`, MINOR
/// i), with nodes `DIR/{i}`.
fn widget_events(action: Action, tag: &str, major: u32, n: usize, dir: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            uevd_testkit::char_event(
                action,
                &format!("/devices/virtual/{tag}/d{i}"),
                "widget",
                (major, i),
                &format!("{dir}/{i}"),
            )
        })
        .collect()
}

#[test]
fn a_burst_larger_than_the_queue_waits_in_the_kernel_buffer_and_settle_waits_for_all_of_it() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let inj = Injector::open().unwrap();
        let n = 10_000;
        // The daemon reads at most 256 events per turn of its loop. With a worker, past 256
        // parsed events it stops reading, and the rest waits in the socket's receive buffer
        // until the queue has drained to half: the burst fills it many times. Inline, each
        // event is done as soon as it is read, and the loop comes back to the socket after
        // every 256.
        for children in ["0", "1"] {
            let d = Daemon::start(
                sys.root(),
                &[
                    "--no-coldplug",
                    "--max-queued",
                    "256",
                    "--children",
                    children,
                ],
            );
            let tag = unique("big");
            inj.send_all(&widget_events(Action::Add, &tag, 244, n, &tag))
                .unwrap();
            // Settled means nothing is left in the kernel's buffer either.
            d.settle();
            let stats = d.stats();
            // Genuine kernel events (the trigger test's loop0 change) may add to `received`.
            assert!(
                stats["processed"] >= n as u64,
                "children {children}: {stats:?}"
            );
            assert_eq!((stats["overflows"], stats["errors"]), (0, 0), "{stats:?}");
            assert_eq!(
                std::fs::read_dir(d.dev.path().join(&tag)).unwrap().count(),
                n
            );
            d.stop();
        }
    })
    .unwrap();
}

#[test]
fn recurring_overflows_make_the_daemon_degraded_and_settle_waits_for_the_deferred_resync() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let tag = unique("storm");
        let (bursts, n) = (3, 200);
        let devpath = |b: usize, i: usize| format!("/devices/virtual/{tag}/b{b}d{i}");
        let mut d = Daemon::start(sys.root(), &["--no-coldplug", "--recv-buffer", "1"]);
        let inj = Injector::open().unwrap();
        for b in 0..bursts {
            // This burst's devices appear (a resync of an earlier burst does not see them).
            for i in 0..n {
                let minor = (b * n + i).to_string();
                sys.device(
                    &devpath(b, i),
                    "widget",
                    &[
                        ("MAJOR", "243"),
                        ("MINOR", &minor),
                        ("DEVNAME", &format!("s{minor}")),
                    ],
                )
                .unwrap();
            }
            let before = d.stats()["overflows"];
            // Frozen, the daemon's tiny buffer overflows while a burst of devices appears.
            d.child.signal(Signal::STOP).unwrap();
            let adds: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let minor = (b * n + i).to_string();
                    event(Action::Add, &devpath(b, i), "widget")
                        .var("MAJOR", "243")
                        .var("MINOR", &minor)
                        .var("DEVNAME", format!("s{minor}"))
                        .to_bytes()
                })
                .collect();
            inj.send_all(&adds).unwrap();
            d.child.signal(Signal::CONT).unwrap();
            d.wait_for_stat("overflows", before + 1, TIMEOUT);
        }
        let stats = d.stats();
        assert_eq!(stats["degraded"], 1, "{stats:?}");
        // The third resync waits for the rate limit; settle waits for it.
        d.settle();
        let mut expect: Vec<String> = (0..bursts * n)
            .map(|m| format!("s{m} c 243:{m} 600 0:0"))
            .collect();
        expect.sort();
        let got = listing(d.dev.path());
        assert!(
            got == expect,
            "{} of {} nodes after settle",
            got.len(),
            expect.len()
        );
        let stats = d.stats();
        let said = d.child.wait_for(
            TIMEOUT,
            |l| matches!(l, Line::Err(s) if s.contains("degraded:")),
        );
        assert!(said.is_some(), "{}", d.child.transcript());
        let log = d.child.transcript();
        assert_eq!(log.matches("degraded:").count(), 1, "{log}");
        // One warning per resync at most, not one per overflow.
        let warned = log.matches("kernel uevents were lost").count() as u64;
        assert!(
            warned >= 1 && warned <= stats["resyncs"],
            "{stats:?}\n{log}"
        );
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_resync_undoes_queued_events_of_devices_that_are_gone() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let tag = unique("stale");
        let hold = format!("/devices/virtual/{tag}/hold");
        sys.device(&hold, "widget", &[]).unwrap();
        let work = tempfile::tempdir().unwrap();
        let rules = work.path().join("hold.rules");
        // The parent's change is done only when its helper is; its children's events wait.
        std::fs::write(
            &rules,
            "SUBSYSTEM==\"widget\", KERNEL==\"hold\", ACTION==\"change\", RUN+=\"/bin/sleep 1\"\n",
        )
        .unwrap();
        let rules_arg = rules.display().to_string();
        let d = Daemon::start(
            sys.root(),
            &["--no-coldplug", "--recv-buffer", "1", "--rules", &rules_arg],
        );
        let inj = Injector::open().unwrap();
        // y waits behind hold; it is not in sysfs (its remove will be lost).
        inj.send_all(&[
            event(Action::Change, &hold, "widget").to_bytes(),
            char_event(Action::Add, &format!("{hold}/y"), "widget", (240, 9), "y"),
        ])
        .unwrap();
        d.wait_for_stat("queued", 1, TIMEOUT);
        // Frozen, the tiny buffer overflows: y's remove would be among what is lost.
        d.child.signal(Signal::STOP).unwrap();
        let flood: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                char_event(
                    Action::Remove,
                    &format!("{hold}/z{i}"),
                    "widget",
                    (241, i),
                    &format!("z{i}"),
                )
            })
            .collect();
        inj.send_all(&flood).unwrap();
        d.child.signal(Signal::CONT).unwrap();
        d.settle();
        let stats = d.stats();
        assert!(
            stats["overflows"] >= 1 && stats["resyncs"] >= 1,
            "{stats:?}"
        );
        assert_eq!(
            listing(d.dev.path()),
            Vec::<String>::new(),
            "no stale node for y"
        );
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_full_queue_with_an_overflow_waiting_in_the_kernel_does_not_spin() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let work = tempfile::tempdir().unwrap();
        let rules = work.path().join("hold.rules");
        // The parent's add is done only when its helper is; its children's events wait.
        std::fs::write(
            &rules,
            "SUBSYSTEM==\"widget\", KERNEL==\"hold\", ACTION==\"add\", RUN+=\"/bin/sleep 2\"\n",
        )
        .unwrap();
        let rules = rules.display().to_string();
        let d = Daemon::start(
            sys.root(),
            &[
                "--no-coldplug",
                "--rules",
                &rules,
                "--max-queued",
                "4",
                "--recv-buffer",
                "4096",
            ],
        );
        let inj = Injector::open().unwrap();
        let parent = "/devices/virtual/widget/hold";
        inj.send(&char_event(Action::Add, parent, "widget", (247, 0), "hold"))
            .unwrap();
        d.wait_for_stat("in_flight", 1, TIMEOUT);
        // Four children fill the queue; the rest overflow the tiny receive buffer while the
        // daemon is not reading it, which leaves an error pending on the socket.
        let children: Vec<Vec<u8>> = (1..200)
            .map(|i| {
                char_event(
                    Action::Add,
                    &format!("{parent}/c{i}"),
                    "widget",
                    (247, i),
                    &format!("hold-c{i}"),
                )
            })
            .collect();
        inj.send_all(&children[..4]).unwrap();
        d.wait_for_stat("queued", 4, TIMEOUT);
        inj.send_all(&children[4..]).unwrap();
        let pid = d.child.id();
        let before = CpuTime::of_process(pid).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let used = CpuTime::of_process(pid).unwrap().since(before).total();
        // Spinning on the socket's pending error would take the whole second.
        assert!(
            used < Duration::from_millis(300),
            "busy for {used:?} while waiting"
        );
        // Once the helper is done the queue drains, the overflow is read, and a resync follows.
        d.wait_for_stat("resyncs", 1, TIMEOUT);
        let stats = d.stats();
        assert!(stats["overflows"] >= 1, "{stats:?}");
        d.stop();
    })
    .unwrap();
}

#[test]
fn memory_is_handed_back_once_a_burst_has_gone_quiet() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        // Once when the (empty) coldplug is done.
        assert_eq!(d.stats()["memory_releases"], 1);
        let inj = Injector::open().unwrap();
        let tag = unique("quiet");
        // A burst in waves of 3 000 events, 12 000 in all (a burst is 4 096 or more), with
        // the daemon idle for a moment between waves: memory is handed back once, after the
        // last wave, when its devices are gone — not between waves, when they are still live.
        let n = 1500;
        let events = |action| widget_events(action, &tag, 246, n, "quiet");
        let (adds, removes) = (events(Action::Add), events(Action::Remove));
        let mut sent = 0;
        for _ in 0..4 {
            inj.send_all(&adds).unwrap();
            inj.send_all(&removes).unwrap();
            sent += 2 * n as u64;
            // Idle now: the next wave follows within a few tens of milliseconds.
            d.wait_for_stat("processed", sent, Duration::from_secs(60));
        }
        d.wait_for_stat("memory_releases", 2, Duration::from_secs(10));
        let stats = d.stats();
        assert_eq!(
            (stats["memory_releases"], stats["devices"], stats["errors"]),
            (2, 0, 0),
            "{stats:?}"
        );
        // A few events more are no burst: nothing more is handed back.
        inj.send_all(&adds[..10]).unwrap();
        d.wait_for_stat("processed", sent + 10, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(d.stats()["memory_releases"], 2);
        d.stop();
    })
    .unwrap();
}

#[test]
fn a_long_add_remove_churn_compacts_the_journal_and_keeps_the_truth() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let d = Daemon::start(sys.root(), &["--no-coldplug"]);
        let inj = Injector::open().unwrap();
        let tag = unique("churn");
        let n = 2000;
        let events = |action| widget_events(action, &tag, 245, n, "churn");
        let (adds, removes) = (events(Action::Add), events(Action::Remove));
        // Every add appends a record of ~200 bytes: 14 rounds write well past the 4 MiB at
        // which the journal is replaced by a snapshot of the (few) live records.
        let mut sent = 0u64;
        for _ in 0..14 {
            inj.send_all(&adds).unwrap();
            inj.send_all(&removes).unwrap();
            sent += 2 * n as u64;
        }
        // The truth at the end: the even devices are present.
        inj.send_all(&adds).unwrap();
        let odd: Vec<Vec<u8>> = removes.iter().skip(1).step_by(2).cloned().collect();
        inj.send_all(&odd).unwrap();
        sent += (adds.len() + odd.len()) as u64;
        d.wait_for_stat("processed", sent, Duration::from_secs(60));
        d.settle();
        let db = d.run.path().join("db");
        let journal = std::fs::metadata(db.join("journal")).unwrap().len();
        assert!(
            db.join("snapshot").exists(),
            "no snapshot after {sent} events"
        );
        assert!(journal < 4 << 20, "journal not compacted: {journal} bytes");
        let mut want: Vec<String> = (0..n).step_by(2).map(|i| format!("c245:{i}")).collect();
        want.sort();
        // Genuine kernel events (another test's loop0 change) reach every namespace.
        let ours = |run: &std::path::Path| -> Vec<String> {
            db_ids(run)
                .into_iter()
                .filter(|id| id.starts_with("c245:"))
                .collect()
        };
        assert_eq!(ours(d.run.path()), want);
        assert_eq!(
            std::fs::read_dir(d.dev.path().join("churn"))
                .unwrap()
                .count(),
            n / 2
        );
        // Stopped, the compacted database still reads back as the truth.
        let (dev, run, _) = d.stop();
        assert_eq!(ours(run.path()), want);
        drop((dev, run));
    })
    .unwrap();
}
