//! Small Pi-shaped test images (MBR, FAT partition 1 made by mkfs.vfat, a mostly empty
//! partition 2 with a few patterned blocks), bmaps by `bmaptool create`, loop-device guards.
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
    // Root: 1 MiB of data at the start, 64 KiB in the middle, the rest a hole.
    w.seek(SeekFrom::Start(layout.root_start))?;
    w.write_all(&pattern(1, MIB as usize))?;
    w.seek(SeekFrom::Start(layout.root_start + 4 * MIB))?;
    w.write_all(&pattern(2, 64 << 10))?;
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
