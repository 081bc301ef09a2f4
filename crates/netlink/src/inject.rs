//! Sending uevents to the kernel so that it re-broadcasts them as its own.
//!
//! A message sent to the kernel's uevent socket (port 0) as `nlmsghdr` + payload is broadcast
//! by the kernel to group 1 of the sender's network namespace, from port 0, with `SEQNUM=N\0`
//! appended (`uevent_net_rcv_skb` in `lib/kobject_uevent.c`). Listeners cannot tell it from a
//! genuine event, which is what makes hermetic tests faithful — and why [`Injector::open`]
//! refuses to work in the host's network namespace.

use rustix::fd::OwnedFd;
use rustix::io::{Errno, IoSlice};
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{
    self as net, AddressFamily, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny,
    SocketFlags, SocketType,
};

/// The message type: anything ≥ `NLMSG_MIN_TYPE` (0x10) is handed to the uevent handler.
const MSG_TYPE: u16 = 0x10;
/// The inode number the kernel gives the initial network namespace (`include/linux/proc_ns.h`).
const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;
/// The largest payload injected. The kernel silently drops injected uevents that do not fit
/// its 2 KiB uevent buffer once `SEQNUM=` is appended (observed on 6.18: payloads over 2019
/// bytes vanish); refusing them here turns a silent loss into an error.
const MAX_PAYLOAD: usize = 2000;
/// Messages per `sendmmsg` call.
const BATCH: usize = 64;

/// Why injection failed.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The calling thread is in the same network namespace as PID 1: injecting would send
    /// fake device events to the real device manager.
    #[error(
        "refusing to inject uevents into the host's network namespace; unshare(CLONE_NEWNET) first"
    )]
    HostNamespace,
    /// The namespaces could not be compared.
    #[error("cannot tell which network namespace this is ({path}): {source}")]
    Namespace {
        /// The `/proc` path that failed.
        path: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Creating the sending socket failed.
    #[error("cannot create the injection socket: {0}")]
    Socket(#[source] Errno),
    /// The payload would not come out as a valid uevent.
    #[error("payload {0}")]
    BadPayload(&'static str),
    /// The kernel refused the message (`EPERM` without `CAP_SYS_ADMIN` in the namespace).
    #[error("the kernel refused the injected uevent: {0}")]
    Send(#[source] Errno),
}

/// A socket that sends uevents to the kernel for re-broadcast in this network namespace.
pub struct Injector {
    fd: OwnedFd,
}

impl Injector {
    /// Opens the socket after checking that this thread is *not* in the host's network
    /// namespace: neither the kernel's initial one (whose proc inode is the fixed
    /// `PROC_NET_INIT_INO`) nor, when it can be read, PID 1's.
    pub fn open() -> Result<Injector, InjectError> {
        let own = rustix::fs::stat("/proc/thread-self/ns/net").map_err(|source| {
            InjectError::Namespace {
                path: "/proc/thread-self/ns/net",
                source,
            }
        })?;
        let is_pid1s = rustix::fs::stat("/proc/1/ns/net")
            .is_ok_and(|init| (init.st_dev, init.st_ino) == (own.st_dev, own.st_ino));
        if own.st_ino == PROC_NET_INIT_INO || is_pid1s {
            return Err(InjectError::HostNamespace);
        }
        let fd = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(netlink::KOBJECT_UEVENT),
        )
        .map_err(InjectError::Socket)?;
        Ok(Injector { fd })
    }

    /// Sends one uevent payload (`ACTION@DEVPATH\0KEY=VALUE\0…`, normally without `SEQNUM`).
    pub fn send(&self, payload: &[u8]) -> Result<(), InjectError> {
        self.send_all(&[payload])
    }

    /// Sends many payloads, one datagram each (the kernel handles one uevent per datagram),
    /// batched with `sendmmsg` so the injector outruns any listener.
    pub fn send_all<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<(), InjectError> {
        let kernel = SocketAddrAny::from(SocketAddrNetlink::new(0, 0));
        for chunk in payloads.chunks(BATCH) {
            let mut headers = [[0u8; 16]; BATCH];
            for (header, payload) in headers.iter_mut().zip(chunk) {
                *header = nlmsghdr(payload.as_ref())?;
            }
            let iovs: Vec<[IoSlice<'_>; 2]> = headers
                .iter()
                .zip(chunk)
                .map(|(h, p)| [IoSlice::new(h), IoSlice::new(p.as_ref())])
                .collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..chunk.len())
                .map(|_| SendAncillaryBuffer::default())
                .collect();
            let mut msgs: Vec<MMsgHdr<'_>> = iovs
                .iter()
                .zip(controls.iter_mut())
                .map(|(iov, control)| MMsgHdr::new_with_addr(&kernel, iov, control))
                .collect();
            let mut sent = 0;
            while sent < msgs.len() {
                match net::sendmmsg(&self.fd, &mut msgs[sent..], SendFlags::empty()) {
                    Ok(n) => sent += n,
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(InjectError::Send(e)),
                }
            }
        }
        Ok(())
    }
}

/// The 16-byte `nlmsghdr` for `payload`, after checking the payload will come out whole.
fn nlmsghdr(payload: &[u8]) -> Result<[u8; 16], InjectError> {
    if payload.last() != Some(&0) {
        // The kernel appends SEQNUM right after the payload: without a final NUL it would be
        // glued onto the last value.
        return Err(InjectError::BadPayload("must end with NUL"));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(InjectError::BadPayload(
            "is over 2000 bytes: the kernel silently drops injected uevents of about 2 KiB",
        ));
    }
    // MAX_PAYLOAD fits in u32.
    Ok(crate::nlmsghdr(
        (16 + payload.len()) as u32,
        MSG_TYPE,
        crate::NLM_F_REQUEST,
        0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = nlmsghdr(b"add@/x\0").unwrap();
        assert_eq!(u32::from_ne_bytes(h[0..4].try_into().unwrap()), 23);
        assert_eq!(u16::from_ne_bytes(h[4..6].try_into().unwrap()), 0x10);
        assert_eq!(u16::from_ne_bytes(h[6..8].try_into().unwrap()), 1);
        assert_eq!(&h[8..], &[0; 8]);
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut p = vec![b'x'; MAX_PAYLOAD];
        p.push(0);
        assert!(matches!(nlmsghdr(&p), Err(InjectError::BadPayload(m)) if m.contains("2 KiB")));
        assert!(nlmsghdr(&p[1..]).is_ok());
    }

    #[test]
    fn unterminated_payload_is_refused() {
        assert!(matches!(
            nlmsghdr(b"add@/x\0A=b"),
            Err(InjectError::BadPayload("must end with NUL"))
        ));
    }

    #[test]
    fn refuses_the_host_namespace() {
        // Test threads start in the namespace they were launched in; when that is the
        // initial one (the normal case, and CI's), the guard must trip.
        let ino = rustix::fs::stat("/proc/thread-self/ns/net").map(|s| s.st_ino);
        if ino == Ok(PROC_NET_INIT_INO) {
            assert!(matches!(Injector::open(), Err(InjectError::HostNamespace)));
        }
    }
}
