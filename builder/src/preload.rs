//! Preloaded container images (`[swarm.images.<name>]`) as inputs: each archive
//! pinned in the lock (sha256, size, architecture and tags read from it),
//! put into the store under its pin by `fetch`, and named by that pin in the
//! specs of the images that carry it ([`crate::model::carries`]), so its bytes
//! are hashed into their input hashes and `build` takes them from the store.
//!
//! An archive that changed since the lock is refused where the cluster file
//! names it: a build never carries bytes the lock does not pin.

use crate::diag::Diagnostic;
use crate::model::{Cluster, PreloadImage};
use pibake_inputs::lock::{LockError, LockedImage};
use pibake_inputs::store::{Expected, StoreError};
use pibake_inputs::{Lock, Sha256, Store};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    #[error("cannot read the archive {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no pin for the image archive `{name}`; run `pibake lock`", lock.display())]
    NotLocked { lock: PathBuf, name: String },
    #[error("{}: the image `{name}` was locked {what}; run `pibake lock`", lock.display())]
    Stale {
        lock: PathBuf,
        name: String,
        what: String,
    },
    /// Located: `file:line:column: swarm.images.<name>.archive: …; run `pibake lock``.
    #[error("{0}")]
    Changed(String),
    #[error("the store")]
    Store(#[source] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// The pin of each of the cluster's archives, as it is on disk now.
pub fn pin(cluster: &Cluster) -> Result<Vec<LockedImage>, PreloadError> {
    cluster
        .swarm
        .images
        .values()
        .map(|image| {
            let (sha256, size) = hash(&image.path)?;
            Ok(LockedImage {
                name: image.name.clone(),
                archive: image.archive.clone(),
                architecture: image.arch.clone(),
                tags: image.tags.clone(),
                size,
                sha256,
            })
        })
        .collect()
}

fn hash(path: &Path) -> Result<(Sha256, u64), PreloadError> {
    let read = |source| PreloadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    Sha256::of_reader(std::io::BufReader::with_capacity(1 << 20, file)).map_err(read)
}

/// Whether the lock at `lock_path` pins every archive of the cluster as the
/// cluster file names it (path, architecture, tags); the bytes are compared
/// when they are stored ([`store`]).
pub fn check_locked(cluster: &Cluster, lock: &Lock, lock_path: &Path) -> Result<(), PreloadError> {
    for image in cluster.swarm.images.values() {
        let locked = lock
            .image(&image.name)
            .ok_or_else(|| PreloadError::NotLocked {
                lock: lock_path.to_owned(),
                name: image.name.clone(),
            })?;
        let what = if locked.archive != image.archive {
            Some(format!(
                "as `{}`, the cluster file names `{}`",
                locked.archive, image.archive
            ))
        } else if locked.architecture != image.arch || locked.tags != image.tags {
            Some(format!(
                "as {} {}, the archive now holds {} {}",
                locked.architecture,
                locked.tags.join(" "),
                image.arch,
                image.tags.join(" ")
            ))
        } else {
            None
        };
        if let Some(what) = what {
            return Err(PreloadError::Stale {
                lock: lock_path.to_owned(),
                name: image.name.clone(),
                what,
            });
        }
    }
    Ok(())
}

/// Puts each archive into the store under its pin (or checks the one there is
/// still the file's), refusing, located, one that changed since the lock.
/// Returns the entries stored now. Needs no network (`--offline` too).
pub fn store(
    cluster: &Cluster,
    lock: &Lock,
    store: &Store,
) -> Result<Vec<pibake_inputs::EntryName>, PreloadError> {
    let mut stored = Vec::new();
    for image in cluster.swarm.images.values() {
        let Some(locked) = lock.image(&image.name) else {
            return Err(PreloadError::NotLocked {
                lock: pibake_inputs::lock::path_beside(&cluster.file),
                name: image.name.clone(),
            });
        };
        let entry = locked.entry_name()?;
        let expected = Expected {
            sha256: locked.sha256,
            size: locked.size,
        };
        let received = if store.contains(&entry) {
            Some(hash(&image.path)?)
                .filter(|&(sha, size)| (sha, size) != (locked.sha256, locked.size))
        } else {
            match store.insert_file(entry.name(), &image.path, Some(expected)) {
                Ok(_) => {
                    stored.push(entry);
                    None
                }
                Err(StoreError::Mismatch {
                    received,
                    received_size,
                    ..
                }) => Some((received, received_size)),
                Err(StoreError::TooLong { .. }) => Some(hash(&image.path)?),
                Err(e) => return Err(PreloadError::Store(e)),
            }
        };
        if let Some(received) = received {
            return Err(changed(cluster, image, locked, received));
        }
    }
    Ok(stored)
}

fn changed(
    cluster: &Cluster,
    image: &PreloadImage,
    locked: &LockedImage,
    (sha256, size): (Sha256, u64),
) -> PreloadError {
    let d = Diagnostic::error(
        &cluster.file,
        ["swarm", "images", &image.name, "archive"]
            .map(str::to_owned)
            .to_vec(),
        format!(
            "`{}` changed since it was locked: it has sha256 {sha256} ({size} bytes), {} pins {} ({} bytes)",
            image.archive,
            pibake_inputs::lock::path_beside(&cluster.file).display(),
            locked.sha256,
            locked.size
        ),
    )
    .help("run `pibake lock` to pin the archive as it is now (or put the locked one back)");
    PreloadError::Changed(d.one_line())
}

/// The archives the images of `role` carry (the preload rule), each named by
/// its pin in `locked` (the lock's images by name).
pub fn archives_of(
    cluster: &Cluster,
    role: &str,
    locked: &std::collections::BTreeMap<String, LockedImage>,
) -> Result<Vec<crate::render::PreloadArchive>, PreloadError> {
    cluster
        .images_of_role(role)
        .into_iter()
        .map(|image| {
            let pin = locked
                .get(&image.name)
                .filter(|pin| pin.architecture == image.arch)
                .ok_or_else(|| PreloadError::NotLocked {
                    lock: pibake_inputs::lock::path_beside(&cluster.file),
                    name: image.name.clone(),
                })?;
            Ok(crate::render::PreloadArchive {
                name: image.name.clone(),
                entry: pin.entry_name()?.to_string(),
                size: pin.size,
            })
        })
        .collect()
}

/// Whether a service of `stack` names one of the cluster's preloaded images,
/// by one of its tags (compared as Docker normalizes them: `web:1` is
/// `docker.io/library/web:1`).
pub fn names_preloaded_image(cluster: &Cluster, stack: &crate::model::Stack) -> bool {
    let preloaded: std::collections::BTreeSet<String> = cluster
        .swarm
        .images
        .values()
        .flat_map(|i| &i.tags)
        .map(|t| normalized(t))
        .collect();
    stack
        .images
        .iter()
        .any(|i| preloaded.contains(&normalized(i)))
}

/// A reference as Docker normalizes it: the registry `docker.io` when the first
/// component names no host (no `.` or `:`, not `localhost`), `library/` before a
/// single component there, the tag `latest` when there is neither tag nor digest.
pub fn normalized(reference: &str) -> String {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let host = first.contains('.') || first.contains(':') || first == "localhost";
    let mut out = match (host, first.is_empty()) {
        (true, _) => reference.to_owned(),
        (false, true) => format!("docker.io/library/{rest}"),
        (false, false) => format!("docker.io/{reference}"),
    };
    let name = out.rsplit('/').next().unwrap_or_default();
    if !name.contains(':') && !name.contains('@') {
        out.push_str(":latest");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_as_docker_does() {
        assert_eq!(normalized("web"), "docker.io/library/web:latest");
        assert_eq!(normalized("web:1"), "docker.io/library/web:1");
        assert_eq!(normalized("pibake/web:1"), "docker.io/pibake/web:1");
        assert_eq!(
            normalized("docker.io/pibake/web:1"),
            "docker.io/pibake/web:1"
        );
        assert_eq!(
            normalized("localhost/pibake/web:1"),
            "localhost/pibake/web:1"
        );
        assert_eq!(
            normalized("localhost:5000/web"),
            "localhost:5000/web:latest"
        );
        assert_eq!(
            normalized("registry.example/a/b@sha256:ab"),
            "registry.example/a/b@sha256:ab"
        );
    }
}
