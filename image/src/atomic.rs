//! Atomic file outputs: write to a temp file in the destination directory, fsync, rename,
//! fsync the directory. A crash leaves either the old file or the new one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path} atomically")]
pub struct AtomicError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// A temp file beside `dest` (same directory, so the rename is atomic).
pub fn temp_beside(dest: &Path) -> Result<NamedTempFile, AtomicError> {
    let dir = parent_dir(dest);
    tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|source| AtomicError {
            path: dest.to_owned(),
            source,
        })
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

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
