//! How store items look in a registry: one contract for push and pull.
//!
//! Every item is an OCI image manifest (artifact type [`ARTIFACT_TYPE`]) under a tag derived
//! from what it is, so that a puller finds it by the hash it already knows:
//!
//! - a **locked entry** (a .deb, an OCI archive of the lock): tag `entry-<sha256>`, one layer
//!   whose digest is that sha256. The lock pins it, so it needs no signature.
//! - a **stage output** (a rootfs tar, a root partition): tag `stage-<kind>-<input hash>`,
//!   one layer per entry of the output, and a config carrying the [`Statement`] (kind, input
//!   hash, its entries by name, sha256 and size) with ed25519 signatures of it. Nothing but a
//!   trusted signature vouches that those bytes are what the inputs make.
//!
//! The manifest and config are written in one fixed order from typed structs and ed25519
//! signatures are deterministic, so pushing the same item twice makes the same manifest
//! digest (push is idempotent).

use crate::key::Signature;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OCI_IMAGE_MEDIA_TYPE};
use pibake_inputs::{EntryName, Sha256};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifests' `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.pibake.store-item.v1";
/// The config blob's media type (a JSON [`Config`]).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.pibake.store-item.config.v1+json";
/// A layer: one store entry's bytes, as the store holds them.
pub const ENTRY_MEDIA_TYPE: &str = "application/vnd.pibake.store-entry.v1";
/// The version of [`Config`] this pibake writes and reads.
pub const CONFIG_VERSION: u32 = 1;
/// What a signature signs: this prefix, then the statement's JSON.
const STATEMENT_CONTEXT: &[u8] = b"pibake stage output v1\n";
/// The OCI annotation naming a layer's file.
const TITLE: &str = "org.opencontainers.image.title";

/// What a registry item is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Locked(EntryName),
    Stage { kind: String, input_hash: String },
}

/// A stage kind or input hash that cannot make a tag.
#[derive(Debug, thiserror::Error)]
#[error("stage {kind}/{input_hash} cannot be tagged: the kind must be lower-case letters and digits, the input hash hex, the tag at most 128 characters")]
pub struct BadItem {
    pub kind: String,
    pub input_hash: String,
}

impl Item {
    pub fn stage(kind: &str, input_hash: &str) -> Result<Self, BadItem> {
        let ok = !kind.is_empty()
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && !input_hash.is_empty()
            && input_hash.bytes().all(|b| b.is_ascii_hexdigit())
            && "stage-".len() + kind.len() + 1 + input_hash.len() <= 128;
        if !ok {
            return Err(BadItem {
                kind: kind.to_owned(),
                input_hash: input_hash.to_owned(),
            });
        }
        Ok(Self::Stage {
            kind: kind.to_owned(),
            input_hash: input_hash.to_owned(),
        })
    }

    /// The tag the item lives under (a valid OCI tag: `[a-z0-9-]`, at most 128).
    pub fn tag(&self) -> String {
        match self {
            Item::Locked(e) => format!("entry-{}", e.sha256()),
            Item::Stage { kind, input_hash } => format!("stage-{kind}-{input_hash}"),
        }
    }
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Locked(e) => write!(f, "{}", e.name()),
            Item::Stage { kind, input_hash } => {
                write!(
                    f,
                    "{kind} stage {}",
                    &input_hash[..input_hash.len().min(12)]
                )
            }
        }
    }
}

/// One entry of an item: its store name and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRef {
    /// `<sha256>-<name>`, as in the store.
    pub entry: String,
    pub size: u64,
}

impl EntryRef {
    /// The entry name, if the text is one.
    pub fn name(&self) -> Option<EntryName> {
        self.entry.parse().ok()
    }
}

/// What a stage output's signatures vouch for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub kind: String,
    pub input_hash: String,
    /// Every entry of the output; the stage pointer names the first.
    pub entries: Vec<EntryRef>,
}

impl Statement {
    /// The bytes signed: a context prefix, then the statement's JSON.
    pub fn message(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut m = STATEMENT_CONTEXT.to_vec();
        m.extend(serde_json::to_vec(self)?);
        Ok(m)
    }
}

/// The config blob of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "kebab-case")]
pub enum Config {
    /// A locked entry: trusted by the lock's sha256 alone.
    Locked { version: u32, entry: EntryRef },
    /// A stage output and the signatures of its statement.
    Stage {
        version: u32,
        statement: Statement,
        signatures: Vec<Signature>,
    },
}

impl Config {
    pub fn version(&self) -> u32 {
        match self {
            Config::Locked { version, .. } | Config::Stage { version, .. } => *version,
        }
    }

    /// The entries, in layer order.
    pub fn entries(&self) -> &[EntryRef] {
        match self {
            Config::Locked { entry, .. } => std::slice::from_ref(entry),
            Config::Stage { statement, .. } => &statement.entries,
        }
    }
}

/// `sha256:<hex>`.
pub fn digest(sha256: &Sha256) -> String {
    format!("sha256:{sha256}")
}

/// The manifest of an item whose config blob is `config` (its sha256 and size).
pub fn manifest(config: &Config, config_sha: &Sha256, config_size: u64) -> OciImageManifest {
    let layers = config
        .entries()
        .iter()
        .map(|e| {
            let name = e.name();
            OciDescriptor {
                media_type: ENTRY_MEDIA_TYPE.to_owned(),
                digest: name
                    .as_ref()
                    .map(|n| digest(&n.sha256()))
                    .unwrap_or_default(),
                size: i64::try_from(e.size).unwrap_or(i64::MAX),
                urls: None,
                artifact_type: None,
                annotations: name
                    .map(|n| BTreeMap::from([(TITLE.to_owned(), n.name().to_owned())])),
            }
        })
        .collect();
    OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: digest(config_sha),
            size: i64::try_from(config_size).unwrap_or(i64::MAX),
            urls: None,
            artifact_type: None,
            annotations: None,
        },
        layers,
        subject: None,
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        annotations: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> EntryName {
        EntryName::new(Sha256::of(text.as_bytes()), text).expect("name")
    }

    #[test]
    fn tags_are_derived_from_the_hashes() {
        let e = entry("zlib1g_1.3_arm64.deb");
        assert_eq!(
            Item::Locked(e.clone()).tag(),
            format!("entry-{}", e.sha256())
        );
        let hash = "ab".repeat(32);
        let stage = Item::stage("rootfs", &hash).expect("stage");
        assert_eq!(stage.tag(), format!("stage-rootfs-{hash}"));
        assert!(stage.tag().len() <= 128);
        for (kind, hash) in [
            ("Root", "ab"),
            ("root-fs", "ab"),
            ("rootfs", "xyz"),
            ("", "ab"),
            ("rootfs", ""),
        ] {
            assert!(Item::stage(kind, hash).is_err(), "{kind} {hash}");
        }
        assert!(
            Item::stage("rootfs", &"a".repeat(120)).is_err(),
            "too long a tag"
        );
    }

    #[test]
    fn configs_read_back_and_refuse_unknown_fields() -> Result<(), serde_json::Error> {
        let e = entry("x.tar");
        let config = Config::Stage {
            version: CONFIG_VERSION,
            statement: Statement {
                kind: "rootfs".into(),
                input_hash: "ab".into(),
                entries: vec![EntryRef {
                    entry: e.to_string(),
                    size: 5,
                }],
            },
            signatures: vec![],
        };
        let json = serde_json::to_string(&config)?;
        assert_eq!(serde_json::from_str::<Config>(&json)?, config);
        let extra = json.replacen("\"version\"", "\"extra\":1,\"version\"", 1);
        assert!(serde_json::from_str::<Config>(&extra).is_err(), "{extra}");
        let m = manifest(&config, &Sha256::of(json.as_bytes()), json.len() as u64);
        assert_eq!(m.layers[0].digest, format!("sha256:{}", e.sha256()));
        assert_eq!(m.layers[0].size, 5);
        assert_eq!(m.artifact_type.as_deref(), Some(ARTIFACT_TYPE));
        Ok(())
    }
}
