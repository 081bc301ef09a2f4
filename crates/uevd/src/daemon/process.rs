//! Processing one event: policy, then nodes and symlinks, then the database record.
//!
//! Runs on worker threads. The daemon hands in the device's previous record (it owns the
//! in-memory view; ordering guarantees no other event for the device is in flight), and gets
//! back a [`Processed`] — the seam publishers consume.

use super::db::{event_device_id, Db, DeviceRecord, NodeRecord};
use super::helpers::HelperJob;
use super::links::{Claim, LinkClaims};
use super::mac::Mac;
use super::nodes::{DevFs, NodeKind, NodePath, NodeSpec, Nodes};
use super::policy::{Context, Decision, Policy};
use super::queue::{Job, Origin};
use crate::host::SysfsSnapshot;
use std::sync::{Arc, RwLock};
use uevd_rules::eval::Properties;
use uevd_wire::{Action, Uevent};

/// What the daemon's memory holds about an event's device, handed to the worker with it.
#[derive(Debug, Default)]
pub struct Known {
    /// The device's record before the event.
    pub previous: Option<Arc<DeviceRecord>>,
    /// Its processed ancestors' records, nearest first, when the policy reads them.
    pub ancestors: Vec<Arc<DeviceRecord>>,
    /// For a `move`: records of other devices still kept at the new devpath or below it,
    /// deepest first. The kernel moves a device only onto a free path (and the moved device's
    /// own children are still recorded below its old path), so their `remove`s were lost;
    /// what they made goes before the moved device takes its place.
    pub displaced: Vec<Arc<DeviceRecord>>,
}

/// The parts of a policy [`Context`] other than the device's own record.
#[derive(Clone, Copy)]
struct Around<'a> {
    ancestors: &'a [Arc<DeviceRecord>],
    snapshot: Option<&'a SysfsSnapshot>,
}

impl<'a> Around<'a> {
    fn context(self, previous: Option<&'a DeviceRecord>) -> Context<'a> {
        Context {
            previous,
            ancestors: self.ancestors,
            snapshot: self.snapshot,
        }
    }
}

/// The result of processing one event.
#[derive(Debug)]
pub struct Processed {
    /// The queue id of the job.
    pub id: u64,
    /// The event as received or synthesized.
    pub event: Uevent,
    /// Where it came from.
    pub origin: Origin,
    /// The device's record after the event (`None` once removed).
    pub record: Option<Arc<DeviceRecord>>,
    /// The record before the event (what a `remove` removed).
    pub previous: Option<Arc<DeviceRecord>>,
    /// Problems met on the way; each names the event and the culprit. The event still counts
    /// as processed: what could be done was done.
    pub errors: Vec<String>,
    /// Whether a node name was refused as unsafe.
    pub refused_node: bool,
    /// `RUN` helpers still to run; the event is done when they have.
    pub helpers: Vec<HelperJob>,
    /// Devpaths of the records a `move` displaced ([`Known::displaced`]), undone here and
    /// for the event loop to forget.
    pub displaced: Vec<String>,
}

/// Properties that describe one event rather than the device; not kept in the record.
fn per_event(key: &str) -> bool {
    matches!(
        key,
        "ACTION" | "DEVPATH" | "SUBSYSTEM" | "SEQNUM" | "DEVPATH_OLD" | "SYNTH_UUID"
    ) || key.starts_with("SYNTH_ARG_")
}

/// The environment of `RUN` helpers: the device's properties after the rules, the event's
/// own keys, and `DEVNAME`/`DEVLINKS`/`TAGS` as udev sets them.
fn helper_env(event: &Uevent, record: &DeviceRecord) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = event
        .iter()
        .filter(|(k, _)| per_event(k) || *k == "SEQNUM")
        .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    env.extend(
        record
            .properties
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    if let Some(node) = &record.node {
        env.retain(|(k, _)| k != "DEVNAME");
        env.push((
            "DEVNAME".into(),
            format!("/dev/{}", node.spec.path.as_str()),
        ));
    }
    if !record.symlinks.is_empty() {
        let links: Vec<String> = record
            .symlinks
            .iter()
            .map(|l| format!("/dev/{}", l.as_str()))
            .collect();
        env.push(("DEVLINKS".into(), links.join(" ")));
    }
    if !record.tags.is_empty() {
        env.push(("TAGS".into(), format!(":{}:", record.tags.join(":"))));
    }
    env
}

/// Renames the event's network interface to `new` (udev's `NAME=`), as udevd does before
/// the `RUN` helpers: the kernel then sends a `move` for the new name.
fn rename_interface(event: &Uevent, new: &str) -> Result<(), String> {
    let old = event.get("INTERFACE").unwrap_or("?");
    let ifindex = event
        .ifindex()
        .filter(|&i| i > 0)
        .ok_or_else(|| format!("cannot rename interface {old} to {new}: no IFINDEX"))?;
    uevd_netlink::rename_interface(ifindex, new)
        .map_err(|e| format!("cannot rename interface {old} (index {ifindex}) to {new}: {e}"))?;
    crate::info!("renamed network interface {old} (index {ifindex}) to {new}");
    Ok(())
}

/// Everything a worker needs to process events.
pub struct Processor<F> {
    policy: RwLock<Arc<dyn Policy>>,
    nodes: Nodes<F>,
    db: Db,
    links: Option<LinkClaims>,
    /// Security modules whose labels `SECLABEL` sets.
    mac: Mac,
}

impl<F: DevFs> Processor<F> {
    /// A processor applying `policy`, managing nodes on `fs`, recording in `db`, arbitrating
    /// shared symlinks through `links` (without it, the last device to claim a link gets it).
    pub fn new(policy: Arc<dyn Policy>, fs: F, db: Db, links: Option<LinkClaims>) -> Processor<F> {
        Processor {
            policy: RwLock::new(policy),
            nodes: Nodes::new(fs),
            db,
            links,
            mac: Mac::default(),
        }
    }

    /// Sets the security modules whose `SECLABEL`s are applied (none by default).
    pub fn with_mac(mut self, mac: Mac) -> Self {
        self.mac = mac;
        self
    }

    /// Claims `link` (if `claim`) and points it at the winning claimant's node.
    fn point_link(
        &self,
        link: &NodePath,
        claim: Option<&Claim>,
        own: &NodePath,
    ) -> Result<(), String> {
        let target = match (&self.links, claim) {
            (Some(links), Some(claim)) => {
                let winner = links
                    .claim(link, claim)
                    .map_err(|e| format!("link claim {}: {e}", link.as_str()))?;
                NodePath::new(&winner.target)
                    .map_err(|e| format!("link claim {}: bad target: {e}", link.as_str()))?
            }
            _ => own.clone(),
        };
        self.nodes
            .ensure_symlink(link, &target)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Gives up device `id`'s claim on `link` (pointing at `own`): the link moves to the next
    /// claimant, or goes.
    fn drop_link(&self, link: &NodePath, id: &str, own: &NodePath) -> Result<(), String> {
        let winner = match &self.links {
            Some(links) => links
                .release(link, id)
                .map_err(|e| format!("link claim {}: {e}", link.as_str()))?,
            None => None,
        };
        match winner.and_then(|w| NodePath::new(&w.target).ok()) {
            Some(target) => self
                .nodes
                .ensure_symlink(link, &target)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => self
                .nodes
                .remove_symlink(link, own)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Swaps the policy atomically: events already being processed finish with the old one.
    pub fn set_policy(&self, policy: Arc<dyn Policy>) {
        if let Ok(mut p) = self.policy.write() {
            *p = policy;
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<dyn Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The device database (flushed and compacted by the event loop).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The node filesystem (for reconcile checks).
    pub fn nodes(&self) -> &Nodes<F> {
        &self.nodes
    }

    /// Processes `job`, given what was `known` of its device before it.
    pub fn process(&self, job: Job, known: Known, now_usec: u64) -> Processed {
        let mut out = Processed {
            id: job.id,
            event: job.event,
            origin: job.origin,
            record: None,
            previous: known.previous,
            errors: Vec::new(),
            refused_node: false,
            helpers: Vec::new(),
            displaced: Vec::with_capacity(known.displaced.len()),
        };
        let around = Around {
            ancestors: &known.ancestors,
            snapshot: job.snapshot.as_deref(),
        };
        for old in known.displaced {
            let ctx = format!(
                "{} (removing {}, the device it replaces)",
                Self::context(&out.event),
                old.devpath
            );
            if let Err(e) = self.undo(&old, &ctx, &mut out.errors) {
                out.errors.push(format!("{ctx}: {e}"));
            }
            out.displaced.push(old.devpath.clone());
        }
        if out.event.action() == Action::Remove {
            self.remove(&mut out, around);
        } else {
            self.update(&mut out, around, now_usec);
        }
        out
    }

    /// Removes what `old` made: its links, its node (only if it is still that device's),
    /// then its database entry. An error means the node stays (the entry too, so that a
    /// later resync or start can retry); link problems are only reported.
    fn undo(&self, old: &DeviceRecord, ctx: &str, errors: &mut Vec<String>) -> Result<(), String> {
        if let Some(NodeRecord { spec: node, .. }) = &old.node {
            let old_id = old.id();
            for link in &old.symlinks {
                if let Err(e) = self.drop_link(link, &old_id, &node.path) {
                    errors.push(format!("{ctx}: {e}"));
                }
            }
            self.nodes
                .remove_node(&node.path, node.kind, node.devnum)
                .map_err(|e| e.to_string())?;
        }
        self.db.remove(&old.id());
        Ok(())
    }

    fn context(event: &Uevent) -> String {
        format!(
            "{} {} (seq {})",
            event.action(),
            event.devpath(),
            event.seqnum()
        )
    }

    /// The name a network interface's `add` asks for with `NAME=`, if it is not its name.
    fn interface_rename<'d>(event: &Uevent, decision: &'d Decision) -> Option<&'d str> {
        let new = decision.name.as_deref()?;
        (event.action() == Action::Add
            && event.subsystem() == "net"
            && event.get("INTERFACE") != Some(new))
        .then_some(new)
    }

    fn update(&self, out: &mut Processed, around: Around, now_usec: u64) {
        let event = &out.event;
        let previous = out.previous.as_deref();
        let policy = self.policy();
        let mut decision = policy.decide(event, &around.context(previous));

        let mut properties = if decision.properties_complete && decision.run.is_empty() {
            // The event's own list becomes the record's: no copy. (Helpers plan from the
            // decision's list, so with helpers to run it stays there.)
            let mut properties = std::mem::take(&mut decision.properties);
            properties.retain(|k, _| !per_event(k));
            properties
        } else if decision.properties_complete {
            decision.properties.filtered(|k, _| !per_event(k))
        } else {
            let mut properties: Properties = event
                .iter()
                .filter(|(k, _)| !per_event(k))
                .map(|(k, v)| (k, String::from_utf8_lossy(v)))
                .collect();
            for (k, v) in decision.properties.iter().filter(|(k, _)| !per_event(k)) {
                properties.set(k, v);
            }
            properties
        };
        if let Some(new) = Self::interface_rename(event, &decision) {
            match rename_interface(event, new) {
                Ok(()) => properties.set("INTERFACE", new),
                Err(e) => out.errors.push(format!("{}: {e}", Self::context(event))),
            }
        }

        // The node, if the device has one and its name is acceptable.
        let mut node: Option<NodeRecord> = None;
        let mut node_existed = false;
        let name = decision.name.as_deref().or(event.devname());
        let devnum = event
            .devnum()
            .filter(|&(major, _)| major > 0 && !decision.no_node);
        if let (Some(name), Some(devnum)) = (name, devnum) {
            match NodePath::new(name) {
                Err(reason) => {
                    out.refused_node = true;
                    out.errors.push(format!(
                        "{}: refusing node name {name:?}: {reason}",
                        Self::context(event)
                    ));
                }
                Ok(path) => {
                    let kind = if event.subsystem() == "block" {
                        NodeKind::Block
                    } else {
                        NodeKind::Char
                    };
                    let spec = NodeSpec {
                        path,
                        kind,
                        devnum,
                        mode: decision.mode.unwrap_or(0o600),
                        uid: decision.uid.unwrap_or(0),
                        gid: decision.gid.unwrap_or(0),
                    };
                    // A node that moved (renamed, new devnum) leaves its old name.
                    if let Some(NodeRecord { spec: old, .. }) =
                        previous.and_then(|p| p.node.as_ref())
                    {
                        if old.path != spec.path
                            || old.devnum != spec.devnum
                            || old.kind != spec.kind
                        {
                            if let Err(e) = self.nodes.remove_node(&old.path, old.kind, old.devnum)
                            {
                                out.errors.push(format!("{}: {e}", Self::context(event)));
                            }
                        }
                    }
                    match self.nodes.ensure_node(&spec) {
                        Ok(ensured) => {
                            node_existed = !ensured.created;
                            // udev labels on `add` only, whether or not the node is new.
                            if event.action() == Action::Add {
                                for e in
                                    self.mac
                                        .apply(self.nodes.fs(), &spec.path, &decision.seclabels)
                                {
                                    out.errors.push(format!("{}: {e}", Self::context(event)));
                                }
                            }
                            let mut created_dirs = previous
                                .and_then(|p| p.node.as_ref())
                                .filter(|old| old.spec.path == spec.path)
                                .map(|old| old.created_dirs.clone())
                                .unwrap_or_default();
                            created_dirs.extend(ensured.created_dirs);
                            node = Some(NodeRecord { spec, created_dirs });
                        }
                        Err(e) => {
                            if matches!(e, super::nodes::NodeError::Unsafe { .. }) {
                                out.refused_node = true;
                            }
                            out.errors.push(format!("{}: {e}", Self::context(event)));
                        }
                    }
                }
            }
        }

        // Symlinks: claimed with the policy's priority; each points at the winning claimant.
        let id = event_device_id(event);
        let mut symlinks = Vec::new();
        if let Some(node) = &node {
            for link in &decision.symlinks {
                match NodePath::new(link) {
                    Ok(link) => {
                        let claim = Claim {
                            id: id.clone(),
                            priority: decision.link_priority,
                            target: node.spec.path.as_str().to_owned(),
                        };
                        match self.point_link(&link, Some(&claim), &node.spec.path) {
                            Ok(()) => symlinks.push(link),
                            Err(e) => out.errors.push(format!("{}: {e}", Self::context(event))),
                        }
                    }
                    Err(reason) => out.errors.push(format!(
                        "{}: refusing symlink name {link:?}: {reason}",
                        Self::context(event)
                    )),
                }
            }
        }
        if let Some(old) = previous {
            if let Some(old_node) = &old.node {
                let old_id = old.id();
                for link in old.symlinks.iter().filter(|l| !symlinks.contains(l)) {
                    if let Err(e) = self.drop_link(link, &old_id, &old_node.spec.path) {
                        out.errors.push(format!("{}: {e}", Self::context(event)));
                    }
                }
            }
        }

        // Properties named `.X` are udev's scratch space: this event's rules and helpers see
        // them, but they are not recorded (udev leaves them out of its database), so the next
        // event's `IMPORT{db}` and the children's `IMPORT{parent}` do not.
        let scratch: Vec<(String, String)> = properties
            .iter()
            .filter(|(k, _)| k.starts_with('.'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if !scratch.is_empty() {
            properties.retain(|k, _| !k.starts_with('.'));
        }
        let record = DeviceRecord {
            devpath: event.devpath().to_owned(),
            subsystem: event.subsystem().to_owned(),
            usec_initialized: previous.map_or(now_usec, |p| p.usec_initialized),
            node,
            symlinks,
            tags: decision.tags.clone(),
            properties,
            watch: decision.watch,
        };
        // A repeated event that changes nothing (a `change` with the same variables) needs no
        // rewrite.
        let unchanged = previous.is_some_and(|p| *p == record && p.id() == id);
        if !unchanged {
            self.db.write(&id, &record);
        }
        if let Some(old) = previous {
            let old_id = old.id();
            if old_id != id {
                self.db.remove(&old_id);
            }
        }
        if !decision.run.is_empty() {
            let mut env = helper_env(event, &record);
            env.extend(scratch);
            let (jobs, errors) = policy.plan_helpers(event, &decision, &env, node_existed);
            out.helpers = jobs;
            out.errors.extend(errors);
        }
        out.record = Some(Arc::new(record));
    }

    fn remove(&self, out: &mut Processed, around: Around) {
        let event = &out.event;
        let ctx = Self::context(event);
        let policy = self.policy();
        let decision = policy.decide(event, &around.context(out.previous.as_deref()));
        if !decision.run.is_empty() {
            // As in udev, removal helpers run once the node is gone (the event loop starts
            // them after this), with the device's last properties in their environment.
            let mut env: Vec<(String, String)> = event
                .iter()
                .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            if let Some(old) = out.previous.as_deref() {
                for (k, v) in old.properties.iter() {
                    if !env.iter().any(|(key, _)| key == k) {
                        env.push((k.to_owned(), v.to_owned()));
                    }
                }
            }
            // `if_exists` is about nodes met when creating them; on remove the node is expected.
            let (jobs, errors) = policy.plan_helpers(event, &decision, &env, false);
            out.helpers = jobs;
            out.errors.extend(errors);
        }
        match out.previous.clone() {
            Some(old) => {
                if let Err(e) = self.undo(&old, &ctx, &mut out.errors) {
                    // The node stays, so does the record that tracks it: the next resync or
                    // start finds the device gone and tries again.
                    out.errors.push(format!(
                        "{ctx}: {e}; keeping its record to retry the removal later"
                    ));
                    out.record = Some(old);
                }
            }
            None => {
                // Never processed (or the record was lost): remove what the event names, if
                // it is still that device's node.
                if let (Some(name), Some(devnum)) = (event.devname(), event.devnum()) {
                    match NodePath::new(name) {
                        Ok(path) => {
                            let kind = if event.subsystem() == "block" {
                                NodeKind::Block
                            } else {
                                NodeKind::Char
                            };
                            if let Err(e) = self.nodes.remove_node(&path, kind, devnum) {
                                out.errors.push(format!("{ctx}: {e}"));
                            }
                        }
                        Err(reason) => {
                            out.refused_node = true;
                            out.errors
                                .push(format!("{ctx}: refusing node name {name:?}: {reason}"));
                        }
                    }
                }
                // Nothing was recorded for it, so there is nothing to remove from the database.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::nodes::{DirFs, FileKind, Meta};
    use crate::daemon::policy::KernelDefaults;
    use crate::daemon::queue::Origin;
    use rustix::io::Errno;
    use std::sync::atomic::{AtomicBool, Ordering};
    use uevd_wire::UeventBuilder;

    /// A real directory whose `unlink` fails while `read_only` is set (as on a `--dev`
    /// remounted read-only).
    struct Flaky {
        fs: DirFs,
        read_only: Arc<AtomicBool>,
    }

    impl DevFs for Flaky {
        fn lstat(&self, path: &str) -> Result<Option<Meta>, Errno> {
            self.fs.lstat(path)
        }
        fn lstat_root(&self) -> Result<Meta, Errno> {
            self.fs.lstat_root()
        }
        fn mkdir(&self, path: &str, mode: u32) -> Result<(), Errno> {
            self.fs.mkdir(path, mode)
        }
        fn mknod(&self, p: &str, k: NodeKind, mode: u32, n: (u32, u32)) -> Result<(), Errno> {
            self.fs.mknod(p, k, mode, n)
        }
        fn chown(&self, path: &str, uid: u32, gid: u32) -> Result<(), Errno> {
            self.fs.chown(path, uid, gid)
        }
        fn chmod(&self, path: &str, mode: u32) -> Result<(), Errno> {
            self.fs.chmod(path, mode)
        }
        fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
            self.fs.rename(from, to)
        }
        fn unlink(&self, path: &str) -> Result<(), Errno> {
            if self.read_only.load(Ordering::SeqCst) {
                return Err(Errno::ROFS);
            }
            self.fs.unlink(path)
        }
        fn rmdir(&self, path: &str) -> Result<(), Errno> {
            self.fs.rmdir(path)
        }
        fn symlink(&self, target: &str, path: &str) -> Result<(), Errno> {
            self.fs.symlink(target, path)
        }
        fn set_node_xattr(&self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
            self.fs.set_node_xattr(path, name, value)
        }
        fn readlink(&self, path: &str) -> Result<String, Errno> {
            self.fs.readlink(path)
        }
    }

    fn job(action: Action) -> Job {
        let mut b = UeventBuilder::new(action, "/devices/virtual/t/n0", "t");
        b.var("MAJOR", "1").var("MINOR", "3").var("DEVNAME", "n0");
        Job {
            id: 0,
            event: b.seqnum(1).build().expect("event"),
            origin: Origin::Kernel,
            snapshot: None,
        }
    }

    #[test]
    fn a_node_that_cannot_be_removed_keeps_its_record_for_a_retry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).expect("dev");
        let read_only = Arc::new(AtomicBool::new(false));
        let fs = Flaky {
            fs: DirFs::open(&dev).expect("open"),
            read_only: Arc::clone(&read_only),
        };
        let db = Db::open(&dir.path().join("run")).expect("db");
        let p = Processor::new(Arc::new(KernelDefaults), fs, db, None);
        let added = p.process(job(Action::Add), Known::default(), 1);
        let record = added.record.expect("a record");
        assert!(matches!(
            p.nodes().fs().lstat("n0"),
            Ok(Some(Meta {
                kind: FileKind::Node(NodeKind::Char),
                ..
            }))
        ));
        read_only.store(true, Ordering::SeqCst);
        let known = Known {
            previous: Some(Arc::clone(&record)),
            ..Known::default()
        };
        let removed = p.process(job(Action::Remove), known, 2);
        assert!(
            removed.errors[0].contains("keeping its record"),
            "{:?}",
            removed.errors
        );
        assert_eq!(removed.record.as_deref(), Some(&*record), "still tracked");
        p.db().flush().expect("flush");
        let (records, _) = p.db().load_all().expect("load");
        assert_eq!(records.len(), 1, "the record is still in the database");
        // Once the node can go, a later remove takes both.
        read_only.store(false, Ordering::SeqCst);
        let known = Known {
            previous: removed.record,
            ..Known::default()
        };
        let gone = p.process(job(Action::Remove), known, 3);
        assert!(gone.errors.is_empty(), "{:?}", gone.errors);
        assert!(gone.record.is_none());
        assert_eq!(p.nodes().fs().lstat("n0"), Ok(None));
    }

    #[test]
    fn a_move_onto_a_path_still_held_by_a_vanished_device_removes_what_that_device_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).expect("dev");
        let db = Db::open(&dir.path().join("run")).expect("db");
        let fs = DirFs::open(&dev).expect("open");
        let p = Processor::new(Arc::new(KernelDefaults), fs, db, None);
        let event = |action: Action, devpath: &str, name: &str, minor: &str, old: Option<&str>| {
            let mut b = UeventBuilder::new(action, devpath, "t");
            b.var("MAJOR", "1").var("MINOR", minor).var("DEVNAME", name);
            if let Some(old) = old {
                b.var("DEVPATH_OLD", old);
            }
            Job {
                id: 0,
                event: b.seqnum(1).build().expect("event"),
                origin: Origin::Kernel,
                snapshot: None,
            }
        };
        // n0 was at /devices/virtual/t/n0; its remove was lost. Another device moves there.
        let stale = p
            .process(
                event(Action::Add, "/devices/virtual/t/n0", "n0", "3", None),
                Known::default(),
                1,
            )
            .record
            .expect("n0's record");
        let moving = p
            .process(
                event(Action::Add, "/devices/virtual/t/m", "n1", "4", None),
                Known::default(),
                2,
            )
            .record
            .expect("n1's record");
        let known = Known {
            previous: Some(moving),
            displaced: vec![stale],
            ..Known::default()
        };
        let moved = p.process(
            event(
                Action::Move,
                "/devices/virtual/t/n0",
                "n1",
                "4",
                Some("/devices/virtual/t/m"),
            ),
            known,
            3,
        );
        assert!(moved.errors.is_empty(), "{:?}", moved.errors);
        assert_eq!(
            p.nodes().fs().lstat("n0"),
            Ok(None),
            "the vanished device's node"
        );
        assert!(p.nodes().fs().lstat("n1").expect("lstat").is_some());
        p.db().flush().expect("flush");
        let (records, _) = p.db().load_all().expect("load");
        let names: Vec<_> = records
            .iter()
            .map(|r| (r.devpath.as_str(), r.property("DEVNAME")))
            .collect();
        assert_eq!(names, [("/devices/virtual/t/n0", Some("n1"))]);
    }
}
