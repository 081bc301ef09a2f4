//! Rule evaluation cost per event with a full rule set (Debian's udev rules by default).
//!
//! Every device of the real `/sys` gets a synthesized `add`, evaluated with the system host in
//! dry-run mode (sysfs is read, attribute writes and module loads are only recorded; `PROGRAM`
//! and `IMPORT{program}` helpers do run, as they would in the daemon). Prints µs per event:
//! the median of several rounds over all devices, twice: parents read live from sysfs (as for
//! a kernel event) and parents from the walk's snapshot (as for a coldplug event).
//!
//! ```sh
//! cargo bench -p uevd --bench rules                     # /usr/lib/udev/rules.d + /etc/udev/rules.d
//! UEVD_BENCH_RULES=/path/to/rules.d cargo bench -p uevd --bench rules
//! ```

use std::path::PathBuf;
use std::time::Instant;

use uevd::daemon::rules::{event_state, RuleSource};
use uevd::host::{Accounts, SysfsSnapshot, SystemHost};
use uevd_rules::eval::{evaluate, EvalOptions};
use uevd_sysfs::Sysfs;
use uevd_wire::Action;

fn main() {
    let dirs: Vec<PathBuf> = match std::env::var_os("UEVD_BENCH_RULES") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec!["/etc/udev/rules.d".into(), "/usr/lib/udev/rules.d".into()],
    };
    let accounts = Accounts::system();
    let t = Instant::now();
    let loaded = RuleSource::Paths(dirs.clone()).load_quiet(&accounts);
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let sysfs = Sysfs::new("/sys");
    let mut devices = Vec::new();
    if let Err(e) = sysfs.walk(|d| devices.push(d)) {
        eprintln!("cannot walk /sys: {e}");
        std::process::exit(1);
    }
    devices.sort_by(|a, b| uevd_sysfs::tree_order(&a.devpath, &b.devpath));
    let events: Vec<_> = devices
        .iter()
        .filter_map(|d| d.to_uevent(Action::Add, 0).ok())
        .collect();
    let snapshot = SysfsSnapshot::default();
    snapshot.extend(devices);
    let rounds = std::env::var("UEVD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    println!(
        "rules: {} files, {} lines, {} errors; loaded in {load_ms:.1} ms",
        loaded.files.len(),
        loaded.rules.lines.len(),
        loaded.diagnostics.len()
    );
    for (what, snapshot) in [
        ("parents read live (kernel events)", None),
        ("parents from the walk (coldplug)", Some(&snapshot)),
    ] {
        let mut per_event = Vec::new();
        let mut matched_programs = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            for event in &events {
                let mut state = event_state(event, None);
                let mut host = SystemHost::new(&sysfs, &accounts, None).dry_run();
                if let Some(snapshot) = snapshot {
                    host = host.with_snapshot(snapshot, event.devpath());
                }
                evaluate(&loaded.rules, &mut state, &mut host, EvalOptions::default());
                matched_programs += state.run.len();
            }
            per_event.push(t.elapsed().as_secs_f64() * 1e6 / events.len().max(1) as f64);
        }
        per_event.sort_by(f64::total_cmp);
        let median = per_event[per_event.len() / 2];
        println!(
            "evaluation, {what}: {} devices of /sys, {rounds} rounds: median {median:.1} µs/event (min {:.1}, max {:.1}); {} RUN items decided per round",
            events.len(),
            per_event[0],
            per_event[per_event.len() - 1],
            matched_programs / rounds.max(1)
        );
    }
}
