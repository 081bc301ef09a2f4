//! Fuzzes the parser of sysfs `uevent` files (what coldplug and resync read): arbitrary text
//! never panics, every kept pair has a key the kernel could write, and the compact form gives
//! back exactly the pairs it was built from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uevd_sysfs::{parse_uevent_file, Vars};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (vars, skipped) = parse_uevent_file(&text);
    let pairs: Vec<(&str, &str)> = vars.iter().collect();
    assert_eq!(pairs.len(), vars.len());
    let lines = text.lines().filter(|l| !l.is_empty()).count();
    assert_eq!(pairs.len() + skipped, lines);
    for (k, v) in &pairs {
        assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b'='));
        assert!(!v.contains('\n'));
        let last = pairs.iter().rev().find(|(k2, _)| k2 == k).map(|(_, v)| *v);
        assert_eq!(vars.get(k), last);
    }
    assert_eq!(Vars::from_pairs(pairs.iter().copied()), vars);
});
