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
    pub vars: Vec<(String, String)>,
}

impl Device {
    /// The value of `key` in the uevent file.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The last devpath component (the kernel's name for the device).
    pub fn sysname(&self) -> &str {
        self.devpath.rsplit('/').next().unwrap_or_default()
    }

    /// The event the kernel would send for this device: header, `ACTION`, `DEVPATH`,
    /// `SUBSYSTEM`, the uevent file's variables, then `SEQNUM`.
    pub fn to_uevent(&self, action: Action, seqnum: u64) -> Result<Uevent, ParseError> {
        let mut b = UeventBuilder::new(action, &self.devpath, &self.subsystem);
        for (k, v) in &self.vars {
            if !matches!(k.as_str(), "ACTION" | "DEVPATH" | "SUBSYSTEM" | "SEQNUM") {
                b.var(k, v);
            }
        }
        if let (Some(driver), None) = (&self.driver, self.get("DRIVER")) {
            b.var("DRIVER", driver);
        }
        b.seqnum(seqnum).build()
    }
}

/// Parses a `uevent` file: `KEY=VALUE` lines. Lines without `=`, with an empty key, and
/// empty lines are skipped (the kernel writes none); returns the pairs and how many were
/// skipped.
pub fn parse_uevent_file(text: &str) -> (Vec<(String, String)>, usize) {
    let mut vars = Vec::with_capacity(8);
    let mut skipped = 0;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()) => {
                vars.push((k.to_owned(), v.to_owned()))
            }
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
            vars,
            [
                ("MAJOR", "7"),
                ("MINOR", "0"),
                ("DEVNAME", "loop0"),
                ("A", "b=c")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
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
        let d = Device { vars: vec![], ..d };
        assert_eq!(d.to_uevent(Action::Add, 1).unwrap().driver(), Some("i915"));
    }

    proptest! {
        #[test]
        fn any_uevent_file_parses_without_panic(text in "\\PC{0,200}") {
            let (vars, _) = parse_uevent_file(&text);
            for (k, _) in vars {
                prop_assert!(!k.is_empty() && !k.contains('='));
            }
        }
    }
}
