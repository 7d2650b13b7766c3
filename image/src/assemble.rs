//! Assembly of one disk image: partition table + FAT32 boot + ext4 root into a sparse
//! `.img`, then `.bmap` (bmaptool format 2.0), `.img.zst` (multithreaded zstd) and `.sha256`.
//! Every output is written to a temp file beside it and renamed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::{self, AtomicError};
use crate::ext4::Ext4Error;
use crate::fat::{self, FatError, FatSpec, VolumeLabel};
use crate::path::EntryPath;
use crate::rootpart::{self, RootPart};
use crate::table::{self, Guid, Layout, TableError, TableSpec};
use crate::tar::{Rootfs, SourceDateEpoch, TarError, TarStats};
use crate::tree::{Entry, EntryKind, Tree};

/// Block size of the `.bmap` and of the zero-block scan that makes the image sparse.
pub const BMAP_BLOCK: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot write the root tar")]
    Tar(#[from] TarError),
    #[error("cannot write the partition table")]
    Table(#[from] TableError),
    #[error("cannot write the boot partition")]
    Fat(#[from] FatError),
    #[error("cannot make the root filesystem")]
    Ext4(#[from] Ext4Error),
    #[error(transparent)]
    Atomic(#[from] AtomicError),
    #[error("the stored root partition has {len} bytes, but the layout gives it {layout}: it was made for another boot size or table")]
    PartSize { len: u64, layout: u64 },
    #[error("{what} ({path})")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn ioe<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> AssembleError + 'a {
    move |source| AssembleError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Identifiers that end up in the image; the caller derives them from the image's input hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageIds {
    pub table: TableSpec,
    pub fat_volume_id: u32,
    pub fs_uuid: Guid,
    pub hash_seed: Guid,
}

/// Which partition table to write (also the cluster file's `[image] table`,
/// `mbr` or `gpt`: the model uses this type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    #[default]
    Mbr,
    Gpt,
}

impl ImageIds {
    /// Derives every identifier from the image's input hash: each is the SHA-256 of the hash
    /// and a fixed purpose string, so ids are stable per input and distinct per purpose.
    pub fn from_input_hash(input: &[u8; 32], table: TableKind) -> Self {
        let d = |purpose: &str| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(b"pibake-image-id\0");
            h.update(purpose.as_bytes());
            h.update(b"\0");
            h.update(input);
            h.finalize().into()
        };
        let guid = |purpose: &str| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&d(purpose)[..16]);
            Guid::from_hash(b)
        };
        let word = |purpose: &str| {
            let v = d(purpose);
            u32::from_le_bytes([v[0], v[1], v[2], v[3]])
        };
        let table = match table {
            TableKind::Mbr => TableSpec::Mbr {
                disk_id: crate::table::DiskId(word("mbr disk id")),
            },
            TableKind::Gpt => TableSpec::Gpt {
                disk: guid("gpt disk"),
                boot: guid("gpt boot"),
                root: guid("gpt root"),
            },
        };
        Self {
            table,
            fat_volume_id: word("fat volume id"),
            fs_uuid: guid("ext4 uuid"),
            hash_seed: guid("ext4 hash seed"),
        }
    }
}

/// Everything `assemble` needs besides the tree.
#[derive(Clone, Debug)]
pub struct AssembleSpec {
    /// Output file stem: `<out_dir>/<name>.img`, `.img.zst`, `.bmap`, `.sha256`.
    pub name: String,
    pub out_dir: PathBuf,
    /// For the temporary root tar and mke2fs.conf (not inside `out_dir`).
    pub work_dir: PathBuf,
    pub ids: ImageIds,
    pub epoch: SourceDateEpoch,
    pub boot_size: u64,
    /// The tree's directory that becomes the FAT partition: [`boot_dir`] on a Pi,
    /// [`crate::efi::ESP_DIR`] on pc-efi.
    pub boot_dir: EntryPath,
    pub boot_label: VolumeLabel,
    pub root_label: String,
    /// Free space in the root filesystem beyond its content: percent of content + bytes.
    pub root_headroom_percent: u64,
    pub root_min_free: u64,
    pub zstd_level: i32,
}

impl AssembleSpec {
    /// Whether the image gets a GPT (else an MBR).
    pub fn is_gpt(&self) -> bool {
        matches!(self.ids.table, TableSpec::Gpt { .. })
    }

    /// Defaults like Raspberry Pi OS: 256 MiB boot, labels bootfs/rootfs.
    pub fn new(
        name: &str,
        out_dir: &Path,
        work_dir: &Path,
        ids: ImageIds,
        epoch: SourceDateEpoch,
    ) -> Self {
        Self {
            name: name.to_owned(),
            out_dir: out_dir.to_owned(),
            work_dir: work_dir.to_owned(),
            ids,
            epoch,
            boot_size: 256 << 20,
            boot_dir: boot_dir(),
            boot_label: VolumeLabel::BOOTFS,
            root_label: "rootfs".to_owned(),
            root_headroom_percent: 20,
            root_min_free: 128 << 20,
            zstd_level: 3,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOutputs {
    pub img: PathBuf,
    pub zst: PathBuf,
    pub bmap: PathBuf,
    pub sha256_file: PathBuf,
    /// Hex SHA-256 of the whole `.img`.
    pub sha256: String,
    pub image_bytes: u64,
    /// Bytes in non-zero 4 KiB blocks (what a flasher must write).
    pub mapped_bytes: u64,
    pub layout: Layout,
    pub root_partuuid: String,
    pub root_tar: TarStats,
    /// Wall time of each step, for progress reports and the benchmark.
    pub phases: Vec<(&'static str, std::time::Duration)>,
}

/// The files [`assemble`] writes for image `name`: `.img`, `.img.zst`, `.bmap`, `.sha256`.
pub fn output_paths(out_dir: &Path, name: &str) -> [PathBuf; 4] {
    ["img", "img.zst", "bmap", "sha256"].map(|ext| out_dir.join(format!("{name}.{ext}")))
}

/// Removes the temp files a killed assembly of `name` left in `out_dir` (the temp `.img` is
/// as big as the image), and only those: see [`atomic::remove_stale_temps`].
pub fn remove_stale_temps(out_dir: &Path, name: &str) -> Result<Vec<PathBuf>, AtomicError> {
    let mut removed = Vec::new();
    for p in output_paths(out_dir, name) {
        removed.extend(atomic::remove_stale_temps(&p)?);
    }
    Ok(removed)
}

/// Where a Pi's boot partition files sit in the root tree.
pub fn boot_dir() -> EntryPath {
    EntryPath::trusted("boot/firmware")
}

/// Splits the boot partition's files off `rootfs`: `spec.boot_dir/*` (`boot/firmware/*` on a
/// Pi) goes to the FAT partition, the directory itself stays in the root as the mount point.
pub fn split_boot(rootfs: &mut Rootfs, spec: &AssembleSpec) -> Result<Tree, AssembleError> {
    let bdir = spec.boot_dir.clone();
    let boot = rootfs.split_off(&bdir);
    if rootfs.tree().get(&bdir).is_none() {
        rootfs.apply_layer(&crate::Layer {
            name: "mount point".into(),
            entries: vec![Entry::dir(bdir.clone(), 0o755)],
        });
    }
    if let Some(e) = rootfs.tree().get(&bdir) {
        if e.kind != EntryKind::Dir {
            let p = bdir.to_string();
            return Err(FatError::Unsupported {
                path: p,
                kind: "non-directory at the boot partition's mount point",
            }
            .into());
        }
    }
    Ok(boot)
}

/// Builds the image from `rootfs` from scratch: the boot partition's files are split off
/// ([`split_boot`]), the root partition is made ([`rootpart::make`], in the work dir) and
/// the two are composed ([`compose`]), as a build with a stored root partition does.
/// cmdline.txt and config.txt must already be in the tree (use
/// `spec.ids.table.root_partuuid()` for `root=PARTUUID=`).
pub fn assemble(rootfs: &mut Rootfs, spec: &AssembleSpec) -> Result<ImageOutputs, AssembleError> {
    let started = std::time::Instant::now();
    let boot = split_boot(rootfs, spec)?;
    let temp = |suffix: &str| {
        tempfile::Builder::new()
            .prefix("pibake-root.")
            .suffix(suffix)
            .tempfile_in(&spec.work_dir)
            .map_err(ioe("cannot create a temp file in", &spec.work_dir))
    };
    let (ext4, zst) = (temp(".ext4")?, temp(".zst")?);
    let meta = rootpart::make(rootfs, spec, ext4.path(), zst.as_file())?;
    let made = started.elapsed();
    let part = RootPart {
        ext4: ext4.path(),
        zst: zst.path(),
        meta: &meta,
    };
    let mut out = compose(&boot, rootfs, part, spec)?;
    out.phases
        .insert(0, ("root partition (tar, mke2fs, scan, zstd)", made));
    Ok(out)
}

/// Writes the image of `boot` (the FAT's files, their content read from `src`) and the made
/// root partition `part`: the table and the FAT are written, the partition's data extents
/// copied in; the `.bmap` takes the partition's ranges as they are and the `.img.zst` its
/// zstd frame, between the frames of the bytes before it and after it (a valid zstd stream
/// of concatenated frames); the `.sha256` is of the whole image.
pub fn compose(
    boot: &Tree,
    src: &Rootfs,
    part: RootPart<'_>,
    spec: &AssembleSpec,
) -> Result<ImageOutputs, AssembleError> {
    remove_stale_temps(&spec.out_dir, &spec.name)?;
    let mut clock = std::time::Instant::now();
    let mut phases = Vec::new();
    let mut lap = |name: &'static str| {
        phases.push((name, clock.elapsed()));
        clock = std::time::Instant::now();
    };
    let layout = table::layout(spec.boot_size, part.meta.len, spec.is_gpt());
    if layout.root_len != part.meta.len {
        return Err(AssembleError::PartSize {
            len: part.meta.len,
            layout: layout.root_len,
        });
    }
    // 1. The raw image: a sparse file, table, FAT, the root partition's data.
    let img_path = spec.out_dir.join(format!("{}.img", spec.name));
    let img_tmp = atomic::temp_beside(&img_path)?;
    let f = img_tmp.as_file();
    f.set_len(layout.disk_len)
        .map_err(ioe("cannot size the image", img_tmp.path()))?;
    table::write_table(&mut &*f, &spec.ids.table, &layout)?;
    let fat_spec = FatSpec {
        size_bytes: layout.boot_len,
        volume_id: spec.ids.fat_volume_id,
        label: spec.boot_label,
        epoch: spec.epoch,
    };
    // The FAT is written in memory (a zeroed buffer: pages fatfs never touches are never
    // allocated), then its non-zero blocks into the image, whose region is a hole: the same
    // bytes as writing it in place, without fatfs's many small writes to the file.
    let len = usize::try_from(layout.boot_len).map_err(|_| FatError::TooSmall(layout.boot_len))?;
    let mut fat_bytes = io::Cursor::new(vec![0u8; len]);
    fat::write_fat(&mut fat_bytes, &fat_spec, boot, src)?;
    write_nonzero_blocks(f, layout.boot_start, fat_bytes.get_ref())
        .map_err(ioe("cannot write the boot partition into", img_tmp.path()))?;
    drop(fat_bytes);
    lap("table + FAT");
    let ext4 = File::open(part.ext4).map_err(ioe("cannot open", part.ext4))?;
    rootpart::copy_sparse(&ext4, f, layout.root_start)
        .map_err(ioe("cannot copy the root partition into", img_tmp.path()))?;
    lap("root partition copied");

    // 2. The sha256 of the whole image on its own thread; here the bmap ranges and zstd
    //    frames of the bytes around the root partition, and its stored frame between them.
    let zst_path = spec.out_dir.join(format!("{}.img.zst", spec.name));
    let zst_tmp = atomic::temp_beside(&zst_path)?;
    let root_end = layout.root_start + layout.root_len;
    let (sha256, ranges) = std::thread::scope(|s| -> Result<_, AssembleError> {
        let sha = s.spawn(|| sha256_of(f, layout.disk_len));
        let ranges = (|| -> io::Result<Vec<MappedRange>> {
            let mut w = BufWriter::with_capacity(1 << 20, zst_tmp.as_file());
            let (mut ranges, head_holes) =
                scan_region(f, 0, layout.root_start, &mut w, spec.zstd_level)?;
            io::copy(&mut File::open(part.zst)?, &mut w)?;
            let shift = layout.root_start / BMAP_BLOCK;
            ranges.extend(part.meta.ranges.iter().map(|r| MappedRange {
                first: r.first + shift,
                last: r.last + shift,
                sha256: r.sha256.clone(),
            }));
            let (tail, tail_holes) = if layout.disk_len > root_end {
                scan_region(
                    f,
                    root_end,
                    layout.disk_len - root_end,
                    &mut w,
                    spec.zstd_level,
                )?
            } else {
                (Vec::new(), Vec::new())
            };
            ranges.extend(tail);
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            // Zero blocks written by the table and FAT writers become holes: the .img stays
            // sparse on disk (the root partition's holes were copied as holes).
            punch(f, &head_holes)?;
            punch(f, &tail_holes)?;
            Ok(ranges)
        })()
        .map_err(ioe("cannot scan and compress the image", img_tmp.path()));
        let sha = sha
            .join()
            .map_err(|_| io::Error::other("sha256 thread panicked"))
            .and_then(|r| r)
            .map_err(ioe("cannot hash the image", img_tmp.path()))?;
        Ok((sha, ranges?))
    })?;
    lap("scan, bmap, sha256, zstd");
    let img_name = format!("{}.img", spec.name);
    let bmap_xml = bmap_xml(layout.disk_len, &ranges);
    let sha_line = format!("{sha256}  {img_name}\n");

    atomic::persist(img_tmp, &img_path)?;
    atomic::persist(zst_tmp, &zst_path)?;
    let bmap_path = spec.out_dir.join(format!("{}.bmap", spec.name));
    atomic::write(&bmap_path, bmap_xml.as_bytes())?;
    let sha_path = spec.out_dir.join(format!("{}.sha256", spec.name));
    atomic::write(&sha_path, sha_line.as_bytes())?;
    lap("fsync + rename");

    Ok(ImageOutputs {
        img: img_path,
        zst: zst_path,
        bmap: bmap_path,
        sha256_file: sha_path,
        sha256,
        image_bytes: layout.disk_len,
        mapped_bytes: ranges
            .iter()
            .map(|r| (r.last - r.first + 1) * BMAP_BLOCK)
            .sum(),
        layout,
        root_partuuid: spec.ids.table.root_partuuid(),
        root_tar: part.meta.tar,
        phases,
    })
}

/// A run of non-zero blocks (inclusive block numbers) and the SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedRange {
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .max(1)
}

const CHUNK: usize = 4 << 20;

/// The SHA-256 of `file[0..len]`, read by position (the fd's cursor is shared).
fn sha256_of(file: &File, len: u64) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < len {
        let n = read_full_at(file, &mut buf, at, len)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// Reads `file[at..]` into `buf`, up to `end`; fails on a file shorter than `end`.
fn read_full_at(file: &File, buf: &mut [u8], at: u64, end: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let want = usize::try_from(end - at)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    file.read_exact_at(&mut buf[..want], at)?;
    Ok(want)
}

/// Runs of zero blocks, `[start, end)` in block numbers.
pub(crate) type Holes = Vec<(u64, u64)>;

/// Reads `file[start..start + len]` once (both block-aligned): its mapped ranges (block
/// numbers of the file) and zero runs, and one zstd frame of its bytes written to `zst`
/// (zstd's own workers compress while this thread finds the zero blocks).
pub(crate) fn scan_region(
    file: &File,
    start: u64,
    len: u64,
    zst: &mut impl Write,
    level: i32,
) -> io::Result<(Vec<MappedRange>, Holes)> {
    let mut enc = zstd::Encoder::new(zst, level)?;
    // Multithreaded zstd output is the same for any worker count >= 1.
    enc.multithread(zstd_workers())?;
    enc.include_checksum(true)?;
    let mut ranges: Vec<MappedRange> = Vec::new();
    let mut cur: Option<(u64, Sha256)> = None;
    let mut hole_start: Option<u64> = None;
    let mut holes = Vec::new();
    let mut block = start / BMAP_BLOCK;
    let mut buf = vec![0u8; CHUNK];
    let (mut at, end) = (start, start + len);
    while at < end {
        let n = read_full_at(file, &mut buf, at, end)?;
        at += n as u64;
        enc.write_all(&buf[..n])?;
        for b in buf[..n].chunks(BMAP_BLOCK as usize) {
            if is_zero(b) {
                if let Some((first, h)) = cur.take() {
                    ranges.push(MappedRange {
                        first,
                        last: block - 1,
                        sha256: hex::encode(h.finalize()),
                    });
                }
                hole_start.get_or_insert(block);
            } else {
                if let Some(s) = hole_start.take() {
                    holes.push((s, block));
                }
                cur.get_or_insert_with(|| (block, Sha256::new()))
                    .1
                    .update(b);
            }
            block += 1;
        }
    }
    enc.finish()?;
    if let Some((first, h)) = cur.take() {
        ranges.push(MappedRange {
            first,
            last: block - 1,
            sha256: hex::encode(h.finalize()),
        });
    }
    if let Some(s) = hole_start.take() {
        holes.push((s, block));
    }
    Ok((ranges, holes))
}

/// Writes the non-zero [`BMAP_BLOCK`] blocks of `bytes` into `file` at `offset` (a region
/// that reads as zeros), runs of them at once.
fn write_nonzero_blocks(file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let block = BMAP_BLOCK as usize;
    let mut run: Option<usize> = None;
    for (i, chunk) in bytes.chunks(block).enumerate() {
        match (is_zero(chunk), run) {
            (false, None) => run = Some(i),
            (true, Some(start)) => {
                file.write_all_at(
                    &bytes[start * block..i * block],
                    offset + (start * block) as u64,
                )?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        file.write_all_at(&bytes[start * block..], offset + (start * block) as u64)?;
    }
    Ok(())
}

/// Punches `holes` (block numbers) out of `file`, keeping its size.
pub(crate) fn punch(file: &File, holes: &Holes) -> io::Result<()> {
    for (s, e) in holes {
        rustix::fs::fallocate(
            file.as_fd(),
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            s * BMAP_BLOCK,
            (e - s) * BMAP_BLOCK,
        )?;
    }
    Ok(())
}
fn is_zero(b: &[u8]) -> bool {
    // OR-folding fixed chunks vectorizes; `all` per chunk still stops early on data.
    b.chunks(256)
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// bmaptool's XML format 2.0, with `BmapFileChecksum` = SHA-256 of the file with that field
/// zeroed (what `bmaptool copy` checks).
pub fn bmap_xml(image_bytes: u64, ranges: &[MappedRange]) -> String {
    let blocks = image_bytes.div_ceil(BMAP_BLOCK);
    let mapped: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
    let zeros = "0".repeat(64);
    let mut s = String::new();
    s.push_str("<?xml version=\"1.0\" ?>\n<!-- Block map made by pibake: only mapped (non-zero) blocks need to be written. -->\n");
    s.push_str("<bmap version=\"2.0\">\n");
    s.push_str(&format!("    <ImageSize> {image_bytes} </ImageSize>\n"));
    s.push_str(&format!("    <BlockSize> {BMAP_BLOCK} </BlockSize>\n"));
    s.push_str(&format!("    <BlocksCount> {blocks} </BlocksCount>\n"));
    s.push_str(&format!(
        "    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n"
    ));
    s.push_str("    <ChecksumType> sha256 </ChecksumType>\n");
    s.push_str(&format!(
        "    <BmapFileChecksum> {zeros} </BmapFileChecksum>\n"
    ));
    s.push_str("    <BlockMap>\n");
    for r in ranges {
        if r.first == r.last {
            s.push_str(&format!(
                "        <Range chksum=\"{}\"> {} </Range>\n",
                r.sha256, r.first
            ));
        } else {
            s.push_str(&format!(
                "        <Range chksum=\"{}\"> {}-{} </Range>\n",
                r.sha256, r.first, r.last
            ));
        }
    }
    s.push_str("    </BlockMap>\n</bmap>\n");
    let sum = hex::encode(Sha256::digest(s.as_bytes()));
    s.replacen(&zeros, &sum, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Content;
    use crate::Layer;

    #[test]
    fn stale_temps_of_the_outputs_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, work) = (dir.path().join("out"), dir.path().join("work"));
        std::fs::create_dir_all(&out).expect("out");
        std::fs::create_dir_all(&work).expect("work");
        // What a build killed by SIGKILL leaves, and files that are not this image's temps.
        let stale = [
            ".t.img.Xy12Ab.tmp",
            ".t.img.zst.Xy12Ab.tmp",
            ".t.bmap.Xy12Ab.tmp",
            ".t.sha256.Xy12Ab.tmp",
        ];
        let kept = [
            ".other.img.Xy12Ab.tmp",
            ".t2.img.Xy12Ab.tmp",
            ".t.manifest.json.Xy12Ab.tmp",
            "t.img.tmp",
            "notes.txt",
        ];
        for n in stale.iter().chain(&kept) {
            std::fs::write(out.join(n), n).expect("plant");
        }
        let path = |p: &str| EntryPath::new(p).expect("path");
        let mut rootfs = Rootfs::empty();
        rootfs.apply_layer(&Layer {
            name: "test".into(),
            entries: vec![
                Entry::dir(path("etc"), 0o755),
                Entry::file(path("etc/hostname"), Content::bytes("t\n"), 0o644),
                Entry::dir(path("boot"), 0o755),
                Entry::dir(path("boot/firmware"), 0o755),
                Entry::file(
                    path("boot/firmware/config.txt"),
                    Content::bytes("arm_64bit=1\n"),
                    0o644,
                ),
            ],
        });
        let ids = ImageIds::from_input_hash(&[7; 32], TableKind::Mbr);
        let mut spec = AssembleSpec::new("t", &out, &work, ids, SourceDateEpoch(1_700_000_000));
        spec.boot_size = 64 << 20;
        spec.root_min_free = 4 << 20;
        let o = assemble(&mut rootfs, &spec).expect("assemble");
        assert!(o.img.is_file() && o.zst.is_file());
        for n in stale {
            assert!(!out.join(n).exists(), "stale temp {n} stayed");
        }
        for n in kept {
            assert!(out.join(n).exists(), "{n} was removed");
        }
        let left: Vec<String> = std::fs::read_dir(&out)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && !kept.contains(&n.as_str()))
            .collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
    }
}
