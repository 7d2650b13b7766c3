//! Where a cluster's profiles and overlays come from, the copy of them built
//! into pibake, and where the first-boot agent comes from.
//!
//! A data directory holds `profiles/` and `overlays/` (the device-tree
//! overlay sources in `overlays/dtbo/`). [`locate`] takes the first of
//! 1. `--data-dir DIR`,
//! 2. `$PIBAKE_DATA_DIR`,
//! 3. the nearest directory at or above the cluster file's that holds both
//!    (a checkout, or a copy of the stock data beside your cluster),
//! 4. the profiles and overlays built into this binary (builder/build.rs
//!    embeds the workspace's), unpacked once into the store as
//!    `data-<sha256>` and checked against the embedded bytes on every use.
//!
//! An explicit choice beats a found one: a flag that a nearby checkout could
//! silently override would be a trap. Every command that reads a cluster
//! says which directory it used.
//!
//! Plans name data by content, never by path: the same bytes from any of the
//! four give the same input hashes (tests/installed.rs).

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming a data directory.
pub const DATA_DIR_ENV: &str = "PIBAKE_DATA_DIR";
/// The environment variable naming the aarch64 first-boot agent.
pub const AGENT_ENV: &str = "PIBAKE_AGENT_BIN";
/// Where `cargo xtask agent` puts the agent, relative to the checkout.
pub const CHECKOUT_AGENT: &str =
    "target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot";

/// One file of the embedded data.
#[derive(Debug)]
pub struct EmbeddedFile {
    /// Relative to the data directory, `/`-separated (`profiles/base.toml`).
    pub path: &'static str,
    /// 0o644 or 0o755.
    pub mode: u32,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/embedded_data.rs"));

/// The embedded profiles and overlays, sorted by path.
pub fn embedded_files() -> &'static [EmbeddedFile] {
    FILES
}

/// sha256 (hex) of the embedded data: each file's path, mode and bytes in
/// path order, lengths first so no two sets of files encode alike.
pub fn embedded_digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"pibake-data\0");
        for file in FILES {
            hasher.update((file.path.len() as u64).to_le_bytes());
            hasher.update(file.path.as_bytes());
            hasher.update(file.mode.to_le_bytes());
            hasher.update((file.bytes.len() as u64).to_le_bytes());
            hasher.update(file.bytes);
        }
        hex::encode(hasher.finalize())
    })
}

/// Where the embedded data is unpacked in the store at `store_root`.
pub fn embedded_dir(store_root: &Path) -> PathBuf {
    store_root.join(format!("data-{}", embedded_digest()))
}

/// Which rule of the search order chose a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOrigin {
    /// `--data-dir`.
    Flag,
    /// `$PIBAKE_DATA_DIR`.
    Env,
    /// The nearest directory at or above the cluster file's with both.
    ClusterTree,
    /// Built into pibake, unpacked into the store.
    Embedded,
}

impl fmt::Display for DataOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataOrigin::Flag => "--data-dir",
            DataOrigin::Env => DATA_DIR_ENV,
            DataOrigin::ClusterTree => "found above the cluster file",
            DataOrigin::Embedded => "built into pibake",
        })
    }
}

/// A directory holding `profiles/` and `overlays/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub path: PathBuf,
    pub origin: DataOrigin,
}

impl DataDir {
    pub fn profiles(&self) -> PathBuf {
        self.path.join("profiles")
    }

    pub fn overlays(&self) -> PathBuf {
        self.path.join("overlays")
    }

    /// The device-tree overlay sources (`<name>.dts`).
    pub fn dtbo(&self) -> PathBuf {
        self.path.join("overlays/dtbo")
    }

    /// One line for the user: which directory, chosen by which rule.
    pub fn describe(&self) -> String {
        format!(
            "profiles and overlays: {} ({})",
            self.path.display(),
            self.origin
        )
    }
}

/// What the search order looks at besides the cluster file.
#[derive(Debug, Clone, Default)]
pub struct DataLookup {
    /// `--data-dir`.
    pub flag: Option<PathBuf>,
    /// `$PIBAKE_DATA_DIR` (empty counts as unset).
    pub env: Option<PathBuf>,
    /// The store to unpack the embedded data into (`None`: the default store).
    pub store: Option<PathBuf>,
}

impl DataLookup {
    /// The lookup with `$PIBAKE_DATA_DIR` read from the environment.
    pub fn from_env(flag: Option<PathBuf>, store: Option<PathBuf>) -> DataLookup {
        DataLookup {
            flag,
            env: std::env::var_os(DATA_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            store,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{origin} {}: no {missing}/ directory there (a data directory holds profiles/ and overlays/)", dir.display())]
    NotData {
        dir: PathBuf,
        origin: DataOrigin,
        missing: &'static str,
    },
    #[error("no store to unpack the built-in profiles and overlays into: pass --store DIR or --data-dir DIR")]
    NoStore(#[source] pibake_inputs::store::StoreError),
    #[error("cannot unpack the built-in profiles and overlays into {}", dir.display())]
    Unpack {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no first-boot agent: pass --agent FILE or set {AGENT_ENV} to an aarch64 pibake-firstboot binary; \
         in a pibake checkout `cargo xtask agent` builds one, used by default when the profiles come from that checkout \
         ({}); pibake does not carry the agent itself (building it needs an aarch64 cross toolchain)",
        checkout_agent.display()
    )]
    NoAgent { checkout_agent: PathBuf },
}

fn is_data_dir(dir: &Path) -> bool {
    dir.join("profiles").is_dir() && dir.join("overlays").is_dir()
}

/// The data directory for `cluster_file` (see the module's search order).
pub fn locate(cluster_file: &Path, lookup: &DataLookup) -> Result<DataDir, DataError> {
    let explicit = [
        (&lookup.flag, DataOrigin::Flag),
        (&lookup.env, DataOrigin::Env),
    ];
    if let Some((Some(dir), origin)) = explicit.into_iter().find(|(d, _)| d.is_some()) {
        for missing in ["profiles", "overlays"] {
            if !dir.join(missing).is_dir() {
                return Err(DataError::NotData {
                    dir: dir.clone(),
                    origin,
                    missing,
                });
            }
        }
        return Ok(DataDir {
            path: dir.clone(),
            origin,
        });
    }
    let absolute = std::path::absolute(cluster_file).unwrap_or_else(|_| cluster_file.into());
    if let Some(dir) = absolute.ancestors().skip(1).find(|d| is_data_dir(d)) {
        return Ok(DataDir {
            path: dir.to_path_buf(),
            origin: DataOrigin::ClusterTree,
        });
    }
    let store = match &lookup.store {
        Some(dir) => dir.clone(),
        None => pibake_inputs::Store::default_root().map_err(DataError::NoStore)?,
    };
    Ok(DataDir {
        path: unpack_embedded(&store)?,
        origin: DataOrigin::Embedded,
    })
}

/// Unpacks the embedded data into `<store_root>/data-<sha256>` unless an
/// identical copy is there, and returns that directory. The copy is written
/// to a temporary directory beside it and renamed into place, so a killed
/// run leaves no half copy under the final name; a copy that differs from
/// the embedded bytes (edited, or damaged) is replaced. Files are read-only
/// (they are pibake's, not yours: copy them into a data directory of your
/// own to change them).
pub fn unpack_embedded(store_root: &Path) -> Result<PathBuf, DataError> {
    let dir = embedded_dir(store_root);
    let err = |source| DataError::Unpack {
        dir: dir.clone(),
        source,
    };
    if matches_embedded(&dir).map_err(err)? {
        return Ok(dir);
    }
    fs::create_dir_all(store_root).map_err(err)?;
    let tmp = tempfile::Builder::new()
        .prefix(".data-")
        .suffix(".tmp")
        .tempdir_in(store_root)
        .map_err(err)?;
    for file in FILES {
        let path = tmp.path().join(file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(err)?;
        }
        fs::write(&path, file.bytes).map_err(err)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode & 0o555)).map_err(err)?;
    }
    if let Err(rename_error) = fs::rename(tmp.path(), &dir) {
        if !dir.exists() {
            return Err(err(rename_error));
        }
        // A concurrent run may have just put a good copy there.
        if matches_embedded(&dir).map_err(err)? {
            return Ok(dir);
        }
        // A bad copy: move it aside, put ours in its place, remove it.
        let old = tempfile::Builder::new()
            .prefix(".data-")
            .suffix(".old")
            .tempdir_in(store_root)
            .map_err(err)?;
        fs::rename(&dir, old.path().join("old")).map_err(err)?;
        fs::rename(tmp.path(), &dir).map_err(err)?;
    }
    // Renamed away: nothing left for the guard to remove.
    let _ = tmp.keep();
    fs::File::open(store_root)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(dir)
}

/// Whether `dir` holds exactly the embedded files: same paths, same
/// executable bit, same bytes, nothing else.
fn matches_embedded(dir: &Path) -> io::Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let mut found = Vec::new();
    if !collect_files(dir, dir, &mut found)? || found.len() != FILES.len() {
        return Ok(false);
    }
    found.sort();
    for ((rel, exec), file) in found.iter().zip(FILES) {
        if rel != file.path || *exec != (file.mode & 0o111 != 0) {
            return Ok(false);
        }
        if fs::read(dir.join(rel))? != file.bytes {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Collects (relative path, executable) of the regular files under `dir`;
/// `false` when something else (a symlink, a device) is there.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, bool)>) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            if !collect_files(root, &path, out)? {
                return Ok(false);
            }
        } else if kind.is_file() {
            let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str) else {
                return Ok(false);
            };
            let exec = entry.metadata()?.permissions().mode() & 0o111 != 0;
            out.push((rel.to_string(), exec));
        } else {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first-boot agent for `build`: `--agent`, then `$PIBAKE_AGENT_BIN`,
/// then the one `cargo xtask agent` built in the checkout the data
/// directory is (when it is one). The embedded data carries no agent: it is
/// an aarch64 binary, and building it needs a cross toolchain.
pub fn agent(
    flag: Option<PathBuf>,
    env: Option<OsString>,
    data: &DataDir,
) -> Result<PathBuf, DataError> {
    if let Some(path) = flag {
        return Ok(path);
    }
    if let Some(path) = env.filter(|v| !v.is_empty()) {
        return Ok(path.into());
    }
    let checkout_agent = data.path.join(CHECKOUT_AGENT);
    if checkout_agent.is_file() {
        Ok(checkout_agent)
    } else {
        Err(DataError::NoAgent { checkout_agent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The checkout's data files, as the build script sees them.
    fn checkout_files() -> Vec<(String, bool)> {
        let root = workspace();
        let mut out = Vec::new();
        for dir in ["profiles", "overlays"] {
            assert!(collect_files(&root, &root.join(dir), &mut out).expect("readable"));
        }
        out.sort();
        out
    }

    #[test]
    fn embedded_data_is_the_checkouts_profiles_and_overlays() {
        let embedded: Vec<(String, bool)> = FILES
            .iter()
            .map(|f| (f.path.to_string(), f.mode & 0o111 != 0))
            .collect();
        assert_eq!(embedded, checkout_files());
        for file in FILES {
            let on_disk = fs::read(workspace().join(file.path)).expect("readable");
            assert!(on_disk == file.bytes, "{} differs", file.path);
        }
        assert!(FILES.iter().any(|f| f.path == "profiles/worker.toml"));
        assert!(FILES
            .iter()
            .any(|f| f.path == "overlays/dtbo/gpio-shutdown.dts"));
        assert!(FILES
            .iter()
            .any(|f| f.path.ends_with("chrony-pps") && f.mode == 0o755));
    }

    #[test]
    fn unpacked_once_and_repaired_when_changed() {
        let store = tempfile::tempdir().expect("tempdir");
        let dir = unpack_embedded(store.path()).expect("unpack");
        assert_eq!(dir, embedded_dir(store.path()));
        assert!(matches_embedded(&dir).expect("readable"));
        let profile = dir.join("profiles/worker.toml");
        let written = fs::metadata(&profile).expect("exists").modified().ok();
        assert_eq!(unpack_embedded(store.path()).expect("again"), dir);
        assert_eq!(
            fs::metadata(&profile).expect("exists").modified().ok(),
            written,
            "an intact copy is not rewritten"
        );
        // An edited file and an extra profile: both undone.
        fs::set_permissions(&profile, fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::write(&profile, "format = 1\n").expect("edit");
        fs::write(dir.join("profiles/extra.toml"), "format = 1\n").expect("add");
        assert!(!matches_embedded(&dir).expect("readable"));
        assert_eq!(unpack_embedded(store.path()).expect("repair"), dir);
        assert!(matches_embedded(&dir).expect("readable"));
        assert!(!dir.join("profiles/extra.toml").exists());
        // No temporary or old copies left beside it.
        let names: Vec<String> = fs::read_dir(store.path())
            .expect("readable")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("data-{}", embedded_digest())]);
    }

    #[test]
    fn search_order_flag_env_cluster_tree_embedded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = |name: &str| {
            let dir = tmp.path().join(name);
            fs::create_dir_all(dir.join("profiles")).expect("mkdir");
            fs::create_dir_all(dir.join("overlays")).expect("mkdir");
            dir
        };
        let (flag, env, tree) = (data("flag"), data("env"), data("tree"));
        let cluster = tree.join("labs/lab/cluster.toml");
        let store = tmp.path().join("store");
        let mut lookup = DataLookup {
            flag: Some(flag.clone()),
            env: Some(env.clone()),
            store: Some(store.clone()),
        };
        let found = |lookup: &DataLookup, cluster: &Path| locate(cluster, lookup).expect("found");
        assert_eq!(found(&lookup, &cluster).path, flag);
        assert_eq!(found(&lookup, &cluster).origin, DataOrigin::Flag);
        lookup.flag = None;
        assert_eq!(found(&lookup, &cluster).path, env);
        assert_eq!(found(&lookup, &cluster).origin, DataOrigin::Env);
        lookup.env = None;
        assert_eq!(found(&lookup, &cluster).path, tree);
        assert_eq!(found(&lookup, &cluster).origin, DataOrigin::ClusterTree);
        let elsewhere = tmp.path().join("elsewhere/cluster.toml");
        let embedded = found(&lookup, &elsewhere);
        assert_eq!(embedded.origin, DataOrigin::Embedded);
        assert_eq!(embedded.path, embedded_dir(&store));
        assert!(embedded.profiles().join("worker.toml").is_file());
        // An explicit directory without the data is an error, not a fallback.
        lookup.env = Some(tmp.path().join("elsewhere"));
        let error = locate(&cluster, &lookup).expect_err("not a data dir");
        assert!(
            error.to_string().starts_with("PIBAKE_DATA_DIR ")
                && error.to_string().contains("no profiles/ directory"),
            "{error}"
        );
    }

    #[test]
    fn agent_flag_env_checkout_then_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = DataDir {
            path: tmp.path().to_path_buf(),
            origin: DataOrigin::ClusterTree,
        };
        let flag = Some(PathBuf::from("/a/agent"));
        let env = Some(OsString::from("/env/agent"));
        assert_eq!(
            agent(flag, env.clone(), &data).expect("flag"),
            Path::new("/a/agent")
        );
        assert_eq!(
            agent(None, env, &data).expect("env"),
            Path::new("/env/agent")
        );
        let error = agent(None, Some(OsString::new()), &data).expect_err("none");
        let text = error.to_string();
        assert!(
            text.contains("--agent FILE") && text.contains("cargo xtask agent"),
            "{text}"
        );
        let built = tmp.path().join(CHECKOUT_AGENT);
        fs::create_dir_all(built.parent().expect("parent")).expect("mkdir");
        fs::write(&built, b"agent").expect("write");
        assert_eq!(agent(None, None, &data).expect("checkout"), built);
    }
}
