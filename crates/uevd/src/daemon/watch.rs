//! `OPTIONS+="watch"`: when a program that opened a watched node for writing closes it (a
//! partitioning tool, `mkfs`), ask the kernel for a synthetic `change` so the rules re-read the
//! device.
//!
//! The request uses the enhanced form `change <uuid> UDEVWATCH=1`, so the resulting event
//! carries `SYNTH_UUID` and cannot be mistaken for a genuine one. (The kernel refuses `_` in
//! synthetic keys, so `UDEV_WATCH=1` cannot be written; the daemon adds
//! `SYNTH_ARG_UDEV_WATCH=1` itself when an event with a UUID it issued comes back.)
//! The watch flag is kept in each device's database record, so watches survive a restart.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::inotify;

use super::db::DeviceRecord;

/// The inotify watches on device nodes.
pub struct NodeWatches {
    fd: OwnedFd,
    dev: PathBuf,
    sysfs: PathBuf,
    by_wd: HashMap<i32, String>,
    by_devpath: HashMap<String, (i32, String)>,
}

impl AsFd for NodeWatches {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl NodeWatches {
    /// Watches nodes under `dev`; synthetic events are requested through `sysfs`.
    pub fn new(dev: &Path, sysfs: &Path) -> io::Result<NodeWatches> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        Ok(NodeWatches {
            fd,
            dev: dev.to_path_buf(),
            sysfs: sysfs.to_path_buf(),
            by_wd: HashMap::new(),
            by_devpath: HashMap::new(),
        })
    }

    /// How many nodes are watched.
    pub fn len(&self) -> usize {
        self.by_devpath.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.by_devpath.is_empty()
    }

    /// Brings the watch of `devpath` in line with its record (`None`: the device is gone).
    pub fn update(&mut self, devpath: &str, record: Option<&DeviceRecord>) -> io::Result<()> {
        let want = record
            .filter(|r| r.watch)
            .and_then(|r| r.node.as_ref())
            .map(|n| n.spec.path.as_str().to_owned());
        let have = self.by_devpath.get(devpath).map(|(_, node)| node.clone());
        if want == have {
            return Ok(());
        }
        if let Some((wd, _)) = self.by_devpath.remove(devpath) {
            self.by_wd.remove(&wd);
            // The watch is gone already if the node was deleted.
            let _ = inotify::remove_watch(&self.fd, wd);
        }
        if let Some(node) = want {
            let wd = inotify::add_watch(
                &self.fd,
                self.dev.join(&node),
                inotify::WatchFlags::CLOSE_WRITE | inotify::WatchFlags::DONT_FOLLOW,
            )?;
            // Two devices cannot share a node, but a replaced node can reuse a wd.
            if let Some(old) = self.by_wd.insert(wd, devpath.to_owned()) {
                self.by_devpath.remove(&old);
            }
            self.by_devpath.insert(devpath.to_owned(), (wd, node));
        }
        Ok(())
    }

    /// Reads pending inotify events; returns the devpaths whose node a writer closed.
    pub fn closed_after_write(&mut self) -> Vec<String> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut out = Vec::new();
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    let wd = event.wd();
                    if event.events().contains(inotify::ReadFlags::IGNORED) {
                        if let Some(devpath) = self.by_wd.remove(&wd) {
                            self.by_devpath.remove(&devpath);
                        }
                        continue;
                    }
                    if let Some(devpath) = self.by_wd.get(&wd) {
                        if !out.contains(devpath) {
                            out.push(devpath.clone());
                        }
                    }
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// Asks the kernel to announce `devpath` again: writes `change <uuid> UDEVWATCH=1` to its
    /// `uevent` file.
    pub fn request_change(&self, devpath: &str, uuid: &str) -> io::Result<()> {
        let path = self
            .sysfs
            .join(devpath.trim_start_matches('/'))
            .join("uevent");
        std::fs::write(path, format!("change {uuid} UDEVWATCH=1"))
    }
}

/// A random UUID from the kernel.
pub fn new_uuid() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/uuid")?
        .trim()
        .to_owned())
}
