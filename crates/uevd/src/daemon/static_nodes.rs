//! Static nodes: the owner, group, mode and tags of `OPTIONS+="static_node=NAME"` lines,
//! applied to nodes that exist before their device does.
//!
//! `kmod static-nodes` (or devtmpfs) makes `/dev/fuse`, `/dev/kvm`, `/dev/snd/seq` … before
//! their modules are loaded, and no uevent ever names them, so udev applies these lines when
//! it reads its rules; uevd does so whenever a rule set is put in place (at start and on
//! `reload`). Tags are exported as links `RUN/static_node-tags/TAG/NAME` (NAME with `/` and
//! `.` escaped) to the node, as udev does under `/run/udev/static_node-tags/`, so that a
//! tag reader (logind's `uaccess`) sees nodes no device record holds; links no rule asks for
//! any more are removed.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use uevd_rules::static_nodes::StaticNode;

use super::nodes::{DevFs, NodePath, Nodes, StaticOutcome};

/// What applying a rule set's static nodes did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Nodes whose owner, group or mode was set.
    pub changed: usize,
    /// Nodes that already were as asked.
    pub unchanged: usize,
    /// Named nodes that do not exist (nothing to do).
    pub missing: usize,
    /// Tag links in place afterwards (0 if updating them failed).
    pub tag_links: usize,
    /// One message per problem, naming the rule line and the node.
    pub errors: Vec<String>,
}

/// The directory under `--run` that holds the tag links.
pub fn tags_dir(run: &Path) -> PathBuf {
    run.join("static_node-tags")
}

/// Applies `wanted` to the nodes under `dev_dir` (through `nodes`) and makes the tag links
/// under `tags_dir` exactly those of the nodes that exist. `dev_dir` is only the links'
/// target prefix: it should be absolute.
pub fn apply<F: DevFs>(
    nodes: &Nodes<F>,
    dev_dir: &Path,
    tags_dir: &Path,
    wanted: &[StaticNode],
) -> Applied {
    let mut applied = Applied::default();
    // (tag, escaped name) → link target
    let mut links: BTreeSet<(String, String, PathBuf)> = BTreeSet::new();
    for node in wanted.iter().filter(|n| n.has_effect()) {
        let culprit = || format!("{}: static_node={}", node.location, node.name);
        let path = match NodePath::new(&node.name) {
            Ok(path) => path,
            Err(reason) => {
                applied
                    .errors
                    .push(format!("{}: refusing the name: {reason}", culprit()));
                continue;
            }
        };
        match nodes.apply_static(&path, node.uid, node.gid, node.mode_to_apply()) {
            Ok(StaticOutcome::Missing) => {
                applied.missing += 1;
                continue;
            }
            Ok(StaticOutcome::NotANode) => {
                applied.errors.push(format!(
                    "{}: {} is not a device node, leaving it alone",
                    culprit(),
                    path
                ));
                continue;
            }
            Ok(StaticOutcome::Unchanged) => applied.unchanged += 1,
            Ok(StaticOutcome::Changed) => applied.changed += 1,
            Err(e) => {
                applied.errors.push(format!("{}: {e}", culprit()));
                continue;
            }
        }
        for tag in &node.tags {
            if valid_tag(tag) {
                links.insert((
                    tag.to_string(),
                    escape(path.as_str()),
                    dev_dir.join(path.as_str()),
                ));
            } else {
                applied
                    .errors
                    .push(format!("{}: invalid tag name {tag:?}", culprit()));
            }
        }
    }
    match sync_links(tags_dir, &links) {
        Ok(()) => applied.tag_links = links.len(),
        Err(e) => applied.errors.push(format!(
            "{}: cannot update the tag links: {e}",
            tags_dir.display()
        )),
    }
    applied
}

/// Tags as the rule engine accepts them: letters, digits, `-` and `_` (so one path component).
fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A node name as one file name: `/`, `.` and `\` as `\xNN`, as udev names these links.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '/' | '.' | '\\' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Makes `dir/TAG/NAME` exactly the links in `want`: creates or retargets the wanted ones,
/// removes the others and the tag directories left empty.
fn sync_links(dir: &Path, want: &BTreeSet<(String, String, PathBuf)>) -> io::Result<()> {
    for (tag, name, target) in want {
        let tag_dir = dir.join(tag);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&tag_dir)?;
        let link = tag_dir.join(name);
        match fs::read_link(&link) {
            Ok(current) if current == *target => continue,
            Ok(_) => fs::remove_file(&link)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Not a symlink (EINVAL): replace whatever it is.
            Err(_) => fs::remove_file(&link)?,
        }
        std::os::unix::fs::symlink(target, &link)?;
    }
    let tag_dirs = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for tag_dir in tag_dirs {
        let tag_dir = tag_dir?;
        let tag = tag_dir.file_name().to_string_lossy().into_owned();
        if !tag_dir.file_type()?.is_dir() {
            fs::remove_file(tag_dir.path())?;
            continue;
        }
        for entry in fs::read_dir(tag_dir.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kept = want.iter().any(|(t, n, _)| *t == tag && *n == name);
            if !kept {
                fs::remove_file(entry.path())?;
            }
        }
        // Fails (and is left) while not empty.
        let _ = fs::remove_dir(tag_dir.path());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::nodes::{DirFs, NodeKind, NodeSpec};
    use std::os::unix::fs::PermissionsExt;

    fn node(name: &str, mode: Option<u32>, gid: Option<u32>, tags: &[&str]) -> StaticNode {
        StaticNode {
            name: name.into(),
            uid: None,
            gid,
            mode,
            tags: tags.iter().map(|t| Box::from(*t)).collect(),
            location: "t.rules:1".into(),
        }
    }

    /// A `--dev` with real nodes (`mknod` needs root, as CI is) and a `--run`.
    fn setup(names: &[&str]) -> (tempfile::TempDir, tempfile::TempDir, Nodes<DirFs>) {
        let (dev, run) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let nodes = Nodes::new(DirFs::open(dev.path()).unwrap());
        for (minor, name) in names.iter().enumerate() {
            nodes
                .ensure_node(&NodeSpec {
                    path: NodePath::new(name).unwrap(),
                    kind: NodeKind::Char,
                    devnum: (10, 200 + minor as u32),
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                })
                .unwrap();
        }
        (dev, run, nodes)
    }

    fn stat(path: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path).unwrap();
        (m.mode() & 0o7777, m.gid())
    }

    #[test]
    fn existing_nodes_get_their_permissions_and_missing_ones_are_not_made() {
        let (dev, run, nodes) = setup(&["fuse", "snd/seq", "kvm"]);
        let wanted = [
            node("fuse", Some(0o666), None, &[]),
            node("snd/seq", None, None, &["uaccess"]),
            node("kvm", None, Some(36), &[]),
            node("vhost-net", Some(0o660), None, &[]),
            node("bare", None, None, &[]),
        ];
        let applied = apply(&nodes, dev.path(), &tags_dir(run.path()), &wanted);
        assert_eq!(applied.errors, Vec::<String>::new());
        assert_eq!(
            (
                applied.changed,
                applied.unchanged,
                applied.missing,
                applied.tag_links
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(stat(&dev.path().join("fuse")), (0o666, 0));
        assert_eq!(stat(&dev.path().join("kvm")), (0o660, 36));
        assert_eq!(stat(&dev.path().join("snd/seq")), (0o600, 0));
        assert!(!dev.path().join("vhost-net").exists());
        let link = tags_dir(run.path()).join("uaccess/snd\\x2fseq");
        assert_eq!(fs::read_link(&link).unwrap(), dev.path().join("snd/seq"));

        // Again: nothing to change. Then without the tag: its link and directory go.
        let again = apply(&nodes, dev.path(), &tags_dir(run.path()), &wanted);
        assert_eq!((again.changed, again.unchanged), (0, 3));
        let applied = apply(&nodes, dev.path(), &tags_dir(run.path()), &wanted[..1]);
        assert_eq!(applied.tag_links, 0);
        assert!(!tags_dir(run.path()).join("uaccess").exists());
    }

    #[test]
    fn hostile_names_symlinks_and_files_are_refused_by_name() {
        let (dev, run, nodes) = setup(&[]);
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "x").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink(&victim, dev.path().join("kvm")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dev.path().join("snd")).unwrap();
        fs::write(dev.path().join("fuse"), "").unwrap();
        fs::set_permissions(dev.path().join("fuse"), fs::Permissions::from_mode(0o640)).unwrap();
        let wanted = [
            node("../victim", Some(0o666), None, &[]),
            node("kvm", Some(0o666), None, &[]),
            node("snd/victim", Some(0o666), None, &[]),
            node("fuse", Some(0o666), None, &["bad/tag"]),
        ];
        let applied = apply(&nodes, dev.path(), &tags_dir(run.path()), &wanted);
        assert_eq!(applied.errors.len(), 4, "{:?}", applied.errors);
        for (error, name) in applied
            .errors
            .iter()
            .zip(["../victim", "kvm", "snd/victim", "fuse"])
        {
            assert!(
                error.starts_with(&format!("t.rules:1: static_node={name}: ")),
                "{error}"
            );
        }
        assert_eq!(stat(&victim).0, 0o640);
        assert_eq!(stat(&dev.path().join("fuse")).0, 0o640);
        assert_eq!(applied.changed, 0);
    }

    #[test]
    fn escaping_matches_udev() {
        assert_eq!(escape("snd/seq"), "snd\\x2fseq");
        assert_eq!(escape("a.b\\c"), "a\\x2eb\\x5cc");
        assert!(valid_tag("seat_1-x") && !valid_tag("a/b") && !valid_tag(""));
    }
}
