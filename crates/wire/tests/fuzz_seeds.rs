//! The fuzz target's seed corpus holds realistic kernel messages; each must parse, or the
//! fuzzer starts from nothing useful.

#[test]
fn every_fuzz_seed_is_a_valid_uevent() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/parse_uevent");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Err(e) = uevd_wire::Uevent::parse(&bytes) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds");
}
