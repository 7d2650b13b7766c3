//! Service enablement, one way: the spec's [`ServiceSpec`] decides, and this stage writes
//! it as systemd would (`systemctl enable/disable`: the enablement symlinks from each unit's
//! [Install] section, and the removal of the disabled units' symlinks) together with the
//! preset file that says the same, so that systemd's first-boot `preset-all` (the image's
//! machine-id is `uninitialized`) cannot enable what the build disabled.

use super::{entry_path, image_err, with_parents, BuildError};
use crate::spec::{ServiceSpec, PRESET_PATH};
use pibake_image::tree::ContentSource;
use pibake_image::{Content, Entry, EntryKind, EntryPath, Layer, Rootfs};
use std::collections::BTreeSet;
use std::io::Read;

/// Writes the preset file and the enablement symlinks of `services`.
pub(super) fn apply(
    rootfs: &mut Rootfs,
    image: &str,
    services: &ServiceSpec,
) -> Result<(), BuildError> {
    let preset = Entry::file(
        entry_path(image, PRESET_PATH)?,
        Content::bytes(services.preset().into_bytes()),
        0o644,
    )
    .owner(0, 0);
    rootfs.apply_layer(&Layer {
        name: "services".into(),
        entries: with_parents(rootfs, vec![preset]),
    });
    let links = service_layer(image, rootfs, &services.enable, &services.disable)?;
    rootfs.apply_layer(&links);
    Ok(())
}

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// Enables `enabled` (symlinks from their [Install] targets) and removes the
/// enablement symlinks of `disabled`, the way `systemctl enable/disable` would.
fn service_layer(
    image: &str,
    rootfs: &Rootfs,
    enabled: &BTreeSet<String>,
    disabled: &BTreeSet<String>,
) -> Result<Layer, BuildError> {
    let mut entries = Vec::new();
    for unit in disabled {
        for entry in rootfs.tree().iter() {
            let path = entry.path.as_str();
            if path.starts_with("etc/systemd/system/")
                && entry.path.file_name() == unit
                && matches!(entry.kind, EntryKind::Symlink(_))
            {
                entries.push(Entry::delete(entry.path.clone()));
            }
        }
    }
    for unit in enabled {
        let found = UNIT_DIRS.iter().find_map(|dir| {
            let path = EntryPath::new(&format!("{dir}/{unit}")).ok()?;
            rootfs.tree().get(&path).cloned().map(|e| (dir, e))
        });
        let Some((dir, entry)) = found else {
            return Err(image_err(image, format!("service {unit} is not in the image: add the package that ships it to the profile")));
        };
        let text = match &entry.kind {
            EntryKind::File(content) => {
                let mut text = String::new();
                rootfs
                    .open(content)
                    .and_then(|mut r| r.read_to_string(&mut text))
                    .map_err(|e| image_err(image, format!("reading {unit}: {e}")))?;
                text
            }
            EntryKind::Symlink(target) => {
                return Err(image_err(
                    image,
                    format!("service {unit} is an alias of {target}: enable the unit itself"),
                ));
            }
            _ => return Err(image_err(image, format!("{unit} is not a unit file"))),
        };
        let target_dir = if dir.starts_with("etc/") {
            "/etc/systemd/system"
        } else {
            "/usr/lib/systemd/system"
        };
        for (key, wanted) in install_targets(&text) {
            let suffix = if key == "RequiredBy" {
                "requires"
            } else {
                "wants"
            };
            let link = entry_path(
                image,
                &format!("etc/systemd/system/{wanted}.{suffix}/{unit}"),
            )?;
            entries.push(Entry::symlink(link, format!("{target_dir}/{unit}")));
        }
    }
    Ok(Layer {
        name: "services".into(),
        entries: with_parents(rootfs, entries),
    })
}

/// `WantedBy=`/`RequiredBy=` targets of a unit's [Install] section.
fn install_targets(unit: &str) -> Vec<(String, String)> {
    let mut in_install = false;
    let mut out = Vec::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if key == "WantedBy" || key == "RequiredBy" {
                for target in value.split_whitespace() {
                    out.push((key.to_string(), target.to_string()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> EntryPath {
        EntryPath::new(p).expect("valid path")
    }

    #[test]
    fn services_are_enabled_from_install_and_disabled_everywhere() {
        let mut rootfs = Rootfs::empty();
        let unit = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nRequiredBy=sysinit.target\n";
        rootfs.apply_layer(&Layer {
            name: "base".into(),
            entries: vec![
                Entry::file(
                    path("usr/lib/systemd/system/a.service"),
                    Content::bytes(unit.as_bytes().to_vec()),
                    0o644,
                ),
                Entry::symlink(
                    path("etc/systemd/system/sockets.target.wants/gpsd.socket"),
                    "/usr/lib/systemd/system/gpsd.socket",
                ),
                Entry::symlink(
                    path("etc/systemd/system/multi-user.target.wants/gpsd.service"),
                    "/usr/lib/systemd/system/gpsd.service",
                ),
                Entry::symlink(
                    path("etc/systemd/system/multi-user.target.wants/ssh.service"),
                    "/usr/lib/systemd/system/ssh.service",
                ),
            ],
        });
        let enabled: BTreeSet<String> = ["a.service".to_string()].into();
        let disabled: BTreeSet<String> =
            ["gpsd.socket".to_string(), "gpsd.service".to_string()].into();
        let layer = service_layer("t", &rootfs, &enabled, &disabled).expect("layer");
        rootfs.apply_layer(&layer);
        let tree = rootfs.tree();
        assert!(tree
            .get(&path("etc/systemd/system/sockets.target.wants/gpsd.socket"))
            .is_none());
        assert!(tree
            .get(&path(
                "etc/systemd/system/multi-user.target.wants/gpsd.service"
            ))
            .is_none());
        assert!(tree
            .get(&path(
                "etc/systemd/system/multi-user.target.wants/ssh.service"
            ))
            .is_some());
        let wants = tree
            .get(&path(
                "etc/systemd/system/multi-user.target.wants/a.service",
            ))
            .expect("enabled");
        assert_eq!(
            wants.kind,
            EntryKind::Symlink("/usr/lib/systemd/system/a.service".into())
        );
        assert!(tree
            .get(&path(
                "etc/systemd/system/sysinit.target.requires/a.service"
            ))
            .is_some());
        // A service no package ships is an error naming it.
        let missing: BTreeSet<String> = ["nope.service".to_string()].into();
        let err =
            service_layer("t", &rootfs, &missing, &BTreeSet::new()).expect_err("missing unit");
        assert!(err.to_string().contains("nope.service"), "{err}");
    }
}
