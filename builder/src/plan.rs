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
    /// Digest of the closure alone (each package's name, version,
    /// architecture and sha256), what a rootfs is made of: a lock rewritten
    /// with other origins or comments but the same .debs rebuilds nothing.
    /// `None` when there is no readable lock.
    pub closure: Option<InputHash>,
    /// SOURCE_DATE_EPOCH of the build.
    pub source_date_epoch: u64,
}

impl LockInfo {
    /// Reads the digest and epoch of the lock, if there is one.
    pub fn read(cluster_file: &Path) -> std::io::Result<LockInfo> {
        let path = pibake_inputs::lock::path_beside(cluster_file);
        match std::fs::read(&path) {
            Ok(bytes) => {
                // An unparsable lock is reported by `lock`/`build`; the plan
                // only needs its digest and, when readable, its epoch.
                let lock = pibake_inputs::Lock::parse(&String::from_utf8_lossy(&bytes), &path).ok();
                let closure = lock
                    .as_ref()
                    .map(|lock| {
                        let debs: Vec<(&str, &str, &str, String)> = lock
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
                        InputHash::of("closure", &debs)
                    })
                    .transpose()
                    .map_err(std::io::Error::other)?;
                Ok(LockInfo {
                    path,
                    digest: Some(InputHash::of_bytes(&bytes)),
                    closure,
                    source_date_epoch: lock.map_or(0, |lock| lock.source_date_epoch),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockInfo {
                path,
                digest: None,
                closure: None,
                source_date_epoch: 0,
            }),
            Err(e) => Err(e),
        }
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
        "platform {platform} of node `{node}` cannot be built yet (only rpi4 and rpi5 images are)"
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
            if !node.platform.is_raspberry_pi() {
                return Err(PlanError::Unbuildable {
                    node: node.name.clone(),
                    platform: node.platform.name(),
                });
            }
        }
        let rootfs_id = rootfs_id(cluster, role_name);
        let rootfs_hash = rootfs[&rootfs_id].input_hash;
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
                build_epoch: lock.source_date_epoch,
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
            let boot = BootSpec {
                kernel: cluster.kernel.source,
                platforms: members.iter().map(|n| n.platform).collect(),
                table: cluster.image.table,
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
                source_date_epoch: lock.source_date_epoch,
                rootfs: RootfsRef {
                    id: rootfs_id.clone(),
                    input_hash: rootfs_hash,
                },
                packages: role.profile.packages.clone(),
                overlays: role.profile.overlays.clone(),
                layers: rendered.layers,
                node_table: rendered.node_table,
                boot,
                services: services(cluster, role_name),
            };
            images.push(ImagePlan {
                input_hash: spec.input_hash()?,
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

/// The files of [`RootfsStage::files`]: the Pi 5's initramfs modules when
/// the cluster has a Pi 5 (harmless on other boards, so a rootfs shared with
/// a Pi 4 role carries it too).
fn pre_install_files(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    if cluster
        .nodes
        .values()
        .any(|n| n.platform == crate::model::Platform::Rpi5)
    {
        files.insert(
            pibake_image::pi5::INITRAMFS_MODULES_FILE.to_string(),
            pibake_image::pi5::initramfs_modules_text(),
        );
    }
    files
}

/// The rootfs a role is built on: the cluster's shared one, or its own.
pub fn rootfs_id(cluster: &Cluster, role: &str) -> String {
    if cluster.roles[role].profile.own_rootfs {
        format!("{}-rootfs-{role}", cluster.name)
    } else {
        format!("{}-rootfs", cluster.name)
    }
}

fn rootfs_stages(
    cluster: &Cluster,
    lock: &LockInfo,
) -> Result<BTreeMap<String, RootfsStage>, HashError> {
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, role) in &cluster.roles {
        if cluster.nodes_of_role(name).next().is_none() {
            continue;
        }
        packages
            .entry(rootfs_id(cluster, name))
            .or_default()
            .extend(role.profile.packages.iter().cloned());
    }
    // Every role's images boot the cluster's kernel (the roles of a plan are
    // Raspberry Pi ones: others are refused as unbuildable).
    for set in packages.values_mut() {
        set.extend(cluster.kernel.package.clone());
    }
    packages
        .into_iter()
        .map(|(id, packages)| {
            let arch = "arm64".to_string();
            let files = pre_install_files(cluster);
            let input_hash = InputHash::of(
                "rootfs",
                &serde_json::json!({
                    // The key keeps its first name: renaming it would
                    // change every rootfs hash and rebuild them for nothing.
                    "builder_epoch": ROOTFS_EPOCH,
                    "suite": cluster.suite,
                    "arch": arch,
                    "packages": packages,
                    "closure": lock.closure.or(lock.digest),
                    "source_date_epoch": lock.source_date_epoch,
                    "files": files,
                }),
            )?;
            let stage = RootfsStage {
                id: id.clone(),
                suite: cluster.suite.clone(),
                arch,
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
            "{:<16} {:<8} {:<10} {:>4}  {:<12} {:<12}  layers",
            "image", "role", "platforms", "pkgs", "input", "rootfs"
        );
        for image in &self.images {
            let image_spec = &image.spec;
            let platforms: Vec<&str> = image_spec.platforms.iter().map(|p| p.name()).collect();
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:<10} {:>4}  {:<12} {:<12}  {}",
                image_spec.name,
                image_spec.role,
                platforms.join(","),
                image_spec.packages.len(),
                image.input_hash.short(),
                image_spec.rootfs.input_hash.short(),
                image_spec.overlays.join(" ")
            );
        }
        out
    }
}
