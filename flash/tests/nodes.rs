//! `--node` must be a node the image serves: flash reads the image's node table
//! (/etc/pibake/nodes.toml in its ext4 root, or a manifest beside a `.img.zst` that is proven to
//! describe it) before writing anything, and a refusal names the image beside it that serves
//! the node.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;
use common::*;
use pibake_flash::{flash, FlashError, FlashOptions, NodeName};

fn no_prompt(q: &str) -> bool {
    panic!("unexpected confirmation prompt: {q}");
}

const WORKERS: [&str; 6] = [
    "worker1", "worker2", "worker3", "worker4", "worker5", "worker6",
];

fn with_node(image: &Path, target: &Path, node: &str) -> Result<FlashOptions> {
    Ok(FlashOptions {
        image: image.to_owned(),
        target: target.to_owned(),
        node: Some(node.parse::<NodeName>()?),
        ..FlashOptions::default()
    })
}

/// The build's output folder: lab-worker (worker1..6), lab-master (master1, master2) and
/// lab-aux (aux1) as raw images with bmaps and manifests.
fn lab(dir: &Path) -> Result<Vec<TestImage>> {
    let mut out = Vec::new();
    for (name, role, nodes) in [
        ("lab-worker", "worker", &WORKERS[..]),
        ("lab-master", "master", &["master1", "master2"][..]),
        ("lab-aux", "aux", &["aux1"][..]),
    ] {
        let t = make_pibake_image(dir, name, Some(&node_table(role, nodes)))?;
        bmaptool_create(&t.img)?;
        write_manifest(&t.img, role, nodes)?;
        out.push(t);
    }
    Ok(out)
}

/// A target file holding earlier bytes, to show a refusal leaves it alone.
fn old_card(dir: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let target = dir.join("card.img");
    let old = pattern(9, 64 << 10);
    fs::write(&target, &old)?;
    Ok((target, old))
}

/// The refusal with its causes, as `pibake` prints them.
fn refused(image: &Path, target: &Path, node: &str) -> Result<String> {
    let e = flash(&with_node(image, target, node)?, &mut no_prompt)
        .err()
        .ok_or_else(|| anyhow::anyhow!("--node {node} of {} was accepted", image.display()))?;
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg += &format!("\n  caused by: {c}");
        cause = c.source();
    }
    Ok(msg)
}

#[test]
fn a_served_node_is_flashed() -> Result<()> {
    let d = tempfile::tempdir()?;
    let imgs = lab(d.path())?;
    let target = d.path().join("card.img");
    let r = flash(
        &with_node(&imgs[0].img, &target, "worker3")?,
        &mut no_prompt,
    )?;
    assert_eq!(r.boot_files, ["pibake-node.toml"]);
    assert_eq!(
        mtype(&target, imgs[0].layout.boot_start, "pibake-node.toml")?,
        "node = \"worker3\"\n"
    );
    Ok(())
}

#[test]
fn a_node_of_another_image_is_refused_naming_that_image_and_nothing_is_written() -> Result<()> {
    let d = tempfile::tempdir()?;
    let imgs = lab(d.path())?;
    let (target, old) = old_card(d.path())?;
    let msg = refused(&imgs[0].img, &target, "master1")?;
    for want in [
        "master1",
        "lab-worker.img",
        "worker1..worker6",
        "lab-master.img",
    ] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    assert!(!msg.contains("lab-aux"), "{msg}");
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );

    // The other way round, and for a role image of one node.
    let msg = refused(&imgs[1].img, &target, "worker4")?;
    for want in ["lab-master.img", "master1, master2", "lab-worker.img"] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    let msg = refused(&imgs[2].img, &target, "master2")?;
    assert!(msg.contains("lab-master.img"), "{msg}");
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    Ok(())
}

#[test]
fn a_node_no_image_serves_is_refused() -> Result<()> {
    let d = tempfile::tempdir()?;
    let imgs = lab(d.path())?;
    let (target, old) = old_card(d.path())?;
    let msg = refused(&imgs[0].img, &target, "worker9")?;
    for want in ["worker9", "worker1..worker6"] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    assert!(!msg.contains("served by"), "{msg}");
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    // Alone in its folder, too.
    let e = tempfile::tempdir()?;
    let alone = e.path().join("lab-worker.img");
    fs::copy(&imgs[0].img, &alone)?;
    let msg = refused(&alone, &target, "master1")?;
    assert!(msg.contains("worker1..worker6"), "{msg}");
    assert!(!msg.contains("served by"), "{msg}");
    Ok(())
}

#[test]
fn zstd_images_with_their_manifests_beside_them() -> Result<()> {
    let d = tempfile::tempdir()?;
    let imgs = lab(d.path())?;
    // What a release folder holds: .img.zst, .bmap, .manifest.json; no raw image.
    let mut zsts = Vec::new();
    for t in &imgs {
        zsts.push(zstd(&t.img)?);
        fs::rename(
            format!("{}.bmap", t.img.display()),
            t.img.with_extension("bmap"),
        )?;
    }
    let raw0 = fs::read(&imgs[0].img)?;
    for t in &imgs {
        fs::remove_file(&t.img)?;
    }
    let (target, old) = old_card(d.path())?;
    let msg = refused(&zsts[0], &target, "master2")?;
    for want in [
        "lab-worker.img.zst",
        "worker1..worker6",
        "lab-master.img.zst",
    ] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    flash(&with_node(&zsts[0], &target, "worker2")?, &mut no_prompt)?;
    assert_eq!(
        mtype(&target, imgs[0].layout.boot_start, "pibake-node.toml")?,
        "node = \"worker2\"\n"
    );
    let root = |b: &[u8]| {
        let l = &imgs[0].layout;
        b[l.root_start as usize..(l.root_start + l.root_len) as usize].to_vec()
    };
    assert!(root(&fs::read(&target)?) == root(&raw0));
    Ok(())
}

#[test]
fn a_manifest_that_does_not_describe_the_image_is_not_believed() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pibake_image(
        d.path(),
        "lab-worker",
        Some(&node_table("worker", &WORKERS)),
    )?;
    let zst = zstd(&t.img)?;
    // A manifest of some other build, claiming master1 too: its sha256 is not the image's.
    let m = write_manifest(&t.img, "worker", &["master1", "worker1"])?;
    let text = fs::read_to_string(&m)?;
    let sha = serde_json::from_str::<serde_json::Value>(&text)?["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    fs::write(&m, text.replace(&sha, &"0".repeat(64)))?;
    fs::remove_file(&t.img)?;
    let (target, old) = old_card(d.path())?;
    let msg = refused(&zst, &target, "master1")?;
    assert!(msg.contains("worker1..worker6"), "{msg}");
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    flash(&with_node(&zst, &target, "worker6")?, &mut no_prompt)?;
    Ok(())
}

#[test]
fn a_zstd_image_without_a_manifest_is_read_itself() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pibake_image(
        d.path(),
        "lab-worker",
        Some(&node_table("worker", &WORKERS)),
    )?;
    let zst = zstd(&t.img)?;
    fs::remove_file(&t.img)?;
    let (target, old) = old_card(d.path())?;
    let msg = refused(&zst, &target, "worker7")?;
    assert!(msg.contains("worker1..worker6"), "{msg}");
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    flash(&with_node(&zst, &target, "worker1")?, &mut no_prompt)?;
    Ok(())
}

#[test]
fn an_image_without_a_node_table_takes_no_node() -> Result<()> {
    let d = tempfile::tempdir()?;
    let (target, old) = old_card(d.path())?;
    // An ext4 root without /etc/pibake/nodes.toml.
    let t = make_pibake_image(d.path(), "other", None)?;
    let msg = refused(&t.img, &target, "worker1")?;
    assert!(msg.contains("/etc/pibake/nodes.toml"), "{msg}");
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    // A root that is not ext4 at all.
    let t = make_image(d.path(), "raw", "arm_64bit=1\n")?;
    let msg = refused(&t.img, &target, "worker1")?;
    assert!(msg.contains("ext4"), "{msg}");
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    // Without --node there is nothing to check.
    flash(
        &FlashOptions {
            image: t.img.clone(),
            target: target.clone(),
            ..FlashOptions::default()
        },
        &mut no_prompt,
    )?;
    Ok(())
}

#[test]
fn a_refused_node_on_a_device_asks_nothing_and_writes_nothing() -> Result<()> {
    let d = tempfile::tempdir()?;
    let imgs = lab(d.path())?;
    let backing = d.path().join("card.raw");
    sparse_file(&backing, 32 * MIB)?;
    let lo = LoopDev::attach(&backing)?;
    let e = flash(&with_node(&imgs[0].img, &lo.dev, "aux1")?, &mut no_prompt)
        .err()
        .ok_or_else(|| anyhow::anyhow!("--node aux1 of lab-worker.img was accepted"))?;
    assert!(!matches!(e, FlashError::Declined(_)), "{e}");
    assert!(e.to_string().contains("lab-aux.img"), "{e}");
    let mut f = fs::File::open(&backing)?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut buf)?;
    assert!(
        buf.iter().all(|&b| b == 0),
        "a refused flash wrote to the device"
    );
    Ok(())
}
