//! The daemon's side of the control socket (protocol in [`crate::control`]).

use super::process::Processed;
use crate::control::{socket_path, Request};
use crate::{info, warn};
use rustix::fd::{AsFd, BorrowedFd};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the daemon must do for a request the server cannot answer alone.
pub enum ServerAction {
    /// Stop (the client already has its `ok`).
    Exit,
    /// Reload the policy, then answer client `token` with [`ControlServer::reply_and_close`].
    Reload(u64),
}

enum State {
    /// Waiting for the request line.
    Reading,
    /// Waiting for the queue to empty.
    Settling,
    /// Streaming `processed DEVPATH` lines for one UUID.
    Watching(String),
    /// Waiting for the daemon to reload.
    Reloading,
    /// Answered: closed once the answer is out.
    Closing,
}

struct Conn {
    stream: UnixStream,
    /// When it connected: a client that sends no request in [`IDLE_LIMIT`] is dropped.
    since: Instant,
    buf: Vec<u8>,
    state: State,
    /// Answers the client has not taken yet (from `sent` on).
    out: Vec<u8>,
    sent: usize,
}

impl Conn {
    /// Writes what the socket takes of the pending output.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match (&self.stream).write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }
}

/// Longest request line accepted.
const MAX_LINE: usize = 512;

/// Clients served at once; one more is told so and closed. Each holds a descriptor, and the
/// socket is root's alone, so this only guards against a runaway script.
pub const MAX_CLIENTS: usize = 256;

/// How long a client may stay connected without sending its request line.
pub const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// What [`ControlServer::accept`] did.
pub struct Accepted<'a> {
    /// The new clients to watch: descriptor and token.
    pub clients: Vec<(BorrowedFd<'a>, u64)>,
    /// The process ran out of descriptors: stop accepting for a while (the pending
    /// connection would wake the loop again and again).
    pub out_of_fds: bool,
}

/// Most answers kept for a client that does not read them yet — 4 MiB, some 40 000
/// `processed` lines of a `trigger --wait`; past that the client is dropped.
const MAX_UNSENT: usize = 4 << 20;

/// The listening socket and its clients.
pub struct ControlServer {
    path: PathBuf,
    listener: Option<UnixListener>,
    clients: HashMap<u64, Conn>,
    next_token: u64,
}

impl ControlServer {
    /// A server for `RUN/control`, not yet bound.
    pub fn new(run: &Path) -> ControlServer {
        ControlServer {
            path: socket_path(run),
            listener: None,
            clients: HashMap::new(),
            next_token: 0,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds the socket (mode 0600): from now on clients can reach the daemon.
    ///
    /// The socket is made in a private (0700) directory and renamed into place, so the path
    /// appears only once it is listening with its final mode: a client that sees it can
    /// connect (readiness is the path existing), and nobody can connect while the mode is
    /// still the daemon's umask of 0.
    pub fn bind(&mut self) -> io::Result<()> {
        let staging = self
            .path
            .with_file_name(format!(".control.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
        let temp = staging.join("control");
        let made = UnixListener::bind(&temp).and_then(|listener| {
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            std::fs::rename(&temp, &self.path)?;
            Ok(listener)
        });
        let _ = std::fs::remove_dir_all(&staging);
        self.listener = Some(made?);
        Ok(())
    }

    /// The listening descriptor, once bound.
    pub fn listener_fd(&self) -> Option<BorrowedFd<'_>> {
        self.listener.as_ref().map(AsFd::as_fd)
    }

    /// Accepts every waiting client that is root (or the daemon's own user), up to
    /// [`MAX_CLIENTS`]; returns each accepted client's descriptor and token (tokens count up
    /// from `base`).
    pub fn accept(&mut self, base: u64) -> Accepted<'_> {
        let mut tokens = Vec::new();
        let mut out_of_fds = false;
        if let Some(listener) = &self.listener {
            loop {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // EMFILE/ENFILE: the connection stays pending.
                        out_of_fds = matches!(e.raw_os_error(), Some(23 | 24));
                        if !out_of_fds {
                            warn!("control: accept failed: {e}");
                        }
                        break;
                    }
                };
                if self.clients.len() >= MAX_CLIENTS {
                    let _ = (&stream).write_all(b"error: too many clients\n");
                    continue;
                }
                let uid = rustix::net::sockopt::socket_peercred(&stream).map(|c| c.uid.as_raw());
                let me = rustix::process::geteuid().as_raw();
                if !matches!(uid, Ok(u) if u == 0 || u == me) {
                    warn!("control: refusing a client with uid {uid:?}: root only");
                    let _ = (&stream).write_all(b"error: permission denied (root only)\n");
                    continue;
                }
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let token = base + self.next_token;
                self.next_token += 1;
                self.clients.insert(
                    token,
                    Conn {
                        stream,
                        since: Instant::now(),
                        buf: Vec::new(),
                        state: State::Reading,
                        out: Vec::new(),
                        sent: 0,
                    },
                );
                tokens.push(token);
            }
        }
        let clients = tokens
            .into_iter()
            .filter_map(|t| self.clients.get(&t).map(|c| (c.stream.as_fd(), t)))
            .collect();
        Accepted {
            clients,
            out_of_fds,
        }
    }

    /// When the earliest client still waiting for its request line overstays
    /// [`IDLE_LIMIT`].
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter(|c| matches!(c.state, State::Reading))
            .map(|c| c.since + IDLE_LIMIT)
            .min()
    }

    /// Drops the clients that connected more than [`IDLE_LIMIT`] ago and never sent their
    /// request line.
    pub fn drop_idle(&mut self, now: Instant) {
        let before = self.clients.len();
        self.clients
            .retain(|_, c| !(matches!(c.state, State::Reading) && c.since + IDLE_LIMIT <= now));
        let dropped = before - self.clients.len();
        if dropped > 0 {
            warn!(
                "control: dropped {dropped} client(s) that sent no request within {IDLE_LIMIT:?}"
            );
        }
    }

    /// Forgets client `token` (closing it).
    pub fn drop_client(&mut self, token: u64) {
        self.clients.remove(&token);
    }

    /// Handles client `token` becoming readable or writable: sends what it can take of its
    /// pending answers, and reads its request. `idle` says whether the queue is empty now;
    /// `stats` is the answer to `stats`.
    pub fn read(&mut self, token: u64, idle: bool, stats: &[String]) -> Vec<ServerAction> {
        let Some(conn) = self.clients.get_mut(&token) else {
            return Vec::new();
        };
        if let Err(e) = conn.flush() {
            warn!("control: dropping a client: {e}");
            self.clients.remove(&token);
            return Vec::new();
        }
        if matches!(conn.state, State::Closing) {
            if conn.unsent() == 0 {
                self.clients.remove(&token);
            }
            return Vec::new();
        }
        let mut chunk = [0u8; 512];
        let closed = loop {
            match (&conn.stream).read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        if closed {
            // A last request without its newline is still a request (`printf ping | …`).
            if !matches!(conn.state, State::Reading) || conn.buf.is_empty() {
                self.clients.remove(&token);
                return Vec::new();
            }
            conn.buf.push(b'\n');
        }
        if !matches!(conn.state, State::Reading) {
            // Clients say nothing after their request; ignore chatter.
            conn.buf.clear();
            return Vec::new();
        }
        let Some(end) = conn.buf.iter().position(|&b| b == b'\n') else {
            if conn.buf.len() > MAX_LINE {
                self.reply_and_close(token, "error: request line too long");
            }
            return Vec::new();
        };
        let line = String::from_utf8_lossy(&conn.buf[..end]).trim().to_owned();
        conn.buf.clear();
        let request = match Request::parse(&line) {
            Ok(r) => r,
            Err(e) => {
                warn!("control: {e}");
                self.reply_and_close(token, &format!("error: {e}"));
                return Vec::new();
            }
        };
        match request {
            Request::Ping => self.reply_and_close(token, "ok"),
            Request::Settle | Request::SettleNow if idle => self.reply_and_close(token, "ok"),
            Request::SettleNow => self.reply_and_close(token, "error: not settled"),
            Request::Settle => conn.state = State::Settling,
            Request::Stats => {
                let mut text = stats.join("\n");
                text.push_str("\nok");
                self.reply_and_close(token, &text);
            }
            Request::LogLevel(level) => {
                crate::log::set_level(level);
                info!("log level set to {level:?}");
                self.reply_and_close(token, "ok");
            }
            Request::Exit => {
                self.reply_and_close(token, "ok");
                return vec![ServerAction::Exit];
            }
            Request::Reload => {
                conn.state = State::Reloading;
                return vec![ServerAction::Reload(token)];
            }
            Request::WatchUuid(uuid) => {
                conn.state = State::Watching(uuid);
                self.send(token, "ok");
            }
        }
        Vec::new()
    }

    /// Writes `text` and a newline to `token`, keeping what the socket cannot take yet for
    /// when it can; a client that lets [`MAX_UNSENT`] pile up, or whose socket broke, is
    /// dropped.
    fn send(&mut self, token: u64, text: &str) {
        let Some(conn) = self.clients.get_mut(&token) else {
            return;
        };
        conn.out.extend_from_slice(text.as_bytes());
        conn.out.push(b'\n');
        let result = match conn.flush() {
            Ok(()) if conn.unsent() > MAX_UNSENT => Err(format!(
                "it leaves {} bytes of answers unread",
                conn.unsent()
            )),
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            warn!("control: dropping a client: {e}");
            self.clients.remove(&token);
        }
    }

    /// Sends the final answer and closes (once the client has taken it).
    pub fn reply_and_close(&mut self, token: u64, text: &str) {
        self.send(token, text);
        match self.clients.get_mut(&token) {
            Some(conn) if conn.unsent() > 0 => conn.state = State::Closing,
            _ => {
                self.clients.remove(&token);
            }
        }
    }

    /// Tells `watch-uuid` clients about a processed event of their transaction.
    pub fn processed(&mut self, p: &Processed) {
        let Some(uuid) = p.event.synth_uuid() else {
            return;
        };
        let watchers: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(&c.state, State::Watching(u) if u == uuid))
            .map(|(t, _)| *t)
            .collect();
        for token in watchers {
            self.send(token, &format!("processed {}", p.event.devpath()));
        }
    }

    /// Answers every `settle` waiter: the queue is empty.
    pub fn settled(&mut self) {
        let waiting: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Settling))
            .map(|(t, _)| *t)
            .collect();
        for token in waiting {
            self.reply_and_close(token, "ok");
        }
    }

    /// Removes the socket file (shutdown), so nobody mistakes a dead daemon for a live one.
    pub fn close(&mut self) {
        if self.listener.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
        self.clients.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn the_socket_appears_listening_with_mode_0600_and_leaves_no_staging_behind() {
        let run = tempfile::tempdir().expect("tempdir");
        let mut server = ControlServer::new(run.path());
        server.bind().expect("bind");
        let meta = std::fs::metadata(server.path()).expect("the socket");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        UnixStream::connect(server.path()).expect("listening as soon as it is there");
        let names: Vec<_> = std::fs::read_dir(run.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("control")]);
    }
}
