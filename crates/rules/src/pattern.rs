//! Match values: `|`-separated alternatives, each a plain string or a glibc glob.
//!
//! udev classifies a match value once, when the rules are read, so that the per-event work is a
//! byte comparison for the common plain case and `fnmatch` only where a glob is written.

use crate::fnmatch::{fnmatch, is_glob};

/// One compiled match value, e.g. `sd*|nvme*` or `|foo` (the empty alternative matches an
/// empty or missing value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: Box<str>,
    alternatives: Box<[Alternative]>,
    matches_empty: bool,
    /// `SUBSYSTEM=="subsystem"` (or the old spellings `bus`/`class`) matches any of the three.
    subsystem_alias: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Alternative {
    Plain(Box<[u8]>),
    Glob(Box<[u8]>),
}

impl Pattern {
    /// Compiles a match value as written between the quotes.
    pub fn new(source: &str) -> Pattern {
        let mut alternatives = Vec::new();
        let mut matches_empty = source.is_empty();
        if !source.is_empty() {
            for alt in source.split('|') {
                if alt.is_empty() {
                    matches_empty = true;
                } else if is_glob(alt.as_bytes()) {
                    alternatives.push(Alternative::Glob(alt.as_bytes().into()));
                } else {
                    alternatives.push(Alternative::Plain(alt.as_bytes().into()));
                }
            }
        }
        Pattern {
            source: source.into(),
            alternatives: alternatives.into(),
            matches_empty,
            subsystem_alias: false,
        }
    }

    /// Compiles a `SUBSYSTEM`/`SUBSYSTEMS` value, where udev treats `subsystem`, `bus` and
    /// `class` as one word (a leftover of the sysfs layouts before 2.6.x unified them).
    pub fn new_subsystem(source: &str) -> Pattern {
        let mut pattern = Pattern::new(source);
        pattern.subsystem_alias = matches!(source, "subsystem" | "bus" | "class");
        pattern
    }

    /// The value as written in the rule.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Does `value` (`None` when the device has no such value) match? udev treats a missing
    /// value like an empty one.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        let value = value.unwrap_or_default();
        if self.subsystem_alias {
            return matches!(value, b"subsystem" | b"bus" | b"class");
        }
        if value.is_empty() && self.matches_empty {
            return true;
        }
        // A missing value is matched as "" (so `ENV{X}=="*"` matches an unset X, as in udev).
        self.alternatives.iter().any(|alt| match alt {
            Alternative::Plain(p) => **p == *value,
            Alternative::Glob(p) => fnmatch(p, value),
        })
    }

    /// Its alternatives, if every one is a literal (no glob, no empty alternative, not the
    /// `subsystem` alias): then it matches exactly those strings.
    pub fn literal_alternatives(&self) -> Option<Vec<&str>> {
        if self.matches_empty || self.subsystem_alias {
            return None;
        }
        self.alternatives
            .iter()
            .map(|alt| match alt {
                Alternative::Plain(p) => std::str::from_utf8(p).ok(),
                Alternative::Glob(_) => None,
            })
            .collect()
    }

    /// The first bytes of its alternatives, if each starts with a literal byte: a value that
    /// starts with none of them cannot match.
    pub fn first_bytes(&self) -> Option<Vec<u8>> {
        if self.matches_empty || self.subsystem_alias {
            return None;
        }
        let mut bytes: Vec<u8> = self
            .alternatives
            .iter()
            .map(|alt| match alt {
                Alternative::Plain(p) | Alternative::Glob(p) => {
                    p.first().copied().filter(|b| !is_glob(&[*b]))
                }
            })
            .collect::<Option<_>>()?;
        bytes.sort_unstable();
        bytes.dedup();
        Some(bytes)
    }

    /// Convenience for string values.
    pub fn matches_str(&self, value: Option<&str>) -> bool {
        self.matches(value.map(str::as_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_glob_and_alternatives() {
        let p = Pattern::new("sd*|nvme0n1|vd[a-c]");
        assert!(p.matches_str(Some("sda")));
        assert!(p.matches_str(Some("nvme0n1")));
        assert!(p.matches_str(Some("vdb")));
        assert!(!p.matches_str(Some("vdd")));
        assert!(!p.matches_str(Some("nvme0n1p1")));
        assert!(!p.matches_str(None));
    }

    #[test]
    fn empty_value_and_empty_alternative() {
        let empty = Pattern::new("");
        assert!(empty.matches_str(None));
        assert!(empty.matches_str(Some("")));
        assert!(!empty.matches_str(Some("x")));
        let with_empty = Pattern::new("|foo*");
        assert!(with_empty.matches_str(None));
        assert!(with_empty.matches_str(Some("foobar")));
        assert!(!with_empty.matches_str(Some("bar")));
        // udev runs globs on "" for a missing value, so `*` matches it and `x*` does not.
        assert!(Pattern::new("*").matches_str(None));
        assert!(!Pattern::new("x*").matches_str(Some("")));
        assert!(!Pattern::new("x").matches_str(None));
    }

    #[test]
    fn subsystem_aliases() {
        let p = Pattern::new_subsystem("subsystem");
        assert!(p.matches_str(Some("bus")));
        assert!(p.matches_str(Some("class")));
        assert!(!p.matches_str(Some("block")));
        assert!(Pattern::new_subsystem("block").matches_str(Some("block")));
    }
}
