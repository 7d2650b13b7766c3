//! A stored root partition composes the same image as a from-scratch assembly, and a change
//! of the boot partition (a node's table) leaves the stored partition's bytes alone.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pibake_image::assemble::{self, AssembleSpec, ImageOutputs};
use pibake_image::rootpart::{self, RootPart};
use pibake_image::{Content, Entry, Layer, Rootfs, SourceDateEpoch};
use std::path::Path;

/// The fixture's tree, with `table` as the boot partition's node table.
fn tree(work: &Path, gpt: bool, table: &str) -> (Rootfs, AssembleSpec) {
    let tarp = work.join("base.tar");
    base_tar(&tarp);
    let ids = ids(gpt);
    let mut rootfs = Rootfs::from_base_tar(&tarp, work).unwrap();
    rootfs.apply_layer(&layer(&ids.table));
    rootfs.apply_layer(&Layer {
        name: "node table".into(),
        entries: vec![Entry::file(
            p("boot/firmware/pibake-nodes.toml"),
            Content::bytes(table.as_bytes().to_vec()),
            0o644,
        )],
    });
    let out = work.parent().unwrap();
    let mut spec = AssembleSpec::new("t", out, work, ids, SourceDateEpoch(EPOCH));
    spec.boot_size = 64 << 20;
    spec.root_min_free = 8 << 20;
    (rootfs, spec)
}

fn from_scratch(dir: &Path, gpt: bool, table: &str) -> ImageOutputs {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (mut rootfs, spec) = tree(&work, gpt, table);
    assemble::assemble(&mut rootfs, &spec).unwrap()
}

fn outputs(o: &ImageOutputs) -> [String; 4] {
    [&o.img, &o.zst, &o.bmap, &o.sha256_file].map(file_sha256)
}

#[test]
fn a_stored_root_composes_the_from_scratch_image_and_a_boot_change_leaves_it_alone() {
    for gpt in [false, true] {
        let store = tmpdir();
        let (ext4, zst) = (
            store.path().join("root.ext4"),
            store.path().join("root.zst"),
        );
        let first = tmpdir();
        let work = first.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let (mut rootfs, spec) = tree(&work, gpt, "node = 1\n");
        let boot = assemble::split_boot(&mut rootfs, &spec).unwrap();
        let meta = rootpart::make(
            &mut rootfs,
            &spec,
            &ext4,
            &std::fs::File::create(&zst).unwrap(),
        )
        .unwrap();
        let part = RootPart {
            ext4: &ext4,
            zst: &zst,
            meta: &meta,
        };
        let composed = assemble::compose(&boot, &rootfs, part, &spec).unwrap();
        let scratch = tmpdir();
        let a = from_scratch(scratch.path(), gpt, "node = 1\n");
        assert_eq!(
            outputs(&composed),
            outputs(&a),
            "gpt {gpt}: composed != from scratch"
        );
        assert_eq!(file_sha256(&composed.img), composed.sha256);

        // The node's table changes: the boot partition is written again around the same part.
        let (before, mtime) = (
            file_sha256(&ext4),
            std::fs::metadata(&ext4).unwrap().modified().unwrap(),
        );
        let second = tmpdir();
        let work = second.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let (mut rootfs, spec) = tree(&work, gpt, "node = 2\n");
        let boot = assemble::split_boot(&mut rootfs, &spec).unwrap();
        let changed = assemble::compose(&boot, &rootfs, part, &spec).unwrap();
        assert_eq!(
            file_sha256(&ext4),
            before,
            "the stored root's bytes changed"
        );
        assert_eq!(std::fs::metadata(&ext4).unwrap().modified().unwrap(), mtime);
        assert_ne!(
            changed.sha256, composed.sha256,
            "the table change is not in the image"
        );
        let again = tmpdir();
        let b = from_scratch(again.path(), gpt, "node = 2\n");
        assert_eq!(
            outputs(&changed),
            outputs(&b),
            "gpt {gpt}: changed != from scratch"
        );
        // The root partition inside the image is the stored part, byte for byte.
        let l = changed.layout;
        let img = std::fs::read(&changed.img).unwrap();
        let root = &img[l.root_start as usize..(l.root_start + l.root_len) as usize];
        assert!(root == std::fs::read(&ext4).unwrap().as_slice());
        // The stored part is sparse: what it allocates is what its ranges map.
        let st = std::fs::metadata(&ext4).unwrap();
        let mapped: u64 = meta
            .ranges
            .iter()
            .map(|r| (r.last - r.first + 1) * 4096)
            .sum();
        assert!(std::os::unix::fs::MetadataExt::blocks(&st) * 512 <= mapped + (64 << 10));
    }
}

/// A part made for another layout (another boot size) is refused, not composed into a
/// broken table.
#[test]
fn a_part_of_another_size_is_refused() {
    let dir = tmpdir();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (ext4, zst) = (dir.path().join("root.ext4"), dir.path().join("root.zst"));
    let (mut rootfs, spec) = tree(&work, false, "node = 1\n");
    let boot = assemble::split_boot(&mut rootfs, &spec).unwrap();
    let mut meta = rootpart::make(
        &mut rootfs,
        &spec,
        &ext4,
        &std::fs::File::create(&zst).unwrap(),
    )
    .unwrap();
    meta.len += 1 << 20;
    let part = RootPart {
        ext4: &ext4,
        zst: &zst,
        meta: &meta,
    };
    let err = assemble::compose(&boot, &rootfs, part, &spec).unwrap_err();
    assert!(err.to_string().contains("another boot size"), "{err}");
}

/// The store and the output folder may be two filesystems (a tmpfs /tmp in a fresh root):
/// copy_file_range then refuses (EXDEV), and the copy goes through a buffer, holes kept.
#[test]
fn a_part_is_copied_across_filesystems() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let shm = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let disk = tmpdir();
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(disk.path()).unwrap().dev(),
        "/dev/shm and the temp dir are one filesystem: this test would test nothing"
    );
    let src_path = shm.path().join("part.ext4");
    let src = std::fs::File::create(&src_path).unwrap();
    src.set_len(64 << 20).unwrap();
    src.write_all_at(&[1u8; 8192], 4096).unwrap();
    src.write_all_at(&[2u8; 4096], 40 << 20).unwrap();
    let src = std::fs::File::open(&src_path).unwrap();
    let dst_path = disk.path().join("image");
    let dst = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&dst_path)
        .unwrap();
    dst.set_len((64 << 20) + (1 << 20)).unwrap();
    let copied = rootpart::copy_sparse(&src, &dst, 1 << 20).unwrap();
    assert!(copied >= 12288, "{copied}");
    let img = std::fs::read(&dst_path).unwrap();
    let part = std::fs::read(&src_path).unwrap();
    assert!(img[1 << 20..] == part[..], "the copied part differs");
    assert!(img[..1 << 20].iter().all(|b| *b == 0));
    assert!(
        dst.metadata().unwrap().blocks() * 512 < 4 << 20,
        "holes were filled in"
    );
}
