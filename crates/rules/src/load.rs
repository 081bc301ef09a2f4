//! Finding and reading rule files: udev's directory list, override order and masking.
//!
//! Every `*.rules` file of every directory takes part, in lexical order of the file name. A
//! name found in an earlier directory hides the same name in later ones (so `/etc` overrides
//! `/usr/lib`), and a file that is a symlink to `/dev/null` (or empty) masks the name
//! everywhere. Paths given explicitly may be files or directories and follow the same rules.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ast::Rules;
use crate::parse::{parse_into, Diagnostic, NameResolver, Severity};

/// udev's search path, highest priority first.
pub const DEFAULT_DIRS: [&str; 4] = [
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
];

/// The rules built into uevd, used when no rule directory has any rules: permissions for the
/// usual device classes, as udev's `50-udev-default.rules` sets them.
pub const BUILTIN_RULES: &str = include_str!("default.rules");

/// The name [`BUILTIN_RULES`] is reported under.
pub const BUILTIN_NAME: &str = "<builtin>/50-uevd-default.rules";

/// A rule set read from disk, with everything that went wrong.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The compiled rules (good lines only).
    pub rules: Rules,
    /// The files read, in evaluation order.
    pub files: Vec<PathBuf>,
    /// Problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// How the sources looked just before they were read ([`Stamp::changed`]).
    pub stamp: Stamp,
}

/// How a rule source looked: every rule file under its directories (masked ones and those
/// another directory overrides included) with its identity, size and change times, and the
/// files named directly — so that an edit in place, a new, removed, masked or replaced file
/// all show. udevd 252 compares the same to reload by itself when rule files change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    sources: Vec<PathBuf>,
    files: Vec<(PathBuf, Option<FileStamp>)>,
}

/// What identifies one version of a file (`None` in [`Stamp`]: it does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// The link itself, for a symlink (retargeting it changes nothing of its target).
    link: Option<(u64, (i64, i64))>,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let own = fs::symlink_metadata(path).ok()?;
        // A dangling link is stamped as the link alone.
        let target = fs::metadata(path).unwrap_or_else(|_| own.clone());
        Some(FileStamp {
            dev: target.dev(),
            ino: target.ino(),
            size: target.size(),
            mtime: (target.mtime(), target.mtime_nsec()),
            ctime: (target.ctime(), target.ctime_nsec()),
            link: own
                .file_type()
                .is_symlink()
                .then(|| (own.ino(), (own.ctime(), own.ctime_nsec()))),
        })
    }
}

impl Stamp {
    /// Looks at `sources` (rule files and directories) as they are now.
    pub fn take(sources: &[PathBuf]) -> Stamp {
        let mut files = Vec::new();
        for source in sources {
            match rule_files_in(source) {
                Ok(names) => files.extend(names.into_iter().map(|p| {
                    let stamp = FileStamp::of(&p);
                    (p, stamp)
                })),
                // A file, or nothing (yet): stamped as itself.
                Err(_) => files.push((source.clone(), FileStamp::of(source))),
            }
        }
        Stamp {
            sources: sources.to_vec(),
            files,
        }
    }

    /// Whether the sources look different now than when this stamp was taken. A stamp of no
    /// sources (the built-in rules) never changes.
    pub fn changed(&self) -> bool {
        !self.sources.is_empty() && Stamp::take(&self.sources) != *self
    }
}

impl Loaded {
    /// True if any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// The `*.rules` entries of directory `dir`, in lexical order.
fn rule_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    names.sort();
    Ok(names)
}

/// Lists the rule files that `paths` (files or directories) contribute, after overrides and
/// masking. Unreadable directories are reported, missing ones skipped silently (udev's
/// default list names directories that usually do not all exist).
pub fn rule_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut by_name: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
    let mut diagnostics = Vec::new();
    let consider = |path: PathBuf, by_name: &mut BTreeMap<String, Option<PathBuf>>| {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return;
        };
        if by_name.contains_key(&name) {
            return;
        }
        let masked = fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null"))
            || fs::metadata(&path).is_ok_and(|m| m.len() == 0 && m.is_file());
        by_name.insert(name, (!masked).then_some(path));
    };
    for path in paths {
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => match rule_files_in(path) {
                Ok(names) => {
                    for p in names {
                        consider(p, &mut by_name);
                    }
                }
                Err(e) => diagnostics.push(io_diagnostic(path, &e)),
            },
            Ok(_) => consider(path.clone(), &mut by_name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => diagnostics.push(io_diagnostic(path, &e)),
        }
    }
    (by_name.into_values().flatten().collect(), diagnostics)
}

/// The largest rule file or mdev.conf read (distributions' biggest are some 100 KiB).
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Reads a rule file or mdev.conf: a regular file (through symlinks) of at most
/// [`MAX_CONFIG_FILE`] bytes. A FIFO or device there would block the reader (the daemon's
/// event loop, on `reload`) or never end; it is refused without waiting on it.
fn read_config(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000) // O_NONBLOCK
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} bytes, more than the {MAX_CONFIG_FILE} read", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops at the limit too.
    file.take(MAX_CONFIG_FILE).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn io_diagnostic(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic {
        file: Arc::from(path.to_string_lossy().as_ref()),
        line: 0,
        column: 0,
        severity: Severity::Error,
        message: format!("cannot read: {e}"),
    }
}

/// Reads and compiles the rules found under `paths`.
pub fn load(paths: &[PathBuf], resolver: &dyn NameResolver) -> Loaded {
    // Taken first: a change made while the files are read shows as a change later.
    let stamp = Stamp::take(paths);
    let (files, mut diagnostics) = rule_files(paths);
    let mut rules = Rules::default();
    for file in &files {
        match read_config(file) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                diagnostics.extend(parse_into(
                    &mut rules,
                    &file.to_string_lossy(),
                    &text,
                    resolver,
                ));
            }
            Err(e) => diagnostics.push(io_diagnostic(file, &e)),
        }
    }
    Loaded {
        rules,
        files,
        diagnostics,
        stamp,
    }
}

/// The built-in default rules.
pub fn load_builtin(resolver: &dyn NameResolver) -> Loaded {
    let mut rules = Rules::default();
    let diagnostics = parse_into(&mut rules, BUILTIN_NAME, BUILTIN_RULES, resolver);
    Loaded {
        rules,
        files: vec![PathBuf::from(BUILTIN_NAME)],
        diagnostics,
        stamp: Stamp::default(),
    }
}

/// Reads an mdev.conf and compiles it to rules. A missing file is an error; a bad line drops
/// that line only.
pub fn load_mdev(path: &Path, resolver: &dyn NameResolver) -> Loaded {
    let mut loaded = Loaded {
        stamp: Stamp::take(&[path.to_path_buf()]),
        ..Loaded::default()
    };
    let text = match read_config(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            loaded.diagnostics.push(io_diagnostic(path, &e));
            return loaded;
        }
    };
    let name = path.to_string_lossy();
    let (conf, errors) = crate::mdev::parse(&text, &name);
    for e in errors {
        loaded.diagnostics.push(Diagnostic {
            file: Arc::from(e.file.as_str()),
            line: e.line,
            column: e.column,
            severity: Severity::Error,
            message: e.kind.to_string(),
        });
    }
    loaded.diagnostics.extend(crate::mdev::compile_into(
        &mut loaded.rules,
        &conf,
        &name,
        resolver,
    ));
    loaded.files.push(path.to_path_buf());
    loaded
}

/// What a daemon started without `--rules` uses: udev's directories if they hold any rules,
/// otherwise the built-in set.
pub fn load_default(resolver: &dyn NameResolver) -> Loaded {
    let dirs: Vec<PathBuf> = DEFAULT_DIRS.iter().map(PathBuf::from).collect();
    let loaded = load(&dirs, resolver);
    if loaded.files.is_empty() {
        // Rules put into the directories later replace the built-in ones.
        Loaded {
            stamp: loaded.stamp,
            ..load_builtin(resolver)
        }
    } else {
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoNames;
    impl NameResolver for NoNames {
        fn user(&self, name: &str) -> Option<u32> {
            (name == "root").then_some(0)
        }
        fn group(&self, _: &str) -> Option<u32> {
            Some(5)
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).expect("write rule file");
    }

    #[test]
    fn the_stamp_changes_with_any_edit_new_removed_masked_or_replaced_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("rules.d");
        let file = tmp.path().join("extra.rules");
        fs::create_dir_all(&dir).expect("mkdir");
        write(&dir, "10-a.rules", "ENV{A}=\"1\"\n");
        write(&dir, "README", "x");
        let sources = [dir.clone(), file.clone()];
        let fresh = || Stamp::take(&sources);
        let before = fresh();
        assert!(!before.changed());
        assert_eq!(before, fresh());

        // Not a rules file: no change.
        write(&dir, "README", "changed");
        assert!(!before.changed());

        let steps: [(&str, &dyn Fn()); 5] = [
            ("an edit in place", &|| {
                write(&dir, "10-a.rules", "ENV{A}=\"22\"\n")
            }),
            ("a new file", &|| {
                write(&dir, "20-b.rules", "ENV{B}=\"1\"\n")
            }),
            ("a named file appearing", &|| {
                fs::write(&file, "ENV{C}=\"1\"\n").expect("write")
            }),
            ("a mask", &|| {
                fs::remove_file(dir.join("20-b.rules")).expect("rm");
                std::os::unix::fs::symlink("/dev/null", dir.join("20-b.rules")).expect("ln");
            }),
            ("a removed file", &|| {
                fs::remove_file(dir.join("10-a.rules")).expect("rm")
            }),
        ];
        for (what, step) in steps {
            let stamp = fresh();
            step();
            assert!(stamp.changed(), "{what} went unnoticed");
            assert!(!fresh().changed(), "after {what}");
        }
        assert!(
            !Stamp::default().changed(),
            "the built-in rules never change"
        );
    }

    #[test]
    fn override_order_masking_and_lexical_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let etc = tmp.path().join("etc");
        let lib = tmp.path().join("lib");
        fs::create_dir_all(&etc).expect("mkdir");
        fs::create_dir_all(&lib).expect("mkdir");
        write(&lib, "10-a.rules", "ENV{FROM}=\"lib-a\"\n");
        write(&lib, "20-b.rules", "ENV{FROM}=\"lib-b\"\n");
        write(&lib, "30-c.rules", "ENV{FROM}=\"lib-c\"\n");
        write(&lib, "README", "not a rules file\n");
        write(&etc, "20-b.rules", "ENV{FROM}=\"etc-b\"\n");
        write(&etc, "15-own.rules", "ENV{FROM}=\"etc-own\"\n");
        std::os::unix::fs::symlink("/dev/null", etc.join("30-c.rules")).expect("symlink");
        let loaded = load(
            &[etc.clone(), tmp.path().join("missing"), lib.clone()],
            &NoNames,
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let names: Vec<String> = loaded
            .files
            .iter()
            .map(|p| {
                p.strip_prefix(tmp.path())
                    .expect("under tmp")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["lib/10-a.rules", "etc/15-own.rules", "etc/20-b.rules"]
        );
        assert_eq!(loaded.rules.lines.len(), 3);
    }

    #[test]
    fn explicit_files_and_errors_keep_the_rest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(
            tmp.path(),
            "a.rules",
            "KERNEL==\"x\", NOPE=\"1\"\nKERNEL==\"y\", ENV{A}=\"1\"\n",
        );
        let loaded = load(&[tmp.path().join("a.rules")], &NoNames);
        assert!(loaded.has_errors());
        assert_eq!(loaded.rules.lines.len(), 1);
        assert_eq!(
            loaded.diagnostics[0].to_string(),
            format!(
                "{}:1:14: error: invalid key 'NOPE'",
                tmp.path().join("a.rules").display()
            )
        );
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_waiting_and_the_rest_loads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(tmp.path(), "10-good.rules", "KERNEL==\"y\", ENV{A}=\"1\"\n");
        let fifo = tmp.path().join("20-fifo.rules");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo").success());
        std::os::unix::fs::symlink("/dev/zero", tmp.path().join("30-zero.rules")).expect("link");
        // Would block forever (the FIFO) or read without end (/dev/zero) before.
        let loaded = load(&[tmp.path().to_owned()], &NoNames);
        assert_eq!(loaded.rules.lines.len(), 1);
        let messages: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages
                .iter()
                .all(|m| m.ends_with("error: cannot read: not a regular file")),
            "{messages:?}"
        );
        assert!(load_mdev(&fifo, &NoNames).has_errors());
    }

    #[test]
    fn builtin_rules_parse_cleanly() {
        struct System;
        impl NameResolver for System {
            fn user(&self, name: &str) -> Option<u32> {
                (name == "root").then_some(0)
            }
            fn group(&self, _: &str) -> Option<u32> {
                Some(100)
            }
        }
        let loaded = load_builtin(&System);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        assert!(loaded.rules.lines.len() > 20);
    }
}
