//! Ordering, proven with a slow policy step: the daemon runs in-process (as a library) with a
//! policy that sleeps for some devices and records when each decision started and ended.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uevd::daemon::policy::{Decision, Policy};
use uevd::daemon::{self, Config};
use uevd_testkit::{event, in_private_netns, unique, Action, FakeSysfs, Injector, Uevent};

#[derive(Default)]
struct Slow {
    /// (devpath, start, end) of every decision.
    log: Mutex<Vec<(String, Instant, Instant)>>,
}

impl Policy for Slow {
    fn decide(&self, event: &Uevent, _context: &uevd::daemon::policy::Context<'_>) -> Decision {
        let start = Instant::now();
        if event.get("SLOW").is_some() {
            std::thread::sleep(Duration::from_millis(300));
        }
        self.log
            .lock()
            .unwrap()
            .push((event.devpath().to_owned(), start, Instant::now()));
        Decision::default()
    }

    fn describe(&self) -> String {
        "slow test policy".into()
    }
}

#[test]
fn a_child_never_overtakes_its_parent_but_unrelated_devices_run_in_parallel() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let dev = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let policy = Arc::new(Slow::default());
        let config = Config {
            workers: 4,
            coldplug: false,
            ..config(&sys, &dev, &run)
        };
        let p: Arc<dyn Policy> = policy.clone();
        let daemon = run_in_process(config, p);
        wait_ready(run.path());

        let tag = unique("order");
        let parent = format!("/devices/virtual/{tag}/hub");
        let child = format!("{parent}/port1");
        let grandchild = format!("{child}/dev");
        let unrelated = format!("/devices/virtual/{tag}/other");
        let inj = Injector::open().unwrap();
        inj.send_all(&[
            event(Action::Add, &parent, "t").var("SLOW", "1").to_bytes(),
            event(Action::Add, &child, "t").to_bytes(),
            event(Action::Add, &unrelated, "t").to_bytes(),
            event(Action::Change, &parent, "t").to_bytes(),
            event(Action::Add, &grandchild, "t")
                .var("SLOW", "1")
                .to_bytes(),
        ])
        .unwrap();

        let mut client = uevd::control::Client::connect(run.path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while policy.log.lock().unwrap().len() < 5 {
            assert!(Instant::now() < deadline, "not all events processed");
            std::thread::sleep(Duration::from_millis(10));
        }
        client
            .call(&uevd::control::Request::Settle, Duration::from_secs(10))
            .unwrap();
        let log = policy.log.lock().unwrap().clone();
        let find = |path: &str, nth: usize| {
            log.iter()
                .filter(|(p, _, _)| p == path)
                .nth(nth)
                .unwrap_or_else(|| panic!("{path} #{nth} not processed: {log:?}"))
                .clone()
        };
        let (_, parent_start, parent_end) = find(&parent, 0);
        let (_, child_start, child_end) = find(&child, 0);
        let (_, _, unrelated_end) = find(&unrelated, 0);
        let (_, change_start, change_end) = find(&parent, 1);
        let (_, grand_start, _) = find(&grandchild, 0);
        assert!(child_start >= parent_end, "child overtook its parent");
        assert!(
            unrelated_end < parent_end,
            "unrelated device waited for the slow parent"
        );
        assert!(
            change_start >= child_end,
            "parent's change overtook the child queued before it"
        );
        assert!(
            grand_start >= change_end,
            "grandchild overtook its ancestor's change"
        );
        assert!(parent_start <= child_start);

        exit(run.path(), daemon);
    })
    .unwrap();
}

#[test]
fn coldplug_runs_each_parent_before_its_children_while_workers_take_unrelated_ones() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        // Wide and three deep, with a slow parent: its descendants must wait, the rest not.
        let mut parent_of = Vec::new();
        for b in 0..40 {
            let bus = format!("/devices/virtual/tree/bus{b}");
            let slow: &[(&str, &str)] = if b == 0 { &[("SLOW", "1")] } else { &[] };
            sys.device(&bus, "tree", slow).unwrap();
            for c in 0..6 {
                let child = format!("{bus}/c{c}");
                sys.device(&child, "tree", &[]).unwrap();
                sys.device(&format!("{child}/g"), "tree", &[]).unwrap();
                parent_of.push((child.clone(), bus.clone()));
                parent_of.push((format!("{child}/g"), child));
            }
        }
        let (dev, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let policy = Arc::new(Slow::default());
        let p: Arc<dyn Policy> = policy.clone();
        let config = Config {
            workers: 2,
            ..config(&sys, &dev, &run)
        };
        let daemon = run_in_process(config, p);
        wait_ready(run.path());
        let log = policy.log.lock().unwrap().clone();
        let decided = |path: &str| {
            let mut runs = log.iter().filter(|(p, _, _)| p == path);
            let first = runs
                .next()
                .unwrap_or_else(|| panic!("{path} not processed"));
            assert!(runs.next().is_none(), "{path} processed twice");
            (first.1, first.2)
        };
        for (child, parent) in &parent_of {
            let (child_start, _) = decided(child);
            let (_, parent_end) = decided(parent);
            assert!(
                child_start >= parent_end,
                "{child} ran before its parent finished"
            );
        }
        // The slow bus held up only its own family.
        let (_, slow_end) = decided("/devices/virtual/tree/bus0");
        let (_, fast_end) = decided("/devices/virtual/tree/bus1/c0/g");
        assert!(
            fast_end < slow_end,
            "an unrelated device waited for a slow one"
        );
        exit(run.path(), daemon);
    })
    .unwrap();
}

/// Runs the daemon as a library on a thread of its own, with `policy` (and no reload).
fn run_in_process(
    config: Config,
    policy: Arc<dyn Policy>,
) -> std::thread::JoinHandle<Result<(), daemon::DaemonError>> {
    std::thread::spawn(move || {
        daemon::run(
            config,
            Box::new(move || policy),
            Box::new(|| Err("no reload".into())),
        )
    })
}

/// Waits for the daemon's control socket: it appears when the daemon is ready.
fn wait_ready(run: &std::path::Path) {
    let control = run.join("control");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !control.exists() {
        assert!(Instant::now() < deadline, "daemon never became ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asks the in-process daemon to exit and checks that it ran without an error.
fn exit(run: &std::path::Path, daemon: std::thread::JoinHandle<Result<(), daemon::DaemonError>>) {
    uevd::control::Client::connect(run)
        .unwrap()
        .call(&uevd::control::Request::Exit, Duration::from_secs(10))
        .unwrap();
    daemon.join().unwrap().unwrap();
}

/// A daemon on a fake sysfs that coldplugs it, inline (no workers).
fn config(sys: &FakeSysfs, dev: &tempfile::TempDir, run: &tempfile::TempDir) -> Config {
    Config {
        sysfs: sys.root().to_owned(),
        dev: dev.path().to_owned(),
        run: run.path().to_owned(),
        workers: 0,
        coldplug: true,
        recv_buffer: 1 << 20,
        max_queued: 4096,
        ready_fd: None,
        handle_signals: false,
    }
}

#[test]
fn coldplug_events_wait_for_the_policy_loaded_beside_the_walk() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        sys.device("/devices/virtual/misc/early", "misc", &[])
            .unwrap();
        let (dev, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let policy = Arc::new(Slow::default());
        let p: Arc<dyn Policy> = policy.clone();
        let config = config(&sys, &dev, &run);
        let daemon = std::thread::spawn(move || {
            let slow_loader = move || {
                // Loading takes longer than the walk.
                std::thread::sleep(Duration::from_millis(300));
                p
            };
            daemon::run(
                config,
                Box::new(slow_loader),
                Box::new(|| Err("no reload".into())),
            )
        });
        wait_ready(run.path());
        let decided: Vec<String> = policy
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(devpath, _, _)| devpath.clone())
            .collect();
        // (Other tests' real loop0 events may show up too: they reach every namespace.)
        assert!(
            decided.iter().any(|d| d == "/devices/virtual/misc/early"),
            "the coldplug event went through the loaded policy, not a stand-in: {decided:?}"
        );
        exit(run.path(), daemon);
    })
    .unwrap();
}

#[test]
fn a_rule_loader_that_dies_stops_the_daemon_before_it_is_ready() {
    in_private_netns(|| {
        let sys = FakeSysfs::new().unwrap();
        let (dev, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let result = daemon::run(
            config(&sys, &dev, &run),
            Box::new(|| panic!("a broken rule loader (expected by this test)")),
            Box::new(|| Err("no reload".into())),
        );
        assert!(
            matches!(result, Err(daemon::DaemonError::PolicyLoader)),
            "{result:?}"
        );
        assert!(!run.path().join("control").exists(), "never ready");
    })
    .unwrap();
}
