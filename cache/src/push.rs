//! `pibake cache push`: store entries and signed stage outputs into the cache.
//!
//! Idempotent: an item whose manifest the registry already has under its tag (same digest)
//! is left alone, and a blob the registry has is never sent again, so a push killed half
//! way is completed by the next one without sending what it sent.

use crate::artifact::{self, Config, EntryRef, Item, Statement, CONFIG_VERSION};
use crate::key::SecretKey;
use crate::registry::{Cache, PARALLEL};
use crate::{is_absent, CacheError};
use futures_util::{stream, StreamExt, TryStreamExt};
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use pibake_inputs::{EntryName, Sha256, StageOutput, Store};
use std::path::PathBuf;

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Items whose manifest was written.
    pub pushed: usize,
    /// Items the cache had already (same manifest digest).
    pub present: usize,
    /// Blobs sent, and their bytes.
    pub blobs_sent: usize,
    pub bytes_sent: u64,
    /// Blobs the registry had (shared between items, or sent by an earlier push).
    pub blobs_present: usize,
}

/// One item ready to push: its tag, config, manifest and the files of its layers.
struct Prepared {
    item: Item,
    config: Vec<u8>,
    config_sha: Sha256,
    manifest: Vec<u8>,
    manifest_digest: String,
    layers: Vec<(EntryName, u64, PathBuf)>,
}

fn entry_ref(store: &Store, e: &EntryName) -> Result<(EntryRef, PathBuf), CacheError> {
    let path = store.path_of(e);
    let size = std::fs::metadata(&path)
        .map_err(|source| CacheError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    Ok((
        EntryRef {
            entry: e.to_string(),
            size,
        },
        path,
    ))
}

fn prepare(item: Item, config: Config, files: Vec<PathBuf>) -> Result<Prepared, CacheError> {
    let config_bytes = serde_json::to_vec(&config)?;
    let config_sha = Sha256::of(&config_bytes);
    let manifest = artifact::manifest(&config, &config_sha, config_bytes.len() as u64);
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let layers = config
        .entries()
        .iter()
        .zip(files)
        .filter_map(|(r, path)| r.name().map(|n| (n, r.size, path)))
        .collect();
    Ok(Prepared {
        item,
        manifest_digest: artifact::digest(&Sha256::of(&manifest_bytes)),
        config: config_bytes,
        config_sha,
        manifest: manifest_bytes,
        layers,
    })
}

/// Pushes `locked` entries and `stages` (signed with `key`, which stages need) to `cache`.
/// `log` gets one line per item pushed.
pub fn push(
    cache: &Cache,
    store: &Store,
    locked: &[EntryName],
    stages: &[StageOutput],
    key: Option<&SecretKey>,
    log: &(dyn Fn(&str) + Sync),
) -> Result<PushReport, CacheError> {
    if !stages.is_empty() && key.is_none() {
        return Err(CacheError::NoKey {
            count: stages.len(),
        });
    }
    let mut prepared = Vec::new();
    for e in locked {
        let (entry, path) = entry_ref(store, e)?;
        let config = Config::Locked {
            version: CONFIG_VERSION,
            entry,
        };
        prepared.push(prepare(Item::Locked(e.clone()), config, vec![path])?);
    }
    for s in stages {
        let item = Item::stage(&s.kind, &s.input_hash)?;
        let (entries, files): (Vec<EntryRef>, Vec<PathBuf>) = s
            .entries
            .iter()
            .map(|e| entry_ref(store, e))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let statement = Statement {
            kind: s.kind.clone(),
            input_hash: s.input_hash.clone(),
            entries,
        };
        let signatures = key
            .map(|k| statement.message().map(|m| k.sign(&m)))
            .transpose()?
            .into_iter()
            .collect();
        let config = Config::Stage {
            version: CONFIG_VERSION,
            statement,
            signatures,
        };
        prepared.push(prepare(item, config, files)?);
    }
    cache.runtime.block_on(async {
        let reports: Vec<PushReport> = stream::iter(prepared.iter())
            .map(|p| push_one(cache, p, log))
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        Ok(reports
            .into_iter()
            .fold(PushReport::default(), |a, b| PushReport {
                pushed: a.pushed + b.pushed,
                present: a.present + b.present,
                blobs_sent: a.blobs_sent + b.blobs_sent,
                bytes_sent: a.bytes_sent + b.bytes_sent,
                blobs_present: a.blobs_present + b.blobs_present,
            }))
    })
}

async fn push_one(
    cache: &Cache,
    p: &Prepared,
    log: &(dyn Fn(&str) + Sync),
) -> Result<PushReport, CacheError> {
    let reference = cache.tagged(&p.item.tag());
    let err = |source| CacheError::Registry {
        cache: cache.url().to_owned(),
        item: p.item.to_string(),
        source: Box::new(source),
    };
    let mut report = PushReport::default();
    match cache
        .client
        .fetch_manifest_digest(&reference, &cache.auth)
        .await
    {
        Ok(d) if d == p.manifest_digest => {
            report.present = 1;
            return Ok(report);
        }
        Ok(_) => {}
        Err(e) if is_absent(&e) => {}
        Err(e) => return Err(err(e)),
    }
    for (entry, size, path) in &p.layers {
        let digest = artifact::digest(&entry.sha256());
        if cache
            .client
            .blob_exists(&reference, &digest)
            .await
            .map_err(err)?
        {
            report.blobs_present += 1;
            continue;
        }
        if *size >= 256 << 20 {
            log(&format!("pushing {entry} ({} MiB)", size >> 20));
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| CacheError::Io {
                path: path.clone(),
                source,
            })?;
        cache
            .client
            .push_blob_stream(&reference, file_stream(file), &digest, Some(*size))
            .await
            .map_err(err)?;
        report.blobs_sent += 1;
        report.bytes_sent += size;
    }
    cache
        .client
        .push_blob(
            &reference,
            p.config.clone(),
            &artifact::digest(&p.config_sha),
        )
        .await
        .map_err(err)?;
    cache
        .client
        .push_manifest_raw(
            &reference,
            p.manifest.clone(),
            OCI_IMAGE_MEDIA_TYPE
                .parse()
                .map_err(|_| err(oci_client::errors::OciDistributionError::GenericError(None)))?,
        )
        .await
        .map_err(err)?;
    report.pushed = 1;
    log(&format!(
        "pushed {} ({} blob(s) sent, {} present)",
        p.item, report.blobs_sent, report.blobs_present
    ));
    Ok(report)
}

/// A file as a stream of 1 MiB chunks (the client sends them as chunked PATCHes).
fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    stream::try_unfold(file, |mut file| async move {
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        while buf.len() < 1 << 20 {
            if file.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        if buf.is_empty() {
            Ok(None)
        } else {
            Ok(Some((buf.freeze(), file)))
        }
    })
}
