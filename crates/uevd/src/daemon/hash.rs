//! A fast hasher for the daemon's maps keyed by devpath.
//!
//! std's SipHash resists hash flooding by untrusted input; the daemon's keys are devpaths the
//! kernel announced (foreign senders are refused before parsing) or found in sysfs, so that
//! protection buys nothing here and SipHash was a visible share of the per-event cost. This is
//! the multiply-rotate hash rustc uses (FxHash), over eight bytes at a time.

use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, 64 bits, over `bytes`: a small hash that is the same in every run and version —
/// the database's entry checksums, and short stand-ins for names too long to use as they are.
pub fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `HashMap<K, V, FastHash>`: a map with [`FxHasher`].
pub type FastHash = BuildHasherDefault<FxHasher>;

/// FxHash: `hash = (hash.rotate_left(5) ^ word) * K` for each word of input.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The tail's length goes in its last byte, so "ab" and "ab\0" differ.
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            word[7] = rest.len() as u8;
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn maps_keyed_by_devpath_work_and_spread() {
        let mut map: HashMap<String, usize, FastHash> = HashMap::default();
        for i in 0..10_000 {
            map.insert(format!("/devices/virtual/bench/b{i}"), i);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get("/devices/virtual/bench/b1234"), Some(&1234));
        assert_eq!(map.get("/devices/virtual/bench/b10000"), None);
        // Keys that differ only past the first eight bytes, or only by trailing NULs (a str's
        // hash ends with a terminator byte), hash apart.
        let hash = |s: &str| FastHash::default().hash_one(s);
        assert_ne!(hash("/devices/a"), hash("/devices/b"));
        assert_ne!(hash("ab"), hash("ab\0"));
    }
}
