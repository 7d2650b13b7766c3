//! `[image]`: partition table and partition sizes.

use super::{p, Validator};
use crate::model::{ImageSettings, TableKind};

impl Validator<'_> {
    pub(super) fn image(&mut self) -> Option<ImageSettings> {
        let raw = &self.raw.image;
        let table = match raw.table.as_str() {
            "mbr" => TableKind::Mbr,
            "gpt" => TableKind::Gpt,
            other => {
                self.error(
                    p(&["image", "table"]),
                    format!("unknown partition table `{other}`"),
                    "use `mbr` (boots every Pi) or `gpt`",
                );
                TableKind::Mbr
            }
        };
        if raw.boot_size_mib < 64 {
            self.error(
                p(&["image", "boot_size_mib"]),
                format!(
                    "{} MiB is too small for a FAT32 boot partition",
                    raw.boot_size_mib
                ),
                "use at least 64 (256 is usual)",
            );
        }
        Some(ImageSettings {
            table,
            boot_size_mib: raw.boot_size_mib,
            root_headroom_mib: raw.root_headroom_mib,
        })
    }
}
