//! The image specification: everything one image is made of, worked out once by `plan` and
//! consumed by `build` (which derives nothing from the model again).
//!
//! An [`ImageSpec`] holds the rendered layers (file contents included), the node table, the
//! rootfs stage it stands on, what config.txt and cmdline.txt are rendered from and the
//! services to enable and disable. Its input hash is the hash of its one serialization (with
//! the domain tag `image` and [`IMAGE_EPOCH`]), so an input added to the spec is hashed by
//! construction; `builder/tests/render.rs` mutates every leaf of the serialized spec and sees
//! the hash change, and round-trips the spec so that no field can skip serialization.

use crate::boot::{self, ConfigTxt, KernelFiles};
use crate::hash::{HashError, InputHash};
use crate::model::{Button, Gps, KernelSource, Platform, TableKind};
use crate::render::Layer;
use pibake_firstboot::table::NodeTable;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Bumped when a change to pibake changes the bytes of an image built from the same spec,
/// so old outputs are not reused (the rootfs has its own, `plan::ROOTFS_EPOCH`: a rootfs
/// stage takes ~15 min and an image a few seconds).
/// 2: image ids from `ImageIds::from_input_hash`.
/// 3: the input hash is the hash of the `ImageSpec`; the image ids (disk id, partition
///    UUIDs, FAT volume id, ext4 UUID and hash_seed) derive from it, so they changed, and with
///    them cmdline.txt's and fstab's PARTUUIDs; every other byte is the same.
/// 4: the node table is on the boot partition (`pibake-nodes.toml`), not in the root; the
///    ids derive from [`ImageSpec::root_hash`]; the root partition is made apart (its bmap
///    ranges end at its bounds, the `.img.zst` is one zstd frame per part).
pub const IMAGE_EPOCH: u32 = 4;

/// The spec's fields that do not reach the root partition's bytes, left out of
/// [`ImageSpec::root_hash`]: the node table is written to the boot partition, and the
/// image's name, node and node list reach only the boot partition (config.txt, the ESP's
/// entry title), the manifest and the SBOM. A field that reaches the root must never be
/// here (a stale root would be reused); `builder/tests/render.rs` checks that every other
/// leaf changes the root hash, and `builder/tests/rootpart.rs` that images differing only in
/// these fields have the same root bytes.
pub const NOT_IN_ROOT: [&str; 4] = ["name", "node", "nodes", "node_table"];

/// One image, completely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// `<cluster>-<role>` or `<cluster>-<node>`.
    pub name: String,
    pub role: String,
    /// Set for a per-node image.
    pub node: Option<String>,
    /// The nodes the image may become, by name.
    pub nodes: Vec<String>,
    pub platforms: BTreeSet<Platform>,
    /// SOURCE_DATE_EPOCH of the build (the lock's).
    pub source_date_epoch: u64,
    pub rootfs: RootfsRef,
    /// The role profile's packages (the rootfs may hold more when shared).
    pub packages: BTreeSet<String>,
    /// Overlay names in stacking order.
    pub overlays: Vec<String>,
    /// The rendered overlays, in stacking order.
    pub layers: Vec<Layer>,
    /// The node table, which the build writes to the boot partition as
    /// `pibake-nodes.toml` (`pibake_firstboot::bootfiles::TABLE_FILE`).
    pub node_table: NodeTable,
    pub boot: BootSpec,
    pub services: ServiceSpec,
}

/// The rootfs stage an image is assembled on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsRef {
    pub id: String,
    pub input_hash: InputHash,
}

/// Everything config.txt and cmdline.txt are rendered from, and the partition layout (the
/// kernel's file names come from the rootfs, whose stage hash covers them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    pub kernel: KernelSource,
    /// The platforms of the image's nodes (config.txt sections, boot files).
    pub platforms: BTreeSet<Platform>,
    pub table: TableKind,
    pub boot_size_mib: u32,
    pub root_headroom_mib: u32,
    pub button: Option<Button>,
    /// Set when the image carries the GPS node.
    pub gps: Option<GpsBoot>,
    /// The role profile's config.txt lines.
    pub profile_config_txt: Vec<String>,
    /// The node's own lines (per-node images only).
    pub node_config_txt: Vec<String>,
}

/// The GPS receiver and the platform of the node it is wired to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpsBoot {
    pub gps: Gps,
    pub platform: Platform,
}

/// The role's services are enabled, every other role's disabled, so that one shared rootfs
/// serves every role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub enable: BTreeSet<String>,
    pub disable: BTreeSet<String>,
}

/// What is hashed: the spec under the image epoch.
#[derive(Serialize)]
struct Hashed<'a> {
    image_epoch: u32,
    spec: &'a ImageSpec,
}

impl ImageSpec {
    /// The hash of the spec's serialization, the domain tag and [`IMAGE_EPOCH`].
    pub fn input_hash(&self) -> Result<InputHash, HashError> {
        InputHash::of(
            "image",
            &Hashed {
                image_epoch: IMAGE_EPOCH,
                spec: self,
            },
        )
    }

    /// The hash of what the root partition is made of: the spec's serialization without
    /// [`NOT_IN_ROOT`], with the domain tag `image-root` and [`IMAGE_EPOCH`]. Images with the
    /// same root hash share their root partition's bytes (and the ids derived from it), so a
    /// node's change rebuilds only the boot partition, and the per-node images of a role
    /// share the role's root.
    pub fn root_hash(&self) -> Result<InputHash, HashError> {
        let mut value = serde_json::to_value(Hashed {
            image_epoch: IMAGE_EPOCH,
            spec: self,
        })
        .map_err(|source| HashError {
            domain: "image-root".to_owned(),
            source,
        })?;
        if let Some(spec) = value.get_mut("spec").and_then(|v| v.as_object_mut()) {
            for field in NOT_IN_ROOT {
                spec.remove(field);
            }
        }
        InputHash::of("image-root", &value)
    }

    /// The hash of the rendered layers alone (the manifest's `layers_hash`).
    pub fn layers_hash(&self) -> Result<InputHash, HashError> {
        InputHash::of("layers", &self.layers)
    }
}

impl BootSpec {
    /// config.txt of image `image`, for the kernel files the rootfs holds.
    pub fn config_txt(&self, image: &str, kernel: &KernelFiles) -> String {
        ConfigTxt {
            image,
            kernel_source: self.kernel,
            kernel,
            platforms: &self.platforms,
            button: self.button.as_ref(),
            gps: self.gps.as_ref().map(|g| (&g.gps, g.platform)),
            profile_lines: &self.profile_config_txt,
            node_lines: &self.node_config_txt,
        }
        .render()
    }

    /// Whether the image boots through UEFI (pc-efi): an ESP instead of config.txt.
    pub fn is_efi(&self) -> bool {
        self.platforms.contains(&Platform::PcEfi)
    }

    /// The tree directory that becomes the boot partition, and its mount point.
    pub fn boot_dir(&self) -> pibake_image::EntryPath {
        if self.is_efi() {
            pibake_image::efi::esp_dir()
        } else {
            pibake_image::assemble::boot_dir()
        }
    }

    /// The ESP's loader.conf and its one entry (by ESP path) for the kernel
    /// files of /boot; `None` without an initrd (the root is found by the
    /// initramfs).
    pub fn efi_loader_files(
        image: &str,
        kernel: &KernelFiles,
        root_partuuid: &str,
    ) -> Option<BTreeMap<String, String>> {
        let entry = pibake_image::efi::LoaderEntry {
            title: format!("Debian GNU/Linux ({image})"),
            linux: format!("/{}", kernel.kernel),
            initrd: vec![format!("/{}", kernel.initrd.as_ref()?)],
            options: efi_kernel_options(root_partuuid),
        };
        Some(BTreeMap::from([
            (
                pibake_image::efi::LOADER_CONF.to_owned(),
                pibake_image::efi::loader_conf(),
            ),
            (pibake_image::efi::entry_path(), entry.render()),
        ]))
    }

    /// cmdline.txt: the serial console is left off where the GPS owns the UART.
    pub fn cmdline_txt(&self, root_partuuid: &str) -> String {
        boot::cmdline_txt(
            root_partuuid,
            self.gps.as_ref().is_none_or(|g| !g.gps.on_header_uart()),
        )
    }
}

/// The kernel command line of a pc-efi image: the serial console last, so that it is
/// /dev/console (Proxmox's `qm terminal`, QEMU), the screen too for a Mac Mini's monitor.
pub fn efi_kernel_options(root_partuuid: &str) -> String {
    // net.ifnames=0 keeps the wired interface eth0, the name the node table and the
    // NetworkManager keyfile use (the Mac Mini's tg3 would be enp1s0f0).
    format!("console=tty0 console=ttyS0,115200 root=PARTUUID={root_partuuid} rootfstype=ext4 fsck.repair=yes rootwait net.ifnames=0")
}

impl ServiceSpec {
    /// The systemd preset: systemd's first-boot `preset-all` (the image's machine-id is
    /// `uninitialized`) must not enable what the build disabled.
    pub fn preset(&self) -> String {
        let mut text =
            String::from("# Rendered by pibake: the role's services, and no other role's.\n");
        for service in &self.enable {
            text.push_str(&format!("enable {service}\n"));
        }
        for service in &self.disable {
            text.push_str(&format!("disable {service}\n"));
        }
        text
    }
}

/// Where the preset lives in the image.
pub const PRESET_PATH: &str = "etc/systemd/system-preset/10-pibake.preset";
