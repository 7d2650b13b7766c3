//! The boot-partition files: one contract between `pibake flash` (which
//! writes them into the card's FAT) and the agent (which reads them on the
//! board, where the partition is mounted at /boot/firmware). Defined here,
//! next to the node table, so the two sides cannot name different files.

/// Where the boot partition is mounted on the board, relative to `/`.
pub const BOOT_DIR: &str = "boot/firmware";
/// The file the agent reads to pick its node (`node = "<name>"`).
pub const NODE_FILE: &str = "pibake-node.toml";
/// Secrets for the agent to ingest (it moves them to 0600 files and wipes this copy).
pub const SECRETS_FILE: &str = "pibake-secrets.toml";

/// [`NODE_FILE`] as the agent finds it, relative to the root.
pub const NODE_FILE_IN_ROOT: &str = "boot/firmware/pibake-node.toml";
/// [`SECRETS_FILE`] as the agent finds it, relative to the root.
pub const SECRETS_FILE_IN_ROOT: &str = "boot/firmware/pibake-secrets.toml";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_paths_are_the_flash_names_under_the_boot_dir() {
        assert_eq!(NODE_FILE_IN_ROOT, format!("{BOOT_DIR}/{NODE_FILE}"));
        assert_eq!(SECRETS_FILE_IN_ROOT, format!("{BOOT_DIR}/{SECRETS_FILE}"));
    }
}
