#![allow(clippy::unwrap_used)]

mod common;

use std::io::Cursor;
use std::process::Command;

use common::*;
use pibake_image::fat::*;
use pibake_image::tree::NoBase;
use pibake_image::{Content, Entry, SourceDateEpoch, Tree};

fn files() -> Tree {
    let mut t = Tree::new();
    t.insert(Entry::file(
        p("config.txt"),
        Content::bytes(CONFIG_TXT),
        0o644,
    ));
    t.insert(Entry::file(
        p("cmdline.txt"),
        Content::bytes("root=PARTUUID=01020304-02 rootwait\n"),
        0o644,
    ));
    t.insert(Entry::dir(p("overlays"), 0o755));
    for i in 0..40 {
        // Enough entries that the overlays directory spans several clusters.
        t.insert(Entry::file(
            p(&format!("overlays/overlay-number-{i:03}.dtbo")),
            Content::bytes(vec![i as u8; 1000 + i]),
            0o644,
        ));
    }
    t.insert(Entry::file(
        p("vmlinuz-6.12.117+deb13-arm64"),
        Content::bytes(vec![0x4b; 200_000]),
        0o644,
    ));
    t
}

fn spec(size: u64) -> FatSpec {
    FatSpec {
        size_bytes: size,
        volume_id: 0xcafe_f00d,
        label: VolumeLabel::BOOTFS,
        epoch: SourceDateEpoch(EPOCH),
    }
}

fn write(size: u64) -> Vec<u8> {
    let mut v = Cursor::new(vec![0u8; size as usize]);
    write_fat(&mut v, &spec(size), &files(), &NoBase).unwrap();
    v.into_inner()
}

#[test]
fn in_memory_is_deterministic_and_readable() {
    let a = write(64 << 20);
    let b = write(64 << 20);
    assert!(a == b, "two writes of the same tree differ");
    let fs = fatfs::FileSystem::new(Cursor::new(a), fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(fs.volume_id(), 0xcafe_f00d);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut fs.root_dir().open_file("config.txt").unwrap(), &mut s)
        .unwrap();
    assert_eq!(s, CONFIG_TXT);
    let e = fs
        .root_dir()
        .iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "cmdline.txt")
        .unwrap();
    let m = e.modified();
    assert_eq!(
        (
            m.date.year,
            m.date.month,
            m.date.day,
            m.time.hour,
            m.time.min
        ),
        (2023, 11, 14, 22, 13)
    );
}

#[test]
fn fsck_clean_and_mtools_read_back() {
    need("fsck.vfat", "dosfstools");
    need("mtype", "mtools");
    let d = tmpdir();
    for size in [64u64 << 20, 256 << 20] {
        let img = d.path().join(format!("boot-{size}.fat"));
        std::fs::write(&img, write(size)).unwrap();
        let out = run(Command::new("fsck.vfat").arg("-n").arg(&img));
        assert!(out.contains("files"), "{out}");
        let i = img.to_str().unwrap();
        let cfg = run(Command::new("mtype").args(["-i", i, "::config.txt"]));
        assert_eq!(cfg, CONFIG_TXT);
        let dir = run(Command::new("mdir").args(["-i", i, "::/overlays"]));
        assert!(dir.contains("overlay-number-039.dtbo"), "{dir}");
        let lbl = run(Command::new("mlabel").args(["-i", i, "-s", "::"]));
        assert!(lbl.contains("BOOTFS"), "{lbl}");
    }
}

#[test]
fn refuses_what_fat_cannot_hold() {
    let mut t = Tree::new();
    t.insert(Entry::symlink(p("link"), "config.txt"));
    let mut v = Cursor::new(vec![0u8; 64 << 20]);
    let e = write_fat(&mut v, &spec(64 << 20), &t, &NoBase).unwrap_err();
    assert!(
        e.to_string().contains("link") && e.to_string().contains("symlink"),
        "{e}"
    );
    let mut small = Cursor::new(vec![0u8; 16 << 20]);
    assert!(matches!(
        write_fat(&mut small, &spec(16 << 20), &Tree::new(), &NoBase),
        Err(FatError::TooSmall(_))
    ));
}
