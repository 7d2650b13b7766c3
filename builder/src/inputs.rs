//! The cluster's inputs: its lock request, the lock beside the cluster file,
//! and the store the locked packages are fetched into (and the preloaded
//! images' archives put into: [`crate::preload`]).

use crate::model::{Cluster, HOST_SOURCE};
use crate::preload::{self, PreloadError};
use pibake_inputs::fetch::{self, FetchOptions, FetchReport};
use pibake_inputs::lock::LockError;
use pibake_inputs::resolve::{self, LockRequest, ResolveError};
use pibake_inputs::sources::{self, SourceError};
use pibake_inputs::store::StoreError;
use pibake_inputs::{Lock, Source, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Debian components the images need: raspi-firmware is in non-free-firmware.
pub const COMPONENTS: [&str; 2] = ["main", "non-free-firmware"];

#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("cannot find the host's Debian mirror in /etc/apt")]
    Sources(#[source] SourceError),
    #[error("cannot resolve the package closure")]
    Resolve(#[source] ResolveError),
    #[error("lock file")]
    Lock(#[source] LockError),
    #[error("store")]
    Store(#[source] StoreError),
    #[error("fetch")]
    Fetch(#[source] Box<fetch::FetchError>),
    #[error(transparent)]
    Preload(#[from] PreloadError),
}

/// Every package the cluster's images of `arch` install: the profiles'
/// packages of the roles whose nodes are of that architecture, and their
/// platforms' boot chain ([`crate::model::Platform::packages`]).
pub fn requested_packages(cluster: &Cluster, arch: &str) -> BTreeSet<String> {
    let mut packages: BTreeSet<String> = cluster
        .roles
        .iter()
        .filter(|(name, _)| cluster.role_arch(name) == Some(arch))
        .flat_map(|(_, role)| role.profile.packages.iter().cloned())
        .collect();
    for node in cluster.nodes.values() {
        if node.platform.arch() == Some(arch) {
            packages.extend(node.platform.packages(&cluster.kernel));
        }
    }
    packages
}

/// Pinned from the kernel's suite beside the kernel package: Debian's 7.x
/// kernel packages pre-depend on a newer `linux-base` (its
/// `linux-update-symlinks` and `linux-run-hooks`) than trixie has, and apt
/// only satisfies a dependency from a source's candidate version.
pub const KERNEL_PINNED_HELPERS: [&str; 1] = ["linux-base"];

/// The pin priority that makes the kernel's suite win for the pinned
/// packages (above the 500 of the cluster's suite, below 1000, which would
/// allow downgrades).
pub const KERNEL_PIN_PRIORITY: i32 = 990;

/// The name of the source of the kernel's suite when it is not the
/// cluster's (`debian-trixie-backports`).
pub fn kernel_source_name(cluster: &Cluster) -> Option<String> {
    (cluster.kernel.package.is_some() && cluster.kernel.suite != cluster.suite)
        .then(|| format!("{HOST_SOURCE}-{}", cluster.kernel.suite))
}

/// The host's mirror at the kernel's suite, pinned for the kernel packages
/// only, when `[kernel] suite` is not the cluster's suite.
pub fn kernel_source(host: &Source, cluster: &Cluster) -> Option<Source> {
    let name = kernel_source_name(cluster)?;
    let mut pin_packages = vec![cluster.kernel.package.clone()?];
    pin_packages.extend(KERNEL_PINNED_HELPERS.iter().map(|p| (*p).to_string()));
    Some(Source {
        name,
        suite: cluster.kernel.suite.clone(),
        pin_priority: Some(KERNEL_PIN_PRIORITY),
        pin_packages,
        ..host.clone()
    })
}

/// The sources a cluster's packages come from: the host's Debian mirror
/// (named `debian`), the kernel's suite of it (see [`kernel_source`]), then
/// the sources the profiles add (see
/// [`profile_sources`]).
pub fn sources(cluster: &Cluster) -> Result<Vec<Source>, InputsError> {
    Ok(with_profile_sources(host_debian_source(cluster)?, cluster))
}

/// The host's Debian mirror, from /etc/apt, as the source `debian`.
pub fn host_debian_source(cluster: &Cluster) -> Result<Source, InputsError> {
    let mut debian = sources::host_debian_source(Path::new("/etc/apt"), &cluster.suite)
        .map_err(InputsError::Sources)?;
    debian.components = COMPONENTS.iter().map(|c| (*c).to_string()).collect();
    Ok(debian)
}

/// `host`, its [`kernel_source`] if any, then [`profile_sources`].
pub fn with_profile_sources(host: Source, cluster: &Cluster) -> Vec<Source> {
    let kernel = kernel_source(&host, cluster);
    std::iter::once(host)
        .chain(kernel)
        .chain(profile_sources(cluster))
        .collect()
}

/// The sources the profiles of roles with nodes add, sorted by name, each
/// once (`pibake check` refuses one name defined differently).
pub fn profile_sources(cluster: &Cluster) -> Vec<Source> {
    let mut by_name: BTreeMap<String, Source> = BTreeMap::new();
    for (name, role) in &cluster.roles {
        if cluster.nodes_of_role(name).next().is_none() {
            continue;
        }
        for source in &role.profile.sources {
            by_name
                .entry(source.name.clone())
                .or_insert_with(|| source.clone());
        }
    }
    by_name.into_values().collect()
}

/// The names of the sources a lock must have been resolved against.
pub fn source_names(cluster: &Cluster) -> BTreeSet<String> {
    std::iter::once(HOST_SOURCE.to_string())
        .chain(kernel_source_name(cluster))
        .chain(profile_sources(cluster).into_iter().map(|s| s.name))
        .collect()
}

/// What `lock` did.
#[derive(Debug)]
pub enum LockOutcome {
    /// The existing lock covers every requested package.
    Kept(Lock),
    /// A new lock was resolved and written.
    Written(Lock),
}

pub fn lock_path(cluster: &Cluster) -> PathBuf {
    pibake_inputs::lock::path_beside(&cluster.file)
}

/// Keeps what an existing lock has right (each architecture's closure that
/// covers its packages and was resolved against today's sources) and
/// resolves the rest: a closure per architecture of the cluster's nodes, all
/// of them with `update` or when the suite changed; pins each preloaded
/// image's archive as it is now. Writes the lock when a closure or a pin
/// changed or one is no longer needed.
pub fn lock(cluster: &Cluster, store: &Store, update: bool) -> Result<LockOutcome, InputsError> {
    lock_with_host(cluster, store, update, host_debian_source)
}

/// [`lock`] with the host's Debian mirror given by `host` (tests use a local
/// repository).
pub fn lock_with_host(
    cluster: &Cluster,
    store: &Store,
    update: bool,
    host: impl FnOnce(&Cluster) -> Result<Source, InputsError>,
) -> Result<LockOutcome, InputsError> {
    let path = lock_path(cluster);
    let existing = if path.exists() {
        Some(Lock::read(&path).map_err(InputsError::Lock)?)
    } else {
        None
    };
    let mut lock = match existing {
        Some(lock) if !update && lock.suite == cluster.suite => lock,
        _ => Lock::new(&cluster.suite),
    };
    let before = lock.clone();
    let arches: BTreeSet<String> = cluster.arches().iter().map(|a| (*a).to_string()).collect();
    lock.retain_arches(&arches);
    let stale: Vec<&String> = arches
        .iter()
        .filter(|arch| closure_problem(cluster, &lock, arch, &path).is_some())
        .collect();
    if !stale.is_empty() {
        let sources = with_profile_sources(host(cluster)?, cluster);
        for arch in stale {
            let request = LockRequest {
                arch: arch.clone(),
                suite: cluster.suite.clone(),
                sources: sources.clone(),
                packages: requested_packages(cluster, arch),
                include_required: true,
            };
            let workdir = store.apt_dir(&request.suite, &request.arch);
            let closure = resolve::lock(&request, &workdir).map_err(InputsError::Resolve)?;
            lock.set_closure(closure);
        }
    }
    lock.set_images(preload::pin(cluster)?);
    if lock == before {
        return Ok(LockOutcome::Kept(lock));
    }
    lock.write(&path).map_err(InputsError::Lock)?;
    Ok(LockOutcome::Written(lock))
}

/// [`lock`] without the network: the closures must still serve the cluster
/// (else the error says which is stale); the archives' pins are taken again
/// (they are local files).
pub fn lock_offline(cluster: &Cluster, store: &Store) -> Result<LockOutcome, InputsError> {
    let path = lock_path(cluster);
    let lock = Lock::read(&path).map_err(InputsError::Lock)?;
    for arch in cluster.arches() {
        if let Some(problem) = closure_problem(cluster, &lock, arch, &path) {
            return Err(InputsError::Lock(problem));
        }
    }
    // No closure is stale, so no source is asked for.
    lock_with_host(cluster, store, false, |_| {
        Err(InputsError::Lock(LockError::Invalid {
            path: Some(path.clone()),
            what: "--offline: a closure would need resolving".to_owned(),
        }))
    })
}

/// One line about each closure and image: `arm64 412 packages (SOURCE_DATE_EPOCH 1764…)`,
/// `image web (arm64, 1993216 bytes)`.
pub fn describe_lock(lock: &Lock) -> String {
    let closures = lock.closures.iter().map(|c| {
        format!(
            "{} {} packages (SOURCE_DATE_EPOCH {})",
            c.arch,
            c.packages.len(),
            c.source_date_epoch
        )
    });
    let images = lock
        .images
        .iter()
        .map(|i| format!("image {} ({}, {} bytes)", i.name, i.architecture, i.size));
    closures.chain(images).collect::<Vec<_>>().join(", ")
}

/// Why the lock's closure of `arch` cannot serve the cluster, if it cannot.
fn closure_problem(cluster: &Cluster, lock: &Lock, arch: &str, path: &Path) -> Option<LockError> {
    let Some(closure) = lock.closure(arch) else {
        return Some(LockError::NoClosure {
            path: path.to_owned(),
            arch: arch.to_owned(),
        });
    };
    closure
        .check_covers(&requested_packages(cluster, arch), path)
        .and_then(|()| closure.check_sources(&source_names(cluster), path))
        .err()
}

/// Reads the lock and checks it has a closure for each architecture of the
/// cluster that covers its packages and was resolved against their sources,
/// and a pin of each preloaded image's archive.
pub fn read_lock(cluster: &Cluster) -> Result<Lock, InputsError> {
    let path = lock_path(cluster);
    let lock = Lock::read(&path).map_err(InputsError::Lock)?;
    for arch in cluster.arches() {
        if let Some(problem) = closure_problem(cluster, &lock, arch, &path) {
            return Err(InputsError::Lock(problem));
        }
    }
    preload::check_locked(cluster, &lock, &path)?;
    Ok(lock)
}

/// Fetches what the lock needs and the store lacks: the packages from the
/// mirrors, the archives from their files (refused, located, when one changed
/// since the lock).
pub fn fetch(
    cluster: &Cluster,
    lock: &Lock,
    store: &Store,
    offline: bool,
    progress: bool,
) -> Result<FetchReport, InputsError> {
    let sources = if offline {
        Vec::new()
    } else {
        sources(cluster)?
    };
    let options = FetchOptions {
        offline,
        progress,
        ..FetchOptions::default()
    };
    // The archives first: a changed one is refused whether or not the
    // network is there.
    let archives = preload::store(cluster, lock, store)?;
    let mut report = fetch::fetch(lock, &sources, store, &options)
        .map_err(|e| InputsError::Fetch(Box::new(e)))?;
    report.present += cluster.swarm.images.len() - archives.len();
    report.bytes += archives
        .iter()
        .filter_map(|e| lock.images.iter().find(|i| i.sha256 == e.sha256()))
        .map(|i| i.size)
        .sum::<u64>();
    report.fetched.extend(archives);
    let entries = lock.entry_names().map_err(InputsError::Lock)?;
    store
        .add_root(&format!("lock-{}", cluster.name), &entries)
        .map_err(InputsError::Store)?;
    Ok(report)
}

/// Opens the store at `dir` or the default location.
pub fn open_store(dir: Option<&Path>) -> Result<Store, InputsError> {
    let root = match dir {
        Some(d) => d.to_path_buf(),
        None => Store::default_root().map_err(InputsError::Store)?,
    };
    Store::open(root).map_err(InputsError::Store)
}
