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
        let mut bytes = Vec::with_capacity(256);
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
        self.var("SEQNUM", seqnum.to_string())
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
    fn without_seqnum_it_is_not_yet_a_kernel_event() {
        let b = UeventBuilder::new(Action::Add, "/devices/x", "t");
        assert_eq!(b.build(), Err(ParseError::MissingKey("SEQNUM")));
    }
}
