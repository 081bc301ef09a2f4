//! Every rule file Debian's `udev` package ships must parse with zero errors and zero
//! warnings (CI installs the package; see `.ci/run`).

use std::path::PathBuf;
use uevd_rules::load::{load, rule_files};
use uevd_rules::NameResolver;

/// Accepts any name: resolving users and groups is the system's business, not parsing's.
struct AnyName;
impl NameResolver for AnyName {
    fn user(&self, _: &str) -> Option<u32> {
        Some(1)
    }
    fn group(&self, _: &str) -> Option<u32> {
        Some(1)
    }
}

#[test]
fn every_shipped_udev_rule_file_parses_cleanly() {
    let dir = PathBuf::from("/usr/lib/udev/rules.d");
    let (files, _) = rule_files(std::slice::from_ref(&dir));
    assert!(
        files.len() >= 20,
        "expected Debian's udev rules in {} (apt-get install udev); found {} files",
        dir.display(),
        files.len()
    );
    let loaded = load(&[dir], &AnyName);
    let problems: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // Nothing silently dropped: every non-comment logical line became a rule.
    let logical_lines: usize = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("readable rule file");
            let mut count = 0;
            let mut continued = false;
            for line in text.lines() {
                let t = line.trim_start();
                if t.starts_with('#') {
                    continue;
                }
                if !continued && !t.trim().is_empty() {
                    count += 1;
                }
                continued = t.ends_with('\\');
            }
            count
        })
        .sum();
    assert_eq!(loaded.rules.lines.len(), logical_lines);
}
