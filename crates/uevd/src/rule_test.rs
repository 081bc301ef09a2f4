//! `uevd test` and `uevd verify-rules`: the rules, without running the daemon.
//!
//! `test` evaluates the rules for one device of sysfs as if an event had arrived and prints
//! what would happen, in the shape of `udevadm test` (properties as `KEY=VALUE`, `run: '…'`
//! lines) plus the node, its permissions and the trace of matched rules. Nothing is written:
//! attribute and sysctl writes, module loading and `RUN` are printed instead. `PROGRAM` and
//! `IMPORT{program}` do run, as with `udevadm test`, because their output decides the rest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use uevd_rules::ast::ExistingNode;
use uevd_rules::eval::{evaluate, EvalOptions, LogLevel, RunItem};
use uevd_rules::load::Loaded;
use uevd_rules::Severity;
use uevd_sysfs::Sysfs;
use uevd_wire::Action;

use crate::cli::{RuleArgs, TestArgs, VerifyArgs};
use crate::daemon::rules::event_state;
use crate::exit;
use crate::host::{Accounts, SystemHost};

/// Loads the rules `args` name (printing diagnostics to stderr).
pub fn load_rules(args: &RuleArgs, accounts: &Accounts) -> Loaded {
    let loaded = args.source().load_quiet(accounts);
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    loaded
}

/// `uevd verify-rules`: exit 0 if every file parses without errors (warnings allowed).
pub fn verify(args: &VerifyArgs) -> ExitCode {
    let accounts = Accounts::system();
    let loaded = if args.paths.is_empty() {
        RuleArgs::default().source().load_quiet(&accounts)
    } else {
        uevd_rules::load::load(&args.paths, &accounts)
    };
    let mut errors = 0;
    let mut warnings = 0;
    for d in &loaded.diagnostics {
        match d.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
        eprintln!("{d}");
    }
    if loaded.files.is_empty() && !args.paths.is_empty() {
        eprintln!("uevd verify-rules: no rule files found in the given paths");
        return exit::code(exit::FAILURE);
    }
    println!(
        "{} files, {} rules, {errors} errors, {warnings} warnings",
        loaded.files.len(),
        loaded.rules.lines.len()
    );
    if errors > 0 || (args.strict && warnings > 0) {
        exit::code(exit::FAILURE)
    } else {
        exit::code(exit::SUCCESS)
    }
}

/// Turns `/sys/devices/x`, `devices/x` or `/devices/x` into a devpath under `sysfs`.
fn devpath_of(sysfs: &Path, given: &str) -> String {
    let p = Path::new(given);
    let rel = p
        .strip_prefix(sysfs)
        .ok()
        .or_else(|| p.strip_prefix("/sys").ok())
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_else(|| given.to_owned());
    format!("/{}", rel.trim_start_matches('/').trim_end_matches('/'))
}

/// `uevd test`.
pub fn test(args: &TestArgs) -> ExitCode {
    let accounts = Accounts::system();
    let loaded = load_rules(&args.rules, &accounts);
    let sysfs = Sysfs::new(&args.sysfs);
    let devpath = devpath_of(&args.sysfs, &args.devpath);
    let device = match sysfs.device(&devpath) {
        Ok(Some(d)) => d,
        Ok(None) => {
            eprintln!(
                "uevd test: {devpath}: no such device in {}",
                args.sysfs.display()
            );
            return exit::code(exit::FAILURE);
        }
        Err(e) => {
            eprintln!("uevd test: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let Ok(action) = args.action.parse::<Action>() else {
        eprintln!("uevd test: unknown action '{}'", args.action);
        return exit::code(exit::USAGE);
    };
    let event = match device.to_uevent(action, 0) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("uevd test: {devpath}: its uevent file does not make a valid event: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let mut state = event_state(&event, None);
    let mut host = SystemHost::new(&sysfs, &accounts, None).dry_run();
    let trace = evaluate(
        &loaded.rules,
        &mut state,
        &mut host,
        EvalOptions { trace: true },
    );

    // What the daemon would do with the result.
    let devname = state.name.clone().or_else(|| {
        state
            .properties
            .get("DEVNAME")
            .map(|n| n.trim_start_matches("/dev/").to_owned())
    });
    let mode = state.mode.or_else(|| {
        event
            .get("DEVMODE")
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .or(state.gid.filter(|g| *g > 0).map(|_| 0o660))
    });
    let node = match (&devname, state.devnum) {
        (Some(name), Some((major, minor))) if major > 0 && !state.no_node => Some((
            format!("/dev/{name}"),
            if state.subsystem() == Some("block") {
                "block"
            } else {
                "char"
            },
            major,
            minor,
        )),
        _ => None,
    };
    let mut properties: Vec<(String, String)> = state
        .properties
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    properties.retain(|(k, _)| k != "SEQNUM");
    if !state.symlinks.is_empty() {
        let links: Vec<String> = state.symlinks.iter().map(|l| format!("/dev/{l}")).collect();
        properties.push(("DEVLINKS".into(), links.join(" ")));
    }
    if !state.all_tags.is_empty() {
        properties.push(("TAGS".into(), format!(":{}:", state.all_tags.join(":"))));
    }
    if !state.current_tags.is_empty() {
        properties.push((
            "CURRENT_TAGS".into(),
            format!(":{}:", state.current_tags.join(":")),
        ));
    }
    let run: Vec<String> = state
        .run
        .iter()
        .map(|r| match r {
            RunItem::Program(c, ExistingNode::Run) => c.clone(),
            RunItem::Program(c, policy) => format!("{c} (if the node existed: {policy:?})"),
            RunItem::Builtin(_, c) => format!("builtin {c}"),
            RunItem::Mdev(when, c) => format!("mdev {when:?} {c}"),
        })
        .collect();

    if args.json {
        let value = json!({
            "devpath": devpath,
            "action": args.action,
            "properties": properties.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "node": node.as_ref().map(|(path, kind, major, minor)| json!({"path": path, "type": kind, "major": major, "minor": minor})),
            "mode": mode.map(|m| format!("{m:04o}")),
            "interface_name": state.name,
            "uid": state.uid.unwrap_or(0),
            "gid": state.gid.unwrap_or(0),
            "symlinks": state.symlinks.iter().map(|l| format!("/dev/{l}")).collect::<Vec<_>>(),
            "link_priority": state.link_priority,
            "tags": state.all_tags,
            "current_tags": state.current_tags,
            "run": run,
            "watch": state.watch,
            "seclabels": state.seclabels.iter().map(|(m, l)| json!({"module": m, "label": l})).collect::<Vec<_>>(),
            "writes": host.writes,
            "trace": trace.entries,
            "messages": host.messages.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
        });
        println!("{value}");
        return exit::code(exit::SUCCESS);
    }

    for entry in &trace.entries {
        println!("{entry}");
    }
    for m in &host.messages {
        let level = match m.level {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Debug => "debug",
        };
        println!("{level}: {}", m.text);
    }
    for w in &host.writes {
        println!("would write: {w}");
    }
    println!();
    for (k, v) in &properties {
        println!("{k}={v}");
    }
    println!();
    match &node {
        Some((path, kind, major, minor)) => {
            println!("node: {path} ({kind} {major}:{minor})");
            println!("mode: {:04o}", mode.unwrap_or(0o600));
            println!("owner: {}", state.uid.unwrap_or(0));
            println!("group: {}", state.gid.unwrap_or(0));
        }
        None => println!("node: none"),
    }
    if let Some(name) = &state.name {
        println!("interface name: {name} (NAME=; the daemon renames the interface on add)");
    }
    for link in &state.symlinks {
        println!("symlink: /dev/{link} (priority {})", state.link_priority);
    }
    if let Some(w) = state.watch {
        println!("watch: {w}");
    }
    for (module, label) in &state.seclabels {
        println!("seclabel: {module} {label} (set on add, when {module} is active)");
    }
    for r in &run {
        println!("run: '{r}'");
    }
    exit::code(exit::SUCCESS)
}

/// The default rules directory list, for `--help` texts.
pub fn default_dirs() -> Vec<PathBuf> {
    uevd_rules::load::DEFAULT_DIRS
        .iter()
        .map(PathBuf::from)
        .collect()
}
