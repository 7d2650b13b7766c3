//! A cluster's side of the shared cache (`pibake cache push|pull`, `build --substituter`):
//! which store items make its builds. The cache crate moves and checks them; this module
//! knows what they are.

use crate::build::rootpart_entries;
use crate::plan::Plan;
use crate::rootfs;
use pibake_inputs::lock::LockError;
use pibake_inputs::store::StoreError;
use pibake_inputs::{EntryName, Lock, StageOutput, Store};

/// Every locked entry (the .debs of every closure, the OCI archives) and its size.
pub fn locked_entries(lock: &Lock) -> Result<Vec<(EntryName, u64)>, LockError> {
    let mut out = Vec::new();
    for p in lock.packages() {
        out.push((p.entry_name()?, p.size));
    }
    for i in &lock.images {
        out.push((i.entry_name()?, i.size));
    }
    Ok(out)
}

/// The rootfs stages of `plan`, as (kind, input hash): what a pull brings before a build.
/// Root partitions are keyed by the agent too, which the build reads: `build --substituter`
/// pulls them when it gets there.
pub fn plan_stages(plan: &Plan) -> Vec<(String, String)> {
    plan.rootfs
        .values()
        .map(|s| (rootfs::STAGE_KIND.to_owned(), s.input_hash.to_string()))
        .collect()
}

/// Every complete stage output in the store, with all its entries: what a push sends.
/// Pointers to something no longer there (after a `gc`) are left out.
pub fn stage_outputs(store: &Store) -> Result<Vec<StageOutput>, StoreError> {
    let mut out = Vec::new();
    for (kind, input_hash) in store.stage_pointers()? {
        let Some(pointer) = store.stage_entry(&kind, &input_hash) else {
            continue;
        };
        let entries = match kind.as_str() {
            rootfs::STAGE_KIND => Some(vec![pointer.clone()]),
            crate::build::ROOTPART_KIND => rootpart_entries(store, &pointer),
            _ => None,
        };
        let Some(entries) = entries.filter(|es| es.iter().all(|e| store.contains(e))) else {
            continue;
        };
        out.push(StageOutput {
            kind,
            input_hash,
            pointer,
            entries,
        });
    }
    Ok(out)
}
