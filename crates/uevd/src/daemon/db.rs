//! The device database under `RUN/db/`: one record per device, what uevd did for it.
//!
//! Records are what lets a restarted daemon know what it already did (so it neither redoes
//! work nor leaves stale nodes behind), and what subscribers will query. Each is a small text
//! file named by the device id udev uses (`b7:0`, `c10:200`, `n3`, `+subsystem:sysname`),
//! written to a temporary file and renamed into place, so a crash or a full disk leaves either
//! the old record or the new one, never half of one.
//!
//! Format: one `K:value` line each, values escaped (`\\`, `\n`) so a line is always a line:
//! ```text
//! V:1                    format version
//! P:/devices/…           devpath
//! U:block                subsystem
//! I:1234567              CLOCK_MONOTONIC µs when first initialised
//! N:b 7:0 0660 0 6 loop0 node: kind, devnum, mode, uid, gid, name (relative to --dev)
//! D:input                a directory created for the node (pruned on remove)
//! S:disk/by-id/x         a symlink to the node
//! G:seat                 a tag
//! E:KEY=VALUE            a property (kernel's, then policy's)
//! ```

use super::nodes::{NodeKind, NodePath, NodeSpec};
use rustix::fs::{Mode, OFlags};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use uevd_wire::Uevent;

/// The node a device has: what was made, and the directories made for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node.
    pub spec: NodeSpec,
    /// Directories created for it, outermost first (pruned on remove).
    pub created_dirs: Vec<String>,
}

/// Everything uevd knows about one processed device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device path.
    pub devpath: String,
    /// The subsystem.
    pub subsystem: String,
    /// CLOCK_MONOTONIC µs of the first time uevd handled the device; kept across events.
    pub usec_initialized: u64,
    /// The device node, if it has one.
    pub node: Option<NodeRecord>,
    /// Symlinks to the node.
    pub symlinks: Vec<NodePath>,
    /// Tags.
    pub tags: Vec<String>,
    /// Properties: the kernel's (without ACTION/SEQNUM), then the policy's.
    pub properties: Vec<(String, String)>,
    /// The node is watched for writers closing it (`OPTIONS+="watch"`); kept so watches
    /// survive a restart.
    pub watch: bool,
}

/// Why the database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A filesystem operation failed.
    #[error("device database: cannot {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A record that does not parse.
    #[error("device database: corrupt record {path}, line {line}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// The id udev gives a device, used as the record's file name: `b`/`c` + `MAJOR:MINOR` for
/// devices with a node, `n` + ifindex for network interfaces, else `+subsystem:sysname`
/// (`+drivers:bus:name` for drivers).
pub fn device_id(
    devpath: &str,
    subsystem: &str,
    devnum: Option<(u32, u32)>,
    ifindex: Option<u32>,
) -> String {
    if let Some((major, minor)) = devnum.filter(|&(major, _)| major > 0) {
        let kind = if subsystem == "block" { 'b' } else { 'c' };
        return format!("{kind}{major}:{minor}");
    }
    if let Some(i) = ifindex.filter(|&i| i > 0) {
        return format!("n{i}");
    }
    let mut parts = devpath.rsplit('/');
    let sysname = parts.next().unwrap_or_default();
    if subsystem == "drivers" {
        // /bus/<bus>/drivers/<name>
        let bus = parts.nth(1).unwrap_or_default();
        return format!("+drivers:{bus}:{sysname}");
    }
    format!("+{subsystem}:{sysname}")
}

/// The id of the device an event is about.
pub fn event_device_id(event: &Uevent) -> String {
    device_id(
        event.devpath(),
        event.subsystem(),
        event.devnum(),
        event.ifindex(),
    )
}

impl DeviceRecord {
    /// The record's id (file name).
    pub fn id(&self) -> String {
        let get = |k: &str| {
            self.properties
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.parse::<u32>().ok())
        };
        let devnum = get("MAJOR").zip(get("MINOR"));
        device_id(&self.devpath, &self.subsystem, devnum, get("IFINDEX"))
    }

    /// The last value of property `key`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Serialises the record.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(256);
        let _ = writeln!(out, "V:1");
        let _ = writeln!(out, "P:{}", escape(&self.devpath));
        let _ = writeln!(out, "U:{}", escape(&self.subsystem));
        let _ = writeln!(out, "I:{}", self.usec_initialized);
        if let Some(NodeRecord {
            spec: n,
            created_dirs,
        }) = &self.node
        {
            let _ = writeln!(
                out,
                "N:{} {}:{} {:04o} {} {} {}",
                n.kind.letter(),
                n.devnum.0,
                n.devnum.1,
                n.mode,
                n.uid,
                n.gid,
                escape(n.path.as_str())
            );
            for d in created_dirs {
                let _ = writeln!(out, "D:{}", escape(d));
            }
        }
        for s in &self.symlinks {
            let _ = writeln!(out, "S:{}", escape(s.as_str()));
        }
        for t in &self.tags {
            let _ = writeln!(out, "G:{}", escape(t));
        }
        if self.watch {
            let _ = writeln!(out, "W:1");
        }
        for (k, v) in &self.properties {
            let _ = writeln!(out, "E:{}={}", escape(k), escape(v));
        }
        out
    }

    /// Parses a record; `path` is only for error messages.
    pub fn parse(text: &str, path: &Path) -> Result<DeviceRecord, DbError> {
        let corrupt = |line: usize, what: String| DbError::Corrupt {
            path: path.to_owned(),
            line,
            what,
        };
        let mut rec = DeviceRecord {
            devpath: String::new(),
            subsystem: String::new(),
            usec_initialized: 0,
            node: None,
            symlinks: Vec::new(),
            tags: Vec::new(),
            properties: Vec::new(),
            watch: false,
        };
        let mut dirs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| corrupt(n, format!("no ':' in {line:?}")))?;
            let value = unescape(value).ok_or_else(|| corrupt(n, "bad escape".into()))?;
            match key {
                "V" if value == "1" => {}
                "V" => return Err(corrupt(n, format!("unknown version {value}"))),
                "P" => rec.devpath = value,
                "U" => rec.subsystem = value,
                "I" => {
                    rec.usec_initialized = value
                        .parse()
                        .map_err(|_| corrupt(n, format!("bad time {value:?}")))?
                }
                "N" => {
                    rec.node = Some(
                        parse_node(&value)
                            .ok_or_else(|| corrupt(n, format!("bad node {value:?}")))?,
                    )
                }
                "D" => dirs.push(value),
                "S" => rec.symlinks.push(
                    NodePath::new(&value)
                        .map_err(|e| corrupt(n, format!("bad symlink {value:?}: {e}")))?,
                ),
                "G" => rec.tags.push(value),
                "W" => rec.watch = value == "1",
                "E" => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| corrupt(n, format!("property without '=': {value:?}")))?;
                    rec.properties.push((k.to_owned(), v.to_owned()));
                }
                // Unknown keys are skipped: a newer uevd may add some.
                _ => {}
            }
        }
        if rec.devpath.is_empty() || rec.subsystem.is_empty() {
            return Err(corrupt(0, "missing P: or U: line".into()));
        }
        if let Some(node) = &mut rec.node {
            node.created_dirs = dirs;
        }
        Ok(rec)
    }
}

fn parse_node(value: &str) -> Option<NodeRecord> {
    let mut f = value.splitn(6, ' ');
    let kind = match f.next()? {
        "c" => NodeKind::Char,
        "b" => NodeKind::Block,
        _ => return None,
    };
    let (major, minor) = f.next()?.split_once(':')?;
    let devnum = (major.parse().ok()?, minor.parse().ok()?);
    let mode = u32::from_str_radix(f.next()?, 8).ok()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let path = NodePath::new(f.next()?).ok()?;
    Some(NodeRecord {
        spec: NodeSpec {
            path,
            kind,
            devnum,
            mode,
            uid,
            gid,
        },
        created_dirs: Vec::new(),
    })
}

fn escape(s: &str) -> String {
    if !s.contains(['\\', '\n']) {
        return s.to_owned();
    }
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// `write` until everything is written (a full disk fails with ENOSPC, naming the record).
fn write_all(fd: &rustix::fd::OwnedFd, mut bytes: &[u8]) -> Result<(), rustix::io::Errno> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(rustix::io::Errno::NOSPC),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The database directory.
pub struct Db {
    dir: PathBuf,
    /// The directory, open: records are written relative to it (no path walk per write).
    fd: rustix::fd::OwnedFd,
}

impl Db {
    /// Opens (creating if needed) `RUN/db`.
    pub fn open(run: &Path) -> Result<Db, DbError> {
        let dir = run.join("db");
        let io = |source| DbError::Io {
            op: "create",
            path: dir.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io)?;
        let fd = rustix::fs::open(
            &dir,
            OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        Ok(Db { dir, fd })
    }

    /// Where record `id` lives.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Reads every record. Corrupt ones are returned as errors alongside the good ones (and
    /// left in place for inspection); leftover temporary files from a crash are removed.
    pub fn load_all(&self) -> Result<(Vec<DeviceRecord>, Vec<DbError>), DbError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| DbError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(".tmp.") {
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read_to_string(&path) {
                Ok(text) => match DeviceRecord::parse(&text, &path) {
                    Ok(r) => records.push(r),
                    Err(e) => errors.push(e),
                },
                Err(source) => errors.push(DbError::Io {
                    op: "read",
                    path,
                    source,
                }),
            }
        }
        Ok((records, errors))
    }

    /// Writes `record` crash-safely under `id`: to a temporary file, then renamed over the
    /// old one, so readers and a crash see either the old record or the new one.
    pub fn write(&self, id: &str, record: &DeviceRecord) -> Result<(), DbError> {
        let tmp = format!(".tmp.{id}");
        let io = |op, source: rustix::io::Errno| DbError::Io {
            op,
            path: self.dir.join(id),
            source: source.into(),
        };
        let text = record.to_text();
        let fd = rustix::fs::openat(
            &self.fd,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io("create", e))?;
        let result = write_all(&fd, text.as_bytes())
            .map_err(|e| io("write", e))
            .and_then(|()| {
                drop(fd);
                rustix::fs::renameat(&self.fd, &tmp, &self.fd, id).map_err(|e| io("rename", e))
            });
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, rustix::fs::AtFlags::empty());
        }
        result
    }

    /// Removes record `id` (absent is fine).
    pub fn remove(&self, id: &str) -> Result<(), DbError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DbError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DeviceRecord {
        DeviceRecord {
            devpath: "/devices/virtual/input/input3/event3".into(),
            subsystem: "input".into(),
            usec_initialized: 123456,
            node: Some(NodeRecord {
                spec: NodeSpec {
                    path: NodePath::new("input/event3").unwrap(),
                    kind: NodeKind::Char,
                    devnum: (13, 67),
                    mode: 0o660,
                    uid: 0,
                    gid: 104,
                },
                created_dirs: vec!["input".into()],
            }),
            symlinks: vec![NodePath::new("input/by-path/kbd").unwrap()],
            tags: vec!["seat".into()],
            properties: vec![
                ("MAJOR".into(), "13".into()),
                ("MINOR".into(), "67".into()),
                ("ODD".into(), "a\\b\nc=d".into()),
            ],
            watch: true,
        }
    }

    #[test]
    fn records_round_trip_including_awkward_values() {
        let r = record();
        let text = r.to_text();
        assert!(
            text.contains("N:c 13:67 0660 0 104 input/event3\n"),
            "{text}"
        );
        assert!(text.contains("E:ODD=a\\\\b\\nc=d\n"), "{text}");
        assert!(text.contains("W:1\n"), "{text}");
        assert_eq!(text.lines().count(), 12);
        assert_eq!(DeviceRecord::parse(&text, Path::new("x")).unwrap(), r);
        assert_eq!(r.id(), "c13:67");
    }

    #[test]
    fn corrupt_records_name_file_and_line() {
        let e = DeviceRecord::parse(
            "V:1\nP:/devices/x\nU:t\nI:soon\n",
            Path::new("/run/uevd/db/+t:x"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "device database: corrupt record /run/uevd/db/+t:x, line 4: bad time \"soon\""
        );
        let e = DeviceRecord::parse("V:1\nP:/devices/x\n", Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("missing P: or U: line"));
        let e = DeviceRecord::parse("V:1\nP:/d\nU:t\nS:../etc\n", Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("bad symlink"), "{e}");
    }

    #[test]
    fn ids_follow_udev() {
        assert_eq!(
            device_id("/devices/virtual/block/loop0", "block", Some((7, 0)), None),
            "b7:0"
        );
        assert_eq!(
            device_id("/devices/virtual/mem/null", "mem", Some((1, 3)), None),
            "c1:3"
        );
        assert_eq!(
            device_id("/devices/virtual/net/lo", "net", None, Some(1)),
            "n1"
        );
        assert_eq!(
            device_id("/devices/system/cpu/cpu0", "cpu", None, None),
            "+cpu:cpu0"
        );
        assert_eq!(device_id("/devices/x/y", "t", Some((0, 5)), None), "+t:y");
        assert_eq!(
            device_id("/bus/usb/drivers/hub", "drivers", None, None),
            "+drivers:usb:hub"
        );
    }

    #[test]
    fn write_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let r = record();
        db.write(&r.id(), &r).unwrap();
        std::fs::write(dir.path().join("db/.tmp.crashed"), "half").unwrap();
        std::fs::write(dir.path().join("db/+bad:x"), "garbage").unwrap();
        let (records, errors) = db.load_all().unwrap();
        assert_eq!(records, std::slice::from_ref(&r));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("+bad:x"), "{}", errors[0]);
        assert!(
            !dir.path().join("db/.tmp.crashed").exists(),
            "crash leftovers are removed"
        );
        db.remove(&r.id()).unwrap();
        db.remove(&r.id()).unwrap();
        assert!(!db.path(&r.id()).exists());
    }
}
