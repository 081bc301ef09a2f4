//! Reading udev rule text into [`Rules`], with `file:line:column` diagnostics.
//!
//! Follows systemd-udevd 252: `#` comment lines, `\` continuation (leading whitespace of the
//! continued line dropped, comment lines inside skipped), `KEY{attr} OP "value"` pairs separated
//! by commas or whitespace, `e"…"` for C-style escapes. A line with an error is dropped whole
//! (udev does the same) and the rest of the file is kept; problems that udev only warns about
//! (an unknown `OPTIONS` value, a suspicious substitution) keep the token.

use std::fmt;
use std::sync::Arc;

use crate::ast::{
    AttrName, Builtin, Escape, ExistingNode, Guard, Key, Line, LineFlags, Op, RuleFile, Rules,
    Token,
};
use crate::format::Template;
use crate::pattern::Pattern;

/// Longest logical line udev accepts (after joining continuations).
pub const MAX_LINE: usize = 16 * 1024;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The rule still works as written, but probably not as meant.
    Warning,
    /// The line was dropped.
    Error,
}

/// A problem found while reading rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as given.
    pub file: Arc<str>,
    /// 1-based physical line.
    pub line: u32,
    /// 1-based column (bytes) on that line.
    pub column: u32,
    /// Error (line dropped) or warning.
    pub severity: Severity,
    /// What is wrong, naming the key or value.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}:{}:{}: {kind}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Looks up user and group names (the system's database in the daemon, a table in tests).
pub trait NameResolver {
    /// The uid of a user name.
    fn user(&self, name: &str) -> Option<u32>;
    /// The gid of a group name.
    fn group(&self, name: &str) -> Option<u32>;
    /// The primary group of a user (mdev.conf's `user` without `:group`).
    fn primary_group(&self, user: &str) -> Option<u32> {
        let _ = user;
        None
    }
}

/// Adds one file's text to a rule set being built. Returns the diagnostics; the good lines are
/// in `rules` whatever happens.
pub fn parse_into(
    rules: &mut Rules,
    path: &str,
    text: &str,
    resolver: &dyn NameResolver,
) -> Vec<Diagnostic> {
    let file: Arc<str> = path.into();
    let file_index = rules.files.len() as u32;
    let first_line = rules.lines.len() as u32;
    rules.files.push(RuleFile {
        path: file.clone(),
        first_line,
    });
    let mut parser = FileParser {
        file,
        file_index,
        resolver,
        diagnostics: Vec::new(),
    };
    for logical in logical_lines(text) {
        if logical.text.len() >= MAX_LINE {
            parser.report(
                &logical,
                0,
                Severity::Error,
                "line too long, ignored".into(),
            );
            continue;
        }
        if let Some(line) = parser.parse_line(&logical) {
            rules.lines.push(line);
        }
    }
    parser.resolve_gotos(rules, first_line as usize);
    parser.diagnostics
}

/// A line after joining continuations, with a map back to physical positions.
struct Logical {
    text: String,
    /// (offset in `text`, physical line number, column offset of that segment)
    segments: Vec<(usize, u32, usize)>,
}

impl Logical {
    fn position(&self, offset: usize) -> (u32, u32) {
        let segment = self
            .segments
            .iter()
            .rev()
            .find(|(start, _, _)| *start <= offset)
            .or(self.segments.first());
        match segment {
            Some(&(start, line, skip)) => (line, (offset - start + skip + 1) as u32),
            None => (0, 1),
        }
    }

    fn first_line(&self) -> u32 {
        self.segments.first().map_or(0, |s| s.1)
    }
}

fn logical_lines(text: &str) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut current: Option<Logical> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index as u32 + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
        let skip = raw.len() - trimmed.len();
        if trimmed.starts_with('#') {
            continue;
        }
        let logical = current.get_or_insert_with(|| Logical {
            text: String::new(),
            segments: Vec::new(),
        });
        logical.segments.push((logical.text.len(), number, skip));
        logical.text.push_str(trimmed);
        if logical.text.ends_with('\\') {
            logical.text.pop();
            continue;
        }
        if let Some(done) = current.take() {
            if !done.text.trim().is_empty() {
                out.push(done);
            }
        }
    }
    if let Some(done) = current.take() {
        if !done.text.trim().is_empty() {
            out.push(done);
        }
    }
    out
}

/// One `KEY{attr} OP "value"` as written.
struct RawPair<'a> {
    key: &'a str,
    attr: Option<&'a str>,
    op: Op,
    value: String,
    /// Offset of the key in the logical line.
    at: usize,
    /// The pair as written, for traces.
    text: &'a str,
}

struct FileParser<'r> {
    file: Arc<str>,
    file_index: u32,
    resolver: &'r dyn NameResolver,
    diagnostics: Vec<Diagnostic>,
}

/// A problem with one pair: column offset within the line and message.
struct PairError {
    at: usize,
    message: String,
}

fn err<T>(at: usize, message: impl Into<String>) -> Result<T, PairError> {
    Err(PairError {
        at,
        message: message.into(),
    })
}

const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r', '\x0b', '\x0c'];

impl FileParser<'_> {
    fn report(&mut self, logical: &Logical, offset: usize, severity: Severity, message: String) {
        let (line, column) = logical.position(offset);
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            severity,
            message,
        });
    }

    fn parse_line(&mut self, logical: &Logical) -> Option<Line> {
        let mut line = Line {
            file: self.file_index,
            number: logical.first_line(),
            tokens: Vec::new(),
            label: None,
            goto_label: None,
            goto_line: None,
            flags: LineFlags::default(),
            guard: Guard::None,
        };
        let text = logical.text.as_str();
        let mut pos = 0;
        let mut warnings = Vec::new();
        loop {
            let pair = match next_pair(text, &mut pos) {
                Ok(Some(pair)) => pair,
                Ok(None) => break,
                Err(e) => {
                    self.report(logical, e.at, Severity::Error, e.message);
                    return None;
                }
            };
            if let Err(e) = self.add_pair(&mut line, &pair, &mut warnings) {
                self.report(logical, e.at, Severity::Error, e.message);
                return None;
            }
        }
        for (at, message) in warnings {
            self.report(logical, at, Severity::Warning, message);
        }
        if line.tokens.is_empty() && line.label.is_none() && line.goto_label.is_none() {
            return None;
        }
        line.guard = Guard::of(&line.tokens);
        Some(line)
    }

    fn add_pair(
        &mut self,
        line: &mut Line,
        pair: &RawPair<'_>,
        warnings: &mut Vec<(usize, String)>,
    ) -> Result<(), PairError> {
        let RawPair {
            key,
            attr,
            op,
            ref value,
            at,
            text,
        } = *pair;
        let value = value.as_str();
        let no_attr = || -> Result<(), PairError> {
            match attr {
                Some(_) => err(at, format!("invalid attribute for {key}")),
                None => Ok(()),
            }
        };
        let need_attr = || -> Result<&str, PairError> {
            match attr {
                Some(a) if !a.is_empty() => Ok(a),
                _ => err(at, format!("{key} needs an attribute, as in {key}{{name}}")),
            }
        };
        let match_only = || -> Result<(), PairError> {
            if op.is_match() {
                Ok(())
            } else {
                err(
                    at,
                    format!(
                        "invalid operator '{}' for {key}, only == and != match",
                        op.as_str()
                    ),
                )
            }
        };
        let template = |value: &str, warnings: &mut Vec<(usize, String)>| -> Template {
            let (t, w) = Template::parse(value);
            for warning in w {
                warnings.push((
                    at,
                    format!("invalid value \"{value}\" for {key} ({warning})"),
                ));
            }
            t
        };
        let mut op = op;
        let key_kind = match key {
            "ACTION" => {
                no_attr()?;
                match_only()?;
                Key::Action(Pattern::new(value))
            }
            "DEVPATH" => {
                no_attr()?;
                match_only()?;
                Key::Devpath(Pattern::new(value))
            }
            "KERNEL" => {
                no_attr()?;
                match_only()?;
                Key::Kernel(Pattern::new(value))
            }
            "SYMLINK" => {
                no_attr()?;
                if op.is_match() {
                    Key::Symlink(Pattern::new(value))
                } else if op == Op::Remove {
                    return err(at, "invalid operator '-=' for SYMLINK");
                } else {
                    Key::SymlinkAssign(template(value, warnings))
                }
            }
            "NAME" => {
                no_attr()?;
                if op.is_match() {
                    Key::Name(Pattern::new(value))
                } else {
                    if op == Op::Remove {
                        return err(at, "invalid operator '-=' for NAME");
                    }
                    if op == Op::Add {
                        warnings
                            .push((at, "operator += is not supported for NAME, using =".into()));
                        op = Op::Assign;
                    }
                    if value.is_empty() {
                        return err(at, "NAME cannot be empty");
                    }
                    if value == "%k" {
                        return err(at, "NAME=\"%k\" has no effect; remove it");
                    }
                    Key::NameAssign(template(value, warnings))
                }
            }
            "ENV" => {
                let name = need_attr()?;
                if op.is_match() {
                    Key::Env(name.into(), Pattern::new(value))
                } else {
                    if op == Op::Remove {
                        return err(at, "invalid operator '-=' for ENV");
                    }
                    const RESERVED: [&str; 12] = [
                        "ACTION",
                        "DEVLINKS",
                        "DEVNAME",
                        "DEVPATH",
                        "DEVTYPE",
                        "DRIVER",
                        "IFINDEX",
                        "MAJOR",
                        "MINOR",
                        "SEQNUM",
                        "SUBSYSTEM",
                        "TAGS",
                    ];
                    if RESERVED.contains(&name) {
                        return err(
                            at,
                            format!("ENV{{{name}}} cannot be set: the kernel or udev owns it"),
                        );
                    }
                    Key::EnvAssign(name.into(), template(value, warnings))
                }
            }
            "CONST" => {
                let name = need_attr()?;
                match_only()?;
                if !matches!(name, "arch" | "virt") {
                    return err(
                        at,
                        format!("unknown CONST{{{name}}}: only arch and virt exist"),
                    );
                }
                Key::Const(name.into(), Pattern::new(value))
            }
            "TAG" => {
                no_attr()?;
                if op.is_match() {
                    Key::Tag(Pattern::new(value))
                } else {
                    if op == Op::AssignFinal {
                        warnings.push((at, "operator := is not supported for TAG, using =".into()));
                        op = Op::Assign;
                    }
                    Key::TagAssign(template(value, warnings))
                }
            }
            "TAGS" => {
                no_attr()?;
                match_only()?;
                Key::ParentTag(Pattern::new(value))
            }
            "SUBSYSTEM" | "SUBSYSTEMS" => {
                no_attr()?;
                match_only()?;
                if matches!(value, "bus" | "class") {
                    warnings.push((at, format!("\"{value}\" is deprecated, use \"subsystem\"")));
                }
                let pattern = Pattern::new_subsystem(value);
                if key == "SUBSYSTEM" {
                    Key::Subsystem(pattern)
                } else {
                    Key::ParentSubsystem(pattern)
                }
            }
            "DRIVER" => {
                no_attr()?;
                match_only()?;
                Key::Driver(Pattern::new(value))
            }
            "DRIVERS" => {
                no_attr()?;
                match_only()?;
                Key::ParentDriver(Pattern::new(value))
            }
            "KERNELS" => {
                no_attr()?;
                match_only()?;
                Key::ParentKernel(Pattern::new(value))
            }
            "ATTR" | "ATTRS" => {
                let name = attr_name(need_attr()?, |v| template(v, warnings));
                if key == "ATTRS" {
                    match_only()?;
                    if let AttrName::Plain(p) = &name {
                        if p.starts_with("device/") {
                            warnings.push((at, "ATTRS{device/…} may not work as expected".into()));
                        }
                    }
                    Key::ParentAttr(name, Pattern::new(value))
                } else if op.is_match() {
                    Key::Attr(name, Pattern::new(value))
                } else {
                    // As udev 252: `-=` is an error, `+=` and `:=` mean `=`.
                    if op == Op::Remove {
                        return err(at, "invalid operator '-=' for ATTR".to_string());
                    }
                    if matches!(op, Op::Add | Op::AssignFinal) {
                        warnings.push((
                            at,
                            format!(
                                "operator {} is not supported for ATTR, using =",
                                op.as_str()
                            ),
                        ));
                        op = Op::Assign;
                    }
                    Key::AttrAssign(name, template(value, warnings))
                }
            }
            "SYSCTL" => {
                let name = template(need_attr()?, warnings);
                if op.is_match() {
                    Key::Sysctl(name, Pattern::new(value))
                } else {
                    // As udev 252: `-=` is an error, `+=` and `:=` mean `=`.
                    if op == Op::Remove {
                        return err(at, "invalid operator '-=' for SYSCTL".to_string());
                    }
                    if matches!(op, Op::Add | Op::AssignFinal) {
                        warnings.push((
                            at,
                            format!(
                                "operator {} is not supported for SYSCTL, using =",
                                op.as_str()
                            ),
                        ));
                        op = Op::Assign;
                    }
                    Key::SysctlAssign(name, template(value, warnings))
                }
            }
            "TEST" => {
                match_only()?;
                let mode = match attr {
                    None => None,
                    Some(a) => match u32::from_str_radix(a, 8) {
                        Ok(m) if m <= 0o7777 => Some(m),
                        _ => {
                            return err(
                                at,
                                format!("TEST{{{a}}}: the attribute must be an octal mode"),
                            )
                        }
                    },
                };
                Key::Test(mode, template(value, warnings))
            }
            "PROGRAM" => {
                no_attr()?;
                if op == Op::Remove {
                    return err(at, "invalid operator '-=' for PROGRAM");
                }
                if !op.is_match() {
                    if op != Op::Assign {
                        warnings.push((
                            at,
                            format!(
                                "operator {} is not supported for PROGRAM, using ==",
                                op.as_str()
                            ),
                        ));
                    }
                    op = Op::Match;
                }
                Key::Program(template(value, warnings))
            }
            "IMPORT" => {
                let kind = need_attr()?;
                if op == Op::Remove {
                    return err(at, "invalid operator '-=' for IMPORT");
                }
                if !op.is_match() {
                    if op != Op::Assign {
                        warnings.push((
                            at,
                            format!(
                                "operator {} is not supported for IMPORT, using ==",
                                op.as_str()
                            ),
                        ));
                    }
                    op = Op::Match;
                }
                match kind {
                    "file" => Key::ImportFile(template(value, warnings)),
                    "program" => match Builtin::from_command(value) {
                        Some(b) => {
                            warnings.push((at, format!("IMPORT{{program}}=\"{value}\" names a builtin; use IMPORT{{builtin}}")));
                            Key::ImportBuiltin(b, template(value, warnings))
                        }
                        None => Key::ImportProgram(template(value, warnings)),
                    },
                    "builtin" => match Builtin::from_command(value) {
                        Some(b) => Key::ImportBuiltin(b, template(value, warnings)),
                        None => return err(at, format!("unknown builtin command: {value}")),
                    },
                    "db" => Key::ImportDb(template(value, warnings)),
                    "cmdline" => Key::ImportCmdline(template(value, warnings)),
                    "parent" => Key::ImportParent(template(value, warnings)),
                    other => return err(at, format!("unknown IMPORT{{{other}}}: use file, program, builtin, db, cmdline or parent")),
                }
            }
            "RESULT" => {
                no_attr()?;
                match_only()?;
                Key::Result(Pattern::new(value))
            }
            "OPTIONS" => {
                no_attr()?;
                if op.is_match() || op == Op::Remove {
                    return err(
                        at,
                        format!("invalid operator '{}' for OPTIONS", op.as_str()),
                    );
                }
                if op == Op::Add {
                    op = Op::Assign;
                }
                match value {
                    "string_escape=none" => Key::StringEscape(Escape::None),
                    "string_escape=replace" => Key::StringEscape(Escape::Replace),
                    "db_persist" => Key::DbPersist,
                    "watch" => Key::Watch(true),
                    "nowatch" => Key::Watch(false),
                    _ => {
                        if let Some(p) = value.strip_prefix("link_priority=") {
                            match parse_c_int(p) {
                                Some(n) => Key::LinkPriority(n),
                                None => return err(at, format!("invalid link priority '{p}'")),
                            }
                        } else if let Some(name) = value.strip_prefix("static_node=") {
                            Key::StaticNode(name.into())
                        } else if let Some(policy) = value.strip_prefix("if_exists=") {
                            match policy {
                                "run" => Key::IfExists(ExistingNode::Run),
                                "skip" => Key::IfExists(ExistingNode::Skip),
                                "error" => Key::IfExists(ExistingNode::Error),
                                other => {
                                    return err(
                                        at,
                                        format!(
                                            "invalid if_exists '{other}': use run, skip or error"
                                        ),
                                    )
                                }
                            }
                        } else if let Some(level) = value.strip_prefix("log_level=") {
                            // udev's names (or 0-7), or "reset"; anything else fails the line.
                            const LEVELS: [&str; 9] = [
                                "emerg", "alert", "crit", "err", "warning", "notice", "info",
                                "debug", "reset",
                            ];
                            if !LEVELS.contains(&level) && !matches!(level.parse::<u8>(), Ok(0..=7))
                            {
                                return err(at, format!("invalid log level '{level}'"));
                            }
                            Key::LogLevel(level.into())
                        } else {
                            warnings.push((
                                at,
                                format!("invalid value for OPTIONS, ignoring: '{value}'"),
                            ));
                            return Ok(());
                        }
                    }
                }
            }
            "OWNER" | "GROUP" => {
                no_attr()?;
                if op.is_match() || op == Op::Remove {
                    return err(at, format!("invalid operator '{}' for {key}", op.as_str()));
                }
                if op == Op::Add {
                    warnings.push((
                        at,
                        format!("operator += is not supported for {key}, using ="),
                    ));
                    op = Op::Assign;
                }
                let owner = key == "OWNER";
                if let Some(id) = parse_id(value) {
                    if owner {
                        Key::OwnerId(id)
                    } else {
                        Key::GroupId(id)
                    }
                } else {
                    let t = template(value, warnings);
                    if t.is_plain() {
                        let id = if owner {
                            self.resolver.user(value)
                        } else {
                            self.resolver.group(value)
                        };
                        match (id, owner) {
                            (Some(id), true) => Key::OwnerId(id),
                            (Some(id), false) => Key::GroupId(id),
                            // As udev 252: the key stays, with "no id" (the owner or group
                            // is unset again), and so does the rest of the line.
                            (None, _) => {
                                let what = if owner { "user" } else { "group" };
                                warnings.push((at, format!("unknown {what} '{value}', ignoring")));
                                if owner {
                                    Key::OwnerId(NO_ID)
                                } else {
                                    Key::GroupId(NO_ID)
                                }
                            }
                        }
                    } else if owner {
                        Key::Owner(t)
                    } else {
                        Key::Group(t)
                    }
                }
            }
            "MODE" => {
                no_attr()?;
                if op.is_match() || op == Op::Remove {
                    return err(at, format!("invalid operator '{}' for MODE", op.as_str()));
                }
                if op == Op::Add {
                    warnings.push((at, "operator += is not supported for MODE, using =".into()));
                    op = Op::Assign;
                }
                match parse_mode(value) {
                    Some(mode) => Key::ModeId(mode),
                    None => {
                        let t = template(value, warnings);
                        if t.is_plain() {
                            // As udev: the key is dropped, the rest of the line stays.
                            warnings.push((
                                at,
                                format!(
                                    "invalid mode '{value}': expected octal, as in 0660; ignoring"
                                ),
                            ));
                            return Ok(());
                        }
                        Key::Mode(t)
                    }
                }
            }
            "SECLABEL" => {
                let module = need_attr()?;
                if op.is_match() || op == Op::Remove {
                    return err(
                        at,
                        format!("invalid operator '{}' for SECLABEL", op.as_str()),
                    );
                }
                if op == Op::AssignFinal {
                    warnings.push((
                        at,
                        "operator := is not supported for SECLABEL, using =".into(),
                    ));
                    op = Op::Assign;
                }
                Key::Seclabel(module.into(), template(value, warnings))
            }
            "RUN" => {
                if op.is_match() || op == Op::Remove {
                    return err(at, format!("invalid operator '{}' for RUN", op.as_str()));
                }
                match attr {
                    None | Some("program") => Key::RunProgram(template(value, warnings)),
                    Some("builtin") => match Builtin::from_command(value) {
                        Some(b) => Key::RunBuiltin(b, template(value, warnings)),
                        None => return err(at, format!("unknown builtin command: {value}")),
                    },
                    Some(other) => {
                        return err(
                            at,
                            format!("unknown RUN{{{other}}}: use program or builtin"),
                        )
                    }
                }
            }
            "GOTO" => {
                no_attr()?;
                if op != Op::Assign {
                    return err(
                        at,
                        format!("invalid operator '{}' for GOTO, use =", op.as_str()),
                    );
                }
                if line.goto_label.is_some() {
                    warnings.push((
                        at,
                        format!("contains multiple GOTO keys, ignoring GOTO=\"{value}\""),
                    ));
                    return Ok(());
                }
                line.goto_label = Some(value.into());
                line.flags.has_goto = true;
                return Ok(());
            }
            "LABEL" => {
                no_attr()?;
                if op != Op::Assign {
                    return err(
                        at,
                        format!("invalid operator '{}' for LABEL, use =", op.as_str()),
                    );
                }
                line.label = Some(value.into());
                return Ok(());
            }
            other => return err(at, format!("invalid key '{other}'")),
        };
        let flags = &mut line.flags;
        match &key_kind {
            Key::NameAssign(_) => flags.has_name = true,
            Key::SymlinkAssign(_)
            | Key::Owner(_)
            | Key::OwnerId(_)
            | Key::Group(_)
            | Key::GroupId(_)
            | Key::Mode(_)
            | Key::ModeId(_) => flags.has_devlink = true,
            Key::StaticNode(_) => flags.has_static_node = true,
            k => {
                if k.match_rank().is_none()
                    || matches!(
                        k,
                        Key::Program(_)
                            | Key::ImportFile(_)
                            | Key::ImportProgram(_)
                            | Key::ImportBuiltin(..)
                            | Key::ImportDb(_)
                            | Key::ImportCmdline(_)
                            | Key::ImportParent(_)
                    )
                {
                    flags.updates_something = true;
                }
            }
        }
        let token = Token {
            key: key_kind,
            op,
            text: text.into(),
        };
        // Stable insertion after every token of lower or equal rank.
        let rank = token.key.line_rank();
        let index = line
            .tokens
            .iter()
            .position(|t| t.key.line_rank() > rank)
            .unwrap_or(line.tokens.len());
        line.tokens.insert(index, token);
        Ok(())
    }

    fn resolve_gotos(&mut self, rules: &mut Rules, first: usize) {
        let file = self.file.clone();
        for index in first..rules.lines.len() {
            let Some(label) = rules.lines[index].goto_label.clone() else {
                continue;
            };
            let target = rules.lines[index + 1..]
                .iter()
                .position(|l| l.label.as_deref() == Some(&*label))
                .map(|p| (index + 1 + p) as u32);
            let line = &mut rules.lines[index];
            match target {
                Some(t) => line.goto_line = Some(t),
                None => {
                    self.diagnostics.push(Diagnostic {
                        file: file.clone(),
                        line: line.number,
                        column: 1,
                        severity: Severity::Error,
                        message: format!("GOTO=\"{label}\" has no matching LABEL later in this file, ignoring the GOTO"),
                    });
                    line.goto_label = None;
                    line.flags.has_goto = false;
                }
            }
        }
    }
}

fn attr_name(name: &str, mut template: impl FnMut(&str) -> Template) -> AttrName {
    if name.starts_with('[') {
        AttrName::OtherDevice(template(name))
    } else if name.contains(['%', '$']) {
        AttrName::Format(template(name))
    } else {
        AttrName::Plain(name.into())
    }
}

/// An integer as C's `strtol(s, &end, 0)` reads a whole string (udev's `safe_atoi`): leading
/// whitespace, a sign, then decimal, `0x` hexadecimal or `0` octal digits, nothing after.
fn parse_c_int(text: &str) -> Option<i32> {
    let t = text.trim_start();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (16, h)
    } else if t.len() > 1 && t.starts_with('0') {
        (8, &t[1..])
    } else {
        (10, t)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(digits, radix).ok()?;
    i32::try_from(if negative { -n } else { n }).ok()
}

/// The id of an `OWNER`/`GROUP` whose name is unknown: udev's `(uid_t) -1`, which leaves
/// the owner or group unset.
pub const NO_ID: u32 = u32::MAX;

/// A numeric user or group id as udev takes one (`parse_uid`): decimal digits, and neither
/// `-1` nor its 16-bit form 65535, which mean "no id".
pub fn parse_id(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u32>()
        .ok()
        .filter(|&id| id != NO_ID && id != 65535)
}

/// Parses an octal permission value as udev's `parse_mode` does.
pub fn parse_mode(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(value, 8).ok().filter(|m| *m <= 0o7777)
}

/// Splits off the next `KEY{attr} OP "value"`; `Ok(None)` at the end of the line.
fn next_pair<'a>(text: &'a str, pos: &mut usize) -> Result<Option<RawPair<'a>>, PairError> {
    let bytes = text.as_bytes();
    let mut i = *pos;
    while i < bytes.len() && (WHITESPACE.contains(&(bytes[i] as char)) || bytes[i] == b',') {
        i += 1;
    }
    if i >= bytes.len() {
        *pos = i;
        return Ok(None);
    }
    let start = i;
    let mut key_end = i;
    loop {
        let Some(&c) = bytes.get(key_end) else {
            return err(
                start,
                format!("invalid key/value pair '{}': no operator", &text[start..]),
            );
        };
        if WHITESPACE.contains(&(c as char)) || c == b'=' || c == b'{' {
            break;
        }
        if b"+-!:".contains(&c) && bytes.get(key_end + 1) == Some(&b'=') {
            break;
        }
        key_end += 1;
    }
    let key = &text[start..key_end];
    if key.is_empty() {
        return err(start, "missing key before the operator");
    }
    let mut j = key_end;
    let mut attr = None;
    if bytes[j] == b'{' {
        match text[j + 1..].find('}') {
            Some(len) => {
                attr = Some(&text[j + 1..j + 1 + len]);
                j += len + 2;
            }
            None => return err(j, format!("{key}: unterminated '{{' in attribute")),
        }
    }
    while j < bytes.len() && WHITESPACE.contains(&(bytes[j] as char)) {
        j += 1;
    }
    let rest = &bytes[j..];
    let (op, op_len) = match rest {
        [b'=', b'=', ..] => (Op::Match, 2),
        [b'!', b'=', ..] => (Op::NoMatch, 2),
        [b'+', b'=', ..] => (Op::Add, 2),
        [b'-', b'=', ..] => (Op::Remove, 2),
        [b':', b'=', ..] => (Op::AssignFinal, 2),
        [b'=', ..] => (Op::Assign, 1),
        _ => {
            return err(
                j,
                format!("{key}: expected an operator (==, !=, =, +=, -=, :=)"),
            )
        }
    };
    j += op_len;
    while j < bytes.len() && WHITESPACE.contains(&(bytes[j] as char)) {
        j += 1;
    }
    let escaped = bytes.get(j) == Some(&b'e');
    if escaped {
        j += 1;
    }
    if bytes.get(j) != Some(&b'"') {
        return err(j, format!("{key}: the value must be in double quotes"));
    }
    let value_start = j + 1;
    let mut k = value_start;
    let mut value = String::new();
    if escaped {
        loop {
            match bytes.get(k) {
                None => return err(value_start - 1, format!("{key}: unterminated value")),
                Some(b'"') => break,
                Some(b'\\') => k += 2,
                Some(_) => k += 1,
            }
        }
        let raw = text.get(value_start..k).unwrap_or_default();
        value = unescape_c(raw).map_err(|(off, what)| PairError {
            at: value_start + off,
            message: format!("{key}: {what}"),
        })?;
    } else {
        let mut run = value_start;
        loop {
            match bytes.get(k) {
                None => return err(value_start - 1, format!("{key}: unterminated value")),
                Some(b'"') => break,
                Some(b'\\') if bytes.get(k + 1) == Some(&b'"') => {
                    value.push_str(&text[run..k]);
                    k += 1;
                    run = k;
                    k += 1;
                }
                Some(_) => k += 1,
            }
        }
        value.push_str(&text[run..k]);
    }
    *pos = k + 1;
    Ok(Some(RawPair {
        key,
        attr,
        op,
        value,
        at: start,
        text: &text[start..k + 1],
    }))
}

/// C-style unescaping for `e"…"` values (systemd's `cunescape`).
fn unescape_c(raw: &str) -> Result<String, (usize, String)> {
    let bytes = raw.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let Some(&c) = bytes.get(i + 1) else {
            return Err((i, "trailing backslash".into()));
        };
        let simple = match c {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            b'\'' => Some(b'\''),
            b's' => Some(b' '),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            i += 2;
            continue;
        }
        let hex = |s: &[u8]| -> Option<u32> {
            u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
        };
        match c {
            b'x' => {
                let v = bytes.get(i + 2..i + 4).and_then(hex).filter(|v| *v != 0);
                let Some(v) = v else {
                    return Err((i, "invalid \\x escape".into()));
                };
                out.push(v as u8);
                i += 4;
            }
            b'0'..=b'7' => {
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
                let v = digits
                    .and_then(|d| u32::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok())
                    .filter(|v| *v != 0 && *v < 256);
                let Some(v) = v else {
                    return Err((i, "invalid octal escape".into()));
                };
                out.push(v as u8);
                i += 4;
            }
            b'u' | b'U' => {
                let len = if c == b'u' { 4 } else { 8 };
                let ch = bytes
                    .get(i + 2..i + 2 + len)
                    .and_then(hex)
                    .and_then(char::from_u32)
                    .filter(|c| *c != '\0');
                let Some(ch) = ch else {
                    return Err((i, "invalid unicode escape".into()));
                };
                let mut buf = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += 2 + len;
            }
            other => return Err((i, format!("unknown escape '\\{}'", other as char))),
        }
    }
    String::from_utf8(out).map_err(|_| (0, "escapes produce invalid UTF-8".into()))
}

#[cfg(test)]
mod tests;
