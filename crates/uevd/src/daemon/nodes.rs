//! Device nodes and symlinks under `--dev`.
//!
//! All filesystem effects go through the small [`DevFs`] trait, relative to the `--dev`
//! directory. The real implementation, [`DirFs`], resolves every parent directory with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a symlink planted inside `--dev` can
//! never redirect a node (or a chmod/chown) outside it. Names are validated before anything is
//! touched ([`NodePath::new`]). Nodes are replaced atomically: a new node is made under a
//! temporary name, given its owner and mode, and renamed over the old one.

use rustix::fd::OwnedFd;
use rustix::fs::{self as fs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// A node or link name relative to `--dev`, validated: not empty, not absolute, no `.`/`..`
/// or empty components, no NUL or control characters, at most 255 bytes per component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePath(String);

/// Why a name is not acceptable under `--dev`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("empty name")]
    Empty,
    /// Starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// Has a `.` or `..` component.
    #[error("'.' or '..' component")]
    Dot,
    /// Has an empty component (`a//b`, trailing `/`).
    #[error("empty path component")]
    EmptyComponent,
    /// Holds NUL or another control character.
    #[error("control character in name")]
    Control,
    /// Longer than the kernel accepts.
    #[error("name too long")]
    TooLong,
    /// Starts like the temporary names uevd replaces nodes through.
    #[error("names starting with '.uevd-tmp.' are uevd's own")]
    Reserved,
}

impl NodePath {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<NodePath, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.starts_with('/') {
            return Err(NameError::Absolute);
        }
        if name.len() > 4095 {
            return Err(NameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        for component in name.split('/') {
            match component {
                "" => return Err(NameError::EmptyComponent),
                "." | ".." => return Err(NameError::Dot),
                c if c.len() > 255 => return Err(NameError::TooLong),
                c if c.starts_with(TEMP_PREFIX) => return Err(NameError::Reserved),
                _ => {}
            }
        }
        Ok(NodePath(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory part (`""` for a top-level name).
    pub fn parent(&self) -> &str {
        self.0.rsplit_once('/').map_or("", |(p, _)| p)
    }

    /// The last component.
    pub fn leaf(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, l)| l)
    }

    /// Each ancestor directory, outermost first (`a`, `a/b` for `a/b/c`).
    fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }

    /// The relative symlink target that reaches `target` from a link at `self`.
    pub fn relative_target(&self, target: &NodePath) -> String {
        let depth = self.parent().split('/').filter(|c| !c.is_empty()).count();
        let mut out = "../".repeat(depth);
        out.push_str(target.as_str());
        out
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Character or block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// `S_IFCHR`.
    Char,
    /// `S_IFBLK` (devices of subsystem `block`).
    Block,
}

impl NodeKind {
    /// `c` or `b`, as in `ls -l` and udev's device ids.
    pub fn letter(self) -> char {
        match self {
            NodeKind::Char => 'c',
            NodeKind::Block => 'b',
        }
    }
}

/// What kind of file a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A device node.
    Node(NodeKind),
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// The part of `lstat` the node logic needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// File type.
    pub kind: FileKind,
    /// `(major, minor)` of a device node.
    pub devnum: (u32, u32),
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The filesystem operations node management needs, relative to `--dev`, never following a
/// symlink in any path component. A seam: tests can substitute a recording or failing fake.
pub trait DevFs: Send + Sync {
    /// `lstat`; `None` if the path does not exist.
    fn lstat(&self, path: &str) -> Result<Option<Meta>, Errno>;
    /// `stat` of the root directory itself.
    fn lstat_root(&self) -> Result<Meta, Errno>;
    /// `mkdir` of one level.
    fn mkdir(&self, path: &str, mode: u32) -> Result<(), Errno>;
    /// `mknod`.
    fn mknod(&self, path: &str, kind: NodeKind, mode: u32, devnum: (u32, u32))
        -> Result<(), Errno>;
    /// `chown` without following a final symlink.
    fn chown(&self, path: &str, uid: u32, gid: u32) -> Result<(), Errno>;
    /// `chmod`; callers only use it on paths they have just checked are not symlinks.
    fn chmod(&self, path: &str, mode: u32) -> Result<(), Errno>;
    /// `rename`, replacing `to` atomically.
    fn rename(&self, from: &str, to: &str) -> Result<(), Errno>;
    /// `unlink`.
    fn unlink(&self, path: &str) -> Result<(), Errno>;
    /// `rmdir`.
    fn rmdir(&self, path: &str) -> Result<(), Errno>;
    /// `symlink(target, path)`.
    fn symlink(&self, target: &str, path: &str) -> Result<(), Errno>;
    /// `readlink`.
    fn readlink(&self, path: &str) -> Result<String, Errno>;
    /// Sets the extended attribute `name` (a security label) of the device node at `path`:
    /// not through a symlink, and nothing but a char or block node (`EPERM` otherwise).
    fn set_node_xattr(&self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno>;
    /// The mode of `path` if it is known, without looking, to be a directory beneath the
    /// root (an implementation may remember the last directory it resolved); `None`: look.
    fn known_dir(&self, _path: &str) -> Option<u32> {
        None
    }
    /// Forgets any directory remembered for [`DevFs::known_dir`]: the daemon calls this after
    /// each batch of events, so that what someone else moved meanwhile is resolved afresh.
    fn forget_dirs(&self) {}
}

/// [`DevFs`] on a real directory.
pub struct DirFs {
    root: OwnedFd,
    /// The parent directory the last operation resolved: events in a row mostly make nodes
    /// in one directory (`input/`, `bus/usb/001/`), and each would otherwise resolve it (and
    /// `lstat` it) again. Forgotten when uevd removes or renames anything, and after every
    /// batch of events ([`DevFs::forget_dirs`]). Until then a directory someone moved keeps
    /// being used where it went, which stays inside the `--dev` filesystem (`rename` cannot
    /// leave it), as it could between the resolving and the use anyway.
    last_dir: Mutex<Option<ResolvedDir>>,
}

/// A directory below the `--dev` root, resolved without following symlinks.
struct ResolvedDir {
    path: String,
    fd: Arc<OwnedFd>,
    mode: u32,
}

impl DirFs {
    /// Opens `dir` (which must exist) as the root of all node operations.
    pub fn open(dir: &std::path::Path) -> Result<DirFs, Errno> {
        let root = fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirFs {
            root,
            last_dir: Mutex::new(None),
        })
    }

    fn last_dir(&self) -> MutexGuard<'_, Option<ResolvedDir>> {
        self.last_dir.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `parent`, resolved beneath the root without following any symlink, or remembered
    /// (then the second item is true).
    fn dir(&self, parent: &str) -> Result<(Arc<OwnedFd>, bool), Errno> {
        if let Some(known) = self.last_dir().as_ref().filter(|d| d.path == parent) {
            return Ok((Arc::clone(&known.fd), true));
        }
        self.resolve(parent).map(|fd| (fd, false))
    }

    fn resolve(&self, parent: &str) -> Result<Arc<OwnedFd>, Errno> {
        let fd = Arc::new(fs::openat2(
            &self.root,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?);
        let mode = fs::fstat(&*fd)?.st_mode & 0o7777;
        *self.last_dir() = Some(ResolvedDir {
            path: parent.to_owned(),
            fd: Arc::clone(&fd),
            mode,
        });
        Ok(fd)
    }

    /// Runs `op` with a descriptor of `path`'s parent directory and `path`'s last component.
    /// The parent is resolved beneath the root without following any symlink.
    fn at<T>(
        &self,
        path: &str,
        op: impl Fn(&OwnedFd, &str) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        match path.rsplit_once('/') {
            None => op(&self.root, path),
            Some((parent, leaf)) => match self.dir(parent)? {
                // The remembered directory was removed (and maybe made again) by someone
                // else meanwhile: once more in the one there now. Whatever fails with
                // `ENOENT` has had no effect.
                (dir, true) => match op(&dir, leaf) {
                    Err(Errno::NOENT) => op(&*self.resolve(parent)?, leaf),
                    done => done,
                },
                (dir, false) => op(&dir, leaf),
            },
        }
    }
}

fn meta(st: &fs::Stat) -> Meta {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::CharacterDevice => FileKind::Node(NodeKind::Char),
        FileType::BlockDevice => FileKind::Node(NodeKind::Block),
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        _ => FileKind::Other,
    };
    Meta {
        kind,
        devnum: (fs::major(st.st_rdev), fs::minor(st.st_rdev)),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

impl DevFs for DirFs {
    fn lstat_root(&self) -> Result<Meta, Errno> {
        fs::fstat(&self.root).map(|st| meta(&st))
    }

    fn lstat(&self, path: &str) -> Result<Option<Meta>, Errno> {
        match self.at(path, |dir, leaf| {
            fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW)
        }) {
            Ok(st) => Ok(Some(meta(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mkdir(&self, path: &str, mode: u32) -> Result<(), Errno> {
        self.at(path, |dir, leaf| {
            fs::mkdirat(dir, leaf, Mode::from_raw_mode(mode))
        })
    }

    fn mknod(
        &self,
        path: &str,
        kind: NodeKind,
        mode: u32,
        (major, minor): (u32, u32),
    ) -> Result<(), Errno> {
        let file_type = match kind {
            NodeKind::Char => FileType::CharacterDevice,
            NodeKind::Block => FileType::BlockDevice,
        };
        self.at(path, |dir, leaf| {
            fs::mknodat(
                dir,
                leaf,
                file_type,
                Mode::from_raw_mode(mode),
                fs::makedev(major, minor),
            )
        })
    }

    fn chown(&self, path: &str, uid: u32, gid: u32) -> Result<(), Errno> {
        self.at(path, |dir, leaf| {
            fs::chownat(
                dir,
                leaf,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
        })
    }

    fn chmod(&self, path: &str, mode: u32) -> Result<(), Errno> {
        self.at(path, |dir, leaf| {
            fs::chmodat(dir, leaf, Mode::from_raw_mode(mode), AtFlags::empty())
        })
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
        self.forget_dirs();
        self.at(from, |from_dir, from_leaf| {
            self.at(to, |to_dir, to_leaf| {
                fs::renameat(from_dir, from_leaf, to_dir, to_leaf)
            })
        })
    }

    fn unlink(&self, path: &str) -> Result<(), Errno> {
        self.at(path, |dir, leaf| fs::unlinkat(dir, leaf, AtFlags::empty()))
    }

    fn rmdir(&self, path: &str) -> Result<(), Errno> {
        self.forget_dirs();
        self.at(path, |dir, leaf| {
            fs::unlinkat(dir, leaf, AtFlags::REMOVEDIR)
        })
    }

    fn symlink(&self, target: &str, path: &str) -> Result<(), Errno> {
        self.at(path, |dir, leaf| fs::symlinkat(target, dir, leaf))
    }

    fn readlink(&self, path: &str) -> Result<String, Errno> {
        self.at(path, |dir, leaf| {
            let target = fs::readlinkat(dir, leaf, Vec::new())?;
            Ok(target.to_string_lossy().into_owned())
        })
    }

    fn set_node_xattr(&self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        self.at(path, |dir, leaf| {
            // O_PATH: opening the device itself could have effects (a tape rewinds).
            let fd = fs::openat(
                dir,
                leaf,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let kind = FileType::from_raw_mode(fs::fstat(&fd)?.st_mode);
            if !matches!(kind, FileType::CharacterDevice | FileType::BlockDevice) {
                return Err(Errno::PERM);
            }
            // An O_PATH descriptor takes no xattr calls; its /proc link leads to the very
            // inode it holds (as udev and libselinux do it).
            let via = format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(&fd));
            fs::setxattr(via.as_str(), name, value, fs::XattrFlags::empty())
        })
    }

    fn known_dir(&self, path: &str) -> Option<u32> {
        self.last_dir()
            .as_ref()
            .filter(|d| d.path == path)
            .map(|d| d.mode)
    }

    fn forget_dirs(&self) {
        *self.last_dir() = None;
    }
}

/// Why a node operation failed. Names the path and the operation.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The name was refused before anything was touched.
    #[error("refusing node name {name:?}: {reason}")]
    BadName {
        /// The name as received.
        name: String,
        /// Why.
        reason: NameError,
    },
    /// A path component inside `--dev` is a symlink or not a directory.
    #[error(
        "refusing {path:?}: {component:?} inside the device directory is not a real directory"
    )]
    Unsafe {
        /// The node or link path.
        path: String,
        /// The offending component.
        component: String,
    },
    /// Something else is in the way and will not be replaced.
    #[error("refusing to replace {path:?}: it is a {found}")]
    Occupied {
        /// The path.
        path: String,
        /// What is there.
        found: &'static str,
    },
    /// A system call failed.
    #[error("{op} {path:?} failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: Errno,
    },
}

fn io<'a>(op: &'static str, path: &'a str) -> impl FnOnce(Errno) -> NodeError + 'a {
    move |source| match source {
        Errno::LOOP | Errno::XDEV | Errno::NOTDIR => NodeError::Unsafe {
            path: path.to_owned(),
            component: "a parent".to_owned(),
        },
        _ => NodeError::Io {
            op,
            path: path.to_owned(),
            source,
        },
    }
}

/// A device node to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Where, relative to `--dev`.
    pub path: NodePath,
    /// Char or block.
    pub kind: NodeKind,
    /// `(major, minor)`.
    pub devnum: (u32, u32),
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What [`Nodes::ensure_node`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ensured {
    /// Directories it created, outermost first (kept in the device's record).
    pub created_dirs: Vec<String>,
    /// Whether a node was (re)created, as opposed to found correct or fixed in place.
    pub created: bool,
}

/// What [`Nodes::apply_static`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaticOutcome {
    /// No such node (its module's nodes were not created, or it is gone): nothing to do.
    Missing,
    /// Something other than a device node has the name; left alone.
    NotANode,
    /// It already had that owner, group and mode.
    Unchanged,
    /// Owner, group or mode was set.
    Changed,
}

/// Node and symlink management on a [`DevFs`].
pub struct Nodes<F> {
    fs: F,
    /// `(uid, gid)` new files get: the daemon's effective ids.
    creator: (u32, u32),
    /// Whether the `--dev` root is setgid.
    root_setgid: bool,
}

/// Mode of directories created for nodes (`input/`, `bus/usb/001/`).
const DIR_MODE: u32 = 0o755;

impl<F: DevFs> Nodes<F> {
    /// Manages nodes on `fs`. The process must run with umask 0 (the daemon sets it), so
    /// nodes are created with exactly their mode.
    pub fn new(fs: F) -> Nodes<F> {
        let creator = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let root_setgid = matches!(fs.lstat_root(), Ok(m) if m.mode & 0o2000 != 0);
        Nodes {
            fs,
            creator,
            root_setgid,
        }
    }

    /// The filesystem underneath.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Creates the parent directories of `path` that are missing; refuses symlinks and
    /// non-directories on the way. Returns the directories it created.
    fn make_parents(&self, path: &NodePath) -> Result<(Vec<String>, bool), NodeError> {
        // The parent resolved a moment ago (beneath the root, no symlinks): all there.
        if let Some(mode) = self.fs.known_dir(path.parent()) {
            return Ok((Vec::new(), mode & 0o2000 != 0));
        }
        let mut created = Vec::new();
        let mut setgid = self.root_setgid;
        for dir in path.ancestors() {
            match self.fs.lstat(dir).map_err(io("stat", dir))? {
                Some(Meta {
                    kind: FileKind::Dir,
                    mode,
                    ..
                }) => setgid = mode & 0o2000 != 0,
                Some(_) => {
                    return Err(NodeError::Unsafe {
                        path: path.to_string(),
                        component: dir.to_owned(),
                    })
                }
                None => match self.fs.mkdir(dir, DIR_MODE) {
                    // A directory we make inherits a setgid parent's bit.
                    Ok(()) => created.push(dir.to_owned()),
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(io("mkdir", dir)(e)),
                },
            }
        }
        Ok((created, setgid))
    }

    /// Makes `spec.path` the node `spec` describes, with its owner and mode: created in place
    /// if nothing is there (one `mknod` in the common case), left alone if it already is that
    /// node, fixed in place if only owner or mode differ, otherwise replaced atomically.
    pub fn ensure_node(&self, spec: &NodeSpec) -> Result<Ensured, NodeError> {
        let path = spec.path.as_str();
        let (created_dirs, parent_setgid) = self.make_parents(&spec.path)?;
        // Nodes are created with their final mode (the daemon runs with umask 0) and owned by
        // the daemon's user; only a different owner, or a setgid directory, needs a chown.
        let needs_chown = parent_setgid || (spec.uid, spec.gid) != self.creator;
        match self.fs.mknod(path, spec.kind, spec.mode, spec.devnum) {
            Ok(()) => {
                if needs_chown {
                    if let Err(e) = self.fs.chown(path, spec.uid, spec.gid) {
                        let _ = self.fs.unlink(path);
                        return Err(io("chown", path)(e));
                    }
                }
                return Ok(Ensured {
                    created_dirs,
                    created: true,
                });
            }
            Err(Errno::EXIST) => {}
            Err(Errno::NOENT) if self.fs.known_dir(spec.path.parent()).is_some() => {
                // The directory was removed behind uevd's back since it was resolved.
                self.fs.forget_dirs();
                return self.ensure_node(spec);
            }
            Err(e) => return Err(io("mknod", path)(e)),
        }
        match self.fs.lstat(path).map_err(io("stat", path))? {
            Some(m) if m.kind == FileKind::Node(spec.kind) && m.devnum == spec.devnum => {
                if (m.uid, m.gid) != (spec.uid, spec.gid) {
                    self.fs
                        .chown(path, spec.uid, spec.gid)
                        .map_err(io("chown", path))?;
                }
                if m.mode != spec.mode {
                    self.fs.chmod(path, spec.mode).map_err(io("chmod", path))?;
                }
                return Ok(Ensured {
                    created_dirs,
                    created: false,
                });
            }
            Some(Meta {
                kind: FileKind::Dir,
                ..
            }) => {
                return Err(NodeError::Occupied {
                    path: path.to_owned(),
                    found: "directory",
                })
            }
            _ => {}
        }
        // Something else is there (wrong type or devnum, a symlink, a file): replace it
        // atomically with a node made under a temporary name.
        let tmp = temp_name(&spec.path);
        let _ = self.fs.unlink(&tmp);
        self.fs
            .mknod(&tmp, spec.kind, spec.mode, spec.devnum)
            .map_err(io("mknod", &tmp))?;
        let finish = || -> Result<(), NodeError> {
            if needs_chown {
                self.fs
                    .chown(&tmp, spec.uid, spec.gid)
                    .map_err(io("chown", &tmp))?;
            }
            self.fs.rename(&tmp, path).map_err(io("rename", path))
        };
        if let Err(e) = finish() {
            let _ = self.fs.unlink(&tmp);
            return Err(e);
        }
        Ok(Ensured {
            created_dirs,
            created: true,
        })
    }

    /// Removes the node at `path` if it is still the `kind`/`devnum` node (another device may
    /// have taken the name since), then the parent directories that are left empty. Returns
    /// whether a node was removed.
    pub fn remove_node(
        &self,
        path: &NodePath,
        kind: NodeKind,
        devnum: (u32, u32),
    ) -> Result<bool, NodeError> {
        let p = path.as_str();
        let removed = match self.fs.lstat(p).map_err(io("stat", p))? {
            Some(m) if m.kind == FileKind::Node(kind) && m.devnum == devnum => {
                match self.fs.unlink(p) {
                    Ok(()) | Err(Errno::NOENT) => true,
                    Err(e) => return Err(io("unlink", p)(e)),
                }
            }
            _ => false,
        };
        if removed {
            self.prune_parents(path);
        }
        Ok(removed)
    }

    /// Removes the parent directories of `path` that are empty now, innermost first, up to
    /// (not including) the `--dev` root — as devtmpfs does for the nodes it removes, and udev
    /// for its links. Whichever device made a directory, the last one out takes it; one that
    /// is not empty (or a mount point) stops the climb.
    fn prune_parents(&self, path: &NodePath) {
        let dirs: Vec<&str> = path.ancestors().collect();
        for dir in dirs.into_iter().rev() {
            if self.fs.rmdir(dir).is_err() {
                break;
            }
        }
    }

    /// Makes `link` a symlink to the node `target`; replaces a stale link atomically, but never
    /// a node, directory or regular file.
    pub fn ensure_symlink(
        &self,
        link: &NodePath,
        target: &NodePath,
    ) -> Result<Vec<String>, NodeError> {
        let path = link.as_str();
        let want = link.relative_target(target);
        let (created, _) = self.make_parents(link)?;
        match self.fs.lstat(path).map_err(io("stat", path))? {
            None => {}
            Some(Meta {
                kind: FileKind::Symlink,
                ..
            }) => {
                let current = self.fs.readlink(path).map_err(io("readlink", path))?;
                if current == want {
                    return Ok(created);
                }
            }
            Some(m) => {
                return Err(NodeError::Occupied {
                    path: path.to_owned(),
                    found: match m.kind {
                        FileKind::Dir => "directory",
                        FileKind::Node(_) => "device node",
                        _ => "file",
                    },
                })
            }
        }
        let tmp = temp_name(link);
        let _ = self.fs.unlink(&tmp);
        self.fs.symlink(&want, &tmp).map_err(io("symlink", &tmp))?;
        if let Err(e) = self.fs.rename(&tmp, path) {
            let _ = self.fs.unlink(&tmp);
            return Err(io("rename", path)(e));
        }
        Ok(created)
    }

    /// Gives an existing node the owner, group and mode a `static_node=` rule asks for
    /// (`None`: leave that part). Nothing is created: a missing node is reported as such, and
    /// anything but a device node (a symlink, a file, a directory) is left alone.
    pub fn apply_static(
        &self,
        path: &NodePath,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<StaticOutcome, NodeError> {
        let p = path.as_str();
        // A parent that is a symlink or not a directory is refused (`NodeError::Unsafe`).
        let Some(meta) = self.fs.lstat(p).map_err(io("stat", p))? else {
            return Ok(StaticOutcome::Missing);
        };
        if !matches!(meta.kind, FileKind::Node(_)) {
            return Ok(StaticOutcome::NotANode);
        }
        let owner = (uid.unwrap_or(meta.uid), gid.unwrap_or(meta.gid));
        let mode = mode.map_or(meta.mode, |m| m & 0o7777);
        let mut changed = false;
        if owner != (meta.uid, meta.gid) {
            self.fs.chown(p, owner.0, owner.1).map_err(io("chown", p))?;
            changed = true;
        }
        // After a chown, which clears the set-id bits; checked a moment ago not to be a link.
        if mode != meta.mode || (changed && mode & 0o6000 != 0) {
            self.fs.chmod(p, mode).map_err(io("chmod", p))?;
            changed = true;
        }
        Ok(if changed {
            StaticOutcome::Changed
        } else {
            StaticOutcome::Unchanged
        })
    }

    /// Removes `link` if it still points at `target`.
    pub fn remove_symlink(&self, link: &NodePath, target: &NodePath) -> Result<bool, NodeError> {
        let path = link.as_str();
        match self.fs.readlink(path) {
            Ok(t) if t == link.relative_target(target) => match self.fs.unlink(path) {
                Ok(()) | Err(Errno::NOENT) => {
                    self.prune_parents(link);
                    Ok(true)
                }
                Err(e) => Err(io("unlink", path)(e)),
            },
            Ok(_) | Err(Errno::NOENT | Errno::INVAL) => Ok(false),
            Err(e) => Err(io("readlink", path)(e)),
        }
    }
}

/// How the temporary names of node replacements start; no device may have such a name.
const TEMP_PREFIX: &str = ".uevd-tmp.";

/// The temporary name a replacement for `path` is made under: in the same directory (so the
/// rename is atomic), short whatever the leaf's length (a hash of it), and in a namespace
/// [`NodePath::new`] refuses to devices, so it can never be another device's node.
fn temp_name(path: &NodePath) -> String {
    // A collision only makes two replacements share a scratch name.
    let hash = super::hash::fnv1a(path.leaf().as_bytes());
    match path.parent() {
        "" => format!("{TEMP_PREFIX}{hash:016x}"),
        parent => format!("{parent}/{TEMP_PREFIX}{hash:016x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for (name, err) in [
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("../../etc/x", NameError::Dot),
            ("input/../../x", NameError::Dot),
            ("./x", NameError::Dot),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("a\0b", NameError::Control),
            ("a\nb", NameError::Control),
        ] {
            assert_eq!(NodePath::new(name), Err(err), "{name:?}");
        }
        assert_eq!(NodePath::new(&"x".repeat(256)), Err(NameError::TooLong));
        let ok = NodePath::new("bus/usb/001/002").unwrap();
        assert_eq!((ok.parent(), ok.leaf()), ("bus/usb/001", "002"));
        assert_eq!(
            ok.ancestors().collect::<Vec<_>>(),
            ["bus", "bus/usb", "bus/usb/001"]
        );
    }

    #[test]
    fn relative_targets() {
        let node = NodePath::new("input/event3").unwrap();
        assert_eq!(
            NodePath::new("kbd").unwrap().relative_target(&node),
            "input/event3"
        );
        assert_eq!(
            NodePath::new("input/by-id/kbd")
                .unwrap()
                .relative_target(&node),
            "../../input/event3"
        );
    }

    #[test]
    fn temp_names_stay_in_the_same_directory_short_and_out_of_devices_reach() {
        let null = temp_name(&NodePath::new("null").unwrap());
        assert!(
            null.starts_with(".uevd-tmp.") && !null.contains('/'),
            "{null}"
        );
        let event = temp_name(&NodePath::new("input/event3").unwrap());
        assert!(event.starts_with("input/.uevd-tmp."), "{event}");
        let long = temp_name(&NodePath::new(&"x".repeat(255)).unwrap());
        assert!(long.len() < 40, "{long}");
        assert_eq!(NodePath::new(&null), Err(NameError::Reserved));
        assert_eq!(
            NodePath::new("input/.uevd-tmp.victim"),
            Err(NameError::Reserved)
        );
    }

    /// Nodes on a [`DirFs`] in a fresh temporary directory (`mknod` needs root, as CI is).
    fn real_nodes() -> (tempfile::TempDir, Nodes<DirFs>) {
        let dev = tempfile::tempdir().unwrap();
        let fs = DirFs::open(dev.path()).unwrap();
        (dev, Nodes::new(fs))
    }

    fn spec(path: &str, minor: u32) -> NodeSpec {
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        NodeSpec {
            path: NodePath::new(path).unwrap(),
            kind: NodeKind::Char,
            devnum: (1, minor),
            mode: 0o600,
            uid,
            gid,
        }
    }

    #[test]
    fn nodes_in_one_directory_resolve_it_once_and_a_removed_one_is_made_again() {
        let (dev, nodes) = real_nodes();
        nodes.ensure_node(&spec("input/event0", 3)).unwrap();
        assert_eq!(nodes.fs().known_dir("input"), Some(0o755));
        // Someone else removes the remembered directory: it is made again, not an error.
        std::fs::remove_dir_all(dev.path().join("input")).unwrap();
        let again = nodes.ensure_node(&spec("input/event1", 5)).unwrap();
        assert_eq!(again.created_dirs, ["input"]);
        assert!(dev.path().join("input/event1").exists());
        // And one removed and made again as a plain directory is used as it is now.
        std::fs::remove_dir_all(dev.path().join("input")).unwrap();
        std::fs::create_dir(dev.path().join("input")).unwrap();
        nodes.ensure_node(&spec("input/event2", 7)).unwrap();
        assert!(dev.path().join("input/event2").exists());
    }

    #[test]
    fn a_symlink_put_in_place_of_a_remembered_directory_is_refused_after_the_batch() {
        let (dev, nodes) = real_nodes();
        let outside = tempfile::tempdir().unwrap();
        nodes.ensure_node(&spec("snd/a", 3)).unwrap();
        std::fs::remove_dir_all(dev.path().join("snd")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dev.path().join("snd")).unwrap();
        // The daemon forgets resolved directories after each batch of events.
        nodes.fs().forget_dirs();
        let e = nodes.ensure_node(&spec("snd/b", 5)).unwrap_err();
        assert!(matches!(e, NodeError::Unsafe { .. }), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // Within a batch too: the remembered directory is gone, and resolving it afresh
        // refuses the symlink.
        std::fs::remove_file(dev.path().join("snd")).unwrap();
        nodes.ensure_node(&spec("snd/c", 7)).unwrap();
        std::fs::remove_dir_all(dev.path().join("snd")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dev.path().join("snd")).unwrap();
        assert!(nodes.ensure_node(&spec("snd/d", 9)).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
