//! Symlink arbitration: when several devices claim one `/dev` link, the highest
//! `link_priority` wins, and the link moves to the next claimant when the winner goes away.
//!
//! Claims live on disk, like udev's `/run/udev/links/`: `RUN/links/<escaped link>/<device id>`
//! holds `priority target`. Any worker can read every claim, and a restart finds them again.
//! One lock serialises claim changes so that two unrelated devices processed in parallel
//! cannot both believe they won.

use std::fs;
use std::io;
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

impl LinkClaims {
    /// Uses (creating) `RUN/links`.
    pub fn open(run: &Path) -> io::Result<LinkClaims> {
        let dir = run.join("links");
        fs::create_dir_all(&dir)?;
        Ok(LinkClaims {
            dir,
            lock: Mutex::new(()),
        })
    }

    fn link_dir(&self, link: &NodePath) -> PathBuf {
        self.dir.join(escape(link.as_str()))
    }

    /// Records `claim` on `link` and returns the winning claim after it.
    pub fn claim(&self, link: &NodePath, claim: &Claim) -> io::Result<Claim> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.link_dir(link);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".tmp.{}", claim.id));
        fs::write(&tmp, format!("{} {}\n", claim.priority, claim.target))?;
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
        if id.starts_with('.') {
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
}
