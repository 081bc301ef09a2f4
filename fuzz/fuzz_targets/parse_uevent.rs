//! Fuzzes the kernel uevent parser: arbitrary bytes never panic, and every accepted message
//! keeps the parser's promises (lossless round trip, last duplicate wins, typed accessors agree
//! with the raw fields).
#![no_main]

use libfuzzer_sys::fuzz_target;
use uevd_wire::Uevent;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = Uevent::parse(data) else { return };
    assert_eq!(ev.as_bytes(), data);
    assert_eq!(ev.to_bytes(), data);
    let again = Uevent::parse(&ev.to_bytes()).expect("re-parse of serialised event");
    assert_eq!(again, ev);

    // Every accessor is callable.
    let _ = (ev.action(), ev.devpath(), ev.devpath_old(), ev.subsystem(), ev.devname());
    let _ = (ev.devtype(), ev.devnum(), ev.ifindex(), ev.driver(), ev.synth_uuid());
    let _ = ev.synth_args().count();
    let _ = ev.header();
    assert!(!ev.is_empty());

    // Lookups return the last occurrence of each key.
    let fields: Vec<(&str, &[u8])> = ev.iter().collect();
    assert_eq!(fields.len(), ev.len());
    for (i, (key, _)) in fields.iter().enumerate() {
        let last = fields[i..].iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v);
        assert_eq!(ev.get_bytes(key), last, "key {key}");
        assert_eq!(ev.get(key), last.and_then(|v| std::str::from_utf8(v).ok()), "key {key}");
    }
    // The cached numbers agree with the last MAJOR/MINOR/IFINDEX fields.
    let number = |key: &str| ev.get(key).map(|v| v.parse::<u32>().expect("numeric key"));
    assert_eq!(ev.devnum(), number("MAJOR").zip(number("MINOR")));
    assert_eq!(ev.ifindex(), number("IFINDEX"));
    let seqnum = fields.iter().rev().find(|(k, _)| *k == "SEQNUM").map(|(_, v)| *v);
    let seqnum: u64 = std::str::from_utf8(seqnum.expect("SEQNUM present"))
        .expect("SEQNUM is text")
        .parse()
        .expect("SEQNUM is decimal");
    assert_eq!(ev.seqnum(), seqnum);
    assert_eq!(ev.devpath().as_bytes(), ev.get_bytes("DEVPATH").expect("DEVPATH"));
    assert_eq!(ev.action().as_str().as_bytes(), ev.get_bytes("ACTION").expect("ACTION"));
});
