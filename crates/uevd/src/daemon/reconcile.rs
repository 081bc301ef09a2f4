//! Coldplug and resync: compare what sysfs says exists with what uevd has processed, and
//! produce the events that close the gap.
//!
//! The same diff serves start-up (against the database a previous run left, so a restart
//! neither redoes work nor leaves stale nodes) and recovery after an overflow (against the
//! in-memory view): devices that vanished get a `remove`, new ones an `add`, known ones a
//! `change` only when their uevent variables differ — or an `add` when their node is missing
//! or wrong. It runs device by device as the walk reads them, so the walk's events can be
//! processed while it goes on.

use super::db::DeviceRecord;
use super::hash::FastHash;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uevd_sysfs::Device;
use uevd_wire::{Action, ParseError, Uevent, UeventBuilder};

/// What a reconcile found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// `add` events made.
    pub added: usize,
    /// `change` events made.
    pub changed: usize,
    /// `remove` events made.
    pub removed: usize,
    /// Devices already correct.
    pub unchanged: usize,
}

/// The processed state a walk is diffed against: devpath → record.
pub type Known = HashMap<String, Arc<DeviceRecord>, FastHash>;

/// Diffs a walk, device by device as it is read, against the processed state.
///
/// [`Reconciler::device`] says which event a walked device needs (in walk order: parents
/// first); [`Reconciler::finish`] names, once the walk is over, the devices that vanished.
#[derive(Debug)]
pub struct Reconciler {
    /// Devices processed before the walk that it has not seen (yet).
    unseen: HashSet<String, FastHash>,
    summary: Summary,
}

impl Reconciler {
    /// Starts a diff against what `known` holds now; devices processed later (the walk's
    /// own adds among them) are never taken for vanished.
    pub fn new(known: &Known) -> Reconciler {
        Reconciler {
            unseen: known.keys().cloned().collect(),
            summary: Summary::default(),
        }
    }

    /// The devices processed before the walk that `present` says are gone now, children
    /// first: their removes go before the walk's events, so that a new device that took a
    /// vanished one's `MAJOR:MINOR` or node name is not undone by the vanished one's remove
    /// (as the kernel would have sent them: the remove first). Others found gone only at
    /// the end of the walk come from [`Reconciler::finish`].
    pub fn vanished(
        &mut self,
        known: &Known,
        present: impl Fn(&str) -> bool,
    ) -> Vec<Arc<DeviceRecord>> {
        let mut gone: Vec<Arc<DeviceRecord>> = self
            .unseen
            .iter()
            .filter(|devpath| !present(devpath))
            .filter_map(|devpath| known.get(devpath).cloned())
            .collect();
        for record in &gone {
            self.unseen.remove(&record.devpath);
        }
        gone.sort_by(|a, b| b.devpath.cmp(&a.devpath));
        self.summary.removed += gone.len();
        gone
    }

    /// The event `device`, just walked, needs: `add` if it is new (or its subsystem or node
    /// is not what was processed), `change` if its variables changed, none if it is
    /// processed as it is. `node_ok` says whether a processed device's node is in place.
    pub fn device(
        &mut self,
        device: &Device,
        known: &Known,
        node_ok: impl Fn(&DeviceRecord) -> bool,
    ) -> Option<Action> {
        self.unseen.remove(&device.devpath);
        let Some(record) = known.get(&device.devpath) else {
            self.summary.added += 1;
            return Some(Action::Add);
        };
        if record.subsystem != device.subsystem || !node_ok(record) {
            self.summary.added += 1;
            Some(Action::Add)
        } else if differs(device, record) {
            self.summary.changed += 1;
            Some(Action::Change)
        } else {
            self.summary.unchanged += 1;
            None
        }
    }

    /// The walk is over: the records of the devices processed before it that it did not see
    /// and that are still known (each needs a `remove`), children first; and the counts.
    pub fn finish(mut self, known: &Known) -> (Vec<Arc<DeviceRecord>>, Summary) {
        let mut gone: Vec<Arc<DeviceRecord>> = self
            .unseen
            .iter()
            .filter_map(|devpath| known.get(devpath).cloned())
            .collect();
        // Children (longer paths) first, deterministic.
        gone.sort_by(|a, b| b.devpath.cmp(&a.devpath));
        self.summary.removed += gone.len();
        (gone, self.summary)
    }
}

/// Whether sysfs's variables for a device disagree with the processed record.
fn differs(device: &Device, record: &DeviceRecord) -> bool {
    device.vars.iter().any(|(k, v)| {
        let stored = record.property(k);
        // Rules see (and store) DEVNAME with its /dev/ prefix, as udev does.
        let stored = match (k, stored) {
            ("DEVNAME", Some(s)) => Some(s.strip_prefix("/dev/").unwrap_or(s)),
            _ => stored,
        };
        stored != Some(v)
    }) || device.driver.as_deref() != record.property("DRIVER")
}

/// The `remove` that undoes `event` (still queued) for a device that is no longer there:
/// its variables, as the kernel's own remove would carry them.
pub fn removal_after(event: &Uevent, seqnum: u64) -> Result<Uevent, ParseError> {
    let mut b = UeventBuilder::new(Action::Remove, event.devpath(), event.subsystem());
    for (k, v) in event.iter() {
        let own = matches!(
            k,
            "ACTION" | "DEVPATH" | "SUBSYSTEM" | "SEQNUM" | "DEVPATH_OLD"
        ) || k.starts_with("SYNTH_");
        if !own {
            b.var(k, v);
        }
    }
    b.seqnum(seqnum).build()
}

/// The `remove` for a device that vanished, stamped with `seqnum`: its processed properties,
/// so the rules and the node logic see what they saw when it was added.
pub fn removal(record: &DeviceRecord, seqnum: u64) -> Result<Uevent, ParseError> {
    let mut b = UeventBuilder::new(Action::Remove, &record.devpath, &record.subsystem);
    for (k, v) in record.properties.iter() {
        // Records keep DEVNAME as the rules saw it, under /dev/; the kernel's has no prefix.
        let v = match k {
            "DEVNAME" => v.strip_prefix("/dev/").unwrap_or(v),
            _ => v,
        };
        b.var(k, v);
    }
    b.seqnum(seqnum).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole diff in one go, as event names: adds and changes in walk order, then the
    /// removes.
    fn reconcile(
        found: &[Device],
        known: &Known,
        node_ok: impl Fn(&DeviceRecord) -> bool,
    ) -> (Vec<String>, Summary) {
        let mut diff = Reconciler::new(known);
        let mut names: Vec<String> = found
            .iter()
            .filter_map(|d| {
                diff.device(d, known, &node_ok)
                    .map(|a| format!("{a} {}", d.devpath))
            })
            .collect();
        let (gone, summary) = diff.finish(known);
        names.extend(gone.iter().map(|r| format!("remove {}", r.devpath)));
        (names, summary)
    }

    fn dev(devpath: &str, vars: &[(&str, &str)]) -> Device {
        Device {
            devpath: devpath.into(),
            subsystem: "t".into(),
            driver: None,
            vars: uevd_sysfs::Vars::from_pairs(vars.iter().copied()),
        }
    }

    fn rec(devpath: &str, props: &[(&str, &str)]) -> Arc<DeviceRecord> {
        Arc::new(DeviceRecord {
            devpath: devpath.into(),
            subsystem: "t".into(),
            usec_initialized: 1,
            node: None,
            symlinks: vec![],
            tags: vec![],
            properties: props.iter().map(|(k, v)| (*k, *v)).collect(),
            watch: false,
        })
    }

    fn known(records: &[Arc<DeviceRecord>]) -> Known {
        records
            .iter()
            .map(|r| (r.devpath.clone(), Arc::clone(r)))
            .collect()
    }

    #[test]
    fn adds_changes_and_removes() {
        let gone = rec("/devices/gone", &[("MAJOR", "1"), ("MINOR", "2")]);
        let known = known(&[
            rec("/devices/same", &[("A", "1")]),
            rec("/devices/changed", &[("A", "1")]),
            Arc::clone(&gone),
            rec("/devices/gone/child", &[]),
        ]);
        let found = [
            dev("/devices/new", &[]),
            dev("/devices/same", &[("A", "1")]),
            dev("/devices/changed", &[("A", "2")]),
        ];
        let (names, summary) = reconcile(&found, &known, |_| true);
        assert_eq!(
            summary,
            Summary {
                added: 1,
                changed: 1,
                removed: 2,
                unchanged: 1
            }
        );
        assert_eq!(
            names,
            [
                "add /devices/new",
                "change /devices/changed",
                "remove /devices/gone/child",
                "remove /devices/gone"
            ]
        );
        let ev = removal(&gone, 9).unwrap();
        assert_eq!(ev.action(), Action::Remove);
        let named = rec("/devices/n", &[("DEVNAME", "/dev/input/event3")]);
        assert_eq!(removal(&named, 1).unwrap().devname(), Some("input/event3"));
        assert_eq!(ev.devnum(), Some((1, 2)));
        assert_eq!(ev.seqnum(), 9);
    }

    #[test]
    fn a_missing_node_is_re_added() {
        let known = known(&[rec("/devices/x", &[])]);
        let (names, summary) = reconcile(&[dev("/devices/x", &[])], &known, |_| false);
        assert_eq!(summary.added, 1);
        assert_eq!(names, ["add /devices/x"]);
    }

    #[test]
    fn devices_processed_during_the_walk_are_not_taken_for_vanished() {
        let mut known = known(&[rec("/devices/a", &[]), rec("/devices/b", &[])]);
        let mut diff = Reconciler::new(&known);
        assert_eq!(
            diff.device(&dev("/devices/c", &[]), &known, |_| true),
            Some(Action::Add)
        );
        // The add of c is processed while the walk goes on.
        known.insert("/devices/c".into(), rec("/devices/c", &[]));
        assert_eq!(diff.device(&dev("/devices/a", &[]), &known, |_| true), None);
        let (gone, summary) = diff.finish(&known);
        assert!(matches!(&gone[..], [r] if r.devpath == "/devices/b"));
        assert_eq!(
            (summary.added, summary.unchanged, summary.removed),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_device_removed_during_the_walk_gets_no_second_remove() {
        let mut known = known(&[rec("/devices/a", &[])]);
        let diff = Reconciler::new(&known);
        // A kernel remove queued before the walk is processed while it runs.
        known.remove("/devices/a");
        let (gone, summary) = diff.finish(&known);
        assert!(gone.is_empty());
        assert_eq!(summary.removed, 0);
    }

    #[test]
    fn devices_already_gone_are_removed_before_the_walk_and_only_once() {
        let known = known(&[
            rec("/devices/a", &[]),
            rec("/devices/a/kid", &[]),
            rec("/devices/b", &[]),
        ]);
        let mut diff = Reconciler::new(&known);
        let first = diff.vanished(&known, |p| p == "/devices/b");
        let first: Vec<&str> = first.iter().map(|r| r.devpath.as_str()).collect();
        assert_eq!(first, ["/devices/a/kid", "/devices/a"]);
        assert_eq!(diff.device(&dev("/devices/b", &[]), &known, |_| true), None);
        let (rest, summary) = diff.finish(&known);
        assert!(rest.is_empty());
        assert_eq!((summary.removed, summary.unchanged), (2, 1));
    }
}
