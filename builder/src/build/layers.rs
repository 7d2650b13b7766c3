//! The layer stages: the spec's rendered layers (a stored entry's bytes read from the
//! store by name), then the agent and the project's device-tree overlays.

use super::{entry_path, BuildError};
use crate::render::{EntryKind as LayerKind, Layer as RenderedLayer};
use pibake_image::{Content, Entry, Layer, Rootfs};
use pibake_inputs::{EntryName, Store};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Applies the rendered layers in stacking order.
pub(super) fn apply_rendered(
    rootfs: &mut Rootfs,
    image: &str,
    layers: &[RenderedLayer],
    store: &Store,
) -> Result<(), BuildError> {
    for layer in layers {
        let mut entries = Vec::new();
        for e in &layer.entries {
            let path = entry_path(image, &e.path)?;
            let entry = match &e.kind {
                LayerKind::File(bytes) => Entry::file(path, Content::bytes(bytes.clone()), e.mode),
                LayerKind::Symlink(target) => Entry::symlink(path, target.clone()),
                LayerKind::Stored { entry, size } => Entry::file(
                    path,
                    Content::Path(stored(store, image, entry, *size)?),
                    e.mode,
                ),
            };
            entries.push(entry.owner(e.uid, e.gid));
        }
        rootfs.apply_layer(&Layer {
            name: layer.overlay.clone(),
            entries: with_parents(rootfs, entries),
        });
    }
    Ok(())
}

/// The file of store entry `entry` (`fetch` put it there, verified by its name's
/// sha256; its size is checked again, the bytes when the tar is written).
fn stored(store: &Store, image: &str, entry: &str, size: u64) -> Result<PathBuf, BuildError> {
    let name: EntryName = entry
        .parse()
        .map_err(|e| super::image_err(image, format!("{e}")))?;
    let path = store.path_of(&name);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == size => Ok(path),
        Ok(m) => Err(super::image_err(
            image,
            format!(
                "{} has {} bytes, not {size}: `pibake store verify` finds what is wrong with it",
                path.display(),
                m.len()
            ),
        )),
        Err(_) => Err(super::image_err(
            image,
            format!("the store lacks {entry}: run `pibake fetch`"),
        )),
    }
}

/// Installs the agent as /usr/bin/pibake-firstboot and the compiled overlays in
/// /boot/firmware/overlays.
pub(super) fn apply_agent_and_dtbos(
    rootfs: &mut Rootfs,
    image: &str,
    agent: &Path,
    dtbos: &[PathBuf],
) -> Result<(), BuildError> {
    let mut extra = vec![Entry::file(
        entry_path(image, "usr/bin/pibake-firstboot")?,
        Content::Path(agent.to_path_buf()),
        0o755,
    )];
    for dtbo in dtbos {
        let file = dtbo
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                super::image_err(image, format!("{} has no file name", dtbo.display()))
            })?;
        extra.push(Entry::file(
            entry_path(image, &format!("boot/firmware/overlays/{file}"))?,
            Content::Path(dtbo.clone()),
            0o644,
        ));
    }
    rootfs.apply_layer(&Layer {
        name: "agent-and-dtbo".into(),
        entries: with_parents(rootfs, extra),
    });
    Ok(())
}

/// Adds directory entries for parents the tree lacks (root-owned, 0755).
pub(super) fn with_parents(rootfs: &Rootfs, entries: Vec<Entry>) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut added = BTreeSet::new();
    for entry in &entries {
        let mut parent = entry.path.parent();
        let mut missing = Vec::new();
        while let Some(p) = parent {
            if rootfs.tree().get(&p).is_some()
                || added.contains(p.as_str())
                || entries.iter().any(|e| e.path == p)
            {
                break;
            }
            missing.push(p.clone());
            parent = p.parent();
        }
        for p in missing.into_iter().rev() {
            added.insert(p.as_str().to_string());
            out.push(Entry::dir(p, 0o755));
        }
    }
    out.extend(entries);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::LayerEntry;
    use pibake_image::SourceDateEpoch;

    fn archive_layer(entry: &str, size: u64) -> RenderedLayer {
        RenderedLayer {
            overlay: "images".into(),
            entries: vec![LayerEntry {
                path: "var/lib/pibake/images/web.tar".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                kind: LayerKind::Stored {
                    entry: entry.into(),
                    size,
                },
            }],
        }
    }

    /// A stored entry's bytes come from the store, under the image path, with
    /// the layer's mode and its parents made.
    #[test]
    fn stored_entries_are_read_from_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        let bytes = b"an image archive".to_vec();
        let entry = store
            .insert_reader("oci-web.tar", None, &bytes[..])
            .expect("insert");
        let mut rootfs = Rootfs::empty();
        let layer = archive_layer(&entry.to_string(), bytes.len() as u64);
        apply_rendered(&mut rootfs, "lab-worker", &[layer], &store).expect("applied");
        let mut tar = Vec::new();
        rootfs
            .write_tar(&mut tar, SourceDateEpoch(1_700_000_000))
            .expect("tar");
        let mut found = None;
        for e in tar::Archive::new(&tar[..]).entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let mode = e.header().mode().expect("mode");
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("data");
            if path == "var/lib/pibake/images/web.tar" {
                found = Some((mode, data));
            } else {
                assert!(path.ends_with('/'), "only parents beside it: {path}");
            }
        }
        assert_eq!(found, Some((0o644, bytes.clone())));

        // Absent from the store, or not its size: the build stops, saying why.
        let missing = format!("{}-oci-db.tar", pibake_inputs::Sha256::of(b"db"));
        let layer = archive_layer(&missing, 3);
        let err = apply_rendered(&mut Rootfs::empty(), "lab-worker", &[layer], &store)
            .expect_err("not in the store");
        assert!(
            err.to_string()
                .contains(&format!("the store lacks {missing}: run `pibake fetch`")),
            "{err}"
        );
        let layer = archive_layer(&entry.to_string(), 3);
        let err = apply_rendered(&mut Rootfs::empty(), "lab-worker", &[layer], &store)
            .expect_err("wrong size");
        assert!(err.to_string().contains("has 16 bytes, not 3"), "{err}");
    }
}
