//! SIGINT/SIGTERM as a readable file descriptor, for poll loops.
//!
//! A self-pipe (signal-hook) rather than a blocked mask + signalfd: children spawned later start
//! with an empty signal mask, so helpers stay killable (see the rust notes on `Command`).

use std::io::Read;
use std::os::unix::net::UnixStream;

/// The read end of a self-pipe that becomes readable when SIGINT or SIGTERM arrives.
pub struct Termination {
    read: UnixStream,
}

impl Termination {
    /// Registers the handlers.
    pub fn install() -> std::io::Result<Termination> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        Ok(Termination { read })
    }

    /// Whether a signal arrived (drains the pipe).
    pub fn fired(&mut self) -> bool {
        let mut buf = [0u8; 16];
        matches!((&self.read).read(&mut buf), Ok(n) if n > 0)
    }
}

impl rustix::fd::AsFd for Termination {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.read.as_fd()
    }
}
