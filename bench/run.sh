#!/usr/bin/env bash
# Runs the side-by-side daemon benchmarks (uevd vs busybox mdev vs systemd-udevd) inside a
# private mount + network namespace: the peers get tmpfs /dev and /run there, and injected
# uevents never reach the host. Needs root, busybox and udev (installed below if missing, with
# service start-up disabled so no udevd starts on the host).
#   bench/run.sh            full run (100k-device tree, 100k-event bursts, 1M-event soak)
#   bench/run.sh --quick    smaller sizes, for a smoke test
#   bench/run.sh --only coldplug|throughput|latency|memory|rules    one section
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v busybox >/dev/null || ! command -v udevadm >/dev/null; then
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -qq && apt-get install -y -qq busybox udev >/dev/null
fi
cargo build --release -q -p uevd -p uevd-bench
# The static musl build (the daemon's build, see the README) is measured beside the glibc one
# where it can be built; rustup fetches the target's standard library once.
static=()
musl=x86_64-unknown-linux-musl
if rustup target list --installed 2>/dev/null | grep -qx $musl || rustup target add $musl >/dev/null 2>&1; then
    cargo build --profile small -q -p uevd --target $musl
    static=(env UEVD_BENCH_STATIC="$PWD/target/$musl/small/uevd")
fi
exec "${static[@]}" env UEVD_BENCH_NAMESPACES=1 unshare --mount --net --propagation private \
    target/release/uevd-bench "$PWD/target/release/uevd" "$@"
