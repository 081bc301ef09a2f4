//! The kernel uevent datagram: `ACTION@DEVPATH\0KEY=VALUE\0…`.
//!
//! # Decisions
//! - **Duplicate keys** are kept, in order, so serialisation is lossless; lookups return the
//!   *last* occurrence. That is what makes injected events behave like kernel ones: the kernel
//!   appends its own `SEQNUM=` after the sender's fields, and the kernel's value must win.
//! - **The header** `ACTION@DEVPATH` must agree with the `ACTION=` and `DEVPATH=` fields (the
//!   kernel builds all three from the same strings); a disagreement means forgery or corruption
//!   and the message is refused rather than guessing which one is true.
//! - **Keys** are non-empty printable ASCII without `=`. **Values** are any bytes but NUL; the
//!   keys uevd interprets as text (`ACTION DEVPATH DEVPATH_OLD SUBSYSTEM DEVNAME DEVTYPE DRIVER
//!   SYNTH_UUID`) must be UTF-8, and the numeric ones (`SEQNUM MAJOR MINOR IFINDEX`) decimal.
//!   Other values are kept as raw bytes ([`Uevent::get_bytes`]).
//! - **Bounds**: the kernel builds a uevent from an `ACTION@DEVPATH` header (a devpath is a
//!   sysfs path, shorter than `PATH_MAX` = 4096) and an environment buffer of 2048 bytes holding
//!   at most 64 variables (`UEVENT_BUFFER_SIZE`, `UEVENT_NUM_ENVP`). [`MAX_MESSAGE_LEN`] and
//!   [`MAX_FIELDS`] sit well above that and well below anything that could hurt.

use std::borrow::Cow;

use crate::error::{excerpt, ParseError};
use crate::Action;
use std::fmt;

/// The largest major number a `dev_t` holds (12 bits).
pub const MAX_MAJOR: u32 = (1 << 12) - 1;
/// The largest minor number a `dev_t` holds (20 bits).
pub const MAX_MINOR: u32 = (1 << 20) - 1;

/// The largest datagram accepted: 4096 (devpath) + 2048 (environment) + room for the header
/// and an appended `SEQNUM=`, rounded up. No kernel uevent reaches it.
pub const MAX_MESSAGE_LEN: usize = 8192;

/// The most `KEY=VALUE` fields accepted: twice the kernel's `UEVENT_NUM_ENVP` (64).
pub const MAX_FIELDS: usize = 128;

/// Byte offsets of one `KEY=VALUE` field inside the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    /// First byte of the key.
    start: u16,
    /// The `=` between key and value.
    eq: u16,
    /// The terminating NUL.
    end: u16,
}

/// Keys looked up by index rather than by scanning, because every event needs them.
#[derive(Clone, Copy)]
#[repr(usize)]
enum Known {
    Action,
    Devpath,
    DevpathOld,
    Subsystem,
    Seqnum,
    Devname,
    Devtype,
    Major,
    Minor,
    Driver,
    SynthUuid,
    Ifindex,
}

const KNOWN_COUNT: usize = 12;

/// The keys whose values uevd reads as text, so they must be UTF-8.
const TEXT_KEYS: [(Known, &str); 8] = [
    (Known::Action, "ACTION"),
    (Known::Devpath, "DEVPATH"),
    (Known::DevpathOld, "DEVPATH_OLD"),
    (Known::Subsystem, "SUBSYSTEM"),
    (Known::Devname, "DEVNAME"),
    (Known::Devtype, "DEVTYPE"),
    (Known::Driver, "DRIVER"),
    (Known::SynthUuid, "SYNTH_UUID"),
];
/// A [`Known`] key the message does not carry (no field starts at `u16::MAX`: messages are
/// shorter than [`MAX_MESSAGE_LEN`]).
const ABSENT: Field = Field {
    start: u16::MAX,
    eq: u16::MAX,
    end: u16::MAX,
};

impl Known {
    fn of(key: &[u8]) -> Option<Known> {
        // Most keys are none of these; reject them by length before comparing bytes.
        if !matches!(key.len(), 5..=7 | 9..=11) {
            return None;
        }
        Some(match key {
            b"ACTION" => Known::Action,
            b"DEVPATH" => Known::Devpath,
            b"DEVPATH_OLD" => Known::DevpathOld,
            b"SUBSYSTEM" => Known::Subsystem,
            b"SEQNUM" => Known::Seqnum,
            b"DEVNAME" => Known::Devname,
            b"DEVTYPE" => Known::Devtype,
            b"MAJOR" => Known::Major,
            b"MINOR" => Known::Minor,
            b"DRIVER" => Known::Driver,
            b"SYNTH_UUID" => Known::SynthUuid,
            b"IFINDEX" => Known::Ifindex,
            _ => return None,
        })
    }
}

/// One kernel uevent, parsed and validated, owning its bytes.
///
/// Built by [`Uevent::parse`] from a datagram or by [`crate::UeventBuilder`]. Every accessor is
/// infallible because validation happened once, at parse time.
#[derive(Clone)]
pub struct Uevent {
    bytes: Storage,
    /// Length of the header, without its NUL.
    header_len: u16,
    /// How many `KEY=VALUE` fields follow the header (at most [`MAX_FIELDS`]). They are not
    /// indexed: iterating finds them again with `memchr`, which costs less than a second
    /// allocation per event.
    count: u8,
    /// The last occurrence of each [`Known`] key, or [`ABSENT`].
    known: [Field; KNOWN_COUNT],
    action: Action,
    seqnum: u64,
    devnum: Option<(u32, u32)>,
    ifindex: Option<u32>,
}

impl Uevent {
    /// Parses and validates one datagram as received from the kernel.
    pub fn parse(bytes: &[u8]) -> Result<Uevent, ParseError> {
        Layout::scan(bytes)?.into_event(Storage::new(bytes))
    }

    /// Like [`Uevent::parse`], for a datagram the caller built and hands over: its buffer
    /// becomes the event's, without a copy.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Uevent, ParseError> {
        Layout::scan(&bytes)?.into_event(Storage::from_vec(bytes))
    }

    /// Checks required keys, the header, text and numeric values; fills the cached values.
    fn validate(&mut self, at: usize) -> Result<(), ParseError> {
        // Nearly every message is UTF-8 throughout; only otherwise check key by key.
        let all_utf8 = matches!(self.bytes, Storage::Text(_));
        for (known, name) in if all_utf8 { &[][..] } else { &TEXT_KEYS[..] } {
            let (known, name) = (*known, *name);
            if let Some(value) = self.known_bytes(known) {
                if std::str::from_utf8(value).is_err() {
                    return Err(ParseError::InvalidUtf8 { key: name });
                }
            }
        }
        let action = self
            .known_bytes(Known::Action)
            .ok_or(ParseError::MissingKey("ACTION"))?;
        let parsed_action =
            Action::from_bytes(action).ok_or_else(|| ParseError::UnknownAction(excerpt(action)))?;
        let devpath = self
            .known_bytes(Known::Devpath)
            .ok_or(ParseError::MissingKey("DEVPATH"))?;
        check_devpath("DEVPATH", devpath)?;
        match self.known_bytes(Known::Subsystem) {
            None => return Err(ParseError::MissingKey("SUBSYSTEM")),
            // The kernel never sends an empty one, and every record needs one.
            Some([]) => return Err(ParseError::EmptyValue("SUBSYSTEM")),
            Some(_) => {}
        }
        let seqnum = self
            .known_bytes(Known::Seqnum)
            .ok_or(ParseError::MissingKey("SEQNUM"))?;
        let seqnum = parse_decimal("SEQNUM", seqnum)?;
        if let Some(old) = self.known_bytes(Known::DevpathOld) {
            check_devpath("DEVPATH_OLD", old)?;
        }

        let header = &self.bytes.raw()[..usize::from(self.header_len)];
        let (header_action, header_devpath) = (&header[..at], &header[at + 1..]);
        if header_action != action {
            return Err(self.mismatch("ACTION", action));
        }
        if header_devpath != devpath {
            return Err(self.mismatch("DEVPATH", devpath));
        }

        self.action = parsed_action;
        self.seqnum = seqnum;
        // The kernel's dev_t: 12 bits of major, 20 of minor. A larger number would be cut
        // short by mknod into another device's.
        let major = self.devnum_part(Known::Major, "MAJOR", MAX_MAJOR)?;
        let minor = self.devnum_part(Known::Minor, "MINOR", MAX_MINOR)?;
        self.devnum = match (major, minor) {
            (Some(major), Some(minor)) => Some((major, minor)),
            _ => None,
        };
        self.ifindex = self.number(Known::Ifindex, "IFINDEX")?;
        Ok(())
    }

    fn mismatch(&self, key: &'static str, value: &[u8]) -> ParseError {
        ParseError::HeaderMismatch {
            header: excerpt(&self.bytes.raw()[..usize::from(self.header_len)]),
            key,
            value: excerpt(value),
        }
    }

    fn devnum_part(
        &self,
        known: Known,
        name: &'static str,
        max: u32,
    ) -> Result<Option<u32>, ParseError> {
        match self.number(known, name)? {
            Some(n) if n > max => Err(ParseError::InvalidNumber {
                key: name,
                value: n.to_string(),
            }),
            n => Ok(n),
        }
    }

    fn number(&self, known: Known, name: &'static str) -> Result<Option<u32>, ParseError> {
        match self.known_bytes(known) {
            None => Ok(None),
            Some(value) => {
                let n = parse_decimal(name, value)?;
                u32::try_from(n)
                    .map(Some)
                    .map_err(|_| ParseError::InvalidNumber {
                        key: name,
                        value: excerpt(value),
                    })
            }
        }
    }

    fn field_value(&self, field: Field) -> &[u8] {
        &self.bytes.raw()[usize::from(field.eq) + 1..usize::from(field.end)]
    }

    fn known_bytes(&self, known: Known) -> Option<&[u8]> {
        let field = self.known[known as usize];
        (field != ABSENT).then(|| self.field_value(field))
    }

    /// A text key's value; validated as UTF-8 at parse time.
    fn known_str(&self, known: Known) -> Option<&str> {
        let field = self.known[known as usize];
        (field != ABSENT).then(|| self.value_str(field))?
    }

    /// A field's value as text, if it is UTF-8: a slice of the validated text for nearly
    /// every message, with no second check.
    fn value_str(&self, field: Field) -> Option<&str> {
        self.bytes
            .str(usize::from(field.eq) + 1..usize::from(field.end))
    }

    /// What happened.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The device's path below `/sys`, e.g. `/devices/virtual/block/loop0`.
    pub fn devpath(&self) -> &str {
        self.known_str(Known::Devpath).unwrap_or_default()
    }

    /// The previous devpath of a `move` event. Only a `move` has one: on any other action a
    /// `DEVPATH_OLD` (which the kernel never sends there) is not taken for a rename.
    pub fn devpath_old(&self) -> Option<&str> {
        (self.action == Action::Move)
            .then(|| self.known_str(Known::DevpathOld))
            .flatten()
    }

    /// The subsystem, e.g. `block`, `net`, `input`.
    pub fn subsystem(&self) -> &str {
        self.known_str(Known::Subsystem).unwrap_or_default()
    }

    /// The kernel's sequence number: increasing, shared by all uevents.
    pub fn seqnum(&self) -> u64 {
        self.seqnum
    }

    /// The node name the kernel suggests, relative to `/dev` (e.g. `input/event3`).
    pub fn devname(&self) -> Option<&str> {
        self.known_str(Known::Devname)
    }

    /// The device type within the subsystem, e.g. `disk`, `partition`.
    pub fn devtype(&self) -> Option<&str> {
        self.known_str(Known::Devtype)
    }

    /// `(MAJOR, MINOR)` when the event carries both.
    pub fn devnum(&self) -> Option<(u32, u32)> {
        self.devnum
    }

    /// The network interface index of `net` devices.
    pub fn ifindex(&self) -> Option<u32> {
        self.ifindex
    }

    /// The bound driver's name.
    pub fn driver(&self) -> Option<&str> {
        self.known_str(Known::Driver)
    }

    /// `SYNTH_UUID` of a synthetic event: the UUID written to the `uevent` file, or `0` for a
    /// plain write. `None` for genuine kernel events.
    pub fn synth_uuid(&self) -> Option<&str> {
        self.known_str(Known::SynthUuid)
    }

    /// The `SYNTH_ARG_KEY=VALUE` arguments of a synthetic event, as `(KEY, VALUE)`.
    pub fn synth_args(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.iter()
            .filter_map(|(k, v)| k.strip_prefix("SYNTH_ARG_").map(|k| (k, v)))
    }

    /// The last value of `key`, if present and UTF-8.
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(known) = Known::of(key.as_bytes()) {
            return self.known_str(known);
        }
        self.last_field(key).and_then(|f| self.value_str(f))
    }

    /// The last value of `key` as raw bytes.
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        if let Some(known) = Known::of(key.as_bytes()) {
            return self.known_bytes(known);
        }
        self.last_field(key).map(|f| self.field_value(f))
    }

    /// The last field named `key`, comparing raw key bytes (no UTF-8 check per field).
    fn last_field(&self, key: &str) -> Option<Field> {
        self.fields()
            .rev()
            .find(|f| &self.bytes.raw()[usize::from(f.start)..usize::from(f.eq)] == key.as_bytes())
    }

    /// Every field in wire order, duplicates included.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> + ExactSizeIterator {
        self.fields().map(|f| {
            // Keys were checked to be ASCII at parse time.
            (self.key_str(f), self.field_value(f))
        })
    }

    /// Every field in wire order with its value as text: borrowed when it is UTF-8 (nearly
    /// always, and then without a second check), else with invalid bytes replaced by U+FFFD.
    pub fn iter_text(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
        self.fields().map(|f| {
            let value = match self.value_str(f) {
                Some(v) => Cow::Borrowed(v),
                None => String::from_utf8_lossy(self.field_value(f)),
            };
            (self.key_str(f), value)
        })
    }

    fn key_str(&self, f: Field) -> &str {
        self.bytes
            .str(usize::from(f.start)..usize::from(f.eq))
            .unwrap_or_default()
    }

    /// The number of `KEY=VALUE` fields, duplicates included.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Never true for a parsed event (it has at least ACTION, DEVPATH, SUBSYSTEM and SEQNUM);
    /// present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The fields after the header, found again in the validated message.
    fn fields(&self) -> Fields<'_> {
        let bytes = self.bytes.raw();
        Fields {
            bytes,
            front: usize::from(self.header_len) + 1,
            back: bytes.len(),
            left: self.len(),
        }
    }

    /// The `ACTION@DEVPATH` header as received.
    pub fn header(&self) -> &[u8] {
        &self.bytes.raw()[..usize::from(self.header_len)]
    }

    /// The exact bytes this event was parsed from.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.raw()
    }

    /// Serialises the event from its fields: identical to [`Uevent::as_bytes`] for every
    /// event `parse` accepts (that is the round-trip guarantee the property tests check).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.raw().len());
        out.extend_from_slice(self.header());
        out.push(0);
        for (key, value) in self.iter() {
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value);
            out.push(0);
        }
        out
    }
}

impl fmt::Debug for Uevent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uevent")
            .field("action", &self.action)
            .field("devpath", &self.devpath())
            .field("subsystem", &self.subsystem())
            .field("seqnum", &self.seqnum)
            .field("fields", &self.len())
            .finish()
    }
}

/// Where a message's header and known fields are: the result of one scan, made before the
/// message is stored so that a rejected one costs no allocation.
struct Layout {
    /// Length of the header, without its NUL.
    header_len: usize,
    /// The `@` in the header.
    at: usize,
    /// How many fields follow the header.
    count: usize,
    known: [Field; KNOWN_COUNT],
}

impl Layout {
    /// Checks the framing and the keys of every field; finds the known ones.
    fn scan(bytes: &[u8]) -> Result<Layout, ParseError> {
        if bytes.is_empty() {
            return Err(ParseError::Empty);
        }
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(ParseError::TooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        if bytes.starts_with(b"libudev\0") {
            return Err(ParseError::LibudevFraming);
        }
        if bytes.last() != Some(&0) {
            return Err(ParseError::Truncated);
        }
        let header_len = memchr0(bytes, 0);
        let header = &bytes[..header_len];
        let Some(at) = memchr::memchr(b'@', header) else {
            return Err(ParseError::MissingHeader {
                first: excerpt(header),
            });
        };

        let mut count = 0;
        let mut known = [ABSENT; KNOWN_COUNT];
        let mut pos = header_len + 1;
        while pos < bytes.len() {
            // The key: printable ASCII up to '='. The message ends in NUL, so this stops.
            let mut eq = pos;
            loop {
                let b = bytes[eq];
                if b == b'=' {
                    break;
                }
                if !b.is_ascii_graphic() {
                    return Err(field_error(bytes, pos, eq));
                }
                eq += 1;
            }
            if eq == pos {
                return Err(ParseError::InvalidKey {
                    key: String::new(),
                    offset: pos,
                });
            }
            let end = memchr0(bytes, eq + 1);
            if count == MAX_FIELDS {
                return Err(ParseError::TooManyFields { max: MAX_FIELDS });
            }
            count += 1;
            if let Some(k) = Known::of(&bytes[pos..eq]) {
                // MAX_MESSAGE_LEN < u16::MAX, so offsets fit and never equal ABSENT's.
                known[k as usize] = Field {
                    start: pos as u16,
                    eq: eq as u16,
                    end: end as u16,
                };
            }
            pos = end + 1;
        }
        Ok(Layout {
            header_len,
            at,
            count,
            known,
        })
    }

    /// The event over `bytes` (the scanned message, stored), validated.
    fn into_event(self, bytes: Storage) -> Result<Uevent, ParseError> {
        let mut event = Uevent {
            bytes,
            header_len: self.header_len as u16,
            // At most MAX_FIELDS (128).
            count: self.count as u8,
            known: self.known,
            action: Action::Add,
            seqnum: 0,
            devnum: None,
            ifindex: None,
        };
        event.validate(self.at)?;
        Ok(event)
    }
}

/// The fields of a validated message, from either end. Validation guarantees the shape this
/// relies on: after the header's NUL, `count` runs of `KEY=VALUE\0`, keys without `=` or NUL.
struct Fields<'a> {
    bytes: &'a [u8],
    /// Where the next field from the front starts.
    front: usize,
    /// One past the NUL of the next field from the back.
    back: usize,
    left: usize,
}

impl Fields<'_> {
    /// The field starting at `start` and ending with the NUL at `end`.
    fn at(&self, start: usize, end: usize) -> Field {
        let eq = memchr::memchr(b'=', &self.bytes[start..end]).map_or(end, |i| start + i);
        // MAX_MESSAGE_LEN < u16::MAX, so offsets fit.
        Field {
            start: start as u16,
            eq: eq as u16,
            end: end as u16,
        }
    }
}

impl Iterator for Fields<'_> {
    type Item = Field;

    fn next(&mut self) -> Option<Field> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let start = self.front;
        let end = memchr0(self.bytes, start);
        self.front = end + 1;
        Some(self.at(start, end))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl DoubleEndedIterator for Fields<'_> {
    fn next_back(&mut self) -> Option<Field> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let end = self.back - 1;
        // The header's NUL precedes every field.
        let start = memchr::memrchr(0, &self.bytes[..end]).map_or(0, |i| i + 1);
        self.back = start;
        Some(self.at(start, end))
    }
}

impl ExactSizeIterator for Fields<'_> {}

/// A message's bytes, kept as `str` when the whole message is UTF-8 (as kernel messages are)
/// so that text fields are slices of already-validated text.
#[derive(Clone)]
enum Storage {
    Text(Box<str>),
    Binary(Box<[u8]>),
}

impl Storage {
    /// Validates once and copies once.
    fn new(bytes: &[u8]) -> Storage {
        match std::str::from_utf8(bytes) {
            Ok(text) => Storage::Text(text.into()),
            Err(_) => Storage::Binary(bytes.into()),
        }
    }

    /// Validates once and keeps the buffer (it is only reallocated if it has spare room).
    fn from_vec(bytes: Vec<u8>) -> Storage {
        match String::from_utf8(bytes) {
            Ok(text) => Storage::Text(text.into_boxed_str()),
            Err(e) => Storage::Binary(e.into_bytes().into_boxed_slice()),
        }
    }

    fn raw(&self) -> &[u8] {
        match self {
            Storage::Text(text) => text.as_bytes(),
            Storage::Binary(bytes) => bytes,
        }
    }

    /// `range` as text. Field boundaries sit next to ASCII bytes (`=`, NUL), so for a text
    /// message the slice is on character boundaries and `get` only confirms it.
    fn str(&self, range: std::ops::Range<usize>) -> Option<&str> {
        match self {
            Storage::Text(text) => text.get(range),
            Storage::Binary(bytes) => std::str::from_utf8(bytes.get(range)?).ok(),
        }
    }
}

impl PartialEq for Uevent {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.raw() == other.bytes.raw()
    }
}

impl Eq for Uevent {}

/// Position of the first NUL at or after `from` (the caller guarantees one exists: the
/// message ends in NUL).
fn memchr0(bytes: &[u8], from: usize) -> usize {
    memchr::memchr(0, &bytes[from..]).map_or(bytes.len() - 1, |i| from + i)
}

/// The error for a field starting at `start` whose key hit a byte that is neither printable
/// nor `=` at `bad`.
fn field_error(bytes: &[u8], start: usize, bad: usize) -> ParseError {
    let end = memchr0(bytes, start);
    let field = &bytes[start..end];
    if field.is_empty() {
        ParseError::EmptyField { offset: start }
    } else if bytes[bad] == 0 {
        ParseError::MissingEquals {
            field: excerpt(field),
            offset: start,
        }
    } else {
        let key_end = memchr::memchr(b'=', field).unwrap_or(field.len());
        ParseError::InvalidKey {
            key: excerpt(&field[..key_end]),
            offset: start,
        }
    }
}

fn parse_decimal(key: &'static str, value: &[u8]) -> Result<u64, ParseError> {
    let invalid = || ParseError::InvalidNumber {
        key,
        value: excerpt(value),
    };
    if value.is_empty() || value.len() > 20 {
        return Err(invalid());
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(invalid());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(invalid)?;
    }
    Ok(n)
}

fn check_devpath(key: &'static str, value: &[u8]) -> Result<(), ParseError> {
    let ok = value.len() > 1
        && value[0] == b'/'
        && value[1..]
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..");
    if ok {
        Ok(())
    } else {
        Err(ParseError::InvalidDevpath {
            key,
            value: excerpt(value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP0: &[u8] = b"change@/devices/virtual/block/loop0\0ACTION=change\0\
DEVPATH=/devices/virtual/block/loop0\0SUBSYSTEM=block\0SYNTH_UUID=1b4e28ba\0\
SYNTH_ARG_A=1\0MAJOR=7\0MINOR=0\0DEVNAME=loop0\0DEVTYPE=disk\0DISKSEQ=9\0SEQNUM=4242\0";

    fn parse(bytes: &[u8]) -> Result<Uevent, ParseError> {
        Uevent::parse(bytes)
    }

    #[test]
    fn typed_access_to_a_real_loop0_event() {
        let ev = parse(LOOP0).unwrap();
        assert_eq!(ev.action(), Action::Change);
        assert_eq!(ev.devpath(), "/devices/virtual/block/loop0");
        assert_eq!(ev.subsystem(), "block");
        assert_eq!(ev.seqnum(), 4242);
        assert_eq!(ev.devname(), Some("loop0"));
        assert_eq!(ev.devtype(), Some("disk"));
        assert_eq!(ev.devnum(), Some((7, 0)));
        assert_eq!(ev.driver(), None);
        assert_eq!(ev.synth_uuid(), Some("1b4e28ba"));
        assert_eq!(ev.synth_args().collect::<Vec<_>>(), [("A", &b"1"[..])]);
        assert_eq!(ev.get("DISKSEQ"), Some("9"));
        assert_eq!(ev.get("NOPE"), None);
        assert_eq!(ev.len(), 11);
        assert_eq!(ev.header(), b"change@/devices/virtual/block/loop0");
        assert_eq!(ev.as_bytes(), LOOP0);
        assert_eq!(ev.to_bytes(), LOOP0);
    }

    #[test]
    fn last_duplicate_wins_and_all_are_kept() {
        // What an injected event looks like: the sender's SEQNUM, then the kernel's.
        let raw = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0\
FOO=a\0FOO=b\0SEQNUM=77\0";
        let ev = parse(raw).unwrap();
        assert_eq!(ev.seqnum(), 77);
        assert_eq!(ev.get("FOO"), Some("b"));
        assert_eq!(ev.iter().filter(|(k, _)| *k == "SEQNUM").count(), 2);
        assert_eq!(ev.to_bytes(), raw);
    }

    #[test]
    fn device_numbers_must_fit_a_dev_t_and_the_subsystem_must_not_be_empty() {
        let with = |vars: &str| {
            let mut raw = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SEQNUM=1\0".to_vec();
            for v in vars.split(' ') {
                raw.extend_from_slice(v.as_bytes());
                raw.push(0);
            }
            parse(&raw)
        };
        let ok = with("SUBSYSTEM=t MAJOR=4095 MINOR=1048575").unwrap();
        assert_eq!(ok.devnum(), Some((4095, 1_048_575)));
        for bad in [
            "MAJOR=4096 MINOR=1",
            "MAJOR=4 MINOR=1048576",
            "MAJOR=4 MINOR=4294967295",
        ] {
            let e = with(&format!("SUBSYSTEM=t {bad}")).unwrap_err();
            assert!(matches!(e, ParseError::InvalidNumber { .. }), "{bad}: {e}");
        }
        assert_eq!(with("SUBSYSTEM="), Err(ParseError::EmptyValue("SUBSYSTEM")));
    }

    #[test]
    fn only_a_move_has_an_old_devpath() {
        let raw = |action: &str| {
            format!(
                "{action}@/devices/a\0ACTION={action}\0DEVPATH=/devices/a\0SUBSYSTEM=t\0\
DEVPATH_OLD=/devices/b\0SEQNUM=1\0"
            )
        };
        assert_eq!(
            parse(raw("move").as_bytes()).unwrap().devpath_old(),
            Some("/devices/b")
        );
        let change = parse(raw("change").as_bytes()).unwrap();
        assert_eq!(change.devpath_old(), None);
        assert_eq!(
            change.get("DEVPATH_OLD"),
            Some("/devices/b"),
            "still a property"
        );
    }

    #[test]
    fn values_may_hold_any_byte_but_nul() {
        let raw = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0\
BIN=\xff\x01= \n\0EMPTY=\0SEQNUM=1\0";
        let ev = parse(raw).unwrap();
        assert_eq!(ev.get_bytes("BIN"), Some(&b"\xff\x01= \n"[..]));
        assert_eq!(ev.get("BIN"), None, "not UTF-8, so no &str");
        assert_eq!(ev.get("EMPTY"), Some(""));
    }

    fn err(raw: &[u8]) -> String {
        parse(raw).unwrap_err().to_string()
    }

    #[test]
    fn refusals_name_the_problem() {
        let ok = "ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0";
        let with = |header: &str, rest: &str| format!("{header}\0{rest}").into_bytes();
        assert_eq!(err(b""), "empty message");
        assert_eq!(
            err(&vec![b'a'; MAX_MESSAGE_LEN + 1]),
            "message of 8193 bytes exceeds the 8192-byte bound of kernel uevents"
        );
        assert!(err(b"libudev\0\xfe\xed\xca\xfe").contains("libudev framing"));
        assert_eq!(
            err(b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1"),
            "message is truncated: last field is not NUL-terminated"
        );
        assert_eq!(
            err(&with("ACTION=add", ok)),
            "missing ACTION@DEVPATH header (first field is \"ACTION=add\")"
        );
        assert_eq!(
            err(&with("add@/devices/x", "ACTION=add\0\0SEQNUM=1\0")),
            "empty field at byte 26"
        );
        assert_eq!(
            err(&with("add@/devices/x", "ACTION=add\0JUNK\0")),
            "field \"JUNK\" at byte 26 has no '='"
        );
        assert!(err(&with("add@/devices/x", "=v\0")).starts_with("invalid key \"\""));
        assert!(err(&with("add@/devices/x", "A B=v\0")).starts_with("invalid key \"A B\""));
        assert_eq!(
            err(&with(
                "add@/devices/x",
                "DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0"
            )),
            "required key ACTION is missing"
        );
        assert_eq!(
            err(&with(
                "add@/devices/x",
                "ACTION=add\0SUBSYSTEM=t\0SEQNUM=1\0"
            )),
            "required key DEVPATH is missing"
        );
        assert_eq!(
            err(&with(
                "add@/devices/x",
                "ACTION=add\0DEVPATH=/devices/x\0SEQNUM=1\0"
            )),
            "required key SUBSYSTEM is missing"
        );
        assert_eq!(
            err(&with(
                "add@/devices/x",
                "ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0"
            )),
            "required key SEQNUM is missing"
        );
        assert_eq!(
            err(&with(
                "frob@/devices/x",
                "ACTION=frob\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0"
            )),
            "unknown action \"frob\""
        );
        assert_eq!(
            err(&with("remove@/devices/x", ok)),
            "header \"remove@/devices/x\" disagrees with ACTION=\"add\""
        );
        assert_eq!(
            err(&with("add@/devices/y", ok)),
            "header \"add@/devices/y\" disagrees with DEVPATH=\"/devices/x\""
        );
        assert_eq!(
            err(&with(
                "add@/devices/x",
                &ok.replace("SEQNUM=1", "SEQNUM=-1")
            )),
            "SEQNUM=\"-1\" is not a valid number"
        );
        assert_eq!(
            err(&with(
                "add@/devices/x",
                &format!("{ok}MAJOR=4294967296\0MINOR=0\0")
            )),
            "MAJOR=\"4294967296\" is not a valid number"
        );
        assert_eq!(
            err(&with(
                "add@/devices/../x",
                &ok.replace("/devices/x", "/devices/../x")
            )),
            "DEVPATH=\"/devices/../x\" is not an absolute normalised path (no '.', '..' or empty components)"
        );
    }

    #[test]
    fn text_keys_must_be_utf8() {
        let mut raw = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0DEVNAME=\xff\0".to_vec();
        assert_eq!(err(&raw), "value of DEVNAME is not UTF-8");
        raw.truncate(raw.len() - b"DEVNAME=\xff\0".len());
        assert!(parse(&raw).is_ok());
    }

    #[test]
    fn binary_values_are_kept_and_text_accessors_still_work() {
        let raw = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0BLOB=a\xffb\0NAME=ok\0";
        let e = parse(raw).unwrap();
        assert_eq!(e.devpath(), "/devices/x");
        assert_eq!(e.get("NAME"), Some("ok"));
        assert_eq!(e.get("BLOB"), None, "not UTF-8, so not text");
        assert_eq!(e.get_bytes("BLOB"), Some(&b"a\xffb"[..]));
        let text: Vec<(&str, String)> = e.iter_text().map(|(k, v)| (k, v.into_owned())).collect();
        assert_eq!(text[4], ("BLOB", "a\u{fffd}b".to_owned()));
        assert_eq!(text[5], ("NAME", "ok".to_owned()));
        assert_eq!(e.as_bytes(), raw);
        // A message that is all text reads the same through both paths.
        let e = parse(
            b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0K=\xc3\xa9\0",
        )
        .unwrap();
        assert_eq!(e.get("K"), Some("\u{e9}"));
        assert!(e.iter_text().all(|(k, v)| e.get(k) == Some(&*v)));
    }

    #[test]
    fn too_many_fields() {
        let mut raw =
            b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0".to_vec();
        for i in 0..MAX_FIELDS {
            raw.extend_from_slice(format!("K{i}=v\0").as_bytes());
        }
        assert_eq!(err(&raw), "more than 128 fields");
    }

    #[test]
    fn devnum_needs_both_halves() {
        let raw =
            b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=t\0SEQNUM=1\0MAJOR=8\0";
        assert_eq!(parse(raw).unwrap().devnum(), None);
    }
}
