//! The compiled form of a rule set: lines of typed tokens, ready to evaluate.
//!
//! Every `KEY{attr} OP "value"` of a rule line becomes one [`Token`]. As in udev 252, the match
//! tokens of a line are kept sorted by [`Key::match_rank`] (cheap string compares first,
//! parent walks next, programs and imports last) and run before the assignments, which are
//! sorted by kind as udev sorts them ([`Key::line_rank`]). Values are classified once: match values become
//! [`Pattern`]s, everything that is substituted becomes a [`Template`].

use std::sync::Arc;

use crate::format::Template;
use crate::pattern::Pattern;

/// The operator between key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Match,
    /// `!=`
    NoMatch,
    /// `+=`
    Add,
    /// `-=`
    Remove,
    /// `=`
    Assign,
    /// `:=` — assign and forbid later changes.
    AssignFinal,
}

impl Op {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Match => "==",
            Op::NoMatch => "!=",
            Op::Add => "+=",
            Op::Remove => "-=",
            Op::Assign => "=",
            Op::AssignFinal => ":=",
        }
    }

    /// `==` or `!=`.
    pub fn is_match(self) -> bool {
        matches!(self, Op::Match | Op::NoMatch)
    }
}

/// How an `ATTR{name}` / `ATTRS{name}` / `SYSCTL{name}` name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrName {
    /// A literal attribute name (possibly with `/` into subdirectories).
    Plain(Box<str>),
    /// A name with `%`/`$` substitutions.
    Format(Template),
    /// `[subsystem/sysname]attribute`: an attribute of another device.
    OtherDevice(Template),
}

/// Which builtin command a `RUN{builtin}`/`IMPORT{builtin}` names. Each is a small module of
/// the daemon; the rules only carry the name and the argument line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    /// `btrfs ready DEVNODE`
    Btrfs,
    /// `hwdb` — properties from the hardware database.
    Hwdb,
    /// `input_id` — classify input devices.
    InputId,
    /// `keyboard` — keymaps from hwdb.
    Keyboard,
    /// `blkid` — filesystem and partition probing.
    Blkid,
    /// `kmod load MODALIAS…` — load kernel modules.
    Kmod,
    /// `net_id` — predictable network interface names.
    NetId,
    /// `net_setup_link` — apply .link files.
    NetSetupLink,
    /// `path_id` — persistent path names.
    PathId,
    /// `usb_id` — USB identification.
    UsbId,
    /// `uaccess` — seat ACLs.
    Uaccess,
}

impl Builtin {
    /// Every builtin udev 252 knows, with its name in rules.
    pub const ALL: [(&'static str, Builtin); 11] = [
        ("btrfs", Builtin::Btrfs),
        ("hwdb", Builtin::Hwdb),
        ("input_id", Builtin::InputId),
        ("keyboard", Builtin::Keyboard),
        ("blkid", Builtin::Blkid),
        ("kmod", Builtin::Kmod),
        ("net_id", Builtin::NetId),
        ("net_setup_link", Builtin::NetSetupLink),
        ("path_id", Builtin::PathId),
        ("usb_id", Builtin::UsbId),
        ("uaccess", Builtin::Uaccess),
    ];

    /// Looks up the builtin named by the first word of a command line.
    pub fn from_command(command: &str) -> Option<Builtin> {
        let name = command.split_ascii_whitespace().next()?;
        Builtin::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, builtin)| *builtin)
    }

    /// The name used in rules.
    pub fn name(self) -> &'static str {
        Builtin::ALL
            .iter()
            .find(|(_, b)| *b == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// The key of a token, with its typed argument. Match keys are evaluated in the order of
/// [`Key::match_rank`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    // ---- matches on the event device ----
    /// `ACTION`
    Action(Pattern),
    /// `DEVPATH`
    Devpath(Pattern),
    /// `KERNEL` (the sysname)
    Kernel(Pattern),
    /// `SYMLINK==`: any of the device's links (without `/dev/`).
    Symlink(Pattern),
    /// `NAME==`: the name assigned so far.
    Name(Pattern),
    /// `ENV{key}==`
    Env(Box<str>, Pattern),
    /// `CONST{arch|virt}==`
    Const(Box<str>, Pattern),
    /// `TAG==`: any tag of the device.
    Tag(Pattern),
    /// `SUBSYSTEM==`
    Subsystem(Pattern),
    /// `DRIVER==`
    Driver(Pattern),
    /// `ATTR{name}==` (trailing whitespace of the value ignored unless the pattern has some)
    Attr(AttrName, Pattern),
    /// `SYSCTL{name}==`
    Sysctl(Template, Pattern),
    // ---- matches on the device or one of its parents (all on the same one) ----
    /// `KERNELS==`
    ParentKernel(Pattern),
    /// `SUBSYSTEMS==`
    ParentSubsystem(Pattern),
    /// `DRIVERS==`
    ParentDriver(Pattern),
    /// `ATTRS{name}==`
    ParentAttr(AttrName, Pattern),
    /// `TAGS==`
    ParentTag(Pattern),
    // ---- matches with work behind them ----
    /// `TEST{mode}=="path"`: the file exists (and has any of the mode bits, if given).
    Test(Option<u32>, Template),
    /// `PROGRAM=="cmd"`: runs; true if it exits 0; its output becomes `RESULT`.
    Program(Template),
    /// `IMPORT{file}`
    ImportFile(Template),
    /// `IMPORT{program}`
    ImportProgram(Template),
    /// `IMPORT{builtin}`
    ImportBuiltin(Builtin, Template),
    /// `IMPORT{db}="KEY"`: a property from this device's previous database record.
    ImportDb(Template),
    /// `IMPORT{cmdline}="key"`: from the kernel command line.
    ImportCmdline(Template),
    /// `IMPORT{parent}="GLOB"`: properties of the parent device whose names match the
    /// substituted value as one fnmatch pattern (a `|` there is no alternative, as in udev).
    ImportParent(Template),
    /// `RESULT==`
    Result(Pattern),

    // ---- assignments, run in the order of `Key::line_rank` ----
    /// `OPTIONS+="string_escape=none|replace"`
    StringEscape(Escape),
    /// `OPTIONS+="db_persist"`
    DbPersist,
    /// `OPTIONS+="if_exists=run|skip|error"` (a uevd extension, after vdev): what the `RUN`
    /// programs of the line (and those added later) do when the device node existed before
    /// the event.
    IfExists(ExistingNode),
    /// `OPTIONS+="watch"` / `"nowatch"`
    Watch(bool),
    /// `OPTIONS+="link_priority=N"`
    LinkPriority(i32),
    /// `OPTIONS+="log_level=…"` (accepted; uevd's log level is global)
    LogLevel(Box<str>),
    /// `OPTIONS+="static_node=NAME"`: not evaluated per event; the line's permissions apply to
    /// `/dev/NAME` when the rules are put in place ([`crate::static_nodes`]).
    StaticNode(Box<str>),
    /// `OWNER="name"` resolved per event (it contains substitutions or could not be resolved
    /// when read)
    Owner(Template),
    /// `OWNER` already resolved to a uid.
    OwnerId(u32),
    /// `GROUP="name"` per event.
    Group(Template),
    /// `GROUP` resolved to a gid.
    GroupId(u32),
    /// `MODE` with substitutions.
    Mode(Template),
    /// `MODE` parsed when read.
    ModeId(u32),
    /// `TAG+=`
    TagAssign(Template),
    /// `SECLABEL{module}=`
    Seclabel(Box<str>, Template),
    /// `ENV{key}=`
    EnvAssign(Box<str>, Template),
    /// `NAME=` (network interfaces; device nodes keep the kernel's name in udev)
    NameAssign(Template),
    /// `SYMLINK+=`
    SymlinkAssign(Template),
    /// `ATTR{name}=`: write a sysfs attribute.
    AttrAssign(AttrName, Template),
    /// `SYSCTL{name}=`: write a kernel parameter.
    SysctlAssign(Template, Template),
    /// `RUN{builtin}=`
    RunBuiltin(Builtin, Template),
    /// `RUN{program}=`
    RunProgram(Template),
    /// An mdev.conf line's device match (regex, `@maj,min` or `$VAR=regex`, with its
    /// `VAR=regex;` prefixes); remembers the submatches for the line's placement.
    Mdev(Arc<crate::mdev::MdevRule>),
    /// mdev.conf's implicit final rule: matches any device with a name.
    MdevDefault,
    /// Applies the matched mdev.conf line's placement (`=path`, `>path`, `!`).
    MdevNode,
    /// A command from an mdev.conf line (`@`, `$`, `*`; mdevd's `+`, `-`, `&`).
    MdevCommand(crate::mdev::MdevCommand),
}

/// What a `RUN` program does when the device's node already existed before the event (a
/// duplicate `add`, a node left by devtmpfs or a previous run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExistingNode {
    /// Run anyway (udev's behaviour, the default).
    #[default]
    Run,
    /// Do not run, quietly.
    Skip,
    /// Do not run, and report an error naming the program.
    Error,
}

/// `OPTIONS+="string_escape=…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Keep substituted text as it is.
    None,
    /// Replace characters not allowed in names with `_`.
    Replace,
}

impl Key {
    /// Sort rank among match keys (`None` for assignments: see [`Key::line_rank`]).
    pub(crate) fn match_rank(&self) -> Option<u8> {
        Some(match self {
            Key::Action(_) | Key::Mdev(_) | Key::MdevDefault => 0,
            // udev 252 tests SUBSYSTEM after KERNEL; these matches have no side effects, so
            // the order only decides how fast a line is rejected, and most lines are
            // rejected by their subsystem with one byte comparison.
            Key::Subsystem(_) => 1,
            Key::Devpath(_) => 2,
            Key::Kernel(_) => 3,
            Key::Symlink(_) => 4,
            Key::Name(_) => 5,
            Key::Env(..) => 6,
            Key::Const(..) => 7,
            Key::Tag(_) => 8,
            Key::Driver(_) => 9,
            Key::Attr(..) => 10,
            Key::Sysctl(..) => 11,
            Key::ParentKernel(_) => 12,
            Key::ParentSubsystem(_) => 13,
            Key::ParentDriver(_) => 14,
            Key::ParentAttr(..) => 15,
            Key::ParentTag(_) => 16,
            Key::Test(..) => 17,
            Key::Program(_) => 18,
            Key::ImportFile(_) => 19,
            Key::ImportProgram(_) => 20,
            Key::ImportBuiltin(..) => 21,
            Key::ImportDb(_) => 22,
            Key::ImportCmdline(_) => 23,
            Key::ImportParent(_) => 24,
            Key::Result(_) => 25,
            _ => return None,
        })
    }

    /// Where the token goes on its line: matches by [`Key::match_rank`], then assignments in
    /// the order of udev 252's token types (`OPTIONS`, `OWNER`/`GROUP`/`MODE`, `TAG`,
    /// `SECLABEL`, `ENV`, `NAME`, `SYMLINK`, `ATTR`, `SYSCTL`, `RUN`), each kind in written
    /// order. udev sorts a line's tokens so: `SYMLINK+="$env{X}", ENV{X}="y"` sees `y`.
    pub(crate) fn line_rank(&self) -> u8 {
        if let Some(rank) = self.match_rank() {
            return rank;
        }
        match self {
            Key::StringEscape(Escape::None) => 30,
            Key::StringEscape(Escape::Replace) => 31,
            Key::DbPersist => 32,
            Key::Watch(_) => 33,
            Key::LinkPriority(_) => 34,
            Key::LogLevel(_) | Key::IfExists(_) => 35,
            Key::Owner(_) => 36,
            Key::Group(_) => 37,
            Key::Mode(_) => 38,
            Key::OwnerId(_) => 39,
            Key::GroupId(_) => 40,
            Key::ModeId(_) => 41,
            Key::TagAssign(_) => 42,
            Key::StaticNode(_) => 43,
            Key::Seclabel(..) => 44,
            Key::EnvAssign(..) => 45,
            Key::NameAssign(_) => 46,
            Key::SymlinkAssign(_) => 47,
            Key::AttrAssign(..) => 48,
            Key::SysctlAssign(..) => 49,
            Key::RunBuiltin(..) => 50,
            Key::RunProgram(_) => 51,
            // mdev.conf lines are built in their own order, never sorted.
            _ => 60,
        }
    }

    /// Is this one of the keys that must all match on the same parent device?
    pub fn is_parent_match(&self) -> bool {
        // Asked for every token of every line evaluated: a variant test, not a rank lookup.
        matches!(
            self,
            Key::ParentKernel(_)
                | Key::ParentSubsystem(_)
                | Key::ParentDriver(_)
                | Key::ParentAttr(..)
                | Key::ParentTag(_)
        )
    }
}

/// One `KEY OP "value"` of a rule line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What the token does, with its argument.
    pub key: Key,
    /// The operator as written (for matches: `==`/`!=`; for assignments: how to combine).
    pub op: Op,
    /// The token as written, for traces (`uevd test`) and error messages.
    pub text: Box<str>,
}

/// One rule line (after joining continuation lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Index into [`Rules::files`].
    pub file: u32,
    /// 1-based number of the line's first physical line.
    pub number: u32,
    /// Match tokens, then assignments, each sorted as udev sorts them ([`Key::line_rank`]).
    pub tokens: Vec<Token>,
    /// `LABEL="…"` on this line.
    pub label: Option<Box<str>>,
    /// `GOTO="…"` on this line, as written.
    pub goto_label: Option<Box<str>>,
    /// The line index the `GOTO` jumps to (resolved within the file, forwards).
    pub goto_line: Option<u32>,
    /// Summary flags used to skip lines that cannot do anything for an event.
    pub flags: LineFlags,
    /// A cheap test the event must pass for the line to match.
    pub guard: Guard,
}

/// A necessary condition for a line to match, tested before the line itself. Most lines
/// begin with `SUBSYSTEM=="literal"` or `KERNEL=="name…"`, and most events fail them: the
/// guard rejects those in a few instructions, without walking the line's tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Guard {
    /// Nothing cheap to test.
    #[default]
    None,
    /// The subsystem is one of these (a `SUBSYSTEM==` of literal alternatives).
    Subsystem(Box<[Box<str>]>),
    /// The sysname starts with one of these bytes (a `KERNEL==` whose every alternative
    /// starts with a literal byte).
    KernelFirstByte(Box<[u8]>),
}

impl Guard {
    /// The guard of a line with these (rank-sorted) tokens.
    pub fn of(tokens: &[Token]) -> Guard {
        let matching = |want: fn(&Key) -> Option<&Pattern>| {
            tokens
                .iter()
                .filter(|t| t.op == Op::Match)
                .find_map(|t| want(&t.key))
        };
        let subsystem = matching(|k| match k {
            Key::Subsystem(p) => Some(p),
            _ => None,
        })
        .and_then(Pattern::literal_alternatives);
        if let Some(values) = subsystem {
            return Guard::Subsystem(values.into_iter().map(Into::into).collect());
        }
        let kernel = matching(|k| match k {
            Key::Kernel(p) => Some(p),
            _ => None,
        })
        .and_then(Pattern::first_bytes);
        match kernel {
            Some(bytes) => Guard::KernelFirstByte(bytes.into()),
            None => Guard::None,
        }
    }

    /// Whether an event with this subsystem and sysname may match the line.
    pub fn admits(&self, subsystem: Option<&str>, sysname: &str) -> bool {
        match self {
            Guard::None => true,
            Guard::Subsystem(values) => subsystem.is_some_and(|s| values.iter().any(|v| **v == *s)),
            Guard::KernelFirstByte(bytes) => sysname
                .as_bytes()
                .first()
                .is_some_and(|b| bytes.contains(b)),
        }
    }
}

/// What kind of effects a line can have; udev uses the same summary to skip whole lines (a
/// line that only sets permissions is pointless for a device without a node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineFlags {
    /// Assigns `NAME`.
    pub has_name: bool,
    /// Assigns `SYMLINK`, `OWNER`, `GROUP` or `MODE`.
    pub has_devlink: bool,
    /// Has `OPTIONS+="static_node=…"`.
    pub has_static_node: bool,
    /// Has a `GOTO`.
    pub has_goto: bool,
    /// Has any other assignment or a `PROGRAM`/`IMPORT`.
    pub updates_something: bool,
}

/// A rule file that was read, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFile {
    /// The path as given or found.
    pub path: Arc<str>,
    /// Index of its first line in [`Rules::lines`].
    pub first_line: u32,
}

/// A complete, compiled rule set. Cheap to share between threads (`Arc<Rules>`) and swapped as
/// a whole on `reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Every file read, in evaluation order.
    pub files: Vec<RuleFile>,
    /// Every kept line of every file, in evaluation order.
    pub lines: Vec<Line>,
}

impl Rules {
    /// Where a line came from, as `file:line`.
    pub fn location(&self, line: &Line) -> String {
        let file = self.files.get(line.file as usize).map_or("?", |f| &*f.path);
        format!("{file}:{}", line.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_matches_are_exactly_the_parent_ranks() {
        let p = || Pattern::new("x");
        let name = || AttrName::Plain("a".into());
        let keys = [
            Key::Action(p()),
            Key::Subsystem(p()),
            Key::Kernel(p()),
            Key::Driver(p()),
            Key::Attr(name(), p()),
            Key::ParentKernel(p()),
            Key::ParentSubsystem(p()),
            Key::ParentDriver(p()),
            Key::ParentAttr(name(), p()),
            Key::ParentTag(p()),
            Key::Result(p()),
            Key::DbPersist,
        ];
        for key in keys {
            assert_eq!(
                key.is_parent_match(),
                matches!(key.match_rank(), Some(12..=16)),
                "{key:?}"
            );
        }
    }
}
