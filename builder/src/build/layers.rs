//! The layer stages: the spec's rendered layers, then the agent and the project's
//! device-tree overlays.

use super::{entry_path, BuildError};
use crate::render::{EntryKind as LayerKind, Layer as RenderedLayer};
use pibake_image::{Content, Entry, Layer, Rootfs};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Applies the rendered layers in stacking order.
pub(super) fn apply_rendered(
    rootfs: &mut Rootfs,
    image: &str,
    layers: &[RenderedLayer],
) -> Result<(), BuildError> {
    for layer in layers {
        let mut entries = Vec::new();
        for e in &layer.entries {
            let path = entry_path(image, &e.path)?;
            let entry = match &e.kind {
                LayerKind::File(bytes) => Entry::file(path, Content::bytes(bytes.clone()), e.mode),
                LayerKind::Symlink(target) => Entry::symlink(path, target.clone()),
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
