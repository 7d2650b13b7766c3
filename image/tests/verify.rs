#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pibake_image::verify::{verify_image, Finding, FindingKind};
use pibake_image::window::Window;

fn copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    run(Command::new("cp").arg("--sparse=always").arg(src).arg(&dst));
    dst
}

/// Runs `f` on the image's FAT partition (offset `start`, `len`), then unmounts it.
fn with_fat(
    img: &Path,
    start: u64,
    len: u64,
    f: impl FnOnce(&fatfs::Dir<'_, Window<&std::fs::File>>),
) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let fs = fatfs::FileSystem::new(
        Window::new(&file, start, len).unwrap(),
        fatfs::FsOptions::new(),
    )
    .unwrap();
    f(&fs.root_dir());
    fs.unmount().unwrap();
}

/// Rewrites or removes a file on the image's FAT partition.
fn fat_edit(img: &Path, start: u64, len: u64, path: &str, content: Option<&str>) {
    match content {
        None => with_fat(img, start, len, |root| root.remove(path).unwrap()),
        Some(c) => fat_put(img, start, len, path, c.as_bytes()),
    }
}

fn fat_read(img: &Path, start: u64, len: u64, path: &str) -> String {
    let f = std::fs::File::open(img).unwrap();
    let fs = fatfs::FileSystem::new(
        Window::new(&f, start, len).unwrap(),
        fatfs::FsOptions::new(),
    )
    .unwrap();
    let mut s = String::new();
    fs.root_dir()
        .open_file(path)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// Writes a file into the image's ext4 with debugfs (as a careless image builder would).
fn ext4_write(img: &Path, offset: u64, dest: &str, content: &str, dir: &Path) {
    let src = dir.join("planted");
    std::fs::write(&src, content).unwrap();
    let fs = format!("{}?offset={offset}", img.display());
    let _ = Command::new("debugfs")
        .args(["-w", "-R", &format!("rm {dest}"), &fs])
        .output();
    run(Command::new("debugfs").args([
        "-w",
        "-R",
        &format!("write {} {dest}", src.display()),
        &fs,
    ]));
}

fn kinds(f: &[Finding]) -> Vec<FindingKind> {
    f.iter().map(|f| f.kind).collect()
}

#[test]
fn passes_on_our_images_and_finds_planted_faults() {
    need("fsck.vfat", "dosfstools");
    need("e2fsck", "e2fsprogs");
    need("debugfs", "e2fsprogs");
    let d = tmpdir();
    let work = d.path().join("work");
    let good = build(d.path(), "good", false);
    let l = good.layout;
    let f = verify_image(&good.img, &work).unwrap();
    assert!(f.is_empty(), "our image has findings: {f:#?}");
    let g = build(&d.path().join("work"), "gpt", true);
    let f = verify_image(&g.img, &work).unwrap();
    assert!(f.is_empty(), "our GPT image has findings: {f:#?}");

    // A missing overlay.
    let img = copy(&good.img, d.path(), "no-overlay.img");
    fat_edit(
        &img,
        l.boot_start,
        l.boot_len,
        "overlays/disable-bt.dtbo",
        None,
    );
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(kinds(&f), [FindingKind::ConfigReference], "{f:#?}");
    assert!(
        f[0].location == "config.txt:7" && f[0].message.contains("overlays/disable-bt.dtbo"),
        "{f:#?}"
    );

    // A config.txt line over 98 characters, and a missing kernel.
    let img = copy(&good.img, d.path(), "long-line.img");
    let long = format!(
        "{CONFIG_TXT}dtparam=i2c_arm=on{}\nkernel=missing.img\n",
        ",i2c_arm_baudrate=100000".repeat(4)
    );
    fat_edit(&img, l.boot_start, l.boot_len, "config.txt", Some(&long));
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(
        kinds(&f),
        [FindingKind::ConfigLineTooLong, FindingKind::ConfigReference],
        "{f:#?}"
    );
    assert_eq!(f[0].location, "config.txt:10");
    assert!(f[1].message.contains("missing.img"), "{f:#?}");

    // Baked SSH host keys.
    let img = copy(&good.img, d.path(), "ssh.img");
    ext4_write(
        &img,
        l.root_start,
        "/etc/ssh/ssh_host_ed25519_key",
        "not a real key\n",
        d.path(),
    );
    ext4_write(
        &img,
        l.root_start,
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "ssh-ed25519 AAAA test\n",
        d.path(),
    );
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(
        kinds(&f),
        [FindingKind::SshHostKey, FindingKind::SshHostKey],
        "{f:#?}"
    );
    assert_eq!(f[0].location, "/etc/ssh/ssh_host_ed25519_key");

    // A baked machine-id.
    let img = copy(&good.img, d.path(), "machine-id.img");
    ext4_write(
        &img,
        l.root_start,
        "/etc/machine-id",
        "0123456789abcdef0123456789abcdef\n",
        d.path(),
    );
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(kinds(&f), [FindingKind::MachineId], "{f:#?}");

    // cmdline.txt naming another disk, and one with two lines.
    let img = copy(&good.img, d.path(), "cmdline.img");
    fat_edit(
        &img,
        l.boot_start,
        l.boot_len,
        "cmdline.txt",
        Some(&cmdline("deadbeef-02")),
    );
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(kinds(&f), [FindingKind::Cmdline], "{f:#?}");
    assert!(f[0].message.contains("root=PARTUUID=deadbeef-02"), "{f:#?}");
    let two = format!(
        "{}quiet\n",
        fat_read(&img, l.boot_start, l.boot_len, "cmdline.txt").replace("deadbeef", "5eedb00c")
    );
    fat_edit(&img, l.boot_start, l.boot_len, "cmdline.txt", Some(&two));
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(kinds(&f), [FindingKind::Cmdline], "{f:#?}");
    assert!(f[0].message.contains("single line"), "{f:#?}");

    // Damaged filesystems: a clobbered FAT and a clobbered ext4 inode table region.
    let img = copy(&good.img, d.path(), "broken.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        // Second FAT copy differs from the first: fsck.vfat notices.
        let mut bs = [0u8; 512];
        f.read_exact_at(&mut bs, l.boot_start).unwrap();
        let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
        let fat_sectors = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
        let fat2 = l.boot_start + (reserved + fat_sectors) * 512 + 8;
        f.write_all_at(&[0x12, 0x34, 0x56, 0x07], fat2).unwrap();
        // Root directory inode (2) mode zeroed: e2fsck notices.
        let stats = run(Command::new("debugfs").args([
            "-R",
            "imap <2>",
            &format!("{}?offset={}", img.display(), l.root_start),
        ]));
        let loc: u64 = stats
            .split("located at block ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("{stats}"));
        let off: u64 = stats
            .split("offset 0x")
            .nth(1)
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
            .unwrap_or_else(|| panic!("{stats}"));
        f.write_all_at(&[0, 0], l.root_start + loc * 4096 + off)
            .unwrap();
    }
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(
        kinds(&f),
        [FindingKind::BootFilesystem, FindingKind::RootFilesystem],
        "{f:#?}"
    );
    assert!(
        f[0].message.contains("fsck.vfat") && f[1].message.contains("e2fsck"),
        "{f:#?}"
    );

    // Not an image at all.
    let junk = d.path().join("junk.img");
    std::fs::write(&junk, vec![1u8; 1 << 20]).unwrap();
    let f = verify_image(&junk, &work).unwrap();
    assert_eq!(kinds(&f), [FindingKind::PartitionTable], "{f:#?}");
}

/// Creates or replaces a file on the image's FAT partition.
fn fat_put(img: &Path, start: u64, len: u64, path: &str, content: &[u8]) {
    with_fat(img, start, len, |root| {
        let mut file = root.create_file(path).unwrap();
        file.truncate().unwrap();
        file.write_all(content).unwrap();
    });
}

/// An initramfs (gzip newc) that loads `listed` early and holds `present`.
fn initrd(listed: &[&str], present: &[&str]) -> Vec<u8> {
    let modules: String = listed.iter().map(|m| format!("{m}\n")).collect();
    let paths: Vec<String> = present
        .iter()
        .map(|m| format!("usr/lib/modules/7.3/kernel/drivers/{m}.ko.xz"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("conf/modules", modules.as_bytes()),
        (
            "usr/lib/modules/7.3/modules.builtin",
            b"kernel/drivers/pci/controller/pcie-brcmstb.ko\n",
        ),
    ];
    entries.extend(paths.iter().map(|p| (p.as_str(), &b""[..])));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&pibake_image::initramfs::newc(&entries))
        .unwrap();
    gz.finish().unwrap()
}

#[test]
fn pi5_images_need_their_dtbs_kernel_and_early_modules() {
    use pibake_image::pi5::{DTBS, INITRAMFS_MODULES};
    need("fsck.vfat", "dosfstools");
    need("e2fsck", "e2fsprogs");
    let d = tmpdir();
    let work = d.path().join("work");
    let good = build(d.path(), "good", false);
    let l = good.layout;
    let pi5 = copy(&good.img, d.path(), "pi5.img");
    let config = format!("{CONFIG_TXT}[pi5]\ndtoverlay=gpio-shutdown-pi5,debounce=3000\n[all]\n");
    fat_put(
        &pi5,
        l.boot_start,
        l.boot_len,
        "config.txt",
        config.as_bytes(),
    );
    fat_put(
        &pi5,
        l.boot_start,
        l.boot_len,
        "overlays/gpio-shutdown-pi5.dtbo",
        b"dtbo",
    );
    // Claimed, but none of it there: both DTBs, and the test's initrd is no initramfs.
    let f = verify_image(&pi5, &work).unwrap();
    assert_eq!(kinds(&f), [FindingKind::Pi5Boot; 3], "{f:#?}");
    assert_eq!(
        (f[0].location.as_str(), f[1].location.as_str()),
        (DTBS[0], DTBS[1])
    );
    assert!(f[2].message.contains("not a readable initramfs"), "{f:#?}");

    let loadable: Vec<&str> = INITRAMFS_MODULES[1..].to_vec();
    for dtb in DTBS {
        fat_put(&pi5, l.boot_start, l.boot_len, dtb, b"dtb");
    }
    fat_put(
        &pi5,
        l.boot_start,
        l.boot_len,
        "initrd.img-6.12",
        &initrd(&INITRAMFS_MODULES, &loadable),
    );
    let f = verify_image(&pi5, &work).unwrap();
    assert!(
        f.is_empty(),
        "a complete Pi 5 boot partition has findings: {f:#?}"
    );

    // Doctored copies: the D0 tree gone; macb not loaded early; clk-rp1 listed but absent.
    let img = copy(&pi5, d.path(), "no-d0.img");
    fat_edit(&img, l.boot_start, l.boot_len, DTBS[1], None);
    let f = verify_image(&img, &work).unwrap();
    assert_eq!(kinds(&f), [FindingKind::Pi5Boot], "{f:#?}");
    assert_eq!(f[0].location, "bcm2712-d-rpi-5-b.dtb");

    let img = copy(&pi5, d.path(), "no-macb.img");
    let listed: Vec<&str> = INITRAMFS_MODULES
        .iter()
        .copied()
        .filter(|m| *m != "macb")
        .collect();
    let present: Vec<&str> = loadable
        .iter()
        .copied()
        .filter(|m| *m != "clk-rp1")
        .collect();
    fat_put(
        &img,
        l.boot_start,
        l.boot_len,
        "initrd.img-6.12",
        &initrd(&listed, &present),
    );
    let f = verify_image(&img, &work).unwrap();
    let messages: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "module clk-rp1 is neither in it nor built in",
            "conf/modules does not load macb early"
        ],
        "{f:#?}"
    );

    // A Pi 4 image (no [pi5] section) is not asked for any of it.
    let f = verify_image(&good.img, &work).unwrap();
    assert!(f.is_empty(), "{f:#?}");
}

/// A fake x86-64 PE/COFF image (what `efi::is_pe_x86_64` looks for).
fn pe(machine: u16) -> Vec<u8> {
    let mut b = vec![0u8; 0x100];
    b[..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    b
}

/// A GPT image whose FAT is an ESP as pibake writes a pc-efi one.
fn build_efi(dir: &Path) -> pibake_image::assemble::ImageOutputs {
    use pibake_image::assemble::{assemble, AssembleSpec};
    use pibake_image::efi::{self, LoaderEntry};
    use pibake_image::{Content, Entry, EntryPath, Layer, Rootfs, SourceDateEpoch};
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let tarp = work.join("base.tar");
    base_tar(&tarp);
    let ids = ids(true);
    let esp = |f: &str| p(&format!("{}/{f}", efi::ESP_DIR));
    let entry = LoaderEntry {
        title: "Debian (test)".into(),
        linux: "/vmlinuz-7.3-amd64".into(),
        initrd: vec!["/initrd.img-7.3-amd64".into()],
        options: format!(
            "root=PARTUUID={} rootfstype=ext4 rw",
            ids.table.root_partuuid()
        ),
    };
    let file = |path: EntryPath, bytes: Vec<u8>| Entry::file(path, Content::bytes(bytes), 0o644);
    let mut rootfs = Rootfs::from_base_tar(&tarp, &work).unwrap();
    rootfs.apply_layer(&Layer {
        name: "esp".into(),
        entries: vec![
            Entry::dir(p(efi::ESP_DIR), 0o755),
            Entry::dir(esp("EFI"), 0o755),
            Entry::dir(esp("EFI/BOOT"), 0o755),
            Entry::dir(esp("EFI/systemd"), 0o755),
            Entry::dir(esp("loader"), 0o755),
            Entry::dir(esp(efi::ENTRIES_DIR), 0o755),
            file(esp(efi::REMOVABLE_LOADER), pe(0x8664)),
            file(esp(efi::SYSTEMD_BOOT), pe(0x8664)),
            file(esp(efi::LOADER_CONF), efi::loader_conf().into_bytes()),
            file(esp(&efi::entry_path()), entry.render().into_bytes()),
            file(esp("vmlinuz-7.3-amd64"), pe(0x8664)),
            file(esp("initrd.img-7.3-amd64"), b"initrd".to_vec()),
        ],
    });
    let mut spec = AssembleSpec::new("efi", dir, &work, ids, SourceDateEpoch(EPOCH));
    spec.boot_dir = p(efi::ESP_DIR);
    spec.boot_size = 64 << 20;
    spec.root_min_free = 8 << 20;
    assemble(&mut rootfs, &spec).unwrap()
}

#[test]
fn efi_images_need_the_removable_loader_and_an_entry_that_boots() {
    use pibake_image::efi;
    need("fsck.vfat", "dosfstools");
    need("e2fsck", "e2fsprogs");
    let d = tmpdir();
    let work = d.path().join("work");
    let good = build_efi(d.path());
    let l = good.layout;
    let f = verify_image(&good.img, &work).unwrap();
    assert!(f.is_empty(), "our pc-efi image has findings: {f:#?}");
    // The ESP is partition 1 of type EFI System; the loader reads from it.
    assert_eq!(
        fat_read(&good.img, l.boot_start, l.boot_len, efi::LOADER_CONF),
        efi::loader_conf()
    );

    // Doctored copies, each with exactly its finding.
    let cases: [(&str, &str, Option<Vec<u8>>, &str); 5] = [
        ("no-removable", efi::REMOVABLE_LOADER, None, "removable path"),
        ("arm-loader", efi::REMOVABLE_LOADER, Some(pe(0xaa64)), "not an x86-64"),
        ("no-initrd", "initrd.img-7.3-amd64", None, "initrd /initrd.img-7.3-amd64"),
        (
            "wrong-root",
            "loader/entries/pibake.conf",
            Some(b"linux /vmlinuz-7.3-amd64\noptions root=PARTUUID=00000000-0000-4000-8000-000000000000\n".to_vec()),
            "matches no partition",
        ),
        ("no-loader-conf", efi::LOADER_CONF, None, "systemd-boot shows a menu"),
    ];
    for (name, path, content, says) in cases {
        let img = copy(&good.img, d.path(), &format!("{name}.img"));
        match content {
            None => with_fat(&img, l.boot_start, l.boot_len, |root| {
                root.remove(path).unwrap()
            }),
            Some(bytes) => fat_put(&img, l.boot_start, l.boot_len, path, &bytes),
        }
        let f = verify_image(&img, &work).unwrap();
        assert_eq!(kinds(&f), [FindingKind::EfiBoot], "{name}: {f:#?}");
        assert!(f[0].message.contains(says), "{name}: {f:#?}");
    }
}
