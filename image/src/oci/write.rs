//! Writing a single-platform image archive like `docker save` of Docker ≥ 25.

use super::{
    blob_path, digest_of, Descriptor, OciError, Platform, CONFIG_MEDIA_TYPE, IMAGE_NAME_ANNOTATION,
    INDEX_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, REF_NAME_ANNOTATION,
};
use crate::tar::{Rootfs, SourceDateEpoch};
use crate::{Content, Entry, EntryPath, Layer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// What a container of the image runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    /// `80/tcp`.
    pub exposed_ports: Vec<String>,
    pub working_dir: String,
}

/// One image to write.
#[derive(Debug, Clone)]
pub struct ImageToWrite<'a> {
    pub platform: Platform,
    pub runtime: RuntimeConfig,
    /// Uncompressed layer tars, bottom first.
    pub layers: &'a [Vec<u8>],
    /// Full references (`localhost/pibake/web:1`), as `docker load` will tag it.
    pub tags: &'a [String],
    /// The config's `created` and every member's mtime.
    pub epoch: SourceDateEpoch,
    /// The history line of the one step that made the layers.
    pub created_by: &'a str,
}

/// The digests of what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub config: String,
    pub manifest: String,
    pub layers: Vec<String>,
}

#[derive(Serialize)]
struct ConfigFile<'a> {
    created: &'a str,
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    config: RuntimeJson<'a>,
    rootfs: RootfsJson,
    history: [History<'a>; 1],
}

/// The runtime keys are Docker's (capitalized), as in the image spec.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RuntimeJson<'a> {
    entrypoint: &'a [String],
    env: &'a [String],
    exposed_ports: BTreeMap<&'a str, Empty>,
    working_dir: &'a str,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootfsJson {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestFile {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

/// One entry of Docker's `manifest.json`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest<'a> {
    config: String,
    repo_tags: &'a [String],
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciLayout {
    image_layout_version: &'static str,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest_of(bytes),
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// The tag of a reference: what follows the last `:` after the last `/`.
fn tag_of(reference: &str) -> Option<&str> {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    name.rsplit_once(':').map(|(_, tag)| tag)
}

/// Writes `image` as one archive to `out`: the layout's blobs (config, manifest, layers),
/// `index.json` (one entry per tag, as Docker writes it), `manifest.json` and
/// `oci-layout`. Same image, same bytes.
pub fn write_archive<W: Write>(out: W, image: &ImageToWrite<'_>) -> Result<Written, OciError> {
    let created = pibake_host::civil::rfc3339_utc(image.epoch.0).ok_or_else(|| OciError::Bad {
        member: "config".into(),
        what: format!("SOURCE_DATE_EPOCH {} is past the year 9999", image.epoch.0),
    })?;
    let layer_descriptors: Vec<Descriptor> = image
        .layers
        .iter()
        .map(|l| descriptor(LAYER_MEDIA_TYPE, l))
        .collect();
    let runtime = &image.runtime;
    let config = serde_json::to_vec(&ConfigFile {
        created: &created,
        architecture: &image.platform.architecture,
        variant: image.platform.variant.as_deref(),
        os: &image.platform.os,
        config: RuntimeJson {
            entrypoint: &runtime.entrypoint,
            env: &runtime.env,
            exposed_ports: runtime
                .exposed_ports
                .iter()
                .map(|p| (p.as_str(), Empty {}))
                .collect(),
            working_dir: &runtime.working_dir,
        },
        rootfs: RootfsJson {
            kind: "layers",
            // Uncompressed layers: a diff id is the layer's digest.
            diff_ids: layer_descriptors.iter().map(|d| d.digest.clone()).collect(),
        },
        history: [History {
            created: &created,
            created_by: image.created_by,
        }],
    })?;
    let config_descriptor = descriptor(CONFIG_MEDIA_TYPE, &config);
    let manifest = serde_json::to_vec(&ManifestFile {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: config_descriptor.clone(),
        layers: layer_descriptors.clone(),
    })?;
    let manifest_descriptor = descriptor(MANIFEST_MEDIA_TYPE, &manifest);
    let index = serde_json::to_vec(&IndexFile {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: image
            .tags
            .iter()
            .map(|tag| {
                let mut d = manifest_descriptor.clone();
                d.annotations
                    .insert(IMAGE_NAME_ANNOTATION.to_owned(), tag.clone());
                if let Some(t) = tag_of(tag) {
                    d.annotations
                        .insert(REF_NAME_ANNOTATION.to_owned(), t.to_owned());
                }
                d
            })
            .collect(),
    })?;
    let path = |d: &Descriptor| blob_path(&d.digest).unwrap_or_default();
    let docker = serde_json::to_vec(&[DockerManifest {
        config: path(&config_descriptor),
        repo_tags: image.tags,
        layers: layer_descriptors.iter().map(path).collect(),
    }])?;
    let layout = serde_json::to_vec(&OciLayout {
        image_layout_version: "1.0.0",
    })?;
    let mut members: BTreeMap<String, &[u8]> = BTreeMap::new();
    members.insert(path(&config_descriptor), &config);
    members.insert(path(&manifest_descriptor), &manifest);
    for (d, bytes) in layer_descriptors.iter().zip(image.layers) {
        members.insert(path(d), bytes);
    }
    members.insert("index.json".into(), &index);
    members.insert("manifest.json".into(), &docker);
    members.insert("oci-layout".into(), &layout);
    write_members(out, &members, image.epoch)?;
    Ok(Written {
        config: config_descriptor.digest,
        manifest: manifest_descriptor.digest,
        layers: layer_descriptors.into_iter().map(|d| d.digest).collect(),
    })
}

/// The members as one tar through the project's tar writer (sorted, parents added,
/// root-owned, times clamped to `epoch`).
fn write_members<W: Write>(
    out: W,
    members: &BTreeMap<String, &[u8]>,
    epoch: SourceDateEpoch,
) -> Result<(), OciError> {
    let mut entries = Vec::new();
    for (name, bytes) in members {
        let path = EntryPath::new(name).map_err(|e| OciError::Bad {
            member: name.clone(),
            what: e.to_string(),
        })?;
        entries.push(Entry::file(path, Content::bytes(bytes.to_vec()), 0o644));
    }
    let mut tree = Rootfs::empty();
    tree.apply_layer(&Layer {
        name: "oci".into(),
        entries,
    });
    tree.write_tar(out, epoch).map_err(OciError::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_the_part_after_the_name() {
        assert_eq!(tag_of("localhost/pibake/web:1"), Some("1"));
        assert_eq!(tag_of("localhost:5000/web:v2"), Some("v2"));
        assert_eq!(tag_of("localhost:5000/web"), None);
        assert_eq!(tag_of("busybox"), None);
    }
}
