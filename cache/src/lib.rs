//! pibake's shared build cache, Nix's binary caches on the registry such fleets already run:
//! store entries (the lock's .debs and OCI archives) and stage outputs (a rootfs tar, a root
//! partition) as OCI artifacts in one repository of an OCI registry, tagged by the hash a
//! puller already knows ([`artifact`]), moved by digest, several at once.
//!
//! Trust is Nix's: a locked entry is accepted by the lock's sha256 alone; a stage output is
//! accepted only when its statement (kind, input hash, entries by sha256 and size) carries
//! the signature of a trusted ed25519 key ([`key`]). Everything pulled is hashed before it
//! becomes an entry (temp file, fsync, rename), so a wrong hash, a truncated or tampered blob
//! or an untrusted statement leave nothing in the store. A pull killed half way leaves a
//! `tmp/pull-*.part` that the next pull resumes from (an HTTP range request) and `gc` clears.

pub mod artifact;
pub mod key;
pub mod pull;
pub mod push;
pub mod registry;
mod sparse;
pub mod testing;

pub use key::{KeyName, PublicKey, SecretKey};
pub use pull::{pull, PullReport, Puller};
pub use push::{push, PushReport};
pub use registry::{Cache, Credentials};

/// A cache operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache address {url}: {why}")]
    Address { url: String, why: String },
    #[error("starting the cache client's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("{cache}: {item}: {source}")]
    Registry {
        cache: String,
        item: String,
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },
    #[error("{cache}: {item}: refused: {why}; nothing stored")]
    Refused {
        cache: String,
        item: String,
        why: String,
    },
    #[error("{count} stage output(s) to push and no signing key: pass --key FILE (made by `pibake key generate`)")]
    NoKey { count: usize },
    #[error(transparent)]
    Store(#[from] pibake_inputs::store::StoreError),
    #[error("{path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing an item's config")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Item(#[from] artifact::BadItem),
}

/// Whether a registry error says the thing asked for is not there (which a cache miss is).
pub(crate) fn is_absent(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code, .. } => *code == 404,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .all(|x| matches!(x.code, C::ManifestUnknown | C::NameUnknown | C::BlobUnknown)),
        _ => false,
    }
}
