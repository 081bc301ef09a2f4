//! Fuzzes glob matching: input is `pattern NUL text`; uevd's fnmatch must agree with glibc's
//! `fnmatch(3)` (C locale, flags 0) and never panic.
#![no_main]
#![allow(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use std::ffi::CString;

fuzz_target!(|data: &[u8]| {
    let (pattern, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    if text.contains(&0) {
        return;
    }
    let ours = uevd_rules::fnmatch::fnmatch(pattern, text);
    let (p, t) = (CString::new(pattern).unwrap(), CString::new(text).unwrap());
    // SAFETY: valid NUL-terminated strings that outlive the call; fnmatch only reads them.
    let theirs = unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) } == 0;
    assert_eq!(ours, theirs, "pattern {pattern:?} text {text:?}");
});
