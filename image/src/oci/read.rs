//! Reading what pibake needs from an image archive: each image's platform and tags.
//! `docker save`'s `manifest.json` is read when there is one (it is what `docker load`
//! reads with Docker's classic image store); else the OCI layout's `index.json`.

use super::{
    blob_path, digest_of, OciError, Platform, DOCKER_LIST_MEDIA_TYPE, IMAGE_NAME_ANNOTATION,
    INDEX_MEDIA_TYPE, REF_NAME_ANNOTATION,
};
use crate::EntryPath;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};

/// Metadata members (manifests, configs) larger than this are refused: an archive
/// is read before it is trusted.
const METADATA_LIMIT: u64 = 4 << 20;

/// Which metadata the archive's images were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `manifest.json`, as `docker save` writes it (beside an OCI layout from Docker 25 on).
    DockerSave,
    /// `index.json` alone: an OCI image layout.
    OciIndex,
}

/// One image of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveImage {
    pub platform: Platform,
    /// Full references, as `docker load` tags the image; may be empty.
    pub tags: Vec<String>,
    /// The member holding its config.
    pub config: String,
    /// The members holding its layers, bottom first.
    pub layers: Vec<String>,
}

/// What an archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    pub layout: Layout,
    pub images: Vec<ArchiveImage>,
}

impl ArchiveInfo {
    /// The distinct platforms of its images.
    pub fn platforms(&self) -> BTreeSet<&Platform> {
        self.images.iter().map(|i| &i.platform).collect()
    }

    /// Every tag of every image, sorted, once.
    pub fn tags(&self) -> Vec<String> {
        let tags: BTreeSet<&String> = self.images.iter().flat_map(|i| &i.tags).collect();
        tags.into_iter().cloned().collect()
    }
}

/// Where each regular member's bytes are in the archive.
struct Members(BTreeMap<String, (u64, u64)>);

impl Members {
    fn index<R: Read + Seek>(archive: &mut tar::Archive<R>) -> Result<Self, OciError> {
        let mut out = BTreeMap::new();
        for entry in archive.entries_with_seek().map_err(OciError::NotTar)? {
            let entry = entry.map_err(OciError::NotTar)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if let Ok(Some(path)) = EntryPath::from_archive(&raw) {
                out.insert(
                    path.as_str().to_owned(),
                    (entry.raw_file_position(), entry.size()),
                );
            }
        }
        if out.is_empty() {
            // The tar reader takes a short or empty file for an empty archive.
            return Err(OciError::NotTar(std::io::Error::other(
                "no members (an empty file, or not a tar)",
            )));
        }
        Ok(Members(out))
    }

    /// A member's bytes (at most `limit` of them).
    fn read<R: Read + Seek>(
        &self,
        r: &mut R,
        member: &str,
        named_by: &str,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        let &(offset, size) = self.0.get(member).ok_or_else(|| OciError::Missing {
            member: named_by.to_owned(),
            missing: member.to_owned(),
        })?;
        if size > limit {
            return Err(OciError::TooLarge {
                member: member.to_owned(),
                limit,
            });
        }
        let mut bytes = vec![0; usize::try_from(size).unwrap_or(usize::MAX)];
        r.seek(SeekFrom::Start(offset))
            .and_then(|_| r.read_exact(&mut bytes))
            .map_err(OciError::NotTar)?;
        Ok(bytes)
    }

    /// A blob by digest, checked against it.
    fn blob<R: Read + Seek>(
        &self,
        r: &mut R,
        digest: &str,
        named_by: &str,
    ) -> Result<(String, Vec<u8>), OciError> {
        let member = blob_path(digest).ok_or_else(|| OciError::Bad {
            member: named_by.to_owned(),
            what: format!("{digest:?} is not a sha256 digest"),
        })?;
        let bytes = self.read(r, &member, named_by, METADATA_LIMIT)?;
        check_digest(&member, &bytes, digest)?;
        Ok((member, bytes))
    }
}

fn check_digest(member: &str, bytes: &[u8], expected: &str) -> Result<(), OciError> {
    let actual = digest_of(bytes);
    if actual != expected {
        return Err(OciError::Digest {
            member: member.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

fn json<T: serde::de::DeserializeOwned>(member: &str, bytes: &[u8]) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::Bad {
        member: member.to_owned(),
        what: e.to_string(),
    })
}

/// An entry of `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct Blob {
    digest: String,
}

#[derive(Deserialize)]
struct ManifestFile {
    config: Blob,
    #[serde(default)]
    layers: Vec<Blob>,
}

/// Reads the images of an archive: their platforms (from their configs, each checked
/// against its digest) and tags.
pub fn read_archive<R: Read + Seek>(r: R) -> Result<ArchiveInfo, OciError> {
    let mut archive = tar::Archive::new(r);
    let members = Members::index(&mut archive)?;
    let mut r = archive.into_inner();
    let (layout, images) = if members.0.contains_key("manifest.json") {
        (Layout::DockerSave, docker_images(&members, &mut r)?)
    } else if members.0.contains_key("index.json") {
        (Layout::OciIndex, index_images(&members, &mut r)?)
    } else {
        return Err(OciError::NoManifest);
    };
    if images.is_empty() {
        return Err(OciError::Empty);
    }
    Ok(ArchiveInfo { layout, images })
}

fn platform_of<R: Read + Seek>(
    members: &Members,
    r: &mut R,
    config: &str,
    bytes: Option<Vec<u8>>,
    named_by: &str,
) -> Result<Platform, OciError> {
    let bytes = match bytes {
        Some(b) => b,
        None => members.read(r, config, named_by, METADATA_LIMIT)?,
    };
    let file: ConfigFile = json(config, &bytes)?;
    Ok(Platform {
        architecture: file.architecture,
        os: file.os,
        variant: file.variant,
    })
}

fn docker_images<R: Read + Seek>(
    members: &Members,
    r: &mut R,
) -> Result<Vec<ArchiveImage>, OciError> {
    let text = members.read(r, "manifest.json", "manifest.json", METADATA_LIMIT)?;
    let entries: Vec<DockerEntry> = json("manifest.json", &text)?;
    let mut images = Vec::new();
    for entry in entries {
        let config = EntryPath::from_archive(&entry.config)
            .ok()
            .flatten()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let bytes = members.read(r, &config, "manifest.json", METADATA_LIMIT)?;
        // `blobs/sha256/<hex>` (Docker ≥ 25) or `<hex>.json` (older): the name is its digest.
        let stem = config.rsplit('/').next().unwrap_or(&config);
        let hex = stem.strip_suffix(".json").unwrap_or(stem);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            check_digest(&config, &bytes, &format!("sha256:{hex}"))?;
        }
        let platform = platform_of(members, r, &config, Some(bytes), "manifest.json")?;
        images.push(ArchiveImage {
            platform,
            tags: entry.repo_tags.unwrap_or_default(),
            config,
            layers: entry.layers,
        });
    }
    Ok(images)
}

/// The images `index.json` names (one level of nested index for a multi-platform
/// image), one per manifest, with the tags of every entry that names it.
fn index_images<R: Read + Seek>(
    members: &Members,
    r: &mut R,
) -> Result<Vec<ArchiveImage>, OciError> {
    let text = members.read(r, "index.json", "index.json", METADATA_LIMIT)?;
    let index: IndexFile = json("index.json", &text)?;
    let mut by_manifest: BTreeMap<String, ArchiveImage> = BTreeMap::new();
    for entry in &index.manifests {
        let tag = entry
            .annotations
            .get(IMAGE_NAME_ANNOTATION)
            .or_else(|| entry.annotations.get(REF_NAME_ANNOTATION));
        let (member, bytes) = members.blob(r, &entry.digest, "index.json")?;
        let manifests =
            if [INDEX_MEDIA_TYPE, DOCKER_LIST_MEDIA_TYPE].contains(&entry.media_type.as_str()) {
                let nested: IndexFile = json(&member, &bytes)?;
                nested
                    .manifests
                    .into_iter()
                    .map(|m| members.blob(r, &m.digest, &member))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                vec![(member, bytes)]
            };
        for (member, bytes) in manifests {
            let manifest: ManifestFile = json(&member, &bytes)?;
            let image = match by_manifest.entry(member.clone()) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let (config, config_bytes) =
                        members.blob(r, &manifest.config.digest, &member)?;
                    let platform = platform_of(members, r, &config, Some(config_bytes), &member)?;
                    let layers = manifest
                        .layers
                        .iter()
                        .map(|l| blob_path(&l.digest).unwrap_or_default())
                        .collect();
                    v.insert(ArchiveImage {
                        platform,
                        tags: Vec::new(),
                        config,
                        layers,
                    })
                }
            };
            if let Some(tag) = tag {
                if !image.tags.contains(tag) {
                    image.tags.push(tag.clone());
                }
            }
        }
    }
    Ok(by_manifest.into_values().collect())
}

/// The bytes of one member (a layer, to unpack it), whatever its size.
pub fn read_member<R: Read + Seek>(r: R, member: &str) -> Result<Vec<u8>, OciError> {
    let mut archive = tar::Archive::new(r);
    let members = Members::index(&mut archive)?;
    let mut r = archive.into_inner();
    members.read(&mut r, member, "the caller", u64::MAX)
}
