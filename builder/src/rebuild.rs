//! `pibake rebuild IMAGE`: prove that a published image came from its sources (`nix-build
//! --check` for an image). The image's manifest names what it was made of: the lock's digest,
//! the agent's sha256 and the build input hash, which covers the whole plan of the image (the
//! cluster description, its profiles and overlays). The rebuild checks that the given cluster,
//! lock and agent give those same hashes, then fetches exactly the lock's inputs into an empty
//! store, builds the image there (never from a cache) and compares the bytes: "bit-identical",
//! or what `pibake diff` shows between the two.

use crate::build::{self, BuildError, BuildOptions};
use crate::inputs::{self, InputsError};
use crate::model::Cluster;
use crate::plan::{self, LockInfo, Plan, PlanError, Selection};
use pibake_image::manifest::Manifest;
use pibake_inputs::{Lock, Store};
use std::path::{Path, PathBuf};

/// A rebuild that could not be made or compared (a different image is an outcome, not this).
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(
        "{path}: cannot read the manifest (pass --manifest FILE if it is not beside the image)"
    )]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pibake manifest: {source}")]
    ManifestFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: cannot read the lock")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{manifest}: image {name} is not in the plan of this cluster (its images: {images})")]
    NotPlanned {
        manifest: PathBuf,
        name: String,
        images: String,
    },
    #[error("{}: {} is {}, but this cluster, lock and agent give {}: {}", .0.manifest.display(), .0.field, .0.recorded, .0.here, .0.hint)]
    Inputs(Box<Mismatch>),
    #[error("{path}: cannot hash the image")]
    Hash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the empty store")]
    Store(#[from] pibake_inputs::store::StoreError),
    #[error("hashing the lock")]
    LockDigest(#[from] pibake_inputs::lock::LockError),
    #[error(transparent)]
    Plan(Box<PlanError>),
    #[error(transparent)]
    Fetch(Box<InputsError>),
    #[error(transparent)]
    Build(Box<BuildError>),
    #[error(transparent)]
    Diff(Box<pibake_flash::diff::DiffError>),
}

macro_rules! boxed_from {
    ($($variant:ident($t:ty)),*) => {$(
        impl From<$t> for RebuildError {
            fn from(e: $t) -> Self {
                RebuildError::$variant(Box::new(e))
            }
        }
    )*};
}
boxed_from!(
    Plan(PlanError),
    Fetch(InputsError),
    Build(BuildError),
    Diff(pibake_flash::diff::DiffError)
);

/// A recorded input that is not what the given sources give.
#[derive(Debug)]
pub struct Mismatch {
    pub manifest: PathBuf,
    pub field: &'static str,
    pub recorded: String,
    pub here: String,
    pub hint: &'static str,
}

/// What a rebuild found.
#[derive(Debug)]
pub enum Outcome {
    /// The rebuilt image has the given image's sha256.
    Identical { sha256: String },
    /// It has another; `diff` is `pibake diff` of the two.
    Differs {
        given: String,
        rebuilt: String,
        diff: String,
    },
}

/// Rebuilds the image at `image` (its manifest at `manifest`) from `cluster` and `lock` in
/// an empty store under `work`; `options` gives the agents and overlays (its out and work
/// directories are replaced by ones under `work`).
pub fn rebuild(
    image: &Path,
    manifest_path: &Path,
    cluster: &Cluster,
    cluster_file: &Path,
    lock: &Lock,
    options: &BuildOptions,
    work: &Path,
) -> Result<Outcome, RebuildError> {
    let text = std::fs::read(manifest_path).map_err(|source| RebuildError::Manifest {
        path: manifest_path.to_owned(),
        source,
    })?;
    let manifest = Manifest::from_json(&text).map_err(|source| RebuildError::ManifestFormat {
        path: manifest_path.to_owned(),
        source,
    })?;
    let plan = plan_of_one(&manifest, manifest_path, cluster, cluster_file)?;
    check_inputs(&manifest, manifest_path, &plan, lock, options)?;
    let given = sha256_of(image)?;
    let store = Store::open(work.join("store"))?;
    inputs::fetch(cluster, lock, &store, false, options.progress)?;
    let opts = BuildOptions {
        out_dir: work.join("out"),
        work_dir: store.work_dir(),
        substituter: None,
        ..options.clone()
    };
    let built = build::build(cluster, &plan, lock, &store, &opts)?;
    let rebuilt = built
        .into_iter()
        .next()
        .ok_or_else(|| RebuildError::NotPlanned {
            manifest: manifest_path.to_owned(),
            name: manifest.name.clone(),
            images: String::new(),
        })?;
    if rebuilt.sha256 == given {
        return Ok(Outcome::Identical { sha256: given });
    }
    let diff = pibake_flash::diff::diff(image, &rebuilt.img)?.render();
    Ok(Outcome::Differs {
        given,
        rebuilt: rebuilt.sha256,
        diff,
    })
}

/// The plan of the manifest's one image (its role's, or its node's), with only that image's
/// rootfs stage: a rebuild of lab-master makes no arm64 rootfs.
fn plan_of_one(
    manifest: &Manifest,
    manifest_path: &Path,
    cluster: &Cluster,
    cluster_file: &Path,
) -> Result<Plan, RebuildError> {
    let selection = Selection {
        per_node: manifest.node.is_some(),
        roles: if manifest.node.is_some() {
            vec![]
        } else {
            vec![manifest.role.clone()]
        },
        nodes: manifest.node.iter().cloned().collect(),
    };
    let info = LockInfo::read(cluster_file).map_err(|source| RebuildError::Lock {
        path: pibake_inputs::lock::path_beside(cluster_file),
        source,
    })?;
    let mut plan = plan::plan(cluster, &info, &selection)?;
    let names: Vec<String> = plan.images.iter().map(|i| i.spec.name.clone()).collect();
    plan.images.retain(|i| i.spec.name == manifest.name);
    let Some(stage) = plan.images.first().map(|i| i.spec.rootfs.id.clone()) else {
        return Err(RebuildError::NotPlanned {
            manifest: manifest_path.to_owned(),
            name: manifest.name.clone(),
            images: names.join(", "),
        });
    };
    plan.rootfs.retain(|id, _| *id == stage);
    Ok(plan)
}

/// The manifest's lock digest, agent and build input hash are what these sources give;
/// else the first that differs, with what would make it right.
fn check_inputs(
    manifest: &Manifest,
    manifest_path: &Path,
    plan: &Plan,
    lock: &Lock,
    options: &BuildOptions,
) -> Result<(), RebuildError> {
    let (input_hash, agent_sha) = build::input_hash_of(plan, &plan.images[0], options)?;
    let checks = [
        ("lock_digest", &manifest.lock_digest, lock.digest()?.to_hex(), "check out the lock the image was built from"),
        ("agent_sha256", &manifest.agent_sha256, agent_sha, "build the agent of the image's pibake version (`cargo xtask agent`; it is reproducible)"),
        ("input_hash", &manifest.input_hash, input_hash.to_string(), "the cluster file, its profiles or overlays differ from the image's: check out the image's sources"),
    ];
    for (field, recorded, here, hint) in checks {
        if *recorded != here {
            return Err(RebuildError::Inputs(Box::new(Mismatch {
                manifest: manifest_path.to_owned(),
                field,
                recorded: recorded.clone(),
                here,
                hint,
            })));
        }
    }
    if let Some(tool) = manifest
        .tool
        .as_ref()
        .filter(|t| **t != build::tool_version())
    {
        // Not a refusal: the inputs are the same, and whether another pibake makes the same
        // bytes is what the rebuild finds out.
        eprintln!(
            "note: {} was built by {tool}; this is {}",
            manifest.name,
            build::tool_version()
        );
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String, RebuildError> {
    let err = |source| RebuildError::Hash {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let (sha, _) =
        pibake_inputs::Sha256::of_reader(std::io::BufReader::with_capacity(1 << 20, file))
            .map_err(err)?;
    Ok(sha.to_hex())
}
