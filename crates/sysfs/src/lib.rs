//! Reading device state from a sysfs tree — `/sys`, or a fake one in tests.
//!
//! A *device* is a directory under `ROOT/devices` holding a `uevent` file and a `subsystem`
//! link (the kernel sends no uevents for devices without a subsystem). [`Sysfs::walk`] visits
//! every device, parents before children, never following the many links sysfs has, and
//! shrugs off devices that vanish mid-walk: it is what coldplug, resync and `trigger` stand on.
//! [`Sysfs::walk_batches`] shares the reading out among threads and hands devices over in
//! batches as they are read, parents first, so coldplug can process while it walks.
//! Both work relative to open directory descriptors, so the kernel never resolves a long
//! path twice.
#![forbid(unsafe_code)]

mod device;
mod walk;

pub use device::{parse_uevent_file, Device, Vars};
pub use walk::{is_below, tree_order, BatchPool, Sysfs, SysfsError, WalkStats};
