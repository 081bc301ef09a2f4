//! Running code in a private network namespace.

use std::fmt;

/// Why a private network namespace could not be entered.
#[derive(Debug)]
pub struct NetnsError(rustix::io::Errno);

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unshare(CLONE_NEWNET) failed ({}): hermetic uevent tests need root (CAP_SYS_ADMIN)",
            self.0
        )
    }
}

impl std::error::Error for NetnsError {}

/// Runs `f` on a new thread that first moves into a fresh network namespace, and returns its
/// result. Sockets and child processes created by `f` live in that namespace; the rest of the
/// process, and the host, are untouched. Panics in `f` propagate.
pub fn in_private_netns<T, F>(f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare_net()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[allow(unsafe_code)]
fn unshare_net() -> Result<(), NetnsError> {
    // SAFETY: only CLONE_NEWNET is unshared, which changes no file descriptor table or memory
    // the rest of the process relies on; the hazard rustix marks unsafe is CLONE_FILES.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(NetnsError)
}
