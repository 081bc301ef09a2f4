//! Hermetic test support for uevd.
//!
//! Tests run the code under test in a **private network namespace** ([`in_private_netns`]) and
//! inject kernel-identical uevents there ([`Injector`], [`burst`]); listeners in that namespace
//! receive them from port 0 with the kernel's own `SEQNUM`, and nothing leaks to the host.
//! Genuine kernel events for non-network devices are broadcast to every namespace, so tests
//! name their devices with a [`unique`] prefix and filter on it.
//!
//! Needs `CAP_SYS_ADMIN` (root), as CI has.

mod child;
mod cpu;
mod fake_sysfs;
mod netns;

pub use child::{uevd_command, Child, Line};
pub use cpu::CpuTime;
pub use fake_sysfs::FakeSysfs;
pub use netns::{in_private_netns, NetnsError};
pub use uevd_netlink::{Injector, KernelListener, ListenerOptions};
pub use uevd_wire::{Action, Uevent, UeventBuilder};

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this process and call, to tell a test's events from everyone else's.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An event payload for injection (no `SEQNUM`: the kernel appends it).
pub fn event(action: Action, devpath: &str, subsystem: &str) -> UeventBuilder {
    UeventBuilder::new(action, devpath, subsystem)
}

/// A payload for a device with a node: `MAJOR`, `MINOR` and `DEVNAME` set (a char device,
/// or a block device with `subsystem` `block`).
pub fn char_event(
    action: Action,
    devpath: &str,
    subsystem: &str,
    (major, minor): (u32, usize),
    devname: &str,
) -> Vec<u8> {
    event(action, devpath, subsystem)
        .var("MAJOR", major.to_string())
        .var("MINOR", minor.to_string())
        .var("DEVNAME", devname)
        .to_bytes()
}

/// The kernel's `move` of a char device from `old` to `devpath` (it keeps its number).
pub fn char_move(
    devpath: &str,
    old: &str,
    subsystem: &str,
    (major, minor): (u32, usize),
    devname: &str,
) -> Vec<u8> {
    event(Action::Move, devpath, subsystem)
        .var("DEVPATH_OLD", old)
        .var("MAJOR", major.to_string())
        .var("MINOR", minor.to_string())
        .var("DEVNAME", devname)
        .to_bytes()
}

/// `n` distinct `add` payloads under `/devices/virtual/<tag>/`, each carrying `INDEX=i`, for
/// bursts and ordering checks.
pub fn burst(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            event(Action::Add, &format!("/devices/virtual/{tag}/dev{i}"), tag)
                .var("INDEX", i.to_string())
                .to_bytes()
        })
        .collect()
}
