//! The FAT32 boot partition, written with the `fatfs` crate: fixed volume id, label and
//! timestamps, files added in sorted order, so equal inputs give equal bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};
use std::sync::{Mutex, OnceLock};

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};

use crate::path::EntryPath;
use crate::tar::SourceDateEpoch;
use crate::tree::{ContentSource, EntryKind, Tree};

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("boot partition of {0} bytes is too small for FAT32 (needs at least 34 MiB)")]
    TooSmall(u64),
    #[error("volume label {0:?} must be 1-11 characters of A-Z, 0-9, space, - or _")]
    Label(String),
    #[error("cannot format the boot partition")]
    Format(#[source] io::Error),
    #[error("cannot write {path} to the boot partition")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("boot partition entry {path}: FAT cannot hold a {kind}")]
    Unsupported { path: String, kind: &'static str },
    #[error("boot partition content does not fit: {path}")]
    Full {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// An 11-byte FAT volume label (upper case, padded with spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeLabel([u8; 11]);

impl VolumeLabel {
    /// Raspberry Pi OS's boot label, upper-cased as FAT stores it.
    pub const BOOTFS: VolumeLabel = VolumeLabel(*b"BOOTFS     ");

    pub fn new(s: &str) -> Result<Self, FatError> {
        let ok = !s.is_empty()
            && s.len() <= 11
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b" -_".contains(&b));
        if !ok {
            return Err(FatError::Label(s.to_owned()));
        }
        let mut l = [b' '; 11];
        l[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self(l))
    }
    pub fn as_bytes(&self) -> &[u8; 11] {
        &self.0
    }
}

/// Everything that decides the bytes of the boot partition besides its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatSpec {
    /// Partition size in bytes (a multiple of 512).
    pub size_bytes: u64,
    pub volume_id: u32,
    pub label: VolumeLabel,
    /// Every timestamp (created, modified, accessed) is this instant.
    pub epoch: SourceDateEpoch,
}

/// FAT32 needs at least 65525 clusters; a little margin keeps every tool's count happy.
const MIN_CLUSTERS: u64 = 65_600;

/// Cluster size: the largest of 4096..512 bytes that still gives FAT32 enough clusters.
fn cluster_size(size_bytes: u64) -> Result<u32, FatError> {
    let mut c: u32 = 4096;
    // Leave room for reserved sectors and two FATs (about 1% at 512-byte clusters).
    while c > 512 && size_bytes * 98 / 100 / u64::from(c) < MIN_CLUSTERS {
        c /= 2;
    }
    if size_bytes * 98 / 100 / u64::from(c) < MIN_CLUSTERS {
        return Err(FatError::TooSmall(size_bytes));
    }
    Ok(c)
}

/// Formats `disk` (the partition, position 0 = its first byte) and writes `files` (paths
/// relative to the partition root) in sorted order. Symlinks and devices are refused.
pub fn write_fat<D: Read + Write + Seek>(
    mut disk: D,
    spec: &FatSpec,
    files: &Tree,
    src: &dyn ContentSource,
) -> Result<(), FatError> {
    let sectors =
        u32::try_from(spec.size_bytes / 512).map_err(|_| FatError::TooSmall(spec.size_bytes))?;
    let opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_cluster(cluster_size(spec.size_bytes)?)
        .total_sectors(sectors)
        .volume_id(spec.volume_id)
        .volume_label(spec.label.0);
    fatfs::format_volume(&mut disk, opts).map_err(FatError::Format)?;
    disk.seek(io::SeekFrom::Start(0))
        .map_err(FatError::Format)?;
    let fs = FileSystem::new(
        &mut disk,
        FsOptions::new().time_provider(time_provider(spec.epoch)),
    )
    .map_err(FatError::Format)?;
    {
        let root = fs.root_dir();
        for e in files.iter() {
            let path = e.path.as_str();
            let werr = |source| FatError::Write {
                path: path.to_owned(),
                source,
            };
            match &e.kind {
                EntryKind::Dir => {
                    root.create_dir(path).map_err(werr)?;
                }
                EntryKind::File(c) => {
                    let mut f = root.create_file(path).map_err(werr)?;
                    let mut r = src.open(c).map_err(werr)?;
                    copy_all(&mut r, &mut f).map_err(|source| FatError::Full {
                        path: path.to_owned(),
                        source,
                    })?;
                    f.flush().map_err(werr)?;
                }
                EntryKind::Delete => {}
                EntryKind::Symlink(_) => return Err(unsupported(&e.path, "symlink")),
                EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => {
                    return Err(unsupported(&e.path, "device node"))
                }
                EntryKind::Fifo => return Err(unsupported(&e.path, "fifo")),
            }
        }
    }
    // Computing stats fills the FSInfo free-cluster count that unmount then writes (fsck.fat
    // reports it as uninitialized otherwise).
    fs.stats().map_err(FatError::Format)?;
    fs.unmount().map_err(FatError::Format)?;
    fix_dot_entries(&mut disk).map_err(FatError::Format)?;
    disk.flush().map_err(FatError::Format)
}

/// fatfs 0.3.6 writes an LFN entry before "." and before ".." in every new directory, and
/// points a root child's ".." at the root cluster instead of 0; fsck.fat rejects both. This
/// walks the directory tree and rewrites the first four slots of each subdirectory as
/// ".", "..", deleted, deleted (same cluster, same size: nothing else moves).
fn fix_dot_entries<D: Read + Write + Seek>(disk: &mut D) -> io::Result<()> {
    let mut bs = [0u8; 512];
    disk.seek(io::SeekFrom::Start(0))?;
    disk.read_exact(&mut bs)?;
    let u16at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
    let u32at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let sector = u16at(11);
    let cluster_bytes = sector * u64::from(bs[13]);
    let reserved = u16at(14);
    let fats = u64::from(bs[16]);
    let fat_sectors = u64::from(u32at(&bs, 36));
    let root_cluster = u32at(&bs, 44);
    let fat_start = reserved * sector;
    let data_start = (reserved + fats * fat_sectors) * sector;
    let cluster_off = |c: u32| data_start + u64::from(c - 2) * cluster_bytes;
    let next = |disk: &mut D, c: u32| -> io::Result<Option<u32>> {
        let mut e = [0u8; 4];
        disk.seek(io::SeekFrom::Start(fat_start + u64::from(c) * 4))?;
        disk.read_exact(&mut e)?;
        let n = u32::from_le_bytes(e) & 0x0fff_ffff;
        Ok((2..0x0fff_fff7).contains(&n).then_some(n))
    };
    let mut todo = vec![root_cluster];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir) {
            continue;
        }
        // Read the whole directory (its cluster chain).
        let mut data = Vec::new();
        let mut c = Some(dir);
        while let Some(cl) = c {
            let mut buf = vec![0u8; usize::try_from(cluster_bytes).unwrap_or(512)];
            disk.seek(io::SeekFrom::Start(cluster_off(cl)))?;
            disk.read_exact(&mut buf)?;
            data.extend_from_slice(&buf);
            c = next(disk, cl)?;
            if data.len() > 64 << 20 {
                return Err(io::Error::other("directory cluster chain loops"));
            }
        }
        for e in data.chunks(32) {
            if e[0] == 0 {
                break;
            }
            let attr = e[11];
            if e[0] == 0xe5 || attr == 0x0f || attr & 0x10 == 0 || e[0] == b'.' {
                continue;
            }
            let child = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
                | u32::from(u16::from_le_bytes([e[26], e[27]]));
            if child >= 2 {
                todo.push(child);
            }
        }
        if dir == root_cluster || data.len() < 128 {
            continue;
        }
        let lfn_dot = |e: &[u8]| e[11] == 0x0f && e[0] == 0x41;
        if lfn_dot(&data[0..32])
            && &data[32..43] == b".          "
            && lfn_dot(&data[64..96])
            && &data[96..107] == b"..         "
        {
            let mut head = [0u8; 128];
            head[0..32].copy_from_slice(&data[32..64]);
            head[32..64].copy_from_slice(&data[96..128]);
            // ".." of a child of the root points to cluster 0 by FAT convention.
            let parent = (u32::from(u16::from_le_bytes([head[52], head[53]])) << 16)
                | u32::from(u16::from_le_bytes([head[58], head[59]]));
            if parent == root_cluster {
                head[52..54].fill(0);
                head[58..60].fill(0);
            }
            head[64] = 0xe5;
            head[96] = 0xe5;
            disk.seek(io::SeekFrom::Start(cluster_off(dir)))?;
            disk.write_all(&head)?;
        }
    }
    Ok(())
}

fn copy_all(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n])?;
    }
}

fn unsupported(p: &EntryPath, kind: &'static str) -> FatError {
    FatError::Unsupported {
        path: p.to_string(),
        kind,
    }
}

/// A clock that always reads one instant.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// fatfs 0.3 wants a `&'static` provider: keep one per distinct epoch for the process lifetime.
fn time_provider(epoch: SourceDateEpoch) -> &'static FixedTime {
    static CACHE: OnceLock<Mutex<BTreeMap<u64, &'static FixedTime>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(epoch.0)
        .or_insert_with(|| Box::leak(Box::new(FixedTime(dos_datetime(epoch.0)))))
}

/// UTC civil time of `secs`, clamped to FAT's range (1980-01-01 .. 2107-12-31).
pub fn dos_datetime(secs: u64) -> DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_198; // 2107-12-31T23:59:58Z
    let s = secs.clamp(MIN, MAX);
    let days = i64::try_from(s / 86_400).unwrap_or(0);
    let rem = s % 86_400;
    let (y, m, d) = pibake_host::civil::civil_from_days(days);
    DateTime {
        date: Date {
            year: y as u16,
            month: m as u16,
            day: d as u16,
        },
        time: Time {
            hour: (rem / 3600) as u16,
            min: (rem % 3600 / 60) as u16,
            sec: (rem % 60) as u16,
            millis: 0,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        let t = dos_datetime(1_700_000_000); // 2023-11-14T22:13:20Z
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        assert_eq!(dos_datetime(0).date.year, 1980);
    }

    #[test]
    fn label_and_cluster_rules() {
        assert!(VolumeLabel::new("BOOTFS").is_ok());
        assert!(VolumeLabel::new("bootfs").is_err());
        assert!(VolumeLabel::new("TWELVECHARSX").is_err());
        assert_eq!(cluster_size(256 << 20).unwrap(), 2048);
        assert!(cluster_size(16 << 20).is_err());
    }
}
