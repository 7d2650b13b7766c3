//! The root partition stage: an image's root partition ([`pibake_image::rootpart`]) kept in
//! the store under its key (the image's root hash, agent and overlays), and reused as bytes
//! by every later image with that key: the next build after a node's change, and the
//! per-node images of a role.
//!
//! Three entries make one part: the partition (sparse, inserted by rename so its holes stay
//! holes), its zstd frame, and a record naming both with the part's meta and the root's
//! entries for the manifest. The stage pointer
//! `stages/rootpart-<key>` names the record; each image's gc root `image-root-<image>` holds
//! the three, replaced by its next build, so `pibake gc` frees a superseded root.

use super::BuildError;
use crate::hash::InputHash;
use pibake_image::assemble::{AssembleError, AssembleSpec};
use pibake_image::manifest::ManifestFile;
use pibake_image::rootpart::{self, RootPart, RootPartMeta, PART_FORMAT};
use pibake_image::Rootfs;
use pibake_inputs::store::{EntryName, StoreError};
use pibake_inputs::{Store, Substituter};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The record of a stored part.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// Entry names (`<sha256>-<name>`).
    ext4: String,
    zst: String,
    meta: RootPartMeta,
    /// The root's entries for the manifest (hashing them costs a read of every file).
    files: Vec<ManifestFile>,
}

/// A root partition in the store.
#[derive(Debug)]
pub(super) struct Stored {
    /// The record, the ext4 and the zstd frame: the entries the image's gc root holds.
    entries: [EntryName; 3],
    ext4: PathBuf,
    zst: PathBuf,
    meta: RootPartMeta,
    pub(super) files: Vec<ManifestFile>,
}

impl Stored {
    pub(super) fn part(&self) -> RootPart<'_> {
        RootPart {
            ext4: &self.ext4,
            zst: &self.zst,
            meta: &self.meta,
        }
    }
}

/// The gc root holding the entries of `image`'s current root partition.
pub fn root_name(image: &str) -> String {
    format!("image-root-{image}")
}

/// The store's name for root partitions (`stages/rootpart-<key>`).
pub const STAGE_KIND: &str = "rootpart";

/// The stored part of `key`, if a build made it before (and all of it is there).
pub(super) fn cached(store: &Store, key: &InputHash) -> Option<Stored> {
    stored(store, &key.to_string())
}

fn stored(store: &Store, key: &str) -> Option<Stored> {
    let record = store.stage_entry(STAGE_KIND, key)?;
    let text = std::fs::read(store.path_of(&record)).ok()?;
    let r: Record = serde_json::from_slice(&text).ok()?;
    let ext4: EntryName = r.ext4.parse().ok()?;
    let zst: EntryName = r.zst.parse().ok()?;
    if r.meta.format != PART_FORMAT || !store.contains(&ext4) || !store.contains(&zst) {
        return None;
    }
    Some(Stored {
        ext4: store.path_of(&ext4),
        zst: store.path_of(&zst),
        entries: [record, ext4, zst],
        meta: r.meta,
        files: r.files,
    })
}

/// The part of `key` from the store, made first if it is not there; the bool says whether
/// it was cached. `rootfs` is the image's tree with its boot directory split off.
pub(super) fn ensure(
    store: &Store,
    key: &InputHash,
    image: &str,
    rootfs: &mut Rootfs,
    spec: &AssembleSpec,
    substituter: Option<&dyn Substituter>,
) -> Result<(Stored, bool), BuildError> {
    if let Some(stored) = cached(store, key) {
        return Ok((stored, true));
    }
    if let Some(s) = substituter {
        let pulled = crate::rootfs::substituted(s, store, STAGE_KIND, &key.to_string());
        if let (true, Some(stored)) = (pulled, cached(store, key)) {
            store
                .add_root(&root_name(image), &stored.entries)
                .map_err(|e| BuildError::Image {
                    image: image.to_owned(),
                    message: format!("recording its root partition: {e}"),
                })?;
            return Ok((stored, true));
        }
    }
    Ok((make(store, key, image, rootfs, spec)?, false))
}

/// The entries of the stored root partition of `key`: its record, ext4 and zstd frame (what
/// a cache push sends and a pull must bring back whole), if all of them are there.
pub fn entries(store: &Store, key: &str) -> Option<Vec<EntryName>> {
    stored(store, key).map(|s| s.entries.to_vec())
}

fn make(
    store: &Store,
    key: &InputHash,
    image: &str,
    rootfs: &mut Rootfs,
    spec: &AssembleSpec,
) -> Result<Stored, BuildError> {
    let store_err = |source: StoreError| BuildError::Image {
        image: image.to_owned(),
        message: format!("storing its root partition: {source}"),
    };
    let assemble_err = |source: AssembleError| BuildError::Assemble {
        image: image.to_owned(),
        source: Box::new(source),
    };
    let files = super::manifest::files(image, rootfs.tree(), None, rootfs)?;
    let short = key.short();
    let ext4 = store
        .temp_file(&format!("root-{short}.ext4"))
        .map_err(store_err)?;
    let zst = store
        .temp_file(&format!("root-{short}.ext4.zst"))
        .map_err(store_err)?;
    let meta = rootpart::make(rootfs, spec, ext4.path(), zst.as_file()).map_err(assemble_err)?;
    let ext4 = store
        .insert_temp(&format!("root-{short}.ext4"), ext4)
        .map_err(store_err)?;
    let zst = store
        .insert_temp(&format!("root-{short}.ext4.zst"), zst)
        .map_err(store_err)?;
    let record = Record {
        ext4: ext4.to_string(),
        zst: zst.to_string(),
        meta,
        files,
    };
    let text = serde_json::to_vec_pretty(&record).map_err(|e| BuildError::Image {
        image: image.to_owned(),
        message: format!("the root partition's record: {e}"),
    })?;
    let entry = store
        .insert_reader(&format!("root-{short}.json"), None, &text[..])
        .map_err(store_err)?;
    store
        .set_stage_pointer(STAGE_KIND, &key.to_string(), &entry)
        .map_err(store_err)?;
    let entries = [entry, ext4, zst];
    store
        .add_root(&root_name(image), &entries)
        .map_err(store_err)?;
    Ok(Stored {
        ext4: store.path_of(&entries[1]),
        zst: store.path_of(&entries[2]),
        entries,
        meta: record.meta,
        files: record.files,
    })
}
