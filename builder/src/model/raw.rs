//! The cluster and profile files exactly as written, before validation.
//!
//! Addresses and names stay strings here so that validation can report every
//! bad value with its location instead of stopping at the first type error.
//! Keyed tables are `BTreeMap`s so that everything derived is ordered.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawCluster {
    pub format: u32,
    pub cluster: RawClusterInfo,
    pub network: RawNetwork,
    pub roles: BTreeMap<String, RawRole>,
    pub nodes: BTreeMap<String, RawNode>,
    #[serde(default)]
    pub vip: Option<RawVip>,
    #[serde(default)]
    pub time: RawTime,
    pub swarm: RawSwarm,
    #[serde(default)]
    pub button: RawButton,
    #[serde(default)]
    pub image: RawImage,
    #[serde(default)]
    pub kernel: RawKernel,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawClusterInfo {
    pub name: String,
    pub domain: String,
    pub timezone: String,
    /// Debian suite the images are built from.
    #[serde(default = "default_suite")]
    pub suite: String,
    pub admin: RawAdmin,
}

fn default_suite() -> String {
    "trixie".into()
}

/// `[kernel]`: the kernel every Raspberry Pi image of the cluster boots (one
/// lock per architecture resolves one kernel, so Pi 4 and Pi 5 share it).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawKernel {
    /// Where kernels come from: `debian` or `raspberrypi`.
    #[serde(default = "default_kernel_source")]
    pub source: String,
    /// The kernel package the images install.
    #[serde(default = "default_kernel_package")]
    pub package: String,
    /// The suite of the host's Debian mirror the kernel packages are pinned
    /// from (`trixie-backports`); unset: `[cluster] suite`.
    #[serde(default)]
    pub suite: Option<String>,
}

impl Default for RawKernel {
    fn default() -> Self {
        RawKernel {
            source: default_kernel_source(),
            package: default_kernel_package(),
            suite: None,
        }
    }
}

fn default_kernel_source() -> String {
    "debian".into()
}

fn default_kernel_package() -> String {
    "linux-image-arm64".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawAdmin {
    pub user: String,
    /// Public keys only; private keys are refused.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawNetwork {
    pub subnet: String,
    pub gateway: String,
    pub dns: Vec<String>,
    #[serde(default = "default_interface")]
    pub interface: String,
    #[serde(default)]
    pub dhcp_range: Option<RawRange>,
    #[serde(default)]
    pub wifi: Option<RawWifi>,
}

fn default_interface() -> String {
    "eth0".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawRange {
    pub start: String,
    pub end: String,
}

/// Wi-Fi without its key: the PSK is only ever in the secrets file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawWifi {
    pub ssid: String,
    pub country: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawRole {
    pub profile: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawNode {
    pub role: String,
    pub platform: String,
    pub address: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    /// Extra config.txt lines for this node only (per-node images).
    #[serde(default)]
    pub config_txt: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawVip {
    pub address: String,
    pub virtual_router_id: u32,
    #[serde(default)]
    pub preempt: bool,
    #[serde(default = "default_advert_int")]
    pub advert_int: u32,
    /// Node name → VRRP priority (1–254, distinct).
    pub holders: BTreeMap<String, u32>,
}

fn default_advert_int() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawTime {
    #[serde(default)]
    pub gps: Option<RawGps>,
    /// Upstream NTP servers, used by the GPS node and as fallback by all.
    #[serde(default)]
    pub upstream: Vec<String>,
    /// Whether the GPS node serves time to the cluster subnet.
    #[serde(default = "default_true")]
    pub serve_subnet: bool,
    /// Clock gate limits for the first-boot agent.
    #[serde(default)]
    pub gate: RawClockGate,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawClockGate {
    #[serde(default = "default_max_offset_ms")]
    pub max_offset_ms: u64,
    #[serde(default = "default_max_root_distance_ms")]
    pub max_root_distance_ms: u64,
    #[serde(default = "default_wait_seconds")]
    pub wait_seconds: u64,
}

impl Default for RawClockGate {
    fn default() -> Self {
        RawClockGate {
            max_offset_ms: default_max_offset_ms(),
            max_root_distance_ms: default_max_root_distance_ms(),
            wait_seconds: default_wait_seconds(),
        }
    }
}

fn default_max_offset_ms() -> u64 {
    100
}

fn default_max_root_distance_ms() -> u64 {
    500
}

/// 20 minutes: when the whole cluster is powered on at once, the others
/// wait at their gate for the GPS node's first fix, and a receiver's cold
/// start takes up to about 12.5 minutes (the almanac it downloads). A gate
/// that gave up sooner would leave a master out of the Swarm until its next
/// boot (the ring's seed scenario saw it at 180 s).
fn default_wait_seconds() -> u64 {
    1200
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawGps {
    pub node: String,
    /// The UART the GPS receiver is wired to (`uart0`: header pins 8/10).
    #[serde(default = "default_uart")]
    pub uart: String,
    /// GPIO of the PPS signal (pps-gpio's default is 18).
    #[serde(default = "default_pps_gpio")]
    pub pps_gpio: u32,
}

fn default_uart() -> String {
    "uart0".into()
}

fn default_pps_gpio() -> u32 {
    18
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawSwarm {
    /// Manager nodes; the first one initializes the swarm.
    pub managers: Vec<String>,
    /// Where workers join: `vip` or `managers`.
    #[serde(default = "default_join")]
    pub join: String,
    /// How long a joining node keeps retrying while no manager answers.
    #[serde(default = "default_join_wait")]
    pub join_wait_seconds: u64,
    /// Compose stacks the first manager deploys, by stack name
    /// (`[swarm.stacks.<name>]`).
    #[serde(default)]
    pub stacks: BTreeMap<String, RawStack>,
    /// Container images preloaded into the images that run Docker, by name
    /// (`[swarm.images.<name>]`).
    #[serde(default)]
    pub images: BTreeMap<String, RawPreloadImage>,
}

/// `[swarm.images.<name>]`: a container image for a lab without a registry.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawPreloadImage {
    /// A `docker save`-style OCI archive, relative to the cluster file's directory.
    pub archive: String,
}

/// `[swarm.stacks.<name>]`: one stack of services on the Swarm.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawStack {
    /// The compose file, relative to the cluster file's directory.
    pub compose: String,
}

fn default_join_wait() -> u64 {
    900
}

fn default_join() -> String {
    "vip".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawButton {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_button_gpio")]
    pub gpio: u32,
    #[serde(default = "default_true")]
    pub active_low: bool,
    #[serde(default = "default_pull")]
    pub pull: String,
    /// How long the button must be held before the board powers off
    /// (rendered as the overlay's debounce: FACTS.md, "Shutdown button").
    #[serde(default = "default_hold")]
    pub hold_ms: u32,
}

impl Default for RawButton {
    fn default() -> Self {
        RawButton {
            enabled: true,
            gpio: default_button_gpio(),
            active_low: true,
            pull: default_pull(),
            hold_ms: default_hold(),
        }
    }
}

fn default_button_gpio() -> u32 {
    3
}

fn default_pull() -> String {
    "up".into()
}

fn default_hold() -> u32 {
    // The seed's wording: press and hold the button for 3 seconds.
    3000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawImage {
    /// `mbr` (every Pi boots it) or `gpt`.
    #[serde(default = "default_table")]
    pub table: String,
    #[serde(default = "default_boot_mib")]
    pub boot_size_mib: u32,
    #[serde(default = "default_headroom_mib")]
    pub root_headroom_mib: u32,
}

impl Default for RawImage {
    fn default() -> Self {
        RawImage {
            table: default_table(),
            boot_size_mib: default_boot_mib(),
            root_headroom_mib: default_headroom_mib(),
        }
    }
}

fn default_table() -> String {
    "mbr".into()
}

fn default_boot_mib() -> u32 {
    256
}

fn default_headroom_mib() -> u32 {
    256
}

/// A role profile: `profiles/<name>.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawProfile {
    pub format: u32,
    #[serde(default)]
    pub description: String,
    /// Profiles whose lists come first (one level of reuse, e.g. `base`).
    #[serde(default)]
    pub include: Vec<String>,
    /// Platforms this profile's packages run on; empty means any.
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub overlays: Vec<String>,
    /// systemd units enabled in the image.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub config_txt: Vec<String>,
    /// Build this role on its own rootfs instead of the cluster's shared one.
    #[serde(default)]
    pub own_rootfs: bool,
    /// Apt sources added to the host's Debian mirror (`[[sources]]`).
    #[serde(default)]
    pub sources: Vec<RawSource>,
}

/// One `[[sources]]` entry of a profile: an apt repository packages may come from.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawSource {
    /// The label the lock records as a package's origin.
    pub name: String,
    pub uri: String,
    /// Suite (`trixie`), or `./` for a flat repository.
    pub suite: String,
    #[serde(default)]
    pub components: Vec<String>,
    /// Keyring signing the repository, relative to the profile file's directory.
    #[serde(default)]
    pub keyring: Option<String>,
    /// Accept the repository unsigned (local repositories only).
    #[serde(default)]
    pub trusted: bool,
    /// Apt pin priority of the source's packages (apt's default is 500).
    #[serde(default)]
    pub pin_priority: Option<i64>,
}
