//! `OPTIONS+="static_node=NAME"`: permissions for nodes that exist before their device.
//!
//! `kmod static-nodes` (or the kernel's devtmpfs) creates nodes such as `/dev/fuse`,
//! `/dev/kvm` or `/dev/snd/seq` before their module is loaded, so that opening them loads it.
//! No uevent announces them, so no rule line is ever *matched* for them: udev instead applies,
//! once its rules are read, the `OWNER`, `GROUP`, `MODE` and `TAG` of every line that names a
//! static node, ignoring that line's match keys. This module extracts those settings; the
//! daemon applies them to the nodes that exist.

use crate::ast::{Key, Line, Op, Rules};

/// The settings one `static_node=` token carries, as udev 252 computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    /// The node's name relative to `/dev`, as written (not yet validated).
    pub name: Box<str>,
    /// `OWNER` resolved when the rules were read; `None`: leave the owner.
    pub uid: Option<u32>,
    /// `GROUP` resolved when the rules were read; `None`: leave the group.
    pub gid: Option<u32>,
    /// `MODE` as a number; `None`: leave the mode (but see [`StaticNode::mode_to_apply`]).
    pub mode: Option<u32>,
    /// `TAG` values, exported as links so that tag readers (logind's `uaccess`) see the node.
    pub tags: Vec<Box<str>>,
    /// `file:line` of the rule line, for messages.
    pub location: String,
}

impl StaticNode {
    /// The mode to set: the line's `MODE`, or 0660 when only a group (other than root) is
    /// given, so that the group can use the node — udev's "upgrade" for a group without a mode.
    pub fn mode_to_apply(&self) -> Option<u32> {
        self.mode.or(self.gid.filter(|gid| *gid > 0).map(|_| 0o660))
    }

    /// Whether the line asks for anything at all (udev skips a bare `static_node=`).
    pub fn has_effect(&self) -> bool {
        self.uid.is_some() || self.gid.is_some() || self.mode.is_some() || !self.tags.is_empty()
    }
}

/// Every `static_node=` of `rules`, in rule order. Each takes the `OWNER`, `GROUP`, `MODE` and
/// `TAG` its line sets before it in udev's token order — which puts all of them before any
/// `static_node=`, so where they are written on the line does not matter. Values with
/// substitutions cannot be known without an event and are not used (as in udev, where only
/// values resolved at load time count); `TAG-=` removes nothing here and is skipped.
pub fn static_nodes(rules: &Rules) -> Vec<StaticNode> {
    rules
        .lines
        .iter()
        .filter(|line| line.flags.has_static_node)
        .flat_map(|line| line_static_nodes(rules, line))
        .collect()
}

fn line_static_nodes(rules: &Rules, line: &Line) -> Vec<StaticNode> {
    let (mut uid, mut gid, mut mode) = (None, None, None);
    let mut tags: Vec<Box<str>> = Vec::new();
    let mut nodes = Vec::new();
    for token in &line.tokens {
        match &token.key {
            Key::OwnerId(id) => uid = Some(*id),
            Key::GroupId(id) => gid = Some(*id),
            Key::ModeId(m) => mode = Some(*m),
            Key::TagAssign(tag) if token.op != Op::Remove && tag.is_plain() => {
                tags.push(tag.source().into());
            }
            Key::StaticNode(name) => nodes.push(StaticNode {
                name: name.clone(),
                uid,
                gid,
                mode,
                tags: tags.clone(),
                location: rules.location(line),
            }),
            _ => {}
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_into, NameResolver};

    struct Names;
    impl NameResolver for Names {
        fn user(&self, name: &str) -> Option<u32> {
            (name == "alice").then_some(1000)
        }
        fn group(&self, name: &str) -> Option<u32> {
            match name {
                "kvm" => Some(36),
                "root" => Some(0),
                _ => None,
            }
        }
    }

    fn nodes(text: &str) -> Vec<StaticNode> {
        let mut rules = Rules::default();
        let diagnostics = parse_into(&mut rules, "test.rules", text, &Names);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        static_nodes(&rules)
    }

    #[test]
    fn a_line_s_permissions_apply_to_its_static_nodes_whatever_its_matches() {
        let found = nodes(concat!(
            "KERNEL==\"fuse\", MODE=\"0666\", OPTIONS+=\"static_node=fuse\"\n",
            "SUBSYSTEM==\"nomatch\", OPTIONS+=\"static_node=kvm\", GROUP=\"kvm\", MODE=\"0660\"\n",
            "KERNEL==\"x\", MODE=\"0600\"\n",
        ));
        assert_eq!(found.len(), 2);
        assert_eq!(
            (&*found[0].name, found[0].mode, found[0].gid),
            ("fuse", Some(0o666), None)
        );
        assert_eq!(found[0].location, "test.rules:1");
        // Written after the static_node, still applied: udev sorts a line's tokens.
        assert_eq!(
            (&*found[1].name, found[1].mode, found[1].gid),
            ("kvm", Some(0o660), Some(36))
        );
    }

    #[test]
    fn several_static_nodes_and_tags_on_one_line() {
        let found = nodes(concat!(
            "SUBSYSTEM==\"sound\", KERNEL==\"seq\", TAG+=\"uaccess\", OWNER=\"alice\", ",
            "OPTIONS+=\"static_node=snd/seq\", OPTIONS+=\"static_node=snd/timer\"\n",
        ));
        let names: Vec<_> = found.iter().map(|n| &*n.name).collect();
        assert_eq!(names, ["snd/seq", "snd/timer"]);
        for n in &found {
            assert_eq!(n.tags, vec![Box::from("uaccess")]);
            assert_eq!((n.uid, n.gid, n.mode), (Some(1000), None, None));
            assert!(n.has_effect());
        }
    }

    #[test]
    fn values_known_only_per_event_are_not_used() {
        let found = nodes(concat!(
            "KERNEL==\"a\", OWNER=\"$env{WHO}\", MODE=\"$env{M}\", TAG+=\"t%k\", ",
            "TAG-=\"gone\", OPTIONS+=\"static_node=a\"\n",
        ));
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].uid, found[0].mode), (None, None));
        assert!(found[0].tags.is_empty());
        assert!(!found[0].has_effect());
    }

    #[test]
    fn a_group_without_a_mode_gets_0660_unless_it_is_root() {
        let found = nodes(concat!(
            "KERNEL==\"a\", GROUP=\"kvm\", OPTIONS+=\"static_node=a\"\n",
            "KERNEL==\"b\", GROUP=\"root\", OPTIONS+=\"static_node=b\"\n",
            "KERNEL==\"c\", GROUP=\"kvm\", MODE=\"0640\", OPTIONS+=\"static_node=c\"\n",
        ));
        let modes: Vec<_> = found.iter().map(StaticNode::mode_to_apply).collect();
        assert_eq!(modes, [Some(0o660), None, Some(0o640)]);
    }
}
