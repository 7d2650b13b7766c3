//! The boot-partition files: one contract between the host side, which puts
//! them into partition 1 of the image, card or disk (a FAT filesystem), and
//! the agent, which reads them on the machine, where that partition is
//! mounted. The builder writes the node table ([`TABLE_FILE`]) into every
//! image; `pibake flash` reads it from there (to refuse a `--node` the image
//! does not serve) and writes the per-card [`NODE_FILE`] and
//! [`SECRETS_FILE`]. Defined here, next to the node table, so the sides
//! cannot name different files or look in different places.
//!
//! Where partition 1 is mounted depends on the kind of image
//! ([`BootPartition`]): `/boot/firmware` on a Raspberry Pi (MBR, the
//! firmware's FAT partition), `/boot/efi` on pc-efi (GPT, the EFI system
//! partition). The agent does not know which image it runs in, so it looks
//! in both with one rule, [`find`]:
//!
//! - the file is taken from whichever of the two directories holds it;
//! - a file in both is an error naming both paths, never a guess.
//!
//! Why this cannot be ambiguous on a pibake image: the image has exactly one
//! FAT boot partition, its /etc/fstab mounts it on exactly one of the two
//! directories (the builder's fstab stage), and the builder and `pibake
//! flash` write these files only into that partition. The other directory,
//! where it exists at all, is a plain directory of the ext4 root (left by a
//! package or an overlay) that nothing of pibake writes these names into. A
//! file in both therefore means something other than pibake put one there; as
//! the node file decides which node the machine becomes, the node table what
//! each node is, and the secrets file carries its join tokens, refusing is
//! safer than either choice. [`BootPartition::ALL`] fixes the order the
//! directories are looked in, which only decides the order they are named in
//! messages.

use crate::root::Root;
use std::io;
use std::path::PathBuf;

/// Where a Raspberry Pi's boot partition is mounted, relative to `/`
/// (Debian's raspi-firmware; `pibake_image::assemble::boot_dir`).
pub const PI_BOOT_DIR: &str = "boot/firmware";
/// Where a pc-efi machine's EFI system partition is mounted, relative to `/`
/// (Debian's mount point of the ESP; `pibake_image::efi::ESP_DIR`).
pub const ESP_DIR: &str = "boot/efi";
/// The Raspberry Pi's boot directory, the only one before pc-efi: kept for
/// its users. New code names the kind with [`BootPartition`], and the agent
/// finds its files with [`find`].
pub const BOOT_DIR: &str = PI_BOOT_DIR;
/// The file the agent reads to pick its node (`node = "<name>"`).
pub const NODE_FILE: &str = "pibake-node.toml";
/// Secrets for the agent to ingest (it moves them to 0600 files and wipes this copy).
pub const SECRETS_FILE: &str = "pibake-secrets.toml";
/// The node table ([`crate::table::NodeTable`]), written by the builder, read by the agent
/// ([`crate::load_table`], never changed or wiped) and by `pibake flash --node`. It is on
/// the boot partition, not in the root, so that a node's change rewrites only that small
/// partition and the root file system is reused as bytes (issue 17).
pub const TABLE_FILE: &str = "pibake-nodes.toml";

/// The kind of boot partition an image has, which decides where the machine mounts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootPartition {
    /// A Raspberry Pi's: partition 1 of an MBR, FAT, mounted at [`PI_BOOT_DIR`].
    PiFirmware,
    /// A pc-efi machine's EFI system partition: partition 1 of a GPT, FAT32, mounted at
    /// [`ESP_DIR`].
    Esp,
}

impl BootPartition {
    /// Every kind, in the order [`find`] looks.
    pub const ALL: [BootPartition; 2] = [BootPartition::PiFirmware, BootPartition::Esp];

    /// The mount point, relative to `/`.
    pub const fn dir(self) -> &'static str {
        match self {
            BootPartition::PiFirmware => PI_BOOT_DIR,
            BootPartition::Esp => ESP_DIR,
        }
    }

    /// A boot-partition file (e.g. [`NODE_FILE`]) as it is found on the machine, relative
    /// to `/`.
    pub fn path_of(self, file: &str) -> String {
        format!("{}/{file}", self.dir())
    }
}

/// A boot-partition file found by [`find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub partition: BootPartition,
    /// The file under the root.
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("{file} is in both {first} and {second}; a pibake image mounts its one boot partition on one of them, so one copy was not put there by pibake: remove it")]
    Both {
        file: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot look for {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where boot-partition `file` is under `root`: in whichever of the boot directories
/// holds it ([`BootPartition::ALL`]), `None` in neither, an error in both. Anything at the
/// path counts (a dangling symlink too), so reading it fails loudly rather than the file
/// being passed over.
pub fn find(root: &Root, file: &str) -> Result<Option<Found>, FindError> {
    let mut found: Option<Found> = None;
    for partition in BootPartition::ALL {
        let path = root.at(&partition.path_of(file));
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue
            }
            Err(source) => return Err(FindError::Io { path, source }),
        }
        if let Some(first) = found {
            return Err(FindError::Both {
                file: file.to_owned(),
                first: first.path,
                second: path,
            });
        }
        found = Some(Found { partition, path });
    }
    Ok(found)
}

/// The places [`find`] looks for `file`, for messages: `/boot/firmware/<file> or
/// /boot/efi/<file>`.
pub fn places(file: &str) -> String {
    BootPartition::ALL
        .iter()
        .map(|p| format!("/{}", p.path_of(file)))
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn put(root: &Root, path: &str) -> anyhow::Result<()> {
        let full = root.at(path);
        std::fs::create_dir_all(full.parent().unwrap_or(root.dir()))?;
        std::fs::write(full, "node = \"w1\"\n")?;
        Ok(())
    }

    #[test]
    fn each_kind_has_its_mount_point() {
        assert_eq!(BootPartition::PiFirmware.dir(), "boot/firmware");
        assert_eq!(BootPartition::Esp.dir(), "boot/efi");
        assert_eq!(BOOT_DIR, BootPartition::PiFirmware.dir());
        assert_eq!(
            BootPartition::Esp.path_of(NODE_FILE),
            "boot/efi/pibake-node.toml"
        );
        assert_eq!(
            places(SECRETS_FILE),
            "/boot/firmware/pibake-secrets.toml or /boot/efi/pibake-secrets.toml"
        );
    }

    #[test]
    fn a_file_is_found_in_either_boot_directory() -> anyhow::Result<()> {
        for partition in BootPartition::ALL {
            let dir = tempfile::tempdir()?;
            let root = Root::new(dir.path());
            // Both mount points exist, as when a package left the other one behind.
            for p in BootPartition::ALL {
                std::fs::create_dir_all(root.at(p.dir()))?;
            }
            assert_eq!(find(&root, NODE_FILE)?, None);
            put(&root, &partition.path_of(NODE_FILE))?;
            let found = find(&root, NODE_FILE)?.expect("found");
            assert_eq!(found.partition, partition);
            assert_eq!(found.path, root.at(&partition.path_of(NODE_FILE)));
            assert_eq!(find(&root, SECRETS_FILE)?, None, "only what is there");
        }
        Ok(())
    }

    #[test]
    fn no_boot_directory_at_all_is_no_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        assert_eq!(find(&root, NODE_FILE)?, None);
        // /boot/efi a file, not a directory: nothing can be below it.
        put(&root, "boot/efi")?;
        assert_eq!(find(&root, NODE_FILE)?, None);
        Ok(())
    }

    #[test]
    fn a_file_in_both_is_refused_naming_both() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        put(&root, "boot/firmware/pibake-node.toml")?;
        put(&root, "boot/efi/pibake-node.toml")?;
        let err = find(&root, NODE_FILE).expect_err("ambiguous");
        let text = err.to_string();
        for p in [
            "boot/firmware/pibake-node.toml",
            "boot/efi/pibake-node.toml",
        ] {
            assert!(text.contains(&root.at(p).display().to_string()), "{text}");
        }
        Ok(())
    }

    #[test]
    fn a_dangling_symlink_counts_as_there() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.at("boot/efi"))?;
        std::os::unix::fs::symlink(
            Path::new("/nonexistent"),
            root.at("boot/efi/pibake-secrets.toml"),
        )?;
        let found = find(&root, SECRETS_FILE)?.expect("found");
        assert_eq!(found.partition, BootPartition::Esp);
        Ok(())
    }
}
