//! The rootfs stage: mmdebstrap installs exactly the locked packages from a
//! local repository made of the store's .debs (offline), for arm64 through
//! qemu-user binfmt, with SOURCE_DATE_EPOCH from the stage's closure. The tar is kept in
//! the store; a pointer named by the stage's input hash finds it again.

use crate::plan::RootfsStage;
use pibake_inputs::repo::{self, RepoError};
use pibake_inputs::store::{EntryName, StoreError};
use pibake_inputs::{Closure, Store, Substituter};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(
        "mmdebstrap is not installed: run `apt-get install mmdebstrap` (or `cargo xtask setup`)"
    )]
    NoMmdebstrap,
    #[error("arm64 programs cannot run here: run `apt-get install qemu-user-static` and register it with binfmt_misc (`cargo xtask setup` does both)")]
    NoBinfmt,
    #[error("the lock has no {arch} closure: run `pibake lock`")]
    NoClosure { arch: String },
    #[error("making the local repository of the locked packages")]
    Repo(#[source] RepoError),
    #[error("store")]
    Store(#[source] StoreError),
    #[error("mmdebstrap cannot bootstrap another architecture without arch-test: run `apt-get install arch-test` (`pibake doctor` lists what else is missing)")]
    NoArchTest,
    #[error("mmdebstrap failed ({status}); its log is {}{errors}", log.display())]
    Mmdebstrap {
        status: String,
        log: PathBuf,
        /// The log's `E:` lines, each on a line of its own after the message.
        errors: String,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { what, path, source }
}

/// Paths removed or reset in the rootfs because they must not be shared by
/// clones or differ between two runs (DESIGN.md invariants 1 and 6).
const SCRUB: &str = r#"set -e
root="$1"
rm -f "$root"/etc/ssh/ssh_host_*
printf 'uninitialized\n' > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root/var/lib/systemd/random-seed" "$root/var/lib/systemd/credential.secret"
rm -f "$root/var/cache/ldconfig/aux-cache"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
find "$root/var/log" -type f -delete
rm -rf "$root"/tmp/* "$root"/var/tmp/*
rm -f "$root/etc/resolv.conf"
ln -s ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
printf 'pibake\n' > "$root/etc/hostname"
printf '# Add your Debian mirror here (pibake builds from a pinned, local repository).\n' > "$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
"#;

/// `--setup-hook`s writing the stage's [`RootfsStage::files`] into the root
/// before the first package is unpacked (each file's text staged in `dir`).
fn pre_install_hooks(stage: &RootfsStage, dir: &Path) -> Result<Vec<String>, RootfsError> {
    let mut hooks = Vec::new();
    for (i, (path, text)) in stage.files.iter().enumerate() {
        let staged = dir.join(format!("file-{i}"));
        std::fs::write(&staged, text).map_err(io("cannot write", &staged))?;
        // Paths come from the plan (constants of pibake), never from a user:
        // still, quote them for the shell.
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let target = format!("\"$1\"/{}", quote(path));
        let parent = format!(
            "\"$1\"/{}",
            quote(
                Path::new(path)
                    .parent()
                    .map_or("", |p| p.to_str().unwrap_or(""))
            )
        );
        hooks.push(format!(
            "--setup-hook=mkdir -p {parent} && cp {} {target} && chmod 0644 {target}",
            quote(&staged.to_string_lossy())
        ));
    }
    Ok(hooks)
}

/// The store's name for this stage's outputs (`stages/rootfs-<input hash>`, a cache's
/// `stage-rootfs-<input hash>`).
pub const STAGE_KIND: &str = "rootfs";

/// Where a stage's output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// This store had it.
    Cached,
    /// A substituter (a shared cache) gave it.
    Substituted,
    /// Made here.
    Built,
}

impl Provenance {
    pub fn describe(self) -> &'static str {
        match self {
            Provenance::Cached => "cached",
            Provenance::Substituted => "pulled from the cache",
            Provenance::Built => "built",
        }
    }
}

/// Whether `s` put the stage's output into the store. A cache that fails or refuses what
/// it holds (unreachable, an untrusted signature, a wrong hash) is warned about and the
/// stage is made here, as Nix does with a failing substituter: the cache can only save
/// time, never decide the result.
pub fn substituted(s: &dyn Substituter, store: &Store, kind: &str, input_hash: &str) -> bool {
    match s.substitute_stage(store, kind, input_hash) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("warning: {e}; making the {kind} stage here");
            false
        }
    }
}

/// The stored tar's entry of a stage, if it was built (or pulled) before.
fn cached_entry(store: &Store, stage: &RootfsStage) -> Option<EntryName> {
    let entry = store.stage_entry(STAGE_KIND, &stage.input_hash.to_string())?;
    store.contains(&entry).then_some(entry)
}

/// The stored tar of a stage, if it was built before.
pub fn cached(store: &Store, stage: &RootfsStage) -> Option<PathBuf> {
    cached_entry(store, stage).map(|e| store.path_of(&e))
}

/// Debian's name of the architecture pibake runs on.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The `E:` lines of an mmdebstrap log (what went wrong, without reading
/// the whole log), as `\n  E: …` lines; empty when the log has none.
fn error_lines(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("E: "))
        .take(10)
        .map(|l| format!("\n  {l}"))
        .collect()
}

fn check_tools(arch: &str) -> Result<(), RootfsError> {
    let have = |p: &str| Path::new(p).exists();
    if !have("/usr/bin/mmdebstrap") {
        return Err(RootfsError::NoMmdebstrap);
    }
    if arch == "arm64"
        && std::env::consts::ARCH != "aarch64"
        && !have("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    {
        return Err(RootfsError::NoBinfmt);
    }
    let foreign = arch != host_arch();
    if foreign && pibake_host::doctor::find_program("arch-test", &[]).is_none() {
        return Err(RootfsError::NoArchTest);
    }
    Ok(())
}

/// Returns the stage's tar in the store, building it first if needed; the
/// bool says whether it was cached.
pub fn ensure(
    store: &Store,
    closure: &Closure,
    stage: &RootfsStage,
    work: &Path,
    substituter: Option<&dyn Substituter>,
) -> Result<(PathBuf, Provenance), RootfsError> {
    if let Some(path) = cached(store, stage) {
        return Ok((path, Provenance::Cached));
    }
    if let Some(s) = substituter {
        if substituted(s, store, STAGE_KIND, &stage.input_hash.to_string()) {
            if let Some(entry) = cached_entry(store, stage) {
                record_root(store, stage, &entry)?;
                return Ok((store.path_of(&entry), Provenance::Substituted));
            }
        }
    }
    check_tools(&stage.arch)?;
    // What a killed build of any stage left behind.
    pibake_host::scratch::remove_stale(work, "rootfs-")
        .map_err(io("cannot clean stale work directories in", work))?;
    let dir = pibake_host::scratch::ScratchDir::new(work, "rootfs-")
        .map_err(io("cannot create a work directory in", work))?;
    let view = repo::build(closure, store, &dir.path().join("repo")).map_err(RootfsError::Repo)?;
    let tar = dir.path().join("rootfs.tar");
    let log = work.join(format!("{}.mmdebstrap.log", stage.id));
    let log_file = std::fs::File::create(&log).map_err(io("cannot create", &log))?;
    let include: Vec<String> = closure.packages.iter().map(|p| p.name.clone()).collect();
    let hooks = pre_install_hooks(stage, dir.path())?;
    let status = Command::new("mmdebstrap")
        .env("SOURCE_DATE_EPOCH", closure.source_date_epoch.to_string())
        .env("LC_ALL", "C.UTF-8")
        .env_remove("TMPDIR")
        .arg("--mode=auto")
        .arg("--variant=essential")
        .arg(format!("--architectures={}", stage.arch))
        .arg(format!("--include={}", include.join(",")))
        .arg("--aptopt=Acquire::Languages \"none\"")
        // The local repository may sit below directories only root can
        // enter (a 0700 temp or home dir): no need to drop to _apt for it.
        .arg("--aptopt=APT::Sandbox::User \"root\"")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*/changelog*")
        .args(hooks)
        .arg(format!(
            "--customize-hook=sh -c '{}' sh \"$1\"",
            SCRUB.replace('\'', "'\\''")
        ))
        // An empty suite: the flat repository holds exactly the locked
        // packages, so every index counts for the Essential:yes selection.
        .arg("")
        .arg(&tar)
        // copy: makes apt copy the .debs into the chroot (file: would need
        // the repository visible inside it).
        .arg(view.sources_list_line().replacen("file:", "copy:", 1))
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().map_err(io("cannot write", &log))?)
        .stderr(log_file)
        .status()
        .map_err(io("cannot run mmdebstrap for", &tar))?;
    if !status.success() {
        let errors = error_lines(&log);
        return Err(RootfsError::Mmdebstrap {
            status: status.to_string(),
            log,
            errors,
        });
    }
    let entry = store
        .insert_file(&format!("{}.tar", stage.id), &tar, None)
        .map_err(RootfsError::Store)?;
    store
        .set_stage_pointer(STAGE_KIND, &stage.input_hash.to_string(), &entry)
        .map_err(RootfsError::Store)?;
    record_root(store, stage, &entry)?;
    Ok((store.path_of(&entry), Provenance::Built))
}

/// The stage's gc root: one per stage id (`rootfs-<id>`), replaced by each
/// new build of the stage, so the tar of a superseded package set is no
/// longer referenced and `pibake gc` frees it. (Roots were once named by
/// input hash, one per build and never removed; those are dropped here when
/// they hold this stage's tar name.)
pub fn record_root(
    store: &Store,
    stage: &RootfsStage,
    entry: &EntryName,
) -> Result<(), RootfsError> {
    store
        .add_root(&stage_root(stage), std::slice::from_ref(entry))
        .map_err(RootfsError::Store)?;
    let tar = format!("{}.tar", stage.id);
    for (name, entries) in store.roots().map_err(RootfsError::Store)? {
        let legacy = name
            .strip_prefix("rootfs-")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if legacy && entries.iter().all(|e| e.name() == tar) {
            store.remove_root(&name).map_err(RootfsError::Store)?;
        }
    }
    Ok(())
}

/// The name of a stage's gc root.
fn stage_root(stage: &RootfsStage) -> String {
    format!("rootfs-{}", stage.id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stage(id: &str, hash: &[u8]) -> RootfsStage {
        RootfsStage {
            id: id.into(),
            suite: "trixie".into(),
            arch: "arm64".into(),
            packages: Default::default(),
            files: Default::default(),
            input_hash: crate::hash::InputHash::of_bytes(hash),
        }
    }

    #[test]
    fn a_rebuilt_stage_lets_gc_free_the_superseded_tar() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store
            .insert_reader("lab-rootfs.tar", None, &b"old package set"[..])
            .unwrap();
        // A root of the old naming (by input hash) for this stage, and one
        // of another cluster's stage, which must stay.
        let other = store
            .insert_reader("other-rootfs.tar", None, &b"other cluster"[..])
            .unwrap();
        store
            .add_root(
                &format!("rootfs-{}", "a".repeat(64)),
                std::slice::from_ref(&old),
            )
            .unwrap();
        store
            .add_root(
                &format!("rootfs-{}", "b".repeat(64)),
                std::slice::from_ref(&other),
            )
            .unwrap();
        record_root(&store, &stage("lab-rootfs", b"v1"), &old).unwrap();
        assert!(store.gc(&Default::default()).unwrap().removed.is_empty());

        let new = store
            .insert_reader("lab-rootfs.tar", None, &b"one package more"[..])
            .unwrap();
        record_root(&store, &stage("lab-rootfs", b"v2"), &new).unwrap();
        let report = store.gc(&Default::default()).unwrap();
        assert_eq!(
            report.removed,
            vec![old.clone()],
            "the superseded tar is freed"
        );
        assert!(store.contains(&new) && store.contains(&other));
        let roots = store.roots().unwrap();
        assert_eq!(roots.len(), 2, "{roots:?}");
        assert_eq!(roots["rootfs-lab-rootfs"], vec![new]);
    }

    #[test]
    fn gc_waits_for_a_build_holding_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let unrooted = store
            .insert_reader("x.tar", None, &b"mid-build"[..])
            .unwrap();
        let held = store.shared_lock().unwrap(); // what `build` holds
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        let gc = std::thread::spawn(move || {
            let store = Store::open(root).unwrap();
            let report = store.gc(&Default::default()).unwrap();
            tx.send(report.removed.len()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(500))
                .is_err(),
            "gc ran while a build held the store"
        );
        assert!(store.contains(&unrooted));
        drop(held);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap(),
            1
        );
        gc.join().unwrap();
    }

    #[test]
    fn the_error_carries_the_logs_e_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(
            &log,
            "I: running\nE: install arch-test for foreign architecture support\nW: later\n",
        )
        .unwrap();
        let error = RootfsError::Mmdebstrap {
            status: "exit status: 25".into(),
            errors: error_lines(&log),
            log: log.clone(),
        };
        let text = error.to_string();
        assert!(
            text.ends_with("\n  E: install arch-test for foreign architecture support"),
            "{text}"
        );
        assert!(!text.contains("W: later"), "{text}");
        assert_eq!(error_lines(&dir.path().join("missing.log")), "");
    }
}

#[cfg(test)]
mod substituter_tests {
    use super::*;
    use pibake_inputs::SubstituteError;

    #[derive(Debug)]
    struct Fixed(Result<bool, &'static str>);

    impl Substituter for Fixed {
        fn substitute_stage(&self, _: &Store, _: &str, _: &str) -> Result<bool, SubstituteError> {
            self.0.map_err(|m| SubstituteError {
                cache: "http://127.0.0.1:1/x".into(),
                message: m.into(),
            })
        }
    }

    #[test]
    fn a_failing_substituter_means_making_the_stage_here() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|source| StoreError::Io {
            path: "tmp".into(),
            source,
        })?;
        let store = Store::open(dir.path())?;
        assert!(substituted(&Fixed(Ok(true)), &store, "rootfs", "ab"));
        assert!(!substituted(&Fixed(Ok(false)), &store, "rootfs", "ab"));
        assert!(!substituted(
            &Fixed(Err("refused: no valid signature")),
            &store,
            "rootfs",
            "ab"
        ));
        Ok(())
    }
}
