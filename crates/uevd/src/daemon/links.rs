//! Symlink arbitration: when several devices claim one `/dev` link, the highest
//! `link_priority` wins, and the link moves to the next claimant when the winner goes away.
//!
//! Claims live on disk, like udev's `/run/udev/links/`: `RUN/links/<escaped link>/<device id>`
//! holds `priority target`. Any worker can read every claim, and a restart finds them again.
//! One lock serialises claim changes so that two unrelated devices processed in parallel
//! cannot both believe they won.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::nodes::NodePath;

/// One device's claim on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claiming device's database id.
    pub id: String,
    /// Its `link_priority`.
    pub priority: i32,
    /// Its node, which the link should point to if it wins.
    pub target: String,
}

/// The claims directory.
pub struct LinkClaims {
    dir: PathBuf,
    lock: Mutex<()>,
}

/// Escapes a link path into one directory name (`/` and `\` as `\x2f`/`\x5c`, as udev does).
pub fn escape(link: &str) -> String {
    let mut out = String::with_capacity(link.len() + 8);
    for c in link.chars() {
        match c {
            '/' => out.push_str("\\x2f"),
            '\\' => out.push_str("\\x5c"),
            c => out.push(c),
        }
    }
    out
}

/// The longest claim directory name kept as the escaped link itself (file names stop at 255).
const MAX_PLAIN_NAME: usize = 200;

/// The directory name of `link`'s claims: the escaped link, or for a long link its first
/// bytes and a hash of the whole (as udev does), so that any link a device can have can be
/// claimed.
fn claim_dir_name(link: &str) -> String {
    let escaped = escape(link);
    if escaped.len() <= MAX_PLAIN_NAME {
        return escaped;
    }
    let hash = super::hash::fnv1a(link.as_bytes());
    let mut cut = MAX_PLAIN_NAME - 20;
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash:016x}", &escaped[..cut])
}

impl LinkClaims {
    /// Uses (creating) `RUN/links`. The daemon runs with umask 0, so every directory and
    /// file here gets an explicit mode: only root may write claims (a planted claim would
    /// steal a `/dev` link). A tree an older version left writable for all is tightened.
    pub fn open(run: &Path) -> io::Result<LinkClaims> {
        let dir = run.join("links");
        make_dir(&dir)?;
        for d in
            std::iter::once(Ok(dir.clone())).chain(fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())))
        {
            let d = d?;
            let meta = fs::symlink_metadata(&d)?;
            if meta.is_dir() && meta.permissions().mode() & 0o022 != 0 {
                fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(LinkClaims {
            dir,
            lock: Mutex::new(()),
        })
    }

    fn link_dir(&self, link: &NodePath) -> PathBuf {
        self.dir.join(claim_dir_name(link.as_str()))
    }

    /// Records `claim` on `link` and returns the winning claim after it.
    pub fn claim(&self, link: &NodePath, claim: &Claim) -> io::Result<Claim> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.link_dir(link);
        make_dir(&dir)?;
        let tmp = dir.join(format!(".tmp.{}", claim.id));
        // Whatever is at the temporary name (a crash's leftover) is replaced, never followed.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?
            .write_all(format!("{} {}\n", claim.priority, claim.target).as_bytes())?;
        fs::rename(&tmp, dir.join(&claim.id))?;
        Ok(best(&dir, Some(&claim.id))?.unwrap_or_else(|| claim.clone()))
    }

    /// Drops device `id`'s claim on `link`; returns the claim that wins now, if any is left.
    pub fn release(&self, link: &NodePath, id: &str) -> io::Result<Option<Claim>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.link_dir(link);
        match fs::remove_file(dir.join(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let winner = best(&dir, None)?;
        if winner.is_none() {
            // Last claim gone: drop the empty directory (a racing claim recreates it).
            let _ = fs::remove_dir(&dir);
        }
        Ok(winner)
    }
}

/// Makes directory `dir` (mode 0755) unless it is there.
fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        done => done,
    }
}

/// The highest-priority claim in `dir`; ties go to `prefer` (the device being processed, as in
/// udev), then to the smallest id so the choice is stable.
fn best(dir: &Path, prefer: Option<&str>) -> io::Result<Option<Claim>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut winner: Option<Claim> = None;
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if id.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some((priority, target)) = text.trim_end().split_once(' ') else {
            continue;
        };
        let Ok(priority) = priority.parse::<i32>() else {
            continue;
        };
        let candidate = Claim {
            id,
            priority,
            target: target.to_owned(),
        };
        let better = match &winner {
            None => true,
            Some(w) => {
                (
                    candidate.priority,
                    Some(candidate.id.as_str()) == prefer,
                    std::cmp::Reverse(&candidate.id),
                ) > (
                    w.priority,
                    Some(w.id.as_str()) == prefer,
                    std::cmp::Reverse(&w.id),
                )
            }
        };
        if better {
            winner = Some(candidate);
        }
    }
    Ok(winner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, priority: i32, target: &str) -> Claim {
        Claim {
            id: id.into(),
            priority,
            target: target.into(),
        }
    }

    #[test]
    fn highest_priority_wins_and_the_link_moves_on_release() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let claims = LinkClaims::open(tmp.path()).expect("open");
        let link = NodePath::new("disk/by-label/root").expect("path");
        assert_eq!(
            claims
                .claim(&link, &claim("b8:1", 0, "sda1"))
                .expect("claim")
                .id,
            "b8:1"
        );
        // A higher priority takes over.
        assert_eq!(
            claims
                .claim(&link, &claim("b8:17", 10, "sdb1"))
                .expect("claim")
                .id,
            "b8:17"
        );
        // A lower one does not.
        assert_eq!(
            claims
                .claim(&link, &claim("b8:33", -5, "sdc1"))
                .expect("claim")
                .id,
            "b8:17"
        );
        // The winner leaves: the next best gets the link.
        assert_eq!(
            claims
                .release(&link, "b8:17")
                .expect("release")
                .map(|c| c.id),
            Some("b8:1".into())
        );
        assert_eq!(
            claims
                .release(&link, "b8:1")
                .expect("release")
                .map(|c| c.id),
            Some("b8:33".into())
        );
        assert_eq!(claims.release(&link, "b8:33").expect("release"), None);
        assert!(!tmp
            .path()
            .join("links")
            .join(escape("disk/by-label/root"))
            .exists());
    }

    #[test]
    fn ties_go_to_the_current_device() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let claims = LinkClaims::open(tmp.path()).expect("open");
        let link = NodePath::new("cdrom").expect("path");
        claims
            .claim(&link, &claim("b11:0", 0, "sr0"))
            .expect("claim");
        assert_eq!(
            claims
                .claim(&link, &claim("b11:1", 0, "sr1"))
                .expect("claim")
                .target,
            "sr1"
        );
        assert_eq!(escape("a/b\\c"), "a\\x2fb\\x5cc");
    }

    #[test]
    fn claims_are_roots_alone_and_a_planted_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // An older version left the tree writable for all.
        let old = tmp.path().join("links/disk\\x2fshared");
        fs::create_dir_all(&old).expect("mkdir");
        for d in [tmp.path().join("links"), old.clone()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        let victim = tmp.path().join("victim");
        fs::write(&victim, "precious\n").expect("victim");
        std::os::unix::fs::symlink(&victim, old.join(".tmp.b8:1")).expect("plant");
        let claims = LinkClaims::open(tmp.path()).expect("open");
        let link = NodePath::new("disk/shared").expect("path");
        claims
            .claim(&link, &claim("b8:1", 0, "sda1"))
            .expect("claim");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious\n");
        let mode = |p: &Path| fs::symlink_metadata(p).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode(&tmp.path().join("links")), 0o755);
        assert_eq!(mode(&old), 0o755);
        assert_eq!(mode(&old.join("b8:1")), 0o644);
        let fresh = NodePath::new("disk/other").expect("path");
        claims
            .claim(&fresh, &claim("b8:1", 0, "sda1"))
            .expect("claim");
        assert_eq!(mode(&tmp.path().join("links/disk\\x2fother")), 0o755);
    }

    #[test]
    fn a_link_longer_than_a_file_name_can_be_claimed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let claims = LinkClaims::open(tmp.path()).expect("open");
        let long = format!("{}sda", "twenty-chars-abcdefg/".repeat(12));
        let link = NodePath::new(&long).expect("path");
        assert!(escape(&long).len() > 255);
        assert_eq!(
            claims
                .claim(&link, &claim("b8:0", 0, "sda"))
                .expect("claim")
                .id,
            "b8:0"
        );
        let other = NodePath::new(&long.replace("/sda", "/sdb")).expect("path");
        assert_ne!(
            claim_dir_name(link.as_str()),
            claim_dir_name(other.as_str())
        );
        assert!(claim_dir_name(link.as_str()).len() <= MAX_PLAIN_NAME);
        assert_eq!(claims.release(&link, "b8:0").expect("release"), None);
    }
}
