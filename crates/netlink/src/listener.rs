//! The trusted kernel uevent listener.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{self as net, AddressFamily, RecvFlags, SocketFlags, SocketType};
use uevd_wire::{ParseError, Uevent, MAX_MESSAGE_LEN};

/// The multicast group the kernel sends uevents to.
pub const KERNEL_GROUP: u32 = 1;

/// Default receive buffer: 128 MiB, large enough that bursts (coldplug, a dock with many
/// devices) do not overflow it while the daemon is busy — rarely, not never.
pub const DEFAULT_RECV_BUFFER: usize = 128 << 20;

/// How to open a [`KernelListener`].
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// Receive buffer size in bytes. Set with `SO_RCVBUFFORCE` (needs `CAP_NET_ADMIN`), falling
    /// back to `SO_RCVBUF` (capped by `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// Make `recv` return `Ok(None)` instead of blocking (for epoll loops).
    pub nonblocking: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            recv_buffer: DEFAULT_RECV_BUFFER,
            nonblocking: false,
        }
    }
}

/// What a caller must do about a [`RecvError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// One message was refused; log it and keep receiving.
    Recoverable,
    /// Messages were lost: local state may have diverged from the kernel's. Resync from sysfs,
    /// then keep receiving.
    NeedsResync,
    /// The socket is unusable.
    Fatal,
}

/// Why opening the listener failed.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// `socket(AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT)` failed.
    #[error("cannot create the kernel uevent socket: {0}")]
    Socket(#[source] Errno),
    /// Binding to the kernel's multicast group failed.
    #[error("cannot bind the kernel uevent socket to group {KERNEL_GROUP}: {0}")]
    Bind(#[source] Errno),
    /// Neither `SO_RCVBUFFORCE` nor `SO_RCVBUF` took.
    #[error("cannot set the uevent receive buffer to {size} bytes: {source}")]
    RecvBuffer {
        /// The size asked for.
        size: usize,
        /// Why `SO_RCVBUF` failed.
        #[source]
        source: Errno,
    },
}

/// Why one `recv` produced no event.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// A datagram from a process rather than the kernel (port id ≠ 0): forged, or another
    /// daemon's re-broadcast. Dropped and counted.
    #[error("dropped a {len}-byte message from untrusted sender port {port} (only the kernel, port 0, is trusted)")]
    ForeignSender {
        /// The sender's netlink port id.
        port: u32,
        /// The datagram's length.
        len: usize,
    },
    /// A datagram larger than any kernel uevent; it was cut by the receive buffer.
    #[error("dropped a truncated message of {len} bytes (larger than the {max}-byte bound)")]
    Truncated {
        /// The datagram's real length.
        len: usize,
        /// The receive buffer's length.
        max: usize,
    },
    /// A datagram from the kernel that is not a valid uevent.
    #[error("dropped a malformed kernel message: {0}")]
    Malformed(#[from] ParseError),
    /// `ENOBUFS`: the receive buffer overflowed and uevents were lost.
    #[error("uevent receive buffer overflowed (ENOBUFS): events were lost, state diverged, resync needed")]
    Overflow,
    /// Any other socket error.
    #[error("uevent socket failed: {0}")]
    Io(#[source] Errno),
}

impl RecvError {
    /// What the caller must do about it.
    pub fn severity(&self) -> Severity {
        match self {
            RecvError::ForeignSender { .. }
            | RecvError::Truncated { .. }
            | RecvError::Malformed(_) => Severity::Recoverable,
            RecvError::Overflow => Severity::NeedsResync,
            RecvError::Io(_) => Severity::Fatal,
        }
    }
}

/// Counters of what the listener saw, for `stats` and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Datagrams accepted from the kernel (before parsing).
    pub received: u64,
    /// Datagrams refused because they came from a user-space port.
    pub foreign: u64,
    /// Datagrams refused because they were larger than the receive buffer.
    pub truncated: u64,
    /// Kernel datagrams that did not parse.
    pub malformed: u64,
    /// `ENOBUFS` overflows.
    pub overflows: u64,
}

/// A socket bound to the kernel's uevent group that hands out only what the kernel sent.
pub struct KernelListener {
    fd: OwnedFd,
    buf: Box<[u8]>,
    recv_buffer: usize,
    stats: ListenerStats,
}

impl KernelListener {
    /// Opens the socket (close-on-exec), sizes its receive buffer and joins group 1.
    pub fn open(options: &ListenerOptions) -> Result<KernelListener, ListenError> {
        let mut flags = SocketFlags::CLOEXEC;
        if options.nonblocking {
            flags |= SocketFlags::NONBLOCK;
        }
        let fd = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            flags,
            Some(netlink::KOBJECT_UEVENT),
        )
        .map_err(ListenError::Socket)?;
        if net::sockopt::set_socket_recv_buffer_size_force(&fd, options.recv_buffer).is_err() {
            net::sockopt::set_socket_recv_buffer_size(&fd, options.recv_buffer).map_err(
                |source| ListenError::RecvBuffer {
                    size: options.recv_buffer,
                    source,
                },
            )?;
        }
        net::bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP)).map_err(ListenError::Bind)?;
        let recv_buffer = net::sockopt::socket_recv_buffer_size(&fd).unwrap_or(0);
        Ok(KernelListener {
            fd,
            // One byte more than the bound, so an over-long datagram shows as truncated.
            buf: vec![0; MAX_MESSAGE_LEN + 1].into_boxed_slice(),
            recv_buffer,
            stats: ListenerStats::default(),
        })
    }

    /// Receives the next datagram from the kernel without parsing it: the sender and length are
    /// checked. `Ok(None)` means a non-blocking socket has nothing to read.
    pub fn recv_raw(&mut self) -> Result<Option<&[u8]>, RecvError> {
        let len = loop {
            match net::recvfrom(&self.fd, &mut self.buf[..], RecvFlags::TRUNC) {
                Ok((_, len, addr)) => {
                    let port = addr
                        .and_then(|a| SocketAddrNetlink::try_from(a).ok())
                        .map_or(u32::MAX, |a| a.pid());
                    match check_datagram(port, len) {
                        Ok(()) => break len,
                        Err(e) => {
                            match e {
                                RecvError::ForeignSender { .. } => self.stats.foreign += 1,
                                _ => self.stats.truncated += 1,
                            }
                            return Err(e);
                        }
                    }
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(None),
                Err(Errno::NOBUFS) => {
                    self.stats.overflows += 1;
                    return Err(RecvError::Overflow);
                }
                Err(e) => return Err(RecvError::Io(e)),
            }
        };
        self.stats.received += 1;
        Ok(Some(&self.buf[..len]))
    }

    /// Receives and parses the next kernel uevent. `Ok(None)` means a non-blocking socket has
    /// nothing to read.
    pub fn recv(&mut self) -> Result<Option<Uevent>, RecvError> {
        let Some(bytes) = self.recv_raw()? else {
            return Ok(None);
        };
        match Uevent::parse(bytes) {
            Ok(event) => Ok(Some(event)),
            Err(e) => {
                self.stats.malformed += 1;
                Err(RecvError::Malformed(e))
            }
        }
    }

    /// What the listener has seen so far.
    pub fn stats(&self) -> ListenerStats {
        self.stats
    }

    /// The receive buffer the kernel granted (it reports twice the requested size).
    pub fn recv_buffer(&self) -> usize {
        self.recv_buffer
    }
}

/// Trusts a datagram only if the kernel (port 0) sent it and it fits the bound. A sender that
/// is not a netlink address at all counts as port `u32::MAX`.
fn check_datagram(port: u32, len: usize) -> Result<(), RecvError> {
    if port != 0 {
        return Err(RecvError::ForeignSender { port, len });
    }
    if len > MAX_MESSAGE_LEN {
        return Err(RecvError::Truncated {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(())
}

impl AsFd for KernelListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_port_zero_is_trusted() {
        assert!(check_datagram(0, 100).is_ok());
        let e = check_datagram(4242, 100).unwrap_err();
        assert_eq!(e.severity(), Severity::Recoverable);
        assert_eq!(
            e.to_string(),
            "dropped a 100-byte message from untrusted sender port 4242 (only the kernel, port 0, is trusted)"
        );
    }

    #[test]
    fn over_long_datagrams_are_truncated_ones() {
        // Over the bound, recvfrom(MSG_TRUNC) reports the real length while the buffer holds
        // only MAX_MESSAGE_LEN + 1 bytes; no kernel uevent comes near that size.
        assert!(check_datagram(0, MAX_MESSAGE_LEN).is_ok());
        let e = check_datagram(0, 10_000).unwrap_err();
        assert_eq!(e.severity(), Severity::Recoverable);
        assert_eq!(
            e.to_string(),
            "dropped a truncated message of 10000 bytes (larger than the 8192-byte bound)"
        );
        // The sender is checked first: a foreign giant is foreign.
        assert!(matches!(
            check_datagram(7, 10_000),
            Err(RecvError::ForeignSender { .. })
        ));
    }

    #[test]
    fn severities() {
        assert_eq!(RecvError::Overflow.severity(), Severity::NeedsResync);
        assert_eq!(RecvError::Io(Errno::BADF).severity(), Severity::Fatal);
        assert_eq!(
            RecvError::Malformed(ParseError::Empty).severity(),
            Severity::Recoverable
        );
    }
}
