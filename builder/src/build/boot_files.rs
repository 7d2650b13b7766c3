//! The boot files stage: config.txt and cmdline.txt rendered from the spec's [`BootSpec`]
//! against the kernel the rootfs holds, with every `dtoverlay=` checked against the tree.

use super::{entry_path, image_err, BuildError};
use crate::boot::{self, KernelFiles};
use crate::spec::BootSpec;
use pibake_image::assemble::ImageIds;
use pibake_image::{Content, Entry, Layer, Rootfs};
use std::collections::BTreeMap;

/// Writes config.txt and cmdline.txt into /boot/firmware; returns their texts by name.
pub(super) fn apply(
    rootfs: &mut Rootfs,
    image: &str,
    spec: &BootSpec,
    ids: &ImageIds,
) -> Result<BTreeMap<String, String>, BuildError> {
    let boot_names: Vec<String> = rootfs
        .tree()
        .iter()
        .filter_map(|e| {
            e.path
                .as_str()
                .strip_prefix("boot/firmware/")
                .map(str::to_string)
        })
        .filter(|n| !n.contains('/'))
        .collect();
    let kernel =
        KernelFiles::from_names(boot_names.iter().map(String::as_str)).ok_or_else(|| {
            image_err(
                image,
                "no vmlinuz-* in /boot/firmware: is raspi-firmware in the profile's packages?",
            )
        })?;
    let config_txt = spec.config_txt(image, &kernel);
    for overlay in boot::referenced_overlays(&config_txt) {
        let path = entry_path(image, &format!("boot/firmware/overlays/{overlay}.dtbo"))?;
        if rootfs.tree().get(&path).is_none() {
            return Err(image_err(
                image,
                format!("config.txt names dtoverlay={overlay} but boot/firmware/overlays/{overlay}.dtbo is in neither the firmware package nor overlays/dtbo/"),
            ));
        }
    }
    let cmdline = spec.cmdline_txt(&ids.table.root_partuuid());
    let mut texts = BTreeMap::new();
    let mut entries = Vec::new();
    for (name, text) in [("config.txt", config_txt), ("cmdline.txt", cmdline)] {
        entries.push(Entry::file(
            entry_path(image, &format!("boot/firmware/{name}"))?,
            Content::bytes(text.clone().into_bytes()),
            0o644,
        ));
        texts.insert(name.to_string(), text);
    }
    rootfs.apply_layer(&Layer {
        name: "boot".into(),
        entries,
    });
    Ok(texts)
}
