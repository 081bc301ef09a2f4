//! Side-by-side benchmarks of `uevd daemon` against its peers — busybox `mdev`, systemd-udevd —
//! and the floors (a bare netlink listener, a loop that only reads every `uevent` file).
//!
//! Run through `bench/run.sh`, which starts this program inside `unshare --mount --net`: it
//! mounts tmpfs over `/dev` and `/run` for the peers (which hard-code those paths) and injects
//! uevents, both of which are only harmless in private namespaces. It refuses to run otherwise.
//! Prints a Markdown table for `bench/README.md`.
#![forbid(unsafe_code)]

use rustix::fs::inotify;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{self as net, AddressFamily, RecvFlags, SocketFlags, SocketType};
use std::io::{BufRead, BufReader, Read};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uevd_testkit::{char_event, event, Action, CpuTime, FakeSysfs, Injector};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("uevd-bench: {e}");
        std::process::exit(1);
    }
}

/// One result row.
struct Row {
    what: String,
    who: String,
    value: String,
}

struct Bench {
    uevd: PathBuf,
    /// The same daemon built statically against musl (`UEVD_BENCH_STATIC`), measured too
    /// where memory matters: the build for small systems.
    uevd_static: Option<PathBuf>,
    rows: Vec<Row>,
    quick: bool,
}

impl Bench {
    /// Runs `f` with `uevd` pointing at the static build, if there is one.
    fn with_static(&mut self, f: impl FnOnce(&mut Bench) -> Result<()>) -> Result<()> {
        let Some(path) = self.uevd_static.clone() else {
            return Ok(());
        };
        let dynamic = std::mem::replace(&mut self.uevd, path);
        let result = f(self);
        self.uevd = dynamic;
        result
    }

    fn row(&mut self, what: &str, who: &str, value: String) {
        eprintln!("  {what:<44} {who:<26} {value}");
        self.rows.push(Row {
            what: what.into(),
            who: who.into(),
            value,
        });
    }
}

fn run() -> Result<()> {
    if std::env::var_os("UEVD_BENCH_NAMESPACES").is_none() {
        return Err("run me through bench/run.sh (I mount over /dev and inject uevents)".into());
    }
    // The injector refuses the host's network namespace; check the mount namespace too.
    Injector::open().map_err(|e| format!("not in a private network namespace: {e}"))?;
    let uevd = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: uevd-bench PATH-TO-UEVD [--quick]")?;
    let quick = std::env::args().any(|a| a == "--quick");
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    sh("mount --make-rprivate /")?;
    // /dev and /run are tmpfs on real systems; so are the bench's scratch directories.
    sh("mount -t tmpfs -o mode=1777 tmpfs /tmp")?;
    let mut b = Bench {
        uevd,
        uevd_static: std::env::var_os("UEVD_BENCH_STATIC").map(PathBuf::from),
        rows: Vec::new(),
        quick,
    };
    let wanted = |section: &str| only.as_deref().is_none_or(|o| o == section);
    if wanted("coldplug") {
        eprintln!("coldplug of the real /sys");
        coldplug_real(&mut b)?;
        eprintln!("coldplug of a fake tree");
        coldplug_fake(&mut b)?;
    }
    if wanted("throughput") {
        for n in if quick {
            vec![10_000]
        } else {
            vec![10_000, 100_000]
        } {
            eprintln!("throughput, {n} events");
            throughput(&mut b, n)?;
        }
    }
    if wanted("latency") {
        eprintln!("latency");
        latency(&mut b)?;
    }
    if wanted("memory") {
        eprintln!("memory");
        memory(&mut b)?;
    }
    if wanted("rules") {
        eprintln!("coldplug with Debian's full rule set");
        coldplug_rules(&mut b)?;
    }

    println!("| measurement | implementation | result |\n|---|---|---|");
    for r in &b.rows {
        println!("| {} | {} | {} |", r.what, r.who, r.value);
    }
    Ok(())
}

/// The `--children` values to run uevd with: 0 and 2, or those in `UEVD_BENCH_CHILDREN`
/// (comma-separated; for profiling one of them).
fn children_counts() -> Vec<String> {
    std::env::var("UEVD_BENCH_CHILDREN")
        .unwrap_or_else(|_| "0,2".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Whether to run the peers (mdev, udevd) too: `UEVD_BENCH_PEERS=0` skips them in the
/// throughput section, for quick before/after runs of uevd alone against the floors.
fn peers_wanted() -> bool {
    std::env::var("UEVD_BENCH_PEERS").map_or(true, |v| v != "0")
}

fn sh(cmd: &str) -> Result<()> {
    let status = Command::new("sh").arg("-c").arg(cmd).status()?;
    if !status.success() {
        return Err(format!("`{cmd}` failed: {status}").into());
    }
    Ok(())
}

/// A fresh, empty tmpfs on `/dev` and `/run` for a peer (in our private mount namespace).
fn fresh_dev_run() -> Result<()> {
    sh("umount -l /dev 2>/dev/null; umount -l /run 2>/dev/null; mount -t tmpfs -o mode=755 tmpfs /dev && mount -t tmpfs -o mode=755 tmpfs /run && mknod -m 666 /dev/null c 1 3")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: f64) -> String {
    format!("{:.1} ms", d * 1e3)
}

/// Starts `uevd daemon` and waits for readiness (the newline on `--ready-fd 1`); returns the
/// child and the seconds from spawn to ready.
fn start_uevd(
    b: &Bench,
    sysfs: &Path,
    dev: &Path,
    run: &Path,
    extra: &[&str],
) -> Result<(Child, f64)> {
    // Issue 3's figures are for the built-in policy; module loading stays off unless asked.
    let mut defaults = Vec::new();
    if !extra
        .iter()
        .any(|a| *a == "--rules" || *a == "--builtin-rules")
    {
        defaults.push("--builtin-rules");
    }
    if !extra.contains(&"--modprobe") {
        defaults.extend(["--modprobe", "none"]);
    }
    // Extra daemon options for experiments (`UEVD_BENCH_DAEMON_ARGS="--max-queued 65536"`).
    let experiment = std::env::var("UEVD_BENCH_DAEMON_ARGS").unwrap_or_default();
    let t = Instant::now();
    let mut child = Command::new(&b.uevd)
        .args([
            "daemon",
            "--log-level",
            "error",
            "--ready-fd",
            "1",
            "--sysfs",
        ])
        .arg(sysfs)
        .arg("--dev")
        .arg(dev)
        .arg("--run")
        .arg(run)
        .args(extra)
        .args(&defaults)
        .args(experiment.split_whitespace())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout).read_line(&mut line)?;
    if line != "\n" {
        let _ = child.kill();
        return Err("uevd did not signal readiness".into());
    }
    Ok((child, t.elapsed().as_secs_f64()))
}

/// Runs `f` against a uevd with an empty sysfs and no coldplug; `f` gets its `--dev`.
fn with_empty_uevd<T>(b: &Bench, children: &str, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    with_empty_uevd_pid(b, children, |dev, _| f(dev))
}

/// [`with_empty_uevd`], also telling `f` the daemon's process id.
fn with_empty_uevd_pid<T>(
    b: &Bench,
    children: &str,
    f: impl FnOnce(&Path, u32) -> Result<T>,
) -> Result<T> {
    let (dev, run, sys) = (tmp()?, tmp()?, FakeSysfs::new()?);
    let (child, _) = start_uevd(
        b,
        sys.root(),
        dev.path(),
        run.path(),
        &["--no-coldplug", "--children", children],
    )?;
    let result = f(dev.path(), child.id());
    stop(child);
    result
}

/// "user X µs + system Y µs" per event, from two readings of a `/proc` stat file.
fn cpu_per_event(
    before: std::io::Result<CpuTime>,
    after: std::io::Result<CpuTime>,
    n: usize,
) -> String {
    match (before, after) {
        (Ok(before), Ok(after)) => {
            let used = after.since(before);
            format!(
                "CPU per event: user {:.1} µs + system {:.1} µs",
                used.user.as_secs_f64() * 1e6 / n as f64,
                used.system.as_secs_f64() * 1e6 / n as f64
            )
        }
        _ => "CPU per event: ?".into(),
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn tmp() -> Result<tempfile::TempDir> {
    Ok(tempfile::tempdir()?)
}

/// Lets the kernel finish what the bench itself set going before the next timed run: the
/// writeback of a tree just built, and the deferred freeing of the 100 000 inodes and
/// dentries a removed `--dev` held (RCU callbacks, which otherwise take a core away from
/// the next run for a few hundred milliseconds).
fn quiesce() {
    rustix::fs::sync();
    std::thread::sleep(Duration::from_secs(1));
}

/// One figure (`devices`, `processed`, …) from the running daemon's `control stats` answer.
fn daemon_stat(b: &Bench, run: &Path, key: &str) -> Result<String> {
    let out = Command::new(&b.uevd)
        .args(["control", "stats", "--run"])
        .arg(run)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or("?")
        .to_owned())
}

/// Reads every `uevent` file under /sys/devices: the floor of any coldplug.
fn read_all_uevents(dir: &Path, count: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            read_all_uevents(&e.path(), count);
        } else if ft.is_file() && e.file_name() == "uevent" {
            let mut buf = Vec::new();
            if std::fs::File::open(e.path())
                .and_then(|mut f| f.read_to_end(&mut buf))
                .is_ok()
            {
                *count += 1;
            }
        }
    }
}

fn coldplug_real(b: &mut Bench) -> Result<()> {
    let runs = if b.quick { 5 } else { 15 };
    let mut count = 0;
    let floor = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                count = 0;
                read_all_uevents(Path::new("/sys/devices"), &mut count);
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let what = format!("coldplug real /sys ({count} uevent files)");
    b.row(&what, "floor: read every uevent", ms(floor));

    let measure = |b: &Bench| -> Result<String> {
        let (uevd, devices) = uevd_coldplug(b, runs, &[])?;
        Ok(format!(
            "{} ({devices} devices, {:.2}× floor)",
            ms(uevd),
            uevd / floor
        ))
    };
    let value = measure(b)?;
    b.row(&what, "uevd (spawn → ready)", value);
    b.with_static(|b| {
        let value = measure(b)?;
        b.row(&what, "uevd static (musl) (spawn → ready)", value);
        Ok(())
    })?;

    let times: Result<Vec<f64>> = (0..runs)
        .map(|_| {
            fresh_dev_run()?;
            let t = Instant::now();
            sh("busybox mdev -s")?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect();
    b.row(&what, "busybox mdev -s", ms(median(times?)));

    b.row(
        &what,
        "systemd-udevd trigger+settle",
        ms(udevd_coldplug(runs)?),
    );
    Ok(())
}

/// uevd's coldplug of the real /sys into a fresh `--dev` and `--run`, `runs` times: the median
/// seconds from spawn to ready, and the devices it then knows.
fn uevd_coldplug(b: &Bench, runs: usize, extra: &[&str]) -> Result<(f64, String)> {
    let mut times = Vec::new();
    let mut devices = String::new();
    for _ in 0..runs {
        let (dev, run) = (tmp()?, tmp()?);
        let (child, secs) = start_uevd(b, Path::new("/sys"), dev.path(), run.path(), extra)?;
        devices = daemon_stat(b, run.path(), "devices")?;
        times.push(secs);
        stop(child);
    }
    Ok((median(times), devices))
}

/// Coldplug of the real /sys with Debian's rules (the same set systemd-udevd uses here), next
/// to `udevadm trigger --action=add` + `udevadm settle`.
fn coldplug_rules(b: &mut Bench) -> Result<()> {
    let runs = if b.quick { 5 } else { 15 };
    let what = "coldplug real /sys, Debian's 41 rule files";
    let rules = [
        "--rules",
        "/etc/udev/rules.d",
        "--rules",
        "/usr/lib/udev/rules.d",
    ];

    // Floor: the programs these rules start at coldplug (an event is done when its helpers
    // are, for udevd's settle as for uevd's readiness), all started at once, while this
    // thread reads every `uevent` file once — as if nothing had to be known before starting
    // them, and nothing else was done.
    let helpers = coldplug_helpers(b, &rules)?;
    let times: Result<Vec<f64>> = (0..runs).map(|_| helpers_beside_walk(&helpers)).collect();
    let mut counts = std::collections::BTreeMap::new();
    for name in helpers.iter().filter_map(|h| h.split_whitespace().next()) {
        *counts.entry(name).or_insert(0) += 1;
    }
    let programs: Vec<String> = counts.iter().map(|(p, n)| format!("{n}× {p}")).collect();
    b.row(
        what,
        "floor: read every uevent while the rules' helpers run, all started at once",
        format!(
            "{} ({}; {} cores)",
            ms(median(times?)),
            programs.join(", "),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    );

    let (uevd, devices) = uevd_coldplug(
        b,
        runs,
        &[&rules[..], &["--modprobe", "/bin/true"]].concat(),
    )?;
    b.row(
        what,
        "uevd (spawn → ready)",
        format!("{} ({devices} devices)", ms(uevd)),
    );
    let udevd = udevd_coldplug(runs)?;
    b.row(
        what,
        "systemd-udevd trigger+settle",
        format!("{} (uevd {:.1}× faster)", ms(udevd), udevd / uevd),
    );
    Ok(())
}

/// The programs `rules` start for the `add` of every device of /sys, as `uevd test` reports
/// them (command lines; builtins left out, as they run inside the daemon).
fn coldplug_helpers(b: &Bench, rules: &[&str]) -> Result<Vec<String>> {
    let listing = Command::new(&b.uevd)
        .args(["trigger", "--dry-run", "--verbose", "--action", "add"])
        .output()?;
    let mut helpers = Vec::new();
    for devpath in String::from_utf8(listing.stdout)?.lines() {
        let out = Command::new(&b.uevd)
            .args(["test", "--json"])
            .args(rules)
            .arg(devpath)
            .stderr(Stdio::null())
            .output()?;
        if !out.status.success() {
            continue; // gone since the listing
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let run = report["run"].as_array().into_iter().flatten();
        helpers.extend(
            run.filter_map(|item| item.as_str())
                .filter(|item| item.starts_with('/'))
                // `uevd test` appends "(if the node existed: …)" to helpers with such a
                // policy; at a first coldplug into a fresh `--dev` they run like the others.
                .map(|item| match item.split_once(" (if the node existed") {
                    Some((command, _)) => command.to_owned(),
                    None => item.to_owned(),
                }),
        );
    }
    Ok(helpers)
}

/// Starts every command line at once (split at spaces: no shell), reads every `uevent` file
/// of /sys meanwhile, and waits for all of them; seconds.
fn helpers_beside_walk(commands: &[String]) -> Result<f64> {
    let t = Instant::now();
    let children: std::io::Result<Vec<Child>> = commands
        .iter()
        .map(|c| {
            let mut words = c.split_whitespace();
            Command::new(words.next().unwrap_or("true"))
                .args(words)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect();
    read_all_uevents(Path::new("/sys/devices"), &mut 0);
    for mut child in children? {
        child.wait()?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// systemd-udevd's coldplug of the real /sys (its rules, fresh /dev and /run each time):
/// `udevadm trigger --action=add` + `udevadm settle`, median seconds of up to 5 runs.
fn udevd_coldplug(runs: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..runs.min(5) {
        fresh_dev_run()?;
        let udevd = start_udevd()?;
        let t = Instant::now();
        sh("udevadm trigger --action=add >/dev/null 2>&1; udevadm settle -t 60")?;
        times.push(t.elapsed().as_secs_f64());
        stop(udevd);
    }
    Ok(median(times))
}

fn spawn_mdev() -> Result<Child> {
    Ok(Command::new("busybox")
        .args(["mdev", "-df"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn start_udevd() -> Result<Child> {
    let child = Command::new("/lib/systemd/systemd-udevd")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("udevadm")
        .args(["control", "--ping", "-t", "1"])
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        if Instant::now() > deadline {
            return Err("systemd-udevd did not start".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child)
}

fn coldplug_fake(b: &mut Bench) -> Result<()> {
    let n = if b.quick { 10_000 } else { 100_000 };
    let t = Instant::now();
    let sys = FakeSysfs::new()?;
    sys.many(n)?;
    eprintln!("  (built a {n}-device fake tree in {:?})", t.elapsed());
    quiesce();
    let what = format!(
        "coldplug fake tree ({n} char devices + {} parents)",
        n / 100
    );
    // Medians of three runs each: one run of a second or two varies by a tenth here.
    let runs = 3;
    let floor = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                read_all_uevents(&sys.root().join("devices"), &mut 0);
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    b.row(&what, "floor: read every uevent", ms(floor));
    // The median of `runs` coldplugs by the daemon `b` runs, as a row for `who`.
    let measure = |b: &mut Bench, who: &str, children: &str| -> Result<()> {
        let mut times = Vec::new();
        for _ in 0..runs {
            let (dev, run) = (tmp()?, tmp()?);
            let (child, secs) = start_uevd(
                b,
                sys.root(),
                dev.path(),
                run.path(),
                &["--children", children],
            )?;
            let nodes = std::fs::read_dir(dev.path().join("fake"))?.count();
            stop(child);
            if nodes != n {
                return Err(format!("{who} made {nodes} of {n} nodes").into());
            }
            times.push(secs);
            drop((dev, run));
            quiesce();
        }
        let secs = median(times);
        b.row(
            &what,
            who,
            format!(
                "{} ({:.0} devices/s, {:.2}× floor)",
                ms(secs),
                n as f64 / secs,
                secs / floor
            ),
        );
        Ok(())
    };
    for children in &children_counts() {
        measure(b, &format!("uevd --children {children}"), children)?;
    }
    b.with_static(|b| measure(b, "uevd static (musl) --children 0", "0"))
}

/// `n` add events for nodes `bench{i}` (major 250) under /devices/virtual/bench.
fn bench_events(n: usize, base: usize) -> Vec<Vec<u8>> {
    bench_events_for(Action::Add, n, base)
}

/// `n` events of `action` for nodes `bench{i}` (major 250) under /devices/virtual/bench.
fn bench_events_for(action: Action, n: usize, base: usize) -> Vec<Vec<u8>> {
    (base..base + n)
        .map(|i| {
            char_event(
                action,
                &format!("/devices/virtual/bench/b{i}"),
                "bench",
                (250, i),
                &format!("bench{i}"),
            )
        })
        .collect()
}

/// Waits until `path` exists (polling), up to `timeout`.
fn wait_exists(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

fn count_prefix(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Injects `n` events; returns events/s from the first injection until the last node exists
/// (or the count reached by the timeout).
fn node_throughput(inj: &Injector, dev: &Path, n: usize, base: usize) -> Result<String> {
    let events = bench_events(n, base);
    let last = dev.join(format!("bench{}", base + n - 1));
    let t = Instant::now();
    inj.send_all(&events)?;
    let sent = t.elapsed().as_secs_f64();
    let mut done = wait_exists(&last, Duration::from_secs(120));
    // The burst ends when the last node exists; listing the directory to check that all are
    // there is the bench's work, not the daemon's, so it is not timed — unless some were
    // missing (parallel workers do not always make the last node last): then the burst ends
    // when a listing first finds them all.
    let mut secs = t.elapsed().as_secs_f64();
    let mut made = count_prefix(dev, "bench");
    while done && made < n {
        if t.elapsed() > Duration::from_secs(120) {
            done = false;
        }
        std::thread::sleep(Duration::from_micros(200));
        made = count_prefix(dev, "bench");
        secs = t.elapsed().as_secs_f64();
    }
    if !done || made < n {
        return Ok(format!(
            "incomplete: {made} of {n} nodes after {:.1} s",
            secs
        ));
    }
    Ok(format!(
        "{:.0} events/s ({} for {n}; injection alone {})",
        n as f64 / secs,
        ms(secs),
        ms(sent)
    ))
}

fn group_socket(groups: u32) -> Result<rustix::fd::OwnedFd> {
    let fd = net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )?;
    let _ = net::sockopt::set_socket_recv_buffer_size_force(&fd, 512 << 20);
    net::bind(&fd, &SocketAddrNetlink::new(0, groups))?;
    Ok(fd)
}

/// How many nodes [`make_nodes`] made, and its CPU time per event.
type NodesMade = (usize, String);

/// Receives `n` uevents on `sock` and makes the node each names in `dir` (DEVNAME, MAJOR,
/// MINOR; a char device, mode 0600), with no checks, rules or records: the floor under any
/// device manager's per-event cost. Returns the number of nodes made and the CPU time this
/// thread used per event.
fn make_nodes(sock: &rustix::fd::OwnedFd, dir: &Path, n: usize) -> std::io::Result<NodesMade> {
    let cpu_before = CpuTime::of("/proc/thread-self/stat");
    let dirfd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut buf = vec![0u8; 8192];
    let mut made = 0;
    for _ in 0..n {
        let (len, _) = net::recv(sock, &mut buf[..], RecvFlags::empty())?;
        let (mut name, mut major, mut minor) = (None, 0, 0);
        for field in buf[..len.min(buf.len())].split(|&b| b == 0) {
            let number = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u32>().ok();
            if let Some(v) = field.strip_prefix(b"DEVNAME=") {
                name = Some(v.to_vec());
            } else if let Some(v) = field.strip_prefix(b"MAJOR=") {
                major = number(v).unwrap_or(0);
            } else if let Some(v) = field.strip_prefix(b"MINOR=") {
                minor = number(v).unwrap_or(0);
            }
        }
        if let Some(name) = name {
            rustix::fs::mknodat(
                &dirfd,
                name.as_slice(),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(major, minor),
            )?;
            made += 1;
        }
    }
    let cpu = cpu_per_event(cpu_before, CpuTime::of("/proc/thread-self/stat"), n);
    Ok((made, cpu))
}

/// A thread running [`make_nodes`] for `n` events into a fresh directory, already listening
/// when this returns.
fn spawn_node_maker(
    n: usize,
) -> Result<(
    tempfile::TempDir,
    std::thread::JoinHandle<std::io::Result<NodesMade>>,
)> {
    let dev = tmp()?;
    let sock = group_socket(1)?;
    let dir = dev.path().to_owned();
    Ok((dev, std::thread::spawn(move || make_nodes(&sock, &dir, n))))
}

fn throughput(b: &mut Bench, n: usize) -> Result<()> {
    let what = format!("burst of {n} add events → node on disk");
    let inj = Injector::open()?;

    // Floor: a bare listener that only receives.
    let sock = group_socket(1)?;
    let events = bench_events(n, 0);
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        let mut got = 0;
        let mut start = None;
        while got < n {
            if net::recv(&sock, &mut buf[..], RecvFlags::empty()).is_ok() {
                start.get_or_insert_with(Instant::now);
                got += 1;
            }
        }
        start.map(|s| s.elapsed())
    });
    let t = Instant::now();
    inj.send_all(&events)?;
    let _ = receiver.join();
    let secs = t.elapsed().as_secs_f64();
    b.row(
        &what,
        "floor: bare netlink listener",
        format!("{:.0} events/s (received, no node)", n as f64 / secs),
    );

    // Floor: a listener that makes each node and does nothing else — what any device manager
    // pays for one mknod in one directory, with the injector on the same cores.
    let (_dev, maker) = spawn_node_maker(n)?;
    let t = Instant::now();
    inj.send_all(&events)?;
    let (made, cpu) = maker.join().map_err(|_| "node maker panicked")??;
    let secs = t.elapsed().as_secs_f64();
    b.row(
        &what,
        "floor: listener + mknod only",
        format!("{:.0} events/s ({made} nodes; {cpu})", n as f64 / secs),
    );

    // Each run below starts after the last one's 100 000 nodes are freed (`quiesce`).
    for children in &children_counts() {
        quiesce();
        let result = with_empty_uevd_pid(b, children, |dev, pid| {
            let before = CpuTime::of_process(pid);
            let result = node_throughput(&inj, dev, n, 0)?;
            Ok(format!(
                "{result}; {}",
                cpu_per_event(before, CpuTime::of_process(pid), n)
            ))
        })?;
        b.row(&what, &format!("uevd --children {children}"), result);
    }
    b.with_static(|b| {
        quiesce();
        let result = with_empty_uevd(b, "0", |dev| node_throughput(&inj, dev, n, 0))?;
        b.row(&what, "uevd static (musl) --children 0", result);
        Ok(())
    })?;
    if !peers_wanted() {
        return Ok(());
    }

    fresh_dev_run()?;
    let sys = FakeSysMount::new(&[(0, n)])?;
    quiesce();
    let mdev = spawn_mdev()?;
    wait_listening_mdev(&inj)?;
    let result = node_throughput(&inj, Path::new("/dev"), n, 0)?;
    stop(mdev);
    drop(sys);
    b.row(&what, "busybox mdev -df (reads /sys/…/dev)", result);

    fresh_dev_run()?;
    quiesce();
    let udevd = start_udevd()?;
    let sock = group_socket(2)?;
    let events = bench_events(n, 0);
    let t = Instant::now();
    inj.send_all(&events)?;
    let mut buf = vec![0u8; 16384];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    net::sockopt::set_socket_timeout(
        &sock,
        net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    )?;
    while got < n && Instant::now() < deadline {
        match net::recv(&sock, &mut buf[..], RecvFlags::empty()) {
            Ok(_) => got += 1,
            Err(_) => break,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    stop(udevd);
    b.row(
        &what,
        "systemd-udevd (→ processed broadcast)",
        if got == n {
            format!("{:.0} events/s ({} for {n})", n as f64 / secs, ms(secs))
        } else {
            format!("incomplete: {got} of {n} processed")
        },
    );
    Ok(())
}

/// A fake sysfs with the bench devices (and their `dev` files, which mdev reads instead of the
/// event's MAJOR/MINOR), bind-mounted over /sys in our mount namespace while mdev runs.
struct FakeSysMount {
    _sys: FakeSysfs,
}

impl FakeSysMount {
    fn new(ranges: &[(usize, usize)]) -> Result<FakeSysMount> {
        let sys = FakeSysfs::new()?;
        for &(base, n) in ranges {
            for i in base..base + n {
                let devpath = format!("/devices/virtual/bench/b{i}");
                sys.device(
                    &devpath,
                    "bench",
                    &[
                        ("MAJOR", "250"),
                        ("MINOR", &i.to_string()),
                        ("DEVNAME", &format!("bench{i}")),
                    ],
                )?;
                sys.attr(&devpath, "dev", &format!("250:{i}"))?;
            }
        }
        let probe = "/devices/virtual/bench/probe";
        sys.device(
            probe,
            "bench",
            &[
                ("MAJOR", "250"),
                ("MINOR", "999999"),
                ("DEVNAME", "mdevprobe"),
            ],
        )?;
        sys.attr(probe, "dev", "250:999999")?;
        sh(&format!("mount --bind {} /sys", sys.root().display()))?;
        Ok(FakeSysMount { _sys: sys })
    }
}

impl Drop for FakeSysMount {
    fn drop(&mut self) {
        let _ = sh("umount /sys");
    }
}

/// mdev -df starts with a scan of /sys; wait until it also handles netlink events.
fn wait_listening_mdev(inj: &Injector) -> Result<()> {
    let probe = event(Action::Add, "/devices/virtual/bench/probe", "bench")
        .var("MAJOR", "250")
        .var("MINOR", "999999")
        .var("DEVNAME", "mdevprobe")
        .to_bytes();
    for _ in 0..200 {
        inj.send(&probe)?;
        if wait_exists(Path::new("/dev/mdevprobe"), Duration::from_millis(50)) {
            return Ok(());
        }
    }
    Err("mdev -df never created its probe node".into())
}

/// Latency of single events, 1 ms apart: injection → node created (inotify), or → received
/// for the floor, or → processed broadcast for udevd.
fn latency(b: &mut Bench) -> Result<()> {
    let n = 1000;
    let what = format!("latency, {n} single events 1 ms apart (p50 / p99)");
    let inj = Injector::open()?;
    let report = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        format!(
            "{:.0} µs / {:.0} µs",
            percentile(&v, 0.5) * 1e6,
            percentile(&v, 0.99) * 1e6
        )
    };

    // The sections before left 100 000-node directories for the kernel to free.
    quiesce();
    let sock = group_socket(1)?;
    let samples = measure(&inj, n, 0, |_| {
        let mut buf = [0u8; 8192];
        net::recv(&sock, &mut buf[..], RecvFlags::empty()).is_ok()
    })?;
    drop(sock);
    b.row(&what, "floor: bare netlink listener", report(samples));

    let (dev, maker) = spawn_node_maker(n)?;
    let samples = node_latency(&inj, dev.path(), n)?;
    maker.join().map_err(|_| "node maker panicked")??;
    b.row(&what, "floor: listener + mknod only", report(samples));

    for children in &children_counts() {
        let samples = with_empty_uevd(b, children, |dev| node_latency(&inj, dev, n))?;
        b.row(
            &what,
            &format!("uevd --children {children}"),
            report(samples),
        );
    }
    b.with_static(|b| {
        let samples = with_empty_uevd(b, "0", |dev| node_latency(&inj, dev, n))?;
        b.row(&what, "uevd static (musl) --children 0", report(samples));
        Ok(())
    })?;

    fresh_dev_run()?;
    let sys = FakeSysMount::new(&[(LATENCY_BASE, n)])?;
    let mdev = spawn_mdev()?;
    wait_listening_mdev(&inj)?;
    let samples = node_latency(&inj, Path::new("/dev"), n)?;
    stop(mdev);
    drop(sys);
    b.row(
        &what,
        "busybox mdev -df (reads /sys/…/dev)",
        report(samples),
    );

    fresh_dev_run()?;
    let udevd = start_udevd()?;
    let sock = group_socket(2)?;
    net::sockopt::set_socket_timeout(
        &sock,
        net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    )?;
    let samples = measure(&inj, n, 0, |_| {
        let mut buf = [0u8; 16384];
        net::recv(&sock, &mut buf[..], RecvFlags::empty()).is_ok()
    })?;
    stop(udevd);
    b.row(
        &what,
        "systemd-udevd (→ processed broadcast)",
        report(samples),
    );
    Ok(())
}

/// Sends event i, then `wait(i)` until it is handled; returns the latencies.
fn measure(
    inj: &Injector,
    n: usize,
    base: usize,
    mut wait: impl FnMut(usize) -> bool,
) -> Result<Vec<f64>> {
    let events = bench_events(n, base);
    let mut samples = Vec::with_capacity(n);
    for (i, e) in events.iter().enumerate() {
        let t = Instant::now();
        inj.send(e)?;
        if !wait(i) {
            return Err(format!("event {i} was not handled").into());
        }
        samples.push(t.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(samples)
}

/// First minor of the latency run's devices (minors have 20 bits).
const LATENCY_BASE: usize = 500_000;

/// Latency to the node appearing in `dev` (created or renamed into place).
fn node_latency(inj: &Injector, dev: &Path, n: usize) -> Result<Vec<f64>> {
    let ino = inotify::init(inotify::CreateFlags::CLOEXEC)?;
    inotify::add_watch(
        &ino,
        dev,
        inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO,
    )?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let base = LATENCY_BASE;
    measure(inj, n, base, |i| {
        let want = format!("bench{}", base + i);
        let mut reader = inotify::Reader::new(&ino, &mut buf);
        loop {
            match reader.next() {
                Ok(ev) => {
                    if ev
                        .file_name()
                        .is_some_and(|f| f.to_bytes() == want.as_bytes())
                    {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    })
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad status line")?
        .parse()?)
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// VmRSS, split into private memory (RssAnon) and mapped files (RssFile: program text and
/// libraries, shared with every other process that maps them).
fn rss(pid: u32) -> Result<String> {
    Ok(format!(
        "{} (anon {}, file {})",
        mib(status_kib(pid, "VmRSS:")?),
        mib(status_kib(pid, "RssAnon:")?),
        mib(status_kib(pid, "RssFile:")?)
    ))
}

fn memory(b: &mut Bench) -> Result<()> {
    uevd_memory(b, "uevd")?;
    b.with_static(|b| uevd_memory(b, "uevd static (musl)"))?;
    let what = "memory (RSS)";
    let inj = Injector::open()?;
    fresh_dev_run()?;
    let sys = FakeSysMount::new(&[])?;
    let mdev = spawn_mdev()?;
    wait_listening_mdev(&inj)?;
    let idle = rss(mdev.id())?;
    stop(mdev);
    drop(sys);
    b.row(what, "busybox mdev -df idle", idle);
    fresh_dev_run()?;
    let udevd = start_udevd()?;
    sh("udevadm trigger --action=add >/dev/null 2>&1; udevadm settle -t 60")?;
    let idle = rss(udevd.id())?;
    stop(udevd);
    b.row(what, "systemd-udevd idle after coldplug", idle);
    Ok(())
}

/// uevd's idle RSS after coldplug, then after a long add/remove burst.
fn uevd_memory(b: &mut Bench, who: &str) -> Result<()> {
    let what = "memory (RSS)";
    let (dev, run) = (tmp()?, tmp()?);
    let (child, _) = start_uevd(b, Path::new("/sys"), dev.path(), run.path(), &[])?;
    std::thread::sleep(Duration::from_millis(200));
    b.row(
        what,
        &format!("{who} idle after coldplug of /sys"),
        rss(child.id())?,
    );

    // A burst that leaves no state behind: add and remove 1000 devices, over and over; then
    // the same again, twice, to see whether what stays after one burst keeps growing.
    let total = if b.quick { 100_000 } else { 1_000_000 };
    let bursts = if b.quick { 1 } else { 3 };
    let inj = Injector::open()?;
    let devices = 1000;
    let adds = bench_events(devices, 0);
    let removes = bench_events_for(Action::Remove, devices, 0);
    let mut after = Vec::new();
    let mut secs = 0.0;
    for _ in 0..bursts {
        let t = Instant::now();
        let mut sent = 0;
        while sent < total {
            inj.send_all(&adds)?;
            inj.send_all(&removes)?;
            sent += 2 * devices;
            if sent % 100_000 == 0 {
                // Let the daemon keep up so the kernel buffer never overflows.
                settle(b, run.path())?;
            }
        }
        settle(b, run.path())?;
        if after.is_empty() {
            secs = t.elapsed().as_secs_f64();
        }
        // The daemon hands memory back once it has been idle for a second after a burst.
        let released: u64 = daemon_stat(b, run.path(), "memory_releases")?.parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon_stat(b, run.path(), "memory_releases")?.parse::<u64>()? <= released {
            if Instant::now() > deadline {
                return Err("uevd never handed memory back after the burst".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        after.push(rss(child.id())?);
    }
    let peak = status_kib(child.id(), "VmHWM:")?;
    let processed = daemon_stat(b, run.path(), "processed")?;
    stop(child);
    let first = after.remove(0);
    let again = if after.is_empty() {
        String::new()
    } else {
        format!("; after each further burst: {}", after.join(", "))
    };
    b.row(
        what,
        &format!("{who} after a {total}-event add/remove burst"),
        format!(
            "idle {first} (peak {}), {total} events in {secs:.1} s{again}; {processed} processed in all",
            mib(peak),
        ),
    );
    Ok(())
}

fn settle(b: &Bench, run: &Path) -> Result<()> {
    let status = Command::new(&b.uevd)
        .args(["settle", "--timeout", "120", "--run"])
        .arg(run)
        .status()?;
    if !status.success() {
        return Err("uevd settle failed".into());
    }
    Ok(())
}
