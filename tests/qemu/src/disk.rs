//! A raw disk file: its partitions (MBR, or GPT behind a protective MBR),
//! the FAT boot partition (read with mtools at an offset) and the ext4 root
//! (read with debugfs at an offset). Nothing is mounted. The only write is
//! [`RawDisk::replay_root_journal`], meant for private snapshots of a VM that
//! lost power.

use crate::tool::{self, DEBUGFS, E2FSCK, MCOPY, MDIR};
use crate::{io_err, HarnessError, Result};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// What a partition table says a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// An MBR partition type byte (0x0C FAT32 LBA, 0x83 Linux).
    Mbr(u8),
    /// A GPT entry: its type GUID and its unique GUID (the kernel's
    /// `PARTUUID`), both in text byte order.
    Gpt { type_guid: Guid, unique: Guid },
}

/// A GUID in its text byte order (GPT stores the first three fields
/// little-endian; [`Guid::from_disk`] turns them around).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// GPT's EFI system partition type.
    pub const ESP: Guid = Guid([
        0xc1, 0x2a, 0x73, 0x28, 0xf8, 0x1f, 0x11, 0xd2, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ]);

    /// From the mixed-endian bytes of a GPT header or entry.
    pub fn from_disk(d: &[u8; 16]) -> Self {
        let mut b = *d;
        b[0..4].copy_from_slice(&[d[3], d[2], d[1], d[0]]);
        b[4..6].copy_from_slice(&[d[5], d[4]]);
        b[6..8].copy_from_slice(&[d[7], d[6]]);
        Guid(b)
    }

    /// The mixed-endian bytes GPT stores (the inverse of [`Guid::from_disk`]).
    pub fn to_disk(self) -> [u8; 16] {
        let g = Guid::from_disk(&self.0);
        g.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One partition, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `p1`, `p2`.
    pub number: u8,
    pub kind: PartitionKind,
    pub start: u64,
    pub size: u64,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// The `PARTUUID` the kernel gives a GPT partition (`None` on an MBR).
    pub fn partuuid(&self) -> Option<String> {
        match self.kind {
            PartitionKind::Gpt { unique, .. } => Some(unique.to_string()),
            PartitionKind::Mbr(_) => None,
        }
    }
}

/// How many bytes at the start of a disk [`partitions`] reads at most: the
/// MBR, the GPT header and 128 entries of 128 bytes (34 sectors).
pub const TABLE_BYTES: u64 = 34 * 512;

/// Reads the primary partitions of an MBR, or the partitions of the GPT
/// behind a protective MBR (sector size 512; the primary GPT only, its
/// checksums not checked: the harness reads images pibake wrote and QEMU's
/// overlays of them).
pub fn partitions(mut disk: impl Read + Seek) -> std::result::Result<Vec<Partition>, String> {
    let mut sector = [0u8; 512];
    disk.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    disk.read_exact(&mut sector).map_err(|e| e.to_string())?;
    if sector[510..512] != [0x55, 0xAA] {
        return Err("no 0x55AA boot signature".to_owned());
    }
    let mut parts = Vec::new();
    for i in 0..4u8 {
        let e = &sector[446 + 16 * usize::from(i)..][..16];
        let kind = e[4];
        let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        let count = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
        if kind == 0 || count == 0 {
            continue;
        }
        if kind == 0xEE {
            return gpt_partitions(disk);
        }
        parts.push(Partition {
            number: i + 1,
            kind: PartitionKind::Mbr(kind),
            start: u64::from(lba) * 512,
            size: u64::from(count) * 512,
        });
    }
    Ok(parts)
}

fn gpt_partitions(mut disk: impl Read + Seek) -> std::result::Result<Vec<Partition>, String> {
    let mut header = [0u8; 512];
    disk.seek(SeekFrom::Start(512)).map_err(|e| e.to_string())?;
    disk.read_exact(&mut header).map_err(|e| e.to_string())?;
    if &header[0..8] != b"EFI PART" {
        return Err("protective MBR but no \"EFI PART\" GPT header at LBA 1".to_owned());
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
    let mut lba = [0u8; 8];
    lba.copy_from_slice(&header[72..80]);
    let array_lba = u64::from_le_bytes(lba);
    let (count, size) = (u32_at(80) as usize, u32_at(84) as usize);
    if !(128..=4096).contains(&size) || count > 1024 {
        return Err(format!(
            "implausible GPT entry array: {count} entries of {size} bytes"
        ));
    }
    let mut array = vec![0u8; count * size];
    disk.seek(SeekFrom::Start(array_lba * 512))
        .map_err(|e| e.to_string())?;
    disk.read_exact(&mut array).map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    for (i, e) in array.chunks(size).enumerate() {
        let mut type_guid = [0u8; 16];
        type_guid.copy_from_slice(&e[0..16]);
        if type_guid == [0; 16] {
            continue;
        }
        let mut unique = [0u8; 16];
        unique.copy_from_slice(&e[16..32]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&e[32..40]);
        let mut last = [0u8; 8];
        last.copy_from_slice(&e[40..48]);
        let (first, last) = (u64::from_le_bytes(first), u64::from_le_bytes(last));
        let number = u8::try_from(i + 1).map_err(|_| "more than 255 GPT partitions".to_owned())?;
        if last < first {
            return Err(format!("GPT partition {number} ends before it starts"));
        }
        parts.push(Partition {
            number,
            kind: PartitionKind::Gpt {
                type_guid: Guid::from_disk(&type_guid),
                unique: Guid::from_disk(&unique),
            },
            start: first * 512,
            size: (last - first + 1) * 512,
        });
    }
    Ok(parts)
}

/// One entry for [`write_gpt`]: bytes, 512-aligned.
#[derive(Debug, Clone, Copy)]
pub struct GptEntry<'a> {
    pub type_guid: Guid,
    pub unique: Guid,
    pub start: u64,
    pub size: u64,
    pub name: &'a str,
}

/// Writes a protective MBR and a GPT (primary and backup headers, 128
/// entries, CRC32s) for a disk of `disk_len` bytes: what UEFI firmware
/// (OVMF) accepts. For test fixtures; pibake's own images come from its
/// image crate.
pub fn write_gpt(
    mut disk: impl std::io::Write + Seek,
    disk_len: u64,
    disk_guid: Guid,
    entries: &[GptEntry<'_>],
) -> std::io::Result<()> {
    const ENTRIES: usize = 128;
    const ARRAY_SECTORS: u64 = (ENTRIES * 128 / 512) as u64;
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let total = disk_len / 512;
    if disk_len % 512 != 0 || total < 2 * ARRAY_SECTORS + 4 || entries.len() > ENTRIES {
        return Err(bad(format!(
            "no GPT for a disk of {disk_len} bytes with {} entries",
            entries.len()
        )));
    }
    let last = total - 1;
    let (first_usable, last_usable) = (2 + ARRAY_SECTORS, last - 1 - ARRAY_SECTORS);
    let mut array = vec![0u8; ENTRIES * 128];
    for (i, p) in entries.iter().enumerate() {
        let (first, n) = (p.start / 512, p.size / 512);
        if p.start % 512 != 0
            || p.size % 512 != 0
            || n == 0
            || first < first_usable
            || first + n - 1 > last_usable
        {
            return Err(bad(format!("GPT entry {} does not fit: {p:?}", i + 1)));
        }
        let e = &mut array[i * 128..][..128];
        e[0..16].copy_from_slice(&p.type_guid.to_disk());
        e[16..32].copy_from_slice(&p.unique.to_disk());
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&(first + n - 1).to_le_bytes());
        for (j, u) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let array_crc = crc32(&array);
    let header = |this: u64, other: u64, array_at: u64| {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&this.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.to_disk());
        h[72..80].copy_from_slice(&array_at.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut mbr = [0u8; 512];
    let pm = &mut mbr[446..462];
    pm[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    pm[4] = 0xEE;
    pm[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    pm[8..12].copy_from_slice(&1u32.to_le_bytes());
    pm[12..16].copy_from_slice(&u32::try_from(total - 1).unwrap_or(u32::MAX).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let backup_array = last - ARRAY_SECTORS;
    for (lba, bytes) in [
        (0, &mbr[..]),
        (1, &header(1, last, 2)[..]),
        (2, &array[..]),
        (backup_array, &array[..]),
        (last, &header(last, 1, backup_array)[..]),
    ] {
        disk.seek(SeekFrom::Start(lba * 512))?;
        disk.write_all(bytes)?;
    }
    Ok(())
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A raw disk image file with an MBR or a GPT: partition 1 FAT boot (an
/// EFI system partition on a pc-efi image), partition 2 ext4 root.
#[derive(Debug, Clone)]
pub struct RawDisk {
    path: PathBuf,
    parts: Vec<Partition>,
    len: u64,
}

impl RawDisk {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let parts = partitions(file).map_err(|why| HarnessError::Partitions {
            path: path.to_owned(),
            why,
        })?;
        let disk = RawDisk {
            path: path.to_owned(),
            parts,
            len,
        };
        disk.partition(1)?;
        disk.partition(2)?;
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the disk file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.parts
    }

    pub fn partition(&self, number: u8) -> Result<Partition> {
        self.parts
            .iter()
            .copied()
            .find(|p| p.number == number)
            .ok_or_else(|| HarnessError::Partitions {
                path: self.path.clone(),
                why: format!("no partition {number}"),
            })
    }

    /// Replays the root filesystem's journal when it needs recovery (a VM
    /// killed mid-write), as the kernel does on the next mount, so that what
    /// the tests read is what the next boot sees.
    ///
    /// The replay is `e2fsck -E journal_only`: e2fsck's journal recovery (the
    /// same as the kernel's: it writes the logged blocks home before anything
    /// reads a bitmap) and nothing else. debugfs' `journal_run` is not used:
    /// it opens the filesystem, bitmaps included, before replaying, so it
    /// refuses exactly the disks that need the replay most (a block bitmap
    /// written home while its checksum is still in the journal: "Block
    /// bitmap checksum does not match bitmap"). e2fsck cannot write at an
    /// offset (it reopens the device without it after the replay), so the
    /// partition is copied into a file of its own, replayed there, and the
    /// chunks that changed are written back. Returns whether anything was
    /// replayed.
    pub fn replay_root_journal(&self) -> Result<bool> {
        let root = self.partition(2)?;
        if !ext4_needs_recovery(&self.path, root.start)? {
            return Ok(false);
        }
        let scratch = self.path.with_extension("root-replay");
        copy_range(&self.path, root.start, &scratch, 0, root.size, false)?;
        let result = replay_journal(&scratch).and_then(|()| {
            if ext4_needs_recovery(&scratch, 0)? {
                return Err(HarnessError::Invalid(format!(
                    "{}: the root journal still needs recovery after e2fsck -E journal_only",
                    self.path.display()
                )));
            }
            copy_range(&scratch, 0, &self.path, root.start, root.size, true)
        });
        let _ = std::fs::remove_file(&scratch);
        result.map(|()| true)
    }

    /// Whether the root filesystem's journal holds transactions not yet
    /// written home (read from the superblock, not through debugfs, which
    /// cannot open such a filesystem when a bitmap disagrees with its
    /// checksum).
    pub fn root_needs_recovery(&self) -> Result<bool> {
        ext4_needs_recovery(&self.path, self.partition(2)?.start)
    }

    /// Checks that the root filesystem was cleanly unmounted, as after a
    /// clean power-off: its journal needs no recovery and a forced
    /// read-only `e2fsck -fn` (on a copy of the partition: e2fsck takes no
    /// offset) finds nothing. The error names what is wrong, with e2fsck's
    /// own words.
    pub fn root_clean(&self) -> Result<()> {
        if self.root_needs_recovery()? {
            return Err(HarnessError::Invalid(format!(
                "{}: the root filesystem needs journal recovery (not unmounted cleanly)",
                self.path.display()
            )));
        }
        let root = self.partition(2)?;
        let scratch = self.path.with_extension("root-fsck");
        copy_range(&self.path, root.start, &scratch, 0, root.size, false)?;
        let mut cmd = E2FSCK.command()?;
        cmd.env("E2FSCK_CONFIG", "/dev/null")
            .arg("-fn")
            .arg(&scratch);
        let command = tool::describe(&cmd);
        let out = cmd.output();
        let _ = std::fs::remove_file(&scratch);
        let out = out.map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(HarnessError::Command {
            command: format!("{command} (root of {})", self.path.display()),
            status: out.status.to_string(),
            stderr: format!(
                "{} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }

    /// The boot partition (p1, FAT).
    pub fn boot(&self) -> Result<Fat> {
        Ok(Fat {
            target: format!("{}@@{}", self.path.display(), self.partition(1)?.start),
        })
    }

    /// The root partition (p2, ext4).
    pub fn root(&self) -> Result<Ext4> {
        Ok(Ext4 {
            target: format!(
                "{}?offset={}",
                self.path.display(),
                self.partition(2)?.start
            ),
        })
    }
}

/// ext4 superblock: 1024 bytes into the filesystem; magic 0xEF53 at 0x38;
/// s_feature_incompat at 0x60, where 0x4 is RECOVER (`needs_recovery`).
const SUPERBLOCK_AT: u64 = 1024;
const MAGIC_AT: usize = 0x38;
const INCOMPAT_AT: usize = 0x60;
const INCOMPAT_RECOVER: u32 = 0x4;

/// Whether the ext4 filesystem at `offset` of `path` needs its journal
/// replayed.
fn ext4_needs_recovery(path: &Path, offset: u64) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut sb = [0u8; 1024];
    file.seek(SeekFrom::Start(offset + SUPERBLOCK_AT))
        .map_err(io_err(path))?;
    file.read_exact(&mut sb).map_err(io_err(path))?;
    if sb[MAGIC_AT..MAGIC_AT + 2] != [0x53, 0xEF] {
        return Err(HarnessError::Invalid(format!(
            "{}: no ext4 superblock at byte {}",
            path.display(),
            offset + SUPERBLOCK_AT
        )));
    }
    let incompat = u32::from_le_bytes([
        sb[INCOMPAT_AT],
        sb[INCOMPAT_AT + 1],
        sb[INCOMPAT_AT + 2],
        sb[INCOMPAT_AT + 3],
    ]);
    Ok(incompat & INCOMPAT_RECOVER != 0)
}

/// Replays the journal of the ext4 filesystem that is the whole file `fs`
/// with `e2fsck -E journal_only -p` (no other check or repair; exit codes
/// 0 to 2 mean the replay went through).
fn replay_journal(fs: &Path) -> Result<()> {
    let mut cmd = E2FSCK.command()?;
    // The host's /etc/e2fsck.conf has no say in what the harness reads.
    cmd.env("E2FSCK_CONFIG", "/dev/null")
        .args(["-E", "journal_only", "-p"])
        .arg(fs);
    let command = tool::describe(&cmd);
    let out = cmd.output().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;
    match out.status.code() {
        Some(0..=2) => Ok(()),
        _ => Err(HarnessError::Command {
            command,
            status: out.status.to_string(),
            stderr: format!(
                "{} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// Copies `len` bytes from `src` at `src_at` to `dst` at `dst_at` in 1 MiB
/// chunks. All-zero chunks are skipped when the destination is new (it stays
/// sparse); with `only_changed` a chunk is written only where it differs, so
/// a write-back touches just what the journal replay changed.
fn copy_range(
    src: &Path,
    src_at: u64,
    dst: &Path,
    dst_at: u64,
    len: u64,
    only_changed: bool,
) -> Result<()> {
    use std::io::Write;
    const CHUNK: usize = 1 << 20;
    let mut input = std::fs::File::open(src).map_err(io_err(src))?;
    let mut output = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!only_changed)
        .open(dst)
        .map_err(io_err(dst))?;
    if !only_changed {
        output.set_len(dst_at + len).map_err(io_err(dst))?;
    }
    input.seek(SeekFrom::Start(src_at)).map_err(io_err(src))?;
    let mut chunk = vec![0u8; CHUNK];
    let mut existing = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        input.read_exact(&mut chunk[..n]).map_err(io_err(src))?;
        let at = dst_at + done;
        let write = if only_changed {
            output.seek(SeekFrom::Start(at)).map_err(io_err(dst))?;
            output.read_exact(&mut existing[..n]).map_err(io_err(dst))?;
            existing[..n] != chunk[..n]
        } else {
            chunk[..n].iter().any(|b| *b != 0)
        };
        if write {
            output.seek(SeekFrom::Start(at)).map_err(io_err(dst))?;
            output.write_all(&chunk[..n]).map_err(io_err(dst))?;
        }
        done += n as u64;
    }
    output.sync_all().map_err(io_err(dst))
}

/// A FAT filesystem read through mtools (`file@@offset`).
#[derive(Debug, Clone)]
pub struct Fat {
    target: String,
}

impl Fat {
    /// A FAT filesystem that is a whole file (offset 0).
    pub fn whole(path: &Path) -> Self {
        Fat {
            target: path.display().to_string(),
        }
    }

    /// The contents of `name` (path from the FAT root, `/` separated).
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let out = tool::run(
            MCOPY
                .command()?
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-n", "-i", &self.target])
                .arg(format!("::{name}"))
                .arg("-"),
        )?;
        Ok(out.stdout)
    }

    pub fn read_string(&self, name: &str) -> Result<String> {
        String::from_utf8(self.read(name)?).map_err(|_| {
            HarnessError::Invalid(format!("{name} on the boot partition is not UTF-8"))
        })
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        let out = MDIR
            .command()?
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-b", "-i", &self.target])
            .arg(format!("::{name}"))
            .output()
            .map_err(|source| HarnessError::Spawn {
                command: format!("mdir ::{name}"),
                source,
            })?;
        Ok(out.status.success())
    }

    /// Names (bare, no directory) in directory `dir` of the FAT.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let out = tool::run(
            MDIR.command()?
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-b", "-i", &self.target])
                .arg(format!("::{dir}")),
        )?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim_end_matches('/').rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Writes `content` as `name` (replacing it) into a FAT that is a whole file.
    pub fn write(&self, name: &str, content: &[u8]) -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new().map_err(io_err("temporary file"))?;
        std::io::Write::write_all(&mut tmp, content).map_err(io_err(tmp.path()))?;
        tool::run(
            MCOPY
                .command()?
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-o", "-i", &self.target])
                .arg(tmp.path())
                .arg(format!("::{name}")),
        )?;
        Ok(())
    }
}

/// Metadata of one ext4 inode, as debugfs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Permission bits (and set-id/sticky), without the file type.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// An ext4 filesystem read through debugfs (`file?offset=N`).
#[derive(Debug, Clone)]
pub struct Ext4 {
    target: String,
}

impl Ext4 {
    fn debugfs(&self, request: &str) -> Result<(Vec<u8>, String)> {
        let out = tool::run(DEBUGFS.command()?.args(["-R", request, &self.target]))?;
        Ok((
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The contents of `path`, `None` when it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if self.stat(path)?.is_none() {
            return Ok(None);
        }
        let (out, _) = self.debugfs(&format!("cat \"{path}\""))?;
        Ok(Some(out))
    }

    pub fn read_string(&self, path: &str) -> Result<Option<String>> {
        self.read(path)?
            .map(|b| {
                String::from_utf8(b)
                    .map_err(|_| HarnessError::Invalid(format!("{path} in the root is not UTF-8")))
            })
            .transpose()
    }

    /// Owner, mode and size of `path`, `None` when it does not exist.
    pub fn stat(&self, path: &str) -> Result<Option<Stat>> {
        let (out, err) = self.debugfs(&format!("stat \"{path}\""))?;
        if err.contains("File not found") {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out);
        let field = |key: &str| -> Option<&str> {
            text.split_whitespace().skip_while(|w| *w != key).nth(1)
        };
        let bad = || {
            HarnessError::Invalid(format!(
                "debugfs stat {path}: cannot read:\n{text}\n{}",
                err.trim()
            ))
        };
        let mode = field("Mode:")
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or_else(bad)?;
        let uid = field("User:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        let gid = field("Group:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        let size = field("Size:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        Ok(Some(Stat {
            mode: mode & 0o7777,
            uid,
            gid,
            size,
        }))
    }

    /// Names in directory `dir` (without `.` and `..`), sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let (out, err) = self.debugfs(&format!("ls -p \"{dir}\""))?;
        if err.contains("File not found") {
            return Ok(Vec::new());
        }
        // `ls -p` lines: /inode/mode/uid/gid/name/size/
        let mut names: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split('/').nth(5))
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        for (i, (kind, lba, count)) in entries.iter().enumerate() {
            let e = &mut s[446 + 16 * i..][..16];
            e[4] = *kind;
            e[8..12].copy_from_slice(&lba.to_le_bytes());
            e[12..16].copy_from_slice(&count.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn reads_primary_partitions() {
        let parts = partitions(Cursor::new(mbr(&[(0x0C, 2048, 4096), (0x83, 6144, 100)])))
            .expect("valid table");
        assert_eq!(
            parts,
            vec![
                Partition {
                    number: 1,
                    kind: PartitionKind::Mbr(0x0C),
                    start: 2048 * 512,
                    size: 4096 * 512
                },
                Partition {
                    number: 2,
                    kind: PartitionKind::Mbr(0x83),
                    start: 6144 * 512,
                    size: 100 * 512
                }
            ]
        );
        assert_eq!(parts[1].partuuid(), None);
    }

    #[test]
    fn refuses_missing_signature_and_a_protective_mbr_without_gpt() {
        let mut s = mbr(&[(0x0C, 1, 1)]);
        s[511] = 0;
        assert!(partitions(Cursor::new(s)).is_err());
        let mut s = mbr(&[(0xEE, 1, 100)]);
        s.resize(TABLE_BYTES as usize, 0);
        let err = partitions(Cursor::new(s)).expect_err("no GPT header");
        assert!(err.contains("EFI PART"), "{err}");
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_written_gpt_reads_back() {
        let linux: Guid = Guid([
            0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ]);
        let root = Guid([0x11; 16]);
        assert_eq!(linux.to_string(), "0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert_eq!(Guid::from_disk(&linux.to_disk()), linux);
        assert_eq!(
            Guid::ESP.to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        let len = 16u64 << 20;
        let mut disk = Cursor::new(vec![0u8; len as usize]);
        let entries = [
            GptEntry {
                type_guid: Guid::ESP,
                unique: Guid([0x22; 16]),
                start: 1 << 20,
                size: 8 << 20,
                name: "esp",
            },
            GptEntry {
                type_guid: linux,
                unique: root,
                start: 9 << 20,
                size: 6 << 20,
                name: "root",
            },
        ];
        write_gpt(&mut disk, len, Guid([0x33; 16]), &entries).expect("write");
        let bytes = disk.into_inner();
        let parts = partitions(Cursor::new(&bytes)).expect("read back");
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].number, parts[0].start, parts[0].size),
            (1, 1 << 20, 8 << 20)
        );
        assert_eq!(
            parts[1].kind,
            PartitionKind::Gpt {
                type_guid: linux,
                unique: root
            }
        );
        assert_eq!(parts[1].end(), 15 << 20);
        assert_eq!(
            parts[1].partuuid().as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        // The header's own checksum covers its first 92 bytes, with the
        // checksum field zeroed.
        let mut h = bytes[512..604].to_vec();
        let stored = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        h[16..20].fill(0);
        assert_eq!(crc32(&h), stored);
        // The backup header sits in the last sector.
        assert_eq!(&bytes[bytes.len() - 512..][..8], b"EFI PART");
        assert!(write_gpt(
            Cursor::new(Vec::new()),
            len,
            Guid([0; 16]),
            &[GptEntry {
                start: 0,
                ..entries[0]
            }]
        )
        .is_err());
    }

    #[test]
    fn copy_range_round_trips_and_writes_back_only_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path().join("disk");
        let part = dir.path().join("part");
        // 3 MiB + 5 bytes: a partial last chunk, and a middle chunk of zeros.
        let mut bytes = vec![0u8; (3 << 20) + 5];
        bytes[10] = 1;
        bytes[(2 << 20) + 7] = 2;
        bytes[(3 << 20) + 4] = 3;
        std::fs::write(&disk, &bytes).expect("write disk");
        copy_range(&disk, 4, &part, 0, (3 << 20) + 1, false).expect("copy out");
        assert_eq!(std::fs::read(&part).expect("read"), bytes[4..].to_vec());

        let mut changed = std::fs::read(&part).expect("read");
        changed[(1 << 20) + 3] = 9;
        std::fs::write(&part, &changed).expect("change");
        copy_range(&part, 0, &disk, 4, (3 << 20) + 1, true).expect("write back");
        bytes[(1 << 20) + 7] = 9;
        assert_eq!(std::fs::read(&disk).expect("read"), bytes);
    }

    /// A disk whose root has a committed journal transaction holding its
    /// group 0 block bitmap, while the bitmap written home is garbage: what a
    /// power cut leaves when the bitmap reached the card before its
    /// descriptor's checksum did. Returns the disk and p1's bytes.
    fn cut_disk(dir: &Path) -> (PathBuf, Vec<u8>) {
        let fs = dir.join("root.ext4");
        tool::run(
            std::process::Command::new("mke2fs")
                .env("MKE2FS_CONFIG", "/dev/null")
                .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-O"])
                .arg("has_journal,metadata_csum,extent,64bit,flex_bg")
                .arg(&fs)
                .arg("16M"),
        )
        .expect("mke2fs");
        let file = dir.join("f");
        std::fs::write(&file, b"written before the cut\n").expect("f");
        let root = Ext4 {
            target: fs.display().to_string(),
        };
        tool::run(
            DEBUGFS
                .command()
                .expect("debugfs")
                .args(["-w", "-R"])
                .arg(format!("write {} f", file.display()))
                .arg(&fs),
        )
        .expect("debugfs write");
        let (stats, _) = root.debugfs("stats").expect("stats");
        let stats = String::from_utf8_lossy(&stats).into_owned();
        let bitmap: u64 = stats
            .split("block bitmap at ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .expect("group 0 block bitmap in debugfs stats");
        let mut bytes = std::fs::read(&fs).expect("read fs");
        let at = usize::try_from(bitmap * 4096).expect("offset");
        let good = dir.join("bitmap");
        std::fs::write(&good, &bytes[at..at + 4096]).expect("bitmap copy");
        let cmds = dir.join("journal.cmds");
        std::fs::write(
            &cmds,
            format!("jo\njw -b {bitmap} {}\njc\n", good.display()),
        )
        .expect("cmds");
        tool::run(
            DEBUGFS
                .command()
                .expect("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&cmds)
                .arg(&fs),
        )
        .expect("debugfs journal_write");
        bytes = std::fs::read(&fs).expect("read fs");
        for (i, b) in bytes[at..at + 4096].iter_mut().enumerate() {
            *b = (i as u8) ^ 0xA5;
        }
        // MBR, p1 (1 MiB of a pattern) at 1 MiB, p2 (the root) at 2 MiB.
        let p1: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut disk = mbr(&[(0x0C, 2048, 2048), (0x83, 4096, 32768)]);
        disk.resize(1 << 20, 0);
        disk.extend_from_slice(&p1);
        disk.extend_from_slice(&bytes);
        let path = dir.join("disk.raw");
        std::fs::write(&path, &disk).expect("disk");
        (path, p1)
    }

    #[test]
    fn replay_recovers_a_root_whose_bitmap_only_the_journal_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, p1) = cut_disk(dir.path());
        let disk = RawDisk::open(&path).expect("open");
        assert!(disk.root_needs_recovery().expect("superblock"));
        // The fixture is the failure seen on a cut VM: debugfs cannot open
        // it, and its journal_run (the harness's replay before) leaves it so.
        assert!(disk.root().expect("p2").stat("/f").is_err());
        let old = dir.path().join("old-replay.ext4");
        copy_range(&path, 2 << 20, &old, 0, 16 << 20, false).expect("copy");
        let old = Ext4 {
            target: old.display().to_string(),
        };
        let _ = tool::run(DEBUGFS.command().expect("debugfs").args([
            "-w",
            "-R",
            "journal_run",
            &old.target,
        ]));
        assert!(
            old.stat("/f").is_err(),
            "debugfs journal_run recovered the fixture: it no longer shows the failure"
        );

        assert!(disk.replay_root_journal().expect("replay"));
        assert!(!disk.root_needs_recovery().expect("superblock"));
        let root = disk.root().expect("p2");
        assert_eq!(
            root.read_string("/f").expect("read").as_deref(),
            Some("written before the cut\n")
        );
        // What the next mount sees is a clean filesystem, and only the root
        // partition was written.
        let check = dir.path().join("check.ext4");
        copy_range(&path, 2 << 20, &check, 0, 16 << 20, false).expect("copy");
        tool::run(
            E2FSCK
                .command()
                .expect("e2fsck")
                .env("E2FSCK_CONFIG", "/dev/null")
                .arg("-fn")
                .arg(&check),
        )
        .expect("e2fsck -fn after the replay");
        let after = std::fs::read(&path).expect("read");
        assert_eq!(&after[1 << 20..2 << 20], &p1[..]);
        assert!(!disk.replay_root_journal().expect("second replay"));
    }

    /// A disk whose root is a fresh ext4 is clean; the same disk with the
    /// root's superblock marked as needing recovery, or with a block
    /// bitmap's bytes flipped, is not, and the error says which.
    #[test]
    fn root_clean_refuses_a_dirty_root() {
        let dir = tempfile::tempdir().expect("test setup");
        let fs = dir.path().join("root.ext4");
        let status = std::process::Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                "4096",
                "-E",
                "root_owner=0:0",
            ])
            .arg(&fs)
            .arg("6M")
            .env("E2FSPROGS_FAKE_TIME", "1")
            .status()
            .expect("mke2fs");
        assert!(status.success());
        let root = std::fs::read(&fs).expect("test setup");
        let (start, len) = (9u64 << 20, 16u64 << 20);
        let build = |root: &[u8], name: &str| {
            let mut disk = std::io::Cursor::new(vec![0u8; len as usize]);
            let entries = [
                GptEntry {
                    type_guid: Guid::ESP,
                    unique: Guid([0x22; 16]),
                    start: 1 << 20,
                    size: 8 << 20,
                    name: "esp",
                },
                GptEntry {
                    type_guid: Guid([0x44; 16]),
                    unique: Guid([0x11; 16]),
                    start,
                    size: 6 << 20,
                    name: "root",
                },
            ];
            write_gpt(&mut disk, len, Guid([0x33; 16]), &entries).expect("test setup");
            let mut bytes = disk.into_inner();
            bytes[start as usize..start as usize + root.len()].copy_from_slice(root);
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("test setup");
            RawDisk::open(&path).expect("test setup")
        };
        build(&root, "clean.img")
            .root_clean()
            .expect("a fresh ext4 is clean");
        // s_feature_incompat (superblock offset 0x60) bit 0x4: needs_recovery.
        let mut dirty = root.clone();
        dirty[1024 + 0x60] |= 0x4;
        let e = build(&dirty, "recover.img")
            .root_clean()
            .expect_err("must fail");
        assert!(e.to_string().contains("journal recovery"), "{e}");
        // The free blocks count of the superblock (0x0C) made wrong: e2fsck -f sees it.
        let mut wrong = root.clone();
        wrong[1024 + 0x0C] ^= 0x55;
        let e = build(&wrong, "counts.img")
            .root_clean()
            .expect_err("must fail");
        assert!(e.to_string().contains("e2fsck"), "{e}");
    }
}
