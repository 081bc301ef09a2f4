//! busybox `mdev.conf`: parse once, evaluate per device, no side effects.
//!
//! uevd reads an existing `/etc/mdev.conf` unchanged, so that systems using busybox `mdev` or
//! skarnet's `mdevd` can switch over. The grammar and the evaluation order follow busybox
//! `util-linux/mdev.c` (1.2x–1.37: `parse_next_rule`, `make_device`) and its tokenizer
//! `libbb/parse_config.c`; where they disagree with the documentation, the code (and the
//! behaviour of `busybox mdev` 1.35, checked by experiment) wins.
//!
//! # Grammar
//!
//! One rule per logical line:
//!
//! ```text
//! [-][ENVVAR=regex;]...<devmatch> <user>[:<group>] <mode> [=path|>path|!] [@|$|*<command>]
//! ```
//!
//! * Lines ending in `\` continue on the next line (the backslash and newline are removed).
//! * A line whose first non-blank character is `#` is a comment, and so is everything from a
//!   field that *starts* with `#` (after the device match or owner). A `#` inside a field, or
//!   anywhere in the trailing path/command part, is literal: `@echo a#b` runs `echo a#b`.
//! * Fields are separated by blanks (space, tab). The first three fields are required; the rest
//!   of the line, with trailing blanks removed, is the optional placement and command.
//! * `-` in front: after this rule matches, keep looking at later rules.
//! * `ENVVAR=regex;` prefixes (any number): every named variable must exist and its value must
//!   *contain* a match of the regex (unanchored, like busybox's `regexec` with no offsets).
//! * `<devmatch>` is one of
//!   * `@major,minor` or `@major,minor-minor2`: the device numbers;
//!   * `$ENVVAR=regex`: the variable's whole value must match;
//!   * a POSIX extended regex that the whole device name must match. The device name is the
//!     kernel's `DEVNAME`, which may contain `/` (`snd/controlC0`, `input/event3`); modern
//!     busybox matches the regex against it and nothing else. (busybox 1.17–1.20 matched a
//!     regex containing `/` against `subsystem/basename`; that was dropped when busybox started
//!     using `DEVNAME`, and uevd follows the current behaviour.)
//! * `<user>[:<group>]`: names or decimal ids; a lone user means "that user's primary group".
//! * `<mode>`: octal permissions, at most `07777`.
//! * `=path` moves the node to `path`; `>path` moves it and leaves a symlink named after the
//!   device pointing to it; `!` creates no node. A path ending in `/` is a directory and the node
//!   keeps the full device name inside it. `%0`–`%9` are replaced by the regex's submatches.
//! * `@cmd` runs after the node is created, `$cmd` before it is removed, `*cmd` on every
//!   action. mdevd's execline forms `+cmd`, `-cmd`, `&cmd` are accepted too.
//!
//! # Regular expressions
//!
//! Patterns are POSIX EREs. They are translated to the syntax of `regex-lite`, the `regex`
//! crate's small sibling (mdev.conf patterns are short and matched against short names; the
//! full engine was a quarter of the daemon's code, and the daemon's idle memory is mostly its
//! code). Bracket expressions such as `[]a]`, `[\.]` and `[[:digit:]]` keep their POSIX
//! meaning, and the device and `$ENVVAR` matches are wrapped as `^(?:...)$`. Whether a rule
//! matches is the same as busybox's test (a match starting at 0 and ending at the end of the
//! string): any full match exists exactly when the anchored pattern matches. *Which* text a
//! group captures can differ: POSIX asks each subexpression to be leftmost-longest, while
//! `regex-lite` takes the first alternative that lets the whole match succeed. For
//! `(a|ab)(bc|c)` against `abc`, uevd gives `%1=a %2=bc` (glibc's `regexec` does the same);
//! a strictly leftmost-longest engine gives `%1=ab %2=c`. Back-references (`\1`) are not supported and are reported as errors.
//!
//! # Differences from busybox, on purpose
//!
//! * Errors never stop parsing: each bad line is reported with `file:line:column` and skipped,
//!   the good lines are kept. (busybox dies on a bad regex and silently misbehaves on others.)
//! * Stricter where busybox accepts garbage: trailing text after `@major,minor[-minor2]`, an
//!   empty minor range, a mode that is not octal (busybox also takes `chmod`-style symbolic modes
//!   such as `u+x`; mdevd does not, nor does uevd), `!` glued to more text, `$=regex`, and `%N`
//!   in an `@major,minor` rule (busybox crashes on it).
//! * Paths that are absolute or contain `..` are refused when parsing, and again after `%N`
//!   substitution when evaluating ([`NodeAction::Refused`]).
//! * A trailing carriage return on a line is ignored.

use std::fmt;

use regex_lite::Regex;

/// A parsed `mdev.conf`: the good rules, in file order.
#[derive(Debug, Clone, Default)]
pub struct MdevConf {
    /// Rules in the order they appear; the first match wins unless it has [`MdevRule::keep_going`].
    pub rules: Vec<MdevRule>,
}

/// One rule (one logical line) of `mdev.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevRule {
    /// Physical line (1-based) where the rule starts.
    pub line: u32,
    /// Leading `-`: keep evaluating later rules after this one matches.
    pub keep_going: bool,
    /// `ENVVAR=regex;` prefixes, all of which must match.
    pub env: Vec<EnvMatch>,
    /// What the device must look like.
    pub matcher: MdevMatch,
    /// Owner of the node.
    pub uid: Owner,
    /// Group of the node; `None` when only a user was given, which means that user's primary
    /// group (or group 0 for a numeric uid that has no passwd entry), as busybox does.
    pub gid: Option<Owner>,
    /// Permission bits (at most `0o7777`), without the file type.
    pub mode: u32,
    /// Where the node goes.
    pub placement: Placement,
    /// Command to run, if any.
    pub command: Option<MdevCommand>,
}

/// A regular expression together with the text it was written as.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// The POSIX ERE as written in the file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled form (translated to `regex` syntax; anchored as `^(?:...)$` for device and
    /// `$ENVVAR` matches, unanchored for `ENVVAR=regex;` prefixes).
    pub fn regex(&self) -> &Regex {
        &self.regex
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.regex.as_str() == other.regex.as_str()
    }
}

impl Eq for Pattern {}

/// An `ENVVAR=regex;` prefix: the variable must be set and contain a match of the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvMatch {
    /// Variable name.
    pub var: String,
    /// Unanchored pattern.
    pub pattern: Pattern,
}

/// The device-selecting part of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdevMatch {
    /// A regex the whole device name must match.
    Name(Pattern),
    /// `@major,minor[-minor2]`: device numbers, with an inclusive minor range.
    MajMin {
        /// Major number.
        major: u32,
        /// Lowest minor number.
        minor_lo: u32,
        /// Highest minor number (equal to `minor_lo` when no range was given).
        minor_hi: u32,
    },
    /// `$ENVVAR=regex`: the variable must be set and its whole value must match.
    Env {
        /// Variable name.
        var: String,
        /// Anchored pattern.
        pattern: Pattern,
    },
}

/// A user or group, as written; resolving names needs the passwd/group databases, which is the
/// daemon's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A decimal id.
    Id(u32),
    /// A name to look up.
    Name(String),
}

/// Where the node goes (the optional fourth field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// At the device name.
    Default,
    /// `=path`: at `path` (relative to `/dev`, `%N` not yet substituted).
    Rename(String),
    /// `>path`: at `path`, with a symlink named after the device pointing to it.
    MoveAndLink(String),
    /// `!`: no node is created or removed; the command still runs.
    NoNode,
}

/// When a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `@` (or mdevd's `+`): after the node is created, on `add`.
    AfterCreate,
    /// `$` (or mdevd's `-`): before the node is removed, on `remove`.
    BeforeRemove,
    /// `*` (or mdevd's `&`): on every action — `add`, `remove`, and also `change` and the
    /// others, as both busybox and mdevd do.
    Both,
}

impl When {
    /// Whether a command with this timing runs for a uevent `ACTION`.
    pub fn applies_to(self, action: &str) -> bool {
        match self {
            When::AfterCreate => action == "add",
            When::BeforeRemove => action == "remove",
            When::Both => true,
        }
    }
}

/// Which interpreter runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    /// busybox's `@`, `$`, `*`: `/bin/sh -c command`, with `MDEV` set to the node name.
    Shell,
    /// mdevd's `+`, `-`, `&`: `execlineb -Pc command`.
    Execline,
}

/// A command attached to a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevCommand {
    /// When it runs.
    pub when: When,
    /// How it runs.
    pub interpreter: Interpreter,
    /// The command text, verbatim (may be empty, as busybox allows).
    pub command: String,
}

/// A problem on one line of `mdev.conf`; the line is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {kind}")]
pub struct MdevError {
    /// File name as given to [`parse`].
    pub file: String,
    /// 1-based physical line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What is wrong.
    pub kind: MdevErrorKind,
}

/// What is wrong with a line of `mdev.conf`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdevErrorKind {
    /// Fewer than the three required fields.
    #[error("expected `<device> <user>[:<group>] <mode>`, found {found} field(s)")]
    MissingFields {
        /// How many fields there were.
        found: usize,
    },
    /// `@...` that is not `@major,minor[-minor2]`.
    #[error("invalid device numbers `{0}`: expected @major,minor or @major,minor-minor2")]
    BadMajMin(String),
    /// `@major,lo-hi` with `hi < lo`.
    #[error("empty minor range {lo}-{hi}")]
    EmptyMinorRange {
        /// Low end.
        lo: u32,
        /// High end.
        hi: u32,
    },
    /// `$...` without `=`.
    #[error("invalid environment match `{0}`: expected $VARIABLE=regex")]
    BadEnvMatch(String),
    /// `$=regex`.
    #[error("empty variable name in `{0}`")]
    EmptyEnvName(String),
    /// A regex that does not compile.
    #[error("invalid regular expression `{pattern}`: {message}")]
    BadRegex {
        /// The regex as written.
        pattern: String,
        /// Why.
        message: String,
    },
    /// Empty user or group.
    #[error("invalid owner `{0}`: expected user[:group]")]
    BadOwner(String),
    /// A numeric id that does not fit in 32 bits.
    #[error("id `{0}` is out of range")]
    IdOutOfRange(String),
    /// Not octal, or more than `07777`.
    #[error("invalid mode `{0}`: expected octal permissions such as 660 (at most 7777)")]
    BadMode(String),
    /// `=` or `>` with nothing after it.
    #[error("`{0}` needs a path")]
    EmptyPath(char),
    /// A path starting with `/`.
    #[error("path `{0}` must be relative to /dev")]
    AbsolutePath(String),
    /// A path with a `..` component.
    #[error("path `{0}` must not contain `..`")]
    DotDotPath(String),
    /// `!` followed by more text.
    #[error("`!` must stand alone, found `{0}`")]
    BadNoNode(String),
    /// `%N` in an `@major,minor` rule, which has no submatches.
    #[error("`%{0}` in `{1}` refers to a submatch, but @major,minor rules have none")]
    SubmatchWithoutRegex(char, String),
    /// Something after the mode that is neither a placement nor a command.
    #[error(
        "expected `=path`, `>path`, `!` or a command starting with @, $ or * here, found `{0}`"
    )]
    BadTrailer(String),
}

/// What to do with the node for one matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// Create the node at `path` (relative to `/dev`) on add, remove it on remove.
    Create {
        /// Node path relative to `/dev`.
        path: String,
        /// For `>path`: a symlink at this path (the device name) pointing to the node.
        symlink: Option<String>,
    },
    /// `!`: no node.
    NoNode,
    /// The rename target, after substitution, was empty, absolute or contained `..`: the node
    /// must not be touched (the daemon should log it).
    Refused {
        /// The refused path.
        path: String,
    },
}

/// One matching rule's verdict for a device, from [`MdevConf::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevOutcome<'c> {
    /// The rule, or `None` for busybox's implicit final rule (`0:0 660`, node at the device
    /// name), which applies when no rule without `-` matched.
    pub rule: Option<&'c MdevRule>,
    /// Node to create or remove.
    pub node: NodeAction,
    /// The value of `MDEV` for the command: the node path (after renaming), or the device name.
    pub mdev: String,
    /// Owner.
    pub uid: &'c Owner,
    /// Group (see [`MdevRule::gid`]).
    pub gid: Option<&'c Owner>,
    /// Permission bits.
    pub mode: u32,
    /// Command; the caller checks [`When::applies_to`] against the event's action.
    pub command: Option<&'c MdevCommand>,
}

static ROOT: Owner = Owner::Id(0);

/// Parse `mdev.conf` text. `file` is only used in error messages.
///
/// Parsing never stops at a bad line: the returned configuration holds every good rule, and
/// each bad line yields one [`MdevError`].
pub fn parse(text: &str, file: &str) -> (MdevConf, Vec<MdevError>) {
    let mut conf = MdevConf::default();
    let mut errors = Vec::new();
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((index, first)) = lines.next() {
        let mut logical = LogicalLine::default();
        logical.push(strip_cr(first), line_number(index));
        // `\` at the end of a line continues it on the next one (libbb's
        // get_line_with_continuation); an empty line is never continued.
        while logical.text.ends_with('\\') {
            let Some((next_index, next)) = lines.next() else {
                break;
            };
            logical.text.pop();
            logical.push(strip_cr(next), line_number(next_index));
        }
        match parse_line(&logical) {
            Ok(None) => {}
            Ok(Some(rule)) => conf.rules.push(rule),
            Err((offset, kind)) => {
                let (line, column) = logical.position(offset);
                errors.push(MdevError {
                    file: file.to_owned(),
                    line,
                    column,
                    kind,
                });
            }
        }
    }
    (conf, errors)
}

fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

fn line_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// A logical line (physical lines joined by `\`), with a map back to physical positions.
#[derive(Default)]
struct LogicalLine {
    text: String,
    /// (byte offset in `text`, physical line) where each physical line starts.
    segments: Vec<(usize, u32)>,
}

impl LogicalLine {
    fn push(&mut self, physical: &str, line: u32) {
        self.segments.push((self.text.len(), line));
        self.text.push_str(physical);
    }

    fn first_line(&self) -> u32 {
        self.segments.first().map_or(1, |&(_, line)| line)
    }

    /// Physical (line, 1-based column in characters) of a byte offset.
    fn position(&self, offset: usize) -> (u32, u32) {
        let (start, line) = self
            .segments
            .iter()
            .rev()
            .find(|&&(start, _)| start <= offset)
            .copied()
            .unwrap_or((0, self.first_line()));
        let end = offset.min(self.text.len());
        let column = self.text.get(start..end).map_or(0, |s| s.chars().count()) + 1;
        (line, u32::try_from(column).unwrap_or(u32::MAX))
    }
}

type LineError = (usize, MdevErrorKind);

const BLANKS: &[char] = &[' ', '\t'];

/// Split a line like libbb's `config_read(parser, tokens, 4, 3, "# \t", PARSE_NORMAL &
/// ~PARSE_EOL_COMMENTS)`: returns (byte offset, token) pairs.
fn tokenize(text: &str) -> Vec<(usize, &str)> {
    let mut tokens = Vec::with_capacity(4);
    let mut pos = text.len() - text.trim_start_matches(BLANKS).len();
    let mut rest = &text[pos..];
    while !rest.is_empty() && !rest.starts_with('#') {
        if tokens.len() == 3 {
            tokens.push((pos, rest.trim_end_matches(BLANKS)));
            break;
        }
        let end = rest.find(BLANKS).unwrap_or(rest.len());
        tokens.push((pos, &rest[..end]));
        let after = &rest[end..];
        let trimmed = after.trim_start_matches(BLANKS);
        pos += end + (after.len() - trimmed.len());
        rest = trimmed;
    }
    tokens
}

fn parse_line(line: &LogicalLine) -> Result<Option<MdevRule>, LineError> {
    let tokens = tokenize(&line.text);
    if tokens.is_empty() {
        return Ok(None);
    }
    if tokens.len() < 3 {
        return Err((
            tokens[0].0,
            MdevErrorKind::MissingFields {
                found: tokens.len(),
            },
        ));
    }
    let (match_at, match_text) = tokens[0];
    let (keep_going, env, matcher) = parse_devmatch(match_at, match_text)?;
    let (uid, gid) = parse_owner(tokens[1].1).map_err(|kind| (tokens[1].0, kind))?;
    let mode = parse_mode(tokens[2].1).map_err(|kind| (tokens[2].0, kind))?;
    let (placement, command) = match tokens.get(3) {
        Some(&(at, trailer)) => parse_trailer(at, trailer, &matcher)?,
        None => (Placement::Default, None),
    };
    Ok(Some(MdevRule {
        line: line.first_line(),
        keep_going,
        env,
        matcher,
        uid,
        gid,
        mode,
        placement,
        command,
    }))
}

/// First field: `[-][ENVVAR=regex;]...(@maj,min[-min2] | $ENVVAR=regex | regex)`.
fn parse_devmatch(at: usize, text: &str) -> Result<(bool, Vec<EnvMatch>, MdevMatch), LineError> {
    let keep_going = text.starts_with('-');
    let mut pos = at + usize::from(keep_going);
    let mut rest = &text[usize::from(keep_going)..];

    // busybox parse_envmatch_pfx: NAME=regex; repeated, NAME a shell name.
    let mut env = Vec::new();
    while let Some(eq) = rest.find('=') {
        let name = &rest[..eq];
        if !is_shell_name(name) {
            break;
        }
        let Some(semi) = rest[eq..].find(';').map(|i| eq + i) else {
            break;
        };
        let source = &rest[eq + 1..semi];
        let pattern = compile(source, false).map_err(|kind| (pos + eq + 1, kind))?;
        env.push(EnvMatch {
            var: name.to_owned(),
            pattern,
        });
        pos += semi + 1;
        rest = &rest[semi + 1..];
    }

    let matcher = if let Some(numbers) = rest.strip_prefix('@') {
        parse_majmin(numbers).map_err(|kind| (pos, kind))?
    } else if let Some(assignment) = rest.strip_prefix('$') {
        let Some(eq) = assignment.find('=') else {
            return Err((pos, MdevErrorKind::BadEnvMatch(rest.to_owned())));
        };
        if eq == 0 {
            return Err((pos, MdevErrorKind::EmptyEnvName(rest.to_owned())));
        }
        let source = &assignment[eq + 1..];
        let pattern = compile(source, true).map_err(|kind| (pos + eq + 2, kind))?;
        MdevMatch::Env {
            var: assignment[..eq].to_owned(),
            pattern,
        }
    } else {
        MdevMatch::Name(compile(rest, true).map_err(|kind| (pos, kind))?)
    };
    Ok((keep_going, env, matcher))
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_majmin(text: &str) -> Result<MdevMatch, MdevErrorKind> {
    let bad = || MdevErrorKind::BadMajMin(format!("@{text}"));
    let number = |s: &str| -> Result<u32, MdevErrorKind> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (major, minors) = text.split_once(',').ok_or_else(bad)?;
    let major = number(major)?;
    let (minor_lo, minor_hi) = match minors.split_once('-') {
        Some((lo, hi)) => (number(lo)?, number(hi)?),
        None => {
            let minor = number(minors)?;
            (minor, minor)
        }
    };
    if minor_hi < minor_lo {
        return Err(MdevErrorKind::EmptyMinorRange {
            lo: minor_lo,
            hi: minor_hi,
        });
    }
    Ok(MdevMatch::MajMin {
        major,
        minor_lo,
        minor_hi,
    })
}

/// `user[:group]`, like libbb's `get_uidgid`.
fn parse_owner(text: &str) -> Result<(Owner, Option<Owner>), MdevErrorKind> {
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    let owner = |s: &str| -> Result<Owner, MdevErrorKind> {
        if s.is_empty() {
            Err(MdevErrorKind::BadOwner(text.to_owned()))
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse()
                .map(Owner::Id)
                .map_err(|_| MdevErrorKind::IdOutOfRange(s.to_owned()))
        } else {
            Ok(Owner::Name(s.to_owned()))
        }
    };
    Ok((owner(user)?, group.map(owner).transpose()?))
}

fn parse_mode(text: &str) -> Result<u32, MdevErrorKind> {
    let bad = || MdevErrorKind::BadMode(text.to_owned());
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(bad()),
    }
}

/// Fourth field and beyond: `[=path|>path|!] [@|$|*|+|-|&command]`.
fn parse_trailer(
    at: usize,
    text: &str,
    matcher: &MdevMatch,
) -> Result<(Placement, Option<MdevCommand>), LineError> {
    let mut placement = Placement::Default;
    let mut pos = at;
    let mut rest = text;
    if let Some(kind @ ('=' | '>' | '!')) = rest.chars().next() {
        let end = rest.find(BLANKS).unwrap_or(rest.len());
        let word = &rest[..end];
        let path = &word[1..];
        placement = match kind {
            '!' if path.is_empty() => Placement::NoNode,
            '!' => return Err((pos, MdevErrorKind::BadNoNode(word.to_owned()))),
            _ => {
                check_path(kind, path, matcher).map_err(|e| (pos + 1, e))?;
                if kind == '=' {
                    Placement::Rename(path.to_owned())
                } else {
                    Placement::MoveAndLink(path.to_owned())
                }
            }
        };
        let after = &rest[end..];
        let trimmed = after.trim_start_matches(BLANKS);
        pos += end + (after.len() - trimmed.len());
        rest = trimmed;
    }
    if rest.is_empty() {
        return Ok((placement, None));
    }
    let mut chars = rest.chars();
    let (when, interpreter) = match chars.next() {
        Some('@') => (When::AfterCreate, Interpreter::Shell),
        Some('$') => (When::BeforeRemove, Interpreter::Shell),
        Some('*') => (When::Both, Interpreter::Shell),
        Some('+') => (When::AfterCreate, Interpreter::Execline),
        Some('-') => (When::BeforeRemove, Interpreter::Execline),
        Some('&') => (When::Both, Interpreter::Execline),
        _ => return Err((pos, MdevErrorKind::BadTrailer(rest.to_owned()))),
    };
    let command = MdevCommand {
        when,
        interpreter,
        command: chars.as_str().to_owned(),
    };
    Ok((placement, Some(command)))
}

fn check_path(kind: char, path: &str, matcher: &MdevMatch) -> Result<(), MdevErrorKind> {
    if path.is_empty() {
        return Err(MdevErrorKind::EmptyPath(kind));
    }
    if path.starts_with('/') {
        return Err(MdevErrorKind::AbsolutePath(path.to_owned()));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(MdevErrorKind::DotDotPath(path.to_owned()));
    }
    if matches!(matcher, MdevMatch::MajMin { .. }) {
        if let Some(digit) = path
            .as_bytes()
            .windows(2)
            .find(|w| w[0] == b'%' && w[1].is_ascii_digit())
            .map(|w| char::from(w[1]))
        {
            return Err(MdevErrorKind::SubmatchWithoutRegex(digit, path.to_owned()));
        }
    }
    Ok(())
}

fn compile(source: &str, anchored: bool) -> Result<Pattern, MdevErrorKind> {
    let bad = |message: String| MdevErrorKind::BadRegex {
        pattern: source.to_owned(),
        message,
    };
    let translated = translate_ere(source).map_err(bad)?;
    // `(?s)`: without REG_NEWLINE, POSIX `.` matches a newline too.
    let full = if anchored {
        format!("(?s)^(?:{translated})$")
    } else {
        format!("(?s){translated}")
    };
    let regex = Regex::new(&full).map_err(|e| bad(regex_message(&e)))?;
    Ok(Pattern {
        source: source.to_owned(),
        regex,
    })
}

/// The one-line reason from a `regex` error (its `Display` repeats the translated pattern).
fn regex_message(error: &regex_lite::Error) -> String {
    let text = error.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map_or_else(|| text.trim().to_owned(), str::to_owned)
}

/// Translate a POSIX ERE into `regex-lite` syntax. Outside brackets the two agree closely
/// enough to pass text through; inside a bracket expression POSIX has no escapes, `]` first is
/// literal, and `[`, `&&`, `--`, `~~` are plain characters, so literals are escaped there.
fn translate_ere(src: &str) -> Result<String, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => match chars.get(i + 1) {
                None => return Err("trailing backslash".to_owned()),
                Some(d) if d.is_ascii_digit() => {
                    return Err(format!("back-reference `\\{d}` is not supported"));
                }
                Some(&d) => {
                    out.push('\\');
                    out.push(d);
                    i += 2;
                }
            },
            '[' => i = translate_bracket(&chars, i, &mut out)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn push_class_literal(out: &mut String, c: char) {
    if c.is_ascii_punctuation() {
        out.push('\\');
    }
    out.push(c);
}

/// Translate the bracket expression starting at `chars[start] == '['`; returns the index after
/// its closing `]`.
fn translate_bracket(chars: &[char], start: usize, out: &mut String) -> Result<usize, String> {
    let unclosed = || "unclosed bracket expression".to_owned();
    let mut i = start + 1;
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let body = i;
    // Whether the previous item was a single character that a following `-` makes a range of.
    let mut can_start_range = false;
    loop {
        let c = *chars.get(i).ok_or_else(unclosed)?;
        if c == ']' && i > body {
            out.push(']');
            return Ok(i + 1);
        }
        if c == '[' && matches!(chars.get(i + 1), Some(':' | '=' | '.')) {
            let kind = chars[i + 1];
            let close = (i + 2..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == kind && chars[j + 1] == ']')
                .ok_or_else(unclosed)?;
            let name: String = chars[i + 2..close].iter().collect();
            match (kind, name.chars().count()) {
                (':', _) => {
                    out.push_str("[:");
                    out.push_str(&name);
                    out.push_str(":]");
                    can_start_range = false;
                }
                (_, 1) => {
                    name.chars().for_each(|ch| push_class_literal(out, ch));
                    can_start_range = true;
                }
                _ => {
                    return Err(format!(
                        "collating element `[{kind}{name}{kind}]` is not supported"
                    ))
                }
            }
            i = close + 2;
            continue;
        }
        let next = chars.get(i + 1).copied();
        if c == '-' && can_start_range && next.is_some_and(|n| n != ']') {
            // A range: `a-z`. The end point is taken literally.
            out.push('-');
            let end = next.ok_or_else(unclosed)?;
            push_class_literal(out, end);
            can_start_range = false;
            i += 2;
            continue;
        }
        push_class_literal(out, c);
        can_start_range = true;
        i += 1;
    }
}

impl MdevConf {
    /// Evaluate the rules for one device, as busybox's `make_device` does.
    ///
    /// * `devname` is the kernel's `DEVNAME` (path relative to `/dev`, may contain `/`).
    /// * `major_minor` is the device number, if the device has one; `@major,minor` rules never
    ///   match without it. (busybox only reads it on `add`, so on `remove` its `@` rules never
    ///   match; mdevd and uevd use the event's `MAJOR`/`MINOR` for every action.)
    /// * `env` looks up the event's variables (for `ENVVAR=regex;` and `$ENVVAR=regex`).
    ///
    /// Returns every matching rule in order, stopping after the first one without `-`. If the
    /// rules run out before such a rule, the implicit final rule of busybox (`0:0 660` at the
    /// device name, `rule == None`) is appended — also after `-` rules matched, as busybox does.
    /// The result is therefore never empty.
    pub fn evaluate<'c, 'e>(
        &'c self,
        devname: &str,
        major_minor: Option<(u32, u32)>,
        env: &dyn Fn(&str) -> Option<&'e str>,
    ) -> Vec<MdevOutcome<'c>> {
        let mut outcomes = Vec::new();
        for rule in &self.rules {
            let Some(submatches) = rule.matches(devname, major_minor, env) else {
                continue;
            };
            outcomes.push(rule.outcome(devname, &submatches));
            if !rule.keep_going {
                return outcomes;
            }
        }
        outcomes.push(MdevOutcome {
            rule: None,
            node: NodeAction::Create {
                path: devname.to_owned(),
                symlink: None,
            },
            mdev: devname.to_owned(),
            uid: &ROOT,
            gid: Some(&ROOT),
            mode: 0o660,
            command: None,
        });
        outcomes
    }
}

/// Submatches of a matching rule: `None` entries did not participate.
type Submatches<'h> = Vec<Option<&'h str>>;

impl MdevRule {
    /// The submatches if this rule selects the device (`None` if it does not).
    pub fn matches<'x, 'h: 'x, 'e: 'x>(
        &self,
        devname: &'h str,
        major_minor: Option<(u32, u32)>,
        env: &dyn Fn(&str) -> Option<&'e str>,
    ) -> Option<Submatches<'x>> {
        for prefix in &self.env {
            if !prefix.pattern.regex.is_match(env(&prefix.var)?) {
                return None;
            }
        }
        let (pattern, haystack) = match &self.matcher {
            MdevMatch::MajMin {
                major,
                minor_lo,
                minor_hi,
            } => {
                let (maj, min) = major_minor?;
                let hit = maj == *major && (*minor_lo..=*minor_hi).contains(&min);
                return hit.then(Vec::new);
            }
            MdevMatch::Env { var, pattern } => (pattern, env(var)? as &'x str),
            MdevMatch::Name(pattern) => (pattern, devname as &'x str),
        };
        let captures = pattern.regex.captures(haystack)?;
        Some(captures.iter().map(|m| m.map(|m| m.as_str())).collect())
    }

    /// What this rule decides for a device it matched.
    pub fn outcome<'c>(&'c self, devname: &str, submatches: &[Option<&str>]) -> MdevOutcome<'c> {
        let (node, mdev) = match &self.placement {
            Placement::Default => (
                NodeAction::Create {
                    path: devname.to_owned(),
                    symlink: None,
                },
                devname.to_owned(),
            ),
            Placement::NoNode => (NodeAction::NoNode, devname.to_owned()),
            Placement::Rename(path) | Placement::MoveAndLink(path) => {
                let mut target = substitute(path, submatches);
                // busybox build_alias: `dir/` keeps the whole device name inside `dir`.
                if target.ends_with('/') {
                    target.push_str(devname);
                }
                let node = if is_safe_path(&target) {
                    let link = matches!(self.placement, Placement::MoveAndLink(_));
                    NodeAction::Create {
                        path: target.clone(),
                        symlink: link.then(|| devname.to_owned()),
                    }
                } else {
                    NodeAction::Refused {
                        path: target.clone(),
                    }
                };
                (node, target)
            }
        };
        MdevOutcome {
            rule: Some(self),
            node,
            mdev,
            uid: &self.uid,
            gid: self.gid.as_ref(),
            mode: self.mode,
            command: self.command.as_ref(),
        }
    }
}

/// Replace `%0`..`%9` by submatches, like busybox: a `%` not followed by a digit, or followed by
/// the number of a group that did not take part, stays literal.
fn substitute(template: &str, submatches: &[Option<&str>]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            let group = chars.peek().and_then(|d| d.to_digit(10)).and_then(|n| {
                let index = usize::try_from(n).ok()?;
                submatches.get(index).copied().flatten()
            });
            if let Some(text) = group {
                out.push_str(text);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

fn is_safe_path(path: &str) -> bool {
    !path.is_empty() && !path.starts_with('/') && !path.split('/').any(|c| c == "..")
}

/// The label closing a compiled mdev.conf: a matching rule without `-` jumps here.
const END_LABEL: &str = "uevd-mdev-end";

/// Compiles an mdev.conf into the shared rule form (appended to `rules`), so the daemon runs
/// it like udev rules: one line per rule with an [`Key::Mdev`] match, its owner, group and
/// mode, node placement and command, and a `GOTO` to the end unless the rule starts with `-`;
/// then busybox's implicit final rule (`0:0 660`). User and group names are resolved now.
pub fn compile_into(
    rules: &mut crate::ast::Rules,
    conf: &MdevConf,
    file: &str,
    resolver: &dyn crate::parse::NameResolver,
) -> Vec<crate::parse::Diagnostic> {
    use crate::ast::{Guard, Key, Line, LineFlags, Op, RuleFile, Token};
    use crate::parse::{Diagnostic, Severity};
    use std::sync::Arc;

    let path: Arc<str> = file.into();
    let file_index = rules.files.len() as u32;
    let first = rules.lines.len();
    rules.files.push(RuleFile {
        path: path.clone(),
        first_line: first as u32,
    });
    let mut diagnostics = Vec::new();
    let token = |key: Key, op: Op, text: String| Token {
        key,
        op,
        text: text.into(),
    };
    let assign = |key: Key, text: String| token(key, Op::Assign, text);
    let mut lines = Vec::new();
    for rule in &conf.rules {
        let uid = match &rule.uid {
            Owner::Id(id) => Some(*id),
            Owner::Name(n) => resolver.user(n),
        };
        let gid = match &rule.gid {
            Some(Owner::Id(id)) => Some(*id),
            Some(Owner::Name(n)) => resolver.group(n),
            None => match &rule.uid {
                Owner::Name(n) => resolver.primary_group(n).or(Some(0)),
                Owner::Id(_) => Some(0),
            },
        };
        let (Some(uid), Some(gid)) = (uid, gid) else {
            diagnostics.push(Diagnostic {
                file: path.clone(),
                line: rule.line,
                column: 1,
                severity: Severity::Error,
                message: format!("unknown user or group in {:?}:{:?}", rule.uid, rule.gid),
            });
            continue;
        };
        let mut tokens = vec![
            token(
                Key::Mdev(Arc::new(rule.clone())),
                Op::Match,
                format!("mdev rule {}", rule.line),
            ),
            assign(Key::OwnerId(uid), format!("OWNER={uid}")),
            assign(Key::GroupId(gid), format!("GROUP={gid}")),
            assign(Key::ModeId(rule.mode), format!("MODE={:04o}", rule.mode)),
            assign(Key::MdevNode, "node placement".into()),
        ];
        if let Some(command) = &rule.command {
            tokens.push(token(
                Key::MdevCommand(command.clone()),
                Op::Add,
                format!("command {:?}", command.command),
            ));
        }
        lines.push(Line {
            file: file_index,
            number: rule.line,
            tokens,
            label: None,
            goto_label: (!rule.keep_going).then(|| END_LABEL.into()),
            goto_line: None,
            flags: LineFlags {
                has_devlink: true,
                has_goto: !rule.keep_going,
                updates_something: true,
                ..LineFlags::default()
            },
            guard: Guard::None,
        });
    }
    // busybox's implicit last rule: root:root 0660 at the device name.
    lines.push(Line {
        file: file_index,
        number: 0,
        tokens: vec![
            token(Key::MdevDefault, Op::Match, "mdev default rule".into()),
            assign(Key::OwnerId(0), "OWNER=0".into()),
            assign(Key::GroupId(0), "GROUP=0".into()),
            assign(Key::ModeId(0o660), "MODE=0660".into()),
            assign(Key::MdevNode, "node placement".into()),
        ],
        label: None,
        goto_label: None,
        goto_line: None,
        flags: LineFlags {
            has_devlink: true,
            updates_something: true,
            ..LineFlags::default()
        },
        guard: Guard::None,
    });
    let end = (first + lines.len()) as u32;
    for line in &mut lines {
        if line.goto_label.is_some() {
            line.goto_line = Some(end);
        }
    }
    lines.push(Line {
        file: file_index,
        number: 0,
        tokens: Vec::new(),
        label: Some(END_LABEL.into()),
        goto_label: None,
        goto_line: None,
        flags: LineFlags::default(),
        guard: Guard::None,
    });
    rules.lines.extend(lines);
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> MdevRule {
        let (conf, errors) = parse(text, "mdev.conf");
        assert!(errors.is_empty(), "unexpected errors: {errors:?}");
        assert_eq!(conf.rules.len(), 1, "{conf:?}");
        conf.rules.into_iter().next().expect("one rule")
    }

    fn error(text: &str) -> String {
        let (conf, errors) = parse(text, "mdev.conf");
        assert!(conf.rules.is_empty(), "unexpected rules: {conf:?}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    fn no_env(_: &str) -> Option<&'static str> {
        None
    }

    fn name_source(rule: &MdevRule) -> &str {
        match &rule.matcher {
            MdevMatch::Name(p) => p.source(),
            other => panic!("not a name match: {other:?}"),
        }
    }

    fn created(outcome: &MdevOutcome<'_>) -> (String, Option<String>) {
        match &outcome.node {
            NodeAction::Create { path, symlink } => (path.clone(), symlink.clone()),
            other => panic!("no node created: {other:?}"),
        }
    }

    #[test]
    fn busybox_null() {
        let rule = one("null 0:0 666\n");
        assert_eq!(rule.line, 1);
        assert!(!rule.keep_going);
        assert_eq!(name_source(&rule), "null");
        assert_eq!(
            (rule.uid.clone(), rule.gid.clone()),
            (Owner::Id(0), Some(Owner::Id(0)))
        );
        assert_eq!(rule.mode, 0o666);
        assert_eq!(rule.placement, Placement::Default);
        assert_eq!(rule.command, None);
    }

    #[test]
    fn busybox_tty_regex_matches_whole_name_only() {
        let (conf, errors) = parse("tty[0-9]+ 0:5 660\n", "f");
        assert!(errors.is_empty());
        let out = conf.evaluate("tty12", None, &no_env);
        assert_eq!(out[0].rule.map(|r| r.line), Some(1));
        assert_eq!(out[0].mode, 0o660);
        assert_eq!(out[0].gid, Some(&Owner::Id(5)));
        // Not a prefix or substring match: falls through to the implicit default.
        for name in ["ttyS0", "xtty1", "tty"] {
            let out = conf.evaluate(name, None, &no_env);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].rule, None, "{name}");
            assert_eq!(out[0].mode, 0o660);
        }
    }

    #[test]
    fn busybox_usbdisk_names_and_both_command() {
        let rule = one("sd[a-z].* root:disk 660 */lib/mdev/usbdisk_link\n");
        assert_eq!(rule.uid, Owner::Name("root".into()));
        assert_eq!(rule.gid, Some(Owner::Name("disk".into())));
        assert_eq!(
            rule.command,
            Some(MdevCommand {
                when: When::Both,
                interpreter: Interpreter::Shell,
                command: "/lib/mdev/usbdisk_link".into(),
            })
        );
    }

    #[test]
    fn busybox_modalias_env_match() {
        let rule = one("$MODALIAS=.* 0:0 660 @modprobe \"$MODALIAS\"\n");
        match &rule.matcher {
            MdevMatch::Env { var, pattern } => {
                assert_eq!(var, "MODALIAS");
                assert_eq!(pattern.source(), ".*");
            }
            other => panic!("{other:?}"),
        }
        let command = rule.command.clone().expect("command");
        assert_eq!(command.when, When::AfterCreate);
        assert_eq!(command.command, "modprobe \"$MODALIAS\"");
        let conf = MdevConf { rules: vec![rule] };
        let env = |k: &str| (k == "MODALIAS").then_some("usb:v1234");
        assert!(conf.evaluate("1-1:1.0", None, &env)[0].rule.is_some());
        assert!(conf.evaluate("1-1:1.0", None, &no_env)[0].rule.is_none());
    }

    #[test]
    fn busybox_keep_going_sound() {
        let (conf, errors) = parse(
            "-snd/.* 0:audio 660 @echo first\nsnd/pcm.* 0:0 600 =sound/\n",
            "f",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(conf.rules[0].keep_going);
        assert_eq!(name_source(&conf.rules[0]), "snd/.*");
        let out = conf.evaluate("snd/pcmC0D0p", None, &no_env);
        assert_eq!(out.len(), 2);
        assert_eq!(created(&out[0]), ("snd/pcmC0D0p".into(), None));
        assert_eq!(created(&out[1]), ("sound/snd/pcmC0D0p".into(), None));
    }

    #[test]
    fn keep_going_then_nothing_appends_implicit_default() {
        // busybox 1.35: `-null 1:1 641` alone creates null with 641, then again with 0:0 660.
        let (conf, _) = parse("-null 1:1 641\n", "f");
        let out = conf.evaluate("null", None, &no_env);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].rule, None);
        assert_eq!((out[1].uid, out[1].mode), (&Owner::Id(0), 0o660));
    }

    #[test]
    fn busybox_majmin_range() {
        let rule = one("@89,0-3 root:root 660\n");
        assert_eq!(
            rule.matcher,
            MdevMatch::MajMin {
                major: 89,
                minor_lo: 0,
                minor_hi: 3
            }
        );
        let conf = MdevConf { rules: vec![rule] };
        assert!(conf.evaluate("i2c-2", Some((89, 3)), &no_env)[0]
            .rule
            .is_some());
        assert!(conf.evaluate("i2c-4", Some((89, 4)), &no_env)[0]
            .rule
            .is_none());
        assert!(conf.evaluate("i2c-2", None, &no_env)[0].rule.is_none());
        let single = one("@4,1 0:0 600\n");
        assert_eq!(
            single.matcher,
            MdevMatch::MajMin {
                major: 4,
                minor_lo: 1,
                minor_hi: 1
            }
        );
    }

    /// busybox keeps the whole DEVNAME under `dir/`: with DEVNAME=input/event0 its own example
    /// line gives input/input/event0 (checked against busybox 1.35; mdevd does the same).
    #[test]
    fn busybox_input_dir_keeps_full_device_name() {
        let rule = one("input/event.* 0:0 640 =input/\n");
        assert_eq!(rule.placement, Placement::Rename("input/".into()));
        let conf = MdevConf { rules: vec![rule] };
        let out = conf.evaluate("input/event0", None, &no_env);
        assert_eq!(created(&out[0]), ("input/input/event0".into(), None));
        assert_eq!(out[0].mdev, "input/input/event0");
        let out = conf.evaluate("event0", None, &no_env);
        assert_eq!(out[0].rule, None);
    }

    #[test]
    fn busybox_hd_move_and_link_with_submatch() {
        let rule = one("hd([a-z])([0-9]*) 0:6 660 >hd/%1%2\n");
        assert_eq!(rule.placement, Placement::MoveAndLink("hd/%1%2".into()));
        let conf = MdevConf { rules: vec![rule] };
        let out = conf.evaluate("hda1", None, &no_env);
        assert_eq!(created(&out[0]), ("hd/a1".into(), Some("hda1".into())));
        assert_eq!(out[0].mdev, "hd/a1");
    }

    #[test]
    fn busybox_hd_example_without_group_keeps_percent() {
        // The example line has no group: busybox leaves `%1` as written.
        let (conf, errors) = parse("hd[a-z][0-9]* 0:6 660 >hd/%1\n", "f");
        assert!(errors.is_empty());
        let out = conf.evaluate("hda1", None, &no_env);
        assert_eq!(created(&out[0]), ("hd/%1".into(), Some("hda1".into())));
    }

    #[test]
    fn substitution_matches_busybox() {
        // busybox 1.35: `n(u)(l+) ... =a%2b/%1%3%x%%` on null gives allb/u%3%x%%.
        assert_eq!(
            substitute("a%2b/%1%3%x%%", &[Some("null"), Some("u"), Some("ll")]),
            "allb/u%3%x%%"
        );
        assert_eq!(substitute("%%1%0%", &[Some("all"), Some("x")]), "%xall%");
        assert_eq!(substitute("%1", &[Some("a"), None]), "%1");
    }

    #[test]
    fn env_var_submatches_come_from_the_value() {
        let (conf, _) = parse("$FOO=b(a)r 0:0 641 =%1%0\n", "f");
        let env = |k: &str| (k == "FOO").then_some("bar");
        assert_eq!(created(&conf.evaluate("null", None, &env)[0]).0, "abar");
    }

    /// Documented divergence from leftmost-longest submatches (glibc agrees with uevd here).
    #[test]
    fn submatches_are_leftmost_first() {
        let (conf, _) = parse("(a|ab)(bc|c) 0:0 600 =%1_%2\n", "f");
        assert_eq!(created(&conf.evaluate("abc", None, &no_env)[0]).0, "a_bc");
    }

    #[test]
    fn no_node_and_commands() {
        let rule = one("null 0:0 642 ! $echo gone\n");
        assert_eq!(rule.placement, Placement::NoNode);
        let command = rule.command.clone().expect("command");
        assert_eq!(
            (command.when, command.command.as_str()),
            (When::BeforeRemove, "echo gone")
        );
        let conf = MdevConf { rules: vec![rule] };
        let out = conf.evaluate("null", None, &no_env);
        assert_eq!(
            (out[0].node.clone(), out[0].mdev.as_str()),
            (NodeAction::NoNode, "null")
        );
        assert!(When::BeforeRemove.applies_to("remove"));
        assert!(!When::BeforeRemove.applies_to("add"));
        assert!(When::Both.applies_to("change"));
        assert!(When::AfterCreate.applies_to("add"));
    }

    #[test]
    fn mdevd_execline_commands() {
        for (text, when) in [
            ("+foo", When::AfterCreate),
            ("-foo", When::BeforeRemove),
            ("&foo", When::Both),
        ] {
            let rule = one(&format!("null 0:0 600 {text}\n"));
            let command = rule.command.expect("command");
            assert_eq!(
                (command.when, command.interpreter),
                (when, Interpreter::Execline)
            );
            assert_eq!(command.command, "foo");
        }
    }

    #[test]
    fn rename_then_command_and_hash_inside_command() {
        let rule = one("null 0:0 600 =x#y   @echo a#b  # not a comment \t\n");
        assert_eq!(rule.placement, Placement::Rename("x#y".into()));
        assert_eq!(
            rule.command.expect("command").command,
            "echo a#b  # not a comment"
        );
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let text = "# comment\n\n   \t\n  # indented comment\n\tnull\t 1:2 \t606 # trailing\n\
                    zero 0:0 666#notcomment\n";
        let (conf, errors) = parse(text, "f");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_string(), "f:6:10: invalid mode `666#notcomment`: expected octal permissions such as 660 (at most 7777)");
        assert_eq!(conf.rules.len(), 1);
        assert_eq!(conf.rules[0].line, 5);
        assert_eq!(conf.rules[0].mode, 0o606);
        assert_eq!(conf.rules[0].placement, Placement::Default);
    }

    #[test]
    fn hash_inside_regex_is_literal() {
        assert_eq!(name_source(&one("null#c 1:2 606\n")), "null#c");
    }

    #[test]
    fn continuation_lines_join() {
        let (conf, errors) = parse("null 0:0 640 \\\n=x\nzero 0:0 \\\n 600\n", "f");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(conf.rules[0].placement, Placement::Rename("x".into()));
        assert_eq!((conf.rules[1].line, conf.rules[1].mode), (3, 0o600));
        // An error after a continuation points at the physical line and column.
        let (_, errors) = parse("null 0:0 \\\n  6x0\n", "f");
        assert_eq!(
            errors[0].to_string(),
            "f:2:3: invalid mode `6x0`: expected octal permissions such as 660 (at most 7777)"
        );
    }

    #[test]
    fn crlf_is_tolerated() {
        assert_eq!(one("null 0:0 660\r\n").mode, 0o660);
    }

    #[test]
    fn env_prefixes() {
        let rule = one("-SUBSYSTEM=usb;DEVTYPE=usb_device;.* root:root 0660 */lib/mdev/usbdev\n");
        assert!(rule.keep_going);
        let vars: Vec<_> = rule
            .env
            .iter()
            .map(|e| (e.var.as_str(), e.pattern.source()))
            .collect();
        assert_eq!(vars, [("SUBSYSTEM", "usb"), ("DEVTYPE", "usb_device")]);
        assert_eq!(name_source(&rule), ".*");
        let conf = MdevConf { rules: vec![rule] };
        // Unanchored, like busybox's regexec: `usb` is found inside `usbmisc`.
        let env = |k: &str| match k {
            "SUBSYSTEM" => Some("usbmisc"),
            "DEVTYPE" => Some("usb_device"),
            _ => None,
        };
        assert!(conf.evaluate("bus/usb/001/002", None, &env)[0]
            .rule
            .is_some());
        let env = |k: &str| (k == "SUBSYSTEM").then_some("usb");
        assert!(conf.evaluate("bus/usb/001/002", None, &env)[0]
            .rule
            .is_none());
    }

    #[test]
    fn env_prefix_with_majmin() {
        let rule = one("SUBSYSTEM=mem;@1,3 0:0 600\n");
        assert_eq!(rule.env.len(), 1);
        assert_eq!(
            rule.matcher,
            MdevMatch::MajMin {
                major: 1,
                minor_lo: 3,
                minor_hi: 3
            }
        );
    }

    #[test]
    fn lone_user_means_primary_group() {
        let rule = one("null 1 606\n");
        assert_eq!((rule.uid, rule.gid), (Owner::Id(1), None));
    }

    #[test]
    fn leading_zero_mode_and_sticky_bits() {
        assert_eq!(one("null 0:0 0660\n").mode, 0o660);
        assert_eq!(one("null 0:0 7777\n").mode, 0o7777);
    }

    #[test]
    fn posix_bracket_expressions() {
        let (conf, errors) = parse(
            "nu[]l]l 0:0 600\nn[\\.]ll 0:0 601\nx[[:digit:]a-c-] 0:0 602\n",
            "f",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let mode = |name: &str| conf.evaluate(name, None, &no_env)[0].mode;
        assert_eq!(mode("nu]l"), 0o600);
        assert_eq!(mode("n\\ll"), 0o601);
        assert_eq!(mode("n.ll"), 0o601);
        assert_eq!(mode("x5"), 0o602);
        assert_eq!(mode("xb"), 0o602);
        assert_eq!(mode("x-"), 0o602);
        assert_eq!(mode("xd"), 0o660);
    }

    #[test]
    fn error_too_few_fields() {
        assert_eq!(
            error("null 1:2\n"),
            "mdev.conf:1:1: expected `<device> <user>[:<group>] <mode>`, found 2 field(s)"
        );
        assert_eq!(
            error("null 1:2 # 600\n"),
            "mdev.conf:1:1: expected `<device> <user>[:<group>] <mode>`, found 2 field(s)"
        );
    }

    #[test]
    fn error_bad_majmin() {
        assert_eq!(error("@89 0:0 600\n"), "mdev.conf:1:1: invalid device numbers `@89`: expected @major,minor or @major,minor-minor2");
        assert_eq!(error("-@1,2-4x 0:0 600\n"), "mdev.conf:1:2: invalid device numbers `@1,2-4x`: expected @major,minor or @major,minor-minor2");
        assert_eq!(error("@1,99999999999 0:0 600\n"), "mdev.conf:1:1: invalid device numbers `@1,99999999999`: expected @major,minor or @major,minor-minor2");
    }

    #[test]
    fn error_empty_minor_range() {
        assert_eq!(
            error("@1,3-2 0:0 600\n"),
            "mdev.conf:1:1: empty minor range 3-2"
        );
    }

    #[test]
    fn error_env_match() {
        assert_eq!(
            error("$FOO 0:0 600\n"),
            "mdev.conf:1:1: invalid environment match `$FOO`: expected $VARIABLE=regex"
        );
        assert_eq!(
            error("$=x 0:0 600\n"),
            "mdev.conf:1:1: empty variable name in `$=x`"
        );
    }

    #[test]
    fn error_bad_regex() {
        assert_eq!(
            error("nul(l 0:0 600\n"),
            "mdev.conf:1:1: invalid regular expression `nul(l`: found open group without closing ')'"
        );
        assert_eq!(
            error("A=(;null 0:0 600\n"),
            "mdev.conf:1:3: invalid regular expression `(`: found open group without closing ')'"
        );
        assert_eq!(
            error("$A=x[ 0:0 600\n"),
            "mdev.conf:1:4: invalid regular expression `x[`: unclosed bracket expression"
        );
        assert_eq!(error("(a)\\1 0:0 600\n"), "mdev.conf:1:1: invalid regular expression `(a)\\1`: back-reference `\\1` is not supported");
        assert_eq!(
            error("a\\ 0:0 600\n"),
            "mdev.conf:1:1: invalid regular expression `a\\`: trailing backslash"
        );
        assert_eq!(error("[[.space.]] 0:0 600\n"), "mdev.conf:1:1: invalid regular expression `[[.space.]]`: collating element `[.space.]` is not supported");
    }

    #[test]
    fn error_owner() {
        assert_eq!(
            error("null :2 600\n"),
            "mdev.conf:1:6: invalid owner `:2`: expected user[:group]"
        );
        assert_eq!(
            error("null 1: 600\n"),
            "mdev.conf:1:6: invalid owner `1:`: expected user[:group]"
        );
        assert_eq!(
            error("null 0:4294967296 600\n"),
            "mdev.conf:1:6: id `4294967296` is out of range"
        );
    }

    #[test]
    fn error_mode() {
        assert_eq!(error("null 0:0 6z6\n"), "mdev.conf:1:10: invalid mode `6z6`: expected octal permissions such as 660 (at most 7777)");
        assert_eq!(error("null 0:0 17777\n"), "mdev.conf:1:10: invalid mode `17777`: expected octal permissions such as 660 (at most 7777)");
        assert_eq!(error("null 0:0 u+x\n"), "mdev.conf:1:10: invalid mode `u+x`: expected octal permissions such as 660 (at most 7777)");
    }

    #[test]
    fn error_paths() {
        assert_eq!(
            error("null 0:0 600 =\n"),
            "mdev.conf:1:15: `=` needs a path"
        );
        assert_eq!(
            error("null 0:0 600 > @x\n"),
            "mdev.conf:1:15: `>` needs a path"
        );
        assert_eq!(
            error("null 0:0 600 =/etc/x\n"),
            "mdev.conf:1:15: path `/etc/x` must be relative to /dev"
        );
        assert_eq!(
            error("null 0:0 600 >a/../../x\n"),
            "mdev.conf:1:15: path `a/../../x` must not contain `..`"
        );
        assert_eq!(
            error("null 0:0 600 =..\n"),
            "mdev.conf:1:15: path `..` must not contain `..`"
        );
    }

    #[test]
    fn dots_that_are_not_dotdot_are_fine() {
        assert_eq!(
            one("null 0:0 600 =a..b/.x\n").placement,
            Placement::Rename("a..b/.x".into())
        );
    }

    #[test]
    fn error_no_node_glued() {
        assert_eq!(
            error("null 0:0 600 !@cmd\n"),
            "mdev.conf:1:14: `!` must stand alone, found `!@cmd`"
        );
    }

    #[test]
    fn error_submatch_in_majmin_rule() {
        assert_eq!(
            error("@1,3 0:0 600 =x%1\n"),
            "mdev.conf:1:15: `%1` in `x%1` refers to a submatch, but @major,minor rules have none"
        );
        // `%` without a digit is fine.
        assert!(matches!(
            one("@1,3 0:0 600 =x%y\n").placement,
            Placement::Rename(_)
        ));
    }

    #[test]
    fn error_bad_trailer() {
        assert_eq!(error("null 0:0 600 junk\n"), "mdev.conf:1:14: expected `=path`, `>path`, `!` or a command starting with @, $ or * here, found `junk`");
        assert_eq!(error("null 0:0 600 =x junk\n"), "mdev.conf:1:17: expected `=path`, `>path`, `!` or a command starting with @, $ or * here, found `junk`");
    }

    #[test]
    fn bad_lines_are_skipped_good_lines_kept() {
        let (conf, errors) = parse(
            "null 0:0 6z6\nzero 0:0 666\n@x 0:0 600\ntty 0:5 620\n",
            "/etc/mdev.conf",
        );
        let lines: Vec<_> = conf.rules.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4]);
        let where_: Vec<_> = errors
            .iter()
            .map(|e| (e.file.as_str(), e.line, e.column))
            .collect();
        assert_eq!(
            where_,
            [("/etc/mdev.conf", 1, 10), ("/etc/mdev.conf", 3, 1)]
        );
    }

    #[test]
    fn substituted_paths_are_checked_again() {
        let (conf, _) = parse("$P=(.*) 0:0 600 =x/%1\n$Q=(.*) 0:0 600 >%1\n", "f");
        let env = |k: &str| (k == "P").then_some("../../etc/passwd");
        let out = conf.evaluate("null", None, &env);
        assert_eq!(
            out[0].node,
            NodeAction::Refused {
                path: "x/../../etc/passwd".into()
            }
        );
        let env = |k: &str| (k == "Q").then_some("");
        let out = conf.evaluate("null", None, &env);
        assert_eq!(
            out[0].node,
            NodeAction::Refused {
                path: String::new()
            }
        );
    }

    #[test]
    fn empty_device_regex_matches_only_empty_name() {
        let (conf, errors) = parse("- 0:0 600\n", "f");
        assert!(errors.is_empty());
        assert_eq!(conf.evaluate("null", None, &no_env)[0].rule, None);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(text in "\\PC*") {
                let _ = parse(&text, "f");
            }

            #[test]
            fn parse_and_evaluate_never_panic_on_mdev_like_text(
                lines in proptest::collection::vec(
                    "[-]?([A-Z]{1,3}=[a-z.*]{0,3};)?(@[0-9,-]{0,6}|\\$[A-Z=.*]{0,4}|[a-z.*+?()|\\[\\]%\\\\#/]{0,8}) [a-z0-9:]{0,5} [0-7x]{0,4}( [=>!][a-z%0-9/.]{0,5})?( [@$*+&-][a-z #]{0,5})?\\\\?",
                    0..6,
                ),
                devname in "[a-z0-9/]{0,8}",
            ) {
                let text = lines.join("\n");
                let (conf, errors) = parse(&text, "f");
                for e in &errors {
                    prop_assert!(e.line >= 1 && e.column >= 1);
                }
                let env = |_: &str| Some("usb:v1");
                let out = conf.evaluate(&devname, Some((1, 3)), &env);
                prop_assert!(!out.is_empty());
            }
        }
    }
}
