//! Flashing into files and loop devices: bmap-only writes, read-back verification against a
//! planted corruption, boot files on the FAT partition, refusals.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use common::*;
use pibake_flash::flash::{flash_with_hooks, Hooks};
use pibake_flash::target::{HostView, TargetError};
use pibake_flash::{flash, BmapChoice, FlashError, FlashOptions, NodeName, Verification};
use sha2::{Digest, Sha256};

fn no_prompt(q: &str) -> bool {
    panic!("unexpected confirmation prompt: {q}");
}

fn opts(image: &Path, target: &Path) -> FlashOptions {
    FlashOptions {
        image: image.to_owned(),
        target: target.to_owned(),
        ..FlashOptions::default()
    }
}

fn secrets(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("secrets.toml");
    fs::write(&p, "swarm_worker_token = \"example-token-for-tests\"\n")?;
    Ok(p)
}

#[test]
fn file_target_gets_mapped_blocks_boot_files_and_an_unchanged_root() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pibake_image(d.path(), "lab", Some(&node_table("worker", &["w1", "w3"])))?;
    bmaptool_create(&t.img)?;
    let target = d.path().join("card.img");
    let o = FlashOptions {
        node: Some("w3".parse::<NodeName>()?),
        secrets: Some(secrets(d.path())?),
        ..opts(&t.img, &target)
    };
    let r = flash(&o, &mut no_prompt)?;

    assert!(r.bmap.is_some(), "the bmap beside the image is used");
    assert!(matches!(r.verification, Verification::BmapRanges { ranges } if ranges > 0));
    assert_eq!(r.bytes_verified, r.bytes_written);
    assert!(
        r.bytes_written * 2 <= r.image_bytes,
        "wrote {} of {} bytes",
        r.bytes_written,
        r.image_bytes
    );
    assert_eq!(fs::metadata(&target)?.len(), r.image_bytes);
    assert_eq!(r.boot_files, ["pibake-node.toml", "pibake-secrets.toml"]);

    assert_eq!(
        mtype(&target, t.layout.boot_start, "pibake-node.toml")?,
        "node = \"w3\"\n"
    );
    assert_eq!(
        mtype(&target, t.layout.boot_start, "pibake-secrets.toml")?,
        fs::read_to_string(d.path().join("secrets.toml"))?
    );
    assert_eq!(
        mtype(&target, t.layout.boot_start, "config.txt")?,
        "arm_64bit=1\n"
    );
    // fatfs left a filesystem that fsck.vfat finds clean.
    let part = d.path().join("boot.part");
    fs::write(
        &part,
        read_range(&target, t.layout.boot_start, t.layout.boot_len)?,
    )?;
    run("fsck.vfat", &["-n", &part.to_string_lossy()], "dosfstools")?;
    let root = |p: &Path| read_range(p, t.layout.root_start, t.layout.root_len);
    assert!(
        root(&target)? == root(&t.img)?,
        "root partition bytes differ from the image"
    );
    // Partition table too.
    assert_eq!(read_range(&target, 0, 512)?, read_range(&t.img, 0, 512)?);
    Ok(())
}

/// A pc-efi image (GPT, partition 1 the EFI system partition): the boot files go onto the
/// ESP beside the loader, which the agent finds on /boot/efi.
#[test]
fn pc_efi_image_gets_its_boot_files_on_the_esp() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pc_efi_image(
        d.path(),
        "masters",
        Some(&node_table("manager", &["m1", "m2"])),
    )?;
    bmaptool_create(&t.img)?;
    let target = d.path().join("disk.img");
    let o = FlashOptions {
        node: Some("m2".parse::<NodeName>()?),
        secrets: Some(secrets(d.path())?),
        ..opts(&t.img, &target)
    };
    let r = flash(&o, &mut no_prompt)?;
    assert_eq!(r.boot_files, ["pibake-node.toml", "pibake-secrets.toml"]);
    let boot = t.layout.boot_start;
    assert_eq!(mtype(&target, boot, "pibake-node.toml")?, "node = \"m2\"\n");
    assert_eq!(
        mtype(&target, boot, "pibake-secrets.toml")?,
        fs::read_to_string(d.path().join("secrets.toml"))?
    );
    assert_eq!(mtype(&target, boot, "EFI/BOOT/BOOTX64.EFI")?, FAKE_LOADER);
    let part = d.path().join("esp.part");
    fs::write(&part, read_range(&target, boot, t.layout.boot_len)?)?;
    run("fsck.vfat", &["-n", &part.to_string_lossy()], "dosfstools")?;
    let root = |p: &Path| read_range(p, t.layout.root_start, t.layout.root_len);
    assert!(
        root(&target)? == root(&t.img)?,
        "root partition bytes differ"
    );
    // The GPT (protective MBR, header, entries, backup) is the image's, and still checks.
    let head = (2 + 32) * 512;
    assert_eq!(read_range(&target, 0, head)?, read_range(&t.img, 0, head)?);
    let len = fs::metadata(&target)?.len();
    let tail = 33 * 512;
    assert_eq!(
        read_range(&target, len - tail, tail)?,
        read_range(&t.img, len - tail, tail)?
    );
    match pibake_image::table::read_table(&mut fs::File::open(&target)?, len)? {
        pibake_image::table::Table::Gpt { problems, .. } => {
            assert!(problems.is_empty(), "{problems:?}")
        }
        other => bail!("not a GPT: {other:?}"),
    }
    Ok(())
}

#[test]
fn read_back_catches_a_planted_corruption() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "arm_64bit=1\n")?;
    bmaptool_create(&t.img)?;
    let target = d.path().join("card.img");
    let bad = t.layout.root_start + 4 * MIB + 1000;
    let mut hook = |p: &Path| flip_byte(p, bad);
    let e = flash_with_hooks(
        &opts(&t.img, &target),
        &mut no_prompt,
        Hooks {
            before_verify: Some(&mut hook),
        },
    )
    .expect_err("corruption must be caught");
    let FlashError::Verify { span, .. } = &e else {
        bail!("wrong error: {e}")
    };
    assert!(span.start <= bad && bad < span.end, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("bytes {}..{}", span.start, span.end)) && msg.contains("blocks"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn zstd_image_without_bmap_is_written_and_verified_whole() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "arm_64bit=1\n")?;
    let zst = d.path().join("lab.img.zst");
    run(
        "zstd",
        &[
            "-q",
            "-T0",
            &t.img.to_string_lossy(),
            "-o",
            &zst.to_string_lossy(),
        ],
        "zstd",
    )?;
    let target = d.path().join("card.img");
    let r = flash(
        &FlashOptions {
            bmap: BmapChoice::Ignore,
            ..opts(&zst, &target)
        },
        &mut no_prompt,
    )?;
    let want = hex::encode(Sha256::digest(fs::read(&t.img)?));
    assert_eq!(r.verification, Verification::WholeImage { sha256: want });
    assert!(r.bmap.is_none());
    // A file target skips zero blocks even without a bmap.
    assert!(r.bytes_written * 2 <= r.image_bytes);
    assert!(fs::read(&target)? == fs::read(&t.img)?);

    // With a corruption the whole-image hash catches it.
    let mut hook = |p: &Path| flip_byte(p, 700);
    let e = flash_with_hooks(
        &FlashOptions {
            bmap: BmapChoice::Ignore,
            ..opts(&zst, &target)
        },
        &mut no_prompt,
        Hooks {
            before_verify: Some(&mut hook),
        },
    )
    .expect_err("caught");
    assert!(matches!(e, FlashError::Verify { .. }), "{e}");
    Ok(())
}

#[test]
fn zstd_image_with_the_image_crates_bmap_name() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "arm_64bit=1\n")?;
    let bmap = bmaptool_create(&t.img)?;
    // pibake's assemble writes `<name>.bmap` beside `<name>.img.zst`.
    fs::rename(&bmap, d.path().join("lab.bmap"))?;
    let zst = d.path().join("lab.img.zst");
    run(
        "zstd",
        &["-q", &t.img.to_string_lossy(), "-o", &zst.to_string_lossy()],
        "zstd",
    )?;
    let target = d.path().join("card.img");
    let r = flash(&opts(&zst, &target), &mut no_prompt)?;
    assert_eq!(r.bmap.as_deref(), Some(d.path().join("lab.bmap").as_path()));
    assert!(fs::read(&target)? == fs::read(&t.img)?);
    Ok(())
}

#[test]
fn an_image_that_does_not_match_its_bmap_is_refused() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "arm_64bit=1\n")?;
    bmaptool_create(&t.img)?;
    flip_byte(&t.img, t.layout.root_start + 10)?;
    let e = flash(&opts(&t.img, &d.path().join("card.img")), &mut no_prompt).expect_err("mismatch");
    assert!(matches!(e, FlashError::SourceMismatch { .. }), "{e}");
    Ok(())
}

#[test]
fn the_image_itself_is_not_a_target() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "x=1\n")?;
    let e = flash(&opts(&t.img, &t.img), &mut no_prompt).expect_err("refused");
    assert!(
        matches!(e, FlashError::Target(TargetError::IsSource { .. })),
        "{e}"
    );
    Ok(())
}

#[test]
fn loop_device_flash_asks_verifies_and_catches_corruption() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_pibake_image(d.path(), "lab", Some(&node_table("worker", &["w1", "w3"])))?;
    bmaptool_create(&t.img)?;
    let backing = d.path().join("card.raw");
    sparse_file(&backing, 32 * MIB)?;
    let lo = LoopDev::attach(&backing)?;

    // Declined: nothing written.
    let mut asked = Vec::new();
    let mut no = |q: &str| {
        asked.push(q.to_owned());
        false
    };
    let e = flash(&opts(&t.img, &lo.dev), &mut no).expect_err("declined");
    assert!(matches!(e, FlashError::Declined(_)), "{e}");
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].contains(&lo.dev.display().to_string()),
        "{}",
        asked[0]
    );
    assert!(
        read_range(&backing, 0, 512)?.iter().all(|&b| b == 0),
        "declined flash wrote"
    );

    // Confirmed.
    let mut yes = |_: &str| true;
    let o = FlashOptions {
        node: Some("w1".parse()?),
        secrets: Some(secrets(d.path())?),
        ..opts(&t.img, &lo.dev)
    };
    let r = flash(&o, &mut yes)?;
    assert!(matches!(r.verification, Verification::BmapRanges { .. }));
    assert!(r.bytes_written * 2 <= r.image_bytes);
    assert_eq!(
        mtype(&lo.dev, t.layout.boot_start, "pibake-node.toml")?,
        "node = \"w1\"\n"
    );
    let root = |p: &Path| read_range(p, t.layout.root_start, t.layout.root_len);
    assert!(
        root(&lo.dev)? == root(&t.img)?,
        "root partition differs on the device"
    );

    // `yes` skips the question; a corruption on the device is caught (in the root's
    // superblock, a mapped block).
    let bad = t.layout.root_start + 1024 + 123;
    let mut hook = |p: &Path| flip_byte(p, bad);
    let e = flash_with_hooks(
        &FlashOptions {
            yes: true,
            ..opts(&t.img, &lo.dev)
        },
        &mut no_prompt,
        Hooks {
            before_verify: Some(&mut hook),
        },
    )
    .expect_err("corruption caught");
    let FlashError::Verify { span, .. } = &e else {
        bail!("wrong error: {e}")
    };
    assert!(span.start <= bad && bad < span.end, "{e}");
    Ok(())
}

#[test]
fn too_small_device_is_refused() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "x=1\n")?;
    let backing = d.path().join("small.raw");
    sparse_file(&backing, 16 * MIB)?;
    let lo = LoopDev::attach(&backing)?;
    let e = flash(
        &FlashOptions {
            yes: true,
            ..opts(&t.img, &lo.dev)
        },
        &mut no_prompt,
    )
    .expect_err("too small");
    let FlashError::Target(TargetError::TooSmall {
        target_bytes,
        image_bytes,
        ..
    }) = e
    else {
        bail!("wrong error: {e}")
    };
    assert_eq!((target_bytes, image_bytes), (16 * MIB, 20 * MIB));
    Ok(())
}

#[test]
fn mounted_device_is_refused() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "x=1\n")?;
    let backing = d.path().join("mounted.raw");
    sparse_file(&backing, 64 * MIB)?;
    // ext4, not FAT: container kernels often lack vfat; the check does not care what is mounted.
    run(
        "mkfs.ext4",
        &["-q", &backing.to_string_lossy()],
        "e2fsprogs",
    )?;
    let lo = LoopDev::attach(&backing)?;
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt)?;
    let m = Mounted::mount(&lo.dev, &mnt)?;
    let e = flash(
        &FlashOptions {
            yes: true,
            ..opts(&t.img, &lo.dev)
        },
        &mut no_prompt,
    )
    .expect_err("mounted");
    let msg = e.to_string();
    assert!(
        matches!(e, FlashError::Target(TargetError::Mounted { .. })),
        "{msg}"
    );
    assert!(msg.contains(&mnt.display().to_string()), "{msg}");
    drop(m);
    Ok(())
}

#[test]
fn the_system_disk_is_refused() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lab", "x=1\n")?;
    let host = HostView::current()?;
    let Some(disk) = host.system_disks().into_iter().next() else {
        bail!("cannot find the disk of / on this host")
    };
    let name = fs::canonicalize(format!("/sys/dev/block/{disk}"))?;
    let dev = Path::new("/dev").join(name.file_name().unwrap_or_default());
    // The prompt says no, so even a broken check could not write anything.
    let mut never = |_: &str| false;
    let e = flash(&opts(&t.img, &dev), &mut never).expect_err("refused");
    assert!(
        matches!(e, FlashError::Target(TargetError::SystemDisk { .. })),
        "{e}"
    );
    Ok(())
}
