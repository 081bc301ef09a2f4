//! Small harness shared by the integration tests.

use std::path::Path;
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use uevd_testkit::{event, uevd_command, Action, Child, Injector};

/// How long a test waits for anything before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `uevd ARGS…` with piped output. `UEVD_TEST_BINARY` runs the suite against another build of
/// the same code (CI uses it for the static musl build).
pub fn uevd(args: &[&str]) -> Command {
    let binary =
        std::env::var_os("UEVD_TEST_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_uevd").into());
    let mut cmd = uevd_command(binary);
    cmd.args(args);
    cmd
}

/// Spawns `uevd ARGS…` in the calling thread's network namespace.
pub fn spawn(args: &[&str]) -> Child {
    Child::spawn(uevd(args)).expect("spawn uevd")
}

/// Injects probe events under `/devices/virtual/<tag>/probe` until the child prints a stdout line
/// containing the probe's devpath: from then on it is surely listening.
pub fn wait_listening(child: &mut Child, inj: &Injector, tag: &str) {
    let devpath = format!("/devices/virtual/{tag}/probe");
    let probe = event(Action::Change, &devpath, tag).to_bytes();
    for _ in 0..100 {
        inj.send(&probe).expect("inject probe");
        if child
            .wait_for_stdout(Duration::from_millis(100), &devpath)
            .is_some()
        {
            return;
        }
    }
    panic!("uevd never printed the probe event\n{}", child.transcript());
}

/// The ids of the device records in the database under `run`, sorted; damage fails the test.
pub fn db_ids(run: &Path) -> Vec<String> {
    let (records, errors) = uevd::daemon::db::read(run).unwrap();
    assert!(errors.is_empty(), "database damaged: {errors:?}");
    let mut ids: Vec<String> = records.iter().map(|r| r.id()).collect();
    ids.sort();
    ids
}

/// Device `id`'s record in the database under `run`, as text (`K:value` lines).
pub fn db_record(run: &Path, id: &str) -> String {
    let (records, _) = uevd::daemon::db::read(run).unwrap();
    records
        .iter()
        .find(|r| r.id() == id)
        .unwrap_or_else(|| panic!("no record {id} in {}", run.display()))
        .to_text()
}

/// Real kernel events (a write to `/sys/…/loop0/uevent`) reach the uevent sockets of every
/// network namespace, so a test that makes them would put a stray `loop0` into the daemons
/// of tests running beside it. Such tests hold this lock exclusively
/// ([`making_real_events`]); daemons on a fake sysfs hold it shared while they run.
static REAL_EVENTS: RwLock<()> = RwLock::new(());

/// Held by a test that writes to real `uevent` files, for as long as it does.
pub fn making_real_events() -> RwLockWriteGuard<'static, ()> {
    REAL_EVENTS.write().unwrap_or_else(|e| e.into_inner())
}

/// Held by a daemon on a fake sysfs: no real event is made while it runs.
pub fn without_real_events() -> RwLockReadGuard<'static, ()> {
    REAL_EVENTS.read().unwrap_or_else(|e| e.into_inner())
}
