//! Coldplug and resync: compare what sysfs says exists with what uevd has processed, and
//! produce the events that close the gap.
//!
//! The same diff serves start-up (against the database a previous run left, so a restart
//! neither redoes work nor leaves stale nodes) and recovery after an overflow (against the
//! in-memory view): devices that vanished get a `remove`, new ones an `add`, known ones a
//! `change` only when their uevent variables differ — or an `add` when their node is missing
//! or wrong.

use super::db::DeviceRecord;
use super::hash::FastHash;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uevd_sysfs::Device;
use uevd_wire::{Action, ParseError, Uevent, UeventBuilder};

/// One difference between sysfs and the processed state.
#[derive(Debug)]
pub enum Fix {
    /// In sysfs, not processed (or its node is missing/wrong).
    Add(Device),
    /// In sysfs and processed, but its variables changed.
    Change(Device),
    /// Processed, gone from sysfs.
    Remove(Arc<DeviceRecord>),
}

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

/// Diffs `found` (in walk order: parents first) against `known`. Adds and changes keep walk
/// order; removes come after, children before parents. `node_ok` says whether a processed
/// device's node is still in place.
pub fn reconcile(
    found: Vec<Device>,
    known: &HashMap<String, Arc<DeviceRecord>, FastHash>,
    node_ok: impl Fn(&DeviceRecord) -> bool,
) -> (Vec<Fix>, Summary) {
    let mut fixes = Vec::with_capacity(found.len());
    let mut summary = Summary::default();
    let mut seen = HashSet::with_capacity(found.len());
    for device in found {
        match known.get(&device.devpath) {
            None => {
                summary.added += 1;
                seen.insert(device.devpath.clone());
                fixes.push(Fix::Add(device));
            }
            Some(record) => {
                seen.insert(device.devpath.clone());
                if record.subsystem != device.subsystem || !node_ok(record) {
                    summary.added += 1;
                    fixes.push(Fix::Add(device));
                } else if differs(&device, record) {
                    summary.changed += 1;
                    fixes.push(Fix::Change(device));
                } else {
                    summary.unchanged += 1;
                }
            }
        }
    }
    let mut gone: Vec<&Arc<DeviceRecord>> = known
        .iter()
        .filter(|(devpath, _)| !seen.contains(*devpath))
        .map(|(_, r)| r)
        .collect();
    // Children (longer paths) first, deterministic.
    gone.sort_by(|a, b| b.devpath.cmp(&a.devpath));
    summary.removed = gone.len();
    fixes.extend(gone.into_iter().map(|r| Fix::Remove(Arc::clone(r))));
    (fixes, summary)
}

/// Whether sysfs's variables for a device disagree with the processed record.
fn differs(device: &Device, record: &DeviceRecord) -> bool {
    device.vars.iter().any(|(k, v)| {
        let stored = record.property(k);
        // Rules see (and store) DEVNAME with its /dev/ prefix, as udev does.
        let stored = match (k.as_str(), stored) {
            ("DEVNAME", Some(s)) => Some(s.strip_prefix("/dev/").unwrap_or(s)),
            _ => stored,
        };
        stored != Some(v.as_str())
    }) || device.driver.as_deref() != record.property("DRIVER")
}

impl Fix {
    /// The event that applies this fix, stamped with `seqnum`.
    pub fn to_event(&self, seqnum: u64) -> Result<Uevent, ParseError> {
        match self {
            Fix::Add(d) => d.to_uevent(Action::Add, seqnum),
            Fix::Change(d) => d.to_uevent(Action::Change, seqnum),
            Fix::Remove(r) => {
                let mut b = UeventBuilder::new(Action::Remove, &r.devpath, &r.subsystem);
                for (k, v) in r.properties.iter() {
                    b.var(k, v);
                }
                b.seqnum(seqnum).build()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(devpath: &str, vars: &[(&str, &str)]) -> Device {
        Device {
            devpath: devpath.into(),
            subsystem: "t".into(),
            driver: None,
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
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

    #[test]
    fn adds_changes_and_removes() {
        let known: HashMap<_, _, FastHash> = [
            ("/devices/same", rec("/devices/same", &[("A", "1")])),
            ("/devices/changed", rec("/devices/changed", &[("A", "1")])),
            (
                "/devices/gone",
                rec("/devices/gone", &[("MAJOR", "1"), ("MINOR", "2")]),
            ),
            ("/devices/gone/child", rec("/devices/gone/child", &[])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let found = vec![
            dev("/devices/new", &[]),
            dev("/devices/same", &[("A", "1")]),
            dev("/devices/changed", &[("A", "2")]),
        ];
        let (fixes, summary) = reconcile(found, &known, |_| true);
        assert_eq!(
            summary,
            Summary {
                added: 1,
                changed: 1,
                removed: 2,
                unchanged: 1
            }
        );
        let names: Vec<String> = fixes
            .iter()
            .map(|f| match f {
                Fix::Add(d) => format!("add {}", d.devpath),
                Fix::Change(d) => format!("change {}", d.devpath),
                Fix::Remove(r) => format!("remove {}", r.devpath),
            })
            .collect();
        assert_eq!(
            names,
            [
                "add /devices/new",
                "change /devices/changed",
                "remove /devices/gone/child",
                "remove /devices/gone"
            ]
        );
        let ev = fixes[3].to_event(9).unwrap();
        assert_eq!(ev.action(), Action::Remove);
        assert_eq!(ev.devnum(), Some((1, 2)));
        assert_eq!(ev.seqnum(), 9);
    }

    #[test]
    fn a_missing_node_is_re_added() {
        let known: HashMap<_, _, FastHash> = [("/devices/x".to_string(), rec("/devices/x", &[]))]
            .into_iter()
            .collect();
        let (fixes, summary) = reconcile(vec![dev("/devices/x", &[])], &known, |_| false);
        assert_eq!(summary.added, 1);
        assert!(matches!(&fixes[0], Fix::Add(d) if d.devpath == "/devices/x"));
    }
}
