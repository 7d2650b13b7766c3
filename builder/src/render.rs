//! Layers: overlays rendered with the model into explicit file entries.
//!
//! An overlay is a directory `overlays/<name>/` with
//! - `root/`: files for the whole image (`.tera` files are templates),
//! - `node/`: files rendered once per node and carried in the node table,
//!   installed by the agent when the board learns which node it is,
//! - `overlay.toml` (optional): modes, owners and symlinks.
//!
//! A template that renders to nothing but whitespace produces no file: that
//! is how a file applies only to some nodes (gpsd on the GPS node).
//!
//! After the overlays, an image of a Swarm manager gets the `stacks` layer
//! (the compose files of `[swarm.stacks]` as `/etc/pibake/stacks/<name>.yml`,
//! 0644, their names in the node table's `swarm.stacks`, those naming a
//! preloaded image also in `swarm.preloaded_stacks`); an image that carries
//! preloaded images (the plan's [`ImageScope::archives`]) the `images` layer
//! (each archive as `/var/lib/pibake/images/<name>.tar`, 0644, a store entry
//! named by its sha256, their names in `swarm.images`). The node table is
//! not a layer: the build writes it to the boot partition, so that the root
//! a node's change leaves alone is reused as bytes.

use crate::hash::{HashError, InputHash};
use crate::model::{Cluster, Ipv4Net, Node, Platform, Stack};
use crate::preload;
use pibake_firstboot::table::{self, NodeEntry, NodeFile, NodeTable, SwarmRole};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerEntry {
    /// Relative to the image root, no leading slash.
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// The content itself travels in the image spec (and so in its hash): as text when
    /// it is UTF-8, else as hex.
    File(#[serde(with = "content")] Vec<u8>),
    Symlink(String),
    /// A file whose bytes are a store entry, named by it (`<sha256>-<name>`, so the
    /// spec's hash covers them), read from the store by `build`: an input too large to
    /// travel in the spec (a preloaded image's archive).
    Stored {
        entry: String,
        size: u64,
    },
}

/// A file's bytes in the spec: `{"text": "..."}` or `{"hex": "..."}`.
mod content {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase", deny_unknown_fields)]
    enum Content {
        Text(String),
        Hex(String),
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Content::Text(text.to_string()),
            Err(_) => Content::Hex(hex::encode(bytes)),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Content::deserialize(d)? {
            Content::Text(text) => Ok(text.into_bytes()),
            Content::Hex(text) => hex::decode(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// The rendered files of one overlay for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub overlay: String,
    /// Sorted by path.
    pub entries: Vec<LayerEntry>,
}

/// Everything rendered for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedImage {
    pub layers: Vec<Layer>,
    pub node_table: NodeTable,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read overlay file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Overlay { path: PathBuf, message: String },
    #[error("template {} does not render", path.display())]
    Template {
        path: PathBuf,
        #[source]
        source: tera::Error,
    },
    #[error("node table does not serialize")]
    Table(#[source] table::TableError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayManifest {
    format: u32,
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    files: BTreeMap<String, FileAttrs>,
    #[serde(default)]
    symlinks: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAttrs {
    mode: Option<String>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

/// Which nodes and files one image is made for.
#[derive(Debug, Clone)]
pub struct ImageScope<'a> {
    pub name: &'a str,
    pub role: &'a str,
    /// The nodes this image may become (one for a per-node image).
    pub nodes: Vec<&'a Node>,
    pub build_epoch: u64,
    /// The preloaded images' archives the image carries (the plan picks them
    /// by the preload rule and names each by its lock pin), by name.
    pub archives: Vec<PreloadArchive>,
}

/// A preloaded image's archive in an image: its name and its store entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadArchive {
    pub name: String,
    /// `<sha256>-oci-<name>.tar`.
    pub entry: String,
    pub size: u64,
}

/// Renders the overlays of the image's role profile and its node table.
pub fn render_image(
    cluster: &Cluster,
    scope: &ImageScope<'_>,
) -> Result<RenderedImage, RenderError> {
    let role = &cluster.roles[scope.role];
    let base = Context::image(cluster, scope);
    let mut layers = Vec::new();
    let mut node_files: BTreeMap<String, BTreeMap<String, NodeFile>> = BTreeMap::new();
    for overlay in &role.profile.overlays {
        let dir = cluster.overlays_dir.join(overlay);
        let manifest = read_manifest(&dir)?;
        let mut entries = Vec::new();
        let image_ctx =
            tera::Context::from_serialize(&base).map_err(|source| RenderError::Template {
                path: dir.clone(),
                source,
            })?;
        for (rel, source) in walk(&dir.join("root"))? {
            if let Some(entry) = render_file(&dir, &rel, &source, &manifest, &image_ctx)? {
                entries.push(entry);
            }
        }
        for (link, target) in &manifest.symlinks {
            let target = render_str(&dir.join("overlay.toml"), target, &image_ctx)?;
            entries.push(LayerEntry {
                path: link.clone(),
                mode: 0o777,
                uid: 0,
                gid: 0,
                kind: EntryKind::Symlink(target),
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        layers.push(Layer {
            overlay: overlay.clone(),
            entries,
        });
        let node_sources = walk(&dir.join("node"))?;
        if node_sources.is_empty() {
            continue;
        }
        for node in &scope.nodes {
            let ctx = Context::node(&base, cluster, node)?;
            let ctx =
                tera::Context::from_serialize(&ctx).map_err(|source| RenderError::Template {
                    path: dir.clone(),
                    source,
                })?;
            for (rel, source) in &node_sources {
                if let Some(entry) = render_file(&dir, rel, source, &manifest, &ctx)? {
                    if let EntryKind::File(content) = entry.kind {
                        node_files.entry(node.name.clone()).or_default().insert(
                            entry.path.clone(),
                            NodeFile {
                                path: format!("/{}", entry.path),
                                mode: entry.mode,
                                content: String::from_utf8_lossy(&content).into_owned(),
                            },
                        );
                    }
                }
            }
        }
    }
    let stacks = stacks_of(cluster, scope);
    layers.extend(generated_layer(
        "stacks",
        stacks.iter().map(|stack| {
            let content = stack.content.clone().into_bytes();
            (table::stack_path(&stack.name), EntryKind::File(content))
        }),
    ));
    layers.extend(generated_layer(
        "images",
        scope.archives.iter().map(|archive| {
            let stored = EntryKind::Stored {
                entry: archive.entry.clone(),
                size: archive.size,
            };
            (table::image_path(&archive.name), stored)
        }),
    ));
    let node_table = node_table(cluster, scope, node_files, &stacks);
    // Rendered now so that a table that does not encode fails the plan, not the build; the
    // build writes it to the boot partition (`bootfiles::TABLE_FILE`), not the root.
    node_table.to_toml().map_err(RenderError::Table)?;
    Ok(RenderedImage { layers, node_table })
}

/// A layer of files pibake writes itself (not an overlay's), root-owned,
/// 0644, in the given order; none without files.
fn generated_layer(
    name: &str,
    files: impl IntoIterator<Item = (String, EntryKind)>,
) -> Option<Layer> {
    let entries: Vec<LayerEntry> = files
        .into_iter()
        .map(|(path, kind)| LayerEntry {
            path,
            mode: 0o644,
            uid: 0,
            gid: 0,
            kind,
        })
        .collect();
    (!entries.is_empty()).then(|| Layer {
        overlay: name.to_owned(),
        entries,
    })
}

/// The compose stacks an image carries, by name: every `[swarm.stacks]`
/// entry in the image of a Swarm manager (the first one deploys them; the
/// others hold them for an operator, or a later deploy), none elsewhere.
fn stacks_of<'a>(cluster: &'a Cluster, scope: &ImageScope<'_>) -> Vec<&'a Stack> {
    let manager = scope
        .nodes
        .iter()
        .any(|n| cluster.swarm.managers.contains(&n.name));
    if manager {
        cluster.swarm.stacks.values().collect()
    } else {
        Vec::new()
    }
}

fn node_table(
    cluster: &Cluster,
    scope: &ImageScope<'_>,
    mut files: BTreeMap<String, BTreeMap<String, NodeFile>>,
    stacks: &[&Stack],
) -> NodeTable {
    let nodes = scope
        .nodes
        .iter()
        .map(|node| {
            let swarm_role = match cluster.swarm.managers.iter().position(|m| *m == node.name) {
                Some(0) => SwarmRole::Init,
                Some(_) => SwarmRole::Manager,
                None if node.platform.is_linux() => SwarmRole::Worker,
                None => SwarmRole::None,
            };
            let entry = NodeEntry {
                address: node.address,
                mac: node.mac.as_ref().map(|m| m.to_string()),
                serial: node.serial.clone(),
                swarm_role,
                files: files
                    .remove(&node.name)
                    .map(|f| f.into_values().collect())
                    .unwrap_or_default(),
            };
            (node.name.clone(), entry)
        })
        .collect();
    NodeTable {
        format: table::TABLE_FORMAT,
        cluster: cluster.name.clone(),
        domain: cluster.domain.clone(),
        role: scope.role.to_string(),
        build_epoch: scope.build_epoch,
        interface: cluster.network.interface.clone(),
        clock: table::ClockLimits {
            max_offset_ms: cluster.time.max_offset_ms,
            max_root_distance_ms: cluster.time.max_root_distance_ms,
            wait_seconds: cluster.time.wait_seconds,
        },
        swarm: table::Swarm {
            join: cluster.swarm_join_addresses(),
            wait_seconds: cluster.swarm.join_wait_seconds,
            stacks: stacks.iter().map(|s| s.name.clone()).collect(),
            preloaded_stacks: stacks
                .iter()
                .filter(|s| preload::names_preloaded_image(cluster, s))
                .map(|s| s.name.clone())
                .collect(),
            images: scope.archives.iter().map(|a| a.name.clone()).collect(),
        },
        nodes,
    }
}

fn read_manifest(dir: &Path) -> Result<OverlayManifest, RenderError> {
    let path = dir.join("overlay.toml");
    if !path.exists() {
        return Ok(OverlayManifest {
            format: 1,
            ..OverlayManifest::default()
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
        path: path.clone(),
        source,
    })?;
    let manifest: OverlayManifest = toml::from_str(&text).map_err(|e| RenderError::Overlay {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if manifest.format != 1 {
        return Err(RenderError::Overlay {
            path,
            message: format!(
                "format {} is not known; write `format = 1`",
                manifest.format
            ),
        });
    }
    Ok(manifest)
}

/// Files below `dir`, as (relative path with `/`, absolute path), sorted.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, RenderError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current).map_err(|source| RenderError::Read {
            path: current.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| RenderError::Read {
                path: current.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn render_str(path: &Path, template: &str, ctx: &tera::Context) -> Result<String, RenderError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_template("t", template)
        .and_then(|()| tera.render("t", ctx))
        .map_err(|source| RenderError::Template {
            path: path.to_path_buf(),
            source,
        })
}

fn render_file(
    overlay_dir: &Path,
    rel: &str,
    source: &Path,
    manifest: &OverlayManifest,
    ctx: &tera::Context,
) -> Result<Option<LayerEntry>, RenderError> {
    let bytes = std::fs::read(source).map_err(|source_err| RenderError::Read {
        path: source.to_path_buf(),
        source: source_err,
    })?;
    let (path, content) = match rel.strip_suffix(".tera") {
        Some(stripped) => {
            let text = String::from_utf8(bytes).map_err(|_| RenderError::Overlay {
                path: source.to_path_buf(),
                message: "a template must be UTF-8".into(),
            })?;
            let rendered = render_str(source, &text, ctx)?;
            if rendered.trim().is_empty() {
                return Ok(None);
            }
            (stripped.to_string(), rendered.into_bytes())
        }
        None => (rel.to_string(), bytes),
    };
    let attrs = manifest.files.get(&path);
    let mode = match attrs.and_then(|a| a.mode.as_deref()) {
        Some(m) => u32::from_str_radix(m, 8).map_err(|_| RenderError::Overlay {
            path: overlay_dir.join("overlay.toml"),
            message: format!("files.\"{path}\".mode `{m}` is not an octal mode like \"0644\""),
        })?,
        None => 0o644,
    };
    Ok(Some(LayerEntry {
        path,
        mode,
        uid: attrs.map_or(0, |a| a.uid),
        gid: attrs.map_or(0, |a| a.gid),
        kind: EntryKind::File(content),
    }))
}

/// What templates see, and nothing else: a view of the model, not the model (no host
/// paths, and a model field can be renamed without breaking users' templates). The README's
/// "Template context" table lists these fields; a change here is a change to that contract.
/// Derived values are computed here so that templates stay plain.
#[derive(Debug, Clone, Serialize)]
struct Context<'a> {
    cluster: ClusterCtx<'a>,
    prefix_len: u8,
    image: ImageCtx<'a>,
    /// The GPS node as a time server, if any.
    gps: Option<GpsCtx<'a>>,
    managers: Vec<HostCtx<'a>>,
    /// Names every node resolves: the managers, the VIP and the time server.
    hosts: Vec<HostCtx<'a>>,
    node: Option<NodeCtx<'a>>,
}

#[derive(Debug, Clone, Serialize)]
struct ClusterCtx<'a> {
    name: &'a str,
    domain: &'a str,
    timezone: &'a str,
    admin: AdminCtx<'a>,
    network: NetworkCtx<'a>,
    vip: Option<VipCtx>,
    time: TimeCtx<'a>,
}

#[derive(Debug, Clone, Serialize)]
struct AdminCtx<'a> {
    user: &'a str,
    ssh_authorized_keys: &'a [String],
}

#[derive(Debug, Clone, Serialize)]
struct NetworkCtx<'a> {
    subnet: &'a Ipv4Net,
    gateway: Ipv4Addr,
    dns: &'a [Ipv4Addr],
    interface: &'a str,
    wifi: Option<WifiCtx<'a>>,
}

#[derive(Debug, Clone, Serialize)]
struct WifiCtx<'a> {
    ssid: &'a str,
    country: &'a str,
}

#[derive(Debug, Clone, Serialize)]
struct VipCtx {
    address: Ipv4Addr,
    virtual_router_id: u8,
    preempt: bool,
    advert_int: u32,
}

#[derive(Debug, Clone, Serialize)]
struct TimeCtx<'a> {
    upstream: &'a [String],
    serve_subnet: bool,
}

impl<'a> ClusterCtx<'a> {
    fn of(cluster: &'a Cluster) -> Self {
        let network = &cluster.network;
        ClusterCtx {
            name: &cluster.name,
            domain: &cluster.domain,
            timezone: &cluster.timezone,
            admin: AdminCtx {
                user: &cluster.admin.user,
                ssh_authorized_keys: &cluster.admin.ssh_authorized_keys,
            },
            network: NetworkCtx {
                subnet: &network.subnet,
                gateway: network.gateway,
                dns: &network.dns,
                interface: &network.interface,
                wifi: network.wifi.as_ref().map(|w| WifiCtx {
                    ssid: &w.ssid,
                    country: &w.country,
                }),
            },
            vip: cluster.vip.as_ref().map(|v| VipCtx {
                address: v.address,
                virtual_router_id: v.virtual_router_id,
                preempt: v.preempt,
                advert_int: v.advert_int,
            }),
            time: TimeCtx {
                upstream: &cluster.time.upstream,
                serve_subnet: cluster.time.serve_subnet,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct ImageCtx<'a> {
    name: &'a str,
    role: &'a str,
    nodes: Vec<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
struct GpsCtx<'a> {
    node: &'a str,
    address: Ipv4Addr,
    uart: &'a str,
    pps_gpio: u8,
    device: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct HostCtx<'a> {
    name: &'a str,
    address: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
struct NodeCtx<'a> {
    name: &'a str,
    role: &'a str,
    platform: Platform,
    address: Ipv4Addr,
    /// NetworkManager connection UUID, derived so builds are reproducible.
    connection_uuid: String,
    wifi_uuid: String,
    is_gps: bool,
    is_manager: bool,
    /// Set on VIP holders.
    vrrp: Option<VrrpCtx>,
}

#[derive(Debug, Clone, Serialize)]
struct VrrpCtx {
    priority: u8,
    /// Initial state: BACKUP unless preempting and highest.
    state: &'static str,
    peers: Vec<Ipv4Addr>,
}

impl<'a> Context<'a> {
    fn image(cluster: &'a Cluster, scope: &ImageScope<'a>) -> Self {
        let gps = cluster.time.gps.as_ref().and_then(|g| {
            cluster.nodes.get(&g.node).map(|n| GpsCtx {
                node: &n.name,
                address: n.address,
                uart: &g.uart,
                pps_gpio: g.pps_gpio,
                device: g.device(),
            })
        });
        let managers: Vec<HostCtx<'a>> = cluster
            .swarm
            .managers
            .iter()
            .filter_map(|m| cluster.nodes.get(m))
            .map(|n| HostCtx {
                name: &n.name,
                address: n.address,
            })
            .collect();
        let mut hosts: BTreeMap<&str, Ipv4Addr> =
            managers.iter().map(|h| (h.name, h.address)).collect();
        if let Some(g) = &gps {
            hosts.insert(g.node, g.address);
        }
        if let Some(vip) = &cluster.vip {
            hosts.insert("swarm", vip.address);
        }
        Context {
            cluster: ClusterCtx::of(cluster),
            prefix_len: cluster.network.subnet.prefix_len(),
            image: ImageCtx {
                name: scope.name,
                role: scope.role,
                nodes: scope.nodes.iter().map(|n| n.name.as_str()).collect(),
            },
            gps,
            managers,
            hosts: hosts
                .into_iter()
                .map(|(name, address)| HostCtx { name, address })
                .collect(),
            node: None,
        }
    }

    fn node(base: &Self, cluster: &'a Cluster, node: &'a Node) -> Result<Self, HashError> {
        let vrrp = cluster.vip.as_ref().and_then(|vip| {
            let priority = *vip.holders.get(&node.name)?;
            let highest = vip.holders.values().max().copied().unwrap_or(priority);
            let peers = vip
                .holders
                .keys()
                .filter(|h| **h != node.name)
                .filter_map(|h| cluster.nodes.get(h).map(|n| n.address))
                .collect();
            Some(VrrpCtx {
                priority,
                state: if vip.preempt && priority == highest {
                    "MASTER"
                } else {
                    "BACKUP"
                },
                peers,
            })
        });
        let mut ctx = base.clone();
        ctx.node = Some(NodeCtx {
            name: &node.name,
            role: &node.role,
            platform: node.platform,
            address: node.address,
            connection_uuid: derived_uuid(&["nm-connection", &cluster.name, &node.name])?,
            wifi_uuid: derived_uuid(&["nm-wifi", &cluster.name, &node.name])?,
            is_gps: cluster
                .time
                .gps
                .as_ref()
                .is_some_and(|g| g.node == node.name),
            is_manager: cluster.swarm.managers.contains(&node.name),
            vrrp,
        });
        Ok(ctx)
    }
}

/// The template context of `node` (or of the image's `root/` files when `None`) as JSON:
/// what the README's "Template context" table documents (a test keeps the two equal).
pub fn context_json(
    cluster: &Cluster,
    scope: &ImageScope<'_>,
    node: Option<&Node>,
) -> Result<serde_json::Value, RenderError> {
    let base = Context::image(cluster, scope);
    let ctx = match node {
        Some(node) => Context::node(&base, cluster, node)?,
        None => base,
    };
    serde_json::to_value(&ctx).map_err(|source| {
        RenderError::Hash(HashError {
            domain: "template context".into(),
            source,
        })
    })
}

/// A version-4-shaped UUID derived from names (no randomness in images).
pub fn derived_uuid(parts: &[&str]) -> Result<String, HashError> {
    let hash = InputHash::of("uuid", parts)?;
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.bytes()[..16]);
    Ok(pibake_image::table::Guid::from_hash(bytes).to_string())
}
