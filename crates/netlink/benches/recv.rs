//! The receive path: a burst of injected uevents received (a) by a bare `recvfrom` loop — the
//! floor — (b) by `KernelListener::recv_raw` (sender and length checks), (c) by
//! `KernelListener::recv` (checks + parse). Target: (c) within 10% of (a).
//!
//! Two setups per mode: *concurrent* (an injector thread sends while the receiver reads; the
//! injector must not be the bottleneck, so it is timed alone too) and *pre-filled* (the whole
//! burst is queued in a large receive buffer first, then the receive loop alone is timed).
//! Runs in a private network namespace (root), so nothing reaches the host:
//! `cargo bench -p uevd-netlink --bench recv` (events: `UEVD_BENCH_EVENTS`, default 100 000).
#![allow(missing_docs)]

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{self as net, AddressFamily, RecvFlags, SocketFlags, SocketType};
use std::time::Instant;
use uevd_netlink::{Injector, KernelListener, ListenerOptions};
use uevd_testkit::{event, in_private_netns, Action};

const ROUNDS: usize = 5;
/// Large enough for a 100k-event burst without overflow (the kernel doubles it).
const BUFFER: usize = 512 << 20;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Bare,
    Checked,
    Parsed,
}

/// Typical events: a char device add with a node, ~190 bytes like real ones.
fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            event(
                Action::Add,
                &format!("/devices/pci0000:00/0000:00:14.0/usb1/1-{i}/input/event{i}"),
                "input",
            )
            .var("MAJOR", "13")
            .var("MINOR", (i % 1024).to_string())
            .var("DEVNAME", format!("input/event{i}"))
            .var("DEVTYPE", "evdev")
            .to_bytes()
        })
        .collect()
}

/// The one socket a run reads (only it is bound, so the kernel copies each event once).
enum Socket {
    Bare(rustix::fd::OwnedFd),
    Listener(KernelListener),
}

impl Socket {
    fn open(mode: Mode) -> Socket {
        match mode {
            Mode::Bare => Socket::Bare(open_bare()),
            Mode::Checked | Mode::Parsed => Socket::Listener(
                KernelListener::open(&ListenerOptions {
                    recv_buffer: BUFFER,
                    nonblocking: false,
                })
                .expect("listener"),
            ),
        }
    }
}

/// Receives `n` events in `mode`; returns events/s from the first to the last receive.
fn receive(mode: Mode, n: usize, socket: &mut Socket) -> f64 {
    let mut buf = vec![0u8; 8192];
    let mut got = 0;
    let mut start = None;
    let mut checksum = 0u64;
    while got < n {
        let ok = match (mode, &mut *socket) {
            (Mode::Bare, Socket::Bare(fd)) => net::recvfrom(&*fd, &mut buf[..], RecvFlags::empty())
                .map(|(_, len, _)| checksum += len as u64)
                .is_ok(),
            (Mode::Checked, Socket::Listener(l)) => {
                matches!(l.recv_raw(), Ok(Some(b)) if { checksum += b.len() as u64; true })
            }
            (Mode::Parsed, Socket::Listener(l)) => {
                matches!(l.recv(), Ok(Some(e)) if { checksum += e.seqnum(); true })
            }
            _ => unreachable!("socket opened for its mode"),
        };
        if ok {
            start.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    std::hint::black_box(checksum);
    let secs = start.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    // The first event started the clock: n-1 intervals.
    (n - 1) as f64 / secs
}

fn open_bare() -> rustix::fd::OwnedFd {
    let fd = net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::KOBJECT_UEVENT),
    )
    .expect("socket");
    net::sockopt::set_socket_recv_buffer_size_force(&fd, BUFFER).expect("SO_RCVBUFFORCE (root)");
    net::bind(&fd, &SocketAddrNetlink::new(0, 1)).expect("bind");
    fd
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo's bench discovery
    }
    let n: usize = std::env::var("UEVD_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    in_private_netns(|| run(n)).expect("private network namespace (run as root)");
}

fn run(n: usize) {
    let events = payloads(n);
    let inj = Injector::open().expect("injector");
    println!("receive path, {n} events per run, median of {ROUNDS} runs\n");

    // The injector alone, with one listener bound (the kernel skips broadcasts nobody hears)
    // whose queue is drained between runs by reopening it.
    let alone = median(
        (0..ROUNDS)
            .map(|_| {
                let _sink = open_bare();
                let t = Instant::now();
                inj.send_all(&events).expect("inject");
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!("| setup | mode | events/s | vs bare |\n|---|---|---|---|");
    println!("| injector alone | sendmmsg, 64 per call | {alone:.0} | |");

    for prefilled in [false, true] {
        let mut results = Vec::new();
        for mode in [Mode::Bare, Mode::Checked, Mode::Parsed] {
            let rates: Vec<f64> = (0..ROUNDS)
                .map(|_| {
                    // A fresh socket per run: only this run's events are queued.
                    let mut socket = Socket::open(mode);
                    if prefilled {
                        inj.send_all(&events).expect("inject");
                        receive(mode, n, &mut socket)
                    } else {
                        std::thread::scope(|s| {
                            s.spawn(|| inj.send_all(&events).expect("inject"));
                            receive(mode, n, &mut socket)
                        })
                    }
                })
                .collect();
            results.push((mode, median(rates)));
        }
        let floor = results[0].1;
        let setup = if prefilled {
            "pre-filled buffer"
        } else {
            "concurrent injection"
        };
        for (mode, rate) in results {
            let what = match mode {
                Mode::Bare => "bare recvfrom (floor)",
                Mode::Checked => "listener: sender + length checked",
                Mode::Parsed => "listener: checked + parsed",
            };
            println!(
                "| {setup} | {what} | {rate:.0} | {:+.1}% |",
                (rate / floor - 1.0) * 100.0
            );
        }
    }
}
