//! The closed set of uevent actions.

use std::fmt;
use std::str::FromStr;

/// What happened to a device. The kernel defines exactly these eight (`kobject_actions[]` in
/// `lib/kobject_uevent.c`); libudev clients drop any other, so uevd refuses them at the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// A device appeared.
    Add,
    /// A device disappeared.
    Remove,
    /// Something about a device changed (also what `trigger` writes by default).
    Change,
    /// A device was renamed or re-parented; the event carries `DEVPATH_OLD`.
    Move,
    /// A device (typically a CPU or memory block) was brought online.
    Online,
    /// A device was taken offline.
    Offline,
    /// A driver was bound to the device.
    Bind,
    /// A driver was unbound from the device.
    Unbind,
}

impl Action {
    /// Every action, in the kernel's order.
    pub const ALL: [Action; 8] = [
        Action::Add,
        Action::Remove,
        Action::Change,
        Action::Move,
        Action::Online,
        Action::Offline,
        Action::Bind,
        Action::Unbind,
    ];

    /// The action's name as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Change => "change",
            Action::Move => "move",
            Action::Online => "online",
            Action::Offline => "offline",
            Action::Bind => "bind",
            Action::Unbind => "unbind",
        }
    }

    /// Parses a wire action name; `None` for anything the kernel does not send.
    pub fn from_bytes(bytes: &[u8]) -> Option<Action> {
        Some(match bytes {
            b"add" => Action::Add,
            b"remove" => Action::Remove,
            b"change" => Action::Change,
            b"move" => Action::Move,
            b"online" => Action::Online,
            b"offline" => Action::Offline,
            b"bind" => Action::Bind,
            b"unbind" => Action::Unbind,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error of parsing an [`Action`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?} (expected one of add, remove, change, move, online, offline, bind, unbind)")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::from_bytes(s.as_bytes()).ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
        }
    }

    #[test]
    fn unknown_action_names_itself() {
        let err = "frobnicate".parse::<Action>().unwrap_err();
        assert!(err.to_string().starts_with("unknown action \"frobnicate\""));
        assert_eq!("ADD".parse::<Action>(), Err(UnknownAction("ADD".into())));
    }
}
