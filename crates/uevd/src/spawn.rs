//! Running rule helpers (`PROGRAM`, `IMPORT{program}`, `RUN`): no shell, the event's
//! environment, a deadline, captured output.
//!
//! The command line is split the way udev splits it (whitespace, with `"…"` and `'…'` quoting);
//! a program name without a `/` is looked up in udev's helper directories, as udev does. A
//! helper that outlives its deadline is killed with SIGKILL and reported by name.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command for a helper program: the child starts with umask 022 (udevd's), not the
/// daemon's 0 — the daemon creates nodes with exactly their policy mode, but a helper's
/// files must not come out world-writable.
pub fn helper_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: the closure runs in the forked child before exec and only calls umask(2),
    // which is async-signal-safe, allocates nothing and takes no lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
            Ok(())
        });
    }
    cmd
}

/// Marks every descriptor above stderr that the process inherited close-on-exec, so that
/// helpers started later get only their stdio (as udevd's do). Call it first thing, before
/// the process opens anything of its own (which is close-on-exec anyway).
pub fn keep_inherited_fds_from_helpers() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: `fd` was listed as open just now, before this process opened anything but
        // the listing (closed again); it is borrowed only for these two calls.
        #[allow(unsafe_code)]
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
        if let Ok(flags) = rustix::io::fcntl_getfd(fd) {
            let _ = rustix::io::fcntl_setfd(fd, flags | rustix::io::FdFlags::CLOEXEC);
        }
    }
}

/// Where udev looks for helpers named without a path.
pub const HELPER_DIRS: [&str; 2] = ["/usr/lib/udev", "/lib/udev"];

/// The most output kept from a helper (udev keeps 16 KiB too).
pub const MAX_OUTPUT: usize = 16 * 1024;

/// Why a helper did not succeed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpawnError {
    /// The command line was empty or badly quoted.
    #[error("cannot parse command line {0:?}")]
    BadCommand(String),
    /// The program could not be started.
    #[error("cannot run '{program}': {reason}")]
    Start {
        /// The program.
        program: String,
        /// The OS error.
        reason: String,
    },
    /// It exited with a non-zero status or was killed by a signal.
    #[error("'{program}' failed: {status}")]
    Failed {
        /// The program.
        program: String,
        /// `exit status 1`, `signal 9` …
        status: String,
    },
    /// It ran past its deadline and was killed.
    #[error("'{program}' timed out after {seconds:.1}s and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline.
        seconds: f64,
    },
}

/// Splits a command line as udev 252 does (`EXTRACT_UNQUOTE | EXTRACT_RELAX |
/// EXTRACT_RETAIN_ESCAPE`): whitespace separates words, `"…"` and `'…'` group (a quote left
/// open runs to the end), and a backslash is an ordinary character, kept for the program
/// (`printf a\tb` gets its `\t`). `None` for a line without words.
pub fn split_command(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' | '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    word.push(q);
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    (!words.is_empty()).then_some(words)
}

/// Resolves a program name the way udev does.
pub fn resolve_program(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    HELPER_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new(HELPER_DIRS[0]).join(name))
}

/// Runs `command` with exactly the environment `env` and returns its standard output
/// (at most [`MAX_OUTPUT`] bytes). Standard error goes to the daemon's.
pub fn run<'a>(
    command: &str,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    timeout: Duration,
) -> Result<String, SpawnError> {
    let argv = split_command(command).ok_or_else(|| SpawnError::BadCommand(command.to_owned()))?;
    let program = resolve_program(&argv[0]);
    let name = program.display().to_string();
    let mut cmd = helper_command(&program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| SpawnError::Start {
        program: name.clone(),
        reason: e.to_string(),
    })?;
    let deadline = Instant::now() + timeout;
    let mut output = Vec::new();
    let mut timed_out = false;
    if let Some(mut stdout) = child.stdout.take() {
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                timed_out = true;
                break;
            }
            let fd = stdout.as_fd();
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let spec = rustix::time::Timespec::try_from(left).unwrap_or(rustix::time::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            match rustix::event::poll(&mut fds, Some(&spec)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(output.len());
                    output.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    // Output closed: wait for the exit, still within the deadline.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if !timed_out && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => break None,
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(SpawnError::Timeout {
            program: name,
            seconds: timeout.as_secs_f64(),
        });
    };
    if !status.success() {
        let status = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => status.to_string(),
        };
        return Err(SpawnError::Failed {
            program: name,
            status,
        });
    }
    Ok(String::from_utf8_lossy(&output).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(
            split_command(r#"/bin/sh -c 'echo "a b"' x"y z" a'b'c"#),
            Some(vec![
                "/bin/sh".to_string(),
                "-c".into(),
                "echo \"a b\"".into(),
                "xy z".into(),
                "abc".into()
            ])
        );
        // Backslashes are the program's (udev retains escapes).
        assert_eq!(
            split_command(r#"/bin/printf a\tb\x01 "c\d""#),
            Some(vec![
                "/bin/printf".to_string(),
                r"a\tb\x01".into(),
                r"c\d".into()
            ])
        );
        assert_eq!(split_command("   "), None);
        // A quote left open runs to the end (EXTRACT_RELAX).
        assert_eq!(
            split_command("echo 'open end"),
            Some(vec!["echo".to_string(), "open end".into()])
        );
    }

    #[test]
    fn output_env_and_status() {
        let out = run(
            "/bin/sh -c 'echo $FOO-$PATH'",
            [("FOO", "bar")],
            Duration::from_secs(5),
        );
        assert_eq!(out, Ok("bar-/usr/sbin:/usr/bin:/sbin:/bin\n".to_string()));
        let err = run("/bin/sh -c 'exit 3'", [], Duration::from_secs(5));
        assert_eq!(
            err,
            Err(SpawnError::Failed {
                program: "/bin/sh".into(),
                status: "exit status 3".into()
            })
        );
        let err = run("/nonexistent/helper", [], Duration::from_secs(5));
        assert!(matches!(err, Err(SpawnError::Start { .. })), "{err:?}");
    }

    #[test]
    fn timeout_kills() {
        let started = Instant::now();
        let err = run("/bin/sleep 10", [], Duration::from_millis(200));
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("'/bin/sleep' timed out after 0.2s and was killed".to_string())
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // A helper that closes its output but keeps running is still caught.
        let err = run(
            "/bin/sh -c 'exec >&- ; sleep 10'",
            [],
            Duration::from_millis(200),
        );
        assert!(matches!(err, Err(SpawnError::Timeout { .. })), "{err:?}");
    }
}
