//! Building uevent datagrams in the kernel's layout.

use crate::{Action, ParseError, Uevent};

/// Builds a datagram in the kernel's exact layout: `ACTION@DEVPATH\0ACTION=…\0DEVPATH=…\0
/// SUBSYSTEM=…\0` followed by the extra fields in the order given.
///
/// Tests and benchmarks use it to make events; the injector sends [`UeventBuilder::to_bytes`]
/// *without* a `SEQNUM`, because the kernel appends its own.
#[derive(Clone, Debug)]
pub struct UeventBuilder {
    bytes: Vec<u8>,
}

impl UeventBuilder {
    /// Starts an event for `devpath` in `subsystem`.
    pub fn new(action: Action, devpath: &str, subsystem: &str) -> UeventBuilder {
        UeventBuilder::with_capacity(256, action, devpath, subsystem)
    }

    /// Like [`UeventBuilder::new`], with room for `capacity` bytes in all: a caller that knows
    /// the final size (see [`UeventBuilder::size`]) gets a datagram allocated once, which
    /// [`UeventBuilder::into_uevent`] then keeps.
    pub fn with_capacity(
        capacity: usize,
        action: Action,
        devpath: &str,
        subsystem: &str,
    ) -> UeventBuilder {
        let mut bytes = Vec::with_capacity(capacity);
        bytes.extend_from_slice(action.as_str().as_bytes());
        bytes.push(b'@');
        bytes.extend_from_slice(devpath.as_bytes());
        bytes.push(0);
        let mut builder = UeventBuilder { bytes };
        builder
            .var("ACTION", action.as_str())
            .var("DEVPATH", devpath)
            .var("SUBSYSTEM", subsystem);
        builder
    }

    /// Appends `key=value`. Neither may hold NUL, and `key` no `=`; [`UeventBuilder::build`]
    /// reports a violation the way the parser would.
    pub fn var(&mut self, key: &str, value: impl AsRef<[u8]>) -> &mut UeventBuilder {
        self.bytes.extend_from_slice(key.as_bytes());
        self.bytes.push(b'=');
        self.bytes.extend_from_slice(value.as_ref());
        self.bytes.push(0);
        self
    }

    /// Appends `SEQNUM=seqnum`.
    pub fn seqnum(&mut self, seqnum: u64) -> &mut UeventBuilder {
        self.bytes.extend_from_slice(b"SEQNUM=");
        push_decimal(&mut self.bytes, seqnum);
        self.bytes.push(0);
        self
    }

    /// The size of the datagram [`UeventBuilder::new`] starts for these values, followed by
    /// `vars` bytes of other fields (each `KEY=VALUE` plus its NUL) and then `SEQNUM`.
    pub fn size(action: Action, devpath: &str, subsystem: &str, vars: usize, seqnum: u64) -> usize {
        let action = action.as_str().len();
        let header = action + 1 + devpath.len() + 1;
        // `KEY=VALUE\0` is two bytes more than key and value.
        let fixed = "ACTION".len()
            + action
            + "DEVPATH".len()
            + devpath.len()
            + "SUBSYSTEM".len()
            + subsystem.len()
            + 3 * 2;
        let digits = seqnum.checked_ilog10().map_or(1, |d| d as usize + 1);
        let seqnum = "SEQNUM".len() + 2 + digits;
        header + fixed + vars + seqnum
    }

    /// The datagram as built so far.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// The datagram as a borrowed slice (no copy).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parses the datagram, so a built event is exactly as valid as a received one.
    pub fn build(&self) -> Result<Uevent, ParseError> {
        Uevent::parse(&self.bytes)
    }

    /// Like [`UeventBuilder::build`], handing the buffer over to the event: no copy.
    pub fn into_uevent(self) -> Result<Uevent, ParseError> {
        Uevent::from_vec(self.bytes)
    }
}

/// Appends `n` in decimal, as the kernel writes numbers in uevents (and uevd in its
/// database): without the allocation of `to_string`.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_kernel_layout() {
        let ev = UeventBuilder::new(Action::Add, "/devices/virtual/misc/foo", "misc")
            .var("DEVNAME", "foo")
            .var("MAJOR", "10")
            .var("MINOR", "99")
            .seqnum(5)
            .build()
            .unwrap();
        assert_eq!(
            ev.as_bytes(),
            b"add@/devices/virtual/misc/foo\0ACTION=add\0DEVPATH=/devices/virtual/misc/foo\0\
SUBSYSTEM=misc\0DEVNAME=foo\0MAJOR=10\0MINOR=99\0SEQNUM=5\0"
        );
        assert_eq!(ev.devnum(), Some((10, 99)));
    }

    #[test]
    fn size_is_exact_and_a_sized_builder_never_grows() {
        for seqnum in [0, 7, 10, 99, 12345, u64::MAX] {
            let vars = "DEVNAME=foo\0".len();
            let size = UeventBuilder::size(Action::Change, "/devices/a/b", "misc", vars, seqnum);
            let mut b = UeventBuilder::with_capacity(size, Action::Change, "/devices/a/b", "misc");
            b.var("DEVNAME", "foo").seqnum(seqnum);
            assert_eq!(b.as_bytes().len(), size, "seqnum {seqnum}");
            assert_eq!(b.bytes.capacity(), size);
            let ev = b.into_uevent().unwrap();
            assert_eq!(ev.seqnum(), seqnum);
            assert_eq!(ev.get("SEQNUM"), Some(seqnum.to_string().as_str()));
        }
    }

    #[test]
    fn without_seqnum_it_is_not_yet_a_kernel_event() {
        let b = UeventBuilder::new(Action::Add, "/devices/x", "t");
        assert_eq!(b.build(), Err(ParseError::MissingKey("SEQNUM")));
    }
}
