//! `uevd monitor --kernel` as a real process, fed by injected events.

use super::util::{spawn, wait_listening, TIMEOUT};
use rustix::process::Signal;
use std::time::Duration;
use uevd_testkit::{burst, event, in_private_netns, unique, Action, Injector};

#[test]
fn property_output_shows_what_was_injected() {
    in_private_netns(|| {
        let mut m = spawn(&["monitor", "--kernel", "--property"]);
        let inj = Injector::open().unwrap();
        let tag = unique("prop");
        wait_listening(&mut m, &inj, &tag);

        let devpath = format!("/devices/virtual/{tag}/widget0");
        let payload = event(Action::Add, &devpath, &tag)
            .var("DEVNAME", "widget0")
            .var("MAJOR", "240")
            .var("MINOR", "7")
            .var("ODD", "spaces and = signs")
            .to_bytes();
        inj.send(&payload).unwrap();

        let head = m
            .wait_for_stdout(TIMEOUT, &format!("{devpath} ({tag})"))
            .unwrap_or_else(|| panic!("event not printed\n{}", m.transcript()));
        assert!(head.starts_with("KERNEL["), "{head}");
        assert!(head.contains("] add      /devices/virtual/"), "{head}");
        let props = m.stdout_until(TIMEOUT, str::is_empty);
        assert_eq!(
            props[..7],
            [
                "ACTION=add".to_string(),
                format!("DEVPATH={devpath}"),
                format!("SUBSYSTEM={tag}"),
                "DEVNAME=widget0".into(),
                "MAJOR=240".into(),
                "MINOR=7".into(),
                "ODD=spaces and = signs".into(),
            ],
            "{}",
            m.transcript()
        );
        assert!(props[7].starts_with("SEQNUM="), "{props:?}");
        assert_eq!(props[8], "", "blank line ends the event");

        m.signal(Signal::TERM).unwrap();
        let status = m.wait_exit(TIMEOUT).expect("exits on SIGTERM");
        assert!(status.success(), "{status}\n{}", m.transcript());
    })
    .unwrap();
}

#[test]
fn json_output_and_subsystem_filter() {
    in_private_netns(|| {
        let tag = unique("json");
        let other = unique("other");
        let mut m = spawn(&[
            "monitor",
            "--kernel",
            "--json",
            "--subsystem-match",
            &tag,
            "--subsystem-match",
            "block/disk",
        ]);
        let inj = Injector::open().unwrap();
        wait_listening(&mut m, &inj, &tag);

        let ignored = event(Action::Add, &format!("/devices/virtual/{other}/x"), &other).to_bytes();
        let wanted = event(Action::Remove, &format!("/devices/virtual/{tag}/y"), &tag)
            .var("DEVNAME", "y")
            .to_bytes();
        inj.send_all(&[ignored, wanted]).unwrap();

        let lines = m.stdout_until(TIMEOUT, |l| l.contains("/y\""));
        let objects: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let last = objects.last().expect("event printed");
        assert_eq!(last["action"], "remove");
        assert_eq!(last["subsystem"], tag.as_str());
        assert_eq!(last["properties"]["DEVNAME"], "y");
        assert!(last["seqnum"].as_u64().unwrap() > 0);
        assert_eq!(
            last["properties"]["SEQNUM"].as_str().unwrap(),
            last["seqnum"].to_string()
        );
        assert!(
            objects.iter().all(|o| o["subsystem"] != other.as_str()),
            "filtered subsystem printed: {lines:?}"
        );

        m.signal(Signal::INT).unwrap();
        assert!(m.wait_exit(TIMEOUT).expect("exits on SIGINT").success());
    })
    .unwrap();
}

#[test]
fn overflow_is_reported_and_monitoring_continues() {
    in_private_netns(|| {
        let tag = unique("ovf");
        let mut m = spawn(&["monitor", "--kernel", "--recv-buffer", "1"]);
        let inj = Injector::open().unwrap();
        wait_listening(&mut m, &inj, &tag);
        // Stop the monitor while the burst goes in, so its tiny buffer must overflow.
        m.signal(Signal::STOP).unwrap();
        inj.send_all(&burst(&tag, 500)).unwrap();
        m.signal(Signal::CONT).unwrap();
        let lost = m.wait_for(
            TIMEOUT,
            |l| matches!(l, uevd_testkit::Line::Err(s) if s.contains("lost events")),
        );
        assert!(lost.is_some(), "overflow not reported\n{}", m.transcript());

        let after = format!("/devices/virtual/{tag}/after");
        std::thread::sleep(Duration::from_millis(50));
        inj.send(&event(Action::Add, &after, &tag).to_bytes())
            .unwrap();
        assert!(
            m.wait_for_stdout(TIMEOUT, &after).is_some(),
            "monitor stopped after the overflow\n{}",
            m.transcript()
        );
        m.signal(Signal::TERM).unwrap();
        assert!(m.wait_exit(TIMEOUT).expect("exits").success());
    })
    .unwrap();
}
