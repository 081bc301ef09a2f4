//! Fuzzes the mdev.conf parser: arbitrary text never panics, errors name an input line, and
//! every parsed configuration can be evaluated for a device.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (conf, errors) = uevd_rules::mdev::parse(text, "mdev.conf");
    let lines = text.split('\n').count() as u32;
    for e in &errors {
        assert!(e.line <= lines, "{e}");
    }
    let env = |k: &str| (k == "MODALIAS").then_some("usb:v1234");
    let outcomes = conf.evaluate("input/event3", Some((13, 67)), &env);
    assert!(!outcomes.is_empty());
});
