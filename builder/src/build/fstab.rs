//! The fstab stage: the root and boot partitions by the PARTUUIDs of the image's ids.

use super::{entry_path, BuildError};
use pibake_image::assemble::ImageIds;
use pibake_image::{Content, Entry, EntryPath, Layer, Rootfs};

/// The text of /etc/fstab; the boot partition is mounted on `boot_dir` (/boot/firmware on a
/// Pi, /boot/efi on pc-efi).
pub(super) fn text(ids: &ImageIds, boot_dir: &EntryPath) -> String {
    format!(
        "# Rendered by pibake.\nPARTUUID={} / ext4 defaults,noatime 0 1\nPARTUUID={} /{boot_dir} vfat defaults,noatime,umask=0077 0 2\n",
        ids.table.root_partuuid(),
        ids.table.boot_partuuid()
    )
}

/// Writes /etc/fstab.
pub(super) fn apply(
    rootfs: &mut Rootfs,
    image: &str,
    ids: &ImageIds,
    boot_dir: &EntryPath,
) -> Result<(), BuildError> {
    rootfs.apply_layer(&Layer {
        name: "fstab".into(),
        entries: vec![Entry::file(
            entry_path(image, "etc/fstab")?,
            Content::bytes(text(ids, boot_dir).into_bytes()),
            0o644,
        )],
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pibake_image::assemble::{ImageIds, TableKind};

    #[test]
    fn the_boot_partition_is_mounted_where_its_platform_keeps_it() {
        let ids = ImageIds::from_input_hash(&[7; 32], TableKind::Gpt);
        let pi = text(&ids, &pibake_image::assemble::boot_dir());
        let efi = text(&ids, &pibake_image::efi::esp_dir());
        let boot = ids.table.boot_partuuid();
        assert!(
            pi.contains(&format!("PARTUUID={boot} /boot/firmware vfat ")),
            "{pi}"
        );
        assert!(
            efi.contains(&format!("PARTUUID={boot} /boot/efi vfat ")),
            "{efi}"
        );
        assert!(efi.contains(&format!("PARTUUID={} / ext4 ", ids.table.root_partuuid())));
    }
}
