//! The node table stage: the spec's node table as `pibake-nodes.toml` on the boot partition
//! (`pibake_firstboot::bootfiles::TABLE_FILE`), where the agent and `pibake flash` read it.
//! It is the one part of an image that a node's change alters, and the boot partition is
//! re-made on every build anyway, so the root stays as it was.

use super::{entry_path, image_err, BuildError};
use pibake_firstboot::bootfiles::TABLE_FILE;
use pibake_firstboot::table::NodeTable;
use pibake_image::{Content, Entry, EntryPath, Layer, Rootfs};

/// Writes the table into `boot_dir` of the tree (the boot partition's files).
pub(super) fn apply(
    rootfs: &mut Rootfs,
    image: &str,
    table: &NodeTable,
    boot_dir: &EntryPath,
) -> Result<(), BuildError> {
    let text = table
        .to_toml()
        .map_err(|e| image_err(image, format!("the node table does not encode: {e}")))?;
    rootfs.apply_layer(&Layer {
        name: "node table".into(),
        entries: vec![Entry::file(
            entry_path(image, &format!("{boot_dir}/{TABLE_FILE}"))?,
            Content::bytes(text.into_bytes()),
            0o644,
        )],
    });
    Ok(())
}
