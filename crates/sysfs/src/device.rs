//! One device as sysfs describes it.

use uevd_wire::{Action, ParseError, Uevent, UeventBuilder};

/// A device read from sysfs: what its `uevent` file, `subsystem` and `driver` links say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Path below the sysfs root, starting with `/` (e.g. `/devices/virtual/block/loop0`).
    pub devpath: String,
    /// Name the `subsystem` link points to.
    pub subsystem: String,
    /// Name the `driver` link points to, if bound.
    pub driver: Option<String>,
    /// The `uevent` file's `KEY=VALUE` lines, in file order.
    pub vars: Vars,
}

/// The `KEY=VALUE` lines of a `uevent` file, kept as one piece of text: a walk of 100 000
/// devices would otherwise make two allocations per variable, on threads sharing one heap.
/// Only valid lines are kept (see [`parse_uevent_file`]), each ended by `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars {
    text: String,
}

impl Vars {
    /// Variables from pairs (tests, and devices described rather than read); pairs that
    /// [`parse_uevent_file`] would skip are skipped, as are newlines inside a value.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vars {
        let mut vars = Vars::default();
        for (k, v) in pairs {
            if valid_key(k) && !v.contains('\n') {
                vars.push(k, v);
            }
        }
        vars
    }

    fn push(&mut self, key: &str, value: &str) {
        self.text.reserve(key.len() + value.len() + 2);
        self.text.push_str(key);
        self.text.push('=');
        self.text.push_str(value);
        self.text.push('\n');
    }

    /// The pairs, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.text
            .split_terminator('\n')
            .map(|line| line.split_once('=').unwrap_or((line, "")))
    }

    /// The value of the last `key` line.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
    }

    /// How many variables there are.
    pub fn len(&self) -> usize {
        self.text.bytes().filter(|&b| b == b'\n').count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// A key the kernel could have written: printable ASCII without `=`, not empty.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

impl Device {
    /// The value of `key` in the uevent file.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key)
    }

    /// The last devpath component (the kernel's name for the device).
    pub fn sysname(&self) -> &str {
        self.devpath.rsplit('/').next().unwrap_or_default()
    }

    /// The event the kernel would send for this device: header, `ACTION`, `DEVPATH`,
    /// `SUBSYSTEM`, the uevent file's variables, then `SEQNUM`.
    ///
    /// Built in one allocation, which the event keeps: a coldplug makes one per device.
    pub fn to_uevent(&self, action: Action, seqnum: u64) -> Result<Uevent, ParseError> {
        let driver = self
            .driver
            .as_deref()
            .filter(|_| self.get("DRIVER").is_none());
        // The file's lines (`KEY=VALUE\n`) are as long as their fields (`KEY=VALUE\0`).
        let vars = self.vars.text.len() + driver.map_or(0, |d| "DRIVER=\0".len() + d.len());
        let size = UeventBuilder::size(action, &self.devpath, &self.subsystem, vars, seqnum);
        let mut b = UeventBuilder::with_capacity(size, action, &self.devpath, &self.subsystem);
        for (k, v) in self.vars.iter() {
            if !matches!(k, "ACTION" | "DEVPATH" | "SUBSYSTEM" | "SEQNUM") {
                b.var(k, v);
            }
        }
        if let Some(driver) = driver {
            b.var("DRIVER", driver);
        }
        b.seqnum(seqnum);
        b.into_uevent()
    }
}

/// Parses a `uevent` file: `KEY=VALUE` lines. Lines without `=`, with an empty key, and
/// empty lines are skipped (the kernel writes none); returns the pairs and how many were
/// skipped.
pub fn parse_uevent_file(text: &str) -> (Vars, usize) {
    let mut vars = Vars {
        text: String::with_capacity(text.len()),
    };
    let mut skipped = 0;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if valid_key(k) => vars.push(k, v),
            _ => skipped += 1,
        }
    }
    (vars, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uevent_files() {
        let (vars, skipped) =
            parse_uevent_file("MAJOR=7\nMINOR=0\n\ngarbage\n=x\nDEVNAME=loop0\nA=b=c\n");
        assert_eq!(skipped, 2);
        assert_eq!(
            vars.iter().collect::<Vec<_>>(),
            [
                ("MAJOR", "7"),
                ("MINOR", "0"),
                ("DEVNAME", "loop0"),
                ("A", "b=c")
            ]
        );
        assert_eq!(vars.len(), 4);
        assert_eq!(vars.get("A"), Some("b=c"));
        assert_eq!(vars.get("B"), None);
    }

    #[test]
    fn synthesized_event_matches_the_kernel_layout() {
        let d = Device {
            devpath: "/devices/pci0000:00/0000:00:02.0".into(),
            subsystem: "pci".into(),
            driver: Some("i915".into()),
            vars: parse_uevent_file("DRIVER=i915\nPCI_CLASS=30000\n").0,
        };
        let ev = d.to_uevent(Action::Add, 12).unwrap();
        assert_eq!(
            ev.as_bytes(),
            b"add@/devices/pci0000:00/0000:00:02.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:02.0\0\
SUBSYSTEM=pci\0DRIVER=i915\0PCI_CLASS=30000\0SEQNUM=12\0"
        );
        assert_eq!(d.sysname(), "0000:00:02.0");
        // A bound driver missing from the file is still reported, once.
        let d = Device {
            vars: Vars::default(),
            ..d
        };
        assert_eq!(d.to_uevent(Action::Add, 1).unwrap().driver(), Some("i915"));
    }

    proptest! {
        #[test]
        fn any_uevent_file_parses_without_panic(text in "\\PC{0,200}") {
            let (vars, _) = parse_uevent_file(&text);
            let pairs: Vec<_> = vars.iter().collect();
            for (k, _) in &pairs {
                prop_assert!(!k.is_empty() && !k.contains('='));
            }
            // The compact form gives back what it was built from.
            prop_assert_eq!(&Vars::from_pairs(pairs.iter().copied()), &vars);
            prop_assert_eq!(pairs.len(), vars.len());
        }
    }
}
