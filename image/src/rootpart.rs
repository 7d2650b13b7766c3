//! The root partition as a part of its own. It is made once (the root tar, then `mke2fs -d`
//! into a file of its own) and scanned once: its mapped blocks with their sha256s, its zero
//! blocks punched out, and one zstd frame of its bytes. After that every image whose root is
//! the same reuses it as bytes ([`crate::assemble::compose`]), so a node's change, which
//! touches only the boot partition, re-makes nothing of the root.
//!
//! A from-scratch [`crate::assemble::assemble`] makes its root through [`make`] too, so a
//! composed image and a from-scratch one are the same bytes by construction.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::assemble::{ioe, scan_region, AssembleError, AssembleSpec, MappedRange};
use crate::ext4::{self, Ext4Spec};
use crate::table;
use crate::tar::{Rootfs, TarStats};

/// Version of [`RootPartMeta`]; a stored part of another format is made again.
pub const PART_FORMAT: u32 = 1;

/// What a made root partition is, besides its bytes and its zstd frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootPartMeta {
    pub format: u32,
    /// Bytes of the partition: the layout's `root_len`.
    pub len: u64,
    /// Its non-zero [`crate::assemble::BMAP_BLOCK`] blocks, numbered from the partition's
    /// start.
    pub ranges: Vec<MappedRange>,
    /// The root tar it was made from.
    pub tar: TarStats,
}

/// A made root partition: its bytes (a sparse file of exactly `meta.len` bytes), one zstd
/// frame of them, and what it is.
#[derive(Clone, Copy, Debug)]
pub struct RootPart<'a> {
    pub ext4: &'a Path,
    pub zst: &'a Path,
    pub meta: &'a RootPartMeta,
}

/// Makes the root partition of `rootfs` (whose boot directory is already split off) into
/// `ext4_out` (created or truncated) and its zstd frame into `zst_out`.
pub fn make(
    rootfs: &mut Rootfs,
    spec: &AssembleSpec,
    ext4_out: &Path,
    zst_out: &File,
) -> Result<RootPartMeta, AssembleError> {
    let tar_tmp = tempfile::Builder::new()
        .prefix("pibake-root.")
        .suffix(".tar")
        .tempfile_in(&spec.work_dir)
        .map_err(ioe("cannot create the root tar", &spec.work_dir))?;
    let stats = {
        let mut w = BufWriter::with_capacity(1 << 20, tar_tmp.as_file());
        let s = rootfs.write_tar(&mut w, spec.epoch)?;
        w.flush()
            .map_err(ioe("cannot write the root tar", tar_tmp.path()))?;
        s
    };
    let root_bytes = ext4::size_for(&stats, spec.root_headroom_percent, spec.root_min_free);
    let len = table::layout(spec.boot_size, root_bytes, spec.is_gpt()).root_len;
    // Read too: the scan reads it back.
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(ext4_out)
        .map_err(ioe("cannot create the root partition", ext4_out))?;
    out.set_len(len)
        .map_err(ioe("cannot size the root partition", ext4_out))?;
    let ext = Ext4Spec {
        size_bytes: len,
        uuid: spec.ids.fs_uuid,
        hash_seed: spec.ids.hash_seed,
        label: spec.root_label.clone(),
        epoch: spec.epoch,
        inodes: ext4::inodes_for(&stats, len),
    };
    ext4::make_ext4(tar_tmp.path(), ext4_out, 0, &ext, &spec.work_dir)?;
    drop(tar_tmp);
    let ranges = finish(&out, len, zst_out, spec.zstd_level)
        .map_err(ioe("cannot scan and compress the root partition", ext4_out))?;
    Ok(RootPartMeta {
        format: PART_FORMAT,
        len,
        ranges,
        tar: stats,
    })
}

/// Scans the made partition once: its ranges and zstd frame; then punches out its zero
/// blocks, so that it is sparse and copying its data extents copies only mapped blocks.
fn finish(part: &File, len: u64, zst: &File, level: i32) -> io::Result<Vec<MappedRange>> {
    let mut w = BufWriter::with_capacity(1 << 20, zst);
    let (ranges, holes) = scan_region(part, 0, len, &mut w, level)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    crate::assemble::punch(part, &holes)?;
    part.sync_all()?;
    Ok(ranges)
}

/// Copies the data extents of `src` (found with SEEK_DATA / SEEK_HOLE) into `dst` at
/// `offset`, in the kernel (copy_file_range) where it can: holes stay holes, and nothing of
/// the partition passes through this process.
pub fn copy_sparse(src: &File, dst: &File, offset: u64) -> io::Result<u64> {
    use rustix::fs::SeekFrom;
    let len = src.metadata()?.len();
    let mut at = 0u64;
    let mut copied = 0u64;
    while at < len {
        let start = match rustix::fs::seek(src.as_fd(), SeekFrom::Data(at)) {
            Ok(s) => s,
            // ENXIO: no data after `at`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(src.as_fd(), SeekFrom::Hole(start))?.min(len);
        copied += copy_range(src, dst, start, end, offset)?;
        at = end;
    }
    Ok(copied)
}

/// `src[start..end]` into `dst` at `offset + start`: copy_file_range, or, where the kernel
/// refuses it (the store and the output on two filesystems: EXDEV since Linux 5.19; a
/// filesystem without it), the same bytes through a buffer.
fn copy_range(src: &File, dst: &File, start: u64, end: u64, offset: u64) -> io::Result<u64> {
    use rustix::io::Errno;
    let (mut off_in, mut off_out) = (start, offset + start);
    while off_in < end {
        let want = usize::try_from(end - off_in).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(
            src.as_fd(),
            Some(&mut off_in),
            dst.as_fd(),
            Some(&mut off_out),
            want,
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the root partition ended early",
                ))
            }
            Ok(_) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                copy_through_buffer(src, dst, off_in, end, off_out)?;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(end - start)
}

fn copy_through_buffer(src: &File, dst: &File, from: u64, end: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4 << 20];
    let (mut at, mut out) = (from, to);
    while at < end {
        let n = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        src.read_exact_at(&mut buf[..n], at)?;
        dst.write_all_at(&buf[..n], out)?;
        at += n as u64;
        out += n as u64;
    }
    Ok(())
}
