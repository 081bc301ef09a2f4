//! `uevd monitor --kernel`: print kernel uevents as they arrive.
//!
//! The text shape is `udevadm monitor --kernel`'s (`KERNEL[sec.usec] action devpath
//! (subsystem)`, with `--property` adding `KEY=VALUE` lines and a blank line), so that people
//! and scripts used to udevadm read it unchanged. Output is flushed per event.

use crate::cli::MonitorArgs;
use crate::exit;
use crate::signals::Termination;
use rustix::event::{poll, PollFd, PollFlags};
use std::io::{self, Write};
use std::process::ExitCode;
use uevd_netlink::{KernelListener, ListenerOptions, Severity};
use uevd_wire::Uevent;

/// A `--subsystem-match` filter: subsystem, and devtype when given.
#[derive(Debug, PartialEq, Eq)]
pub struct SubsystemMatch {
    subsystem: String,
    devtype: Option<String>,
}

impl SubsystemMatch {
    /// Parses `SUBSYSTEM[/DEVTYPE]`.
    pub fn parse(s: &str) -> Result<SubsystemMatch, String> {
        let (subsystem, devtype) = match s.split_once('/') {
            Some((s, d)) => (s, Some(d)),
            None => (s, None),
        };
        if subsystem.is_empty() || devtype == Some("") {
            return Err(format!(
                "invalid --subsystem-match {s:?}: expected SUBSYSTEM[/DEVTYPE]"
            ));
        }
        Ok(SubsystemMatch {
            subsystem: subsystem.to_owned(),
            devtype: devtype.map(str::to_owned),
        })
    }

    fn matches(&self, event: &Uevent) -> bool {
        event.subsystem() == self.subsystem
            && self
                .devtype
                .as_deref()
                .is_none_or(|d| event.devtype() == Some(d))
    }
}

/// Whether `event` passes the filters (no filters: everything passes).
fn wanted(filters: &[SubsystemMatch], event: &Uevent) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(event))
}

/// Runs the monitor until SIGINT/SIGTERM or a closed stdout.
pub fn run(args: &MonitorArgs) -> ExitCode {
    match monitor(args) {
        Ok(()) => exit::code(exit::SUCCESS),
        Err(MonitorError::Usage(msg)) => {
            eprintln!("uevd monitor: {msg}");
            exit::code(exit::USAGE)
        }
        Err(e) => {
            eprintln!("uevd monitor: {e}");
            exit::code(exit::FAILURE)
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum MonitorError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Listen(#[from] uevd_netlink::ListenError),
    #[error(transparent)]
    Recv(#[from] uevd_netlink::RecvError),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("poll failed: {0}")]
    Poll(rustix::io::Errno),
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
}

fn monitor(args: &MonitorArgs) -> Result<(), MonitorError> {
    let filters = args
        .subsystem_match
        .iter()
        .map(|s| SubsystemMatch::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(MonitorError::Usage)?;
    let mut term = Termination::install().map_err(MonitorError::Signals)?;
    let mut listener = KernelListener::open(&ListenerOptions {
        recv_buffer: args.recv_buffer,
        nonblocking: true,
    })?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let format = if args.json {
        Format::Json
    } else {
        Format::Text {
            properties: args.property,
        }
    };
    let result = (|| {
        if !args.json {
            out.write_all(
                b"monitor will print the received events for:\nKERNEL - the kernel uevent\n\n",
            )?;
            out.flush()?;
        }
        loop {
            let mut fds = [
                PollFd::new(&listener, PollFlags::IN),
                PollFd::new(&term, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(MonitorError::Poll(e)),
            }
            if term.fired() {
                return Ok(());
            }
            drain(&mut listener, &filters, format, &mut out)?;
        }
    })();
    match result {
        // A reader that went away (`uevd monitor | head`) ends the monitor cleanly.
        Err(MonitorError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

impl From<io::Error> for MonitorError {
    fn from(e: io::Error) -> Self {
        MonitorError::Stdout(e)
    }
}

/// Reads and prints every pending event.
fn drain(
    listener: &mut KernelListener,
    filters: &[SubsystemMatch],
    format: Format,
    out: &mut impl Write,
) -> Result<(), MonitorError> {
    loop {
        match listener.recv() {
            Ok(None) => return Ok(()),
            Ok(Some(event)) => {
                if wanted(filters, &event) {
                    write_event(out, format, monotonic_usec(), &event)?;
                    out.flush()?;
                }
            }
            Err(e) => match e.severity() {
                Severity::Recoverable => eprintln!("uevd monitor: {e}"),
                Severity::NeedsResync => {
                    eprintln!("uevd monitor: lost events: {e}; continuing")
                }
                Severity::Fatal => return Err(e.into()),
            },
        }
    }
}

/// How events are printed.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// udevadm's text shape, with or without the property lines.
    Text {
        /// Print `KEY=VALUE` lines and a blank line after each event.
        properties: bool,
    },
    /// One JSON object per line.
    Json,
}

fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Writes one event; `usec` is the CLOCK_MONOTONIC time it was received, as udevadm prints.
pub fn write_event(
    out: &mut impl Write,
    format: Format,
    usec: u64,
    event: &Uevent,
) -> io::Result<()> {
    match format {
        Format::Text { properties } => {
            writeln!(
                out,
                "KERNEL[{}.{:06}] {:<8} {} ({})",
                usec / 1_000_000,
                usec % 1_000_000,
                event.action(),
                event.devpath(),
                event.subsystem()
            )?;
            if properties {
                for (key, value) in event.iter() {
                    out.write_all(key.as_bytes())?;
                    out.write_all(b"=")?;
                    out.write_all(value)?;
                    out.write_all(b"\n")?;
                }
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        Format::Json => {
            let mut line = String::with_capacity(512);
            line.push_str("{\"source\":\"kernel\",\"monotonic_usec\":");
            line.push_str(&usec.to_string());
            line.push_str(",\"seqnum\":");
            line.push_str(&event.seqnum().to_string());
            for (key, value) in [
                ("action", event.action().as_str()),
                ("devpath", event.devpath()),
                ("subsystem", event.subsystem()),
            ] {
                line.push_str(",\"");
                line.push_str(key);
                line.push_str("\":");
                push_json_string(&mut line, value);
            }
            line.push_str(",\"properties\":{");
            // Wire order; a duplicated key appears once, with its last value (the one lookups
            // return), so the object has no duplicate members.
            let fields: Vec<_> = event.iter().collect();
            let mut first = true;
            for (i, (key, value)) in fields.iter().enumerate() {
                if fields[i + 1..].iter().any(|(k, _)| k == key) {
                    continue;
                }
                if !first {
                    line.push(',');
                }
                first = false;
                push_json_string(&mut line, key);
                line.push(':');
                push_json_string(&mut line, &String::from_utf8_lossy(value));
            }
            line.push_str("}}\n");
            out.write_all(line.as_bytes())
        }
    }
}

fn push_json_string(line: &mut String, s: &str) {
    // serde_json's escaping of a plain string cannot fail.
    line.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use uevd_wire::{Action, UeventBuilder};

    fn loop0() -> Uevent {
        UeventBuilder::new(Action::Change, "/devices/virtual/block/loop0", "block")
            .var("DEVNAME", "loop0")
            .var("DEVTYPE", "disk")
            .var("SEQNUM", "1")
            .var("NOTE", "a \"quoted\"\tvalue")
            .seqnum(42)
            .build()
            .unwrap()
    }

    fn render(format: Format) -> String {
        let mut out = Vec::new();
        write_event(&mut out, format, 12_345_000_042, &loop0()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_matches_udevadm_shape() {
        assert_eq!(
            render(Format::Text { properties: false }),
            "KERNEL[12345.000042] change   /devices/virtual/block/loop0 (block)\n"
        );
        let with = render(Format::Text { properties: true });
        assert!(
            with.ends_with("NOTE=a \"quoted\"\tvalue\nSEQNUM=42\n\n"),
            "{with}"
        );
        assert!(with.contains("\nACTION=change\nDEVPATH=/devices/virtual/block/loop0\n"));
    }

    #[test]
    fn json_is_one_valid_object_per_line_with_last_duplicate() {
        let line = render(Format::Json);
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["action"], "change");
        assert_eq!(v["seqnum"], 42);
        assert_eq!(v["monotonic_usec"], 12_345_000_042u64);
        assert_eq!(v["properties"]["SEQNUM"], "42");
        assert_eq!(v["properties"]["NOTE"], "a \"quoted\"\tvalue");
        assert_eq!(v["properties"]["DEVTYPE"], "disk");
    }

    #[test]
    fn subsystem_match() {
        let ev = loop0();
        assert!(wanted(&[], &ev));
        assert!(wanted(&[SubsystemMatch::parse("block").unwrap()], &ev));
        assert!(wanted(&[SubsystemMatch::parse("block/disk").unwrap()], &ev));
        assert!(!wanted(
            &[SubsystemMatch::parse("block/partition").unwrap()],
            &ev
        ));
        assert!(!wanted(&[SubsystemMatch::parse("net").unwrap()], &ev));
        assert!(wanted(
            &[
                SubsystemMatch::parse("net").unwrap(),
                SubsystemMatch::parse("block").unwrap()
            ],
            &ev
        ));
        assert!(SubsystemMatch::parse("").is_err());
        assert!(SubsystemMatch::parse("block/").is_err());
    }
}
