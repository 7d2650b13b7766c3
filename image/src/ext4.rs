//! The ext4 root partition, made by `mke2fs -d <tar>` (e2fsprogs ≥ 1.47.1) with a pinned
//! configuration, fixed UUID and hash seed, and a fixed clock, so equal tars give equal bytes.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::table::Guid;
use crate::tar::{SourceDateEpoch, TarStats};

pub const INSTALL_HINT: &str = "install e2fsprogs >= 1.47.1: on Debian 12, `apt-get install -t bookworm-backports e2fsprogs` \
(add `deb http://<your Debian mirror>/debian bookworm-backports main` to the apt sources first); Debian 13 has it";

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("mke2fs not found: {INSTALL_HINT}")]
    Missing(#[source] io::Error),
    #[error("mke2fs {found} is too old (need >= 1.47.1 for `-d archive.tar`): {INSTALL_HINT}")]
    TooOld { found: String },
    #[error("cannot parse the version of mke2fs from {0:?}")]
    Version(String),
    #[error("cannot write mke2fs.conf to {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mke2fs failed ({status}) making the root filesystem from {tar}: {stderr}")]
    Failed {
        tar: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("cannot run mke2fs")]
    Run(#[source] io::Error),
    #[error("ext4 label {0:?} is longer than 16 bytes")]
    Label(String),
}

/// The pinned mke2fs.conf: the same features whatever the host's /etc/mke2fs.conf says.
/// No orphan_file/metadata_csum_seed so older e2fsck (1.46) can still check the result.
pub const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0
\tlazy_itable_init = 0
\tlazy_journal_init = 0

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// What decides the bytes of the root filesystem besides its tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Spec {
    pub size_bytes: u64,
    pub uuid: Guid,
    pub hash_seed: Guid,
    pub label: String,
    pub epoch: SourceDateEpoch,
    /// Inode count; see [`inodes_for`].
    pub inodes: u64,
}

/// Size of the root partition for a tar: data + metadata estimate, plus `headroom` percent
/// and `min_free` bytes, rounded up to 4 MiB. The board grows it at first boot.
pub fn size_for(stats: &TarStats, headroom_percent: u64, min_free: u64) -> u64 {
    // Per entry: the 256-byte inode, a directory entry, and a block for small dirs/symlinks
    // on average; plus journal (up to 64 MiB for these sizes) and group metadata.
    let meta = stats.entries * 1024 + (64 << 20) + stats.data_blocks_bytes / 32;
    let base = stats.data_blocks_bytes + meta;
    let total = base + base * headroom_percent / 100 + min_free;
    total.div_ceil(4 << 20) * (4 << 20)
}

/// Enough inodes for the content with room to grow, at least one per 16 KiB.
pub fn inodes_for(stats: &TarStats, size_bytes: u64) -> u64 {
    (stats.entries * 2 + 8192).max(size_bytes / 16384)
}

/// Checks that mke2fs is 1.47.1 or newer; returns its version string.
pub fn check_mke2fs() -> Result<String, Ext4Error> {
    let out = Command::new("mke2fs")
        .arg("-V")
        .output()
        .map_err(Ext4Error::Missing)?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    parse_version(&text)
}

/// Parses `mke2fs 1.47.2 (1-Jan-2025)` and checks it is at least 1.47.1.
pub fn parse_version(text: &str) -> Result<String, Ext4Error> {
    let ver = text
        .split_whitespace()
        .skip_while(|w| *w != "mke2fs")
        .nth(1)
        .ok_or_else(|| Ext4Error::Version(text.to_owned()))?
        .to_owned();
    let nums: Vec<u32> = ver.split('.').map(|n| n.parse().unwrap_or(0)).collect();
    let v = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
        nums.get(2).copied().unwrap_or(0),
    );
    if v < (1, 47, 1) {
        return Err(Ext4Error::TooOld { found: ver });
    }
    Ok(ver)
}

/// Makes the filesystem from `tar` into `target` at byte `offset` (the partition start).
/// `work_dir` receives the pinned mke2fs.conf.
pub fn make_ext4(
    tar: &Path,
    target: &Path,
    offset: u64,
    spec: &Ext4Spec,
    work_dir: &Path,
) -> Result<(), Ext4Error> {
    check_mke2fs()?;
    if spec.label.len() > 16 {
        return Err(Ext4Error::Label(spec.label.clone()));
    }
    let conf = work_dir.join("pibake-mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(|source| Ext4Error::Config {
        path: conf.clone(),
        source,
    })?;
    let blocks = spec.size_bytes / 4096;
    let out = Command::new("mke2fs")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .env("MKE2FS_CONFIG", &conf)
        .env("SOURCE_DATE_EPOCH", spec.epoch.0.to_string())
        .env("E2FSPROGS_FAKE_TIME", spec.epoch.0.to_string())
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256"])
        .arg("-N")
        .arg(spec.inodes.to_string())
        .arg("-U")
        .arg(spec.uuid.to_string())
        .arg("-L")
        .arg(&spec.label)
        // One -E only: later -E options replace earlier ones.
        .arg("-E")
        .arg(format!(
            "hash_seed={},offset={offset},root_owner=0:0,nodiscard",
            spec.hash_seed
        ))
        .arg("-d")
        .arg(tar)
        .arg(target)
        .arg(blocks.to_string())
        .output()
        .map_err(Ext4Error::Run)?;
    if !out.status.success() {
        return Err(Ext4Error::Failed {
            tar: tar.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_gate() {
        assert_eq!(
            parse_version("mke2fs 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2\n")
                .unwrap(),
            "1.47.2"
        );
        assert_eq!(parse_version("mke2fs 1.48 (1-Jan-2026)").unwrap(), "1.48");
        let e = parse_version("mke2fs 1.47.0 (5-Feb-2023)").unwrap_err();
        assert!(
            e.to_string().contains("1.47.0 is too old")
                && e.to_string().contains("bookworm-backports"),
            "{e}"
        );
        assert!(matches!(
            parse_version("garbage"),
            Err(Ext4Error::Version(_))
        ));
    }

    #[test]
    fn sizing_leaves_headroom() {
        let s = TarStats {
            entries: 30_000,
            data_blocks_bytes: 1 << 30,
            tar_bytes: 0,
        };
        let size = size_for(&s, 20, 128 << 20);
        assert_eq!(size % (4 << 20), 0);
        assert!(size > (1 << 30) * 12 / 10 + (128 << 20), "{size}");
        assert!(inodes_for(&s, size) >= 60_000);
    }
}
