//! The kernel's uevent socket (`NETLINK_KOBJECT_UEVENT`).
//!
//! [`KernelListener`] receives uevents and trusts only the kernel (sender port 0); everything
//! that can go wrong is a [`RecvError`] whose [`Severity`] tells the caller whether to carry on,
//! resync from sysfs, or stop. [`Injector`] sends uevents *to* the kernel's socket so that it
//! re-broadcasts them exactly like its own — the basis of hermetic tests and benchmarks, and
//! guarded so it cannot run in the host's network namespace. [`rename_interface`] is the one
//! rtnetlink request uevd makes: udev rules' `NAME=` for network interfaces.
#![deny(unsafe_code)]

mod inject;
mod listener;
mod rename;

pub use inject::{InjectError, Injector};
pub use listener::{
    KernelListener, ListenError, ListenerOptions, ListenerStats, RecvError, Severity,
    DEFAULT_RECV_BUFFER, KERNEL_GROUP,
};
pub use rename::{rename_interface, valid_interface_name, RenameError};

/// `NLM_F_REQUEST`: the kernel only handles requests.
const NLM_F_REQUEST: u16 = 1;

/// A 16-byte `struct nlmsghdr` for a message of `len` bytes in all (header included); the
/// sender's port is left 0 for the kernel to fill in.
fn nlmsghdr(len: u32, kind: u16, flags: u16, seq: u32) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&len.to_ne_bytes());
    header[4..6].copy_from_slice(&kind.to_ne_bytes());
    header[6..8].copy_from_slice(&flags.to_ne_bytes());
    header[8..12].copy_from_slice(&seq.to_ne_bytes());
    header
}
