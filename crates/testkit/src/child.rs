//! Running the real `uevd` binary and reading its output line by line with timeouts.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A `Command` for the `uevd` binary at `path` (integration tests pass
/// `env!("CARGO_BIN_EXE_uevd")`), with stdout and stderr piped.
pub fn uevd_command(path: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new(path.as_ref());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// One line of a child's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A line on stdout.
    Out(String),
    /// A line on stderr.
    Err(String),
}

/// A running child whose stdout and stderr are read by background threads, so a test can wait
/// for a line with a timeout and, on failure, print everything the child said.
pub struct Child {
    inner: std::process::Child,
    lines: Receiver<Line>,
    seen: Vec<Line>,
}

impl Child {
    /// Spawns `cmd` (in the calling thread's network namespace).
    pub fn spawn(mut cmd: Command) -> std::io::Result<Child> {
        let mut inner = cmd.spawn()?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = inner.stdout.take() {
            pump(out, tx.clone(), Line::Out);
        }
        if let Some(err) = inner.stderr.take() {
            pump(err, tx, Line::Err);
        }
        Ok(Child {
            inner,
            lines,
            seen: Vec::new(),
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Waits up to `timeout` for a line matching `pred`; returns it, or `None` on timeout or
    /// end of output. Every line read is kept for [`Child::transcript`].
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Line) -> bool) -> Option<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits for a stdout line containing `needle`.
    pub fn wait_for_stdout(&mut self, timeout: Duration, needle: &str) -> Option<String> {
        match self.wait_for(timeout, |l| matches!(l, Line::Out(s) if s.contains(needle))) {
            Some(Line::Out(s)) => Some(s),
            _ => None,
        }
    }

    /// Collects stdout lines until `pred` holds for one (inclusive) or `timeout` passes.
    pub fn stdout_until(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let start = self.seen.len();
        self.wait_for(timeout, |l| matches!(l, Line::Out(s) if pred(s)));
        self.seen[start..]
            .iter()
            .filter_map(|l| match l {
                Line::Out(s) => Some(s.clone()),
                Line::Err(_) => None,
            })
            .collect()
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: rustix::process::Signal) -> std::io::Result<()> {
        let pid = rustix::process::Pid::from_raw(self.inner.id() as i32)
            .ok_or_else(|| std::io::Error::other("child has pid 0"))?;
        rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
    }

    /// Waits up to `timeout` for the child to exit, collecting the rest of its output; kills it
    /// if it does not. Returns the exit status (`None` if it had to be killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.inner.try_wait() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.inner.kill();
                let _ = self.inner.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the child has said so far, for failure messages.
    pub fn transcript(&self) -> String {
        self.seen
            .iter()
            .map(|l| match l {
                Line::Out(s) => format!("stdout| {s}\n"),
                Line::Err(s) => format!("stderr| {s}\n"),
            })
            .collect()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.inner.try_wait() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}

fn pump<R: Read + Send + 'static>(reader: R, tx: mpsc::Sender<Line>, wrap: fn(String) -> Line) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                break;
            }
        }
    });
}
