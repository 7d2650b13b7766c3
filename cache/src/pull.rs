//! `pibake cache pull` and the build's substituter: items from the cache into the store,
//! each checked before it becomes an entry.
//!
//! A locked entry must be exactly what the lock pins (the config, the layer's digest and
//! size, then the bytes' sha256 and size). A stage output must carry a statement for the
//! stage asked for, signed by a trusted key, and every blob must match the statement. The
//! stage pointer is written last, after every entry is in place, so an interrupted pull
//! never leaves a pointer to something missing.

use crate::artifact::{
    self, Config, EntryRef, Item, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, CONFIG_VERSION,
};
use crate::key::PublicKey;
use crate::registry::{Cache, PARALLEL};
use crate::sparse::SparseWriter;
use crate::{is_absent, CacheError};
use futures_util::{stream, StreamExt, TryStreamExt};
use oci_client::client::BlobResponse;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use pibake_inputs::store::{CheckedPart, Expected, StoreError};
use pibake_inputs::{EntryName, Store, SubstituteError, Substituter};

/// A line of progress per this many bytes of one download.
const PROGRESS_STEP: u64 = 256 << 20;

/// The biggest config blob read (a statement lists a handful of entries).
const CONFIG_LIMIT: i64 = 1 << 20;

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Items put into the store, and the bytes downloaded for them.
    pub pulled: usize,
    pub bytes: u64,
    /// Items the store had already.
    pub present: usize,
    /// Items the cache does not have.
    pub absent: usize,
}

impl PullReport {
    fn add(self, b: PullReport) -> PullReport {
        PullReport {
            pulled: self.pulled + b.pulled,
            bytes: self.bytes + b.bytes,
            present: self.present + b.present,
            absent: self.absent + b.absent,
        }
    }
}

/// A cache and the keys whose signatures its stage outputs need.
#[derive(Debug)]
pub struct Puller {
    pub cache: Cache,
    pub trusted: Vec<PublicKey>,
}

/// Pulls the `locked` entries (with their locked sizes) and the stages (kind, input hash)
/// the store lacks. `log` gets a line per item pulled.
pub fn pull(
    puller: &Puller,
    store: &Store,
    locked: &[(EntryName, u64)],
    stages: &[(String, String)],
    log: &(dyn Fn(&str) + Sync),
) -> Result<PullReport, CacheError> {
    let _lock = store.shared_lock()?;
    let mut items = Vec::new();
    for (entry, size) in locked {
        if !store.contains(entry) {
            items.push((Item::Locked(entry.clone()), Some(*size)));
        }
    }
    for (kind, hash) in stages {
        items.push((Item::stage(kind, hash)?, None));
    }
    let present = locked.len() + stages.len() - items.len();
    puller.cache.runtime.block_on(async {
        let reports: Vec<PullReport> = stream::iter(items.iter())
            .map(|(item, size)| puller.pull_item(store, item, *size, log))
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        Ok(reports.into_iter().fold(
            PullReport {
                present,
                ..PullReport::default()
            },
            PullReport::add,
        ))
    })
}

impl Puller {
    fn refused(&self, item: &Item, why: String) -> CacheError {
        CacheError::Refused {
            cache: self.cache.url().to_owned(),
            item: item.to_string(),
            why,
        }
    }

    fn registry_err(
        &self,
        item: &Item,
    ) -> impl Fn(oci_client::errors::OciDistributionError) -> CacheError + '_ {
        let item = item.to_string();
        move |source| CacheError::Registry {
            cache: self.cache.url().to_owned(),
            item: item.clone(),
            source: Box::new(source),
        }
    }

    /// One item: `Ok` with `absent` 1 when the cache has none, an error when it has one that
    /// is refused.
    async fn pull_item(
        &self,
        store: &Store,
        item: &Item,
        locked_size: Option<u64>,
        log: &(dyn Fn(&str) + Sync),
    ) -> Result<PullReport, CacheError> {
        if let Item::Stage { kind, input_hash } = item {
            if let Some(e) = store.stage_entry(kind, input_hash) {
                if store.contains(&e) {
                    return Ok(PullReport {
                        present: 1,
                        ..PullReport::default()
                    });
                }
            }
        }
        let reference = self.cache.tagged(&item.tag());
        let manifest = match self
            .cache
            .client
            .pull_image_manifest(&reference, &self.cache.auth)
            .await
        {
            Ok((m, _)) => m,
            Err(e) if is_absent(&e) => {
                return Ok(PullReport {
                    absent: 1,
                    ..PullReport::default()
                })
            }
            Err(e) => return Err(self.registry_err(item)(e)),
        };
        let config = self.config(item, &manifest).await?;
        let entries = self.check(item, &config, locked_size)?;
        check_layers(&manifest, entries).map_err(|why| self.refused(item, why))?;
        // Every entry downloaded and checked before any becomes one: a refusal stores none.
        let mut bytes = 0;
        let mut checked = Vec::new();
        for (r, layer) in entries.iter().zip(&manifest.layers) {
            let (received, part) = self.entry(store, item, r, layer, log).await?;
            bytes += received;
            checked.extend(part);
        }
        for part in checked {
            store.adopt(part)?;
        }
        if let Item::Stage { kind, input_hash } = item {
            let first = entries
                .first()
                .and_then(EntryRef::name)
                .ok_or_else(|| self.refused(item, "the statement lists no entry".to_owned()))?;
            store.set_stage_pointer(kind, input_hash, &first)?;
        }
        log(&format!("pulled {item} ({bytes} bytes)"));
        Ok(PullReport {
            pulled: 1,
            bytes,
            ..PullReport::default()
        })
    }

    async fn config(&self, item: &Item, m: &OciImageManifest) -> Result<Config, CacheError> {
        if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
            || m.config.media_type != CONFIG_MEDIA_TYPE
        {
            return Err(self.refused(
                item,
                format!(
                    "not a pibake item (artifact type {:?}, config {})",
                    m.artifact_type, m.config.media_type
                ),
            ));
        }
        if !(0..=CONFIG_LIMIT).contains(&m.config.size) {
            return Err(self.refused(item, format!("a config of {} bytes", m.config.size)));
        }
        let reference = self.cache.tagged(&item.tag());
        let mut bytes = Vec::new();
        self.cache
            .client
            .pull_blob(&reference, &m.config, &mut bytes)
            .await
            .map_err(self.registry_err(item))?;
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| self.refused(item, format!("its config does not read: {e}")))?;
        if config.version() != CONFIG_VERSION {
            return Err(self.refused(
                item,
                format!(
                    "config version {} (this pibake reads {CONFIG_VERSION})",
                    config.version()
                ),
            ));
        }
        Ok(config)
    }

    /// The entries `config` may deliver for `item`: what the lock pins, or a statement of
    /// this stage signed by a trusted key.
    fn check<'c>(
        &self,
        item: &Item,
        config: &'c Config,
        locked_size: Option<u64>,
    ) -> Result<&'c [EntryRef], CacheError> {
        match (item, config) {
            (Item::Locked(want), Config::Locked { entry, .. }) => {
                if entry.name().as_ref() != Some(want) || Some(entry.size) != locked_size {
                    return Err(self.refused(
                        item,
                        format!(
                            "it holds {} ({} bytes), the lock pins {want} ({} bytes)",
                            entry.entry,
                            entry.size,
                            locked_size.unwrap_or(0)
                        ),
                    ));
                }
                Ok(config.entries())
            }
            (
                Item::Stage { kind, input_hash },
                Config::Stage {
                    statement,
                    signatures,
                    ..
                },
            ) => {
                if &statement.kind != kind || &statement.input_hash != input_hash {
                    return Err(self.refused(
                        item,
                        format!(
                            "its statement is for {} stage {}",
                            statement.kind, statement.input_hash
                        ),
                    ));
                }
                let message = statement.message()?;
                let trusted = self
                    .trusted
                    .iter()
                    .any(|k| signatures.iter().any(|s| k.verifies(&message, s)));
                if !trusted {
                    let by: Vec<&str> = signatures.iter().map(|s| s.key.as_str()).collect();
                    let keys: Vec<&str> = self.trusted.iter().map(|k| k.name().as_str()).collect();
                    return Err(self.refused(
                        item,
                        format!(
                            "no valid signature by a trusted key (signed by: [{}]; trusted: [{}]; pass --trusted-key FILE)",
                            by.join(", "),
                            keys.join(", ")
                        ),
                    ));
                }
                Ok(config.entries())
            }
            _ => Err(self.refused(item, "its config is of another kind of item".to_owned())),
        }
    }

    /// Downloads one entry (resuming its `.part`) and checks it; returns the bytes received
    /// and the checked file (none when the store has the entry).
    async fn entry(
        &self,
        store: &Store,
        item: &Item,
        r: &EntryRef,
        layer: &OciDescriptor,
        log: &(dyn Fn(&str) + Sync),
    ) -> Result<(u64, Option<CheckedPart>), CacheError> {
        let name = r
            .name()
            .ok_or_else(|| self.refused(item, format!("{} is not a store entry name", r.entry)))?;
        if store.contains(&name) {
            return Ok((0, None));
        }
        let part = store.pull_path(&name);
        let io = |source| CacheError::Io {
            path: part.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part)
            .map_err(io)?;
        let mut offset = file.metadata().map_err(io)?.len();
        if offset > r.size {
            file.set_len(0).map_err(io)?;
            offset = 0;
        }
        let mut received = 0;
        if offset < r.size {
            let reference = self.cache.tagged(&item.tag());
            let response = self
                .cache
                .client
                .pull_blob_stream_partial(&reference, layer, offset, None)
                .await
                .map_err(self.registry_err(item))?;
            let mut body = match response {
                BlobResponse::Partial(s) => s,
                BlobResponse::Full(s) => {
                    offset = 0;
                    s
                }
            };
            if offset > 0 {
                log(&format!(
                    "resuming {} at {} of {} MiB",
                    r.entry,
                    offset >> 20,
                    r.size >> 20
                ));
            } else if r.size >= PROGRESS_STEP {
                log(&format!("pulling {} ({} MiB)", r.entry, r.size >> 20));
            }
            let mut w = SparseWriter::at(&file, offset);
            let mut at = offset;
            let mut next_report = offset + PROGRESS_STEP;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(bytes) => {
                        at += bytes.len() as u64;
                        received += bytes.len() as u64;
                        if at > r.size {
                            break;
                        }
                        w.write(&bytes).map_err(io)?;
                        if at >= next_report {
                            log(&format!(
                                "  {}: {} of {} MiB",
                                name.name(),
                                at >> 20,
                                r.size >> 20
                            ));
                            next_report += PROGRESS_STEP;
                        }
                    }
                    // Every byte came and the client still failed (its digest check): the
                    // hash below names what is wrong. Otherwise the `.part` is kept for the
                    // next pull to resume.
                    Err(_) if at == r.size => break,
                    Err(e) => {
                        w.finish().map_err(io)?;
                        return Err(self.registry_err(item)(e.into()));
                    }
                }
            }
            w.finish().map_err(io)?;
        }
        let expected = Expected {
            sha256: name.sha256(),
            size: r.size,
        };
        let checked = store
            .check_part(name.name(), &part, expected)
            .map_err(|e| match e {
                StoreError::Mismatch {
                    name,
                    expected,
                    expected_size,
                    received,
                    received_size,
                } => self.refused(
                    item,
                    format!("{name}: the registry sent sha256 {received} ({received_size} bytes), expected sha256 {expected} ({expected_size} bytes)"),
                ),
                other => other.into(),
            })?;
        Ok((received, Some(checked)))
    }
}

/// The manifest's layers are the entries', in order: digest and size.
fn check_layers(m: &OciImageManifest, entries: &[EntryRef]) -> Result<(), String> {
    if m.layers.len() != entries.len() {
        return Err(format!(
            "{} layers for {} entries",
            m.layers.len(),
            entries.len()
        ));
    }
    for (layer, e) in m.layers.iter().zip(entries) {
        let name = e
            .name()
            .ok_or_else(|| format!("{} is not a store entry name", e.entry))?;
        if layer.digest != artifact::digest(&name.sha256())
            || u64::try_from(layer.size).ok() != Some(e.size)
        {
            return Err(format!(
                "layer {} ({} bytes) is not entry {} ({} bytes)",
                layer.digest, layer.size, e.entry, e.size
            ));
        }
    }
    Ok(())
}

impl Substituter for Puller {
    fn substitute_stage(
        &self,
        store: &Store,
        kind: &str,
        input_hash: &str,
    ) -> Result<bool, SubstituteError> {
        let stages = [(kind.to_owned(), input_hash.to_owned())];
        let report = pull(self, store, &[], &stages, &|line| eprintln!("{line}")).map_err(|e| {
            SubstituteError {
                cache: self.cache.url().to_owned(),
                message: error_chain(&e),
            }
        })?;
        Ok(report.absent == 0)
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
