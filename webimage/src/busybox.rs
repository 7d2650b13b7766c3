//! The pinned `busybox-static` .deb of Debian trixie (arm64) and what the image takes
//! from it: the binary, its copyright file (the image is a redistribution of GPL-2
//! software) and its SOURCE_DATE_EPOCH.
//!
//! The .deb is fetched like a locked package (pibake-inputs' fetch: the host's Debian
//! mirror from /etc/apt, size and sha256 checked while streaming) into pibake's store,
//! and kept there under a root so `pibake gc` leaves it; once there, no network is
//! needed. A newer busybox in trixie replaces the old file on the mirror: the fetch then
//! fails, and the pin is updated here on purpose (with the lab's lock, which pins the
//! archive).

use pibake_inputs::deb::{self, Member};
use pibake_inputs::fetch::{self, FetchOptions};
use pibake_inputs::lock::{Closure, Lock, LockedPackage};
use pibake_inputs::{Sha256, Store};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A .deb pinned by its pool path, size and sha256.
#[derive(Debug, Clone, Copy)]
pub struct PinnedDeb {
    pub name: &'static str,
    pub source: &'static str,
    pub version: &'static str,
    pub architecture: &'static str,
    /// The Debian suite whose pool has it.
    pub suite: &'static str,
    pub filename: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// trixie's busybox-static for arm64 (the sha256 is the one of trixie's signed
/// `main/binary-arm64/Packages` index).
pub const DEB: PinnedDeb = PinnedDeb {
    name: "busybox-static",
    source: "busybox",
    version: "1:1.37.0-6+b9",
    architecture: "arm64",
    suite: "trixie",
    filename: "pool/main/b/busybox/busybox-static_1.37.0-6+b9_arm64.deb",
    size: 847_552,
    sha256: "c833be48abfa16bc19c4966ec93e289ff1ce5d2f1476cad3a57bd105378cd15c",
};

/// The store root that keeps the pinned .deb from `pibake gc`.
pub const STORE_ROOT: &str = "webimage-busybox-static";

/// The binary's path in the package (trixie is merged-/usr).
pub const BINARY: &str = "usr/bin/busybox";
/// The copyright file's path in the package.
pub const COPYRIGHT: &str = "usr/share/doc/busybox-static/copyright";

#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    #[error("the pin of {name} is not valid: {what}")]
    Pin { name: &'static str, what: String },
    #[error("cannot find the host's Debian mirror in /etc/apt")]
    Sources(#[source] pibake_inputs::sources::SourceError),
    #[error("fetching the pinned {name} {version} (sha256 {sha256}); if the mirror no longer has it, update the pin in webimage/src/busybox.rs and the lab's lock")]
    Fetch {
        name: &'static str,
        version: &'static str,
        sha256: &'static str,
        #[source]
        source: Box<fetch::FetchError>,
    },
    #[error("the store")]
    Store(#[source] pibake_inputs::store::StoreError),
    #[error("{}: {what}", path.display())]
    Deb { path: PathBuf, what: String },
}

impl PinnedDeb {
    /// The pin as a one-package lock, so that pibake-inputs fetches it as any locked .deb.
    pub fn lock(&self) -> Result<Lock, BusyboxError> {
        let bad = |what: String| BusyboxError::Pin {
            name: self.name,
            what,
        };
        let sha256: Sha256 = self.sha256.parse().map_err(|e| bad(format!("{e:?}")))?;
        let mut lock = Lock::new(self.suite);
        lock.set_closure(Closure {
            arch: self.architecture.to_owned(),
            source_date_epoch: 0,
            requested: BTreeSet::from([self.name.to_owned()]),
            sources: BTreeSet::new(),
            packages: vec![LockedPackage {
                name: self.name.to_owned(),
                version: self.version.to_owned(),
                architecture: self.architecture.to_owned(),
                filename: self.filename.to_owned(),
                size: self.size,
                sha256,
                source: self.source.to_owned(),
                origin: pibake_inputs::sources::HOST_SOURCE.to_owned(),
            }],
        });
        Ok(lock)
    }
}

/// The pinned .deb's path in `store`, fetched (verified) when the store lacks it.
pub fn ensure(store: &Store, offline: bool) -> Result<PathBuf, BusyboxError> {
    let lock = DEB.lock()?;
    let entry = lock.packages()[0]
        .entry_name()
        .map_err(|e| BusyboxError::Pin {
            name: DEB.name,
            what: e.to_string(),
        })?;
    if !store.contains(&entry) {
        let sources = if offline {
            Vec::new()
        } else {
            let mut host =
                pibake_inputs::sources::host_debian_source(Path::new("/etc/apt"), DEB.suite)
                    .map_err(BusyboxError::Sources)?;
            host.components = vec!["main".to_owned()];
            vec![host]
        };
        let options = FetchOptions {
            offline,
            progress: false,
            ..FetchOptions::default()
        };
        fetch::fetch(&lock, &sources, store, &options).map_err(|source| BusyboxError::Fetch {
            name: DEB.name,
            version: DEB.version,
            sha256: DEB.sha256,
            source: Box::new(source),
        })?;
    }
    store
        .add_root(STORE_ROOT, std::slice::from_ref(&entry))
        .map_err(BusyboxError::Store)?;
    Ok(store.path_of(&entry))
}

/// What the image takes from the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub busybox: Vec<u8>,
    pub copyright: Vec<u8>,
    /// The newest mtime of the package's files: the SOURCE_DATE_EPOCH it was built with
    /// (Debian clamps them to its changelog's date), the image's every time.
    pub epoch: u64,
}

impl Contents {
    /// Reads the binary, the copyright file and the epoch from the .deb at `path`.
    pub fn read(path: &Path) -> Result<Self, BusyboxError> {
        let bad = |what: String| BusyboxError::Deb {
            path: path.to_owned(),
            what,
        };
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let (busybox, copyright, epoch) =
            deb::with_member(file, Member::Data, read_data).map_err(bad)?;
        match (busybox, copyright) {
            (Some(busybox), Some(copyright)) => Ok(Contents {
                busybox,
                copyright,
                epoch,
            }),
            _ => Err(bad(format!("its data has no {BINARY} or no {COPYRIGHT}"))),
        }
    }
}

type Data = (Option<Vec<u8>>, Option<Vec<u8>>, u64);

fn read_data(tar: &mut dyn Read) -> std::io::Result<Data> {
    let (mut busybox, mut copyright, mut epoch) = (None, None, 0);
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        epoch = epoch.max(entry.header().mtime()?);
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./");
        let slot = match path {
            BINARY => &mut busybox,
            COPYRIGHT => &mut copyright,
            _ => continue,
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        *slot = Some(bytes);
    }
    Ok((busybox, copyright, epoch))
}
