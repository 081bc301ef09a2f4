//! Minimal stderr logging: a level filter and two line formats, no dependencies.
//!
//! A daemon that runs on every boot should not pull a logging framework in for `eprintln!`.
//! `--log-format kmsg` prefixes lines with `<N>` syslog priorities so stderr can be pointed at
//! `/dev/kmsg` early in boot.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something is off but uevd carries on.
    Warn = 1,
    /// Start-up, readiness, resyncs.
    Info = 2,
    /// Every event.
    Debug = 3,
}

impl Level {
    /// Parses `error|warn|info|debug`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "error" | "err" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    fn syslog(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static KMSG: AtomicBool = AtomicBool::new(false);

/// Sets the most verbose level printed.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Switches to the `<N>uevd[pid]: ` kmsg format.
pub fn set_kmsg(on: bool) {
    KMSG.store(on, Ordering::Relaxed);
}

/// Whether `level` is printed.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Prints one line at `level`.
pub fn log(level: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = if KMSG.load(Ordering::Relaxed) {
        format!("<{}>uevd[{}]: {args}\n", level.syslog(), std::process::id())
    } else {
        format!("uevd: {}: {args}\n", level.name())
    };
    // One write per line, so lines from worker threads do not interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at error level.
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($t)*)) } }
/// Logs at warning level.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($t)*)) } }
/// Logs at info level.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($t)*)) } }
/// Logs at debug level.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($t)*)) } }
