//! The command line itself.

use super::util::uevd;

#[test]
fn help_and_version() {
    let out = uevd(&["--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("monitor"), "{help}");

    let out = uevd(&["--version"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("uevd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_usage_exits_2_naming_the_culprit() {
    let out = uevd(&["monitor", "--subsystem-match", "block/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid --subsystem-match \"block/\""),
        "{err}"
    );

    let out = uevd(&["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // What the kernel would refuse in a uevent write is refused before anything is written.
    for env in ["A_B=1", "A=x-y", "A="] {
        let out = uevd(&["trigger", "--dry-run", "--env", env])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{env}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("letters and digits"), "{env}: {err}");
    }
}
