//! `pibake rebuild` on a lab image (issue 18), after `cargo xtask lab` built it: lab-master
//! (pc-efi, amd64: its rootfs runs natively, the shortest of the lab's cold builds) is built
//! again from its sources in an empty store and is bit-identical; a copy with one byte
//! changed is reported as differing; a manifest whose input hash is not this cluster's is
//! refused before anything is built. No VM: it lives here because it needs the built lab.

use anyhow::{bail, ensure, Context, Result};
use pibake::build::BuildOptions;
use pibake::rebuild::{rebuild, Outcome, RebuildError};
use pibake::{data, inputs, model};
use pibake_qemu::images::workspace_root;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

struct Lab {
    cluster: model::Cluster,
    cluster_file: std::path::PathBuf,
    lock: pibake_inputs::Lock,
    options: BuildOptions,
}

fn lab() -> Result<Lab> {
    let cluster_file = workspace_root().join("examples/lab/cluster.toml");
    let data_dir = model::data_dir_for(&cluster_file, &data::DataLookup::from_env(None, None))?;
    let cluster = model::load_from(&cluster_file, &data_dir)?
        .cluster
        .context("the lab")?;
    let lock = inputs::read_lock(&cluster)?;
    let options = BuildOptions {
        out_dir: Default::default(),
        work_dir: Default::default(),
        agents: data::agents(vec![], std::env::var_os(data::AGENT_ENV), &data_dir)?,
        dtbo_dir: data_dir.dtbo(),
        progress: false,
        substituter: None,
    };
    Ok(Lab {
        cluster,
        cluster_file,
        lock,
        options,
    })
}

fn run(lab: &Lab, image: &Path, manifest: &Path, work: &Path) -> Result<Outcome, RebuildError> {
    rebuild(
        image,
        manifest,
        &lab.cluster,
        &lab.cluster_file,
        &lab.lock,
        &lab.options,
        work,
    )
}

#[test]
fn a_lab_image_rebuilds_bit_identical_from_its_sources() -> Result<()> {
    let lab = lab()?;
    let images = workspace_root().join("images");
    let (image, manifest) = (
        images.join("lab-master.img"),
        images.join("lab-master.manifest.json"),
    );
    let tmp = tempfile::Builder::new()
        .prefix("rebuild-")
        .tempdir_in(workspace_root().join("target"))?;

    // Refused before any build: the manifest records other inputs.
    let text = std::fs::read_to_string(&manifest)?;
    let recorded: serde_json::Value = serde_json::from_str(&text)?;
    let hash = recorded["input_hash"].as_str().context("input_hash")?;
    let other = tmp.path().join("other.manifest.json");
    std::fs::write(&other, text.replace(hash, &"0".repeat(64)))?;
    match run(&lab, &image, &other, &tmp.path().join("refused")) {
        Err(e @ RebuildError::Inputs(_)) if e.to_string().contains("input_hash is") => {
            eprintln!("REFUSED as it should: {e}")
        }
        other => bail!("a manifest of other inputs: {other:?}"),
    }
    ensure!(
        !tmp.path().join("refused/store").exists(),
        "a store was made for refused inputs"
    );

    let work = tmp.path().join("work");
    let started = Instant::now();
    let outcome = run(&lab, &image, &manifest, &work)?;
    let took = started.elapsed();
    match &outcome {
        Outcome::Identical { sha256 } => {
            eprintln!("REBUILD lab-master: bit-identical (sha256 {sha256}) in {took:.0?}, from an empty store")
        }
        Outcome::Differs { diff, .. } => {
            bail!("lab-master did not rebuild identical: {outcome:?}\n{diff}")
        }
    }
    let logs: Vec<String> = std::fs::read_dir(work.join("store/work"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mmdebstrap.log"))
        .collect();
    ensure!(
        logs == ["lab-rootfs-amd64.mmdebstrap.log"],
        "the rebuild of lab-master ran these rootfs stages: {logs:?} (only its own, amd64)"
    );

    // One byte changed in a copy (its manifest beside it): found different. The rebuild's
    // store and output are reused, so this costs a hash.
    let copy = tmp.path().join("lab-master.img");
    std::fs::copy(&image, &copy)?;
    std::fs::copy(&manifest, tmp.path().join("lab-master.manifest.json"))?;
    flip_byte(&copy, 64 << 20)?;
    match run(&lab, &copy, &manifest, &work)? {
        Outcome::Differs { given, rebuilt, .. } => {
            ensure!(given != rebuilt, "differs, with the same sha256");
            eprintln!("DIFFERS as it should: a copy with one byte changed (sha256 {given}, rebuilt {rebuilt})");
        }
        Outcome::Identical { .. } => bail!("a changed image was called bit-identical"),
    }
    Ok(())
}

fn flip_byte(path: &Path, at: u64) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&b)?;
    Ok(())
}
