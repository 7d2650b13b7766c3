//! The manifest a build writes beside each image (`<name>.manifest.json`): what went in
//! (input hashes, lock, agent, packages) and what came out (sha256, boot texts, every file).
//! One type for its writer (the builder) and its readers (`pibake diff`, `flash --node`,
//! release); a reader that needs only some fields still reads this type.
//!
//! Every field has a default when read, so a partial manifest (an older build's, or a
//! hand-written fixture) still gives the parts it has; the builder always writes them all.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest format written today.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub role: String,
    pub node: Option<String>,
    /// The nodes the image's node table (`pibake-nodes.toml` on its boot partition) serves, so that `flash`
    /// can refuse others without decompressing the image. Manifests of older builds lack it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// Platforms the image is for (`rpi4`, `rpi5`).
    pub platforms: Vec<String>,
    /// Hash of every input of this image (its spec, the agent, the dtbo sources).
    pub input_hash: String,
    pub rootfs_input_hash: String,
    pub layers_hash: String,
    pub lock_digest: String,
    pub source_date_epoch: u64,
    pub agent_sha256: String,
    /// The pibake that built the image (`pibake 0.1.0`), for `pibake rebuild` to name when
    /// it differs. Manifests of older builds lack it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// `mbr` or `gpt`.
    pub table: String,
    pub root_partuuid: String,
    /// sha256 of the .img.
    pub sha256: String,
    /// Package name → version, of the lock the rootfs was installed from.
    pub packages: BTreeMap<String, String>,
    /// The `.qcow2` beside a pc-efi image (for Proxmox), if one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qcow2: Option<Qcow2Output>,
    /// Boot file name (`config.txt`, `cmdline.txt`) → text.
    pub boot: BTreeMap<String, String>,
    /// Every entry of the image's tree, sorted by path.
    pub files: Vec<ManifestFile>,
}

/// The qcow2 of an image: its sha256 and the `qemu-img --version` that wrote it (the same
/// .img and qemu-img give the same bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qcow2Output {
    pub sha256: String,
    pub tool: String,
}

/// One entry of the image's tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Absolute (`/etc/hostname`).
    pub path: String,
    /// `file`, `dir`, `symlink`, `char`, `block` or `fifo`.
    #[serde(default)]
    pub kind: String,
    /// Octal, four digits (`"0644"`).
    pub mode: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl ManifestFile {
    /// The mode as a number; `None` when `mode` is not octal.
    pub fn mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.mode, 8).ok()
    }

    /// The mode written the way manifests carry it.
    pub fn mode_text(mode: u32) -> String {
        format!("{mode:04o}")
    }
}

impl Manifest {
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Pretty JSON, as written beside the image.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_partial_manifests() {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            name: "lab-worker".into(),
            nodes: Some(vec!["worker1".into()]),
            files: vec![ManifestFile {
                path: "/etc/x".into(),
                kind: "file".into(),
                mode: ManifestFile::mode_text(0o600),
                size: Some(1),
                ..ManifestFile::default()
            }],
            ..Manifest::default()
        };
        let json = m.to_json().expect("json");
        assert_eq!(Manifest::from_json(&json).expect("parse"), m);
        assert_eq!(m.files[0].mode_bits(), Some(0o600));
        let partial = Manifest::from_json(br#"{"packages":{"a":"1"}}"#).expect("partial");
        assert_eq!(partial.packages["a"], "1");
        assert_eq!(partial.nodes, None);
    }
}
