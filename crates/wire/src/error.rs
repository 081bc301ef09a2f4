//! Why a datagram is not a kernel uevent.

/// Why a datagram was refused as a kernel uevent. Each variant names the culprit so a log line
/// says what was wrong without a hex dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A zero-length datagram.
    #[error("empty message")]
    Empty,
    /// Larger than any message the kernel builds (see [`crate::MAX_MESSAGE_LEN`]).
    #[error("message of {len} bytes exceeds the {max}-byte bound of kernel uevents")]
    TooLarge {
        /// Length of the datagram.
        len: usize,
        /// The bound it exceeded.
        max: usize,
    },
    /// The datagram is in libudev's framing: a processed event re-broadcast by a udev daemon, not
    /// a kernel uevent.
    #[error("message is in libudev framing (\"libudev\\0\" prefix), not a kernel uevent")]
    LibudevFraming,
    /// The last field is not NUL-terminated: the datagram was cut short.
    #[error("message is truncated: last field is not NUL-terminated")]
    Truncated,
    /// The first field is not `ACTION@DEVPATH`.
    #[error("missing ACTION@DEVPATH header (first field is {first:?})")]
    MissingHeader {
        /// The first field, lossily decoded and shortened.
        first: String,
    },
    /// Two NULs in a row: the kernel never emits an empty field.
    #[error("empty field at byte {offset}")]
    EmptyField {
        /// Byte offset of the empty field.
        offset: usize,
    },
    /// A field without `=`.
    #[error("field {field:?} at byte {offset} has no '='")]
    MissingEquals {
        /// The field, lossily decoded and shortened.
        field: String,
        /// Byte offset of the field.
        offset: usize,
    },
    /// A key that is empty or holds bytes outside printable ASCII.
    #[error("invalid key {key:?} at byte {offset}: keys are non-empty printable ASCII")]
    InvalidKey {
        /// The key, lossily decoded and shortened.
        key: String,
        /// Byte offset of the field.
        offset: usize,
    },
    /// More fields than [`crate::MAX_FIELDS`].
    #[error("more than {max} fields")]
    TooManyFields {
        /// The bound.
        max: usize,
    },
    /// A key every kernel uevent carries is absent.
    #[error("required key {0} is missing")]
    MissingKey(&'static str),
    /// A key every kernel uevent carries with a value is empty.
    #[error("required key {0} is empty")]
    EmptyValue(&'static str),
    /// `ACTION=` is not one of the eight kernel actions.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// The header's action or devpath disagrees with the `ACTION=`/`DEVPATH=` field.
    #[error("header {header:?} disagrees with {key}={value:?}")]
    HeaderMismatch {
        /// The header, lossily decoded and shortened.
        header: String,
        /// The field it disagrees with.
        key: &'static str,
        /// That field's value, lossily decoded and shortened.
        value: String,
    },
    /// A numeric key (`SEQNUM`, `MAJOR`, `MINOR`, `IFINDEX`) is not a decimal number in range
    /// (a major above 4095 or a minor above 1048575 does not fit a `dev_t`).
    #[error("{key}={value:?} is not a valid number")]
    InvalidNumber {
        /// The key.
        key: &'static str,
        /// Its value, lossily decoded and shortened.
        value: String,
    },
    /// `DEVPATH` (or `DEVPATH_OLD`) is not an absolute, normalised path.
    #[error(
        "{key}={value:?} is not an absolute normalised path (no '.', '..' or empty components)"
    )]
    InvalidDevpath {
        /// `DEVPATH` or `DEVPATH_OLD`.
        key: &'static str,
        /// The value, lossily decoded and shortened.
        value: String,
    },
    /// A key that uevd interprets as text holds bytes that are not UTF-8.
    #[error("value of {key} is not UTF-8")]
    InvalidUtf8 {
        /// The key.
        key: &'static str,
    },
}

/// Lossily decodes at most 64 bytes of `bytes`, for error messages that must stay short.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}
