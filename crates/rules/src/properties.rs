//! An ordered `KEY=VALUE` list kept in one buffer.
//!
//! Every event and every device record carries a dozen or two properties. As a vector of
//! `(String, String)` that is two allocations per property, made and freed on every event and
//! kept for every device; here it is two allocations per list (the text and the entry table),
//! whatever its length. Lookups scan the entries, which for tens of entries beats a map.

use std::fmt;
use std::ops::Range;

/// One property: where its key and value sit in the text. Offsets are 32-bit (half the size
/// of a record's entry table); a list's text is kept below 4 GiB by [`Properties::set`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: (u32, u32),
    value: (u32, u32),
}

impl Entry {
    fn key(self) -> Range<usize> {
        self.key.0 as usize..self.key.1 as usize
    }
    fn value(self) -> Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }
    fn len(self) -> usize {
        self.key().len() + self.value().len()
    }
}

/// The most text one list holds; a `set` that would pass it is dropped (no event or rule
/// comes near: a uevent is at most 8 KiB).
const MAX_TEXT: usize = u32::MAX as usize;

/// An ordered property list: keys are unique, kept in the order they were first set.
#[derive(Clone, Default)]
pub struct Properties {
    text: String,
    entries: Vec<Entry>,
    /// Bytes of `text` no entry refers to any more (replaced values, removed entries).
    dead: usize,
}

impl Properties {
    /// Builds from pairs, keeping the last value of a repeated key.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Properties {
        let pairs = pairs.into_iter();
        let mut p = Properties::with_capacity(pairs.size_hint().0, 0);
        for (k, v) in pairs {
            p.set(k.as_ref(), v.as_ref());
        }
        p
    }

    /// An empty list with room for `entries` properties and `text` bytes of keys and values,
    /// so a list built in one go allocates twice.
    pub fn with_capacity(entries: usize, text: usize) -> Properties {
        Properties {
            text: String::with_capacity(text),
            entries: Vec::with_capacity(entries),
            dead: 0,
        }
    }

    fn find(&self, key: &str) -> Option<usize> {
        // Lengths first: most keys differ in length, and that needs no text access.
        let (key, text) = (key.as_bytes(), self.text.as_bytes());
        self.entries.iter().position(|e| {
            (e.key.1 - e.key.0) as usize == key.len() && text.get(e.key()) == Some(key)
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|i| &self.text[self.entries[i].value()])
    }

    /// Appends `parts` as one string; its offsets. The caller checked the length.
    fn push_text(&mut self, parts: &[&str]) -> (u32, u32) {
        let start = self.text.len() as u32;
        for part in parts {
            self.text.push_str(part);
        }
        (start, self.text.len() as u32)
    }

    /// Sets `key` (an empty value is a value: only a literally empty `ENV{KEY}=""` removes).
    pub fn set(&mut self, key: &str, value: impl AsRef<str>) {
        self.set_joined(key, &[value.as_ref()]);
    }

    /// Sets `key` to the concatenation of `parts` (`/dev/` + a name, say) without building
    /// the value first.
    pub fn set_joined(&mut self, key: &str, parts: &[&str]) {
        let value_len: usize = parts.iter().map(|p| p.len()).sum();
        if self.text.len() + key.len() + value_len > MAX_TEXT {
            return;
        }
        match self.find(key) {
            Some(i) => {
                let old = self.entries[i].value();
                if equals_joined(&self.text[old.clone()], parts) {
                    return;
                }
                self.dead += old.len();
                self.entries[i].value = self.push_text(parts);
                self.compact_if_wasteful();
            }
            None => {
                let key = self.push_text(&[key]);
                let value = self.push_text(parts);
                self.entries.push(Entry { key, value });
            }
        }
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        if let Some(i) = self.find(key) {
            self.dead += self.entries.remove(i).len();
            self.compact_if_wasteful();
        }
    }

    /// Keeps only the properties `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let text = &self.text;
        let mut dead = 0;
        self.entries.retain(|e| {
            let kept = keep(&text[e.key()], &text[e.value()]);
            if !kept {
                dead += e.len();
            }
            kept
        });
        self.dead += dead;
        self.compact_if_wasteful();
    }

    /// A compact copy holding only the properties `keep` accepts (one pass, two allocations;
    /// cheaper than `clone` then [`Properties::retain`]).
    pub fn filtered(&self, mut keep: impl FnMut(&str, &str) -> bool) -> Properties {
        let mut out = Properties::with_capacity(self.entries.len(), self.text.len() - self.dead);
        for (k, v) in self.iter() {
            if keep(k, v) {
                // Keys are unique here already: no lookup needed.
                let key = out.push_text(&[k]);
                let value = out.push_text(&[v]);
                out.entries.push(Entry { key, value });
            }
        }
        out
    }

    /// Rewrites the text without dead bytes once they are more than half of it, so a list
    /// that is edited over and over stays bounded.
    fn compact_if_wasteful(&mut self) {
        if self.dead < 64 || self.dead * 2 < self.text.len() {
            return;
        }
        let mut text = String::with_capacity(self.text.len() - self.dead);
        for e in &mut self.entries {
            // Compaction only shrinks the text, so the offsets still fit.
            let start = text.len() as u32;
            text.push_str(&self.text[e.key()]);
            let mid = text.len() as u32;
            text.push_str(&self.text[e.value()]);
            *e = Entry {
                key: (start, mid),
                value: (mid, text.len() as u32),
            };
        }
        self.text = text;
        self.dead = 0;
    }

    /// All pairs, in the order they were first set.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator {
        self.entries
            .iter()
            .map(|e| (&self.text[e.key()], &self.text[e.value()]))
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `text` is the concatenation of `parts`.
fn equals_joined(text: &str, parts: &[&str]) -> bool {
    let mut rest = text;
    for part in parts {
        match rest.strip_prefix(part) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Properties {}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Properties {
        Properties::from_pairs(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn set_replace_remove_keep_first_set_order() {
        let mut p = Properties::from_pairs([("A", "1"), ("B", "2"), ("A", "3")]);
        assert_eq!(p.iter().collect::<Vec<_>>(), [("A", "3"), ("B", "2")]);
        p.set("C", "");
        assert_eq!(p.get("C"), Some(""));
        p.remove("A");
        assert_eq!(p.iter().collect::<Vec<_>>(), [("B", "2"), ("C", "")]);
        assert_eq!(p.get("A"), None);
        p.retain(|k, _| k != "B");
        assert_eq!(p.iter().collect::<Vec<_>>(), [("C", "")]);
    }

    #[test]
    fn filtered_copies_keep_order_and_drop_dead_text() {
        let mut p = Properties::from_pairs([("A", "1"), ("SEQNUM", "7"), ("B", "2")]);
        p.set("A", "replaced");
        let f = p.filtered(|k, _| k != "SEQNUM");
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            [("A", "replaced"), ("B", "2")]
        );
        assert_eq!(f.dead, 0);
        assert_eq!(f.text.len(), "Areplaced".len() + "B2".len());
    }

    #[test]
    fn joined_values_are_one_value() {
        let mut p = Properties::with_capacity(2, 32);
        p.set_joined("DEVNAME", &["/dev/", "sda"]);
        assert_eq!(p.get("DEVNAME"), Some("/dev/sda"));
        let before = p.text.len();
        p.set("DEVNAME", "/dev/sda");
        assert_eq!(p.text.len(), before, "an equal value is not stored again");
        p.set_joined("DEVNAME", &["/dev/", "sd", "b"]);
        assert_eq!(p.get("DEVNAME"), Some("/dev/sdb"));
        p.set_joined("EMPTY", &[]);
        assert_eq!(p.get("EMPTY"), Some(""));
    }

    #[test]
    fn repeated_edits_stay_bounded() {
        let mut p = Properties::default();
        p.set("KEEP", "x");
        for i in 0..10_000 {
            p.set("N", i.to_string());
            p.set(&format!("T{}", i % 3), "value");
            p.remove(&format!("T{}", (i + 1) % 3));
        }
        assert_eq!(p.get("N"), Some("9999"));
        assert_eq!(p.get("KEEP"), Some("x"));
        assert!(p.text.len() < 256, "text grew to {} bytes", p.text.len());
    }

    #[test]
    fn equality_ignores_the_buffer_layout() {
        let mut a = Properties::from_pairs([("A", "1"), ("B", "2")]);
        a.set("A", "9");
        a.set("A", "1");
        let b = Properties::from_pairs([("A", "1"), ("B", "2")]);
        assert_eq!(a, b);
        assert_ne!(a, Properties::from_pairs([("B", "2"), ("A", "1")]));
    }

    proptest! {
        /// Any sequence of edits gives what a plain vector of pairs gives.
        #[test]
        fn behaves_like_a_vector_of_pairs(
            ops in proptest::collection::vec((0u8..3, "[A-D]", ".{0,12}"), 0..200)
        ) {
            let mut p = Properties::default();
            let mut model: Vec<(String, String)> = Vec::new();
            for (op, key, value) in ops {
                match op {
                    0 | 1 => {
                        p.set(&key, &value);
                        match model.iter_mut().find(|(k, _)| *k == key) {
                            Some(slot) => slot.1 = value,
                            None => model.push((key, value)),
                        }
                    }
                    _ => {
                        p.remove(&key);
                        model.retain(|(k, _)| *k != key);
                    }
                }
                let got: Vec<(String, String)> =
                    p.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                prop_assert_eq!(&got, &model);
            }
        }
    }
}
