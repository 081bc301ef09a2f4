//! The device database under `RUN/db/`: what uevd did for each device.
//!
//! Records are what lets a restarted daemon know what it already did (so it neither redoes
//! work nor leaves stale nodes behind), and what subscribers will query. The daemon's memory
//! holds the truth; the database is its durable image, kept as
//!
//! - `RUN/db/journal`: every change appended as one framed, checksummed entry — a record
//!   replacing the device's previous one, or a removal. Entries are buffered and written with
//!   one `write` per turn of the event loop, so a burst of events costs one system call
//!   rather than four file operations per device (temp file, write, close, rename: 20 µs per
//!   event on tmpfs, three quarters of the daemon's time).
//! - `RUN/db/snapshot`: every live record, written to a temporary file and renamed into
//!   place when the journal has grown past the live data; the journal then starts again.
//!
//! Loading reads the snapshot, then replays the journal. A torn tail (a crash or a full disk
//! in the middle of a write) fails its length or checksum: it and everything after it are
//! dropped and reported, and the file is cut back to its last good entry, so nothing after
//! it is appended behind garbage. A crash between renaming a snapshot and emptying the
//! journal is harmless: replaying entries that the snapshot already holds ends in the same
//! state, because each entry is a device's complete record.
//!
//! Entry framing (the id escaped like values; the sum is FNV-1a 64 of id and payload):
//! ```text
//! R <payload length> <sum, 16 hex digits> <id>\n<payload: the record's lines>
//! X 0 <sum> <id>\n
//! ```
//! A record's lines (`K:value`, values escaped (`\\`, `\n`) so a line is always a line):
//! ```text
//! V:1                    format version
//! P:/devices/…           devpath
//! U:block                subsystem
//! I:1234567              CLOCK_MONOTONIC µs when first initialised
//! N:b 7:0 0660 0 6 loop0 node: kind, devnum, mode, uid, gid, name (relative to --dev)
//! D:input                a directory created for the node (pruned on remove)
//! S:disk/by-id/x         a symlink to the node
//! G:seat                 a tag
//! W:1                    the node is watched
//! E:KEY=VALUE            a property (kernel's, then policy's)
//! ```

use super::nodes::{NodeKind, NodePath, NodeSpec};
use rustix::fs::{Mode, OFlags};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use uevd_rules::eval::Properties;
use uevd_wire::{push_decimal, Uevent};

/// The node a device has: what was made, and the directories made for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node.
    pub spec: NodeSpec,
    /// Directories created for it, outermost first (a record of what was made; on remove,
    /// whatever parents are left empty go, whoever made them).
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
    pub properties: Properties,
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
    /// A journal or snapshot ends in a damaged entry (a crash or a full disk mid-write).
    #[error(
        "device database: {path} is damaged at byte {offset}: dropped the last {dropped} byte(s)"
    )]
    Torn {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// Bytes dropped from there on.
        dropped: u64,
    },
    /// Damaged bytes in the middle of a journal or snapshot, skipped: the entries before and
    /// after them are kept, the ones in them lost (coldplug reconciles those devices).
    #[error(
        "device database: {path} is damaged at bytes {from}..{to}: skipped them, kept the entries around them"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        from: u64,
        /// Where the next good entry starts.
        to: u64,
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
        // Built by hand: this runs for every event, and `format!` costs a few times more.
        let mut id = Vec::with_capacity(16);
        id.push(if subsystem == "block" { b'b' } else { b'c' });
        push_decimal(&mut id, u64::from(major));
        id.push(b':');
        push_decimal(&mut id, u64::from(minor));
        return String::from_utf8(id).unwrap_or_default();
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
        let get = |k: &str| self.properties.get(k).and_then(|v| v.parse::<u32>().ok());
        let devnum = get("MAJOR").zip(get("MINOR"));
        device_id(&self.devpath, &self.subsystem, devnum, get("IFINDEX"))
    }

    /// The last value of property `key`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key)
    }

    /// Serialises the record.
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_text(&mut out);
        // Every piece written is a `&str` or ASCII, so the bytes are UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the serialised record to `out` (the journal buffer), without building
    /// intermediate strings: this runs once per processed event.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"V:1\nP:");
        escape_into(out, &self.devpath);
        out.extend_from_slice(b"\nU:");
        escape_into(out, &self.subsystem);
        out.extend_from_slice(b"\nI:");
        push_decimal(out, self.usec_initialized);
        out.push(b'\n');
        if let Some(NodeRecord {
            spec: n,
            created_dirs,
        }) = &self.node
        {
            out.extend_from_slice(b"N:");
            out.push(n.kind.letter() as u8);
            out.push(b' ');
            push_decimal(out, u64::from(n.devnum.0));
            out.push(b':');
            push_decimal(out, u64::from(n.devnum.1));
            out.push(b' ');
            for shift in [9, 6, 3, 0] {
                out.push(b'0' + ((n.mode >> shift) & 7) as u8);
            }
            out.push(b' ');
            push_decimal(out, u64::from(n.uid));
            out.push(b' ');
            push_decimal(out, u64::from(n.gid));
            out.push(b' ');
            escape_into(out, n.path.as_str());
            out.push(b'\n');
            for d in created_dirs {
                line(out, b"D:", d);
            }
        }
        for s in &self.symlinks {
            line(out, b"S:", s.as_str());
        }
        for t in &self.tags {
            line(out, b"G:", t);
        }
        if self.watch {
            out.extend_from_slice(b"W:1\n");
        }
        for (k, v) in self.properties.iter() {
            out.extend_from_slice(b"E:");
            escape_into(out, k);
            out.push(b'=');
            escape_into(out, v);
            out.push(b'\n');
        }
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
            properties: Properties::default(),
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
                    rec.properties.set(k, v);
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

/// Appends `s` with `\\` and newlines escaped (the format is line-based).
fn escape_into(out: &mut Vec<u8>, s: &str) {
    // Values are short and almost never need escaping: one plain scan, then one copy. (A
    // vectorised memchr2 costs more than it saves on strings this short.)
    if !s.bytes().any(|b| b == b'\\' || b == b'\n') {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(b),
        }
    }
}

/// Appends `tag`, the escaped `value` and a newline.
fn line(out: &mut Vec<u8>, tag: &[u8], value: &str) {
    out.extend_from_slice(tag);
    escape_into(out, value);
    out.push(b'\n');
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

/// `write` until everything is written (a full disk fails with ENOSPC).
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

/// FNV-1a, 64 bits: catches torn and zero-filled tails; not a defence against forgery (the
/// directory is root's).
fn checksum(id: &[u8], payload: &[u8]) -> u64 {
    super::hash::fnv1a(id.iter().chain(payload))
}

/// Appends one entry: a record (`Some`) or a removal (`None`). The header goes in first with
/// fixed-width length and checksum fields that are filled in once the payload is written
/// behind it, so the record is serialised straight into the buffer. (Replay parses the
/// length as a number, so zero-padding reads back the same as older, unpadded headers.)
fn append_entry(out: &mut Vec<u8>, id: &str, record: Option<&DeviceRecord>) {
    let header_at = out.len();
    out.extend_from_slice(if record.is_some() { b"R " } else { b"X " });
    let len_at = out.len();
    out.extend_from_slice(b"0000000000 0000000000000000 ");
    let id_at = out.len();
    escape_into(out, id);
    out.push(b'\n');
    let payload_at = out.len();
    if let Some(record) = record {
        record.write_text(out);
    }
    let sum = checksum(&out[id_at..payload_at - 1], &out[payload_at..]);
    let len = out.len() - payload_at;
    if len >= 10_000_000_000 {
        // No device has a 10 GB record; refuse rather than corrupt the frame.
        out.truncate(header_at);
        return;
    }
    fill_digits::<10>(&mut out[len_at..len_at + 10], len as u64);
    fill_digits::<16>(&mut out[len_at + 11..len_at + 27], sum);
}

/// Writes `n` into `field` in `RADIX` (10 or 16, lower-case), right-aligned and zero-padded;
/// `field` is wide enough for every value the caller passes. (A constant radix lets the
/// compiler turn the divisions into multiplications and shifts.)
fn fill_digits<const RADIX: u64>(field: &mut [u8], mut n: u64) {
    for slot in field.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(n % RADIX) as usize];
        n /= RADIX;
    }
}

/// The records by id, as entries are replayed over them.
type Live = HashMap<String, DeviceRecord>;

/// Replays the entries of `bytes` over `live`, in order. Returns corrupt records (framed
/// correctly but unreadable, e.g. from a newer uevd) and damaged stretches as errors, and
/// where the good entries end: a damaged stretch with good entries after it is skipped (only
/// its own entries are lost), one at the end is a torn tail, cut off by the caller.
fn replay(bytes: &[u8], path: &Path, live: &mut Live) -> (Vec<DbError>, usize) {
    let mut errors = Vec::new();
    let (mut at, mut good_end) = (0, 0);
    while at < bytes.len() {
        if let Some(entry_len) = replay_entry(&bytes[at..], path, live, &mut errors) {
            at += entry_len;
            good_end = at;
            continue;
        }
        // Entries start after a newline; the next one that checks out is where it goes on.
        let next = (at + 1..bytes.len())
            .filter(|&p| bytes[p - 1] == b'\n')
            .find(|&p| entry_checks_out(&bytes[p..]));
        let Some(next) = next else { break };
        errors.push(DbError::Damaged {
            path: path.to_owned(),
            from: at as u64,
            to: next as u64,
        });
        at = next;
    }
    (errors, good_end)
}

/// Whether a whole, intact entry starts `bytes` (header and checksum), without replaying it.
fn entry_checks_out(bytes: &[u8]) -> bool {
    let Some(eol) = bytes.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let Ok(header) = std::str::from_utf8(&bytes[..eol]) else {
        return false;
    };
    let mut fields = header.splitn(4, ' ');
    let (Some("R" | "X"), Some(len), Some(sum), Some(id)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let (Ok(len), Ok(sum)) = (len.parse::<usize>(), u64::from_str_radix(sum, 16)) else {
        return false;
    };
    bytes
        .get(eol + 1..eol + 1 + len)
        .is_some_and(|payload| checksum(id.as_bytes(), payload) == sum)
}

/// Replays the entry at the start of `bytes`; `None` if it is torn or garbled.
fn replay_entry(
    bytes: &[u8],
    path: &Path,
    live: &mut Live,
    errors: &mut Vec<DbError>,
) -> Option<usize> {
    let eol = bytes.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..eol]).ok()?;
    let mut fields = header.splitn(4, ' ');
    let (tag, len, sum, id) = (
        fields.next()?,
        fields.next()?.parse::<usize>().ok()?,
        u64::from_str_radix(fields.next()?, 16).ok()?,
        fields.next()?,
    );
    let payload = bytes.get(eol + 1..eol + 1 + len)?;
    if checksum(id.as_bytes(), payload) != sum {
        return None;
    }
    let id = unescape(id)?;
    match tag {
        "R" => {
            let parsed = std::str::from_utf8(payload)
                .map_err(|_| DbError::Corrupt {
                    path: path.to_owned(),
                    line: 0,
                    what: format!("record {id} is not UTF-8"),
                })
                .and_then(|text| DeviceRecord::parse(text, &path.join(&id)));
            match parsed {
                Ok(record) => {
                    live.insert(id, record);
                }
                Err(e) => {
                    errors.push(e);
                    // What the record replaced is stale either way.
                    live.remove(&id);
                }
            }
        }
        "X" if len == 0 => {
            live.remove(&id);
        }
        _ => return None,
    }
    Some(eol + 1 + len)
}

/// The journal file and where it stands; only the event thread writes it.
struct Journal {
    file: rustix::fd::OwnedFd,
    /// Bytes of good entries in the file.
    len: u64,
    /// A flush failed and its entries were dropped: only a snapshot of the daemon's memory
    /// makes the database whole again.
    lost: bool,
    /// The buffer the last flush wrote, kept for the next swap.
    spare: Vec<u8>,
}

/// Pending entries kept at most while writing fails (a full disk); beyond this they are
/// dropped and the next snapshot restores the database from memory.
const MAX_PENDING: usize = 16 << 20;
/// The journal is compacted into a snapshot once it is this large…
const COMPACT_MIN: u64 = 4 << 20;
/// …and this many times the size of the live records.
const COMPACT_RATIO: u64 = 2;

/// The device database.
pub struct Db {
    dir: PathBuf,
    /// The directory, open: files are handled relative to it.
    dirfd: rustix::fd::OwnedFd,
    journal: std::sync::Mutex<Journal>,
    /// Entries waiting for the next flush. A lock of its own, held only to append or to swap
    /// the buffer: workers append while the event thread writes the previous batch.
    pending: std::sync::Mutex<Vec<u8>>,
}

impl Db {
    /// Opens (creating if needed) `RUN/db` and its journal.
    pub fn open(run: &Path) -> Result<Db, DbError> {
        let dir = run.join("db");
        let io = |op, path: &Path, source: io::Error| DbError::Io {
            op,
            path: path.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| io("create", &dir, e))?;
        let dirfd = rustix::fs::open(
            &dir,
            OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open", &dir, e.into()))?;
        let file = rustix::fs::openat(
            &dirfd,
            JOURNAL,
            OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io("open", &dir.join(JOURNAL), e.into()))?;
        let len = rustix::fs::fstat(&file)
            .map_err(|e| io("stat", &dir.join(JOURNAL), e.into()))?
            .st_size as u64;
        Ok(Db {
            dir,
            dirfd,
            journal: std::sync::Mutex::new(Journal {
                file,
                len,
                lost: false,
                spare: Vec::new(),
            }),
            pending: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A worker that panicked mid-append leaves at worst a partial entry, which the next
        // load drops as torn.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The journal file.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    /// Reads every record: the snapshot, then the journal replayed over it. Damaged entries
    /// are reported alongside the good records; a torn journal tail is cut off so appends go
    /// on from the last good entry.
    pub fn load_all(&self) -> Result<(Vec<DeviceRecord>, Vec<DbError>), DbError> {
        let (records, errors, good_len) = read_dir_records(&self.dir)?;
        let mut journal = self.journal();
        // Damage kept in the middle of a file is rewritten away by the next snapshot.
        journal.lost |= errors.iter().any(|e| matches!(e, DbError::Damaged { .. }));
        if good_len < journal.len {
            rustix::fs::ftruncate(&journal.file, good_len).map_err(|e| DbError::Io {
                op: "truncate",
                path: self.journal_path(),
                source: e.into(),
            })?;
            journal.len = good_len;
        }
        Ok((records, errors))
    }

    /// Records `record` as device `id`'s (written at the next [`Db::flush`]).
    pub fn write(&self, id: &str, record: &DeviceRecord) {
        append_entry(&mut self.pending(), id, Some(record));
    }

    /// Records that device `id` is gone (written at the next [`Db::flush`]).
    pub fn remove(&self, id: &str) {
        append_entry(&mut self.pending(), id, None);
    }

    /// Writes the pending entries with one system call. On failure (a full disk) the file is
    /// cut back to its last good entry and the entries are kept for the next try — up to
    /// `MAX_PENDING` bytes, beyond which they are dropped and [`Db::needs_snapshot`] says so.
    pub fn flush(&self) -> Result<(), DbError> {
        let mut journal = self.journal();
        let mut bytes = {
            let mut pending = self.pending();
            if pending.is_empty() {
                return Ok(());
            }
            std::mem::replace(&mut *pending, std::mem::take(&mut journal.spare))
        };
        // Written without holding `pending`: workers go on appending meanwhile.
        match write_all(&journal.file, &bytes) {
            Ok(()) => {
                journal.len += bytes.len() as u64;
                bytes.clear();
                if bytes.capacity() <= 1 << 20 {
                    journal.spare = bytes;
                }
                Ok(())
            }
            Err(e) => {
                let _ = rustix::fs::ftruncate(&journal.file, journal.len);
                // The entries appended meanwhile belong after the ones that failed.
                let mut pending = self.pending();
                bytes.extend_from_slice(&pending);
                *pending = bytes;
                if pending.len() > MAX_PENDING {
                    *pending = Vec::new();
                    journal.lost = true;
                }
                Err(DbError::Io {
                    op: "append to",
                    path: self.journal_path(),
                    source: e.into(),
                })
            }
        }
    }

    /// Gives back the write buffer's memory once everything is written, after a burst grew it.
    pub fn release_buffer(&self) {
        self.journal().spare = Vec::new();
        let mut pending = self.pending();
        if pending.is_empty() {
            *pending = Vec::new();
        }
    }

    /// Whether it is time to write a snapshot of the `live_bytes` of live records: the
    /// journal has grown well past them, or entries were lost.
    pub fn needs_snapshot(&self, live_records: usize) -> bool {
        let j = self.journal();
        // A record is a few hundred bytes; the estimate only has to be the right size.
        let live_bytes = live_records as u64 * 512;
        j.lost || (j.len >= COMPACT_MIN && j.len >= COMPACT_RATIO * live_bytes)
    }

    /// Replaces the database by `records` (the daemon's complete view): a new snapshot,
    /// renamed into place, and an empty journal. Entries still pending are kept for the new
    /// journal. Call it only when no event is being processed, or entries written between the
    /// view and the snapshot would be lost with the old journal.
    pub fn snapshot<'a>(
        &self,
        records: impl IntoIterator<Item = &'a DeviceRecord>,
    ) -> Result<(), DbError> {
        let mut bytes = Vec::new();
        for r in records {
            append_entry(&mut bytes, &r.id(), Some(r));
        }
        let path = self.dir.join(SNAPSHOT);
        let io = |op, source: rustix::io::Errno| DbError::Io {
            op,
            path: path.clone(),
            source: source.into(),
        };
        let fd = rustix::fs::openat(
            &self.dirfd,
            SNAPSHOT_TMP,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io("create", e))?;
        let written = write_all(&fd, &bytes).map_err(|e| io("write", e));
        drop(fd);
        let renamed = written.and_then(|()| {
            rustix::fs::renameat(&self.dirfd, SNAPSHOT_TMP, &self.dirfd, SNAPSHOT)
                .map_err(|e| io("rename", e))
        });
        if let Err(e) = renamed {
            let _ = rustix::fs::unlinkat(&self.dirfd, SNAPSHOT_TMP, rustix::fs::AtFlags::empty());
            return Err(e);
        }
        let mut j = self.journal();
        rustix::fs::ftruncate(&j.file, 0).map_err(|e| DbError::Io {
            op: "truncate",
            path: self.journal_path(),
            source: e.into(),
        })?;
        j.len = 0;
        j.lost = false;
        Ok(())
    }
}

/// The journal's file name in `RUN/db`.
const JOURNAL: &str = "journal";
/// The snapshot's file name in `RUN/db`.
const SNAPSHOT: &str = "snapshot";
/// Where a snapshot is written before it is renamed into place.
const SNAPSHOT_TMP: &str = ".snapshot.tmp";

/// Reads the database in `dir` (`RUN/db`) without changing it: the records (parents before
/// children), damaged entries, and the length of the journal's good prefix.
fn read_dir_records(dir: &Path) -> Result<(Vec<DeviceRecord>, Vec<DbError>, u64), DbError> {
    let read = |name: &str| -> Result<Vec<u8>, DbError> {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(DbError::Io {
                op: "read",
                path,
                source,
            }),
        }
    };
    let mut live = Live::new();
    let mut errors = Vec::new();
    let mut journal_good = 0;
    for name in [SNAPSHOT, JOURNAL] {
        let path = dir.join(name);
        let bytes = read(name)?;
        let (bad, good) = replay(&bytes, &path, &mut live);
        errors.extend(bad);
        if good < bytes.len() {
            errors.push(DbError::Torn {
                path,
                offset: good as u64,
                dropped: (bytes.len() - good) as u64,
            });
        }
        journal_good = good as u64;
    }
    let mut records: Vec<DeviceRecord> = live.into_values().collect();
    records.sort_by(|a, b| uevd_sysfs::tree_order(&a.devpath, &b.devpath));
    Ok((records, errors, journal_good))
}

/// Reads the database of a daemon using `run`, without changing anything (for tools and
/// tests; the daemon itself uses [`Db::load_all`]).
pub fn read(run: &Path) -> Result<(Vec<DeviceRecord>, Vec<DbError>), DbError> {
    let (records, errors, _) = read_dir_records(&run.join("db"))?;
    Ok((records, errors))
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
            properties: Properties::from_pairs([
                ("MAJOR", "13"),
                ("MINOR", "67"),
                ("ODD", "a\\b\nc=d"),
            ]),
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

    fn other(n: u32) -> DeviceRecord {
        DeviceRecord {
            devpath: format!("/devices/virtual/t/d{n}"),
            subsystem: "t".into(),
            usec_initialized: u64::from(n),
            node: None,
            symlinks: Vec::new(),
            tags: Vec::new(),
            properties: Properties::from_pairs([("N", n.to_string())]),
            watch: false,
        }
    }

    #[test]
    fn entries_are_written_at_flush_and_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let r = record();
        db.write(&r.id(), &r);
        assert_eq!(read(dir.path()).unwrap().0, [], "nothing before the flush");
        db.flush().unwrap();
        assert_eq!(read(dir.path()).unwrap().0, std::slice::from_ref(&r));
        let (a, b) = (other(1), other(2));
        db.write(&a.id(), &a);
        db.write(&b.id(), &b);
        db.remove(&r.id());
        let mut a2 = a.clone();
        a2.tags.push("changed".into());
        db.write(&a2.id(), &a2);
        db.flush().unwrap();
        drop(db);
        let db = Db::open(dir.path()).unwrap();
        let (records, errors) = db.load_all().unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records, [a2, b]);
    }

    #[test]
    fn a_torn_tail_is_reported_cut_off_and_appended_after() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let (a, b, c) = (other(1), other(2), other(3));
        db.write(&a.id(), &a);
        db.write(&b.id(), &b);
        db.flush().unwrap();
        let path = db.journal_path();
        let full = std::fs::read(&path).unwrap();
        drop(db);
        // A crash in the middle of the second entry, then zeros as a disk may leave them.
        let mut torn = full[..full.len() - 10].to_vec();
        torn.extend_from_slice(&[0; 64]);
        std::fs::write(&path, &torn).unwrap();
        let db = Db::open(dir.path()).unwrap();
        let (records, errors) = db.load_all().unwrap();
        assert_eq!(records, std::slice::from_ref(&a));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let msg = errors[0].to_string();
        assert!(msg.contains("journal is damaged at byte"), "{msg}");
        db.write(&c.id(), &c);
        db.flush().unwrap();
        let (records, errors) = read(dir.path()).unwrap();
        assert!(
            errors.is_empty(),
            "appends follow the last good entry: {errors:?}"
        );
        assert_eq!(records, [a, c]);
    }

    #[test]
    fn damage_in_the_middle_costs_only_the_entries_it_hits() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let all: Vec<DeviceRecord> = (1..=100).map(other).collect();
        for r in &all {
            db.write(&r.id(), r);
        }
        db.flush().unwrap();
        let mut bytes = std::fs::read(db.journal_path()).unwrap();
        let at = bytes.len() / 10;
        bytes[at] ^= 0x01;
        std::fs::write(db.journal_path(), &bytes).unwrap();
        drop(db);
        let db = Db::open(dir.path()).unwrap();
        let (records, errors) = db.load_all().unwrap();
        assert_eq!(records.len(), 99, "one entry lost, not the 90 after it");
        assert!(
            matches!(&errors[..], [DbError::Damaged { .. }]),
            "{errors:?}"
        );
        assert!(errors[0]
            .to_string()
            .contains("skipped them, kept the entries around them"));
        assert!(db.needs_snapshot(99), "a snapshot rewrites the damage away");
        let records: Vec<&DeviceRecord> = records.iter().collect();
        db.snapshot(records.iter().copied()).unwrap();
        let (again, errors) = read(dir.path()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(again.len(), 99);
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let (a, b) = (other(1), other(2));
        db.write(&a.id(), &a);
        db.write(&b.id(), &b);
        db.flush().unwrap();
        let mut bytes = std::fs::read(db.journal_path()).unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 0x20;
        std::fs::write(db.journal_path(), &bytes).unwrap();
        let (records, errors) = read(dir.path()).unwrap();
        assert_eq!(records, [a]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn snapshots_compact_and_survive_a_crash_before_the_journal_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let live: Vec<DeviceRecord> = (0..10).map(other).collect();
        for round in 0..50 {
            for r in &live {
                let mut r = r.clone();
                r.usec_initialized = round;
                db.write(&r.id(), &r);
            }
        }
        for r in &live {
            db.write(&r.id(), r);
        }
        db.flush().unwrap();
        let before = std::fs::read(db.journal_path()).unwrap();
        db.snapshot(&live).unwrap();
        assert_eq!(std::fs::metadata(db.journal_path()).unwrap().len(), 0);
        let (mut records, errors) = read(dir.path()).unwrap();
        records.sort_by_key(|r| r.usec_initialized);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records, live);
        // As if the daemon died between renaming the snapshot and emptying the journal: the
        // replay ends in the same state.
        std::fs::write(db.journal_path(), &before).unwrap();
        let (mut records, _) = read(dir.path()).unwrap();
        records.sort_by_key(|r| r.usec_initialized);
        assert_eq!(records, live);
    }

    #[test]
    fn snapshot_is_due_when_the_journal_outgrows_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let r = other(1);
        assert!(!db.needs_snapshot(1));
        let per_entry = {
            let mut b = Vec::new();
            append_entry(&mut b, &r.id(), Some(&r));
            b.len() as u64
        };
        for _ in 0..=COMPACT_MIN / per_entry {
            db.write(&r.id(), &r);
        }
        db.flush().unwrap();
        assert!(db.needs_snapshot(1));
        assert!(
            !db.needs_snapshot(100_000),
            "not while the live records are as large"
        );
        db.snapshot([&r]).unwrap();
        assert!(!db.needs_snapshot(1));
    }

    #[test]
    fn ids_with_spaces_and_newlines_are_framed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut r = other(1);
        r.devpath = "/devices/platform/Fixed MDIO bus.0".into();
        r.subsystem = "odd\nname".into();
        db.write(&r.id(), &r);
        db.remove("+t:with space");
        db.flush().unwrap();
        let (records, errors) = read(dir.path()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records, [r]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_flush_keeps_the_entries_and_the_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let a = other(1);
        db.write(&a.id(), &a);
        db.flush().unwrap();
        // Swap the journal's descriptor for a read-only one: the append fails like a full
        // disk would, without needing one.
        let ro = rustix::fs::open(
            db.journal_path(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let rw = std::mem::replace(&mut db.journal().file, ro);
        let b = other(2);
        db.write(&b.id(), &b);
        let e = db.flush().unwrap_err();
        assert!(e.to_string().contains("cannot append to"), "{e}");
        assert!(e.to_string().contains("journal"), "{e}");
        assert_eq!(read(dir.path()).unwrap().0, std::slice::from_ref(&a));
        db.journal().file = rw;
        db.flush().unwrap();
        assert_eq!(read(dir.path()).unwrap().0, [a, b]);
    }
}
