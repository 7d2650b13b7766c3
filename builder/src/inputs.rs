//! The cluster's inputs: its lock request, the lock beside the cluster file,
//! and the store the locked packages are fetched into.

use crate::model::{Cluster, HOST_SOURCE};
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
}

/// Every package the cluster's images install, across all roles: the
/// profiles' packages and, when a Raspberry Pi is among the nodes, the
/// `[kernel]` package.
pub fn requested_packages(cluster: &Cluster) -> BTreeSet<String> {
    let mut packages: BTreeSet<String> = cluster
        .roles
        .iter()
        .filter(|(name, _)| cluster.nodes_of_role(name).next().is_some())
        .flat_map(|(_, role)| role.profile.packages.iter().cloned())
        .collect();
    if cluster.nodes.values().any(|n| n.platform.is_raspberry_pi()) {
        packages.extend(cluster.kernel.package.clone());
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

/// Keeps an existing lock (checking it covers the profiles and was resolved
/// against their sources) or, with `update` or no lock, resolves and writes
/// one against [`sources`].
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
    if path.exists() && !update {
        return Ok(LockOutcome::Kept(read_lock(cluster)?));
    }
    let request = LockRequest {
        arch: "arm64".into(),
        suite: cluster.suite.clone(),
        sources: with_profile_sources(host(cluster)?, cluster),
        packages: requested_packages(cluster),
        include_required: true,
    };
    let workdir = store.apt_dir(&request.suite, &request.arch);
    let lock = resolve::lock(&request, &workdir).map_err(InputsError::Resolve)?;
    lock.write(&path).map_err(InputsError::Lock)?;
    Ok(LockOutcome::Written(lock))
}

/// Reads the lock and checks it covers the profiles and was resolved against
/// their sources.
pub fn read_lock(cluster: &Cluster) -> Result<Lock, InputsError> {
    let path = lock_path(cluster);
    let lock = Lock::read(&path).map_err(InputsError::Lock)?;
    lock.check_covers(&requested_packages(cluster), &path)
        .map_err(InputsError::Lock)?;
    lock.check_sources(&source_names(cluster), &path)
        .map_err(InputsError::Lock)?;
    Ok(lock)
}

/// Fetches what the lock needs and the store lacks.
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
    let report = fetch::fetch(lock, &sources, store, &options)
        .map_err(|e| InputsError::Fetch(Box::new(e)))?;
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
