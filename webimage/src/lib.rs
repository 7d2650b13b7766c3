//! The reference lab's web server image, made here from Debian packages so that an
//! isolated lab (no registry) can preload it: `busybox httpd` from trixie's
//! `busybox-static` (arm64, the workers' architecture), serving a page that names the
//! node it runs on, written as a `docker save`-style OCI archive for
//! `[swarm.images.web]` of examples/lab/cluster.toml.
//!
//! Reproducible: the .deb is pinned by sha256 ([`busybox::DEB`]; a changed package is an
//! error, never a silently different image), the layer and the archive are written by
//! pibake-image's tar writer (sorted entries, root-owned, every time the package's own
//! SOURCE_DATE_EPOCH), so two runs give the same bytes, which the lab's lock pins.
//!
//! - [`busybox`]: the pinned .deb, fetched into pibake's store through the host's Debian
//!   mirror, and what the image takes from it.
//! - [`image`]: the layer (busybox, the entrypoint, /www) and the archive.

pub mod busybox;
pub mod image;

use pibake_image::oci::Written;
use pibake_inputs::Store;
use std::path::Path;

/// What [`make`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// sha256 of the archive file.
    pub sha256: String,
    pub size: u64,
    pub digests: Written,
}

/// Why the image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error(transparent)]
    Busybox(#[from] busybox::BusyboxError),
    #[error("writing the archive")]
    Archive(#[source] pibake_image::oci::OciError),
    #[error("cannot write {}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `bytes` to `out` through a synced temp file beside it, renamed into place, readable
/// by all (an input of builds, not a secret).
fn write_readable(out: &Path, bytes: &[u8]) -> Result<(), MakeError> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let err = |e: pibake_host::atomic::AtomicError| MakeError::Write {
        path: e.path,
        source: e.source,
    };
    let io_err = |source| MakeError::Write {
        path: out.to_path_buf(),
        source,
    };
    let mut tmp = pibake_host::atomic::temp_beside(out).map_err(err)?;
    tmp.write_all(bytes).map_err(io_err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io_err)?;
    pibake_host::atomic::persist(tmp, out).map_err(err)
}

/// Makes the archive at `out` (written to a temp file beside it, synced, renamed) from
/// the pinned .deb in `store`, fetching it first unless `offline`.
pub fn make(store: &Store, out: &Path, offline: bool) -> Result<Made, MakeError> {
    let deb = busybox::ensure(store, offline)?;
    let contents = busybox::Contents::read(&deb)?;
    let mut bytes = Vec::new();
    let digests = image::write_archive(&mut bytes, &contents).map_err(MakeError::Archive)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| MakeError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write_readable(out, &bytes)?;
    Ok(Made {
        sha256: pibake_inputs::Sha256::of(&bytes).to_hex(),
        size: bytes.len() as u64,
        digests,
    })
}
