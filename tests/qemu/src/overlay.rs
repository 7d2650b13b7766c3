//! The copy-on-write disk of one VM: a qcow2 overlay on the built raw image.
//! The built image is only ever read. Boot-partition edits before boot are
//! made on a copy of the FAT partition and written into the overlay with
//! `qemu-io`; after power-off the overlay is converted to a raw snapshot that
//! [`RawDisk`] reads.

use crate::disk::{partitions, Fat, RawDisk, TABLE_BYTES};
use crate::tool::{self, QEMU_IMG, QEMU_IO};
use crate::{io_err, HarnessError, Result};
use std::path::{Path, PathBuf};

/// A qcow2 overlay backed by a raw image.
#[derive(Debug)]
pub struct Overlay {
    base: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl Overlay {
    /// Creates `<dir>/<name>.qcow2` on `base`, `grow_bytes` larger than the
    /// base so the agent has a card to grow the root onto.
    pub fn create(base: &Path, dir: &Path, name: &str, grow_bytes: u64) -> Result<Self> {
        let base = base.canonicalize().map_err(io_err(base))?;
        let size = std::fs::metadata(&base).map_err(io_err(&base))?.len() + grow_bytes;
        let path = dir.join(format!("{name}.qcow2"));
        tool::run(
            QEMU_IMG
                .command()?
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&base)
                .arg(&path)
                .arg(size.to_string()),
        )?;
        Ok(Overlay {
            base,
            path,
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Writes files into the boot partition of the overlay (before boot):
    /// the FAT partition is copied out of the current disk, edited with
    /// mtools, and written back over the same bytes of the overlay.
    pub fn write_boot_files(&self, files: &[(&str, &[u8])]) -> Result<()> {
        let table_path = self.dir.join("boot-edit.table");
        self.extract(0, TABLE_BYTES, &table_path)?;
        let table = std::fs::File::open(&table_path).map_err(io_err(&table_path))?;
        let parts = partitions(table).map_err(|why| HarnessError::Partitions {
            path: self.path.clone(),
            why,
        })?;
        std::fs::remove_file(&table_path).map_err(io_err(&table_path))?;
        let p1 = parts
            .iter()
            .find(|p| p.number == 1)
            .copied()
            .ok_or_else(|| HarnessError::Partitions {
                path: self.path.clone(),
                why: "no partition 1".to_owned(),
            })?;
        let fat_path = self.dir.join("boot-edit.fat");
        self.extract(p1.start, p1.size, &fat_path)?;
        let fat = Fat::whole(&fat_path);
        for (name, content) in files {
            fat.write(name, content)?;
        }
        tool::run(
            QEMU_IO
                .command()?
                .args(["-f", "qcow2", "-c"])
                .arg(format!(
                    "write -q -s {} {} {}",
                    fat_path.display(),
                    p1.start,
                    p1.size
                ))
                .arg(&self.path),
        )?;
        std::fs::remove_file(&fat_path).map_err(io_err(&fat_path))?;
        Ok(())
    }

    /// Copies `len` bytes at `offset` of the overlay's disk into a raw file.
    fn extract(&self, offset: u64, len: u64, out: &Path) -> Result<()> {
        // The largest block size up to 1 MiB that divides both.
        let mut bs: u64 = 1 << 20;
        while bs > 512 && (offset % bs != 0 || len % bs != 0) {
            bs /= 2;
        }
        if offset % bs != 0 || len % bs != 0 {
            return Err(HarnessError::Invalid(format!(
                "{}: range {offset}+{len} is not sector aligned",
                self.path.display()
            )));
        }
        let _ = std::fs::remove_file(out);
        tool::run(
            QEMU_IMG
                .command()?
                .args(["dd", "-f", "qcow2", "-O", "raw"])
                .arg(format!("bs={bs}"))
                .arg(format!("skip={}", offset / bs))
                .arg(format!("count={}", len / bs))
                .arg(format!("if={}", self.path.display()))
                .arg(format!("of={}", out.display())),
        )?;
        Ok(())
    }

    /// Converts the overlay's current disk to a sparse raw file
    /// `<dir>/<label>.raw` (only while no VM runs on it).
    pub fn snapshot(&self, label: &str) -> Result<PathBuf> {
        let out = self.dir.join(format!("{label}.raw"));
        tool::run(
            QEMU_IMG
                .command()?
                .args(["convert", "-f", "qcow2", "-O", "raw"])
                .arg(&self.path)
                .arg(&out),
        )?;
        Ok(out)
    }

    /// A raw snapshot opened for reading, its root journal replayed (as the
    /// next boot would) if the VM lost power.
    pub fn disk(&self, label: &str) -> Result<RawDisk> {
        let disk = RawDisk::open(&self.snapshot(label)?)?;
        if disk.replay_root_journal()? {
            eprintln!("{label}: root journal replayed (e2fsck -E journal_only)");
        }
        Ok(disk)
    }
}
