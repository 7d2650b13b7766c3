//! Atomic file outputs for every host-side crate (store inserts, the lock, repository
//! indices, images and their manifests): write to a temp file in the destination directory,
//! fsync, rename, fsync the directory. A crash leaves either the old file or the new one, and perhaps the
//! temp file (`.<name>.XXXXXX.tmp`); [`remove_stale_temps`] removes those of one output
//! that no live writer holds (each writer keeps an exclusive `flock` on its temp file, which
//! the kernel drops when the writer dies, even by SIGKILL).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use tempfile::NamedTempFile;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path} atomically")]
pub struct AtomicError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Length of the random part of a temp file's name (tempfile's default, fixed here because
/// [`is_temp_of`] matches it).
const TEMP_RAND: usize = 6;

/// A temp file beside `dest` (same directory, so the rename is atomic), named
/// `.<file name of dest>.XXXXXX.tmp` and locked (`flock`, exclusive) while it is open.
pub fn temp_beside(dest: &Path) -> Result<NamedTempFile, AtomicError> {
    let dir = parent_dir(dest);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ))
        .suffix(".tmp")
        .rand_bytes(TEMP_RAND)
        .tempfile_in(dir)
        .map_err(|source| AtomicError {
            path: dest.to_owned(),
            source,
        })?;
    // Marks the file as being written: [`remove_stale_temps`] leaves locked files alone. A
    // filesystem without flock fails here and there alike, so its temp files are left alone.
    let _ = rustix::fs::flock(tmp.as_file(), FlockOperation::NonBlockingLockExclusive);
    Ok(tmp)
}

/// Whether a directory entry named `name` is a temp file [`temp_beside`] makes for `dest`:
/// exactly `.<file name of dest>.` + six letters or digits + `.tmp`, so the temp files of
/// other outputs (`x.img.zst` beside `x.img`) never match.
pub fn is_temp_of(dest: &Path, name: &OsStr) -> bool {
    let Some(file) = dest.file_name() else {
        return false;
    };
    let name = name.as_encoded_bytes();
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(file.as_encoded_bytes());
    prefix.push(b'.');
    name.strip_prefix(prefix.as_slice())
        .and_then(|rest| rest.strip_suffix(b".tmp"))
        .is_some_and(|r| r.len() == TEMP_RAND && r.iter().all(u8::is_ascii_alphanumeric))
}

/// Removes the temp files of `dest` left by writers that died (a build killed by SIGKILL
/// leaves a temp image as big as the image): regular files whose names [`is_temp_of`] `dest`
/// and that no live writer holds locked (on a filesystem without `flock`, none is removed).
/// Nothing else in the directory is touched. Returns the removed paths.
pub fn remove_stale_temps(dest: &Path) -> Result<Vec<PathBuf>, AtomicError> {
    let dir = parent_dir(dest);
    let err = |source| AtomicError {
        path: dest.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(err)?;
        if !is_temp_of(dest, &entry.file_name()) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
        };
        // Locked: a writer is alive and holds it. No lock to be had (a filesystem without
        // flock): cannot tell, so leave it.
        if rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    if !removed.is_empty() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(removed)
}

/// fsyncs `tmp`, renames it to `dest` and fsyncs the directory.
pub fn persist(tmp: NamedTempFile, dest: &Path) -> Result<(), AtomicError> {
    let err = |source| AtomicError {
        path: dest.to_owned(),
        source,
    };
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(dest).map_err(|e| err(e.error))?;
    File::open(parent_dir(dest))
        .and_then(|d| d.sync_all())
        .map_err(err)
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    let mut tmp = temp_beside(dest)?;
    io::Write::write_all(&mut tmp, bytes).map_err(|source| AtomicError {
        path: dest.to_owned(),
        source,
    })?;
    persist(tmp, dest)
}

/// Makes a directory entry change (rename, unlink) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_match_only_their_own_output() {
        let d = Path::new("/out/lab.img");
        let yes = [".lab.img.AbC123.tmp", ".lab.img.000000.tmp"];
        let no = [
            ".lab.img.zst.AbC123.tmp",
            ".lab.img.AbC12.tmp",
            ".lab.img.AbC1234.tmp",
            ".lab.img.AbC-12.tmp",
            ".lab.img.AbC123.tmpx",
            "lab.img.AbC123.tmp",
            ".lab2.img.AbC123.tmp",
            ".lab.AbC123.tmp",
            "lab.img",
        ];
        for n in yes {
            assert!(is_temp_of(d, OsStr::new(n)), "{n}");
        }
        for n in no {
            assert!(!is_temp_of(d, OsStr::new(n)), "{n}");
        }
        // What temp_beside makes matches.
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("lab.img");
        let t = temp_beside(&dest).expect("temp");
        let name = t.path().file_name().expect("name").to_owned();
        assert!(is_temp_of(&dest, &name), "{name:?}");
    }

    #[test]
    fn stale_temps_of_an_output_go_and_nothing_else_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("lab.img");
        let stale = [".lab.img.Ab3dE6.tmp", ".lab.img.zzzzzz.tmp"];
        let kept = [
            "lab.img",
            ".lab.img.zst.Ab3dE6.tmp",
            ".lab-worker.img.Ab3dE6.tmp",
            ".lab.img.Ab3dE6.tmp.keep",
            "notes.txt",
        ];
        for n in stale.iter().chain(&kept) {
            std::fs::write(dir.path().join(n), n).expect("plant");
        }
        // A directory of that name is not a temp file.
        std::fs::create_dir(dir.path().join(".lab.img.dirdir.tmp")).expect("dir");
        // A live writer's temp file stays.
        let live = temp_beside(&dest).expect("live temp");

        let mut removed = remove_stale_temps(&dest).expect("remove");
        removed.sort();
        let mut want: Vec<PathBuf> = stale.iter().map(|n| dir.path().join(n)).collect();
        want.sort();
        assert_eq!(removed, want);
        for n in stale {
            assert!(!dir.path().join(n).exists(), "{n} stayed");
        }
        for n in kept {
            assert!(dir.path().join(n).exists(), "{n} was removed");
        }
        assert!(dir.path().join(".lab.img.dirdir.tmp").is_dir());
        assert!(
            live.path().exists(),
            "a live writer's temp file was removed"
        );

        // Once its writer is gone (dropped without persisting is a delete; forget it to keep the
        // file, as a killed process would), the next call removes it.
        let (file, path) = live.keep().expect("keep");
        drop(file);
        assert_eq!(remove_stale_temps(&dest).expect("remove"), vec![path]);
        // No directory at all: nothing to do.
        assert!(remove_stale_temps(&dir.path().join("gone/lab.img"))
            .expect("missing dir")
            .is_empty());
    }
}
