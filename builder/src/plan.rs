//! The plan: which images `build` makes, from which stages, each named by
//! the hash of its inputs.

use crate::hash::{HashError, InputHash};
use crate::model::Cluster;
use crate::render::{self, ImageScope, RenderError};
use crate::spec::{BootSpec, GpsBoot, ImageSpec, RootfsRef, ServiceSpec};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bumped when a change to pibake changes the bytes of a rootfs stage built
/// from the same inputs, so old store entries are not reused.
pub const ROOTFS_EPOCH: u32 = 1;
/// The same for images: see [`crate::spec::IMAGE_EPOCH`].
pub use crate::spec::IMAGE_EPOCH;

/// What the plan knows about the lock file beside the cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    pub path: PathBuf,
    /// Digest of the lock file's bytes; `None` when there is no lock yet.
    pub digest: Option<InputHash>,
    /// Per architecture, what its closure gives the stages built from it;
    /// empty when there is no readable lock.
    pub closures: BTreeMap<String, ClosureInfo>,
    /// The pins of the preloaded images' archives, by name (what the images
    /// that carry one name it by); empty when there is no readable lock.
    pub images: BTreeMap<String, pibake_inputs::lock::LockedImage>,
}

/// One architecture's closure, as the plan hashes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosureInfo {
    /// Digest of the closure alone (each package's name, version,
    /// architecture and sha256), what a rootfs is made of: a lock rewritten
    /// with other origins, comments or closures of other architectures but
    /// the same .debs rebuilds nothing.
    pub closure: InputHash,
    /// SOURCE_DATE_EPOCH of the builds from this closure.
    pub source_date_epoch: u64,
}

impl ClosureInfo {
    fn of(closure: &pibake_inputs::Closure) -> Result<Self, HashError> {
        let debs: Vec<(&str, &str, &str, String)> = closure
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.architecture.as_str(),
                    p.sha256.to_string(),
                )
            })
            .collect();
        Ok(ClosureInfo {
            closure: InputHash::of("closure", &debs)?,
            source_date_epoch: closure.source_date_epoch,
        })
    }
}

impl LockInfo {
    /// Reads the digest and closures of the lock, if there is one.
    pub fn read(cluster_file: &Path) -> std::io::Result<LockInfo> {
        let path = pibake_inputs::lock::path_beside(cluster_file);
        match std::fs::read(&path) {
            Ok(bytes) => {
                // An unparsable lock is reported by `lock`/`build`; the plan
                // only needs its digest and, when readable, its closures.
                let lock = pibake_inputs::Lock::parse(&String::from_utf8_lossy(&bytes), &path).ok();
                let closures = lock
                    .iter()
                    .flat_map(|lock| &lock.closures)
                    .map(|c| Ok((c.arch.clone(), ClosureInfo::of(c)?)))
                    .collect::<Result<_, HashError>>()
                    .map_err(std::io::Error::other)?;
                let images = lock
                    .iter()
                    .flat_map(|lock| &lock.images)
                    .map(|i| (i.name.clone(), i.clone()))
                    .collect();
                Ok(LockInfo {
                    path,
                    digest: Some(InputHash::of_bytes(&bytes)),
                    closures,
                    images,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockInfo {
                path,
                digest: None,
                closures: BTreeMap::new(),
                images: BTreeMap::new(),
            }),
            Err(e) => Err(e),
        }
    }

    /// SOURCE_DATE_EPOCH of the images of `arch` (0 without a closure: such
    /// a plan cannot be built, only shown).
    pub fn source_date_epoch(&self, arch: &str) -> u64 {
        self.closures.get(arch).map_or(0, |c| c.source_date_epoch)
    }
}

/// The rootfs stage: one package closure installed by mmdebstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootfsStage {
    pub id: String,
    pub suite: String,
    pub arch: String,
    pub packages: BTreeSet<String>,
    /// Files written into the root before any package is installed (by
    /// path below /), so that the packages' own scripts see them: the Pi 5's
    /// initramfs module list is there when the kernel's postinst builds the
    /// initramfs.
    pub files: BTreeMap<String, String>,
    pub input_hash: InputHash,
}

/// One image of the plan: its spec and the hashes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagePlan {
    /// The hash of the spec (see [`ImageSpec::input_hash`]).
    pub input_hash: InputHash,
    /// The hash of what its root partition is made of (see [`ImageSpec::root_hash`]):
    /// images with the same one share their root's bytes.
    pub root_hash: InputHash,
    pub layers_hash: InputHash,
    #[serde(flatten)]
    pub spec: ImageSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub cluster: String,
    pub lock: LockInfo,
    pub rootfs: BTreeMap<String, RootfsStage>,
    pub images: Vec<ImagePlan>,
}

/// Which images to plan.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub per_node: bool,
    /// Only these roles (empty: all).
    pub roles: Vec<String>,
    /// Only these nodes (empty: all); implies per-node images for them.
    pub nodes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no role `{0}` in the cluster")]
    UnknownRole(String),
    #[error("no node `{0}` in the cluster")]
    UnknownNode(String),
    #[error(
        "platform {platform} of node `{node}` has no Linux image (pibake builds rpi4, rpi5 and pc-efi images)"
    )]
    Unbuildable {
        node: String,
        platform: &'static str,
    },
    #[error("rendering the layers of image {image}")]
    Render {
        image: String,
        #[source]
        source: RenderError,
    },
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Preload(#[from] crate::preload::PreloadError),
}

/// Plans the images of a cluster.
pub fn plan(cluster: &Cluster, lock: &LockInfo, selection: &Selection) -> Result<Plan, PlanError> {
    for role in &selection.roles {
        if !cluster.roles.contains_key(role) {
            return Err(PlanError::UnknownRole(role.clone()));
        }
    }
    for node in &selection.nodes {
        if !cluster.nodes.contains_key(node) {
            return Err(PlanError::UnknownNode(node.clone()));
        }
    }
    let rootfs = rootfs_stages(cluster, lock)?;
    let mut images = Vec::new();
    for (role_name, role) in &cluster.roles {
        if !selection.roles.is_empty() && !selection.roles.contains(role_name) {
            continue;
        }
        let nodes: Vec<_> = cluster.nodes_of_role(role_name).collect();
        if nodes.is_empty() {
            continue;
        }
        for node in &nodes {
            if node.platform.arch().is_none() {
                return Err(PlanError::Unbuildable {
                    node: node.name.clone(),
                    platform: node.platform.name(),
                });
            }
        }
        let arch = cluster.role_arch(role_name).unwrap_or_default();
        let epoch = lock.source_date_epoch(arch);
        let rootfs_id = rootfs_id(cluster, role_name);
        let rootfs_hash = rootfs[&rootfs_id].input_hash;
        let archives = crate::preload::archives_of(cluster, role_name, &lock.images)?;
        let groups: Vec<(String, Option<String>, Vec<_>)> =
            if selection.per_node || !selection.nodes.is_empty() {
                nodes
                    .iter()
                    .filter(|n| selection.nodes.is_empty() || selection.nodes.contains(&n.name))
                    .map(|n| {
                        (
                            format!("{}-{}", cluster.name, n.name),
                            Some(n.name.clone()),
                            vec![*n],
                        )
                    })
                    .collect()
            } else {
                vec![(
                    format!("{}-{}", cluster.name, role_name),
                    None,
                    nodes.clone(),
                )]
            };
        for (name, node, members) in groups {
            let scope = ImageScope {
                name: &name,
                role: role_name,
                nodes: members.clone(),
                build_epoch: epoch,
                archives: archives.clone(),
            };
            let rendered =
                render::render_image(cluster, &scope).map_err(|source| PlanError::Render {
                    image: name.clone(),
                    source,
                })?;
            let gps = cluster.time.gps.as_ref().and_then(|g| {
                members.iter().find(|n| n.name == g.node).map(|n| GpsBoot {
                    gps: g.clone(),
                    platform: n.platform,
                })
            });
            let platforms: BTreeSet<_> = members.iter().map(|n| n.platform).collect();
            let boot = BootSpec {
                kernel: cluster.kernel.source,
                // UEFI firmware looks for the ESP on GPT (the Mac Mini's
                // only boots it); a Pi's table is the cluster's choice.
                table: if platforms.contains(&crate::model::Platform::PcEfi) {
                    pibake_image::assemble::TableKind::Gpt
                } else {
                    cluster.image.table
                },
                platforms,
                boot_size_mib: cluster.image.boot_size_mib,
                root_headroom_mib: cluster.image.root_headroom_mib,
                button: cluster.button.clone(),
                gps,
                profile_config_txt: role.profile.config_txt.clone(),
                node_config_txt: if node.is_some() {
                    members.iter().flat_map(|n| n.config_txt.clone()).collect()
                } else {
                    Vec::new()
                },
            };
            let spec = ImageSpec {
                name,
                role: role_name.clone(),
                node,
                nodes: members.iter().map(|n| n.name.clone()).collect(),
                platforms: members.iter().map(|n| n.platform).collect(),
                source_date_epoch: epoch,
                rootfs: RootfsRef {
                    id: rootfs_id.clone(),
                    input_hash: rootfs_hash,
                },
                packages: role
                    .profile
                    .packages
                    .iter()
                    .cloned()
                    .chain(
                        members
                            .iter()
                            .flat_map(|n| n.platform.packages(&cluster.kernel)),
                    )
                    .collect(),
                overlays: role.profile.overlays.clone(),
                layers: rendered.layers,
                node_table: rendered.node_table,
                boot,
                services: services(cluster, role_name),
            };
            images.push(ImagePlan {
                input_hash: spec.input_hash()?,
                root_hash: spec.root_hash()?,
                layers_hash: spec.layers_hash()?,
                spec,
            });
        }
    }
    Ok(Plan {
        cluster: cluster.name.clone(),
        lock: lock.clone(),
        rootfs,
        images,
    })
}

/// The role's services are enabled, every other role's disabled.
fn services(cluster: &Cluster, role: &str) -> ServiceSpec {
    let enable = cluster.roles[role].profile.services.clone();
    let disable = cluster
        .roles
        .values()
        .flat_map(|r| &r.profile.services)
        .filter(|s| !enable.contains(*s))
        .cloned()
        .collect();
    ServiceSpec { enable, disable }
}

/// The files of [`RootfsStage::files`]: the Pi 5's initramfs modules in an
/// arm64 rootfs when the cluster has a Pi 5 (harmless on other boards, so a
/// rootfs shared with a Pi 4 role carries it too).
fn pre_install_files(cluster: &Cluster, arch: &str) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let pi5 = crate::model::Platform::Rpi5;
    if pi5.arch() == Some(arch) && cluster.nodes.values().any(|n| n.platform == pi5) {
        files.insert(
            pibake_image::pi5::INITRAMFS_MODULES_FILE.to_string(),
            pibake_image::pi5::initramfs_modules_text(),
        );
    }
    files
}

/// The architecture whose shared rootfs keeps the name it had when pibake
/// built Raspberry Pi images only (`<cluster>-rootfs`); another
/// architecture's is `<cluster>-rootfs-<arch>`.
const FIRST_ARCH: &str = "arm64";

/// The rootfs a role is built on: its architecture's shared one, or its own.
pub fn rootfs_id(cluster: &Cluster, role: &str) -> String {
    let arch = cluster.role_arch(role).unwrap_or(FIRST_ARCH);
    if cluster.roles[role].profile.own_rootfs {
        format!("{}-rootfs-{role}", cluster.name)
    } else if arch == FIRST_ARCH {
        format!("{}-rootfs", cluster.name)
    } else {
        format!("{}-rootfs-{arch}", cluster.name)
    }
}

fn rootfs_stages(
    cluster: &Cluster,
    lock: &LockInfo,
) -> Result<BTreeMap<String, RootfsStage>, HashError> {
    // Per stage: its architecture and packages (its roles' and their
    // platforms' boot chains).
    let mut stages: BTreeMap<String, (&str, BTreeSet<String>)> = BTreeMap::new();
    for (name, role) in &cluster.roles {
        let Some(arch) = cluster.role_arch(name) else {
            continue;
        };
        let (_, packages) = stages
            .entry(rootfs_id(cluster, name))
            .or_insert_with(|| (arch, BTreeSet::new()));
        packages.extend(role.profile.packages.iter().cloned());
        for node in cluster.nodes_of_role(name) {
            packages.extend(node.platform.packages(&cluster.kernel));
        }
    }
    stages
        .into_iter()
        .map(|(id, (arch, packages))| {
            let files = pre_install_files(cluster, arch);
            let closure = lock.closures.get(arch);
            let input_hash = InputHash::of(
                "rootfs",
                &serde_json::json!({
                    // The key keeps its first name: renaming it would
                    // change every rootfs hash and rebuild them for nothing.
                    "builder_epoch": ROOTFS_EPOCH,
                    "suite": cluster.suite,
                    "arch": arch,
                    "packages": packages,
                    "closure": closure.map(|c| c.closure).or(lock.digest),
                    "source_date_epoch": lock.source_date_epoch(arch),
                    "files": files,
                }),
            )?;
            let stage = RootfsStage {
                id: id.clone(),
                suite: cluster.suite.clone(),
                arch: arch.to_string(),
                packages,
                files,
                input_hash,
            };
            Ok((id, stage))
        })
        .collect()
}

impl Plan {
    /// A human-readable table of the plan.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "cluster {}", self.cluster);
        match &self.lock.digest {
            Some(d) => {
                let _ = writeln!(out, "lock    {} ({})", self.lock.path.display(), d.short());
            }
            None => {
                let _ = writeln!(
                    out,
                    "lock    {} (missing: run `pibake lock`)",
                    self.lock.path.display()
                );
            }
        }
        for stage in self.rootfs.values() {
            let _ = writeln!(
                out,
                "rootfs  {}  {}/{}  {} packages  {}",
                stage.id,
                stage.suite,
                stage.arch,
                stage.packages.len(),
                stage.input_hash.short()
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<10} {:<6} {:>4}  {:<12} {:<12} {:<12}  layers",
            "image", "role", "platforms", "arch", "pkgs", "input", "root", "rootfs"
        );
        for image in &self.images {
            let image_spec = &image.spec;
            let platforms: Vec<&str> = image_spec.platforms.iter().map(|p| p.name()).collect();
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:<10} {:<6} {:>4}  {:<12} {:<12} {:<12}  {}",
                image_spec.name,
                image_spec.role,
                platforms.join(","),
                self.rootfs
                    .get(&image_spec.rootfs.id)
                    .map_or("?", |r| r.arch.as_str()),
                image_spec.packages.len(),
                image.input_hash.short(),
                image.root_hash.short(),
                image_spec.rootfs.input_hash.short(),
                image_spec.overlays.join(" ")
            );
        }
        out
    }
}
