//! `pibake build`: the rootfs stage, then each planned image assembled from its
//! [`ImageSpec`] alone (nothing is derived from the model again), stage by stage: the
//! rendered layers and the agent with the device-tree overlays (`layers`), services
//! (`services`), config.txt and cmdline.txt (`boot_files`), `fstab`, and the `manifest`.
//! Outputs are written to temp files and renamed.

mod boot_files;
mod esp;
mod fstab;
mod layers;
mod manifest;
mod node_table;
mod parallel;
mod qcow2;
mod rootpart;
pub mod sbom;
mod services;

pub use rootpart::{
    entries as rootpart_entries, root_name as rootpart_root, STAGE_KIND as ROOTPART_KIND,
};

use crate::data::Agents;
use crate::hash::{HashError, InputHash};
use crate::model::{Cluster, TableKind};
use crate::plan::{ImagePlan, Plan, RootfsStage};
use crate::rootfs::{self, RootfsError};
use crate::spec::ImageSpec;
use layers::with_parents;
use pibake_image::assemble::{self, AssembleError, AssembleSpec, ImageIds};
use pibake_image::{EntryPath, Rootfs, SourceDateEpoch};
use pibake_inputs::{Lock, LockedPackage, Store};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
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
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("compiling the device-tree overlays")]
    Dtbo(#[source] Box<pibake_image::dtbo::DtboError>),
    #[error("holding the store's shared lock")]
    StoreLock(#[source] pibake_inputs::store::StoreError),
    #[error("rootfs {stage} is {arch}: its images need the first-boot agent built for {arch}")]
    Agent {
        stage: String,
        arch: String,
        #[source]
        source: Box<crate::data::DataError>,
    },
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
    /// The first-boot agents by Debian architecture: each image gets the one of its rootfs
    /// stage's `arch` as /usr/bin/pibake-firstboot.
    pub agents: Agents,
    /// Device-tree overlay sources (`<name>.dts`).
    pub dtbo_dir: PathBuf,
    /// Draw progress on stderr.
    pub progress: bool,
    /// Where a stage output this store lacks may come from before it is made (`--substituter`).
    pub substituter: Option<std::sync::Arc<dyn pibake_inputs::Substituter>>,
}

/// One row of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    pub name: String,
    pub img: PathBuf,
    pub image_bytes: u64,
    pub mapped_bytes: u64,
    pub sha256: String,
    /// The whole image was up to date (its manifest had the same input hash).
    pub cached: bool,
    /// Built around a root partition from the store (made by an earlier build).
    pub root_stored: bool,
    /// Wall time of each step of its build (empty when cached), for progress and benchmarks.
    #[serde(skip)]
    pub phases: Vec<(&'static str, std::time::Duration)>,
}

/// The wall time of each step of one image's build.
struct Timings {
    phases: Vec<(&'static str, std::time::Duration)>,
    since: std::time::Instant,
}

impl Timings {
    fn start() -> Self {
        Self {
            phases: Vec::new(),
            since: std::time::Instant::now(),
        }
    }

    /// Ends the step `name` now.
    fn lap(&mut self, name: &'static str) {
        self.phases.push((name, self.since.elapsed()));
        self.restart();
    }

    /// Starts the next step now (after steps timed elsewhere).
    fn restart(&mut self) {
        self.since = std::time::Instant::now();
    }
}

/// `name 1.2 s, other 0.3 s`: the steps of one image's build.
pub fn describe_phases(phases: &[(&'static str, std::time::Duration)]) -> String {
    phases
        .iter()
        .map(|(name, d)| format!("{name} {:.1} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The manifest written beside each image (one type, shared with `diff` and `flash`).
pub use pibake_image::manifest::{Manifest, ManifestFile};

/// Each rootfs stage's agent (by stage id), picked by the stage's `arch`, with its sha256.
/// [`Agents`] keys each file by its ELF header, so an x86-64 binary cannot land in an arm64
/// image (it would build fine and fail at first boot).
fn stage_agents<'a>(
    stages: impl IntoIterator<Item = &'a RootfsStage>,
    agents: &'a Agents,
) -> Result<BTreeMap<String, (&'a Path, String)>, BuildError> {
    let mut out = BTreeMap::new();
    for stage in stages {
        let agent = agents
            .get(&stage.arch)
            .map_err(|source| BuildError::Agent {
                stage: stage.id.clone(),
                arch: stage.arch.clone(),
                source: Box::new(source),
            })?;
        let sha = sha256_file(agent).map_err(io("cannot read", agent))?;
        out.insert(stage.id.clone(), (agent, sha));
    }
    Ok(out)
}

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
        // read_dir names every entry, so each has a file name.
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "an entry without a name")
        })?;
        hasher.update(name.as_encoded_bytes());
        hasher.update(std::fs::read(&path)?);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn entry_path(image: &str, path: &str) -> Result<EntryPath, BuildError> {
    EntryPath::new(path).map_err(|e| image_err(image, format!("bad path {path}: {e}")))
}

/// An image's build input hash (its manifest's `input_hash`): the plan's hash of it, the
/// agent's and the overlay sources'.
fn build_hash(image: &ImagePlan, agent_sha: &str, dtbo_sha: &str) -> Result<InputHash, BuildError> {
    Ok(InputHash::of(
        "build",
        &serde_json::json!({ "plan": image.input_hash, "agent": agent_sha, "dtbo": dtbo_sha }),
    )?)
}

/// What [`build`] would record as `image`'s input hash with these agents and overlays,
/// and the agent's sha256 (a rebuild checks both against a manifest before it builds).
pub fn input_hash_of(
    plan: &Plan,
    image: &ImagePlan,
    opts: &BuildOptions,
) -> Result<(InputHash, String), BuildError> {
    let agents = stage_agents(plan.rootfs.values(), &opts.agents)?;
    let agent_sha = &agents[&image.spec.rootfs.id].1;
    let dtbo_sha = sha256_dir(&opts.dtbo_dir).map_err(io("cannot read", &opts.dtbo_dir))?;
    Ok((build_hash(image, agent_sha, &dtbo_sha)?, agent_sha.clone()))
}

/// The pibake a manifest names as its builder.
pub fn tool_version() -> String {
    format!("pibake {}", env!("CARGO_PKG_VERSION"))
}

/// Builds every image of the plan.
pub fn build(
    cluster: &Cluster,
    plan: &Plan,
    lock: &Lock,
    store: &Store,
    opts: &BuildOptions,
) -> Result<Vec<BuiltImage>, BuildError> {
    // Before any stage: every rootfs stage's architecture has its agent.
    let agents = stage_agents(plan.rootfs.values(), &opts.agents)?;
    // Held until the build returns: a `pibake gc` beside it waits instead of
    // deleting a tar between its insert and its root.
    let _store_lock = store.shared_lock().map_err(BuildError::StoreLock)?;
    crate::model::verify_timezone(cluster, lock, store.root())?;
    std::fs::create_dir_all(&opts.out_dir).map_err(io("cannot create", &opts.out_dir))?;
    std::fs::create_dir_all(&opts.work_dir).map_err(io("cannot create", &opts.work_dir))?;
    for path in remove_stale_temps(
        &opts.out_dir,
        plan.images.iter().map(|i| i.spec.name.as_str()),
    )? {
        eprintln!("removed {} (left by an interrupted build)", path.display());
    }
    let dtbo_sha = sha256_dir(&opts.dtbo_dir).map_err(io("cannot read", &opts.dtbo_dir))?;
    let dtbo_out = tempfile::tempdir_in(&opts.work_dir)
        .map_err(io("cannot create a directory in", &opts.work_dir))?;
    let dtbos = pibake_image::dtbo::compile_all(&opts.dtbo_dir, dtbo_out.path())
        .map_err(|e| BuildError::Dtbo(Box::new(e)))?;
    let lock_digest = lock
        .digest()
        .map(|d| d.to_hex())
        .map_err(|e| image_err("lock", e.to_string()))?;
    // Per architecture, the versions its images' manifests list.
    let packages: BTreeMap<&str, BTreeMap<String, String>> = lock
        .closures
        .iter()
        .map(|c| {
            let versions = c.packages.iter();
            (
                c.arch.as_str(),
                versions
                    .map(|p| (p.name.clone(), p.version.clone()))
                    .collect(),
            )
        })
        .collect();
    // Per architecture, the closure its images' SBOMs list.
    let closures: BTreeMap<&str, &[LockedPackage]> = lock
        .closures
        .iter()
        .map(|c| (c.arch.as_str(), c.packages.as_slice()))
        .collect();
    // The sources that are Debian's archive, the supplier of their packages in the SBOMs.
    let debian_origins: BTreeSet<String> = std::iter::once(crate::model::HOST_SOURCE.to_string())
        .chain(crate::inputs::kernel_source_name(cluster))
        .collect();

    let progress = parallel::Progress::new(opts.progress);
    let jobs = parallel::jobs();
    // The rootfs stages at once: a mixed lab's arm64 one (qemu-user) beside its amd64 one.
    let stages: Vec<&RootfsStage> = plan.rootfs.values().collect();
    let tars = parallel::map_bounded(jobs, &stages, |stage| {
        rootfs_stage(store, lock, stage, &progress, opts)
    })?;
    let rootfs_tars: BTreeMap<String, PathBuf> =
        stages.iter().map(|s| s.id.clone()).zip(tars).collect();

    // Each image's hashes; those whose outputs are up to date are done.
    let mut built: Vec<Option<BuiltImage>> = Vec::new();
    let mut todo: Vec<Job<'_>> = Vec::new();
    for image in &plan.images {
        let agent_sha = &agents[&image.spec.rootfs.id].1;
        let input_hash = build_hash(image, agent_sha, &dtbo_sha)?;
        // What the root partition is made of: the plan's root hash and the same two files.
        let root_key = InputHash::of(
            "build-root",
            &serde_json::json!({ "root": image.root_hash, "agent": agent_sha, "dtbo": dtbo_sha }),
        )?;
        built.push(cached_image(&opts.out_dir, &image.spec.name, &input_hash));
        if built.last().is_some_and(Option::is_none) {
            todo.push(Job {
                slot: built.len() - 1,
                image,
                input_hash,
                root_key,
            });
        }
    }
    // The images at once; images sharing a root partition wait for the first of them,
    // which makes it, so that it is made once.
    let mut firsts = BTreeSet::new();
    let (first, rest): (Vec<Job<'_>>, Vec<Job<'_>>) =
        todo.into_iter().partition(|j| firsts.insert(j.root_key));
    for wave in [first, rest] {
        let done = parallel::map_bounded(jobs, &wave, |job| {
            let spec = &job.image.spec;
            let (agent, agent_sha) = &agents[&spec.rootfs.id];
            let arch = plan.rootfs[&spec.rootfs.id].arch.as_str();
            let inputs = Inputs {
                store,
                rootfs_tar: &rootfs_tars[&spec.rootfs.id],
                dtbos: &dtbos,
                agent,
                agent_sha,
                lock_digest: &lock_digest,
                packages: &packages[arch],
                closure: closures[arch],
                debian_origins: &debian_origins,
            };
            let bar = progress.bar(format!("image {}: assembling", spec.name));
            let result = build_image(job.image, &inputs, job.input_hash, job.root_key, opts)?;
            let how = if result.root_stored {
                "built around its stored root partition"
            } else {
                "built"
            };
            let total: std::time::Duration = result.phases.iter().map(|p| p.1).sum();
            progress.finish(
                &bar,
                format!(
                    "image {}: {how} in {:.1} s ({})",
                    spec.name,
                    total.as_secs_f64(),
                    describe_phases(&result.phases)
                ),
            );
            Ok(result)
        })?;
        for (job, result) in wave.iter().zip(done) {
            built[job.slot] = Some(result);
        }
    }
    built
        .into_iter()
        .map(|b| b.ok_or_else(|| image_err("?", "an image was neither cached nor built")))
        .collect()
}

/// An image to build, with its place in the summary.
#[derive(Debug)]
struct Job<'a> {
    slot: usize,
    image: &'a ImagePlan,
    input_hash: InputHash,
    root_key: InputHash,
}

/// One rootfs stage: its tar in the store, built first if needed.
fn rootfs_stage(
    store: &Store,
    lock: &Lock,
    stage: &RootfsStage,
    progress: &parallel::Progress,
    opts: &BuildOptions,
) -> Result<PathBuf, BuildError> {
    let err = |source| BuildError::Rootfs {
        stage: stage.id.clone(),
        source: Box::new(source),
    };
    let closure = lock.closure(&stage.arch).ok_or_else(|| {
        err(rootfs::RootfsError::NoClosure {
            arch: stage.arch.clone(),
        })
    })?;
    let bar = progress.bar(format!(
        "rootfs {}: mmdebstrap of {} {} packages (cached by input hash)",
        stage.id,
        closure.packages.len(),
        stage.arch
    ));
    let substituter = opts.substituter.as_deref();
    let (tar, how) =
        rootfs::ensure(store, closure, stage, &opts.work_dir, substituter).map_err(err)?;
    progress.finish(&bar, format!("rootfs {}: {}", stage.id, how.describe()));
    Ok(tar)
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
        let sbom = out_dir.join(format!("{name}.spdx.json"));
        removed.extend(pibake_image::atomic::remove_stale_temps(&sbom).map_err(err)?);
        let qcow2 = qcow2::path_of(&out_dir.join(format!("{name}.img")));
        removed.extend(pibake_image::atomic::remove_stale_temps(&qcow2).map_err(err)?);
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
    // Nor is an image without its SBOM (older pibakes wrote none).
    std::fs::metadata(out_dir.join(format!("{name}.spdx.json"))).ok()?;
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
        root_stored: true,
        phases: Vec::new(),
    })
}

/// Identifiers derived from the image's root key (no randomness): they are in the root
/// (fstab's PARTUUIDs, the ext4 UUID), so images that share a root share them.
fn ids(root_key: &InputHash, table: TableKind) -> ImageIds {
    ImageIds::from_input_hash(root_key.bytes(), table)
}

/// What an image is built from besides its spec, all covered by the build's input hash.
struct Inputs<'a> {
    /// Where the spec's stored entries are (a preloaded image's archive).
    store: &'a Store,
    rootfs_tar: &'a Path,
    dtbos: &'a [PathBuf],
    /// The agent of the image's rootfs architecture.
    agent: &'a Path,
    agent_sha: &'a str,
    lock_digest: &'a str,
    packages: &'a BTreeMap<String, String>,
    /// The lock's closure of the image's architecture, for the SBOM.
    closure: &'a [LockedPackage],
    debian_origins: &'a BTreeSet<String>,
}

/// One image, stage by stage; everything comes from the spec and `inputs`.
fn build_image(
    image: &ImagePlan,
    inputs: &Inputs<'_>,
    input_hash: InputHash,
    root_key: InputHash,
    opts: &BuildOptions,
) -> Result<BuiltImage, BuildError> {
    let spec = &image.spec;
    let name = spec.name.as_str();
    let ids = ids(&root_key, spec.boot.table);
    let mut timings = Timings::start();
    let mut rootfs =
        Rootfs::from_base_tar(inputs.rootfs_tar, &opts.work_dir).map_err(|source| {
            BuildError::Tar {
                image: name.to_string(),
                source: Box::new(source),
            }
        })?;
    timings.lap("rootfs index");
    layers::apply_rendered(&mut rootfs, name, &spec.layers, inputs.store)?;
    layers::apply_agent_and_dtbos(&mut rootfs, name, inputs.agent, inputs.dtbos)?;
    services::apply(&mut rootfs, name, &spec.services)?;
    let boot = if spec.boot.is_efi() {
        esp::apply(&mut rootfs, name, &ids.table.root_partuuid())?
    } else {
        boot_files::apply(&mut rootfs, name, &spec.boot, &ids)?
    };
    fstab::apply(&mut rootfs, name, &ids, &spec.boot.boot_dir())?;
    node_table::apply(&mut rootfs, name, &spec.node_table, &spec.boot.boot_dir())?;
    timings.lap("layers and boot files");
    let licenses = sbom::declared_licenses(&rootfs, inputs.closure)
        .map_err(io("cannot read the copyright files of", inputs.rootfs_tar))?;
    timings.lap("licenses");
    let (outputs, root_stored, files) =
        assemble(&mut rootfs, spec, ids, inputs.store, &root_key, opts)?;
    timings.phases.extend(outputs.phases.iter().cloned());
    timings.restart();
    // Proxmox imports a pc-efi master's disk from a qcow2.
    let qcow2 = if spec.boot.is_efi() {
        Some(qcow2::write(name, &outputs.img)?)
    } else {
        None
    };
    timings.lap("qcow2");
    let manifest = Manifest {
        format: pibake_image::manifest::MANIFEST_FORMAT,
        name: name.to_string(),
        role: spec.role.clone(),
        node: spec.node.clone(),
        nodes: Some(spec.nodes.clone()),
        platforms: spec
            .platforms
            .iter()
            .map(|p| p.name().to_string())
            .collect(),
        input_hash: input_hash.to_string(),
        rootfs_input_hash: spec.rootfs.input_hash.to_string(),
        layers_hash: image.layers_hash.to_string(),
        lock_digest: inputs.lock_digest.to_string(),
        source_date_epoch: spec.source_date_epoch,
        agent_sha256: inputs.agent_sha.to_string(),
        tool: Some(tool_version()),
        table: format!("{:?}", spec.boot.table).to_lowercase(),
        root_partuuid: outputs.root_partuuid.clone(),
        sha256: outputs.sha256.clone(),
        packages: inputs.packages.clone(),
        qcow2: qcow2.as_ref().map(|q| pibake_image::manifest::Qcow2Output {
            sha256: q.sha256.clone(),
            tool: q.tool.clone(),
        }),
        boot,
        files,
    };
    // The SBOM before the manifest: an image counts as built once its manifest is there.
    let sbom_path = opts.out_dir.join(format!("{name}.spdx.json"));
    let sbom_json = sbom::Sbom {
        image: name,
        image_sha256: &outputs.sha256,
        source_date_epoch: spec.source_date_epoch,
        tool_version: env!("CARGO_PKG_VERSION"),
        packages: inputs.closure,
        licenses: &licenses,
        debian_origins: inputs.debian_origins,
    }
    .to_json()
    .map_err(|e| image_err(name, format!("the SBOM: {e}")))?;
    pibake_image::atomic::write(&sbom_path, &sbom_json)
        .map_err(|e| io("cannot write", &sbom_path)(e.source))?;
    let manifest_path = opts.out_dir.join(format!("{name}.manifest.json"));
    manifest::write(&manifest_path, &manifest)?;
    timings.lap("SBOM and manifest");
    let mut published = vec![
        &outputs.img,
        &outputs.zst,
        &outputs.bmap,
        &outputs.sha256_file,
        &manifest_path,
        &sbom_path,
    ];
    published.extend(qcow2.as_ref().map(|q| &q.path));
    publish(&published)?;
    Ok(BuiltImage {
        name: name.to_string(),
        img: outputs.img,
        image_bytes: outputs.image_bytes,
        mapped_bytes: outputs.mapped_bytes,
        sha256: outputs.sha256,
        cached: false,
        root_stored,
        phases: timings.phases,
    })
}

/// The partition table, FAT and ext4 of the finished tree, and the image's outputs and
/// manifest entries: the root partition (and its entries) is the stored one of `root_key`
/// when a build made it before, else it is made and stored; the boot partition is always
/// written.
fn assemble(
    rootfs: &mut Rootfs,
    spec: &ImageSpec,
    ids: ImageIds,
    store: &Store,
    root_key: &InputHash,
    opts: &BuildOptions,
) -> Result<(assemble::ImageOutputs, bool, Vec<ManifestFile>), BuildError> {
    let mut assembly = AssembleSpec::new(
        &spec.name,
        &opts.out_dir,
        &opts.work_dir,
        ids,
        SourceDateEpoch(spec.source_date_epoch),
    );
    assembly.boot_size = u64::from(spec.boot.boot_size_mib) << 20;
    assembly.boot_dir = spec.boot.boot_dir();
    assembly.root_min_free = u64::from(spec.boot.root_headroom_mib) << 20;
    let err = |source| BuildError::Assemble {
        image: spec.name.clone(),
        source: Box::new(source),
    };
    let started = std::time::Instant::now();
    let boot = assemble::split_boot(rootfs, &assembly).map_err(err)?;
    let boot_files = manifest::files(&spec.name, &boot, Some(&assembly.boot_dir), rootfs)?;
    let (root, cached) = rootpart::ensure(
        store,
        root_key,
        &spec.name,
        rootfs,
        &assembly,
        opts.substituter.as_deref(),
    )?;
    let files = manifest::merged(&root.files, boot_files);
    let took = started.elapsed();
    let mut outputs = assemble::compose(&boot, rootfs, root.part(), &assembly).map_err(err)?;
    let phase = if cached {
        "root partition (stored)"
    } else {
        "root partition (tar, mke2fs, scan, zstd)"
    };
    outputs.phases.insert(0, (phase, took));
    Ok((outputs, cached, files))
}

/// Outputs are published artifacts, not secrets: readable by all.
fn publish(paths: &[&PathBuf]) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    for path in paths {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(io("cannot set permissions of", path))?;
    }
    Ok(())
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
            match (i.cached, i.root_stored) {
                (true, _) => "cached",
                (false, true) => "built (root partition stored)",
                (false, false) => "built",
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rootfs_stage_gets_the_agent_of_its_arch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elf = |name: &str, machine: u16| {
            let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
            h.resize(18, 0);
            h.extend_from_slice(&machine.to_le_bytes());
            h.resize(64, 0);
            let path = dir.path().join(name);
            std::fs::write(&path, &h).expect("write");
            path
        };
        let stage = |id: &str, arch: &str| RootfsStage {
            id: id.into(),
            suite: "trixie".into(),
            arch: arch.into(),
            packages: Default::default(),
            files: Default::default(),
            input_hash: InputHash::of_bytes(id.as_bytes()),
        };
        let (arm, amd) = (elf("agent-arm64", 183), elf("agent-amd64", 62));
        let stages = [stage("lab-pi", "arm64"), stage("lab-pc", "amd64")];
        let both = Agents::from_files([amd.clone(), arm.clone()], crate::data::AgentOrigin::Flag)
            .expect("agents");
        let picked = stage_agents(&stages, &both).expect("both arches");
        assert_eq!(picked["lab-pi"].0, arm);
        assert_eq!(picked["lab-pc"].0, amd);
        assert_eq!(
            picked["lab-pi"].1,
            sha256_file(&arm).expect("readable"),
            "the input hash covers the image's own agent"
        );
        assert_ne!(picked["lab-pi"].1, picked["lab-pc"].1);
        // Only the arm64 agent: the amd64 stage is refused before any stage runs.
        let arm_only = Agents::from_files([arm], crate::data::AgentOrigin::Flag).expect("agents");
        let error = stage_agents(&stages, &arm_only).expect_err("no amd64 agent");
        assert_eq!(
            error.to_string(),
            "rootfs lab-pc is amd64: its images need the first-boot agent built for amd64"
        );
        let cause = std::error::Error::source(&error)
            .expect("a cause")
            .to_string();
        assert!(
            cause.starts_with("no first-boot agent for amd64") && cause.contains("--agent FILE"),
            "{cause}"
        );
    }

    #[test]
    fn stale_temps_of_the_planned_images_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = [
            ".lab-worker.img.AbC123.tmp",
            ".lab-worker.img.zst.AbC123.tmp",
            ".lab-worker.manifest.json.AbC123.tmp",
            ".lab-worker.spdx.json.AbC123.tmp",
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
}
