//! The fstab stage: the root and boot partitions by the PARTUUIDs of the image's ids.

use super::{entry_path, BuildError};
use pibake_image::assemble::ImageIds;
use pibake_image::{Content, Entry, Layer, Rootfs};

/// The text of /etc/fstab.
pub(super) fn text(ids: &ImageIds) -> String {
    format!(
        "# Rendered by pibake.\nPARTUUID={} / ext4 defaults,noatime 0 1\nPARTUUID={} /boot/firmware vfat defaults,noatime,umask=0077 0 2\n",
        ids.table.root_partuuid(),
        ids.table.boot_partuuid()
    )
}

/// Writes /etc/fstab.
pub(super) fn apply(rootfs: &mut Rootfs, image: &str, ids: &ImageIds) -> Result<(), BuildError> {
    rootfs.apply_layer(&Layer {
        name: "fstab".into(),
        entries: vec![Entry::file(
            entry_path(image, "etc/fstab")?,
            Content::bytes(text(ids).into_bytes()),
            0o644,
        )],
    });
    Ok(())
}
