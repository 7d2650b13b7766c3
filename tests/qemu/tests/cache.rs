//! The lab through the shared cache (issue 18), after `cargo xtask lab` filled the default
//! store: the lab's locked entries and stage outputs are pushed, signed, to a real registry
//! (Debian's docker-registry on loopback); an empty store pulls the entries and builds the
//! lab with the registry as its substituter. No mmdebstrap runs (no stage log in its work
//! directory, every rootfs and root partition pulled) and the images are the same bytes as
//! the default store's build. No VM: it lives here because it needs the built lab.

use anyhow::{ensure, Context, Result};
use pibake::build::{self, BuildOptions, BuiltImage};
use pibake::plan::{self, LockInfo, Selection};
use pibake::{data, inputs, model};
use pibake_cache::testing::Registry;
use pibake_cache::{Cache, Credentials, KeyName, Puller, SecretKey};
use pibake_qemu::images::workspace_root;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The reference lab as `pibake build` reads it: cluster, lock, role plan, data directory.
struct Lab {
    cluster: model::Cluster,
    lock: pibake_inputs::Lock,
    plan: plan::Plan,
    data_dir: data::DataDir,
}

fn lab() -> Result<Lab> {
    let cluster_file = workspace_root().join("examples/lab/cluster.toml");
    let data_dir = model::data_dir_for(&cluster_file, &data::DataLookup::from_env(None, None))?;
    let checked = model::load_from(&cluster_file, &data_dir)?;
    ensure!(!checked.has_errors(), "{}", checked.report());
    let cluster = checked.cluster.context("the lab")?;
    let lock = inputs::read_lock(&cluster)?;
    let plan = plan::plan(
        &cluster,
        &LockInfo::read(&cluster_file)?,
        &Selection::default(),
    )?;
    Ok(Lab {
        cluster,
        lock,
        plan,
        data_dir,
    })
}

fn build_lab(
    lab: &Lab,
    store: &pibake_inputs::Store,
    out: &Path,
    substituter: Option<Arc<dyn pibake_inputs::Substituter>>,
) -> Result<Vec<BuiltImage>> {
    let options = BuildOptions {
        out_dir: out.to_owned(),
        work_dir: store.work_dir(),
        agents: data::agents(vec![], std::env::var_os(data::AGENT_ENV), &lab.data_dir)?,
        dtbo_dir: lab.data_dir.dtbo(),
        progress: false,
        substituter,
    };
    Ok(build::build(
        &lab.cluster,
        &lab.plan,
        &lab.lock,
        store,
        &options,
    )?)
}

#[test]
fn an_empty_store_builds_the_lab_from_the_cache_without_mmdebstrap() -> Result<()> {
    let registry = Registry::start()?;
    let tmp = tempfile::Builder::new()
        .prefix("cache-")
        .tempdir_in(workspace_root().join("target"))?;
    let warm = inputs::open_store(None)?;
    let started = Instant::now();
    let lab = lab()?;
    let before = build_lab(&lab, &warm, &tmp.path().join("out-warm"), None)?;
    let warm_took = started.elapsed();

    let key = SecretKey::generate(KeyName::new("lab-test").context("name")?)?;
    let url = registry.url("pibake/lab");
    let cache = Cache::open(&url, Credentials::default())?;
    let locked = pibake::cache::locked_entries(&lab.lock)?;
    let stages = pibake::cache::stage_outputs(&warm, &lab.plan)?;
    ensure!(
        stages.iter().filter(|s| s.kind == "rootfs").count() == 2
            && stages.iter().filter(|s| s.kind == "rootpart").count() == 3,
        "the lab's stage outputs in the store: {:?}",
        stages
            .iter()
            .map(|s| (&s.kind, &s.input_hash))
            .collect::<Vec<_>>()
    );
    let names: Vec<_> = locked.iter().map(|(e, _)| e.clone()).collect();
    let started = Instant::now();
    let pushed = pibake_cache::push(&cache, &warm, &names, &stages, Some(&key), &|_| {})?;
    let push_took = started.elapsed();

    let empty = inputs::open_store(Some(&tmp.path().join("store")))?;
    let puller = Puller {
        cache,
        trusted: vec![key.public()],
    };
    let started = Instant::now();
    let pulled = pibake_cache::pull(&puller, &empty, &locked, &[], &|_| {})?;
    ensure!(
        pulled.absent == 0,
        "locked entries missing from the cache: {pulled:?}"
    );
    let puller: Arc<dyn pibake_inputs::Substituter> = Arc::new(puller);
    let after = build_lab(&lab, &empty, &tmp.path().join("out-cache"), Some(puller))?;
    let cache_took = started.elapsed();

    let logs: Vec<_> = std::fs::read_dir(empty.work_dir())?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mmdebstrap.log"))
        .collect();
    ensure!(
        logs.is_empty(),
        "mmdebstrap ran in the empty store: {logs:?}"
    );
    for (kind, hash) in stages.iter().map(|s| (&s.kind, &s.input_hash)) {
        ensure!(
            empty
                .stage_entry(kind, hash)
                .is_some_and(|e| empty.contains(&e)),
            "the {kind} stage {hash} was not pulled"
        );
    }
    let sums = |built: &[BuiltImage]| -> Vec<(String, String)> {
        built
            .iter()
            .map(|b| (b.name.clone(), b.sha256.clone()))
            .collect()
    };
    eprintln!(
        "CACHE pushed {} items ({} blobs, {:.0} MiB) in {:.1?}; the empty store pulled {} locked entries ({:.0} MiB) and built the lab with the stage outputs pulled in {:.1?} (the warm store's build: {:.1?}); images {:?}",
        pushed.pushed,
        pushed.blobs_sent,
        pushed.bytes_sent as f64 / 1048576.0,
        push_took,
        pulled.pulled,
        pulled.bytes as f64 / 1048576.0,
        cache_took,
        warm_took,
        sums(&after)
    );
    ensure!(
        sums(&before) == sums(&after),
        "the images differ:\nwarm store {:?}\nfrom cache {:?}",
        sums(&before),
        sums(&after)
    );
    let again = pibake_cache::push(
        &Cache::open(&url, Credentials::default())?,
        &warm,
        &names,
        &stages,
        Some(&key),
        &|_| {},
    )?;
    ensure!(
        again.pushed == 0 && again.blobs_sent == 0,
        "a second push sent something: {again:?}"
    );
    Ok(())
}
