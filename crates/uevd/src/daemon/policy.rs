//! The policy step: what to do with a device, decided per event.
//!
//! The daemon asks a [`Policy`] for a [`Decision`] and carries it out (nodes, symlinks,
//! database). The rule language plugs in here later; until then [`KernelDefaults`] applies the
//! kernel's own suggestions, as mdev does with an empty `mdev.conf`.

use super::db::DeviceRecord;
use super::helpers::HelperJob;
use crate::host::SysfsSnapshot;
use std::sync::Arc;
use uevd_wire::Uevent;

/// What the daemon knows around one event, beyond the event itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The device's record before the event, if any.
    pub previous: Option<&'a DeviceRecord>,
    /// Records of the device's processed ancestors, nearest first. Filled only for a policy
    /// that [reads them](Policy::reads_ancestors): finding them costs a lookup per level.
    pub ancestors: &'a [Arc<DeviceRecord>],
    /// The sysfs walk a coldplug or resync event was synthesized from.
    pub snapshot: Option<&'a SysfsSnapshot>,
}

/// What policy decided for one event. Empty fields mean "no opinion": the daemon then uses the
/// kernel's suggestion (`DEVNAME`, `DEVMODE`, `DEVUID`, `DEVGID`) and finally 0600 root:root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Node name relative to `/dev`, overriding `DEVNAME`.
    pub name: Option<String>,
    /// Permission bits of the node.
    pub mode: Option<u32>,
    /// Owner of the node.
    pub uid: Option<u32>,
    /// Group of the node.
    pub gid: Option<u32>,
    /// Symlinks to the node, relative to `/dev`.
    pub symlinks: Vec<String>,
    /// Properties to add to (or override in) the device's record.
    pub properties: uevd_rules::eval::Properties,
    /// Tags to attach to the device.
    pub tags: Vec<String>,
    /// `properties` is the device's complete list (rules may also remove kernel properties);
    /// otherwise it only adds to the event's.
    pub properties_complete: bool,
    /// Helpers to run once the node and symlinks exist (`RUN`).
    pub run: Vec<uevd_rules::eval::RunItem>,
    /// Create no node (mdev.conf `!`).
    pub no_node: bool,
    /// Watch the node for writers closing it (`OPTIONS+="watch"`).
    pub watch: bool,
    /// Priority of this device's claim on its symlinks (`link_priority`).
    pub link_priority: i32,
    /// Security labels for the node (`SECLABEL{module}`), set when the device is added.
    pub seclabels: Vec<(String, String)>,
}

/// Decides what to do for an event. Implementations must be cheap to call from several worker
/// threads at once.
pub trait Policy: Send + Sync {
    /// The decision for `event`, in `context`.
    fn decide(&self, event: &Uevent, context: &Context) -> Decision;

    /// Whether [`Context::ancestors`] matters to this policy (udev rules' `IMPORT{parent}`
    /// and `TAGS` read the parents' records).
    fn reads_ancestors(&self) -> bool {
        false
    }

    /// Whether the policy looks at parent devices in sysfs (then a coldplug keeps its walk's
    /// parents for the events it synthesizes: [`Context::snapshot`]).
    fn reads_parents(&self) -> bool {
        false
    }

    /// Permissions and tags for nodes that exist before their device (`static_node=`),
    /// applied whenever this policy is put in place.
    fn static_nodes(&self) -> &[uevd_rules::static_nodes::StaticNode] {
        &[]
    }

    /// Whether what this policy was read from has changed since (rule files edited, added,
    /// removed): the daemon then reloads by itself.
    fn rules_changed(&self) -> bool {
        false
    }

    /// A one-line description for logs and `reload` replies.
    fn describe(&self) -> String;

    /// Turns the decision's `RUN` list into helpers for the event loop to run (after the node
    /// and symlinks exist), with `env` as their environment; `node_existed` says the node was
    /// already there before the event. Builtins happen here. Returns the helpers and one
    /// message per item that cannot run.
    fn plan_helpers(
        &self,
        event: &Uevent,
        decision: &Decision,
        env: &[(String, String)],
        node_existed: bool,
    ) -> (Vec<HelperJob>, Vec<String>) {
        let _ = (env, node_existed);
        let errors = decision
            .run
            .iter()
            .map(|item| {
                format!(
                    "{} {}: this policy cannot run {item:?}",
                    event.action(),
                    event.devpath()
                )
            })
            .collect();
        (Vec::new(), errors)
    }
}

/// The built-in policy until rules are configured: the kernel's suggested mode and owner.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelDefaults;

impl Policy for KernelDefaults {
    fn decide(&self, event: &Uevent, _context: &Context) -> Decision {
        Decision {
            mode: event
                .get("DEVMODE")
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .filter(|m| *m <= 0o7777),
            uid: event.get("DEVUID").and_then(|u| u.parse().ok()),
            gid: event.get("DEVGID").and_then(|g| g.parse().ok()),
            ..Decision::default()
        }
    }

    fn describe(&self) -> String {
        "built-in policy (kernel DEVMODE/DEVUID/DEVGID, else 0600 root:root)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uevd_wire::{Action, UeventBuilder};

    #[test]
    fn kernel_suggestions_are_taken_and_garbage_ignored() {
        let ev = UeventBuilder::new(Action::Add, "/devices/virtual/misc/fuse", "misc")
            .var("DEVNAME", "fuse")
            .var("DEVMODE", "0666")
            .var("DEVUID", "5")
            .var("DEVGID", "x")
            .seqnum(1)
            .build()
            .unwrap();
        let d = KernelDefaults.decide(&ev, &Context::default());
        assert_eq!((d.mode, d.uid, d.gid), (Some(0o666), Some(5), None));

        let ev = UeventBuilder::new(Action::Add, "/devices/virtual/misc/x", "misc")
            .var("DEVMODE", "99999")
            .seqnum(1)
            .build()
            .unwrap();
        assert_eq!(KernelDefaults.decide(&ev, &Context::default()).mode, None);
    }
}
