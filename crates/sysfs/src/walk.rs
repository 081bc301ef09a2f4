//! Walking `ROOT/devices`.

use crate::device::{parse_uevent_file, Device};
use rustix::fs::{
    accessat, openat, readlinkat, readlinkat_raw, Access, AtFlags, FileType, Mode, OFlags, RawDir,
    CWD,
};
use std::cmp::Ordering;
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
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
        let Ok(dir) = open_dir(CWD, self.path_of(devpath)) else {
            return Ok(None);
        };
        let mut stats = WalkStats::default();
        Ok(read_device(
            dir.as_fd(),
            devpath.to_owned(),
            true,
            &mut Vec::new(),
            &mut stats,
        ))
    }

    /// Whether a device is at `devpath` now (its `uevent` file exists): one lookup, where
    /// [`Sysfs::device`] reads the device.
    pub fn has_device(&self, devpath: &str) -> bool {
        valid_devpath(devpath)
            && accessat(
                CWD,
                self.uevent_path(devpath).as_path(),
                Access::EXISTS,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_ok()
    }

    /// The content of attribute `name` of `devpath`, without its trailing newline; `None` if
    /// missing or unreadable (or `name` tries to leave the device directory). The `driver`,
    /// `subsystem` and `module` links read as the name they point to, as in udev.
    pub fn attr(&self, devpath: &str, name: &str) -> Option<String> {
        if !valid_devpath(devpath)
            || name.is_empty()
            || name.starts_with('/')
            || name.split('/').any(|c| c == "..")
        {
            return None;
        }
        let path = self.path_of(devpath).join(name);
        // As sd-device: these links read as the name they point to; other links not at all.
        if matches!(name, "driver" | "subsystem" | "module") {
            let target = fs::read_link(&path).ok()?;
            return target.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        let text = fs::read(path).ok()?;
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
        let root = self.devices_dir()?;
        let mut stats = WalkStats::default();
        walk_dir(
            root,
            "/devices".to_owned(),
            &mut Scratch::new(),
            &mut stats,
            &mut visit,
        );
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// Walks with `threads` threads (the calling one among them) and hands the devices to
    /// `deliver` in batches as they are read, so that a consumer can start on them while the
    /// walk goes on. A device is always delivered in an earlier call than any device below it
    /// (a walker hands in what it holds before it lets others read the subdirectories it
    /// found); siblings come in no particular order. `deliver` returning false stops the walk.
    ///
    /// Batch vectors come from `pool`: a consumer that gives them back there once emptied
    /// spares the walkers an allocation per batch.
    pub fn walk_batches(
        &self,
        threads: usize,
        pool: &BatchPool,
        deliver: impl Fn(Vec<Device>) -> bool + Sync,
    ) -> Result<WalkStats, SysfsError> {
        let start = Instant::now();
        let root = self.devices_dir()?;
        let mut stats = WalkStats::default();
        let work = WorkStack::new(root, "/devices", &mut stats);
        let run = || work.run(pool, &deliver);
        let others = std::thread::scope(|scope| {
            // Fewer walkers if the system cannot start them all; the calling thread is one.
            let helpers: Vec<_> = (1..threads.max(1))
                .map_while(|_| {
                    std::thread::Builder::new()
                        .name("uevd-walk".into())
                        .spawn_scoped(scope, run)
                        .ok()
                })
                .collect();
            let mine = run();
            // A walker only panics on a bug; losing its count is better than losing the walk.
            helpers
                .into_iter()
                .filter_map(|h| h.join().ok())
                .fold(mine, |mut all, s| {
                    all.add(&s);
                    all
                })
        });
        stats.add(&others);
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// `ROOT/devices`, opened: every walk works relative to directory descriptors, so the
    /// kernel resolves one name per step instead of the whole path again for each file.
    fn devices_dir(&self) -> Result<OwnedFd, SysfsError> {
        let path = self.root.join("devices");
        open_dir(CWD, &path).map_err(|e| SysfsError::Root {
            path,
            source: e.into(),
        })
    }
}

/// The order [`Sysfs::walk`] visits devices in: a parent before its children, siblings by
/// name (component by component, so `/a/b` < `/a/b/c` < `/a/b0`).
pub fn tree_order(a: &str, b: &str) -> Ordering {
    // Comparing the components in turn is comparing the bytes with `/` below every other
    // byte: where two paths first differ, a `/` (or the end) means that path's component
    // ended first. Byte by byte, without splitting: sorting a 100 000-device walk spent a
    // quarter of a second in the splitting.
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let same = common_prefix(a, b);
    let key = |c: Option<&u8>| c.map(|&c| if c == b'/' { 0 } else { u16::from(c) + 1 });
    // `None` (the end) sorts first: a path before the paths below it.
    key(a.get(same)).cmp(&key(b.get(same)))
}

/// How many leading bytes `a` and `b` share, eight at a time while they can: paths in one
/// tree share long prefixes.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let word = |s: &[u8], i: usize| s.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok());
    let mut i = 0;
    while i + 8 <= n && word(a, i) == word(b, i) {
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Whether device path `path` lies strictly below `ancestor` (`/a/b` is below `/a`, `/ab`
/// is not).
pub fn is_below(path: &str, ancestor: &str) -> bool {
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && path.as_bytes()[ancestor.len()] == b'/'
}

impl WalkStats {
    fn add(&mut self, other: &WalkStats) {
        self.devices += other.devices;
        self.without_subsystem += other.without_subsystem;
        self.unreadable += other.unreadable;
        self.bad_lines += other.bad_lines;
    }
}

/// A directory a parallel walk has still to read: the last component of `devpath`, inside
/// the open `parent`.
struct Pending {
    parent: Arc<OwnedFd>,
    devpath: String,
}

impl Pending {
    fn name(&self) -> &str {
        self.devpath.rsplit('/').next().unwrap_or_default()
    }
}

/// The directories still to be read by a parallel walk, shared by its threads.
struct WorkStack {
    state: Mutex<WorkState>,
    more: Condvar,
}

struct WorkState {
    /// Not yet read; the last one is taken first, so the walk stays close to depth first and
    /// few parent descriptors are open at a time.
    dirs: Vec<Pending>,
    /// Threads reading a directory now (and so maybe about to push more).
    busy: usize,
    /// Set when the receiver is gone: everyone stops.
    stop: bool,
}

/// The pending children of a listed directory.
fn children(listing: Listing, into: &mut Vec<Pending>) {
    if listing.subdirs.is_empty() {
        return;
    }
    let parent = Arc::new(listing.dir);
    into.extend(listing.subdirs.into_iter().map(|devpath| Pending {
        parent: Arc::clone(&parent),
        devpath,
    }));
}

impl WorkStack {
    /// A stack holding the children of `root` (at `devpath`), which is no device itself.
    fn new(root: OwnedFd, devpath: &str, stats: &mut WalkStats) -> WorkStack {
        let mut dirs = Vec::new();
        if let Some(listing) = list_dir(root, devpath.to_owned(), &mut Scratch::new(), stats) {
            children(listing, &mut dirs);
            dirs.reverse();
        }
        WorkStack {
            state: Mutex::new(WorkState {
                dirs,
                busy: 0,
                stop: false,
            }),
            more: Condvar::new(),
        }
    }

    /// Reads directories until none are left and no other thread can add any, handing the
    /// devices to `deliver` in batches; `deliver` returning false (the receiver is gone)
    /// stops every thread.
    fn run(&self, pool: &BatchPool, deliver: &impl Fn(Vec<Device>) -> bool) -> WalkStats {
        let mut stats = WalkStats::default();
        let mut scratch = Scratch::new();
        let mut found = Vec::new();
        let mut batch = pool.take();
        let mut stop = false;
        let mut was_busy = false;
        let hand_in = |batch: &mut Vec<Device>, stop: &mut bool| {
            if !batch.is_empty() && !*stop {
                *stop = !deliver(std::mem::replace(batch, pool.take()));
            }
        };
        loop {
            // Parents first: what this walker holds goes out before the subdirectories it
            // found are shared with the other walkers.
            if !found.is_empty() || batch.len() >= BATCH {
                hand_in(&mut batch, &mut stop);
            }
            let pending = match self.next(&mut found, stop, was_busy, batch.is_empty()) {
                Next::Read(pending) => pending,
                Next::Done => break,
                Next::WouldWait => {
                    // Nothing to read for now: hand in what is held rather than sit on it.
                    hand_in(&mut batch, &mut stop);
                    was_busy = false;
                    continue;
                }
            };
            was_busy = true;
            let opened = open_dir(pending.parent.as_fd(), pending.name());
            drop(pending.parent);
            let Ok(fd) = opened else {
                stats.unreadable += 1;
                continue;
            };
            let Some(mut listing) = list_dir(fd, pending.devpath, &mut scratch, &mut stats) else {
                continue;
            };
            if let Some(d) = listing.device.take() {
                stats.devices += 1;
                batch.push(d);
            }
            children(listing, &mut found);
        }
        hand_in(&mut batch, &mut stop);
        stats
    }

    /// Hands in the subdirectories just found, then takes the next directory to read,
    /// waiting for one if `may_wait` (otherwise saying it would).
    fn next(&self, found: &mut Vec<Pending>, stop: bool, was_busy: bool, may_wait: bool) -> Next {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if was_busy {
            state.busy -= 1;
        }
        state.stop |= stop;
        if !found.is_empty() {
            // Reversed, so that siblings come off the stack in name order.
            state.dirs.extend(found.drain(..).rev());
            self.more.notify_all();
        }
        loop {
            if state.stop {
                self.more.notify_all();
                return Next::Done;
            }
            if let Some(d) = state.dirs.pop() {
                state.busy += 1;
                return Next::Read(d);
            }
            if state.busy == 0 {
                // Nothing left and nobody who could add more: wake the others to finish.
                self.more.notify_all();
                return Next::Done;
            }
            if !may_wait {
                return Next::WouldWait;
            }
            state = self.more.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What a walker does next.
enum Next {
    /// Read this directory.
    Read(Pending),
    /// Nothing is left to read.
    Done,
    /// Nothing to read yet, but another walker may still find more.
    WouldWait,
}

/// Devices a walker hands in at a time: enough to spare the consumer a wake-up per device,
/// few enough that it can start early.
const BATCH: usize = 64;

/// Emptied batch vectors on their way back from the consumer to the walkers.
///
/// A batch's buffer (6 KiB) is beyond glibc's small sizes: allocating a fresh one for every
/// batch made `malloc` consolidate the walker's heap each time, which the consumer's frees of
/// the previous batches had filled with small chunks — a tenth of the walk's time on a
/// 100 000-device tree. Handed back, the same few buffers go round.
#[derive(Debug, Default)]
pub struct BatchPool {
    spare: Mutex<Vec<Vec<Device>>>,
}

impl BatchPool {
    /// Batches kept for reuse; more than the walkers and the consumer hold at once is waste.
    const KEEP: usize = 64;

    /// Returns an emptied (or drained) batch for the walkers to fill again.
    pub fn give_back(&self, mut batch: Vec<Device>) {
        batch.clear();
        if batch.capacity() != BATCH {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < Self::KEEP {
            spare.push(batch);
        }
    }

    /// An empty batch: one given back, or a new one.
    fn take(&self) -> Vec<Device> {
        let reused = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(BATCH))
    }

    /// Batches waiting to be reused (for the tests).
    #[cfg(test)]
    fn spare(&self) -> usize {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Opens a directory to read (never through a symlink).
fn open_dir(at: BorrowedFd<'_>, path: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The name a link in `dir` points to (its last component), if it is a link. Read into
/// `buf` first, so that only the name is allocated; a target that fills `buf` may have been
/// cut short and is read again at its full length.
fn link_name(dir: BorrowedFd<'_>, name: &str, buf: &mut Vec<u8>) -> Option<String> {
    buf.clear();
    buf.reserve(4096);
    let room = buf.capacity();
    let len = readlinkat_raw(dir, name, rustix::buffer::spare_capacity(&mut *buf)).ok()?;
    let long;
    let target = if len < room {
        buf.as_slice()
    } else {
        long = readlinkat(dir, name, Vec::new()).ok()?;
        long.as_bytes()
    };
    let last = target.rsplit(|&b| b == b'/').next()?;
    (!last.is_empty()).then(|| String::from_utf8_lossy(last).into_owned())
}

/// Buffers a walker reuses for every directory, so that reading one allocates only what it
/// hands on (names, devpaths, the device): the walk's threads share one heap, and a
/// `malloc` per directory entry made them queue for its lock.
struct Scratch {
    /// `getdents64` records.
    listing: Vec<MaybeUninit<u8>>,
    /// A `uevent` file or a link's target.
    text: Vec<u8>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            listing: vec![MaybeUninit::uninit(); 16 * 1024],
            text: vec![0; 4096],
        }
    }
}

/// Reads the device whose directory is `dir`; its `driver` link only if `driver_listed`.
fn read_device(
    dir: BorrowedFd<'_>,
    devpath: String,
    driver_listed: bool,
    text: &mut Vec<u8>,
    stats: &mut WalkStats,
) -> Option<Device> {
    match read_small(dir, "uevent", text) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(_) => {
            stats.unreadable += 1;
            return None;
        }
    }
    let (vars, bad) = parse_uevent_file(&String::from_utf8_lossy(text));
    let Some(subsystem) = link_name(dir, "subsystem", text) else {
        stats.without_subsystem += 1;
        return None;
    };
    let driver = driver_listed
        .then(|| link_name(dir, "driver", text))
        .flatten();
    stats.bad_lines += bad;
    Some(Device {
        devpath,
        subsystem,
        driver,
        vars,
    })
}

/// What one directory holds.
struct Listing {
    /// The directory, still open: what its children are opened relative to.
    dir: OwnedFd,
    /// The device it is, if any.
    device: Option<Device>,
    /// Its subdirectories (UTF-8 names only) as devpaths, in name order.
    subdirs: Vec<String>,
}

/// Lists the directory `fd` (at `devpath`) and reads the device it is; `None` (counted as
/// unreadable) if it cannot be listed. The subdirectories' devpaths are built as they are
/// listed and `devpath` becomes the device's: one allocation per path, not three (name,
/// path, the device's copy) — the walk's threads share one heap.
fn list_dir(
    fd: OwnedFd,
    devpath: String,
    scratch: &mut Scratch,
    stats: &mut WalkStats,
) -> Option<Listing> {
    let mut subdirs = Vec::new();
    let mut has_uevent = false;
    let mut has_driver = false;
    let mut listed = false;
    let mut entries = RawDir::new(&fd, &mut scratch.listing);
    while let Some(entry) = entries.next() {
        let Ok(entry) = entry else {
            stats.unreadable += 1;
            if !listed {
                // Not even a first entry: the directory itself cannot be listed.
                return None;
            }
            break;
        };
        listed = true;
        let name = entry.file_name().to_bytes();
        // d_type, not a stat: sysfs's many links are never entered.
        match entry.file_type() {
            FileType::Directory if name != b"." && name != b".." => {
                match std::str::from_utf8(name) {
                    Ok(name) => subdirs.push(child_path(&devpath, name)),
                    Err(_) => stats.unreadable += 1,
                }
            }
            FileType::RegularFile if name == b"uevent" => has_uevent = true,
            // A device without a driver has no link to read: spare the failed lookup.
            FileType::Symlink | FileType::Unknown if name == b"driver" => has_driver = true,
            _ => {}
        }
    }
    // The same prefix throughout: path order is name order.
    subdirs.sort_unstable();
    let device = if has_uevent {
        let power = |d: &String| d.len() == devpath.len() + 6 && d.ends_with("/power");
        if let Some(i) = subdirs.iter().position(power) {
            if is_pm_group(fd.as_fd()) {
                subdirs.remove(i);
            }
        }
        read_device(fd.as_fd(), devpath, has_driver, &mut scratch.text, stats)
    } else {
        None
    };
    Some(Listing {
        dir: fd,
        device,
        subdirs,
    })
}

/// `parent/name`, allocated once at its final size.
fn child_path(parent: &str, name: &str) -> String {
    let mut path = String::with_capacity(parent.len() + 1 + name.len());
    path.push_str(parent);
    path.push('/');
    path.push_str(name);
    path
}

/// Whether `power` in the device directory `dir` is the power-management attribute group the
/// kernel gives every device (attributes only, never a device below it), rather than a child
/// device that happens to have that name: a device has a `uevent` file, the group does not.
/// Skipping the group spares listing some 40 % of the directories under `/sys/devices`.
fn is_pm_group(dir: BorrowedFd<'_>) -> bool {
    matches!(
        accessat(
            dir,
            "power/uevent",
            Access::EXISTS,
            AtFlags::SYMLINK_NOFOLLOW
        ),
        Err(rustix::io::Errno::NOENT)
    )
}

/// Reads a file that is normally under a page (a sysfs attribute) without asking its size
/// first: `fs::read` would add a `statx` per file, and sysfs reports 4096 for every file anyway.
/// A read that leaves room in the buffer is taken as the end: sysfs hands an attribute over in
/// one piece (a `uevent` file is at most 2 KiB), and a regular file reads short only at its
/// end, so the usual second `read` that returns 0 is spared. The text replaces what `text`
/// held; its buffer is reused from file to file.
fn read_small(dir: BorrowedFd<'_>, name: &str, text: &mut Vec<u8>) -> io::Result<()> {
    let file = openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    text.clear();
    loop {
        if text.capacity() - text.len() < 4096 {
            text.reserve(4096);
        }
        let room = text.capacity() - text.len();
        match rustix::io::read(&file, rustix::buffer::spare_capacity(&mut *text)) {
            Ok(0) => return Ok(()),
            Ok(n) if n < room => return Ok(()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The serial walk: `dir` (at `devpath`), then its subdirectories in name order.
fn walk_dir(
    dir: OwnedFd,
    devpath: String,
    scratch: &mut Scratch,
    stats: &mut WalkStats,
    visit: &mut impl FnMut(Device),
) {
    let Some(listing) = list_dir(dir, devpath, scratch, stats) else {
        return;
    };
    if let Some(device) = listing.device {
        stats.devices += 1;
        visit(device);
    }
    for path in listing.subdirs {
        let name = path.rsplit('/').next().unwrap_or_default();
        let Ok(sub) = open_dir(listing.dir.as_fd(), name) else {
            stats.unreadable += 1;
            continue;
        };
        walk_dir(sub, path, scratch, stats, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Vars;
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
        // The subsystem link reads as the name it points to; other links not at all.
        assert_eq!(
            sys.attr("/devices/platform/a/b", "subsystem").as_deref(),
            Some("tty")
        );
        assert_eq!(sys.attr("/devices/platform/a/b", "driver"), None);
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

    /// Every device of `sys`, walked by `threads` threads, in tree order.
    fn walked(sys: &Sysfs, threads: usize) -> (Vec<Device>, WalkStats) {
        let seen = Mutex::new(Vec::new());
        let stats = sys
            .walk_batches(threads, &BatchPool::default(), |b| {
                seen.lock().unwrap().extend(b);
                true
            })
            .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by(|a, b| tree_order(&a.devpath, &b.devpath));
        (seen, stats)
    }

    #[test]
    fn a_parallel_walk_sees_what_a_serial_one_sees() {
        let t = tree();
        // Widen the tree so the threads really share it.
        for i in 0..50 {
            let dir = t.path().join(format!("devices/platform/a/w{i}/x"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("uevent"), format!("N={i}\n")).unwrap();
            symlink(t.path().join("class/tty"), dir.join("subsystem")).unwrap();
        }
        let sys = Sysfs::new(t.path());
        let mut serial = Vec::new();
        let serial_stats = sys.walk(|d| serial.push(d)).unwrap();
        for threads in [0, 1, 2, 4] {
            let (parallel, stats) = walked(&sys, threads);
            assert_eq!(parallel, serial, "{threads} threads");
            assert_eq!(
                (stats.devices, stats.without_subsystem, stats.unreadable),
                (
                    serial_stats.devices,
                    serial_stats.without_subsystem,
                    serial_stats.unreadable
                ),
                "{threads} threads"
            );
        }
        assert_eq!(serial_stats.devices, 52);
    }

    #[test]
    fn batches_deliver_every_device_once_and_parents_before_their_children() {
        let t = tree();
        // Deep and wide, so that walkers hand each other subdirectories all the time.
        for i in 0..30 {
            let mut dir = t.path().join(format!("devices/platform/a/w{i}"));
            for depth in 0..4 {
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join("uevent"), "").unwrap();
                symlink(t.path().join("class/tty"), dir.join("subsystem")).unwrap();
                for leaf in 0..3 {
                    let l = dir.join(format!("leaf{leaf}"));
                    fs::create_dir_all(&l).unwrap();
                    fs::write(l.join("uevent"), "").unwrap();
                    symlink(t.path().join("class/tty"), l.join("subsystem")).unwrap();
                }
                dir = dir.join(format!("d{depth}"));
            }
        }
        let sys = Sysfs::new(t.path());
        let mut serial = Vec::new();
        sys.walk(|d| serial.push(d.devpath)).unwrap();
        serial.sort();
        for threads in [1, 2, 4] {
            for _ in 0..5 {
                let batches = Mutex::new(Vec::new());
                let stats = sys
                    .walk_batches(threads, &BatchPool::default(), |b| {
                        batches.lock().unwrap().push(b);
                        true
                    })
                    .unwrap();
                let batches = batches.into_inner().unwrap();
                let order: Vec<String> = batches
                    .iter()
                    .flatten()
                    .map(|d| d.devpath.clone())
                    .collect();
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, serial, "{threads} threads");
                assert_eq!(stats.devices, serial.len());
                // Each device's parent device (if any) was handed in by an earlier call.
                let batch_of = |p: &str| {
                    batches
                        .iter()
                        .position(|b| b.iter().any(|d| d.devpath == p))
                };
                for d in &order {
                    let parent = d.rsplit_once('/').unwrap().0;
                    if let Some(pb) = batch_of(parent) {
                        assert!(
                            pb < batch_of(d).unwrap(),
                            "{parent} not before {d} ({threads} threads)"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn batches_given_back_go_round_again() {
        let pool = BatchPool::default();
        let mut batch = pool.take();
        assert_eq!(batch.capacity(), BATCH);
        batch.push(Device {
            devpath: "/devices/x".into(),
            subsystem: "tty".into(),
            driver: None,
            vars: Vars::default(),
        });
        let buffer = batch.as_ptr();
        pool.give_back(batch);
        assert_eq!(pool.spare(), 1);
        let again = pool.take();
        assert!(again.is_empty(), "a batch comes back emptied");
        assert_eq!(again.as_ptr(), buffer, "the same buffer is reused");
        // One that grew (or shrank) is not the walkers' size: it is dropped, not kept.
        pool.give_back(Vec::with_capacity(BATCH * 2));
        assert_eq!(pool.spare(), 0);
        for _ in 0..BatchPool::KEEP + 5 {
            pool.give_back(Vec::with_capacity(BATCH));
        }
        assert_eq!(pool.spare(), BatchPool::KEEP, "the pool is bounded");
    }

    #[test]
    fn a_walk_reuses_the_batches_its_consumer_gives_back() {
        let t = tree();
        for i in 0..(3 * BATCH) {
            let dir = t.path().join(format!("devices/platform/many/m{i}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("uevent"), "").unwrap();
            symlink(t.path().join("class/tty"), dir.join("subsystem")).unwrap();
        }
        let sys = Sysfs::new(t.path());
        let pool = BatchPool::default();
        let (seen, buffers) = (Mutex::new(0), Mutex::new(std::collections::HashSet::new()));
        let stats = sys
            .walk_batches(1, &pool, |mut b| {
                *seen.lock().unwrap() += b.len();
                buffers.lock().unwrap().insert(b.as_ptr() as usize);
                b.clear();
                pool.give_back(b);
                true
            })
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), stats.devices);
        assert!(stats.devices > 3 * BATCH);
        // One walker, each batch given back before the next is taken: at most two buffers
        // (the one being filled and the one handed in) ever exist.
        assert!(buffers.lock().unwrap().len() <= 2, "{:?}", buffers);
    }

    #[test]
    fn a_walk_stops_when_its_batches_are_refused() {
        let t = tree();
        for i in 0..500 {
            let dir = t.path().join(format!("devices/platform/a/w{i}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("uevent"), "").unwrap();
            symlink(t.path().join("class/tty"), dir.join("subsystem")).unwrap();
        }
        let calls = Mutex::new(0);
        let stats = Sysfs::new(t.path())
            .walk_batches(2, &BatchPool::default(), |_| {
                *calls.lock().unwrap() += 1;
                false
            })
            .unwrap();
        // Each walker offers at most one more batch after the first refusal.
        assert!(*calls.lock().unwrap() <= 2);
        assert!(stats.devices < 502, "{}", stats.devices);
    }

    #[test]
    fn a_child_device_named_power_is_walked_and_the_pm_group_is_not() {
        let t = tree();
        let r = t.path();
        // The PM group of device a: attributes only (a stray uevent-bearing dir below it
        // proves it is not listed).
        let group = r.join("devices/platform/a/power");
        fs::create_dir_all(group.join("stray")).unwrap();
        fs::write(group.join("control"), "auto\n").unwrap();
        fs::write(group.join("stray/uevent"), "").unwrap();
        symlink(r.join("class/tty"), group.join("stray/subsystem")).unwrap();
        // A device named power under b, which has no PM group of its own.
        let child = r.join("devices/platform/a/b/power");
        fs::create_dir_all(&child).unwrap();
        fs::write(child.join("uevent"), "").unwrap();
        symlink(r.join("class/tty"), child.join("subsystem")).unwrap();
        let sys = Sysfs::new(r);
        for threads in [1, 3] {
            let (seen, _) = walked(&sys, threads);
            let seen: Vec<_> = seen.iter().map(|d| d.devpath.as_str()).collect();
            assert_eq!(
                seen,
                [
                    "/devices/platform/a",
                    "/devices/platform/a/b",
                    "/devices/platform/a/b/power"
                ],
                "{threads} threads"
            );
        }
    }

    #[test]
    fn is_below_needs_a_component_boundary() {
        assert!(is_below("/devices/a/b", "/devices/a"));
        assert!(!is_below("/devices/a", "/devices/a"));
        assert!(!is_below("/devices/ab", "/devices/a"));
        assert!(!is_below("/devices", "/devices/a"));
    }

    proptest::proptest! {
        #[test]
        fn tree_order_compares_component_by_component(
            a in "[/ab0.\\x00-]{0,24}",
            b in "[/ab0.\\x00-]{0,24}",
        ) {
            proptest::prop_assert_eq!(tree_order(&a, &b), a.split('/').cmp(b.split('/')));
        }
    }

    #[test]
    fn tree_order_puts_parents_first_and_siblings_by_name() {
        let mut v = vec!["/d/a0", "/d/a/b", "/d", "/d/a", "/d/a-b", "/d/a/b/c"];
        v.sort_by(|a, b| tree_order(a, b));
        assert_eq!(v, ["/d", "/d/a", "/d/a/b", "/d/a/b/c", "/d/a-b", "/d/a0"]);
    }

    #[test]
    fn long_uevent_files_and_link_targets_are_read_whole() {
        // Past the walker's reused 4 KiB buffers: the reads must grow, not cut.
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("devices/x");
        fs::create_dir_all(&dir).unwrap();
        let long_value = "v".repeat(9000);
        fs::write(dir.join("uevent"), format!("A=1\nLONG={long_value}\nZ=2\n")).unwrap();
        let class = t
            .path()
            .join("class")
            .join("c".repeat(200))
            .join("sub".repeat(50));
        fs::create_dir_all(&class).unwrap();
        symlink(&class, dir.join("subsystem")).unwrap();
        for threads in [1, 3] {
            let (devices, stats) = walked(&Sysfs::new(t.path()), threads);
            assert_eq!(stats.devices, 1);
            let d = &devices[0];
            assert_eq!(d.get("LONG"), Some(long_value.as_str()));
            assert_eq!(d.get("Z"), Some("2"));
            assert_eq!(d.subsystem, "sub".repeat(50));
        }
        let one = Sysfs::new(t.path()).device("/devices/x").unwrap().unwrap();
        assert_eq!(one.get("LONG"), Some(long_value.as_str()));
        let mut serial = Vec::new();
        Sysfs::new(t.path()).walk(|d| serial.push(d)).unwrap();
        assert_eq!(serial, [one]);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        assert!(Sysfs::new("/nonexistent-uevd")
            .walk_batches(2, &BatchPool::default(), |_| true)
            .is_err());
        let e = Sysfs::new("/nonexistent-uevd").walk(|_| {}).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent-uevd/devices"),
            "{e}"
        );
    }

    #[test]
    fn the_real_sysfs_walked_in_parallel_matches() {
        let sys = Sysfs::new("/sys");
        let (parallel, _) = walked(&sys, 3);
        let mut serial = Vec::new();
        sys.walk(|d| serial.push(d.devpath)).unwrap();
        let parallel: Vec<String> = parallel.into_iter().map(|d| d.devpath).collect();
        // Devices may come and go between the walks, but not on a quiet test machine in bulk.
        let common = parallel.iter().filter(|p| serial.contains(p)).count();
        assert!(common + 2 >= serial.len(), "{common} of {}", serial.len());
        assert!(parallel
            .windows(2)
            .all(|w| tree_order(&w[0], &w[1]).is_lt()));
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
