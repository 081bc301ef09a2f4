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
