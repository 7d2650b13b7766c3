//! Substituters: where a store entry or a stage output this store lacks can come from
//! instead of being fetched from its source or built (Nix's binary caches). The builder asks
//! on a miss; `pibake-cache` implements it over an OCI registry. The trait lives here, beside
//! the store it fills, so that the builder does not depend on a network client.

use crate::store::{EntryName, Store};
use std::fmt;

/// A stage's output as the store holds it: every entry it consists of, the one the pointer
/// `stages/<kind>-<input hash>` names first, then those it refers to (a root partition's
/// ext4 and zstd frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageOutput {
    pub kind: String,
    pub input_hash: String,
    pub entries: Vec<EntryName>,
}

impl StageOutput {
    /// The entry the stage pointer names.
    pub fn pointer(&self) -> Option<&EntryName> {
        self.entries.first()
    }
}

/// Why a substituter could not say or deliver (not "it does not have it", which is
/// `Ok(false)`): a refused signature, a wrong hash, an unreachable cache.
#[derive(Debug, thiserror::Error)]
#[error("substituter {cache}: {message}")]
pub struct SubstituteError {
    pub cache: String,
    pub message: String,
}

/// A source of stage outputs.
pub trait Substituter: fmt::Debug + Send + Sync {
    /// Puts the output of stage `kind`/`input_hash` into `store` (every entry, then the
    /// pointer) when the cache has it and it is trusted; `Ok(false)` when it has none.
    fn substitute_stage(
        &self,
        store: &Store,
        kind: &str,
        input_hash: &str,
    ) -> Result<bool, SubstituteError>;
}
