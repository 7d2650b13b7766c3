//! Where a cluster's profiles and overlays come from, the copy of them built
//! into pibake, and where the first-boot agents come from (one per Debian
//! architecture, see [`agents`]).
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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming a data directory.
pub const DATA_DIR_ENV: &str = "PIBAKE_DATA_DIR";
/// The environment variable naming the first-boot agents: one path, or
/// several separated by `:` (one per architecture).
pub const AGENT_ENV: &str = "PIBAKE_AGENT_BIN";
/// Where `cargo xtask agent` puts the agents (arm64, amd64), relative to the
/// checkout.
pub const CHECKOUT_AGENTS: [&str; 2] = [
    "target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot",
    "target/agent-cross/x86_64-unknown-linux-gnu/release/pibake-firstboot",
];
/// The Debian architectures pibake builds agents for, as [`elf_arch`] names them.
pub const AGENT_ARCHES: [&str; 2] = ["arm64", "amd64"];

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
        "no first-boot agent for {arch} ({}): pass --agent FILE with an {arch} pibake-firstboot binary \
         (--agent may be given once per architecture) or set {AGENT_ENV} to such binaries separated by `:`; \
         in a pibake checkout `cargo xtask agent` builds the arm64 and amd64 ones, used by default when neither is given \
         and the profiles come from that checkout{}; pibake does not carry the agent itself (building it needs \
         Debian's rustc with each architecture's standard library)",
        found_list(found),
        checkout_list(checkout_agents)
    )]
    NoAgent {
        arch: String,
        /// The agents there are, by architecture.
        found: Vec<(&'static str, PathBuf)>,
        /// The checkout's default paths looked at (empty when none was).
        checkout_agents: Vec<PathBuf>,
    },
    #[error("cannot read the first-boot agent {} ({origin})", path.display())]
    AgentUnreadable {
        path: PathBuf,
        origin: AgentOrigin,
        #[source]
        source: io::Error,
    },
    #[error(
        "the first-boot agent {} ({origin}) is not a 64-bit little-endian ELF program for {}: \
         pass a pibake-firstboot binary (`cargo xtask agent` builds them)",
        path.display(),
        AGENT_ARCHES.join(" or ")
    )]
    AgentNotElf { path: PathBuf, origin: AgentOrigin },
    #[error(
        "two first-boot agents for {arch}: {} and {} ({origin}): pass one per architecture",
        first.display(),
        second.display()
    )]
    AgentTwice {
        arch: &'static str,
        first: PathBuf,
        second: PathBuf,
        origin: AgentOrigin,
    },
}

fn found_list(found: &[(&'static str, PathBuf)]) -> String {
    if found.is_empty() {
        return "none found".to_string();
    }
    let found: Vec<String> = found
        .iter()
        .map(|(arch, path)| format!("{arch}: {}", path.display()))
        .collect();
    format!("found only {}", found.join(", "))
}

fn checkout_list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return String::new();
    }
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!(" ({})", paths.join(", "))
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

/// The Debian architecture of a 64-bit little-endian ELF program (`e_machine`
/// 183: arm64, 62: amd64), if it is one pibake builds for.
pub fn elf_arch(path: &Path) -> io::Result<Option<&'static str>> {
    use std::io::Read;
    let mut head = [0u8; 20];
    let n = fs::File::open(path)?.take(20).read(&mut head)?;
    if n < 20 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Ok(None);
    }
    Ok(match u16::from_le_bytes([head[18], head[19]]) {
        183 => Some("arm64"),
        62 => Some("amd64"),
        _ => None,
    })
}

/// Which rule of [`agents`] named an agent file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOrigin {
    /// `--agent`.
    Flag,
    /// `$PIBAKE_AGENT_BIN`.
    Env,
    /// What `cargo xtask agent` built in the checkout.
    Checkout,
}

impl fmt::Display for AgentOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentOrigin::Flag => "--agent",
            AgentOrigin::Env => AGENT_ENV,
            AgentOrigin::Checkout => "built in the checkout by `cargo xtask agent`",
        })
    }
}

/// The first-boot agents, by Debian architecture (`arm64`, `amd64`), each
/// keyed by its file's ELF header, never by its name or by the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agents {
    by_arch: BTreeMap<&'static str, PathBuf>,
    /// The checkout's default paths looked at, for [`Agents::get`]'s error.
    checkout_agents: Vec<PathBuf>,
}

impl Agents {
    /// The agents in `files`, each keyed by its ELF architecture: an
    /// unreadable file, one that is not an ELF of an architecture in
    /// [`AGENT_ARCHES`], or two of one architecture is an error naming the file.
    pub fn from_files(
        files: impl IntoIterator<Item = PathBuf>,
        origin: AgentOrigin,
    ) -> Result<Agents, DataError> {
        let mut agents = Agents::default();
        for path in files {
            agents.insert(path, origin)?;
        }
        Ok(agents)
    }

    fn insert(&mut self, path: PathBuf, origin: AgentOrigin) -> Result<(), DataError> {
        let arch = match elf_arch(&path) {
            Ok(Some(arch)) => arch,
            Ok(None) => return Err(DataError::AgentNotElf { path, origin }),
            Err(source) => {
                return Err(DataError::AgentUnreadable {
                    path,
                    origin,
                    source,
                })
            }
        };
        if let Some(first) = self.by_arch.get(arch) {
            return Err(DataError::AgentTwice {
                arch,
                first: first.clone(),
                second: path,
                origin,
            });
        }
        self.by_arch.insert(arch, path);
        Ok(())
    }

    /// The agent for the Debian architecture `arch`, or an error saying how
    /// to get one.
    pub fn get(&self, arch: &str) -> Result<&Path, DataError> {
        self.by_arch
            .get(arch)
            .map(PathBuf::as_path)
            .ok_or_else(|| DataError::NoAgent {
                arch: arch.to_string(),
                found: self.iter().map(|(a, p)| (a, p.to_path_buf())).collect(),
                checkout_agents: self.checkout_agents.clone(),
            })
    }

    /// (architecture, path), by architecture.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Path)> + '_ {
        self.by_arch
            .iter()
            .map(|(arch, path)| (*arch, path.as_path()))
    }

    pub fn is_empty(&self) -> bool {
        self.by_arch.is_empty()
    }
}

/// The first-boot agents for `build`, the first of
/// 1. `--agent FILE` (`flags`, given once per architecture),
/// 2. `$PIBAKE_AGENT_BIN` (`env`: paths separated by `:`; empty counts as unset),
/// 3. the ones `cargo xtask agent` built in the checkout the data directory
///    is (when it is one), each used when present.
///
/// As with the data directory, an explicit choice replaces the defaults
/// rather than mixing with them. Finding no agent is not an error here: the
/// build asks [`Agents::get`] for the architectures it needs. The embedded
/// data carries no agent: building it needs Debian's rustc with each
/// architecture's standard library.
pub fn agents(
    flags: Vec<PathBuf>,
    env: Option<OsString>,
    data: &DataDir,
) -> Result<Agents, DataError> {
    if !flags.is_empty() {
        return Agents::from_files(flags, AgentOrigin::Flag);
    }
    if let Some(list) = env.filter(|v| !v.is_empty()) {
        let paths = std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty());
        return Agents::from_files(paths, AgentOrigin::Env);
    }
    let checkout_agents: Vec<PathBuf> = CHECKOUT_AGENTS.iter().map(|p| data.path.join(p)).collect();
    let present = checkout_agents.iter().filter(|p| p.is_file()).cloned();
    let mut agents = Agents::from_files(present, AgentOrigin::Checkout)?;
    agents.checkout_agents = checkout_agents;
    Ok(agents)
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

    /// A 64-byte ELF header, 64-bit little endian, of machine `machine`.
    fn elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        h.resize(18, 0);
        h.extend_from_slice(&machine.to_le_bytes());
        h.resize(64, 0);
        h
    }

    #[test]
    fn the_agents_architecture_is_read_from_its_elf_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut big_endian = elf(183);
        big_endian[5] = 2;
        let mut elf32 = elf(62);
        elf32[4] = 1;
        for (bytes, want) in [
            (elf(183), Some("arm64")),
            (elf(62), Some("amd64")),
            (elf(40), None),
            (big_endian, None),
            (elf32, None),
            (elf(183)[..19].to_vec(), None),
            (b"#!/bin/sh\n".to_vec(), None),
        ] {
            let path = dir.path().join("agent");
            fs::write(&path, &bytes).expect("write");
            assert_eq!(elf_arch(&path).expect("read"), want);
        }
        // The host's own test binary is an ELF of the host's architecture.
        let me = std::env::current_exe().expect("own path");
        let host = if cfg!(target_arch = "x86_64") {
            "amd64"
        } else {
            "arm64"
        };
        assert_eq!(elf_arch(&me).expect("read"), Some(host));
        assert!(AGENT_ARCHES.contains(&host));
    }

    #[test]
    fn agents_flags_env_checkout_keyed_by_elf_arch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = DataDir {
            path: tmp.path().join("checkout"),
            origin: DataOrigin::ClusterTree,
        };
        let write = |name: &str, bytes: &[u8]| {
            let path = tmp.path().join(name);
            fs::write(&path, bytes).expect("write");
            path
        };
        let arm = write("agent-a", &elf(183));
        let amd = write("agent-b", &elf(62));
        let amd_env = write("agent-c", &elf(62));
        // Flags, in any order, keyed by the header; they beat the variable.
        let env = std::env::join_paths([&amd_env]).ok();
        let got = agents(vec![amd.clone(), arm.clone()], env.clone(), &data).expect("flags");
        assert_eq!(got.get("arm64").expect("arm64"), arm);
        assert_eq!(got.get("amd64").expect("amd64"), amd);
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            vec![("amd64", amd.as_path()), ("arm64", arm.as_path())]
        );
        // The variable: one path, or several separated by `:`.
        let got = agents(vec![], env, &data).expect("env");
        assert_eq!(got.get("amd64").expect("amd64"), amd_env);
        let list = std::env::join_paths([&arm, &amd_env]).expect("joinable");
        let got = agents(vec![], Some(list), &data).expect("env list");
        assert_eq!(got.get("arm64").expect("arm64"), arm);
        assert_eq!(got.get("amd64").expect("amd64"), amd_env);
        // Asking for an architecture the flags lack: what to do.
        let only_arm = agents(vec![arm.clone()], None, &data).expect("one flag");
        let text = only_arm.get("amd64").expect_err("no amd64").to_string();
        assert!(
            text.starts_with("no first-boot agent for amd64 (found only arm64: ")
                && text.contains("--agent FILE with an amd64")
                && text.contains("separated by `:`")
                && text.contains("cargo xtask agent"),
            "{text}"
        );
        // Nothing given and nothing built: empty, and each architecture's
        // error names the checkout's paths.
        let none = agents(vec![], Some(OsString::new()), &data).expect("none");
        assert!(none.is_empty());
        let text = none.get("arm64").expect_err("none").to_string();
        assert!(
            text.contains("(none found)")
                && text.contains(&data.path.join(CHECKOUT_AGENTS[0]).display().to_string())
                && text.contains(&data.path.join(CHECKOUT_AGENTS[1]).display().to_string()),
            "{text}"
        );
        // The checkout's: each used when present.
        let built_arm = data.path.join(CHECKOUT_AGENTS[0]);
        fs::create_dir_all(built_arm.parent().expect("parent")).expect("mkdir");
        fs::write(&built_arm, elf(183)).expect("write");
        let got = agents(vec![], None, &data).expect("checkout arm64");
        assert_eq!(got.get("arm64").expect("arm64"), built_arm);
        assert!(got.get("amd64").is_err());
        let built_amd = data.path.join(CHECKOUT_AGENTS[1]);
        fs::create_dir_all(built_amd.parent().expect("parent")).expect("mkdir");
        fs::write(&built_amd, elf(62)).expect("write");
        let got = agents(vec![], None, &data).expect("checkout both");
        assert_eq!(got.get("arm64").expect("arm64"), built_arm);
        assert_eq!(got.get("amd64").expect("amd64"), built_amd);
    }

    #[test]
    fn agents_refuse_two_of_one_arch_a_non_elf_and_an_unreadable_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = DataDir {
            path: tmp.path().to_path_buf(),
            origin: DataOrigin::ClusterTree,
        };
        let write = |name: &str, bytes: &[u8]| {
            let path = tmp.path().join(name);
            fs::write(&path, bytes).expect("write");
            path
        };
        let (one, two) = (write("one", &elf(183)), write("two", &elf(183)));
        let text = agents(vec![one.clone(), two.clone()], None, &data)
            .expect_err("two arm64")
            .to_string();
        assert_eq!(
            text,
            format!(
                "two first-boot agents for arm64: {} and {} (--agent): pass one per architecture",
                one.display(),
                two.display()
            )
        );
        let script = write("script", b"#!/bin/sh\n");
        let riscv = write("riscv", &elf(243));
        for bad in [&script, &riscv] {
            let list = std::env::join_paths([&one, bad]).expect("joinable");
            let text = agents(vec![], Some(list), &data)
                .expect_err("not an agent")
                .to_string();
            assert!(
                text.starts_with(&format!(
                    "the first-boot agent {} (PIBAKE_AGENT_BIN) is not a 64-bit little-endian ELF program for arm64 or amd64",
                    bad.display()
                )),
                "{text}"
            );
        }
        let missing = tmp.path().join("missing");
        let error = agents(vec![missing.clone()], None, &data).expect_err("missing");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot read the first-boot agent {} (--agent)",
                missing.display()
            )
        );
        assert!(matches!(error, DataError::AgentUnreadable { .. }));
        // A directory is unreadable too, not a silent skip.
        let error = agents(vec![tmp.path().to_path_buf()], None, &data).expect_err("a dir");
        assert!(
            matches!(error, DataError::AgentUnreadable { .. }),
            "{error}"
        );
    }
}
