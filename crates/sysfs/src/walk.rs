//! Walking `ROOT/devices`.

use crate::device::{parse_uevent_file, Device};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A sysfs tree.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

/// Why sysfs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// `ROOT/devices` cannot be listed.
    #[error("cannot read {path}: {source}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A devpath that is not an absolute, normalised path.
    #[error(
        "invalid devpath {0:?}: expected an absolute path without '.', '..' or empty components"
    )]
    BadDevpath(String),
}

/// What a walk saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Devices visited.
    pub devices: usize,
    /// Directories with a `uevent` file but no `subsystem` link (skipped).
    pub without_subsystem: usize,
    /// Directories or `uevent` files that could not be read — usually devices that vanished
    /// during the walk (skipped).
    pub unreadable: usize,
    /// Lines of `uevent` files that were not `KEY=VALUE` (skipped).
    pub bad_lines: usize,
    /// How long the walk took.
    pub elapsed: Duration,
}

fn valid_devpath(devpath: &str) -> bool {
    devpath.len() > 1
        && devpath.starts_with('/')
        && devpath[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The name a link points to (its last component), if it is a link.
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

impl Sysfs {
    /// A sysfs tree mounted (or built) at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, devpath: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.push(devpath.trim_start_matches('/'));
        p
    }

    /// The `uevent` file of `devpath` (written to make the kernel emit an event).
    pub fn uevent_path(&self, devpath: &str) -> PathBuf {
        self.path_of(devpath).join("uevent")
    }

    /// Reads one device; `None` if it is not there (vanished, no `uevent` file, or no
    /// subsystem).
    pub fn device(&self, devpath: &str) -> Result<Option<Device>, SysfsError> {
        if !valid_devpath(devpath) {
            return Err(SysfsError::BadDevpath(devpath.to_owned()));
        }
        let mut dir = self.path_of(devpath);
        let mut stats = WalkStats::default();
        Ok(read_device(&mut dir, devpath.to_owned(), &mut stats))
    }

    /// The content of attribute `name` of `devpath`, without its trailing newline; `None` if
    /// missing or unreadable (or `name` tries to leave the device directory).
    pub fn attr(&self, devpath: &str, name: &str) -> Option<String> {
        if !valid_devpath(devpath)
            || name.is_empty()
            || name.starts_with('/')
            || name.split('/').any(|c| c == "..")
        {
            return None;
        }
        let text = fs::read(self.path_of(devpath).join(name)).ok()?;
        let text = String::from_utf8_lossy(&text);
        Some(text.trim_end_matches('\n').to_owned())
    }

    /// The kernel's current uevent sequence number (`ROOT/kernel/uevent_seqnum`).
    pub fn kernel_seqnum(&self) -> Option<u64> {
        fs::read_to_string(self.root.join("kernel/uevent_seqnum"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Visits every device under `ROOT/devices`, depth first, a parent before its children,
    /// siblings in name order. Only a missing or unreadable `ROOT/devices` is an error.
    pub fn walk(&self, mut visit: impl FnMut(Device)) -> Result<WalkStats, SysfsError> {
        let start = Instant::now();
        let mut dir = self.root.join("devices");
        if let Err(source) = fs::read_dir(&dir) {
            return Err(SysfsError::Root { path: dir, source });
        }
        let mut stats = WalkStats::default();
        let mut devpath = String::from("/devices");
        walk_dir(&mut dir, &mut devpath, &mut stats, &mut visit);
        stats.elapsed = start.elapsed();
        Ok(stats)
    }
}

/// Reads the device at `dir` (restored on return).
fn read_device(dir: &mut PathBuf, devpath: String, stats: &mut WalkStats) -> Option<Device> {
    dir.push("uevent");
    let text = fs::read(&*dir);
    dir.pop();
    let text = match text {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(_) => {
            stats.unreadable += 1;
            return None;
        }
    };
    dir.push("subsystem");
    let subsystem = link_name(dir);
    dir.pop();
    let Some(subsystem) = subsystem else {
        stats.without_subsystem += 1;
        return None;
    };
    dir.push("driver");
    let driver = link_name(dir);
    dir.pop();
    let (vars, bad) = parse_uevent_file(&String::from_utf8_lossy(&text));
    stats.bad_lines += bad;
    Some(Device {
        devpath,
        subsystem,
        driver,
        vars,
    })
}

fn walk_dir(
    dir: &mut PathBuf,
    devpath: &mut String,
    stats: &mut WalkStats,
    visit: &mut impl FnMut(Device),
) {
    let entries = match fs::read_dir(&*dir) {
        Ok(e) => e,
        Err(_) => {
            stats.unreadable += 1;
            return;
        }
    };
    let mut subdirs: Vec<Box<OsStr>> = Vec::new();
    let mut has_uevent = false;
    for entry in entries.flatten() {
        // file_type() does not follow links: sysfs's many links are never entered.
        let Ok(ft) = entry.file_type() else { continue };
        let name = entry.file_name();
        if ft.is_dir() {
            subdirs.push(name.into_boxed_os_str());
        } else if ft.is_file() && name == "uevent" {
            has_uevent = true;
        }
    }
    if has_uevent {
        if let Some(device) = read_device(dir, devpath.clone(), stats) {
            stats.devices += 1;
            visit(device);
        }
    }
    subdirs.sort_unstable();
    for name in subdirs {
        let Some(name_str) = std::str::from_utf8(name.as_bytes()).ok() else {
            stats.unreadable += 1;
            continue;
        };
        let len = devpath.len();
        devpath.push('/');
        devpath.push_str(name_str);
        dir.push(&*name);
        walk_dir(dir, devpath, stats, visit);
        dir.pop();
        devpath.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A tiny hand-made tree: two devices, a link loop, a device without subsystem.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for (dir, uevent, subsystem) in [
            ("devices/platform/a", "X=1\n", Some("platform")),
            (
                "devices/platform/a/b",
                "MAJOR=4\nMINOR=1\nDEVNAME=b\n",
                Some("tty"),
            ),
            ("devices/platform/nosub", "", None),
        ] {
            fs::create_dir_all(r.join(dir)).unwrap();
            fs::write(r.join(dir).join("uevent"), uevent).unwrap();
            if let Some(s) = subsystem {
                fs::create_dir_all(r.join("class").join(s)).unwrap();
                symlink(r.join("class").join(s), r.join(dir).join("subsystem")).unwrap();
            }
        }
        // Links that would loop forever if followed.
        symlink(r.join("devices"), r.join("devices/platform/a/loop")).unwrap();
        symlink("../../..", r.join("devices/platform/a/b/device")).unwrap();
        fs::create_dir_all(r.join("kernel")).unwrap();
        fs::write(r.join("kernel/uevent_seqnum"), "4242\n").unwrap();
        fs::write(r.join("devices/platform/a/b/dev"), "4:1\n").unwrap();
        t
    }

    #[test]
    fn walks_devices_parents_first_without_following_links() {
        let t = tree();
        let sys = Sysfs::new(t.path());
        let mut seen = Vec::new();
        let stats = sys.walk(|d| seen.push((d.devpath, d.subsystem))).unwrap();
        assert_eq!(
            seen,
            [
                ("/devices/platform/a".to_string(), "platform".to_string()),
                ("/devices/platform/a/b".to_string(), "tty".to_string())
            ]
        );
        assert_eq!(
            (stats.devices, stats.without_subsystem, stats.unreadable),
            (2, 1, 0)
        );
        assert_eq!(sys.kernel_seqnum(), Some(4242));
        assert_eq!(
            sys.attr("/devices/platform/a/b", "dev").as_deref(),
            Some("4:1")
        );
        assert_eq!(
            sys.attr("/devices/platform/a/b", "../../../kernel/uevent_seqnum"),
            None
        );
        let b = sys.device("/devices/platform/a/b").unwrap().unwrap();
        assert_eq!(b.get("DEVNAME"), Some("b"));
        assert_eq!(sys.device("/devices/platform/nosub").unwrap(), None);
        assert_eq!(sys.device("/devices/gone").unwrap(), None);
        assert!(matches!(
            sys.device("/devices/../etc"),
            Err(SysfsError::BadDevpath(_))
        ));
        assert_eq!(
            sys.uevent_path("/devices/platform/a"),
            t.path().join("devices/platform/a/uevent")
        );
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let e = Sysfs::new("/nonexistent-uevd").walk(|_| {}).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent-uevd/devices"),
            "{e}"
        );
    }

    #[test]
    fn the_real_sysfs() {
        let sys = Sysfs::new("/sys");
        let mut seen = std::collections::HashSet::new();
        let mut loop0 = None;
        sys.walk(|d| {
            // Every parent that is itself a device came first.
            let mut parent = d.devpath.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                parent = p;
                if p.len() <= "/devices".len() {
                    break;
                }
                if Path::new("/sys").join(&p[1..]).join("uevent").is_file()
                    && Path::new("/sys").join(&p[1..]).join("subsystem").exists()
                {
                    assert!(
                        seen.contains(p),
                        "{} visited before its parent {p}",
                        d.devpath
                    );
                }
            }
            if d.devpath == "/devices/virtual/block/loop0" {
                loop0 = Some(d.clone());
            }
            seen.insert(d.devpath);
        })
        .unwrap();
        assert!(seen.len() > 10, "only {} devices in /sys", seen.len());
        if let Some(d) = loop0 {
            assert_eq!(d.subsystem, "block");
            assert_eq!(d.get("MAJOR"), Some("7"));
        }
    }
}
