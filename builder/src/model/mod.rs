//! The cluster model: what the user declares, validated.
//!
//! [`load`] reads the cluster file and the profiles it names, and returns
//! either a [`Cluster`] (every value parsed into its real type) or the full
//! list of located diagnostics. Nothing downstream sees a raw string where a
//! typed value belongs.

pub mod kernel;
pub mod net;
pub mod raw;
pub mod tz;
mod validate;

use crate::diag::{Diagnostic, SourceFile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use net::{Ipv4Net, MacAddr};
pub use tz::{verify_timezone, TimezoneError};

/// The version of the cluster and profile file formats this pibake reads.
pub const FORMAT: u32 = 1;

/// The name of the host's Debian mirror among the apt sources; profiles
/// cannot define a source by this name.
pub use pibake_inputs::sources::HOST_SOURCE;

/// Longest config.txt line the firmware reads whole (FACTS.md: longer lines
/// are silently truncated).
pub const CONFIG_TXT_MAX_LINE: usize = 98;

/// A board or machine type a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    Rpi4,
    Rpi5,
    /// x86-64 with EFI (the Mac Mini master as native Linux or a VM); modelled,
    /// not yet buildable.
    PcEfi,
    /// macOS with Docker Desktop: can run containers, cannot be a Swarm
    /// manager or hold a keepalived VIP (FACTS.md, moby/moby#29394).
    Macos,
}

impl Platform {
    pub const ALL: [Platform; 4] = [
        Platform::Rpi4,
        Platform::Rpi5,
        Platform::PcEfi,
        Platform::Macos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Platform::Rpi4 => "rpi4",
            Platform::Rpi5 => "rpi5",
            Platform::PcEfi => "pc-efi",
            Platform::Macos => "macos",
        }
    }

    pub fn parse(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Debian architecture of the images for this platform.
    pub fn arch(self) -> Option<&'static str> {
        match self {
            Platform::Rpi4 | Platform::Rpi5 => Some("arm64"),
            Platform::PcEfi => Some("amd64"),
            Platform::Macos => None,
        }
    }

    /// Whether the board has a header UART a GPS receiver can use.
    pub fn has_uart(self) -> bool {
        matches!(self, Platform::Rpi4 | Platform::Rpi5)
    }

    pub fn is_linux(self) -> bool {
        !matches!(self, Platform::Macos)
    }

    pub fn is_raspberry_pi(self) -> bool {
        matches!(self, Platform::Rpi4 | Platform::Rpi5)
    }

    /// The packages of the platform's boot chain, which pibake adds to every
    /// image of it (profiles stay platform-neutral): on a Pi the firmware and
    /// the `[kernel]` package; on pc-efi Debian's kernel and systemd-boot's
    /// EFI binaries (not `systemd-boot`, whose scripts write EFI variables).
    /// None with `[kernel] source = "none"`: the profiles bring them.
    pub fn packages(self, kernel: &Kernel) -> Vec<String> {
        if kernel.source == KernelSource::None {
            return Vec::new();
        }
        match self {
            Platform::Rpi4 | Platform::Rpi5 => std::iter::once(RPI_FIRMWARE.to_string())
                .chain(kernel.package.clone())
                .collect(),
            Platform::PcEfi => vec![PC_EFI_KERNEL.to_string(), PC_EFI_LOADER.to_string()],
            Platform::Macos => Vec::new(),
        }
    }
}

/// The Raspberry Pi firmware package (boot files, device trees, its kernel hooks).
pub const RPI_FIRMWARE: &str = "raspi-firmware";
/// The kernel of pc-efi images, from the cluster's suite (`[kernel]` is the Pis').
pub const PC_EFI_KERNEL: &str = "linux-image-amd64";
/// systemd-boot's EFI binaries, copied onto the EFI system partition.
pub const PC_EFI_LOADER: &str = "systemd-boot-efi";

/// Where the kernel and firmware packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelSource {
    /// Debian's linux-image-arm64 + raspi-firmware (boots a Pi 4; a Pi 5 lacks
    /// RP1 drivers).
    Debian,
    /// The Raspberry Pi archive's kernels (needs that source in a profile).
    Raspberrypi,
    /// No kernel package: the profiles bring the kernel (test fixtures use a
    /// stand-in in an overlay).
    None,
}

/// `[kernel]`: what every Raspberry Pi image of the cluster boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub source: KernelSource,
    /// The kernel package (`linux-image-arm64`); `None` for [`KernelSource::None`].
    pub package: Option<String>,
    /// The host mirror's suite the kernel packages are pinned from.
    pub suite: String,
}

/// The partition table of images: the image crate's, which writes it.
pub use pibake_image::assemble::TableKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// The cluster file this model was read from.
    pub file: PathBuf,
    pub name: String,
    pub domain: String,
    pub timezone: String,
    pub suite: String,
    pub kernel: Kernel,
    pub admin: Admin,
    pub network: Network,
    pub roles: BTreeMap<String, Role>,
    pub nodes: BTreeMap<String, Node>,
    pub vip: Option<Vip>,
    pub time: Time,
    pub swarm: Swarm,
    pub button: Option<Button>,
    pub image: ImageSettings,
    /// Directory of overlays used by the profiles.
    pub overlays_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Admin {
    pub user: String,
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub interface: String,
    pub dhcp_range: Option<(Ipv4Addr, Ipv4Addr)>,
    pub wifi: Option<Wifi>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wifi {
    pub ssid: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: String,
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    /// Empty: any platform.
    pub platforms: Vec<Platform>,
    pub packages: BTreeSet<String>,
    /// In stacking order: a later overlay wins.
    pub overlays: Vec<String>,
    pub services: BTreeSet<String>,
    pub config_txt: Vec<String>,
    pub own_rootfs: bool,
    /// Apt sources this profile (and what it includes) adds to the host's
    /// Debian mirror, sorted by name; keyrings are absolute paths.
    pub sources: Vec<pibake_inputs::Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub role: String,
    pub platform: Platform,
    pub address: Ipv4Addr,
    pub mac: Option<MacAddr>,
    pub serial: Option<String>,
    pub config_txt: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub address: Ipv4Addr,
    pub virtual_router_id: u8,
    pub preempt: bool,
    pub advert_int: u32,
    /// Node name → distinct priority.
    pub holders: BTreeMap<String, u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Time {
    pub gps: Option<Gps>,
    pub upstream: Vec<String>,
    pub serve_subnet: bool,
    pub max_offset_ms: u64,
    pub max_root_distance_ms: u64,
    pub wait_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gps {
    pub node: String,
    /// `uart0` (header pins 8 and 10; Pi 4 only on Debian's kernel) or `usb`.
    pub uart: String,
    pub pps_gpio: u8,
}

impl Gps {
    /// The receiver's serial device: the header UART's PL011 or a USB CDC-ACM receiver.
    pub fn device(&self) -> &'static str {
        if self.uart == "usb" {
            "/dev/ttyACM0"
        } else {
            "/dev/ttyAMA0"
        }
    }

    /// Whether the receiver sits on the header UART (which then needs
    /// config.txt lines and no serial console).
    pub fn on_header_uart(&self) -> bool {
        self.uart != "usb"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinVia {
    Vip,
    Managers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swarm {
    /// The first one initializes the swarm.
    pub managers: Vec<String>,
    pub join: JoinVia,
    /// How long a joining node keeps retrying while no manager answers.
    pub join_wait_seconds: u64,
    /// Compose stacks, by name: carried by the managers' images, deployed by
    /// the first manager once the swarm exists.
    pub stacks: BTreeMap<String, Stack>,
    /// Preloaded container images, by name: carried by the images of the
    /// roles that run Docker on their architecture ([`carries`]), loaded by
    /// the agent before any stack is deployed.
    pub images: BTreeMap<String, PreloadImage>,
}

/// `[swarm.images.<name>]`: an OCI archive (`docker save`'s format), read
/// and checked by `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreloadImage {
    /// Its name (a lower-case label): the archive's file in the images and
    /// its entry in the lock.
    pub name: String,
    /// The archive as the cluster file names it (what the lock records).
    pub archive: String,
    /// The archive, as found from the cluster file.
    pub path: PathBuf,
    /// The Debian architecture of its image, from the archive's config.
    pub arch: String,
    /// Its platform as the archive names it (`linux/arm64`), for messages.
    pub platform: String,
    /// The tags `docker load` gives it, sorted.
    pub tags: Vec<String>,
}

/// The Debian package of the Docker engine: a role whose profile installs
/// it runs containers.
pub const DOCKER_ENGINE: &str = "docker.io";
/// The overlay of Swarm nodes (the engine's daemon.json, the agent's step).
pub const SWARM_OVERLAY: &str = "swarm";

impl Profile {
    /// Whether images of this profile run a Docker engine: they install
    /// docker.io or carry the swarm overlay.
    pub fn runs_docker(&self) -> bool {
        self.packages.contains(DOCKER_ENGINE) || self.overlays.iter().any(|o| o == SWARM_OVERLAY)
    }
}

/// The preload rule: the images of a role carry a preloaded archive when the
/// role runs Docker and its nodes' architecture (`role_arch`) is the
/// archive's. Every such image, not only those a stack places tasks on:
/// placement is the compose file's, which pibake does not interpret, and a
/// node without the image could not run a task the Swarm gives it.
pub fn carries(profile: &Profile, role_arch: Option<&str>, image_arch: &str) -> bool {
    profile.runs_docker() && role_arch == Some(image_arch)
}

/// `[swarm.stacks.<name>]`: a compose file, read and checked by `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    /// The stack's name on the Swarm (a lower-case label, as a node's name).
    pub name: String,
    /// The compose file, as found from the cluster file.
    pub compose: PathBuf,
    /// The compose file's text as checked: what the managers' images carry.
    pub content: String,
    /// The images its services name (`services.<name>.image`), as written.
    pub images: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub gpio: u8,
    pub active_low: bool,
    pub pull: String,
    /// Held this long, the button powers the board off (a shorter press does nothing).
    pub hold_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSettings {
    pub table: TableKind,
    pub boot_size_mib: u32,
    pub root_headroom_mib: u32,
}

impl Cluster {
    /// The Debian architectures of the cluster's Linux nodes.
    pub fn arches(&self) -> BTreeSet<&'static str> {
        self.nodes
            .values()
            .filter_map(|n| n.platform.arch())
            .collect()
    }

    /// The architecture of a role's images: its nodes' (check refuses a role
    /// whose nodes span two); `None` for a role without Linux nodes.
    pub fn role_arch(&self, role: &str) -> Option<&'static str> {
        self.nodes_of_role(role).find_map(|n| n.platform.arch())
    }

    /// Nodes of one role, by name.
    pub fn nodes_of_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.values().filter(move |n| n.role == role)
    }

    /// The preloaded images that `role`'s images carry ([`carries`]), by name.
    pub fn images_of_role(&self, role: &str) -> Vec<&PreloadImage> {
        let Some(r) = self.roles.get(role) else {
            return Vec::new();
        };
        let arch = self.role_arch(role);
        self.swarm
            .images
            .values()
            .filter(|image| carries(&r.profile, arch, &image.arch))
            .collect()
    }

    /// The GPS node, if the cluster has one.
    pub fn gps_node(&self) -> Option<&Node> {
        self.time.gps.as_ref().and_then(|g| self.nodes.get(&g.node))
    }

    /// Addresses workers join the swarm through, in order.
    pub fn swarm_join_addresses(&self) -> Vec<Ipv4Addr> {
        match (self.swarm.join, &self.vip) {
            (JoinVia::Vip, Some(vip)) => vec![vip.address],
            _ => self
                .swarm
                .managers
                .iter()
                .filter_map(|m| self.nodes.get(m).map(|n| n.address))
                .collect(),
        }
    }
}

/// The result of reading a cluster: the model if valid, and every finding.
#[derive(Debug)]
pub struct Checked {
    pub cluster: Option<Cluster>,
    pub diagnostics: Vec<Diagnostic>,
    /// The files read, for rendering diagnostics.
    pub files: Vec<SourceFile>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Runs a check over the built model (one that needs the typed values,
    /// such as the config.txt lines pibake renders) and adds its located
    /// findings; an error drops the model. Nothing is checked when the
    /// files alone were not valid.
    pub fn check_model(&mut self, check: impl FnOnce(&Cluster) -> Vec<Diagnostic>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let found = check(cluster);
        if found.iter().any(Diagnostic::is_error) {
            self.cluster = None;
        }
        for diagnostic in found {
            if !self.diagnostics.contains(&diagnostic) {
                self.diagnostics.push(diagnostic);
            }
        }
    }

    /// Renders all diagnostics as a report.
    pub fn report(&self) -> String {
        let files: Vec<&SourceFile> = self.files.iter().collect();
        crate::diag::render_all(&files, &self.diagnostics)
    }
}

/// A file that could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Where profiles and overlays are looked up for a cluster file:
/// `--data-dir` (`lookup.flag`), `$PIBAKE_DATA_DIR`, the nearest ancestor
/// directory of the file holding `profiles/` and `overlays/`, else the copy
/// built into pibake, unpacked into the store ([`crate::data`]).
pub fn data_dir_for(
    cluster_file: &Path,
    lookup: &crate::data::DataLookup,
) -> Result<crate::data::DataDir, crate::data::DataError> {
    crate::data::locate(cluster_file, lookup)
}

/// Reads and validates a cluster file and the profiles it uses, found by
/// [`data_dir_for`] with `$PIBAKE_DATA_DIR` and the default store.
pub fn load(cluster_file: &Path) -> Result<Checked, ReadError> {
    let lookup = crate::data::DataLookup::from_env(None, None);
    let data = data_dir_for(cluster_file, &lookup).map_err(|e| ReadError {
        path: cluster_file.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    load_from(cluster_file, &data)
}

/// Like [`load`], with the profiles and overlays of `data`.
pub fn load_from(cluster_file: &Path, data: &crate::data::DataDir) -> Result<Checked, ReadError> {
    load_with(cluster_file, &data.profiles(), &data.overlays())
}

/// Like [`load`], with explicit profile and overlay directories.
pub fn load_with(
    cluster_file: &Path,
    profiles_dir: &Path,
    overlays_dir: &Path,
) -> Result<Checked, ReadError> {
    let text = std::fs::read_to_string(cluster_file).map_err(|source| ReadError {
        path: cluster_file.to_path_buf(),
        source,
    })?;
    let file = SourceFile::new(cluster_file.to_path_buf(), text);
    Ok(validate::check(file, profiles_dir, overlays_dir))
}
