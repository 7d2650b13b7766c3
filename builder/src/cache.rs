//! A cluster's side of the shared cache (`pibake cache push|pull`, `build --substituter`):
//! which store items make its builds. The cache crate moves and checks them; this module
//! knows what they are.

use crate::build::{rootpart_entries, rootpart_root, ROOTPART_KIND};
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

/// The stage outputs in the store that `plan`'s images were last built from: its rootfs
/// stages and the root partitions its images' gc roots hold (what a push sends; outputs of
/// superseded builds stay local). Missing or incomplete ones are left out.
pub fn stage_outputs(store: &Store, plan: &Plan) -> Result<Vec<StageOutput>, StoreError> {
    let mut out: Vec<StageOutput> = plan_stages(plan)
        .into_iter()
        .filter_map(|(kind, hash)| output(store, kind, hash))
        .collect();
    let roots = store.roots()?;
    let records: Vec<&EntryName> = plan
        .images
        .iter()
        .filter_map(|i| roots.get(&rootpart_root(&i.spec.name)))
        .flatten()
        .collect();
    for (kind, hash) in store.stage_pointers()? {
        if kind != ROOTPART_KIND {
            continue;
        }
        let points_at_a_root = store
            .stage_entry(&kind, &hash)
            .is_some_and(|e| records.contains(&&e));
        if points_at_a_root {
            out.extend(output(store, kind, hash));
        }
    }
    Ok(out)
}

/// The output of one stage with all its entries, if the store has all of them.
fn output(store: &Store, kind: String, input_hash: String) -> Option<StageOutput> {
    let entries = match kind.as_str() {
        rootfs::STAGE_KIND => Some(vec![store.stage_entry(&kind, &input_hash)?]),
        ROOTPART_KIND => rootpart_entries(store, &input_hash),
        _ => None,
    }?;
    entries
        .iter()
        .all(|e| store.contains(e))
        .then_some(StageOutput {
            kind,
            input_hash,
            entries,
        })
}
