//! Crash-safe file writes: temp file in the same directory, fsync, rename,
//! fsync of the directory. A write whose result is already on disk is skipped,
//! so a second run changes nothing (not even mtimes).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Whether a write changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Changed,
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `content` to `path`, owned by root:root with `mode`, atomically.
/// Missing parent directories are created (mode 0755).
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<Written, WriteError> {
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| err(io::Error::other("path has no parent directory")))?;
    let name = path
        .file_name()
        .ok_or_else(|| err(io::Error::other("path has no file name")))?;
    // A fixed temp name: a write interrupted by a crash is overwritten (and
    // renamed away) by the re-run instead of leaving litter.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".pibake-tmp");
    let tmp = dir.join(tmp_name);
    if is_current(path, content, mode).map_err(err)? {
        if fs::symlink_metadata(&tmp).is_ok() {
            remove_durable(&tmp).map_err(err)?;
        }
        return Ok(Written::Unchanged);
    }
    fs::create_dir_all(dir).map_err(err)?;
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(content)?;
        own_by_root(&file)?;
        // Set after chown: chown clears set-id bits.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    };
    write().map_err(err)?;
    Ok(Written::Changed)
}

/// True when `path` already holds `content` with `mode`, owned by root.
fn is_current(path: &Path, content: &[u8], mode: u32) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.is_file()
        || meta.mode() & 0o7777 != mode
        || meta.uid() != 0
        || meta.gid() != 0
        || meta.len() != content.len() as u64
    {
        return Ok(false);
    }
    let mut existing = Vec::with_capacity(content.len());
    File::open(path)?.read_to_end(&mut existing)?;
    Ok(existing == content)
}

fn own_by_root(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if meta.uid() != 0 || meta.gid() != 0 {
        std::os::unix::fs::fchown(file, Some(0), Some(0))?;
    }
    Ok(())
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Overwrites a file with zeros of its length, syncs, deletes it and syncs
/// its directory: the old bytes do not stay in the FAT data area.
pub fn wipe(path: &Path) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let run = || -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        let len = file.metadata()?.len();
        let zeros = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        drop(file);
        remove_durable(path)
    };
    run().map_err(err)
}

/// Deletes a file and syncs its directory.
pub fn remove_durable(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_write_is_a_no_op() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a/b/file");
        assert_eq!(write_atomic(&path, b"x", 0o640)?, Written::Changed);
        let before = fs::metadata(&path)?.modified()?;
        assert_eq!(write_atomic(&path, b"x", 0o640)?, Written::Unchanged);
        assert_eq!(fs::metadata(&path)?.modified()?, before);
        assert_eq!(write_atomic(&path, b"x", 0o600)?, Written::Changed);
        assert_eq!(fs::metadata(&path)?.mode() & 0o7777, 0o600);
        assert_eq!(write_atomic(&path, b"y", 0o600)?, Written::Changed);
        assert_eq!(fs::read(&path)?, b"y");
        let names: Vec<_> = fs::read_dir(dir.path().join("a/b"))?.collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
        Ok(())
    }

    #[test]
    fn leftover_temp_is_replaced() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(".f.pibake-tmp"), b"half")?;
        write_atomic(&dir.path().join("f"), b"whole", 0o644)?;
        assert!(!dir.path().join(".f.pibake-tmp").exists());
        Ok(())
    }

    #[test]
    fn wipe_removes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        fs::write(&path, b"secret")?;
        wipe(&path)?;
        assert!(!path.exists());
        Ok(())
    }
}
