//! The event queue: which events may run now without breaking device ordering.
//!
//! Two events are *related* when they concern the same device, a device and one of its
//! ancestors or descendants (by devpath, including `DEVPATH_OLD` of a `move`), the same
//! `MAJOR:MINOR` of the same type, or the same `IFINDEX`. Related events run strictly in queue
//! order (kernel events arrive in seqnum order, so that is seqnum order); unrelated ones may run
//! in parallel. This is udevd's rule; mdev needed `mdev.seq` to get the same effect.
//!
//! Pure logic, no I/O: the daemon pushes jobs, asks for the next runnable one when a worker is
//! free, and reports when a job finished.

use crate::host::SysfsSnapshot;
use std::collections::VecDeque;
use std::sync::Arc;
use uevd_sysfs::is_below;
use uevd_wire::Uevent;

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Received from the kernel.
    Kernel,
    /// Synthesized from sysfs at start-up.
    Coldplug,
    /// Synthesized from sysfs after an overflow, to reconcile.
    Resync,
}

/// One event waiting to be processed.
#[derive(Debug)]
pub struct Job {
    /// Queue order: unique and increasing.
    pub id: u64,
    /// The event.
    pub event: Uevent,
    /// Where it came from.
    pub origin: Origin,
    /// The sysfs walk a synthesized event came from (its rules see the parents as walked).
    pub snapshot: Option<Arc<SysfsSnapshot>>,
}

/// What two events are compared on.
#[derive(Debug)]
struct Key {
    devpath: String,
    devpath_old: Option<String>,
    /// `(is_block, major, minor)`.
    devnum: Option<(bool, u32, u32)>,
    ifindex: Option<u32>,
}

impl Key {
    fn of(event: &Uevent) -> Key {
        Key {
            devpath: event.devpath().to_owned(),
            devpath_old: event.devpath_old().map(str::to_owned),
            devnum: event
                .devnum()
                .filter(|&(major, _)| major > 0)
                .map(|(major, minor)| (event.subsystem() == "block", major, minor)),
            ifindex: event.ifindex().filter(|&i| i > 0),
        }
    }

    fn related(&self, other: &Key) -> bool {
        let paths = |a: &str| {
            paths_related(a, &other.devpath)
                || other
                    .devpath_old
                    .as_deref()
                    .is_some_and(|b| paths_related(a, b))
        };
        paths(&self.devpath)
            || self.devpath_old.as_deref().is_some_and(paths)
            || (self.devnum.is_some() && self.devnum == other.devnum)
            || (self.ifindex.is_some() && self.ifindex == other.ifindex)
    }
}

/// Whether `a` and `b` are the same device path, or one lies below the other.
pub fn paths_related(a: &str, b: &str) -> bool {
    a == b || is_below(a, b) || is_below(b, a)
}

/// How far past the head of the queue to look for a runnable event. Bounded so that a long
/// queue of related events costs O(window) per dispatch, not O(queue).
const WINDOW: usize = 64;

/// The ordering queue.
#[derive(Debug, Default)]
pub struct Queue {
    pending: VecDeque<(Job, Key)>,
    running: Vec<(u64, Key)>,
    next_id: u64,
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Queue {
        Queue::default()
    }

    /// The events still waiting, oldest first.
    pub fn waiting(&self) -> impl DoubleEndedIterator<Item = &Job> {
        self.pending.iter().map(|(job, _)| job)
    }

    /// Appends an event; returns its id.
    pub fn push(&mut self, event: Uevent, origin: Origin) -> u64 {
        self.push_walked(event, origin, None)
    }

    /// Appends an event synthesized from the sysfs walk `snapshot`; returns its id.
    pub fn push_walked(
        &mut self,
        event: Uevent,
        origin: Origin,
        snapshot: Option<Arc<SysfsSnapshot>>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let key = Key::of(&event);
        let job = Job {
            id,
            event,
            origin,
            snapshot,
        };
        self.pending.push_back((job, key));
        id
    }

    /// Takes the oldest pending event that is related to no running event and no older
    /// pending one, and marks it running.
    pub fn next_runnable(&mut self) -> Option<Job> {
        let limit = self.pending.len().min(WINDOW);
        let index = (0..limit).find(|&i| {
            let key = &self.pending[i].1;
            !self.running.iter().any(|(_, r)| r.related(key))
                && !self.pending.iter().take(i).any(|(_, p)| p.related(key))
        })?;
        let (job, key) = self.pending.remove(index)?;
        self.running.push((job.id, key));
        Some(job)
    }

    /// Marks a running event finished.
    pub fn finish(&mut self, id: u64) {
        self.running.retain(|(r, _)| *r != id);
    }

    /// Events not yet started.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Events being processed.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Nothing pending and nothing running: what `settle` waits for.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty()
    }

    /// Returns memory a burst left behind (call when idle).
    pub fn shrink(&mut self) {
        self.pending.shrink_to(64);
        self.running.shrink_to(64);
    }

    /// Drops every event not yet started (shutdown); returns how many.
    pub fn clear_pending(&mut self) -> usize {
        let n = self.pending.len();
        self.pending.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uevd_wire::{Action, UeventBuilder};

    fn ev(devpath: &str, extra: &[(&str, &str)]) -> Uevent {
        let mut b = UeventBuilder::new(Action::Add, devpath, "t");
        for (k, v) in extra {
            b.var(k, v);
        }
        b.seqnum(1).build().unwrap()
    }

    fn ids(q: &mut Queue) -> Vec<u64> {
        std::iter::from_fn(|| q.next_runnable().map(|j| j.id)).collect()
    }

    #[test]
    fn path_relations() {
        assert!(paths_related("/devices/a", "/devices/a"));
        assert!(paths_related("/devices/a", "/devices/a/b"));
        assert!(paths_related("/devices/a/b", "/devices/a"));
        assert!(!paths_related("/devices/a", "/devices/ab"));
        assert!(!paths_related("/devices/a/b", "/devices/a/c"));
    }

    #[test]
    fn unrelated_events_run_in_parallel() {
        let mut q = Queue::new();
        q.push(ev("/devices/a", &[]), Origin::Kernel);
        q.push(ev("/devices/b", &[]), Origin::Kernel);
        assert_eq!(ids(&mut q), [0, 1]);
        assert_eq!(q.running(), 2);
    }

    #[test]
    fn a_child_waits_for_its_parent_and_a_later_event_of_the_same_device() {
        let mut q = Queue::new();
        q.push(ev("/devices/usb1", &[]), Origin::Kernel); // 0
        q.push(ev("/devices/usb1/1-1", &[]), Origin::Kernel); // 1: child of 0
        q.push(ev("/devices/other", &[]), Origin::Kernel); // 2
        q.push(ev("/devices/usb1", &[]), Origin::Kernel); // 3: same as 0, after 1
        assert_eq!(ids(&mut q), [0, 2]);
        q.finish(0);
        assert_eq!(
            ids(&mut q),
            [1],
            "3 must wait for 1, its descendant, queued before it"
        );
        q.finish(1);
        assert_eq!(ids(&mut q), [3]);
        q.finish(2);
        q.finish(3);
        assert!(q.is_idle());
    }

    #[test]
    fn same_devnum_or_ifindex_serialises() {
        let mut q = Queue::new();
        q.push(
            ev("/devices/x/sda", &[("MAJOR", "8"), ("MINOR", "0")]),
            Origin::Kernel,
        );
        q.push(
            ev("/devices/y/sda", &[("MAJOR", "8"), ("MINOR", "0")]),
            Origin::Kernel,
        );
        q.push(ev("/devices/n/eth0", &[("IFINDEX", "2")]), Origin::Kernel);
        q.push(ev("/devices/m/eth1", &[("IFINDEX", "2")]), Origin::Kernel);
        assert_eq!(ids(&mut q), [0, 2]);
        q.finish(0);
        q.finish(2);
        assert_eq!(ids(&mut q), [1, 3]);
    }

    #[test]
    fn char_and_block_devnums_do_not_collide() {
        let mut q = Queue::new();
        let mut b = UeventBuilder::new(Action::Add, "/devices/b", "block");
        b.var("MAJOR", "7").var("MINOR", "0").seqnum(1);
        q.push(b.build().unwrap(), Origin::Kernel);
        q.push(
            ev("/devices/c", &[("MAJOR", "7"), ("MINOR", "0")]),
            Origin::Kernel,
        );
        assert_eq!(ids(&mut q), [0, 1]);
    }

    #[test]
    fn move_orders_against_old_and_new_paths() {
        let mut q = Queue::new();
        q.push(ev("/devices/old/x", &[]), Origin::Kernel);
        let mut moved = UeventBuilder::new(Action::Move, "/devices/new/x", "t");
        moved.var("DEVPATH_OLD", "/devices/old/x").seqnum(2);
        q.push(moved.build().unwrap(), Origin::Kernel);
        q.push(ev("/devices/new/x/child", &[]), Origin::Kernel);
        assert_eq!(ids(&mut q), [0]);
        q.finish(0);
        assert_eq!(ids(&mut q), [1]);
        q.finish(1);
        assert_eq!(ids(&mut q), [2]);
    }

    #[test]
    fn window_bounds_the_scan() {
        let mut q = Queue::new();
        for _ in 0..(WINDOW + 10) {
            q.push(ev("/devices/same", &[]), Origin::Kernel);
        }
        q.push(ev("/devices/free", &[]), Origin::Kernel);
        assert_eq!(
            ids(&mut q),
            [0],
            "the unrelated event lies beyond the window"
        );
        assert_eq!(q.pending(), WINDOW + 10);
    }
}
