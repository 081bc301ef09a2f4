//! Property tests of the uevent parser: arbitrary bytes never panic, and every accepted
//! message serialises back to exactly the bytes it came from.

use proptest::prelude::*;
use uevd_wire::{Action, Uevent, UeventBuilder};

fn action() -> impl Strategy<Value = Action> {
    proptest::sample::select(Action::ALL.to_vec())
}

fn devpath() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9:._-]{0,8}[a-z0-9]", 1..6)
        .prop_map(|parts| format!("/devices/{}", parts.join("/")))
}

fn key() -> impl Strategy<Value = String> {
    "[A-Z_][A-Z0-9_]{0,15}"
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..40)
}

prop_compose! {
    fn valid_event()(
        action in action(),
        devpath in devpath(),
        subsystem in "[a-z][a-z0-9_-]{0,12}",
        extra in proptest::collection::vec((key(), value()), 0..20),
        seqnum in any::<u64>(),
    ) -> Vec<u8> {
        let mut b = UeventBuilder::new(action, &devpath, &subsystem);
        for (k, v) in &extra {
            // Keys the parser interprets have typed values; keep them out of the random mix
            // so the generated event is valid by construction.
            if !matches!(k.as_str(), "ACTION" | "DEVPATH" | "DEVPATH_OLD" | "SUBSYSTEM" | "SEQNUM"
                | "DEVNAME" | "DEVTYPE" | "MAJOR" | "MINOR" | "DRIVER" | "SYNTH_UUID" | "IFINDEX") {
                b.var(k, v);
            }
        }
        b.seqnum(seqnum);
        b.to_bytes()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(ev) = Uevent::parse(&bytes) {
            prop_assert_eq!(ev.to_bytes(), bytes.clone());
            prop_assert_eq!(Uevent::from_vec(bytes), Ok(ev));
        } else {
            prop_assert!(Uevent::from_vec(bytes).is_err());
        }
    }

    #[test]
    fn fields_read_the_same_from_either_end(raw in valid_event()) {
        let ev = Uevent::parse(&raw).expect("generated event is valid");
        let forward: Vec<_> = ev.iter().collect();
        let mut backward: Vec<_> = ev.iter().rev().collect();
        backward.reverse();
        prop_assert_eq!(&forward, &backward);
        prop_assert_eq!(forward.len(), ev.len());
        prop_assert_eq!(ev.iter().len(), ev.len());
        // Both ends at once meet in the middle without losing or repeating a field.
        let mut both = ev.iter();
        let (mut front, mut back) = (Vec::new(), Vec::new());
        loop {
            match (both.next(), both.next_back()) {
                (Some(f), Some(b)) => { front.push(f); back.push(b); }
                (Some(f), None) => { front.push(f); break; }
                _ => break,
            }
        }
        back.reverse();
        front.extend(back);
        prop_assert_eq!(front, forward.clone());
        // A repeated key reads as its last value, as the kernel's SEQNUM must.
        for (k, _) in &forward {
            let last = forward.iter().rev().find(|(key, _)| key == k).map(|(_, v)| *v);
            prop_assert_eq!(ev.get_bytes(k), last);
        }
    }

    #[test]
    fn mutated_valid_events_never_panic(
        raw in valid_event(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = raw;
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(ev) = Uevent::parse(&bytes) {
            prop_assert_eq!(ev.to_bytes(), bytes);
        }
    }

    #[test]
    fn valid_events_round_trip(raw in valid_event()) {
        let ev = Uevent::parse(&raw).expect("generated event is valid");
        prop_assert_eq!(ev.as_bytes(), &raw[..]);
        prop_assert_eq!(ev.to_bytes(), raw.clone());
        // Rebuilding from the typed view gives the same bytes too.
        let mut b = UeventBuilder::new(ev.action(), ev.devpath(), ev.subsystem());
        for (k, v) in ev.iter().skip(3) {
            b.var(k, v);
        }
        prop_assert_eq!(b.to_bytes(), raw);
    }

    #[test]
    fn truncation_is_always_refused(raw in valid_event(), cut in 1usize..64) {
        let cut = cut.min(raw.len() - 1);
        let short = &raw[..raw.len() - cut];
        // A prefix that still ends on a NUL is a complete (shorter) message; any other
        // prefix must be refused.
        if short.last() != Some(&0) {
            prop_assert!(Uevent::parse(short).is_err());
        }
    }
}
