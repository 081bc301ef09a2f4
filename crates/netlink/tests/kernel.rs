//! The listener against the real kernel, in private network namespaces (needs root).

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{self as net, AddressFamily, SendFlags, SocketFlags, SocketType};
use std::time::{Duration, Instant};
use uevd_netlink::{KernelListener, ListenerOptions, RecvError, Severity};
use uevd_testkit::{burst, event, in_private_netns, unique, Action, Injector, Uevent};

fn listener(recv_buffer: usize) -> KernelListener {
    KernelListener::open(&ListenerOptions {
        recv_buffer,
        nonblocking: true,
    })
    .expect("open listener")
}

/// Receives until `n` events under devices/virtual/`tag` arrived (ignoring stray real kernel
/// events) or 5 s passed.
fn collect(l: &mut KernelListener, tag: &str, n: usize) -> Vec<Uevent> {
    let prefix = format!("/devices/virtual/{tag}/");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match l.recv() {
            Ok(Some(ev)) if ev.devpath().starts_with(&prefix) => got.push(ev),
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    got
}

#[test]
fn injected_events_arrive_intact_and_in_order() {
    in_private_netns(|| {
        let mut l = listener(8 << 20);
        let tag = unique("order");
        let payloads = burst(&tag, 2000);
        Injector::open().unwrap().send_all(&payloads).unwrap();
        let got = collect(&mut l, &tag, payloads.len());
        assert_eq!(got.len(), payloads.len(), "every injected event arrives");
        for (i, (ev, sent)) in got.iter().zip(&payloads).enumerate() {
            // The kernel appends exactly "SEQNUM=N\0" to what was sent.
            let appended = format!("SEQNUM={}\0", ev.seqnum());
            assert_eq!(
                ev.as_bytes(),
                [&sent[..], appended.as_bytes()].concat(),
                "event {i}"
            );
            assert_eq!(ev.get("INDEX"), Some(i.to_string().as_str()));
        }
        assert!(
            got.windows(2).all(|w| w[0].seqnum() < w[1].seqnum()),
            "seqnums increase"
        );
        assert_eq!(l.stats().foreign, 0);
    })
    .unwrap();
}

#[test]
fn forged_message_from_a_user_port_is_rejected_and_counted() {
    in_private_netns(|| {
        let mut l = listener(1 << 20);
        let tag = unique("forged");
        let forged = event(Action::Add, &format!("/devices/virtual/{tag}/evil"), &tag)
            .seqnum(1)
            .to_bytes();
        // A process (not the kernel) multicasting to group 1: needs CAP_NET_ADMIN, which root
        // has in its own namespace.
        let sock = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(netlink::KOBJECT_UEVENT),
        )
        .unwrap();
        net::bind(&sock, &SocketAddrNetlink::new(0, 0)).unwrap();
        net::sendto(
            &sock,
            &forged,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 1),
        )
        .unwrap();
        // Then a genuine one, to know the forged one has been seen.
        let genuine = event(Action::Add, &format!("/devices/virtual/{tag}/good"), &tag).to_bytes();
        Injector::open().unwrap().send(&genuine).unwrap();

        let deadline = Instant::now() + Duration::from_secs(5);
        let mut rejected = None;
        loop {
            assert!(Instant::now() < deadline, "genuine event never arrived");
            match l.recv() {
                Err(e @ RecvError::ForeignSender { .. }) => {
                    assert_eq!(e.severity(), Severity::Recoverable);
                    rejected = Some(e.to_string());
                }
                Ok(Some(ev)) if ev.devpath().ends_with("/good") => break,
                Ok(Some(ev)) => assert!(!ev.devpath().ends_with("/evil"), "forged event delivered"),
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        let msg = rejected.expect("forged message reported");
        assert!(msg.contains("untrusted sender port"), "{msg}");
        assert!(!msg.contains("port 0 "), "{msg}");
        assert_eq!(l.stats().foreign, 1);
    })
    .unwrap();
}

#[test]
fn overflow_is_reported_and_the_listener_keeps_working() {
    in_private_netns(|| {
        // The smallest buffer the kernel allows holds only a few events.
        let mut l = listener(1);
        let tag = unique("overflow");
        let inj = Injector::open().unwrap();
        inj.send_all(&burst(&tag, 500)).unwrap();

        let mut overflows = 0;
        let mut received = 0;
        loop {
            match l.recv() {
                Ok(Some(_)) => received += 1,
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e.severity(), Severity::NeedsResync, "{e}");
                    assert!(e.to_string().contains("ENOBUFS"), "{e}");
                    overflows += 1;
                }
            }
        }
        assert_eq!(overflows, 1, "one overflow reported");
        assert!(
            received < 500,
            "most of the burst was lost ({received} received)"
        );
        assert_eq!(l.stats().overflows, 1);

        // After the overflow the socket still delivers new events (one at a time: even a
        // few queued events fill the kernel's minimum buffer).
        for i in 0..3 {
            let after = unique("after");
            inj.send_all(&burst(&after, 1)).unwrap();
            assert_eq!(
                collect(&mut l, &after, 1).len(),
                1,
                "event {i} after the overflow"
            );
        }
    })
    .unwrap();
}

#[test]
fn kernel_messages_that_are_not_uevents_are_refused() {
    in_private_netns(|| {
        let mut l = listener(1 << 20);
        let inj = Injector::open().unwrap();
        // libudev framing, a missing header, an unknown action — all from port 0. (Over-long
        // datagrams cannot be sent this way: the kernel drops injected uevents over 2 KiB;
        // the listener's length check is unit-tested.)
        inj.send(b"libudev\0\xfe\xed\xca\xfe\0").unwrap();
        inj.send(b"ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0")
            .unwrap();
        inj.send(b"frob@/devices/x\0ACTION=frob\0DEVPATH=/devices/x\0SUBSYSTEM=t\0")
            .unwrap();
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while errors.len() < 3 && Instant::now() < deadline {
            match l.recv() {
                Err(e) => {
                    assert_eq!(e.severity(), Severity::Recoverable);
                    errors.push(e.to_string());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                // Genuine kernel events (other tests write to loop0) may pass by.
                Ok(Some(ev)) => assert!(ev.devpath() != "/devices/x", "{ev:?} delivered"),
            }
        }
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("libudev framing"), "{}", errors[0]);
        assert!(
            errors[1].contains("missing ACTION@DEVPATH header"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].contains("unknown action \"frob\""),
            "{}",
            errors[2]
        );
        assert_eq!(l.stats().malformed, 3);
    })
    .unwrap();
}

#[test]
fn real_kernel_synthetic_event_carries_uuid_and_args() {
    const LOOP0: &str = "/sys/devices/virtual/block/loop0/uevent";
    if !std::path::Path::new(LOOP0).exists() {
        panic!("{LOOP0} is missing: load the loop module (modprobe loop) to run this test");
    }
    in_private_netns(|| {
        let mut l = listener(1 << 20);
        let uuid = format!("5c0e7a1e-0000-4000-8000-{:012x}", std::process::id());
        std::fs::write(LOOP0, format!("change {uuid} A=1")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let ev = loop {
            assert!(Instant::now() < deadline, "synthetic event never arrived");
            match l.recv() {
                Ok(Some(ev)) if ev.synth_uuid() == Some(uuid.as_str()) => break ev,
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("unexpected error: {e}"),
            }
        };
        assert_eq!(ev.action(), Action::Change);
        assert_eq!(ev.devpath(), "/devices/virtual/block/loop0");
        assert_eq!(ev.subsystem(), "block");
        assert_eq!(ev.get("SYNTH_ARG_A"), Some("1"));
        assert_eq!(ev.synth_args().collect::<Vec<_>>(), [("A", &b"1"[..])]);
        assert_eq!(ev.devnum(), Some((7, 0)));
    })
    .unwrap();
}
