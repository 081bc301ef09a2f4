//! `uevd trigger`: make the kernel re-announce devices, optionally as one waited-for
//! transaction.
//!
//! Writes `ACTION UUID [KEY=VALUE…]` to each matched device's `uevent` file; the kernel then
//! emits the event with `SYNTH_UUID=UUID` and `SYNTH_ARG_KEY=VALUE`. With `--wait`, trigger first
//! subscribes to that UUID on the control socket (so no event can slip past), then returns once
//! the daemon reports every written device processed — unrelated events do not delay it, and a
//! device whose event never comes is reported by name after `--timeout`.

use crate::cli::TriggerArgs;
use crate::control::{valid_uuid, Client, ClientError, Request};
use crate::exit;
use crate::glob;
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use uevd_sysfs::{Device, Sysfs};

/// Runs `uevd trigger`.
pub fn run(args: &TriggerArgs) -> ExitCode {
    match trigger(args) {
        Ok(code) => exit::code(code),
        Err(e) => {
            eprintln!("uevd trigger: {e}");
            exit::code(if matches!(e, TriggerError::Usage(_)) {
                exit::USAGE
            } else {
                exit::FAILURE
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum TriggerError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot enumerate devices: {0}")]
    Walk(#[from] uevd_sysfs::SysfsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot make a UUID: {0}")]
    Uuid(std::io::Error),
}

/// Parsed `KEY=VALUE` option.
fn key_value(s: &str, option: &str) -> Result<(String, String), TriggerError> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| TriggerError::Usage(format!("invalid {option} {s:?}: expected KEY=VALUE")))
}

/// The match options, compiled.
struct Filter {
    subsystems: Vec<String>,
    not_subsystems: Vec<String>,
    sysnames: Vec<String>,
    /// `NAME=GLOB`, or just `NAME`: the attribute exists.
    attrs: Vec<(String, Option<String>)>,
    properties: Vec<(String, String)>,
}

impl Filter {
    fn new(args: &TriggerArgs) -> Result<Filter, TriggerError> {
        Ok(Filter {
            subsystems: args.subsystem_match.clone(),
            not_subsystems: args.subsystem_nomatch.clone(),
            sysnames: args.sysname_match.clone(),
            attrs: args
                .attr_match
                .iter()
                .map(|s| match s.split_once('=') {
                    None if !s.is_empty() => Ok((s.clone(), None)),
                    _ => key_value(s, "--attr-match").map(|(k, v)| (k, Some(v))),
                })
                .collect::<Result<_, _>>()?,
            properties: args
                .property_match
                .iter()
                .map(|s| key_value(s, "--property-match"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// udevadm's semantics: any subsystem match, no subsystem no-match, any sysname match,
    /// every attribute match, any property match.
    fn accepts(&self, sysfs: &Sysfs, d: &Device) -> bool {
        let any =
            |pats: &[String], s: &str| pats.is_empty() || pats.iter().any(|p| glob::matches(p, s));
        any(&self.subsystems, &d.subsystem)
            && !self
                .not_subsystems
                .iter()
                .any(|p| glob::matches(p, &d.subsystem))
            && any(&self.sysnames, d.sysname())
            && self.attrs.iter().all(|(k, v)| {
                sysfs.attr(&d.devpath, k).is_some_and(|value| {
                    v.as_deref()
                        .is_none_or(|pattern| glob::matches(pattern, &value))
                })
            })
            && (self.properties.is_empty()
                || self
                    .properties
                    .iter()
                    .any(|(k, v)| property(d, k).is_some_and(|value| glob::matches(v, &value))))
    }
}

/// A device property as udevadm's `--property-match` sees it (sd-device): `DEVPATH` and
/// `SUBSYSTEM` are properties too, and `DEVNAME` is the node's path under `/dev`.
fn property(d: &Device, key: &str) -> Option<String> {
    match key {
        "DEVPATH" => Some(d.devpath.clone()),
        "SUBSYSTEM" => Some(d.subsystem.clone()),
        "DRIVER" => d.driver.clone(),
        "DEVNAME" => d.get(key).map(|n| {
            if n.starts_with('/') {
                n.to_owned()
            } else {
                format!("/dev/{n}")
            }
        }),
        _ => d.get(key).map(str::to_owned),
    }
}

fn new_uuid() -> Result<String, TriggerError> {
    let uuid =
        std::fs::read_to_string("/proc/sys/kernel/random/uuid").map_err(TriggerError::Uuid)?;
    Ok(uuid.trim().to_owned())
}

fn trigger(args: &TriggerArgs) -> Result<u8, TriggerError> {
    if uevd_wire::Action::from_bytes(args.action.as_bytes()).is_none() {
        return Err(TriggerError::Usage(format!(
            "invalid --action {:?}: expected add, remove, change, move, online, offline, bind or unbind",
            args.action
        )));
    }
    let env = args
        .env
        .iter()
        .map(|s| key_value(s, "--env"))
        .collect::<Result<Vec<_>, _>>()?;
    // What the kernel takes in a `uevent` write (kobject_action_args): letters and digits.
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if let Some((k, v)) = env.iter().find(|(k, v)| !alnum(k) || !alnum(v)) {
        return Err(TriggerError::Usage(format!(
            "invalid --env {k}={v}: the kernel takes only letters and digits, in keys and values"
        )));
    }
    let uuid = match &args.uuid {
        Some(u) if valid_uuid(u) => u.clone(),
        Some(u) => {
            return Err(TriggerError::Usage(format!(
                "invalid --uuid {u:?}: expected 8-4-4-4-12 hex digits"
            )))
        }
        None => new_uuid()?,
    };
    let filter = Filter::new(args)?;
    let sysfs = Sysfs::new(&args.sysfs);
    let mut devices = Vec::new();
    sysfs.walk(|d| {
        if filter.accepts(&sysfs, &d) {
            devices.push(d.devpath);
        }
    })?;

    // Subscribe before writing, so no event of the transaction can be missed.
    let mut watch = if args.wait && !args.dry_run {
        let mut client = Client::connect(&args.run)?;
        client.send(&Request::WatchUuid(uuid.clone()))?;
        match client.read_line(Instant::now() + Duration::from_secs(10))? {
            Some(line) if line == "ok" => Some(client),
            Some(line) => return Err(ClientError::Refused(line).into()),
            None => return Err(ClientError::Closed.into()),
        }
    } else {
        None
    };

    let mut line = format!("{} {uuid}", args.action);
    for (k, v) in &env {
        line.push_str(&format!(" {k}={v}"));
    }
    let mut waiting = BTreeSet::new();
    let (mut triggered, mut failed) = (0, 0);
    for devpath in &devices {
        if args.verbose {
            println!("{}{devpath}", args.sysfs.display());
        }
        if args.dry_run {
            continue;
        }
        // Waited for from before the write: its answer may come before the write returns.
        waiting.insert(devpath.as_str());
        match std::fs::write(sysfs.uevent_path(devpath), &line) {
            Ok(()) => triggered += 1,
            Err(e) => {
                waiting.remove(devpath.as_str());
                failed += 1;
                eprintln!(
                    "uevd trigger: cannot write {:?} to {}: {e}",
                    line,
                    sysfs.uevent_path(devpath).display()
                );
            }
        }
        // Take the answers in as they come, so that the daemon never has thousands queued
        // for a reader still busy writing.
        if let Some(client) = &mut watch {
            while let Some(line) = client.poll_line()? {
                if let Some(done) = line.strip_prefix("processed ") {
                    waiting.remove(done);
                }
            }
        }
    }
    if args.verbose || args.wait {
        eprintln!("uevd trigger: {triggered} device(s) triggered with SYNTH_UUID={uuid}");
    }

    if let Some(client) = &mut watch {
        let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
        while !waiting.is_empty() {
            match client.read_line(deadline) {
                Ok(Some(line)) => {
                    if let Some(devpath) = line.strip_prefix("processed ") {
                        waiting.remove(devpath);
                    }
                }
                Ok(None) => return Err(ClientError::Closed.into()),
                Err(ClientError::Timeout(_)) => {
                    eprintln!(
                        "uevd trigger: timed out after {}s waiting for {} device(s) (vanished, or the kernel sent no event):",
                        args.timeout,
                        waiting.len()
                    );
                    for devpath in &waiting {
                        eprintln!("  {devpath}");
                    }
                    return Ok(exit::TIMEOUT);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(if failed > 0 {
        exit::FAILURE
    } else {
        exit::SUCCESS
    })
}
