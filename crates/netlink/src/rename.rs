//! Renaming a network interface (`NAME=` in udev rules) through rtnetlink, as udevd does:
//! one `RTM_SETLINK` with `IFLA_IFNAME`, acknowledged by the kernel.

use rustix::io::Errno;
use rustix::net::{self, netlink, AddressFamily, RecvFlags, SendFlags, SocketType};

/// Why an interface could not be renamed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenameError {
    /// The new name is not one the kernel accepts for an interface.
    #[error(
        "invalid interface name {0:?}: 1 to 15 bytes, no '/', ':' or whitespace, not '.' or '..'"
    )]
    InvalidName(String),
    /// Talking to rtnetlink failed.
    #[error("rtnetlink: {0}")]
    Io(Errno),
    /// The kernel refused the rename (the name is taken, the interface is up and cannot be
    /// renamed while up, …).
    #[error("the kernel refused: {0}")]
    Refused(Errno),
    /// The kernel's answer was not the acknowledgement asked for.
    #[error("unexpected rtnetlink answer")]
    Unexpected,
}

/// `RTM_SETLINK` from `linux/rtnetlink.h`.
const RTM_SETLINK: u16 = 19;
/// `NLMSG_ERROR`: the acknowledgement (error 0) or the failure.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_ACK`: answer even on success.
const NLM_F_ACK: u16 = 4;
/// `IFLA_IFNAME` from `linux/if_link.h`.
const IFLA_IFNAME: u16 = 3;
/// `IFNAMSIZ` less the terminating NUL.
const MAX_NAME: usize = 15;

/// Whether the kernel would take `name` for an interface (`dev_valid_name`).
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// The `RTM_SETLINK` request renaming interface `ifindex` to `name`.
fn request(ifindex: u32, name: &str) -> Vec<u8> {
    let attr_len = 4 + name.len() + 1;
    let padded = attr_len.next_multiple_of(4);
    let len = 16 + 16 + padded;
    let mut m = Vec::with_capacity(len);
    // A name is at most 15 bytes: the length fits in u32.
    m.extend_from_slice(&crate::nlmsghdr(
        len as u32,
        RTM_SETLINK,
        crate::NLM_F_REQUEST | NLM_F_ACK,
        1,
    ));
    // struct ifinfomsg: family, pad, type, index, flags, change.
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    m.extend_from_slice(name.as_bytes());
    m.resize(len, 0);
    m
}

/// Reads the kernel's answer: `Ok` for the acknowledgement, the errno it refused with, or
/// [`RenameError::Unexpected`].
fn answer(reply: &[u8]) -> Result<(), RenameError> {
    // nlmsghdr.nlmsg_type, then nlmsgerr.error right after the 16-byte header.
    let (Some(&[k0, k1]), Some(&[e0, e1, e2, e3])) = (reply.get(4..6), reply.get(16..20)) else {
        return Err(RenameError::Unexpected);
    };
    if u16::from_ne_bytes([k0, k1]) != NLMSG_ERROR {
        return Err(RenameError::Unexpected);
    }
    match i32::from_ne_bytes([e0, e1, e2, e3]) {
        0 => Ok(()),
        e => Err(RenameError::Refused(Errno::from_raw_os_error(-e))),
    }
}

/// Renames interface `ifindex` to `name` in the calling thread's network namespace.
pub fn rename_interface(ifindex: u32, name: &str) -> Result<(), RenameError> {
    if !valid_interface_name(name) {
        return Err(RenameError::InvalidName(name.to_owned()));
    }
    let fd = net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        net::SocketFlags::CLOEXEC,
        None, // protocol 0: NETLINK_ROUTE
    )
    .map_err(RenameError::Io)?;
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    net::sendto(&fd, &request(ifindex, name), SendFlags::empty(), &kernel)
        .map_err(RenameError::Io)?;
    let mut reply = [0u8; 1024];
    let (n, _) = net::recv(&fd, &mut reply[..], RecvFlags::empty()).map_err(RenameError::Io)?;
    answer(&reply[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_refuses_are_refused_first() {
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-bytes-xx"] {
            assert!(!valid_interface_name(bad), "{bad:?}");
            assert_eq!(
                rename_interface(1, bad),
                Err(RenameError::InvalidName(bad.into()))
            );
        }
        assert!(valid_interface_name("eth0"));
        assert!(valid_interface_name("fifteen-bytes-x"));
    }

    #[test]
    fn the_request_is_a_setlink_with_the_name_attribute() {
        let m = request(7, "wan0");
        assert_eq!(m.len(), 16 + 16 + 12);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_SETLINK);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(u16::from_ne_bytes(m[32..34].try_into().unwrap()), 9);
        assert_eq!(
            u16::from_ne_bytes(m[34..36].try_into().unwrap()),
            IFLA_IFNAME
        );
        assert_eq!(&m[36..41], b"wan0\0");
    }

    #[test]
    fn answers() {
        let ack = |e: i32| {
            let mut r = vec![0u8; 36];
            r[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            r[16..20].copy_from_slice(&e.to_ne_bytes());
            r
        };
        assert_eq!(answer(&ack(0)), Ok(()));
        assert_eq!(answer(&ack(-17)), Err(RenameError::Refused(Errno::EXIST)));
        assert_eq!(answer(&[0u8; 8]), Err(RenameError::Unexpected));
    }

    #[test]
    fn loopback_is_renamed_and_back_in_a_private_namespace() {
        uevd_testkit::in_private_netns(|| {
            assert_eq!(rename_interface(1, "uevdlo0"), Ok(()));
            assert_eq!(
                rename_interface(999_999, "x0"),
                Err(RenameError::Refused(Errno::NODEV))
            );
            assert_eq!(rename_interface(1, "lo"), Ok(()));
        })
        .expect("a private network namespace (tests run as root)");
    }
}
