//! Small Pi-shaped test images (MBR, FAT partition 1 made by mkfs.vfat, a mostly empty
//! partition 2 with a few patterned blocks; pibake-shaped ones with the node table on the FAT
//! and an ext4 root), a pc-efi-shaped one (GPT, FAT32 ESP), bmaps by `bmaptool create`,
//! loop-device guards.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use pibake_image::table::{self, DiskId, Layout, TableSpec};

pub const MIB: u64 = 1 << 20;

/// Runs a tool; a missing tool fails with what to install.
pub fn run(cmd: &str, args: &[&str], pkg: &str) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}: install the Debian package {pkg}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deterministic non-zero bytes (a simple LCG): no randomness in fixtures.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((x >> 24) as u8) | 1
        })
        .collect()
}

#[derive(Debug)]
pub struct TestImage {
    pub img: PathBuf,
    pub layout: Layout,
}

/// A 4 MiB + 8 MiB boot (FAT16 by mkfs.vfat, with `config.txt`) + 8 MiB root image, of which
/// about 1.3 MiB is non-zero.
pub fn make_image(dir: &Path, name: &str, config_txt: &str) -> Result<TestImage> {
    make_image_with_root(dir, name, config_txt, &[], &mut |f, layout| {
        // Root: 1 MiB of data at the start, 64 KiB in the middle, the rest a hole.
        let mut w = f;
        w.seek(SeekFrom::Start(layout.root_start))?;
        w.write_all(&pattern(1, MIB as usize))?;
        w.seek(SeekFrom::Start(layout.root_start + 4 * MIB))?;
        w.write_all(&pattern(2, 64 << 10))?;
        Ok(())
    })
}

/// [`make_image`] with `boot_files` (name, content) also on the FAT and partition 2 written by
/// `root` into the image file (holes elsewhere).
pub fn make_image_with_root(
    dir: &Path,
    name: &str,
    config_txt: &str,
    boot_files: &[(&str, &str)],
    root: &mut dyn FnMut(&File, &Layout) -> Result<()>,
) -> Result<TestImage> {
    let layout = table::layout(8 * MIB, 8 * MIB, false);
    let img = dir.join(format!("{name}.img"));
    let fat = dir.join(format!("{name}.fat"));
    File::create(&fat)?.set_len(layout.boot_len)?;
    let fat_s = fat.to_string_lossy().into_owned();
    run(
        "mkfs.vfat",
        &["-i", "12345678", "-n", "BOOTFS", &fat_s],
        "dosfstools",
    )?;
    let cfg = dir.join("config.txt");
    std::fs::write(&cfg, config_txt)?;
    run(
        "mcopy",
        &["-i", &fat_s, &cfg.to_string_lossy(), "::config.txt"],
        "mtools",
    )?;
    std::fs::write(&cfg, "console=tty1 root=PARTUUID=c0ffee00-02 rootwait\n")?;
    run(
        "mcopy",
        &["-i", &fat_s, &cfg.to_string_lossy(), "::cmdline.txt"],
        "mtools",
    )?;
    let src = dir.join(format!("{name}.src"));
    for (file, content) in boot_files {
        std::fs::write(&src, content)?;
        run(
            "mcopy",
            &["-i", &fat_s, &src.to_string_lossy(), &format!("::{file}")],
            "mtools",
        )?;
    }
    if src.exists() {
        std::fs::remove_file(&src)?;
    }
    let f = File::create(&img)?;
    f.set_len(layout.disk_len)?;
    table::write_table(
        &mut &f,
        &TableSpec::Mbr {
            disk_id: DiskId(0xc0ffee00),
        },
        &layout,
    )?;
    let mut w = &f;
    w.seek(SeekFrom::Start(layout.boot_start))?;
    w.write_all(&std::fs::read(&fat)?)?;
    std::fs::remove_file(&fat)?;
    root(&f, &layout)?;
    f.sync_all()?;
    Ok(TestImage { img, layout })
}

/// `bmaptool create -o <img>.bmap <img>`.
pub fn bmaptool_create(img: &Path) -> Result<PathBuf> {
    let bmap = PathBuf::from(format!("{}.bmap", img.display()));
    run(
        "bmaptool",
        &[
            "create",
            "-o",
            &bmap.to_string_lossy(),
            &img.to_string_lossy(),
        ],
        "bmap-tools",
    )?;
    Ok(bmap)
}

pub fn read_range(path: &Path, start: u64, len: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v)?;
    Ok(v)
}

/// Flips one byte of `path` at `at` (through the page cache, like a bad write would look).
pub fn flip_byte(path: &Path, at: u64) -> std::io::Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&b)?;
    f.sync_all()
}

/// A file on the FAT partition of `disk` (image, file or device), read with mtools.
pub fn mtype(disk: &Path, boot_start: u64, file: &str) -> Result<String> {
    let spec = format!("{}@@{boot_start}", disk.display());
    run("mtype", &["-i", &spec, &format!("::{file}")], "mtools")
}

/// A loop device over a file, detached on drop (also when a test panics).
#[derive(Debug)]
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    pub fn attach(file: &Path) -> Result<Self> {
        let out = run(
            "losetup",
            &["-f", "--show", &file.to_string_lossy()],
            "mount (losetup)",
        )?;
        Ok(Self {
            dev: PathBuf::from(out.trim()),
        })
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mount, unmounted on drop before the loop device goes.
#[derive(Debug)]
pub struct Mounted {
    pub dir: PathBuf,
}

impl Mounted {
    pub fn mount(dev: &Path, dir: &Path) -> Result<Self> {
        run(
            "mount",
            &[&dev.to_string_lossy(), &dir.to_string_lossy()],
            "mount",
        )?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

pub fn sparse_file(path: &Path, len: u64) -> Result<()> {
    File::create(path)?.set_len(len)?;
    Ok(())
}

/// A node table for `role` serving `nodes`, written by the agent's own definition (what the
/// builder puts on the boot partition as `pibake-nodes.toml`).
pub fn node_table(role: &str, nodes: &[&str]) -> String {
    use pibake_firstboot::table::{
        ClockLimits, NodeEntry, NodeFile, NodeTable, Swarm, SwarmRole, TABLE_FORMAT,
    };
    let table = NodeTable {
        format: TABLE_FORMAT,
        cluster: "lab".into(),
        domain: "lab.example".into(),
        role: role.into(),
        build_epoch: 1_700_000_000,
        interface: "eth0".into(),
        clock: ClockLimits {
            max_offset_ms: 100,
            max_root_distance_ms: 1000,
            wait_seconds: 600,
        },
        swarm: Swarm {
            join: vec![std::net::Ipv4Addr::new(192, 168, 188, 10)],
            wait_seconds: 900,
            stacks: vec![],
            preloaded_stacks: vec![],
            images: vec![],
        },
        nodes: nodes
            .iter()
            .zip(20u8..)
            .map(|(n, a)| {
                let entry = NodeEntry {
                    address: std::net::Ipv4Addr::new(192, 168, 188, a),
                    mac: None,
                    serial: None,
                    swarm_role: SwarmRole::Worker,
                    files: vec![NodeFile {
                        path: "/etc/hostname".into(),
                        mode: 0o644,
                        content: format!("{n}\n"),
                    }],
                };
                ((*n).to_owned(), entry)
            })
            .collect(),
    };
    table.to_toml().expect("a node table serializes")
}

/// The node table's name on the boot partition (the agent's `bootfiles::TABLE_FILE`).
pub const TABLE_FILE: &str = pibake_firstboot::bootfiles::TABLE_FILE;

/// Like [`make_image`], but shaped as a pibake image is: `table` on the FAT as
/// [`TABLE_FILE`] (`None` leaves the table out), partition 2 an ext4 filesystem made by
/// `mke2fs -d`.
pub fn make_pibake_image(dir: &Path, name: &str, table: Option<&str>) -> Result<TestImage> {
    let boot: Vec<(&str, &str)> = table.map(|t| (TABLE_FILE, t)).into_iter().collect();
    make_image_with_root(dir, name, "arm_64bit=1\n", &boot, &mut |f, layout| {
        write_ext4_root(dir, name, None, f, layout)
    })
}

/// An image as pibake built them before the node table moved to the boot partition:
/// `table` only in the ext4 root, as `/etc/pibake/nodes.toml`.
pub fn make_old_pibake_image(dir: &Path, name: &str, table: &str) -> Result<TestImage> {
    make_image_with_root(dir, name, "arm_64bit=1\n", &[], &mut |f, layout| {
        write_ext4_root(dir, name, Some(table), f, layout)
    })
}

/// Partition 2 of `f`: an ext4 filesystem (made by `mke2fs -d`) holding `/etc/hostname` and,
/// with `old_table`, `/etc/pibake/nodes.toml` (where images had their table before it moved
/// to the boot partition), written sparsely.
fn write_ext4_root(
    dir: &Path,
    name: &str,
    old_table: Option<&str>,
    f: &File,
    layout: &Layout,
) -> Result<()> {
    let tree = dir.join(format!("{name}.root"));
    std::fs::create_dir_all(tree.join("etc/pibake"))?;
    std::fs::write(tree.join("etc/hostname"), "localhost\n")?;
    if let Some(table) = old_table {
        std::fs::write(tree.join("etc/pibake/nodes.toml"), table)?;
    }
    let fs = dir.join(format!("{name}.ext4"));
    File::create(&fs)?.set_len(layout.root_len)?;
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            &tree.to_string_lossy(),
            &fs.to_string_lossy(),
        ],
        "e2fsprogs",
    )?;
    // Non-zero blocks only, so the image stays sparse like a built one.
    let bytes = std::fs::read(&fs)?;
    let mut w = f;
    for (i, blk) in bytes.chunks(4096).enumerate() {
        if blk.iter().any(|&b| b != 0) {
            w.seek(SeekFrom::Start(layout.root_start + (i * 4096) as u64))?;
            w.write_all(blk)?;
        }
    }
    std::fs::remove_file(&fs)?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// The loader a [`make_pc_efi_image`] carries on its ESP.
pub const FAKE_LOADER: &str = "fake systemd-boot\n";

/// A pc-efi-shaped image: GPT with the builder's ids, partition 1 the EFI system partition
/// (FAT32 by `mkfs.vfat -F 32`, 36 MiB: FAT32's cluster minimum at 512-byte clusters, with
/// `EFI/BOOT/BOOTX64.EFI`, `loader/loader.conf` and `table` as [`TABLE_FILE`], as
/// [`make_pibake_image`]'s), partition 2 ext4, the backup GPT in the spare 4 MiB at the end.
pub fn make_pc_efi_image(dir: &Path, name: &str, table: Option<&str>) -> Result<TestImage> {
    use pibake_image::assemble::{ImageIds, TableKind};
    let layout = table::layout(36 * MIB, 8 * MIB, true);
    let img = dir.join(format!("{name}.img"));
    let fat = dir.join(format!("{name}.fat"));
    File::create(&fat)?.set_len(layout.boot_len)?;
    let fat_s = fat.to_string_lossy().into_owned();
    run(
        "mkfs.vfat",
        &["-F", "32", "-s", "1", "-i", "12345678", "-n", "ESP", &fat_s],
        "dosfstools",
    )?;
    for d in ["::EFI", "::EFI/BOOT", "::loader"] {
        run("mmd", &["-i", &fat_s, d], "mtools")?;
    }
    let src = dir.join(format!("{name}.src"));
    let table_to = format!("::{TABLE_FILE}");
    let mut files = vec![
        (FAKE_LOADER, "::EFI/BOOT/BOOTX64.EFI"),
        (
            "default pibake.conf\ntimeout 0\neditor no\n",
            "::loader/loader.conf",
        ),
    ];
    files.extend(table.map(|t| (t, table_to.as_str())));
    for (content, to) in files {
        std::fs::write(&src, content)?;
        run(
            "mcopy",
            &["-i", &fat_s, &src.to_string_lossy(), to],
            "mtools",
        )?;
    }
    std::fs::remove_file(&src)?;
    let f = File::create(&img)?;
    f.set_len(layout.disk_len)?;
    let ids = ImageIds::from_input_hash(&[5; 32], TableKind::Gpt);
    table::write_table(&mut &f, &ids.table, &layout)?;
    let mut w = &f;
    w.seek(SeekFrom::Start(layout.boot_start))?;
    w.write_all(&std::fs::read(&fat)?)?;
    std::fs::remove_file(&fat)?;
    write_ext4_root(dir, name, None, &f, &layout)?;
    f.sync_all()?;
    Ok(TestImage { img, layout })
}

/// `zstd -q <img> -o <img>.zst`.
pub fn zstd(img: &Path) -> Result<PathBuf> {
    let zst = PathBuf::from(format!("{}.zst", img.display()));
    run(
        "zstd",
        &[
            "-q",
            "-f",
            &img.to_string_lossy(),
            "-o",
            &zst.to_string_lossy(),
        ],
        "zstd",
    )?;
    Ok(zst)
}

/// The `<stem>.manifest.json` a build writes beside `<stem>.img` (the fields flash reads):
/// the image's sha256, its role and the nodes its table serves.
pub fn write_manifest(img: &Path, role: &str, nodes: &[&str]) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let name = img
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".img").unwrap_or(&name).to_owned();
    let path = img.with_file_name(format!("{stem}.manifest.json"));
    let sha256 = hex::encode(Sha256::digest(std::fs::read(img)?));
    let json = serde_json::json!({
        "format": 1,
        "name": stem,
        "role": role,
        "node": null,
        "nodes": nodes,
        "sha256": sha256,
        "packages": {},
        "boot": {},
        "files": [],
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
    Ok(path)
}
