//! The pc-efi boot stage: the EFI system partition's files ([`pibake_image::efi`]) from what
//! the rootfs holds: systemd-boot from `systemd-boot-efi` at the removable path and at its
//! own, the kernel and initrd of /boot copied beside them, loader.conf and the one entry.

use super::{entry_path, image_err, BuildError};
use crate::boot::KernelFiles;
use crate::spec::BootSpec;
use pibake_image::efi;
use pibake_image::{Content, Entry, EntryKind, Layer, Rootfs};
use std::collections::BTreeMap;

/// Writes the ESP into [`efi::ESP_DIR`]; returns loader.conf and the entry by ESP path.
pub(super) fn apply(
    rootfs: &mut Rootfs,
    image: &str,
    root_partuuid: &str,
) -> Result<BTreeMap<String, String>, BuildError> {
    let content_of = |path: &str| -> Result<Option<Content>, BuildError> {
        let entry = rootfs.tree().get(&entry_path(image, path)?);
        Ok(entry.and_then(|e| match &e.kind {
            EntryKind::File(c) => Some(c.clone()),
            _ => None,
        }))
    };
    let loader = content_of(efi::SYSTEMD_BOOT_SOURCE)?.ok_or_else(|| {
        image_err(
            image,
            format!(
                "no /{} in the rootfs: is systemd-boot-efi in the profile's packages?",
                efi::SYSTEMD_BOOT_SOURCE
            ),
        )
    })?;
    let names: Vec<String> = rootfs
        .tree()
        .below(&entry_path(image, "boot")?)
        .filter(|e| matches!(e.kind, EntryKind::File(_)))
        .filter_map(|e| e.path.as_str().strip_prefix("boot/").map(str::to_owned))
        .filter(|n| !n.contains('/'))
        .collect();
    let kernel = KernelFiles::from_names(names.iter().map(String::as_str)).ok_or_else(|| {
        image_err(
            image,
            "no vmlinuz-* in /boot: is the kernel (linux-image-amd64) in the profile's packages?",
        )
    })?;
    let texts = BootSpec::efi_loader_files(image, &kernel, root_partuuid).ok_or_else(|| {
        image_err(
            image,
            format!(
                "no initrd.img for /boot/{}: is initramfs-tools in the profile's packages?",
                kernel.kernel
            ),
        )
    })?;
    let initrd = kernel.initrd.clone().unwrap_or_default();
    let mut entries = Vec::new();
    for dir in [
        "",
        "EFI",
        "EFI/BOOT",
        "EFI/systemd",
        "loader",
        efi::ENTRIES_DIR,
    ] {
        let path = format!("{}/{dir}", efi::ESP_DIR);
        entries.push(Entry::dir(
            entry_path(image, path.trim_end_matches('/'))?,
            0o755,
        ));
    }
    let mut file = |esp_path: &str, content: Content| -> Result<(), BuildError> {
        let path = entry_path(image, &format!("{}/{esp_path}", efi::ESP_DIR))?;
        entries.push(Entry::file(path, content, 0o644));
        Ok(())
    };
    file(efi::REMOVABLE_LOADER, loader.clone())?;
    file(efi::SYSTEMD_BOOT, loader)?;
    for name in [&kernel.kernel, &initrd] {
        let content = content_of(&format!("boot/{name}"))?
            .ok_or_else(|| image_err(image, format!("/boot/{name} is not a regular file")))?;
        file(name, content)?;
    }
    for (path, text) in &texts {
        file(path, Content::bytes(text.clone().into_bytes()))?;
    }
    rootfs.apply_layer(&Layer {
        name: "esp".into(),
        entries,
    });
    Ok(texts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pibake_image::EntryPath;

    fn p(s: &str) -> EntryPath {
        EntryPath::new(s).unwrap()
    }

    fn rootfs(with_loader: bool, with_initrd: bool) -> Rootfs {
        let mut r = Rootfs::empty();
        let mut entries = vec![
            Entry::dir(p("boot"), 0o755),
            Entry::file(
                p("boot/vmlinuz-7.3.4+deb13-amd64"),
                Content::bytes("kernel"),
                0o644,
            ),
            Entry::file(
                p("boot/config-7.3.4+deb13-amd64"),
                Content::bytes("config"),
                0o644,
            ),
        ];
        if with_initrd {
            entries.push(Entry::file(
                p("boot/initrd.img-7.3.4+deb13-amd64"),
                Content::bytes("initrd"),
                0o644,
            ));
        }
        if with_loader {
            entries.push(Entry::file(
                p(efi::SYSTEMD_BOOT_SOURCE),
                Content::bytes("MZ loader"),
                0o644,
            ));
        }
        r.apply_layer(&Layer {
            name: "base".into(),
            entries,
        });
        r
    }

    fn bytes(r: &Rootfs, path: &str) -> Vec<u8> {
        match &r.tree().get(&p(path)).unwrap().kind {
            EntryKind::File(Content::Bytes(b)) => b.to_vec(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn the_esp_holds_the_loader_twice_the_kernel_and_an_entry_that_names_them() {
        let mut r = rootfs(true, true);
        let texts = apply(&mut r, "lab-master", "0fc63daf-0000-4000-8000-000000000002").unwrap();
        let esp = |f: &str| format!("{}/{f}", efi::ESP_DIR);
        assert_eq!(bytes(&r, &esp(efi::REMOVABLE_LOADER)), b"MZ loader");
        assert_eq!(bytes(&r, &esp(efi::SYSTEMD_BOOT)), b"MZ loader");
        assert_eq!(bytes(&r, &esp("vmlinuz-7.3.4+deb13-amd64")), b"kernel");
        assert_eq!(bytes(&r, &esp("initrd.img-7.3.4+deb13-amd64")), b"initrd");
        let entry = efi::LoaderEntry::parse(&texts[&efi::entry_path()]).unwrap();
        assert_eq!(entry.linux, "/vmlinuz-7.3.4+deb13-amd64");
        assert_eq!(entry.initrd, ["/initrd.img-7.3.4+deb13-amd64"]);
        assert_eq!(
            entry.root(),
            Some("PARTUUID=0fc63daf-0000-4000-8000-000000000002")
        );
        assert_eq!(
            efi::default_entry(&texts[efi::LOADER_CONF]),
            Some("pibake.conf")
        );
        assert_eq!(
            bytes(&r, &esp(&efi::entry_path())),
            texts[&efi::entry_path()].as_bytes()
        );
    }

    #[test]
    fn a_rootfs_without_the_loader_or_an_initrd_names_the_missing_package() {
        let err = apply(&mut rootfs(false, true), "x", "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("systemd-boot-efi"), "{err}");
        let err = apply(&mut rootfs(true, false), "x", "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("initramfs-tools"), "{err}");
    }
}
