//! Running a compiled rule set for one event.
//!
//! [`evaluate`] walks the lines in order as systemd-udevd 252 does: a line whose match tokens
//! all pass has its assignments applied in udev's order of kinds and may `GOTO` forward; the parent
//! keys (`KERNELS`, `SUBSYSTEMS`, `DRIVERS`, `ATTRS`, `TAGS`) of a line must all match on the
//! same device, found by walking up from the event's device. Everything outside the event —
//! sysfs, programs, builtins, attribute writes — goes through the [`Host`] trait, so the
//! daemon, `uevd test` (which records writes instead of doing them) and the unit tests share
//! this code.

use crate::ast::{AttrName, Builtin, Escape, ExistingNode, Key, Line, Op, Rules, Token};
use crate::format::{parse_result_index, select_result_words, Subst, Template};
use crate::mdev::{MdevCommand, MdevRule, NodeAction};
use crate::pattern::Pattern;
use std::sync::Arc;

/// What the rules may look at or do outside the event itself.
pub trait Host {
    /// The device at `devpath` (for parent walks and `IMPORT{parent}`), if it is one.
    fn device(&mut self, devpath: &str) -> Option<DeviceInfo>;
    /// A sysfs attribute of the device at `devpath`, as read (trailing newline included).
    fn attr(&mut self, devpath: &str, name: &str) -> Option<String>;
    /// What uevd recorded about a device before (its database record: properties the rules
    /// set, and tags). Only asked for by `TAGS` and `IMPORT{parent}`, so that a parent walk
    /// reads sysfs alone.
    fn device_record(&mut self, device: &DeviceInfo) -> Option<(Properties, Vec<String>)> {
        let _ = device;
        None
    }
    /// The devpath of the device `subsystem`/`sysname`, for `[subsystem/sysname]attribute`.
    fn find_device(&mut self, subsystem: &str, sysname: &str) -> Option<String>;
    /// A kernel parameter under `/proc/sys` (`name` with `/` or `.` separators).
    fn sysctl(&mut self, name: &str) -> Option<String>;
    /// The permission bits of a file (`None` if it does not exist), for `TEST`. As in udev,
    /// a `/*/` component stands for the first entry of that directory under which the rest
    /// of the path exists.
    fn file_mode(&mut self, path: &str) -> Option<u32>;
    /// A whole file, for `IMPORT{file}`.
    fn read_file(&mut self, path: &str) -> Option<String>;
    /// The kernel command line, for `IMPORT{cmdline}`.
    fn cmdline(&mut self) -> Option<String>;
    /// `CONST{arch}` / `CONST{virt}`.
    fn constant(&mut self, name: &str) -> Option<String>;
    /// A user id by name, for `OWNER` values with substitutions.
    fn user(&mut self, name: &str) -> Option<u32>;
    /// A group id by name.
    fn group(&mut self, name: &str) -> Option<u32>;
    /// Runs `PROGRAM` / `IMPORT{program}`: the program's standard output, or why it failed
    /// (non-zero exit, timeout, not found).
    fn run_program(&mut self, command: &str, env: &Properties) -> Result<String, String>;
    /// Runs an `IMPORT{builtin}`: the properties it found, or why it failed.
    fn run_builtin(
        &mut self,
        builtin: Builtin,
        command: &str,
        event: &EventState,
    ) -> Result<Vec<(String, String)>, String>;
    /// `ATTR{…}=`: writes a sysfs attribute.
    fn write_attr(&mut self, devpath: &str, name: &str, value: &str) -> Result<(), String>;
    /// `SYSCTL{…}=`: writes a kernel parameter.
    fn write_sysctl(&mut self, name: &str, value: &str) -> Result<(), String>;
    /// A message about this event (an unknown user, a failed program …).
    fn log(&mut self, level: LogLevel, message: &str);
}

/// Levels for [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something the rules asked for could not be done.
    Error,
    /// Probably a mistake in the rules.
    Warning,
    /// Trace of what happened.
    Debug,
}

/// A device other than the event's, as the rules see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `/devices/…`
    pub devpath: String,
    /// The `subsystem` link's name.
    pub subsystem: Option<String>,
    /// The `driver` link's name.
    pub driver: Option<String>,
    /// Its properties as sysfs gives them (`uevent` file, DEVPATH, SUBSYSTEM); see
    /// [`Host::device_record`] for what the database adds.
    pub properties: Properties,
    /// Its tags, if known without asking the host (the event's own device).
    pub tags: Vec<String>,
}

impl DeviceInfo {
    fn sysname(&self) -> &str {
        sysname(&self.devpath)
    }
}

pub use crate::properties::Properties;

/// One program or builtin to run after the event is processed (`RUN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunItem {
    /// `RUN{program}`: a command line, run without a shell, and what to do if the node
    /// already existed.
    Program(String, ExistingNode),
    /// `RUN{builtin}`.
    Builtin(Builtin, String),
    /// An mdev.conf command, with the `MDEV` value (the node name) it gets.
    Mdev(MdevCommand, String),
}

impl RunItem {
    fn command(&self) -> &str {
        match self {
            RunItem::Program(c, _) | RunItem::Builtin(_, c) => c,
            RunItem::Mdev(c, _) => &c.command,
        }
    }
}

/// The event being processed and everything the rules decided so far.
#[derive(Debug, Clone, Default)]
pub struct EventState {
    /// `ACTION`, `DEVPATH`, `SUBSYSTEM`, `DRIVER`: see [`EventState::action`] and the like.
    identity: Identity,
    /// Major and minor number, if the device has a node.
    pub devnum: Option<(u32, u32)>,
    /// Network interface index, if it is one.
    pub ifindex: Option<u32>,
    /// Properties: the kernel's, then what the rules set.
    pub properties: Properties,
    /// `NAME=` (network interfaces) or the mdev.conf node name.
    pub name: Option<String>,
    /// Symlinks under `/dev`, without the `/dev/` prefix, in the order added.
    pub symlinks: Vec<String>,
    /// `OPTIONS+="link_priority=N"`.
    pub link_priority: i32,
    /// Tags set by this event's rules.
    pub current_tags: Vec<String>,
    /// Tags the device had before (from its database record) plus the current ones.
    pub all_tags: Vec<String>,
    /// Node owner.
    pub uid: Option<u32>,
    /// Node group.
    pub gid: Option<u32>,
    /// Node permissions.
    pub mode: Option<u32>,
    /// `SECLABEL{module}=label`
    pub seclabels: Vec<(String, String)>,
    /// Programs and builtins to run afterwards.
    pub run: Vec<RunItem>,
    /// `OPTIONS+="watch"`/`"nowatch"`, if set.
    pub watch: Option<bool>,
    /// `OPTIONS+="db_persist"`.
    pub db_persist: bool,
    /// mdev.conf `!`: no node.
    pub no_node: bool,
    /// mdev.conf: the `MDEV` value for commands (the node path after renaming).
    pub mdev_name: Option<String>,
    /// The last `PROGRAM` output.
    pub program_result: Option<String>,
    /// Properties of the previous database record, for `IMPORT{db}`.
    pub db_properties: Properties,
    finals: Finals,
    escape: Option<Escape>,
    /// `OPTIONS+="if_exists=…"` of the current line.
    if_exists: Option<ExistingNode>,
    /// The device the last line's parent keys matched (udev's `dev_parent`).
    parent: Option<DeviceInfo>,
    /// The mdev.conf rule of the current line and its submatches.
    mdev: Option<MdevMatched>,
}

/// The mdev.conf rule a line matched (`None`: the implicit final rule) and its submatches.
type MdevMatched = (Option<Arc<MdevRule>>, Vec<Option<String>>);

#[derive(Debug, Clone, Copy, Default)]
struct Finals {
    owner: bool,
    group: bool,
    mode: bool,
    name: bool,
    symlink: bool,
    run: bool,
    watch: bool,
    seclabel: bool,
}

/// What the event is about, as the kernel sent it: rules match it but never change it (an
/// `ENV{DEVPATH}=` changes the property, not the device). Kept in one allocation, not four:
/// every event makes one.
#[derive(Clone, Debug, Default)]
struct Identity {
    /// The values, one after another.
    text: String,
    /// Where each value ends in `text`, or `None` if the event had none.
    ends: [Option<u32>; 4],
}

impl Identity {
    fn new(values: [Option<&str>; 4]) -> Identity {
        let mut text = String::with_capacity(values.iter().flatten().map(|v| v.len()).sum());
        let ends = values.map(|v| {
            v.map(|v| {
                text.push_str(v);
                // A uevent is at most 8 KiB.
                text.len() as u32
            })
        });
        Identity { text, ends }
    }

    fn get(&self, i: usize) -> Option<&str> {
        let end = self.ends[i]? as usize;
        let start = self.ends[..i]
            .iter()
            .rev()
            .flatten()
            .next()
            .map_or(0, |&e| e as usize);
        self.text.get(start..end)
    }
}

impl EventState {
    /// Starts the state of an event from the kernel's variables. `previous_tags` and
    /// `db_properties` come from the device's database record, if any.
    pub fn new(
        properties: Properties,
        previous_tags: Vec<String>,
        db_properties: Properties,
    ) -> EventState {
        let get = |k: &str| properties.get(k);
        let number = |k: &str| get(k).and_then(|v| v.parse::<u32>().ok());
        let devnum = number("MAJOR").zip(number("MINOR"));
        EventState {
            identity: Identity::new([
                get("ACTION"),
                get("DEVPATH"),
                get("SUBSYSTEM"),
                get("DRIVER"),
            ]),
            devnum,
            ifindex: number("IFINDEX"),
            all_tags: previous_tags,
            db_properties,
            properties,
            ..EventState::default()
        }
    }

    /// `add`, `remove`, `change`, … (empty if the event had no `ACTION`).
    pub fn action(&self) -> &str {
        self.identity.get(0).unwrap_or_default()
    }

    /// `/devices/…` (empty if the event had no `DEVPATH`).
    pub fn devpath(&self) -> &str {
        self.identity.get(1).unwrap_or_default()
    }

    /// `SUBSYSTEM`.
    pub fn subsystem(&self) -> Option<&str> {
        self.identity.get(2)
    }

    /// `DRIVER`.
    pub fn driver(&self) -> Option<&str> {
        self.identity.get(3)
    }

    /// The sysname (last devpath component).
    pub fn sysname(&self) -> &str {
        sysname(self.devpath())
    }

    fn as_device(&self) -> DeviceInfo {
        DeviceInfo {
            devpath: self.devpath().to_owned(),
            subsystem: self.subsystem().map(str::to_owned),
            driver: self.driver().map(str::to_owned),
            properties: self.properties.clone(),
            tags: self.all_tags.clone(),
        }
    }
}

/// Options for one evaluation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalOptions {
    /// Record a human-readable trace of matched lines and applied assignments.
    pub trace: bool,
}

/// The trace of an evaluation, for `uevd test`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// `file:line: token: what happened`, in order.
    pub entries: Vec<String>,
}

/// The sysname of a devpath.
pub fn sysname(devpath: &str) -> &str {
    // Byte search: '/' is ASCII, so the slice after it starts on a character boundary.
    match memchr::memrchr(b'/', devpath.as_bytes()) {
        Some(i) => &devpath[i + 1..],
        None => devpath,
    }
}

/// The trailing decimal number of a sysname (`%n`), empty if there is none.
pub fn sysnum(sysname: &str) -> &str {
    let digits = sysname.bytes().rev().take_while(u8::is_ascii_digit).count();
    &sysname[sysname.len() - digits..]
}

/// Runs `rules` for the event in `state`, leaving the outcome in `state`.
pub fn evaluate(
    rules: &Rules,
    state: &mut EventState,
    host: &mut dyn Host,
    options: EvalOptions,
) -> Trace {
    let mut eval = Evaluator {
        rules,
        host,
        trace: options.trace.then(Trace::default),
        scratch: String::new(),
    };
    let is_remove = state.action() == "remove";
    // Rules cannot change the devpath: its sysname is found once.
    let name_start = state.devpath().len() - sysname(state.devpath()).len();
    let mut index = 0;
    while let Some(line) = rules.lines.get(index) {
        let f = line.flags;
        let mut relevant = f.has_goto || f.updates_something;
        if !is_remove {
            relevant |= f.has_devlink && state.devnum.is_some();
            relevant |= f.has_name && state.ifindex.is_some();
        }
        // A trace shows every line tried, so `uevd test` does not skip by guard.
        let admitted = eval.trace.is_some()
            || line.guard.admits(
                state.subsystem(),
                state.devpath().get(name_start..).unwrap_or_default(),
            );
        let mut next = index + 1;
        if relevant && admitted && eval.apply_line(line, state) {
            if let Some(target) = line.goto_line {
                next = target as usize;
            }
        }
        index = next;
    }
    for tag in &state.current_tags {
        if !state.all_tags.contains(tag) {
            state.all_tags.push(tag.clone());
        }
    }
    eval.trace.unwrap_or_default()
}

struct Evaluator<'a> {
    rules: &'a Rules,
    host: &'a mut dyn Host,
    trace: Option<Trace>,
    scratch: String,
}

/// udev's UDEV_ALLOWED_CHARS_INPUT: what survives in substituted attribute values.
const ALLOWED_INPUT: &str = "/ $%?,";

impl Evaluator<'_> {
    fn note(&mut self, line: &Line, token: &Token, what: &str) {
        if let Some(trace) = &mut self.trace {
            trace.entries.push(format!(
                "{}: {}: {what}",
                self.rules.location(line),
                token.text
            ));
        }
    }

    fn warn(&mut self, line: &Line, token: &Token, level: LogLevel, what: &str) {
        let message = format!("{}: {}: {what}", self.rules.location(line), token.text);
        self.host.log(level, &message);
        if let Some(trace) = &mut self.trace {
            trace.entries.push(message);
        }
    }

    /// Returns true if every match passed (assignments done).
    fn apply_line(&mut self, line: &Line, state: &mut EventState) -> bool {
        state.escape = None;
        state.if_exists = None;
        let mut parents_done = false;
        for (i, token) in line.tokens.iter().enumerate() {
            if token.key.is_parent_match() {
                if parents_done {
                    continue;
                }
                parents_done = true;
                if !self.match_parents(&line.tokens[i..], state) {
                    return false;
                }
                continue;
            }
            if token.op.is_match() {
                if !self.match_token(line, token, state) {
                    return false;
                }
            } else {
                self.assign(line, token, state);
            }
        }
        if line.goto_line.is_some() {
            if let Some(trace) = &mut self.trace {
                trace.entries.push(format!(
                    "{}: GOTO=\"{}\"",
                    self.rules.location(line),
                    line.goto_label.as_deref().unwrap_or("")
                ));
            }
        }
        true
    }

    fn match_parents(&mut self, tokens: &[Token], state: &mut EventState) -> bool {
        let parent_tokens: Vec<&Token> = tokens
            .iter()
            .take_while(|t| t.key.is_parent_match())
            .collect();
        let mut device = state.as_device();
        loop {
            let all = parent_tokens
                .iter()
                .all(|t| self.match_parent_token(t, &device, state));
            if all {
                state.parent = Some(device);
                return true;
            }
            match parent_of(self.host, &device.devpath) {
                Some(p) => device = p,
                None => {
                    state.parent = None;
                    return false;
                }
            }
        }
    }

    fn match_parent_token(
        &mut self,
        token: &Token,
        device: &DeviceInfo,
        state: &EventState,
    ) -> bool {
        let matched = match &token.key {
            Key::ParentKernel(p) => p.matches_str(Some(device.sysname())),
            Key::ParentSubsystem(p) => p.matches_str(device.subsystem.as_deref()),
            Key::ParentDriver(p) => p.matches_str(device.driver.as_deref()),
            Key::ParentTag(p) => {
                let any = if device.devpath == state.devpath() {
                    state.all_tags.iter().any(|t| p.matches_str(Some(t)))
                } else {
                    let tags = self
                        .host
                        .device_record(device)
                        .map(|r| r.1)
                        .unwrap_or_default();
                    tags.iter().any(|t| p.matches_str(Some(t)))
                };
                return any == (token.op == Op::Match);
            }
            Key::ParentAttr(name, p) => {
                return self.match_attr(name, p, token.op, &device.devpath, state);
            }
            _ => return false,
        };
        matched == (token.op == Op::Match)
    }

    fn match_attr(
        &mut self,
        name: &AttrName,
        pattern: &Pattern,
        op: Op,
        devpath: &str,
        state: &EventState,
    ) -> bool {
        let value = match name {
            AttrName::Plain(n) => self.host.attr(devpath, n),
            AttrName::Format(t) => {
                let n = self.expand(t, state, false);
                self.host.attr(devpath, &n)
            }
            AttrName::OtherDevice(t) => {
                let n = self.expand(t, state, false);
                self.other_device_attr(&n)
            }
        };
        // udev 252: a missing attribute fails the token whatever the operator.
        let Some(mut value) = value else {
            return false;
        };
        let _ = op;
        if !pattern
            .source()
            .ends_with(|c: char| c.is_ascii_whitespace())
        {
            let trimmed = value
                .trim_end_matches(|c: char| c.is_ascii_whitespace())
                .len();
            value.truncate(trimmed);
        }
        pattern.matches_str(Some(&value)) == (op == Op::Match)
    }

    /// `[subsystem/sysname]attribute` → the attribute of that device.
    fn other_device_attr(&mut self, spec: &str) -> Option<String> {
        let (devpath, attr) = self.other_device(spec)??;
        if attr.is_empty() {
            return None;
        }
        self.host.attr(&devpath, attr)
    }

    /// `[subsystem/sysname]attribute` → that device's devpath (`None` inside if there is no
    /// such device) and the attribute (maybe empty); `None` if `spec` is not of that form.
    fn other_device<'s>(&mut self, spec: &'s str) -> Option<Option<(String, &'s str)>> {
        let (device, attr) = spec.strip_prefix('[')?.split_once(']')?;
        let (subsystem, sysname) = device.split_once('/')?;
        let attr = attr.trim_start_matches('/');
        Some(
            self.host
                .find_device(subsystem, sysname)
                .map(|devpath| (devpath, attr)),
        )
    }

    fn match_token(&mut self, line: &Line, token: &Token, state: &mut EventState) -> bool {
        let want = token.op == Op::Match;
        let matched = match &token.key {
            Key::Action(p) => p.matches_str(Some(state.action())),
            Key::Devpath(p) => p.matches_str(Some(state.devpath())),
            Key::Kernel(p) => p.matches_str(Some(state.sysname())),
            Key::Symlink(p) => state.symlinks.iter().any(|l| p.matches_str(Some(l))),
            Key::Name(p) => p.matches_str(state.name.as_deref()),
            Key::Env(k, p) => p.matches_str(state.properties.get(k)),
            Key::Const(k, p) => {
                let v = self.host.constant(k);
                p.matches_str(v.as_deref())
            }
            Key::Tag(p) => state.current_tags.iter().any(|t| p.matches_str(Some(t))),
            Key::Subsystem(p) => p.matches_str(state.subsystem()),
            Key::Driver(p) => p.matches_str(state.driver()),
            Key::Attr(name, p) => {
                let devpath = state.devpath().to_owned();
                return self.match_attr(name, p, token.op, &devpath, state);
            }
            Key::Sysctl(name, p) => {
                let n = self.expand(name, state, false);
                // As udev: a parameter that does not exist reads as empty.
                let value = self.host.sysctl(&n);
                p.matches_str(Some(value.as_deref().map_or("", str::trim)))
            }
            Key::Test(mode, path) => {
                let mut p = self.expand(path, state, false);
                if !p.starts_with('/') {
                    // As udev: another device's file, else one relative to this device (also
                    // when that other device does not exist: the path then names nothing).
                    p = match self.other_device(&p).flatten() {
                        Some((devpath, "")) => format!("/sys{devpath}"),
                        Some((devpath, attr)) => format!("/sys{devpath}/{attr}"),
                        None => format!("/sys{}/{p}", state.devpath()),
                    };
                }
                match self.host.file_mode(&p) {
                    None => return !want,
                    Some(m) => mode.is_none_or(|wanted| m & wanted != 0),
                }
            }
            Key::Program(command) => {
                let command = self.expand(command, state, false);
                state.program_result = None;
                match self.host.run_program(&command, &state.properties) {
                    Ok(mut output) => {
                        let trimmed = output.trim_end_matches('\n').len();
                        output.truncate(trimmed);
                        // udev 252 always sanitises a PROGRAM result (newlines become spaces).
                        output = replace_chars(&output, ALLOWED_INPUT);
                        self.note(line, token, &format!("result \"{output}\""));
                        state.program_result = Some(output);
                        true
                    }
                    Err(why) => {
                        self.warn(line, token, LogLevel::Debug, &why);
                        false
                    }
                }
            }
            Key::ImportFile(path) => {
                let path = self.expand(path, state, false);
                match self.host.read_file(&path) {
                    None => false,
                    Some(text) => {
                        for bad in import_lines(&text, &mut state.properties) {
                            let why =
                                format!("cannot parse '{bad}' from {path} as KEY=VALUE, ignoring");
                            self.warn(line, token, LogLevel::Warning, &why);
                        }
                        true
                    }
                }
            }
            Key::ImportProgram(command) => {
                let command = self.expand(command, state, false);
                match self.host.run_program(&command, &state.properties) {
                    Ok(output) => {
                        for bad in import_lines(&output, &mut state.properties) {
                            let why = format!(
                                "cannot parse '{bad}' from '{command}' as KEY=VALUE, ignoring"
                            );
                            self.warn(line, token, LogLevel::Warning, &why);
                        }
                        true
                    }
                    Err(why) => {
                        self.warn(line, token, LogLevel::Warning, &why);
                        false
                    }
                }
            }
            Key::ImportBuiltin(builtin, command) => {
                let command = self.expand(command, state, false);
                match self.host.run_builtin(*builtin, &command, state) {
                    Ok(pairs) => {
                        for (k, v) in pairs {
                            state.properties.set(&k, v);
                        }
                        true
                    }
                    Err(why) => {
                        self.warn(line, token, LogLevel::Debug, &why);
                        false
                    }
                }
            }
            Key::ImportDb(key) => {
                let key = self.expand(key, state, false);
                match state.db_properties.get(&key).map(str::to_owned) {
                    Some(v) => {
                        state.properties.set(&key, v);
                        true
                    }
                    None => false,
                }
            }
            Key::ImportCmdline(key) => {
                let key = self.expand(key, state, false);
                let cmdline = self.host.cmdline().unwrap_or_default();
                match cmdline_value(&cmdline, &key) {
                    Some(v) => {
                        state.properties.set(&key, v.unwrap_or("1"));
                        true
                    }
                    None => false,
                }
            }
            Key::ImportParent(filter) => match parent_of(self.host, state.devpath()) {
                None => false,
                Some(mut parent) => {
                    let filter = self.expand(filter, state, false);
                    if let Some((recorded, _)) = self.host.device_record(&parent) {
                        for (k, v) in recorded.iter() {
                            parent.properties.set(k, v);
                        }
                    }
                    for (k, v) in parent.properties.iter() {
                        if crate::fnmatch::fnmatch(filter.as_bytes(), k.as_bytes()) {
                            state.properties.set(k, v);
                        }
                    }
                    true
                }
            },
            Key::Result(p) => p.matches_str(state.program_result.as_deref()),
            Key::Mdev(rule) => {
                let devname = mdev_devname(state);
                let env = |k: &str| -> Option<&str> {
                    let v = state.properties.get(k)?;
                    Some(if k == "DEVNAME" {
                        v.strip_prefix("/dev/").unwrap_or(v)
                    } else {
                        v
                    })
                };
                let found = rule.matches(&devname, state.devnum, &env).map(|subs| {
                    subs.into_iter()
                        .map(|m| m.map(str::to_owned))
                        .collect::<Vec<_>>()
                });
                match found {
                    Some(subs) => {
                        state.mdev = Some((Some(Arc::clone(rule)), subs));
                        true
                    }
                    None => false,
                }
            }
            Key::MdevDefault => {
                state.mdev = Some((None, Vec::new()));
                true
            }
            _ => return false,
        };
        matched == want
    }

    fn assign(&mut self, line: &Line, token: &Token, state: &mut EventState) {
        let op = token.op;
        macro_rules! final_guard {
            ($field:ident) => {{
                if state.finals.$field {
                    self.note(line, token, "already assigned final value, ignoring");
                    return;
                }
                if op == Op::AssignFinal {
                    state.finals.$field = true;
                }
            }};
        }
        match &token.key {
            Key::StringEscape(e) => state.escape = Some(*e),
            Key::DbPersist => state.db_persist = true,
            Key::IfExists(policy) => state.if_exists = Some(*policy),
            Key::Watch(on) => {
                final_guard!(watch);
                state.watch = Some(*on);
            }
            Key::LinkPriority(n) => state.link_priority = *n,
            Key::LogLevel(_) | Key::StaticNode(_) => {}
            Key::OwnerId(id) => {
                final_guard!(owner);
                state.uid = (*id != crate::parse::NO_ID).then_some(*id);
            }
            Key::GroupId(id) => {
                final_guard!(group);
                state.gid = (*id != crate::parse::NO_ID).then_some(*id);
            }
            Key::ModeId(m) => {
                final_guard!(mode);
                state.mode = Some(*m);
            }
            Key::Owner(t) => {
                final_guard!(owner);
                let name = self.expand(t, state, false);
                match crate::parse::parse_id(&name).or_else(|| self.host.user(&name)) {
                    Some(id) => state.uid = Some(id),
                    None => self.warn(
                        line,
                        token,
                        LogLevel::Error,
                        &format!("unknown user '{name}', ignoring"),
                    ),
                }
            }
            Key::Group(t) => {
                final_guard!(group);
                let name = self.expand(t, state, false);
                match crate::parse::parse_id(&name).or_else(|| self.host.group(&name)) {
                    Some(id) => state.gid = Some(id),
                    None => self.warn(
                        line,
                        token,
                        LogLevel::Error,
                        &format!("unknown group '{name}', ignoring"),
                    ),
                }
            }
            Key::Mode(t) => {
                final_guard!(mode);
                let text = self.expand(t, state, false);
                match crate::parse::parse_mode(&text) {
                    Some(m) => state.mode = Some(m),
                    None => self.warn(
                        line,
                        token,
                        LogLevel::Error,
                        &format!("invalid mode '{text}', ignoring"),
                    ),
                }
            }
            Key::TagAssign(t) => {
                let tag = self.expand(t, state, false);
                if op == Op::Assign {
                    state.current_tags.clear();
                    state.all_tags.clear();
                }
                if tag.is_empty()
                    || !tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    self.warn(
                        line,
                        token,
                        LogLevel::Error,
                        &format!("invalid tag name '{tag}', ignoring"),
                    );
                    return;
                }
                if op == Op::Remove {
                    // Only from this event's tags: TAGS (all tags ever set) is sticky in udev.
                    state.current_tags.retain(|t| *t != tag);
                } else {
                    if !state.all_tags.contains(&tag) {
                        state.all_tags.push(tag.clone());
                    }
                    if !state.current_tags.contains(&tag) {
                        state.current_tags.push(tag);
                    }
                }
            }
            Key::Seclabel(module, t) => {
                final_guard!(seclabel);
                let label = self.expand(t, state, false);
                if op == Op::Assign {
                    state.seclabels.clear();
                }
                state.seclabels.retain(|(m, _)| m != &**module);
                state.seclabels.push((module.to_string(), label));
            }
            Key::EnvAssign(key, t) => {
                // udev: only a literally empty value removes (and `+=` of nothing is nothing);
                // a value that expands to nothing sets an empty property.
                if t.source().is_empty() {
                    if op != Op::Add {
                        self.note(line, token, &format!("{key} removed"));
                        state.properties.remove(key);
                    }
                    return;
                }
                let mut added = self.expand(t, state, false);
                // Only what this token adds is escaped (as udev), not the value it extends.
                if state.escape == Some(Escape::Replace) {
                    added = replace_chars(&added, "");
                }
                let mut value = String::new();
                if op == Op::Add {
                    if let Some(old) = state.properties.get(key) {
                        value.push_str(old);
                        value.push(' ');
                    }
                }
                value.push_str(&added);
                self.note(line, token, &format!("{key}={value}"));
                state.properties.set(key, value);
            }
            Key::NameAssign(t) => {
                final_guard!(name);
                if state.ifindex.is_none() {
                    self.warn(
                        line,
                        token,
                        LogLevel::Error,
                        "only network interfaces can be renamed, ignoring NAME",
                    );
                    return;
                }
                let mut name = self.expand(t, state, false);
                if state.escape != Some(Escape::None) {
                    name = replace_ifname(&name);
                }
                state.name = Some(name);
            }
            Key::MdevNode => {
                let devname = mdev_devname(state);
                let Some((rule, subs)) = state.mdev.clone() else {
                    return;
                };
                let (node, mdev) = match &rule {
                    Some(rule) => {
                        let subs: Vec<Option<&str>> = subs.iter().map(|s| s.as_deref()).collect();
                        let outcome = rule.outcome(&devname, &subs);
                        (outcome.node, outcome.mdev)
                    }
                    None => (
                        NodeAction::Create {
                            path: devname.clone(),
                            symlink: None,
                        },
                        devname.clone(),
                    ),
                };
                match node {
                    NodeAction::Create { path, symlink } => {
                        state.no_node = false;
                        state.name = Some(path);
                        state.symlinks.clear();
                        state.symlinks.extend(symlink);
                    }
                    NodeAction::NoNode => state.no_node = true,
                    NodeAction::Refused { path } => {
                        state.no_node = true;
                        self.warn(
                            line,
                            token,
                            LogLevel::Error,
                            &format!("refusing node path {path:?}: absolute or with '..'"),
                        );
                    }
                }
                state.mdev_name = Some(mdev);
            }
            Key::MdevCommand(command) => {
                let mdev = state
                    .mdev_name
                    .clone()
                    .unwrap_or_else(|| mdev_devname(state));
                self.note(line, token, &format!("run '{}'", command.command));
                state.run.push(RunItem::Mdev(command.clone(), mdev));
            }
            Key::SymlinkAssign(t) => {
                final_guard!(symlink);
                if state.devnum.is_none() {
                    return;
                }
                if matches!(op, Op::Assign | Op::AssignFinal) {
                    state.symlinks.clear();
                }
                let escape = state.escape;
                let expanded = self.expand(t, state, escape != Some(Escape::None));
                let expanded = match escape {
                    None => replace_chars(&expanded, "/ "),
                    Some(Escape::Replace) => replace_chars(&expanded, "/"),
                    Some(Escape::None) => expanded,
                };
                for link in expanded.split(' ').filter(|l| !l.is_empty()) {
                    let link = normalize_link(link);
                    if link.is_empty() {
                        continue;
                    }
                    self.note(line, token, &format!("link /dev/{link}"));
                    if !state.symlinks.contains(&link) {
                        state.symlinks.push(link);
                    }
                }
            }
            Key::AttrAssign(name, value) => {
                let value = self.expand(value, state, false);
                let (devpath, attr) = match name {
                    AttrName::Plain(n) => (Some(state.devpath().to_owned()), n.to_string()),
                    AttrName::Format(t) => (
                        Some(state.devpath().to_owned()),
                        self.expand(t, state, false),
                    ),
                    AttrName::OtherDevice(t) => {
                        let spec = self.expand(t, state, false);
                        match self.other_device(&spec) {
                            Some(Some((devpath, attr))) => (Some(devpath), attr.to_owned()),
                            Some(None) | None => (None, spec),
                        }
                    }
                };
                let Some(devpath) = devpath else {
                    self.warn(
                        line,
                        token,
                        LogLevel::Error,
                        &format!("no device for attribute '{attr}'"),
                    );
                    return;
                };
                self.note(
                    line,
                    token,
                    &format!("write {devpath}/{attr} = \"{value}\""),
                );
                if let Err(why) = self.host.write_attr(&devpath, &attr, &value) {
                    self.warn(line, token, LogLevel::Error, &why);
                }
            }
            Key::SysctlAssign(name, value) => {
                let name = self.expand(name, state, false);
                let value = self.expand(value, state, false);
                self.note(line, token, &format!("sysctl {name} = \"{value}\""));
                if let Err(why) = self.host.write_sysctl(&name, &value) {
                    self.warn(line, token, LogLevel::Error, &why);
                }
            }
            Key::RunProgram(t) | Key::RunBuiltin(_, t) => {
                final_guard!(run);
                if matches!(op, Op::Assign | Op::AssignFinal) {
                    state.run.clear();
                }
                let command = self.expand(t, state, false);
                let item = match &token.key {
                    Key::RunBuiltin(b, _) => RunItem::Builtin(*b, command),
                    _ => RunItem::Program(command, state.if_exists.unwrap_or_default()),
                };
                self.note(line, token, &format!("run '{}'", item.command()));
                // The same command once per kind: a builtin and a program may share a name.
                let same = |r: &RunItem| {
                    r.command() == item.command()
                        && matches!(
                            (r, &item),
                            (RunItem::Builtin(..), RunItem::Builtin(..))
                                | (RunItem::Program(..), RunItem::Program(..))
                        )
                };
                if !state.run.iter().any(same) {
                    state.run.push(item);
                }
            }
            _ => {}
        }
    }

    /// Expands a template for this event. `replace_whitespace` turns whitespace runs in
    /// substituted values into one `_` (udev does this for names and links).
    fn expand(
        &mut self,
        template: &Template,
        state: &EventState,
        replace_whitespace: bool,
    ) -> String {
        let mut out = String::new();
        let mut value = std::mem::take(&mut self.scratch);
        for piece in template.pieces() {
            match piece {
                crate::format::Piece::Literal(text) => out.push_str(text),
                crate::format::Piece::Subst(subst, arg) => {
                    // udev stops at a substitution that needs an argument and has none.
                    if arg.is_none() && matches!(subst, Subst::Attr | Subst::Env) {
                        break;
                    }
                    value.clear();
                    self.substitute(*subst, arg.as_deref(), state, &mut value);
                    // As udev: a program's result keeps its spaces (it may name several
                    // links), every other substitution has them replaced.
                    if replace_whitespace && *subst != Subst::Result {
                        let collapsed =
                            value.split_ascii_whitespace().collect::<Vec<_>>().join("_");
                        out.push_str(&collapsed);
                    } else {
                        out.push_str(&value);
                    }
                }
            }
        }
        self.scratch = value;
        out
    }

    fn substitute(
        &mut self,
        subst: Subst,
        arg: Option<&str>,
        state: &EventState,
        out: &mut String,
    ) {
        match subst {
            Subst::Devnode => {
                if let Some(name) = state.properties.get("DEVNAME") {
                    if !name.starts_with('/') {
                        out.push_str("/dev/");
                    }
                    out.push_str(name);
                }
            }
            Subst::Attr => {
                let Some(attr) = arg else { return };
                let mut value = if attr.starts_with('[') {
                    self.other_device_attr(attr)
                } else {
                    None
                };
                if value.is_none() {
                    value = self.host.attr(state.devpath(), attr);
                }
                if value.is_none() {
                    if let Some(parent) = state
                        .parent
                        .as_ref()
                        .filter(|p| p.devpath != state.devpath())
                    {
                        let devpath = parent.devpath.clone();
                        value = self.host.attr(&devpath, attr);
                    }
                }
                if let Some(v) = value {
                    let v = v.trim_end_matches(|c: char| c.is_ascii_whitespace());
                    out.push_str(&replace_chars(v, ALLOWED_INPUT));
                }
            }
            Subst::Env => {
                if let Some(v) = arg.and_then(|k| state.properties.get(k)) {
                    out.push_str(v);
                }
            }
            Subst::Kernel => out.push_str(state.sysname()),
            Subst::Number => out.push_str(sysnum(state.sysname())),
            Subst::Driver => {
                if let Some(d) = state.parent.as_ref().and_then(|p| p.driver.as_deref()) {
                    out.push_str(d);
                }
            }
            Subst::Devpath => out.push_str(state.devpath()),
            Subst::Id => {
                if let Some(p) = &state.parent {
                    out.push_str(p.sysname());
                }
            }
            Subst::Major => out.push_str(&state.devnum.map_or(0, |d| d.0).to_string()),
            Subst::Minor => out.push_str(&state.devnum.map_or(0, |d| d.1).to_string()),
            Subst::Result => {
                let Some(result) = &state.program_result else {
                    return;
                };
                match arg.and_then(parse_result_index) {
                    Some((index, rest)) => out.push_str(select_result_words(result, index, rest)),
                    None => out.push_str(result),
                }
            }
            Subst::Parent => {
                if let Some(parent) = parent_of(self.host, state.devpath()) {
                    if let Some(name) = parent.properties.get("DEVNAME") {
                        out.push_str(name.strip_prefix("/dev/").unwrap_or(name));
                    }
                }
            }
            Subst::Name => {
                if let Some(name) = &state.name {
                    out.push_str(name);
                } else if let Some(name) = state.properties.get("DEVNAME") {
                    out.push_str(name.strip_prefix("/dev/").unwrap_or(name));
                } else {
                    out.push_str(state.sysname());
                }
            }
            Subst::Links => out.push_str(&state.symlinks.join(" ")),
            Subst::Root => out.push_str("/dev"),
            Subst::Sys => out.push_str("/sys"),
        }
    }
}

/// The name mdev.conf rules match: the kernel's `DEVNAME`, else the sysname.
fn mdev_devname(state: &EventState) -> String {
    match state.properties.get("DEVNAME") {
        Some(n) => n.strip_prefix("/dev/").unwrap_or(n).to_owned(),
        None => state.sysname().to_owned(),
    }
}

/// The closest ancestor of `devpath` that is a device.
pub fn parent_of(host: &mut dyn Host, devpath: &str) -> Option<DeviceInfo> {
    let mut path = devpath;
    loop {
        let (up, _) = path.rsplit_once('/')?;
        if up.is_empty() || up == "/devices" {
            return None;
        }
        if let Some(info) = host.device(up) {
            return Some(info);
        }
        path = up;
    }
}

/// Replaces characters udev does not allow in names with `_` (keeps ASCII alphanumerics,
/// `#+-.:=@_`, valid multi-byte UTF-8, `\x` escapes and the `allow` set; whitespace becomes a
/// space when a space is allowed).
pub fn replace_chars(text: &str, allow: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let keep = c.is_ascii_alphanumeric()
            || "#+-.:=@_".contains(c)
            || allow.contains(c)
            || (c == '\\' && chars.peek() == Some(&'x'))
            || !c.is_ascii();
        if keep {
            out.push(c);
        } else if c.is_ascii_whitespace() && allow.contains(' ') {
            out.push(' ');
        } else {
            out.push('_');
        }
    }
    out
}

/// An interface name with every byte the kernel or systemd would not take in one (control
/// characters, space, non-ASCII, `:`, `/`, `%`) replaced by `_`, as udev's
/// `udev_replace_ifname` does for `NAME=`.
pub fn replace_ifname(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if (33..127).contains(&b) && !matches!(b, b':' | b'/' | b'%') {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

/// Removes empty and `.` components so `by-id//x/` and `./x` name the same link.
fn normalize_link(link: &str) -> String {
    link.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Parses `KEY=VALUE` lines (program output, `IMPORT{file}`) as udev 252 does: blank and
/// `#` lines are skipped; key and value lose surrounding whitespace, then the value one pair
/// of matching quotes. An empty key or value, a lone or unmatched quote, or a line without
/// `=` sets nothing: those lines are returned, for the caller to report.
fn import_lines<'t>(text: &'t str, properties: &mut Properties) -> Vec<&'t str> {
    let blank = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let mut bad = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches(blank);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pair = line.split_once('=').and_then(|(key, value)| {
            let (key, value) = (key.trim_matches(blank), value.trim_matches(blank));
            if key.is_empty() || value.is_empty() {
                return None;
            }
            let value = match value.chars().next() {
                Some(q @ ('"' | '\'')) => value.strip_prefix(q).and_then(|v| v.strip_suffix(q))?,
                _ => value,
            };
            Some((key, value))
        });
        match pair {
            Some((key, value)) => properties.set(key, value),
            None => bad.push(line),
        }
    }
    bad
}

/// Looks `key` up on a kernel command line: `Some(None)` for a bare `key`, `Some(Some(v))` for
/// `key=v`. The last occurrence wins, as in systemd.
fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<Option<&'a str>> {
    let mut found = None;
    for word in cmdline.split_ascii_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if k == key => found = Some(Some(v.trim_matches('"'))),
            None if word == key => found = Some(None),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests;
