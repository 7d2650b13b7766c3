#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use pibake_image::table::Guid;

fn debugfs(img: &str, offset: u64, req: &str) -> String {
    run(Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(format!("{img}?offset={offset}")))
}

#[test]
fn image_is_reproducible_sparse_and_tools_agree() {
    for t in [
        ("sfdisk", "fdisk"),
        ("fsck.vfat", "dosfstools"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("mtype", "mtools"),
        ("bmaptool", "bmap-tools"),
        ("zstd", "zstd"),
        ("sha256sum", "coreutils"),
    ] {
        need(t.0, t.1);
    }
    let (d1, d2) = (tmpdir(), tmpdir());
    let a = build(d1.path(), "lab-worker", false);
    let b = build(d2.path(), "lab-worker", false);
    // Reproducible: same bytes from two separate work dirs.
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(file_sha256(&a.img), a.sha256);
    for (x, y) in [
        (&a.zst, &b.zst),
        (&a.bmap, &b.bmap),
        (&a.sha256_file, &b.sha256_file),
    ] {
        assert_eq!(file_sha256(x), file_sha256(y), "{} differs", x.display());
    }
    let img = a.img.to_str().unwrap();

    // .sha256 is sha256sum's format.
    let check = run(Command::new("sha256sum")
        .arg("-c")
        .arg(&a.sha256_file)
        .current_dir(d1.path()));
    assert!(check.contains("lab-worker.img: OK"), "{check}");

    // Sparse on disk: allocated blocks far below the apparent size.
    let st = std::fs::metadata(&a.img).unwrap();
    let allocated = std::os::unix::fs::MetadataExt::blocks(&st) * 512;
    assert!(
        allocated < a.image_bytes / 20,
        "allocated {allocated} of {}",
        a.image_bytes
    );
    // Every zero block is a hole: what is allocated is what the bmap maps.
    assert!(
        allocated <= a.mapped_bytes + (64 << 10),
        "allocated {allocated}, mapped {}",
        a.mapped_bytes
    );

    // Partition table.
    let j = run(Command::new("sfdisk").arg("--json").arg(img));
    assert!(
        j.contains("\"id\": \"0x5eedb00c\"")
            && j.contains("\"type\": \"c\"")
            && j.contains("\"type\": \"83\""),
        "{j}"
    );
    assert!(
        j.contains(&format!("\"start\": {}", a.layout.root_start / 512)),
        "{j}"
    );

    // Both filesystems clean, checked by their own tools on extracted partitions.
    let boot = d1.path().join("boot.fat");
    let root = d1.path().join("root.ext4");
    let raw = std::fs::read(&a.img).unwrap();
    let l = a.layout;
    std::fs::write(
        &boot,
        &raw[l.boot_start as usize..(l.boot_start + l.boot_len) as usize],
    )
    .unwrap();
    std::fs::write(
        &root,
        &raw[l.root_start as usize..(l.root_start + l.root_len) as usize],
    )
    .unwrap();
    drop(raw);
    run(Command::new("fsck.vfat").arg("-n").arg(&boot));
    let e = run(Command::new("e2fsck").arg("-fn").arg(&root));
    assert!(e.contains("rootfs:") || e.is_empty(), "{e}");
    run(Command::new("e2fsck").arg("-fn").arg(&root));

    // ext4: owners, modes, contents, label, UUID, timestamps.
    let off = l.root_start;
    let s = debugfs(img, off, "stat /home/pi/.profile");
    assert!(
        s.contains("Mode:  0640") && s.contains("User:  1000") && s.contains("Group:  1000"),
        "{s}"
    );
    let s = debugfs(
        img,
        off,
        "stat /etc/NetworkManager/system-connections/eth0.nmconnection",
    );
    assert!(
        s.contains("Mode:  0600") && s.contains("User:     0"),
        "{s}"
    );
    let s = debugfs(img, off, "stat /usr/bin/tool");
    assert!(
        s.contains("Mode:  04755") && s.contains("Links: 2"),
        "setuid and hard link kept: {s}"
    );
    assert!(s.contains("2023"), "mtime clamped to the epoch: {s}");
    assert_eq!(debugfs(img, off, "cat /etc/hostname"), "node1\n");
    assert_eq!(debugfs(img, off, "cat /etc/machine-id"), "uninitialized\n");
    let ls = debugfs(img, off, "ls -l /boot/firmware");
    assert!(
        !ls.contains("config.txt"),
        "boot files must not be in the root fs: {ls}"
    );
    let ls = debugfs(img, off, "ls -l /var");
    assert!(!ls.contains("obsolete"), "{ls}");
    let stats = debugfs(img, off, "stats");
    assert!(
        stats.contains(&format!(
            "Filesystem UUID:          {}",
            Guid::from_hash([4; 16])
        )),
        "{stats}"
    );
    assert!(
        stats.contains("Filesystem volume name:   rootfs"),
        "{stats}"
    );
    assert!(
        stats.contains(&format!(
            "Directory Hash Seed:      {}",
            Guid::from_hash([5; 16])
        )),
        "{stats}"
    );

    // FAT via mtools.
    let fat = format!("{img}@@{}", l.boot_start);
    assert_eq!(
        run(Command::new("mtype").args(["-i", &fat, "::config.txt"])),
        CONFIG_TXT
    );
    let cmd = run(Command::new("mtype").args(["-i", &fat, "::cmdline.txt"]));
    assert!(cmd.contains("root=PARTUUID=5eedb00c-02 "), "{cmd}");
    assert_eq!(a.root_partuuid, "5eedb00c-02");
    let dir = run(Command::new("mdir").args(["-i", &fat, "::/overlays"]));
    assert!(
        dir.contains("gpio-shutdown.dtbo") && dir.contains("2023-11-14"),
        "{dir}"
    );

    // bmaptool accepts the .bmap (checksums of every range) and copies an identical image.
    let copy = d1.path().join("copy.img");
    run(Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(&a.bmap)
        .arg(&a.img)
        .arg(&copy));
    assert_eq!(file_sha256(&copy), a.sha256);
    // And the .zst decompresses to the image.
    let unz = d1.path().join("unz.img");
    run(Command::new("zstd")
        .args(["-d", "-q", "-o"])
        .arg(&unz)
        .arg(&a.zst));
    assert_eq!(file_sha256(&unz), a.sha256);
    // No temp files left behind.
    let left: Vec<_> = std::fs::read_dir(d1.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn gpt_image_partuuid_and_sfdisk() {
    let d = tmpdir();
    let a = build(d.path(), "g", true);
    let g3 = Guid::from_hash([3; 16]).to_string();
    assert_eq!(a.root_partuuid, g3);
    let img = a.img.to_str().unwrap();
    let j = run(Command::new("sfdisk").arg("--json").arg(img));
    assert!(
        j.contains("\"label\": \"gpt\"") && j.to_lowercase().contains(&g3),
        "{j}"
    );
    let v = run(Command::new("sfdisk").arg("--verify").arg(img));
    assert!(v.contains("No errors detected"), "{v}");
    let fat = format!("{img}@@{}", a.layout.boot_start);
    let cmd = run(Command::new("mtype").args(["-i", &fat, "::cmdline.txt"]));
    assert!(cmd.contains(&format!("root=PARTUUID={g3} ")), "{cmd}");
    run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{img}?offset={}", a.layout.root_start)));
}

/// The .img.zst must not depend on the builder's core count: zstd's multithreaded output is
/// the same for every worker count >= 1 (it differs from single-threaded mode).
#[test]
fn zstd_multithreaded_output_is_independent_of_workers() {
    use std::io::Write;
    let mut data = Vec::new();
    let mut x: u32 = 1;
    while data.len() < 24 << 20 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        if x.is_multiple_of(3) {
            data.extend_from_slice(b"text text text ");
        } else {
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    let z = |workers: u32| {
        let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
        e.multithread(workers).unwrap();
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let one = z(1);
    assert!(one == z(2) && one == z(4));
}
