//! `pibake build`: the rootfs stage, the rendered layers and the assembly of
//! each planned image, with outputs written to temp files and renamed.

use crate::boot::{self, ConfigTxt, KernelFiles};
use crate::hash::InputHash;
use crate::model::{Cluster, TableKind};
use crate::plan::{ImagePlan, Plan};
use crate::render::{self, EntryKind as LayerKind, ImageScope};
use crate::rootfs::{self, RootfsError};
use pibake_image::assemble::{self, AssembleError, AssembleSpec, ImageIds};
use pibake_image::tree::ContentSource;
use pibake_image::{Content, Entry, EntryKind, EntryPath, Layer, Rootfs, SourceDateEpoch};
use pibake_inputs::{Lock, Store};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("rootfs stage {stage}")]
    Rootfs {
        stage: String,
        #[source]
        source: Box<RootfsError>,
    },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("image {image}: assembly")]
    Assemble {
        image: String,
        #[source]
        source: Box<AssembleError>,
    },
    #[error("image {image}: reading the rootfs tar")]
    Tar {
        image: String,
        #[source]
        source: Box<pibake_image::tar::TarError>,
    },
    #[error("image {image}: rendering")]
    Render {
        image: String,
        #[source]
        source: Box<render::RenderError>,
    },
    #[error("compiling the device-tree overlays")]
    Dtbo(#[source] Box<pibake_image::dtbo::DtboError>),
    #[error("the first-boot agent binary {} is missing: build it with `cargo xtask agent` or pass --agent", path.display())]
    NoAgent { path: PathBuf },
    /// `cluster.timezone` is not a zone of the locked tzdata (check cannot know before fetch).
    #[error(transparent)]
    Timezone(#[from] crate::model::TimezoneError),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

fn image_err(image: &str, message: impl Into<String>) -> BuildError {
    BuildError::Image {
        image: image.to_string(),
        message: message.into(),
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// Scratch space (spool files, the root tar, mmdebstrap's work).
    pub work_dir: PathBuf,
    /// The aarch64 first-boot agent to install as /usr/bin/pibake-firstboot.
    pub agent: PathBuf,
    /// Device-tree overlay sources (`<name>.dts`).
    pub dtbo_dir: PathBuf,
    /// Overrides the cluster's partition table.
    pub table: Option<TableKind>,
    /// Draw progress on stderr.
    pub progress: bool,
}

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    pub name: String,
    pub img: PathBuf,
    pub image_bytes: u64,
    pub mapped_bytes: u64,
    pub sha256: String,
    pub cached: bool,
}

/// The manifest written beside each image (one type, shared with `diff` and `flash`).
pub use pibake_image::manifest::{Manifest, ManifestFile};

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

fn sha256_dir(dir: &Path) -> std::io::Result<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dts"))
        .collect();
    names.sort();
    let mut hasher = Sha256::new();
    for path in names {
        hasher.update(
            path.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update(std::fs::read(&path)?);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn entry_path(image: &str, path: &str) -> Result<EntryPath, BuildError> {
    EntryPath::new(path).map_err(|e| image_err(image, format!("bad path {path}: {e}")))
}

/// Builds every image of the plan.
pub fn build(
    cluster: &Cluster,
    plan: &Plan,
    lock: &Lock,
    store: &Store,
    opts: &BuildOptions,
) -> Result<Vec<BuiltImage>, BuildError> {
    if !opts.agent.is_file() {
        return Err(BuildError::NoAgent {
            path: opts.agent.clone(),
        });
    }
    crate::model::verify_timezone(cluster, lock, store.root())?;
    std::fs::create_dir_all(&opts.out_dir).map_err(io("cannot create", &opts.out_dir))?;
    std::fs::create_dir_all(&opts.work_dir).map_err(io("cannot create", &opts.work_dir))?;
    for path in remove_stale_temps(&opts.out_dir, plan.images.iter().map(|i| i.name.as_str()))? {
        eprintln!("removed {} (left by an interrupted build)", path.display());
    }
    let agent_sha = sha256_file(&opts.agent).map_err(io("cannot read", &opts.agent))?;
    let dtbo_sha = sha256_dir(&opts.dtbo_dir).map_err(io("cannot read", &opts.dtbo_dir))?;
    let dtbo_out = tempfile::tempdir_in(&opts.work_dir)
        .map_err(io("cannot create a directory in", &opts.work_dir))?;
    let dtbos = pibake_image::dtbo::compile_all(&opts.dtbo_dir, dtbo_out.path())
        .map_err(|e| BuildError::Dtbo(Box::new(e)))?;
    let lock_digest = lock
        .digest()
        .map(|d| d.to_hex())
        .map_err(|e| image_err("lock", e.to_string()))?;
    let packages: BTreeMap<String, String> = lock
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();

    let mut rootfs_tars = BTreeMap::new();
    for stage in plan.rootfs.values() {
        let bar = progress(
            opts.progress,
            format!(
                "rootfs {}: mmdebstrap of {} packages (cached by input hash)",
                stage.id,
                lock.packages.len()
            ),
        );
        let (tar, cached) =
            rootfs::ensure(store, lock, stage, &opts.work_dir).map_err(|source| {
                BuildError::Rootfs {
                    stage: stage.id.clone(),
                    source: Box::new(source),
                }
            })?;
        bar.finish_with_message(format!(
            "rootfs {}: {}",
            stage.id,
            if cached { "cached" } else { "built" }
        ));
        rootfs_tars.insert(stage.id.clone(), tar);
    }

    let mut built = Vec::new();
    for image in &plan.images {
        let input_hash = InputHash::of(
            "build",
            &serde_json::json!({
                "plan": image.input_hash,
                "agent": agent_sha,
                "dtbo": dtbo_sha,
                "table": opts.table,
            }),
        );
        if let Some(done) = cached_image(&opts.out_dir, &image.name, &input_hash) {
            built.push(done);
            continue;
        }
        let bar = progress(opts.progress, format!("image {}: assembling", image.name));
        let result = build_image(
            cluster,
            plan,
            image,
            &rootfs_tars[&image.rootfs],
            &dtbos,
            input_hash,
            &agent_sha,
            &lock_digest,
            &packages,
            opts,
        )?;
        bar.finish_with_message(format!("image {}: built", image.name));
        built.push(result);
    }
    Ok(built)
}

fn progress(enabled: bool, message: String) -> indicatif::ProgressBar {
    if !enabled {
        eprintln!("{message}");
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar
}

/// A build killed by a signal leaves its temp outputs (`.lab-worker.img.XXXXXX.tmp`, as big as
/// the image) in the output folder: remove those of the images `names` and nothing else (not
/// other files, nor the temp files a running build holds locked).
fn remove_stale_temps<'a>(
    out_dir: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<PathBuf>, BuildError> {
    let mut removed = Vec::new();
    let err = |e: pibake_image::atomic::AtomicError| {
        io("cannot remove stale temp files of", &e.path)(e.source)
    };
    for name in names {
        let manifest = out_dir.join(format!("{name}.manifest.json"));
        removed.extend(assemble::remove_stale_temps(out_dir, name).map_err(err)?);
        removed.extend(pibake_image::atomic::remove_stale_temps(&manifest).map_err(err)?);
    }
    Ok(removed)
}

/// An image whose manifest records the same input hash is not rebuilt.
fn cached_image(out_dir: &Path, name: &str, input_hash: &InputHash) -> Option<BuiltImage> {
    let manifest_path = out_dir.join(format!("{name}.manifest.json"));
    let manifest = Manifest::from_json(&std::fs::read(manifest_path).ok()?).ok()?;
    // A manifest without the node list is an older pibake's: rebuilding rewrites it (the
    // image bytes come out the same).
    manifest.nodes.as_ref()?;
    let img = out_dir.join(format!("{name}.img"));
    let meta = std::fs::metadata(&img).ok()?;
    if manifest.input_hash != input_hash.to_string() {
        return None;
    }
    let line = std::fs::read_to_string(out_dir.join(format!("{name}.sha256"))).ok()?;
    if !line.starts_with(&manifest.sha256) {
        return None;
    }
    Some(BuiltImage {
        name: name.to_string(),
        img,
        image_bytes: meta.len(),
        mapped_bytes: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
        sha256: manifest.sha256,
        cached: true,
    })
}

/// Identifiers derived from the image's input hash (no randomness).
fn ids(input_hash: &InputHash, table: TableKind) -> ImageIds {
    let table = match table {
        TableKind::Mbr => pibake_image::assemble::TableKind::Mbr,
        TableKind::Gpt => pibake_image::assemble::TableKind::Gpt,
    };
    ImageIds::from_input_hash(input_hash.bytes(), table)
}

#[allow(clippy::too_many_arguments)]
fn build_image(
    cluster: &Cluster,
    plan: &Plan,
    image: &ImagePlan,
    rootfs_tar: &Path,
    dtbos: &[PathBuf],
    input_hash: InputHash,
    agent_sha: &str,
    lock_digest: &str,
    packages: &BTreeMap<String, String>,
    opts: &BuildOptions,
) -> Result<BuiltImage, BuildError> {
    let name = image.name.as_str();
    let epoch = plan.lock.source_date_epoch;
    let mut rootfs =
        Rootfs::from_base_tar(rootfs_tar, &opts.work_dir).map_err(|source| BuildError::Tar {
            image: name.to_string(),
            source: Box::new(source),
        })?;
    let nodes: Vec<_> = image
        .nodes
        .iter()
        .filter_map(|n| cluster.nodes.get(n))
        .collect();
    let scope = ImageScope {
        name,
        role: &image.role,
        nodes: nodes.clone(),
        build_epoch: epoch,
    };
    let rendered = render::render_image(cluster, &scope).map_err(|source| BuildError::Render {
        image: name.to_string(),
        source: Box::new(source),
    })?;
    for layer in &rendered.layers {
        let mut entries = Vec::new();
        for e in &layer.entries {
            let path = entry_path(name, &e.path)?;
            let entry = match &e.kind {
                LayerKind::File(bytes) => Entry::file(path, Content::bytes(bytes.clone()), e.mode),
                LayerKind::Symlink(target) => Entry::symlink(path, target.clone()),
            };
            entries.push(entry.owner(e.uid, e.gid));
        }
        rootfs.apply_layer(&Layer {
            name: layer.overlay.clone(),
            entries: with_parents(&rootfs, entries),
        });
    }

    // The agent and the project's device-tree overlays.
    let mut extra = vec![Entry::file(
        entry_path(name, "usr/bin/pibake-firstboot")?,
        Content::Path(opts.agent.clone()),
        0o755,
    )];
    for dtbo in dtbos {
        let file = dtbo
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        extra.push(Entry::file(
            entry_path(name, &format!("boot/firmware/overlays/{file}"))?,
            Content::Path(dtbo.clone()),
            0o644,
        ));
    }
    rootfs.apply_layer(&Layer {
        name: "agent-and-dtbo".into(),
        entries: with_parents(&rootfs, extra),
    });

    // Services: the role's enabled, other roles' disabled, at build time.
    let role = &cluster.roles[&image.role];
    let all: BTreeSet<String> = cluster
        .roles
        .values()
        .flat_map(|r| r.profile.services.iter().cloned())
        .collect();
    let disabled: BTreeSet<String> = all.difference(&role.profile.services).cloned().collect();
    let services = service_layer(name, &rootfs, &role.profile.services, &disabled)?;
    rootfs.apply_layer(&services);

    // Boot files, rendered against what the rootfs holds.
    let boot_names: Vec<String> = rootfs
        .tree()
        .iter()
        .filter_map(|e| {
            e.path
                .as_str()
                .strip_prefix("boot/firmware/")
                .map(str::to_string)
        })
        .filter(|n| !n.contains('/'))
        .collect();
    let kernel =
        KernelFiles::from_names(boot_names.iter().map(String::as_str)).ok_or_else(|| {
            image_err(
                name,
                "no vmlinuz-* in /boot/firmware: is raspi-firmware in the profile's packages?",
            )
        })?;
    let table_kind = opts.table.unwrap_or(cluster.image.table);
    let ids = ids(&input_hash, table_kind);
    let gps = cluster.time.gps.as_ref().and_then(|g| {
        nodes
            .iter()
            .find(|n| n.name == g.node)
            .map(|n| (g, n.platform))
    });
    let node_lines: Vec<String> = if image.node.is_some() {
        nodes
            .iter()
            .flat_map(|n| n.config_txt.iter().cloned())
            .collect()
    } else {
        Vec::new()
    };
    let config_txt = ConfigTxt {
        image: name,
        kernel_source: cluster.kernel,
        kernel: &kernel,
        button: cluster.button.as_ref(),
        gps,
        profile_lines: &role.profile.config_txt,
        node_lines: &node_lines,
    }
    .render();
    for overlay in boot::referenced_overlays(&config_txt) {
        let path = entry_path(name, &format!("boot/firmware/overlays/{overlay}.dtbo"))?;
        if rootfs.tree().get(&path).is_none() {
            return Err(image_err(
                name,
                format!("config.txt names dtoverlay={overlay} but boot/firmware/overlays/{overlay}.dtbo is in neither the firmware package nor overlays/dtbo/"),
            ));
        }
    }
    let cmdline = boot::cmdline_txt(&ids.table.root_partuuid(), gps.is_none());
    let fstab = format!(
        "# Rendered by pibake.\nPARTUUID={} / ext4 defaults,noatime 0 1\nPARTUUID={} /boot/firmware vfat defaults,noatime,umask=0077 0 2\n",
        ids.table.root_partuuid(),
        ids.table.boot_partuuid()
    );
    let mut boot_files = BTreeMap::new();
    boot_files.insert("config.txt".to_string(), config_txt.clone());
    boot_files.insert("cmdline.txt".to_string(), cmdline.clone());
    rootfs.apply_layer(&Layer {
        name: "boot".into(),
        entries: vec![
            Entry::file(
                entry_path(name, "boot/firmware/config.txt")?,
                Content::bytes(config_txt.into_bytes()),
                0o644,
            ),
            Entry::file(
                entry_path(name, "boot/firmware/cmdline.txt")?,
                Content::bytes(cmdline.into_bytes()),
                0o644,
            ),
            Entry::file(
                entry_path(name, "etc/fstab")?,
                Content::bytes(fstab.into_bytes()),
                0o644,
            ),
        ],
    });

    let files = manifest_files(name, &rootfs)?;
    let mut spec = AssembleSpec::new(
        name,
        &opts.out_dir,
        &opts.work_dir,
        ids,
        SourceDateEpoch(epoch),
    );
    spec.boot_size = u64::from(cluster.image.boot_size_mib) << 20;
    spec.root_min_free = u64::from(cluster.image.root_headroom_mib) << 20;
    let outputs =
        assemble::assemble(&mut rootfs, &spec).map_err(|source| BuildError::Assemble {
            image: name.to_string(),
            source: Box::new(source),
        })?;
    let manifest = Manifest {
        format: pibake_image::manifest::MANIFEST_FORMAT,
        name: name.to_string(),
        role: image.role.clone(),
        node: image.node.clone(),
        nodes: Some(rendered.node_table.nodes.keys().cloned().collect()),
        platforms: image
            .platforms
            .iter()
            .map(|p| p.name().to_string())
            .collect(),
        input_hash: input_hash.to_string(),
        rootfs_input_hash: plan.rootfs[&image.rootfs].input_hash.to_string(),
        layers_hash: image.layers_hash.to_string(),
        lock_digest: lock_digest.to_string(),
        source_date_epoch: epoch,
        agent_sha256: agent_sha.to_string(),
        table: format!("{table_kind:?}").to_lowercase(),
        root_partuuid: outputs.root_partuuid.clone(),
        sha256: outputs.sha256.clone(),
        packages: packages.clone(),
        boot: boot_files,
        files,
    };
    let manifest_path = opts.out_dir.join(format!("{name}.manifest.json"));
    let json = manifest
        .to_json()
        .map_err(|e| image_err(name, e.to_string()))?;
    pibake_image::atomic::write(&manifest_path, &json)
        .map_err(|e| io("cannot write", &manifest_path)(e.source))?;
    // Outputs are published artifacts, not secrets: readable by all.
    for path in [
        &outputs.img,
        &outputs.zst,
        &outputs.bmap,
        &outputs.sha256_file,
        &manifest_path,
    ] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(io("cannot set permissions of", path))?;
    }
    Ok(BuiltImage {
        name: name.to_string(),
        img: outputs.img,
        image_bytes: outputs.image_bytes,
        mapped_bytes: outputs.mapped_bytes,
        sha256: outputs.sha256,
        cached: false,
    })
}

/// Adds directory entries for parents the tree lacks (root-owned, 0755).
fn with_parents(rootfs: &Rootfs, entries: Vec<Entry>) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut added = BTreeSet::new();
    for entry in &entries {
        let mut parent = entry.path.parent();
        let mut missing = Vec::new();
        while let Some(p) = parent {
            if rootfs.tree().get(&p).is_some()
                || added.contains(p.as_str())
                || entries.iter().any(|e| e.path == p)
            {
                break;
            }
            missing.push(p.clone());
            parent = p.parent();
        }
        for p in missing.into_iter().rev() {
            added.insert(p.as_str().to_string());
            out.push(Entry::dir(p, 0o755));
        }
    }
    out.extend(entries);
    out
}

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// Enables `enabled` (symlinks from their [Install] targets) and removes the
/// enablement symlinks of `disabled`, the way `systemctl enable/disable` would.
fn service_layer(
    image: &str,
    rootfs: &Rootfs,
    enabled: &BTreeSet<String>,
    disabled: &BTreeSet<String>,
) -> Result<Layer, BuildError> {
    let mut entries = Vec::new();
    for unit in disabled {
        for entry in rootfs.tree().iter() {
            let path = entry.path.as_str();
            if path.starts_with("etc/systemd/system/")
                && entry.path.file_name() == unit
                && matches!(entry.kind, EntryKind::Symlink(_))
            {
                entries.push(Entry::delete(entry.path.clone()));
            }
        }
    }
    for unit in enabled {
        let found = UNIT_DIRS.iter().find_map(|dir| {
            let path = EntryPath::new(&format!("{dir}/{unit}")).ok()?;
            rootfs.tree().get(&path).cloned().map(|e| (dir, e))
        });
        let Some((dir, entry)) = found else {
            return Err(image_err(image, format!("service {unit} is not in the image: add the package that ships it to the profile")));
        };
        let text = match &entry.kind {
            EntryKind::File(content) => {
                let mut text = String::new();
                rootfs
                    .open(content)
                    .and_then(|mut r| r.read_to_string(&mut text))
                    .map_err(|e| image_err(image, format!("reading {unit}: {e}")))?;
                text
            }
            EntryKind::Symlink(target) => {
                return Err(image_err(
                    image,
                    format!("service {unit} is an alias of {target}: enable the unit itself"),
                ));
            }
            _ => return Err(image_err(image, format!("{unit} is not a unit file"))),
        };
        let target_dir = if dir.starts_with("etc/") {
            "/etc/systemd/system"
        } else {
            "/usr/lib/systemd/system"
        };
        for (key, wanted) in install_targets(&text) {
            let suffix = if key == "RequiredBy" {
                "requires"
            } else {
                "wants"
            };
            let link = entry_path(
                image,
                &format!("etc/systemd/system/{wanted}.{suffix}/{unit}"),
            )?;
            entries.push(Entry::symlink(link, format!("{target_dir}/{unit}")));
        }
    }
    Ok(Layer {
        name: "services".into(),
        entries: with_parents(rootfs, entries),
    })
}

/// `WantedBy=`/`RequiredBy=` targets of a unit's [Install] section.
fn install_targets(unit: &str) -> Vec<(String, String)> {
    let mut in_install = false;
    let mut out = Vec::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if key == "WantedBy" || key == "RequiredBy" {
                for target in value.split_whitespace() {
                    out.push((key.to_string(), target.to_string()));
                }
            }
        }
    }
    out
}

fn manifest_files(image: &str, rootfs: &Rootfs) -> Result<Vec<ManifestFile>, BuildError> {
    let mut files = Vec::new();
    for entry in rootfs.tree().iter() {
        let (kind, size, sha256, target) = match &entry.kind {
            EntryKind::File(content) => {
                let mut hasher = Sha256::new();
                let mut reader = rootfs.open(content).map_err(|e| {
                    image_err(image, format!("reading {}: {e}", entry.path.as_str()))
                })?;
                let size = std::io::copy(&mut reader, &mut hasher).map_err(|e| {
                    image_err(image, format!("reading {}: {e}", entry.path.as_str()))
                })?;
                (
                    "file",
                    Some(size),
                    Some(hex::encode(hasher.finalize())),
                    None,
                )
            }
            EntryKind::Dir => ("dir", None, None, None),
            EntryKind::Symlink(t) => ("symlink", None, None, Some(t.clone())),
            EntryKind::CharDevice { .. } => ("char", None, None, None),
            EntryKind::BlockDevice { .. } => ("block", None, None, None),
            EntryKind::Fifo => ("fifo", None, None, None),
            EntryKind::Delete => continue,
        };
        files.push(ManifestFile {
            path: format!("/{}", entry.path.as_str()),
            kind: kind.to_string(),
            mode: ManifestFile::mode_text(entry.mode),
            uid: entry.uid,
            gid: entry.gid,
            size,
            sha256,
            target,
        });
    }
    Ok(files)
}

/// The summary table printed at the end of a build.
pub fn summary(images: &[BuiltImage]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>9}  {:<16}",
        "image", "size", "used", "sha256"
    );
    for i in images {
        let _ = writeln!(
            out,
            "{:<16} {:>8.0}M {:>8.0}M  {:<16} {}",
            i.name,
            i.image_bytes as f64 / 1048576.0,
            i.mapped_bytes as f64 / 1048576.0,
            &i.sha256[..16.min(i.sha256.len())],
            if i.cached { "cached" } else { "built" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> EntryPath {
        EntryPath::new(p).expect("valid path")
    }

    #[test]
    fn stale_temps_of_the_planned_images_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = [
            ".lab-worker.img.AbC123.tmp",
            ".lab-worker.img.zst.AbC123.tmp",
            ".lab-worker.manifest.json.AbC123.tmp",
        ];
        let kept = [
            ".lab-master.img.AbC123.tmp",
            "lab-worker.img",
            "lab-worker.img.tmp",
            "notes.txt",
        ];
        for n in stale.iter().chain(&kept) {
            std::fs::write(dir.path().join(n), n).expect("plant");
        }
        let mut removed = remove_stale_temps(dir.path(), ["lab-worker"]).expect("clean");
        removed.sort();
        let mut want: Vec<PathBuf> = stale.iter().map(|n| dir.path().join(n)).collect();
        want.sort();
        assert_eq!(removed, want);
        for n in kept {
            assert!(dir.path().join(n).exists(), "{n} was removed");
        }
    }

    #[test]
    fn services_are_enabled_from_install_and_disabled_everywhere() {
        let mut rootfs = Rootfs::empty();
        let unit = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nRequiredBy=sysinit.target\n";
        rootfs.apply_layer(&Layer {
            name: "base".into(),
            entries: vec![
                Entry::file(
                    path("usr/lib/systemd/system/a.service"),
                    Content::bytes(unit.as_bytes().to_vec()),
                    0o644,
                ),
                Entry::symlink(
                    path("etc/systemd/system/sockets.target.wants/gpsd.socket"),
                    "/usr/lib/systemd/system/gpsd.socket",
                ),
                Entry::symlink(
                    path("etc/systemd/system/multi-user.target.wants/gpsd.service"),
                    "/usr/lib/systemd/system/gpsd.service",
                ),
                Entry::symlink(
                    path("etc/systemd/system/multi-user.target.wants/ssh.service"),
                    "/usr/lib/systemd/system/ssh.service",
                ),
            ],
        });
        let enabled: BTreeSet<String> = ["a.service".to_string()].into();
        let disabled: BTreeSet<String> =
            ["gpsd.socket".to_string(), "gpsd.service".to_string()].into();
        let layer = service_layer("t", &rootfs, &enabled, &disabled).expect("layer");
        rootfs.apply_layer(&layer);
        let tree = rootfs.tree();
        assert!(tree
            .get(&path("etc/systemd/system/sockets.target.wants/gpsd.socket"))
            .is_none());
        assert!(tree
            .get(&path(
                "etc/systemd/system/multi-user.target.wants/gpsd.service"
            ))
            .is_none());
        assert!(tree
            .get(&path(
                "etc/systemd/system/multi-user.target.wants/ssh.service"
            ))
            .is_some());
        let wants = tree
            .get(&path(
                "etc/systemd/system/multi-user.target.wants/a.service",
            ))
            .expect("enabled");
        assert_eq!(
            wants.kind,
            EntryKind::Symlink("/usr/lib/systemd/system/a.service".into())
        );
        assert!(tree
            .get(&path(
                "etc/systemd/system/sysinit.target.requires/a.service"
            ))
            .is_some());
        // A service no package ships is an error naming it.
        let missing: BTreeSet<String> = ["nope.service".to_string()].into();
        let err =
            service_layer("t", &rootfs, &missing, &BTreeSet::new()).expect_err("missing unit");
        assert!(err.to_string().contains("nope.service"), "{err}");
    }
}
