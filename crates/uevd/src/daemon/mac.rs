//! `SECLABEL{module}="label"`: security labels on device nodes, for SELinux and SMACK.
//!
//! As udev does, a label is written only when its security module is active (a label no
//! module reads would mean nothing), when a device is added, as the extended attribute that
//! module reads: `security.selinux` (the context with a trailing NUL, as libselinux writes
//! it) or `security.SMACK64`. Which modules are active is read from the `--sysfs` tree
//! (`fs/selinux`, `fs/smackfs`: where their filesystems are mounted), so that a test can
//! stage it. udev's default relabelling of nodes without `SECLABEL` (from the SELinux
//! policy's file contexts) is not done.

use std::path::Path;

use super::nodes::{DevFs, NodePath};

/// The security modules whose labels can be set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mac {
    /// SELinux is active.
    pub selinux: bool,
    /// SMACK is active.
    pub smack: bool,
}

impl Mac {
    /// The modules active on the system whose sysfs is mounted at `sysfs`.
    pub fn detect(sysfs: &Path) -> Mac {
        Mac {
            selinux: sysfs.join("fs/selinux").is_dir(),
            smack: sysfs.join("fs/smackfs").is_dir(),
        }
    }

    /// Labels the node at `path` with `labels` (`(module, label)`, in rule order: a later
    /// label of the same module wins). Returns one message per label that could not be set
    /// or names an unknown module.
    pub fn apply(
        &self,
        fs: &impl DevFs,
        path: &NodePath,
        labels: &[(String, String)],
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for (module, label) in labels {
            let (active, attribute, value) = match module.as_str() {
                "selinux" => {
                    let mut value = label.as_bytes().to_vec();
                    value.push(0);
                    (self.selinux, "security.selinux", value)
                }
                "smack" => (self.smack, "security.SMACK64", label.as_bytes().to_vec()),
                other => {
                    errors.push(format!(
                        "SECLABEL{{{other}}}: unknown security module, ignoring"
                    ));
                    continue;
                }
            };
            if !active {
                continue;
            }
            if let Err(e) = fs.set_node_xattr(path.as_str(), attribute, &value) {
                errors.push(format!(
                    "SECLABEL{{{module}}}: cannot label {path} {label:?}: {e}"
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::nodes::{DirFs, NodeKind, NodeSpec, Nodes};

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    #[test]
    fn labels_of_active_modules_are_set_on_nodes_only() {
        let dev = tempfile::tempdir().unwrap();
        let nodes = Nodes::new(DirFs::open(dev.path()).unwrap());
        let make = |name: &str, devnum: (u32, u32)| {
            let path = NodePath::new(name).unwrap();
            nodes
                .ensure_node(&NodeSpec {
                    path: path.clone(),
                    kind: NodeKind::Char,
                    devnum,
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                })
                .unwrap();
            path
        };
        let node = make("input/event0", (13, 64));
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(m, l)| (m.to_string(), l.to_string()))
                .collect()
        };
        let both = Mac {
            selinux: true,
            smack: true,
        };
        let errors = both.apply(
            nodes.fs(),
            &node,
            &labels(&[
                ("selinux", "old_t"),
                ("selinux", "system_u:object_r:event_device_t:s0"),
                ("smack", "_"),
                ("apparmor", "x"),
            ]),
        );
        assert_eq!(
            errors,
            ["SECLABEL{apparmor}: unknown security module, ignoring"]
        );
        let path = dev.path().join("input/event0");
        assert_eq!(
            xattr(&path, "security.selinux").as_deref(),
            Some(&b"system_u:object_r:event_device_t:s0\0"[..])
        );
        assert_eq!(xattr(&path, "security.SMACK64").as_deref(), Some(&b"_"[..]));

        // An inactive module: nothing written, nothing reported.
        let other = make("null", (1, 3));
        let none = Mac::default();
        assert!(none
            .apply(nodes.fs(), &other, &labels(&[("selinux", "x_t")]))
            .is_empty());
        assert_eq!(xattr(&dev.path().join("null"), "security.selinux"), None);

        // A symlink or a file in the node's place is not labelled (nor what it points to).
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dev.path().join("link")).unwrap();
        std::fs::write(dev.path().join("file"), "").unwrap();
        for name in ["link", "file"] {
            let errors = both.apply(
                nodes.fs(),
                &NodePath::new(name).unwrap(),
                &labels(&[("selinux", "x_t")]),
            );
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        }
        assert_eq!(xattr(outside.path(), "security.selinux"), None);
    }

    #[test]
    fn active_modules_are_read_from_the_sysfs_tree() {
        let sys = tempfile::tempdir().unwrap();
        assert_eq!(Mac::detect(sys.path()), Mac::default());
        std::fs::create_dir_all(sys.path().join("fs/selinux")).unwrap();
        assert_eq!(
            Mac::detect(sys.path()),
            Mac {
                selinux: true,
                smack: false
            }
        );
    }
}
