//! Parsing throughput of typical kernel uevents (issue target: ≥ 2 million messages/s/core).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use uevd_wire::Uevent;

/// A `change` on loop0 as captured on this machine (the size of a typical block event).
const LOOP0: &[u8] = b"change@/devices/virtual/block/loop0\0ACTION=change\0\
DEVPATH=/devices/virtual/block/loop0\0SUBSYSTEM=block\0SYNTH_UUID=0\0DEVNAME=loop0\0\
DEVTYPE=disk\0DISKSEQ=9\0SEQNUM=4242\0MAJOR=7\0MINOR=0\0";

/// A USB input device add: longer devpath, more fields.
const INPUT: &[u8] = b"add@/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0003:046D:C52B.0003/input/input7/event5\0\
ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0003:046D:C52B.0003/input/input7/event5\0\
SUBSYSTEM=input\0MAJOR=13\0MINOR=69\0DEVNAME=input/event5\0SEQNUM=3187\0";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("loop0_change", |b| {
        b.iter(|| Uevent::parse(black_box(LOOP0)).map(|e| e.seqnum()))
    });
    group.bench_function("usb_input_add", |b| {
        b.iter(|| Uevent::parse(black_box(INPUT)).map(|e| e.seqnum()))
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
