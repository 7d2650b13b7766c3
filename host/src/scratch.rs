//! Scratch directories that a crash does not leave behind for ever: each is
//! locked (`flock` on the directory) while its owner lives, and the next
//! owner of the same parent removes the unlocked ones of its prefix (a
//! rootfs build killed by SIGKILL leaves a half-bootstrapped root of
//! hundreds of MB).

use rustix::fs::FlockOperation;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A scratch directory, removed on drop, locked while it lives.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl ScratchDir {
    /// A new directory `<parent>/<prefix>XXXXXX`, locked.
    pub fn new(parent: &Path, prefix: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        let lock = File::open(dir.path())?;
        rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
        Ok(Self { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A directory younger than this may be one whose owner has not locked it yet.
const GRACE: Duration = Duration::from_secs(60);

/// Removes the directories `<parent>/<prefix>*` that no live owner holds
/// locked; returns them. Nothing else is touched.
pub fn remove_stale(parent: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(prefix) || !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let young = entry
            .metadata()?
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < GRACE);
        let Ok(dir) = File::open(&path) else {
            continue;
        };
        if young || rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn age(path: &Path) {
        let old = SystemTime::now() - 2 * GRACE;
        File::open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn only_unlocked_old_dirs_of_the_prefix_go() {
        let parent = tempfile::tempdir().unwrap();
        let live = ScratchDir::new(parent.path(), "rootfs-").unwrap();
        let dead = ScratchDir::new(parent.path(), "rootfs-").unwrap();
        std::fs::write(dead.path().join("big"), b"half a root").unwrap();
        // A killed owner: the directory stays, its lock is gone.
        let ScratchDir { dir, _lock } = dead;
        let dead_path = dir.keep();
        drop(_lock);
        let other = parent.path().join("keep-me");
        std::fs::create_dir(&other).unwrap();
        for p in [live.path(), dead_path.as_path(), other.as_path()] {
            age(p);
        }
        let fresh = parent.path().join("rootfs-fresh");
        std::fs::create_dir(&fresh).unwrap();
        let removed = remove_stale(parent.path(), "rootfs-").unwrap();
        assert_eq!(removed, std::slice::from_ref(&dead_path));
        assert!(live.path().is_dir() && other.is_dir() && fresh.is_dir());
        assert!(!dead_path.exists());
    }
}
