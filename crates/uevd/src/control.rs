//! The control socket protocol (`RUN/control`), shared by the daemon and the CLI.
//!
//! A Unix stream socket, mode 0600, root only (checked with `SO_PEERCRED`). The client sends
//! one request line; the daemon answers with zero or more data lines and a final line that is
//! `ok` (optionally followed by text) or `error: reason`, then closes — except `watch-uuid`,
//! which stays open and streams lines. Text, so that `socat - UNIX:/run/uevd/control` works.
//!
//! | request | answer |
//! |---|---|
//! | `ping` | `ok` at once |
//! | `settle` | `ok` once no event is queued or being processed (and no resync is due) |
//! | `settle now` | at once: `ok` if that is so now, else `error: not settled` |
//! | `stats` | `KEY VALUE` lines, then `ok` |
//! | `reload` | reloads the policy: `ok reloaded: …` or `error: …` |
//! | `log-level LEVEL` | `ok` (`error`, `warn`, `info`, `debug`) |
//! | `exit` | `ok`, then the daemon finishes in-flight events and exits |
//! | `watch-uuid UUID` | `ok`, then `processed DEVPATH` for every event carrying `SYNTH_UUID=UUID` once it is fully processed, until the client closes |

use crate::log::Level;
use rustix::net::RecvFlags;
use std::fmt;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Is the daemon there?
    Ping,
    /// Answer when the queue is empty.
    Settle,
    /// Answer at once: `ok` if the queue is empty, an error if not (`settle --timeout 0`).
    SettleNow,
    /// Counters.
    Stats,
    /// Reload the policy.
    Reload,
    /// Change the log level.
    LogLevel(Level),
    /// Stop.
    Exit,
    /// Stream the processing of one synthetic-event transaction.
    WatchUuid(String),
}

impl Request {
    /// Parses a request line (without its newline).
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_ascii_whitespace();
        let req = match (words.next(), words.next()) {
            (Some("ping"), None) => Request::Ping,
            (Some("settle"), None) => Request::Settle,
            (Some("settle"), Some("now")) => Request::SettleNow,
            (Some("stats"), None) => Request::Stats,
            (Some("reload"), None) => Request::Reload,
            (Some("exit"), None) => Request::Exit,
            (Some("log-level"), Some(l)) => Request::LogLevel(
                Level::parse(l).ok_or_else(|| format!("unknown log level {l:?}"))?,
            ),
            (Some("watch-uuid"), Some(u)) if valid_uuid(u) => Request::WatchUuid(u.to_owned()),
            (Some("watch-uuid"), Some(u)) => return Err(format!("invalid UUID {u:?}")),
            _ => return Err(format!("unknown request {line:?}")),
        };
        if words.next().is_some() {
            return Err(format!("trailing words in {line:?}"));
        }
        Ok(req)
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Ping => f.write_str("ping"),
            Request::Settle => f.write_str("settle"),
            Request::SettleNow => f.write_str("settle now"),
            Request::Stats => f.write_str("stats"),
            Request::Reload => f.write_str("reload"),
            Request::Exit => f.write_str("exit"),
            Request::LogLevel(l) => write!(f, "log-level {}", format!("{l:?}").to_lowercase()),
            Request::WatchUuid(u) => write!(f, "watch-uuid {u}"),
        }
    }
}

/// Whether `s` is a UUID as the kernel accepts in `uevent` writes (8-4-4-4-12 hex digits).
pub fn valid_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The control socket's path under `run`.
pub fn socket_path(run: &Path) -> PathBuf {
    run.join("control")
}

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens there.
    #[error("cannot connect to {path}: {source} (is uevd daemon running with --run {run}?)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The run directory.
        run: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon did not answer in time.
    #[error("no answer from the daemon within {0:?}")]
    Timeout(Duration),
    /// The daemon answered `error: …`.
    #[error("the daemon refused: {0}")]
    Refused(String),
    /// The connection broke.
    #[error("control connection failed: {0}")]
    Io(#[from] io::Error),
    /// The daemon closed without a final line.
    #[error("the daemon closed the connection without answering")]
    Closed,
}

/// A connection to the daemon.
pub struct Client {
    stream: UnixStream,
    /// Bytes received after the last whole line handed out: a line may arrive in pieces, and
    /// a wait that times out must not lose what came of it.
    partial: Vec<u8>,
}

impl Client {
    /// Connects to `RUN/control`.
    pub fn connect(run: &Path) -> Result<Client, ClientError> {
        let path = socket_path(run);
        let stream = UnixStream::connect(&path).map_err(|source| ClientError::Connect {
            path: path.clone(),
            run: run.display().to_string(),
            source,
        })?;
        Ok(Client {
            stream,
            partial: Vec::new(),
        })
    }

    /// Sends one request line.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        (&self.stream).write_all(format!("{request}\n").as_bytes())?;
        Ok(())
    }

    /// A whole line already received, if any.
    fn take_line(&mut self) -> Option<String> {
        let end = self.partial.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&self.partial[..end]).into_owned();
        self.partial.drain(..=end);
        Some(line)
    }

    /// Reads the next line, waiting until `deadline`. `Ok(None)`: the daemon closed.
    pub fn read_line(&mut self, deadline: Instant) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(Duration::ZERO));
            }
            self.stream.set_read_timeout(Some(left))?;
            if !self.receive(RecvFlags::empty())? {
                return Ok(None);
            }
        }
    }

    /// The next line if one has arrived, without waiting. `Ok(None)`: none yet.
    pub fn poll_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
            }
            if !self.receive(RecvFlags::DONTWAIT)? {
                return Err(ClientError::Closed);
            }
            if !self.partial.contains(&b'\n') {
                return Ok(None);
            }
        }
    }

    /// Receives what is there into `partial`; false once the daemon has closed. A wait that
    /// ends without data (timeout, or nothing there with `DONTWAIT`) is not an error here.
    fn receive(&mut self, flags: RecvFlags) -> Result<bool, ClientError> {
        let mut chunk = [0u8; 4096];
        match rustix::net::recv(&self.stream, &mut chunk[..], flags) {
            Ok((0, _)) => Ok(false),
            Ok((n, _)) => {
                self.partial.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(true),
            Err(e) => Err(io::Error::from(e).into()),
        }
    }

    /// Sends `request` and reads until the final line; returns the data lines and the text
    /// after `ok`.
    pub fn call(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Vec<String>, String), ClientError> {
        let deadline = Instant::now() + timeout;
        self.send(request)?;
        let mut lines = Vec::new();
        loop {
            let line = self
                .read_line(deadline)
                .map_err(|e| match e {
                    ClientError::Timeout(_) => ClientError::Timeout(timeout),
                    e => e,
                })?
                .ok_or(ClientError::Closed)?;
            if line == "ok" {
                return Ok((lines, String::new()));
            }
            if let Some(text) = line.strip_prefix("ok ") {
                return Ok((lines, text.to_owned()));
            }
            if let Some(reason) = line.strip_prefix("error: ") {
                return Err(ClientError::Refused(reason.to_owned()));
            }
            lines.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Ping,
            Request::Settle,
            Request::Stats,
            Request::Reload,
            Request::Exit,
            Request::LogLevel(Level::Debug),
            Request::WatchUuid("5c0e7a1e-0000-4000-8000-000000000001".into()),
        ] {
            assert_eq!(Request::parse(&r.to_string()), Ok(r));
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        assert_eq!(
            Request::parse("frob"),
            Err("unknown request \"frob\"".into())
        );
        assert_eq!(
            Request::parse("ping now"),
            Err("unknown request \"ping now\"".into())
        );
        assert_eq!(
            Request::parse("log-level loud"),
            Err("unknown log level \"loud\"".into())
        );
        assert_eq!(
            Request::parse("watch-uuid ../x"),
            Err("invalid UUID \"../x\"".into())
        );
        assert_eq!(
            Request::parse("log-level info extra"),
            Err("trailing words in \"log-level info extra\"".into())
        );
    }

    #[test]
    fn uuids() {
        assert!(valid_uuid("5c0e7a1e-0000-4000-8000-00000000abcd"));
        assert!(!valid_uuid("5c0e7a1e-0000-4000-8000-00000000abc"));
        assert!(!valid_uuid("5c0e7a1e00004000800000000000abcd"));
        assert!(!valid_uuid("zc0e7a1e-0000-4000-8000-00000000abcd"));
    }
}
