//! `RUN` helpers, run by the event loop without blocking it.
//!
//! A device's helpers run one after another, in rule order, after its node and symlinks
//! exist; helpers of unrelated devices run side by side. The event counts as processed — it
//! releases related events, answers `trigger --wait` and `settle` — only when its last helper
//! has exited. Each helper has a deadline: past it, it is killed and the failure logged by name.
//! Exits are noticed through a pidfd per helper in the daemon's epoll set.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::spawn;

/// One helper to run: a command line (split like udev, no shell) and its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperJob {
    /// The command line.
    pub command: String,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Kill it after this long.
    pub timeout: Duration,
}

/// A helper that is running.
pub struct Running {
    child: Child,
    pidfd: OwnedFd,
    deadline: Instant,
    name: String,
    timeout: Duration,
}

impl AsFd for Running {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl Running {
    /// Starts `job`.
    pub fn start(job: &HelperJob) -> Result<Running, String> {
        let argv = spawn::split_command(&job.command)
            .ok_or_else(|| format!("cannot parse command line {:?}", job.command))?;
        let program = spawn::resolve_program(&argv[0]);
        let name = program.display().to_string();
        let child = spawn::helper_command(&program)
            .args(&argv[1..])
            .env_clear()
            .envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run '{name}': {e}"))?;
        let pid = rustix::process::Pid::from_child(&child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .map_err(|e| format!("'{name}': pidfd_open: {e}"))?;
        Ok(Running {
            child,
            pidfd,
            deadline: Instant::now() + job.timeout,
            name,
            timeout: job.timeout,
        })
    }

    /// When it must have finished.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// `Some(result)` once it has exited (reaping it).
    pub fn poll(&mut self) -> Option<Result<(), String>> {
        match self.child.try_wait() {
            Ok(Some(status)) if status.success() => Some(Ok(())),
            Ok(Some(status)) => Some(Err(format!("'{}' failed: {status}", self.name))),
            Ok(None) => None,
            Err(e) => Some(Err(format!("'{}': wait: {e}", self.name))),
        }
    }

    /// Kills it (deadline passed) and reaps it.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!(
            "'{}' timed out after {:.1}s and was killed",
            self.name,
            self.timeout.as_secs_f64()
        )
    }
}

/// The helpers of one event still to run, and the one running now.
pub struct Chain<T> {
    /// What to finish when the chain is done (the processed event).
    pub payload: T,
    /// Helpers not started yet.
    pub pending: VecDeque<HelperJob>,
    /// The running helper.
    pub running: Option<Running>,
    /// Failures so far, each naming the helper.
    pub errors: Vec<String>,
}

impl<T> Chain<T> {
    /// A chain for `jobs`; nothing started yet.
    pub fn new(payload: T, jobs: Vec<HelperJob>) -> Chain<T> {
        Chain {
            payload,
            pending: jobs.into(),
            running: None,
            errors: Vec::new(),
        }
    }

    /// Starts the next helper if none runs; returns false when the chain is done.
    pub fn advance(&mut self) -> bool {
        while self.running.is_none() {
            let Some(job) = self.pending.pop_front() else {
                return false;
            };
            match Running::start(&job) {
                Ok(r) => self.running = Some(r),
                Err(e) => self.errors.push(e),
            }
        }
        true
    }
}
