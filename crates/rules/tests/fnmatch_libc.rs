//! `uevd_rules::fnmatch` against the C library's `fnmatch(3)` (glibc, C locale) as the oracle.
#![allow(unsafe_code)]

use proptest::prelude::*;
use std::ffi::CString;
use uevd_rules::fnmatch::fnmatch;

fn libc_fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let p = CString::new(pattern).expect("no NUL");
    let t = CString::new(text).expect("no NUL");
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; fnmatch
    // only reads them.
    unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) == 0 }
}

fn check(pattern: &[u8], text: &[u8]) {
    assert_eq!(
        fnmatch(pattern, text),
        libc_fnmatch(pattern, text),
        "pattern {:?} text {:?}",
        String::from_utf8_lossy(pattern),
        String::from_utf8_lossy(text)
    );
}

/// Pieces a pattern is built from: the special characters, bracket syntax, ordinary bytes.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"*".to_vec()),
        Just(b"?".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"!".to_vec()),
        Just(b"^".to_vec()),
        Just(b"-".to_vec()),
        Just(b"\\".to_vec()),
        Just(b":".to_vec()),
        Just(b"=".to_vec()),
        Just(b".".to_vec()),
        Just(b"/".to_vec()),
        Just(b"[:alpha:]".to_vec()),
        Just(b"[:digit:]".to_vec()),
        Just(b"[:space:]".to_vec()),
        Just(b"[:nope:]".to_vec()),
        Just(b"[=a=]".to_vec()),
        Just(b"[.b.]".to_vec()),
        Just(b"[.ab.]".to_vec()),
        Just(vec![0xc3]),
        Just(vec![0xff]),
        proptest::sample::select(b"abcxyz019 \t".to_vec()).prop_map(|c| vec![c]),
    ]
}

fn pattern() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(piece(), 0..10).prop_map(|v| v.concat())
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::sample::select(b"abcxyz019[]-!^\\:=./* \t\xc3\xff".to_vec()),
        0..10,
    )
}

proptest! {
    // PROPTEST_CASES=1000000 for a long run; the default keeps CI quick.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4096)
    ))]

    #[test]
    fn agrees_with_libc(p in pattern(), t in text()) {
        check(&p, &t);
    }

    #[test]
    fn agrees_with_libc_when_the_text_is_built_from_the_pattern(p in pattern(), cut in 0usize..12) {
        // Texts close to the pattern exercise the matching paths, not only early mismatches.
        let t: Vec<u8> = p.iter().copied().filter(|c| !b"*?[]\\".contains(c)).take(cut).collect();
        check(&p, &t);
    }
}

#[test]
fn udev_style_table_agrees_with_libc() {
    let cases: &[(&str, &str)] = &[
        ("sd[a-z]", "sdb"),
        ("sd[a-z]", "sd1"),
        ("tty[0-9]*", "tty12"),
        ("event*", "event"),
        ("*", ""),
        ("nvme*n*", "nvme0n1p2"),
        ("[!0-9]*", "a1"),
        ("[^0-9]*", "1a"),
        ("a\\*b", "a*b"),
        ("a\\", "a\\"),
        ("[]a]", "]"),
        ("[!]a]", "b"),
        ("[[:digit:]]x", "7x"),
        ("[[:foo:]]", "f"),
        ("[a", "[a"),
        ("[a-", "a"),
        ("[a-", "[a-"),
        ("{a,b}", "a"),
        ("*/x", "a/b/x"),
        ("[[=a=]]", "a"),
        ("[[.a.]-c]", "b"),
        ("[a-]", "-"),
        ("[z-a]", "m"),
        ("[\\]]", "]"),
        ("[\\", "[\\"),
        ("[[:alpha:]", "a"),
        ("[[:alpha:", "a"),
        ("[[:", "[[:"),
        ("[a[:x", "a"),
        ("[a[=", "a"),
        ("[a[.", "a"),
        ("ttyUSB[0-9]|ttyACM[0-9]", "ttyUSB0"),
        ("*[", "a["),
        ("**a", "ba"),
        ("*?", ""),
        ("*?", "a"),
    ];
    for (p, t) in cases {
        check(p.as_bytes(), t.as_bytes());
    }
}
