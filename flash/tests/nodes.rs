//! `--node` must be a node the image serves: flash reads the image's node table
//! (pibake-nodes.toml on its FAT boot partition, of a raw `.img` in place, of a `.img.zst` from
//! the stream decoded to the end of that partition) before writing anything, and a refusal
//! names the image beside it that serves the node.

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
    // The table stays on the card's FAT beside the node file, for the agent.
    assert_eq!(
        mtype(&target, imgs[0].layout.boot_start, TABLE_FILE)?,
        node_table("worker", &WORKERS)
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

/// The manifest beside a `.img.zst` is not asked about the image itself, even when its sha256
/// is the image's: the table on the boot partition decides.
#[test]
fn the_table_decides_not_the_manifest_beside_the_image() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pibake_image(
        d.path(),
        "lab-worker",
        Some(&node_table("worker", &WORKERS)),
    )?;
    let zst = zstd(&t.img)?;
    // A manifest with the image's sha256 that claims master1 too.
    write_manifest(&t.img, "worker", &["master1", "worker1"])?;
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

/// A `.img.zst` is decoded only up to the end of its boot partition: here the stream is
/// broken right after it, and the table is read all the same; cut inside it, the stream is
/// short, and flash says so.
#[test]
fn a_zstd_image_is_decoded_only_to_the_end_of_its_boot_partition() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pibake_image(
        d.path(),
        "lab-worker",
        Some(&node_table("worker", &WORKERS)),
    )?;
    let end = t.layout.boot_start + t.layout.boot_len;
    // The image's first `len` bytes, compressed, then `tail` as they are.
    let compressed_head = |name: &str, len: u64, tail: &[u8]| -> Result<PathBuf> {
        let head = d.path().join(format!("{name}.head"));
        fs::write(&head, read_range(&t.img, 0, len)?)?;
        let zst = zstd(&head)?;
        let mut bytes = fs::read(&zst)?;
        bytes.extend_from_slice(tail);
        let out = d.path().join(format!("{name}.img.zst"));
        fs::write(&out, bytes)?;
        fs::remove_file(&head)?;
        fs::remove_file(&zst)?;
        Ok(out)
    };
    // Not a zstd frame: decoding one byte past the boot partition fails.
    let broken = compressed_head("broken", end, &pattern(3, 4096))?;
    let cut = compressed_head("cut", end - 4096, &[])?;
    fs::remove_file(&t.img)?;
    let (target, old) = old_card(d.path())?;
    let msg = refused(&broken, &target, "worker9")?;
    assert!(
        msg.contains("broken.img.zst serves worker1..worker6"),
        "{msg}"
    );
    let msg = refused(&cut, &target, "worker1")?;
    assert!(
        msg.contains("it ends before the end of its boot partition 1"),
        "{msg}"
    );
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    Ok(())
}

/// A pc-efi image (GPT, the table on its ESP), raw and compressed.
#[test]
fn a_pc_efi_image_serves_the_nodes_of_the_table_on_its_esp() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pc_efi_image(
        d.path(),
        "masters",
        Some(&node_table("manager", &["m1", "m2"])),
    )?;
    let (target, old) = old_card(d.path())?;
    let msg = refused(&t.img, &target, "w1")?;
    assert!(
        msg.contains("masters.img serves m1, m2 (role manager)"),
        "{msg}"
    );
    let zst = zstd(&t.img)?;
    fs::remove_file(&t.img)?;
    let msg = refused(&zst, &target, "w1")?;
    assert!(
        msg.contains("masters.img.zst serves m1, m2 (role manager)"),
        "{msg}"
    );
    assert!(
        fs::read(&target)? == old,
        "a refused flash changed the target"
    );
    flash(&with_node(&zst, &target, "m1")?, &mut no_prompt)?;
    Ok(())
}

#[test]
fn an_image_without_a_node_table_takes_no_node() -> Result<()> {
    let d = tempfile::tempdir()?;
    let (target, old) = old_card(d.path())?;
    let unchanged = |target: &Path| -> Result<()> {
        assert!(
            fs::read(target)? == old,
            "a refused flash changed the target"
        );
        Ok(())
    };
    // A FAT boot partition without pibake-nodes.toml.
    let t = make_pibake_image(d.path(), "other", None)?;
    let msg = refused(&t.img, &target, "worker1")?;
    assert!(
        msg.contains("its boot partition has no pibake-nodes.toml"),
        "{msg}"
    );
    unchanged(&target)?;
    // An image from before the table moved: /etc/pibake/nodes.toml in its root is not read.
    let t = make_old_pibake_image(d.path(), "old", &node_table("worker", &WORKERS))?;
    let msg = refused(&t.img, &target, "worker1")?;
    for want in [
        "no pibake-nodes.toml",
        "/etc/pibake/nodes.toml",
        "build it again",
    ] {
        assert!(msg.contains(want), "{want:?} missing from: {msg}");
    }
    unchanged(&target)?;
    // Partition 1 typed Linux, not FAT.
    let t = make_pibake_image(d.path(), "linux1", Some(&node_table("worker", &WORKERS)))?;
    let mut f = fs::OpenOptions::new().write(true).open(&t.img)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(446 + 4))?;
    std::io::Write::write_all(&mut f, &[0x83])?;
    drop(f);
    let msg = refused(&t.img, &target, "worker1")?;
    assert!(
        msg.contains("its partition 1 is not FAT (MBR type 0x83), so it has no pibake-nodes.toml"),
        "{msg}"
    );
    unchanged(&target)?;
    // Typed FAT, but no FAT filesystem in it.
    let t = make_pibake_image(d.path(), "zeroed", Some(&node_table("worker", &WORKERS)))?;
    let f = fs::OpenOptions::new().write(true).open(&t.img)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 4096], t.layout.boot_start)?;
    drop(f);
    let msg = refused(&t.img, &target, "worker1")?;
    assert!(
        msg.contains("its boot partition 1 is not a FAT filesystem"),
        "{msg}"
    );
    unchanged(&target)?;
    // No partition table at all.
    let none = d.path().join("none.img");
    fs::write(&none, vec![0u8; 1 << 20])?;
    let msg = refused(&none, &target, "worker1")?;
    assert!(msg.contains("its partition table cannot be read"), "{msg}");
    unchanged(&target)?;
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
