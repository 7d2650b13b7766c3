//! The node table: what an image knows about the nodes it may become.
//!
//! One definition, two users: the builder serializes it into every image as
//! [`crate::bootfiles::TABLE_FILE`] (`pibake-nodes.toml`) on the FAT boot
//! partition, mounted at /boot/firmware on a Pi and /boot/efi on pc-efi; the
//! agent reads it from there ([`crate::load_table`]) on every boot and leaves
//! it in place. It is not in the root file system, so that changing a node
//! (an address, say) rewrites only that small partition, and the root ext4 of
//! an earlier build is reused as bytes.
//!
//! Everything a node needs that can be rendered at build time is carried as
//! ready files (checked by the real daemons in the builder's tests); the agent
//! only chooses the node and installs its files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Version of the table format; bumped on any incompatible change (new keys
/// that may be left out, as `swarm.stacks` and `swarm.images`, are not: a
/// table and its agent ship in the same image).
pub const TABLE_FORMAT: u32 = 1;

/// Where the compose files of [`Swarm::stacks`] live in an image, relative
/// to the root.
pub const STACKS_DIR: &str = "etc/pibake/stacks";

/// The compose file of stack `name` in an image, relative to the root
/// (`etc/pibake/stacks/<name>.yml`).
pub fn stack_path(name: &str) -> String {
    format!("{STACKS_DIR}/{name}.yml")
}

/// Where the archives of [`Swarm::images`] live in an image, relative to the
/// root.
pub const IMAGES_DIR: &str = "var/lib/pibake/images";

/// The archive of preloaded image `name` in an image, relative to the root
/// (`var/lib/pibake/images/<name>.tar`).
pub fn image_path(name: &str) -> String {
    format!("{IMAGES_DIR}/{name}.tar")
}

/// The node table of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTable {
    pub format: u32,
    /// Cluster name.
    pub cluster: String,
    /// DNS domain of the cluster.
    pub domain: String,
    /// The role this image was built for.
    pub role: String,
    /// SOURCE_DATE_EPOCH of the image: the clock gate never accepts a time
    /// earlier than this.
    pub build_epoch: u64,
    /// The wired interface that identity looks up the MAC on.
    pub interface: String,
    /// Limits of the clock gate.
    pub clock: ClockLimits,
    /// Swarm settings shared by every node of the image.
    pub swarm: Swarm,
    /// The nodes this image may become, by name.
    pub nodes: BTreeMap<String, NodeEntry>,
}

/// One node the image may become.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Static IPv4 address of the node.
    pub address: Ipv4Addr,
    /// MAC of the wired interface, lower-case, colon-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Board serial as in /proc/device-tree/serial-number, without the NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// What this node does in the Swarm.
    pub swarm_role: SwarmRole,
    /// Files rendered for this node by the builder, installed by identity.
    #[serde(default)]
    pub files: Vec<NodeFile>,
}

/// A file installed on the board once the node is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// Absolute path on the board.
    pub path: String,
    /// Permission bits (owner is always root).
    pub mode: u32,
    pub content: String,
}

/// A node's part in the Swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwarmRole {
    /// The first manager: initializes the swarm.
    Init,
    /// Another manager: joins as manager.
    Manager,
    /// Joins as worker.
    Worker,
    /// Takes no part in the Swarm.
    None,
}

/// Swarm settings shared by the nodes of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// Addresses to join through, in order (the VIP or the managers).
    pub join: Vec<Ipv4Addr>,
    /// How long to keep retrying while no manager answers, seconds.
    #[serde(default = "default_join_wait_seconds")]
    pub wait_seconds: u64,
    /// Compose stacks this image carries, by name, each at [`stack_path`]
    /// (the images of Swarm managers only); the node that initializes the
    /// swarm deploys them. Empty, the key is left out: a table without
    /// stacks is the same text as before stacks existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<String>,
    /// The stacks of [`Swarm::stacks`] whose services name a preloaded
    /// image: deployed with `--resolve-image never`, since the image is the
    /// loaded archive, not whatever a registry has under its tag (in an
    /// isolated lab there is no registry to ask). Empty, left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preloaded_stacks: Vec<String>,
    /// Preloaded container images this image carries, by name, each at
    /// [`image_path`] (the images of the roles that run Docker on the
    /// archive's architecture): every node of the image `docker load`s them
    /// before its stacks are deployed. Empty, left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// Managers may boot well after the workers (a power cut restores them all
/// at once, and a Pi 5 boots faster than a Mac Mini VM).
fn default_join_wait_seconds() -> u64 {
    900
}

/// Limits the clock gate applies to chrony's tracking report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockLimits {
    /// Largest accepted |system time offset|, milliseconds.
    pub max_offset_ms: u64,
    /// Largest accepted root distance (delay/2 + dispersion), milliseconds.
    pub max_root_distance_ms: u64,
    /// How long to wait for a verified clock before failing, seconds.
    pub wait_seconds: u64,
}

impl NodeTable {
    /// Parses a table, refusing unknown keys and other format versions.
    pub fn from_toml(text: &str) -> Result<Self, TableError> {
        let table: NodeTable = toml::from_str(text).map_err(TableError::Parse)?;
        if table.format != TABLE_FORMAT {
            return Err(TableError::Format {
                found: table.format,
            });
        }
        Ok(table)
    }

    /// Serializes the table; the output is stable (ordered maps).
    pub fn to_toml(&self) -> Result<String, TableError> {
        toml::to_string(self).map_err(TableError::Serialize)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("node table is not valid")]
    Parse(#[source] toml::de::Error),
    #[error("node table cannot be written")]
    Serialize(#[source] toml::ser::Error),
    #[error("node table has format {found}, this agent reads format {TABLE_FORMAT}")]
    Format { found: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(stacks: &[&str]) -> NodeTable {
        NodeTable {
            format: TABLE_FORMAT,
            cluster: "lab".into(),
            domain: "lab.example".into(),
            role: "master".into(),
            build_epoch: 1_700_000_000,
            interface: "eth0".into(),
            clock: ClockLimits {
                max_offset_ms: 100,
                max_root_distance_ms: 1000,
                wait_seconds: 180,
            },
            swarm: Swarm {
                join: vec![Ipv4Addr::new(192, 168, 188, 2)],
                wait_seconds: 900,
                stacks: stacks.iter().map(|s| (*s).to_owned()).collect(),
                preloaded_stacks: vec![],
                images: vec![],
            },
            nodes: BTreeMap::from([(
                "master1".to_owned(),
                NodeEntry {
                    address: Ipv4Addr::new(192, 168, 188, 11),
                    mac: None,
                    serial: None,
                    swarm_role: SwarmRole::Init,
                    files: vec![],
                },
            )]),
        }
    }

    #[test]
    fn stacks_round_trip() -> Result<(), TableError> {
        let with = table(&["db", "web"]);
        let text = with.to_toml()?;
        assert!(text.contains("stacks = [\"db\", \"web\"]"), "{text}");
        assert_eq!(NodeTable::from_toml(&text)?, with);
        Ok(())
    }

    /// A table without stacks is the text it was before stacks existed, and
    /// such a text reads back with none.
    #[test]
    fn a_table_without_stacks_has_no_stacks_key() -> Result<(), TableError> {
        let without = table(&[]);
        let text = without.to_toml()?;
        assert!(!text.contains("stacks"), "{text}");
        assert!(
            text.contains("[swarm]\njoin = [\"192.168.188.2\"]\nwait_seconds = 900\n\n"),
            "{text}"
        );
        assert_eq!(NodeTable::from_toml(&text)?, without);
        Ok(())
    }

    #[test]
    fn stack_files_live_under_etc_pibake_stacks() {
        assert_eq!(stack_path("web"), "etc/pibake/stacks/web.yml");
        assert_eq!(image_path("web"), "var/lib/pibake/images/web.tar");
    }

    #[test]
    fn images_and_preloaded_stacks_round_trip_and_are_left_out_when_empty() -> Result<(), TableError>
    {
        let mut with = table(&["web"]);
        with.swarm.preloaded_stacks = vec!["web".into()];
        with.swarm.images = vec!["web".into()];
        let text = with.to_toml()?;
        assert!(
            text.contains("stacks = [\"web\"]\npreloaded_stacks = [\"web\"]\nimages = [\"web\"]\n"),
            "{text}"
        );
        assert_eq!(NodeTable::from_toml(&text)?, with);
        let text = table(&["web"]).to_toml()?;
        assert!(
            !text.contains("images") && !text.contains("preloaded"),
            "{text}"
        );
        // Unknown keys are refused.
        let typo = text.replace("stacks =", "image = [\"web\"]\nstacks =");
        assert!(NodeTable::from_toml(&typo).is_err());
        Ok(())
    }
}
