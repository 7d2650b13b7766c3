//! Partition tables: MBR (default: every Pi boots it) and GPT, written and read in Rust.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::str::FromStr;

pub const SECTOR: u64 = 512;
/// Partitions start and end on 4 MiB boundaries (SD card erase blocks).
pub const ALIGN: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot write the partition table")]
    Write(#[source] io::Error),
    #[error("cannot read the partition table")]
    Read(#[source] io::Error),
    #[error("bad GUID {0:?} (want 8-4-4-4-12 hex digits)")]
    Guid(String),
    #[error("disk of {0} bytes is too large for an MBR (2 TiB limit)")]
    TooLarge(u64),
}

/// The 32-bit MBR disk identifier (first half of every MBR PARTUUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiskId(pub u32);

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A GUID, stored in its text byte order; GPT's mixed-endian on-disk form is made on write.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// An RFC 4122 version-4-shaped GUID from arbitrary bytes (e.g. a hash): same bytes,
    /// same GUID, with the version and variant bits set so tools accept it.
    pub fn from_hash(bytes: [u8; 16]) -> Self {
        let mut b = bytes;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }
    fn to_disk(self) -> [u8; 16] {
        let b = self.0;
        let mut d = b;
        d[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        d[4..6].copy_from_slice(&[b[5], b[4]]);
        d[6..8].copy_from_slice(&[b[7], b[6]]);
        d
    }
    fn from_disk(d: &[u8]) -> Self {
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[0..4].copy_from_slice(&[d[3], d[2], d[1], d[0]]);
        b[4..6].copy_from_slice(&[d[5], d[4]]);
        b[6..8].copy_from_slice(&[d[7], d[6]]);
        Self(b)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = TableError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(TableError::Guid(s.to_owned()));
        }
        let v = hex::decode(parts.concat()).map_err(|_| TableError::Guid(s.to_owned()))?;
        let mut b = [0u8; 16];
        b.copy_from_slice(&v);
        Ok(Self(b))
    }
}

/// GPT partition type of the boot partition: EFI System (FAT).
pub const GPT_TYPE_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Microsoft basic data, accepted as a boot partition type by [`crate::verify`].
pub const GPT_TYPE_BASIC_DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
/// GPT partition type of the root partition: Linux filesystem data.
pub const GPT_TYPE_LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
pub const MBR_TYPE_FAT32_LBA: u8 = 0x0c;
pub const MBR_TYPE_LINUX: u8 = 0x83;

/// Which table to write, with the caller's identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableSpec {
    Mbr { disk_id: DiskId },
    Gpt { disk: Guid, boot: Guid, root: Guid },
}

impl TableSpec {
    /// The `PARTUUID` of the root partition (partition 2), for `root=PARTUUID=` on cmdline.txt.
    pub fn root_partuuid(&self) -> String {
        match self {
            Self::Mbr { disk_id } => format!("{disk_id}-02"),
            Self::Gpt { root, .. } => root.to_string(),
        }
    }
    /// The `PARTUUID` of the boot partition (partition 1), for /etc/fstab.
    pub fn boot_partuuid(&self) -> String {
        match self {
            Self::Mbr { disk_id } => format!("{disk_id}-01"),
            Self::Gpt { boot, .. } => boot.to_string(),
        }
    }
}

/// Byte ranges of the two partitions and the disk size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub boot_start: u64,
    pub boot_len: u64,
    pub root_start: u64,
    pub root_len: u64,
    pub disk_len: u64,
}

/// Boot at 4 MiB, root right after it; both rounded up to 4 MiB. GPT gets a spare 4 MiB at
/// the end for its backup header and entries.
pub fn layout(boot_bytes: u64, root_bytes: u64, gpt: bool) -> Layout {
    let up = |n: u64| n.div_ceil(ALIGN) * ALIGN;
    let boot_start = ALIGN;
    let boot_len = up(boot_bytes);
    let root_start = boot_start + boot_len;
    let root_len = up(root_bytes);
    let disk_len = root_start + root_len + if gpt { ALIGN } else { 0 };
    Layout {
        boot_start,
        boot_len,
        root_start,
        root_len,
        disk_len,
    }
}

/// Writes the table for `layout` at the start (and, for GPT, the end) of `w`.
pub fn write_table<W: Write + Seek>(
    w: &mut W,
    spec: &TableSpec,
    l: &Layout,
) -> Result<(), TableError> {
    match spec {
        TableSpec::Mbr { disk_id } => write_mbr(w, *disk_id, l),
        TableSpec::Gpt { disk, boot, root } => write_gpt(w, *disk, *boot, *root, l),
    }
}

fn lba(bytes: u64) -> u64 {
    bytes / SECTOR
}

fn mbr_entry(e: &mut [u8], kind: u8, start: u64, sectors: u64) -> Result<(), TableError> {
    let s = u32::try_from(start).map_err(|_| TableError::TooLarge(start * SECTOR))?;
    let n = u32::try_from(sectors).map_err(|_| TableError::TooLarge(sectors * SECTOR))?;
    e[0] = 0x00;
    // CHS fields say "use LBA" (the maximum), as for any disk beyond 8 GB.
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&s.to_le_bytes());
    e[12..16].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

/// Classic MBR: partition 1 FAT32 LBA (0x0c), partition 2 Linux (0x83).
pub fn write_mbr<W: Write + Seek>(
    w: &mut W,
    disk_id: DiskId,
    l: &Layout,
) -> Result<(), TableError> {
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&disk_id.0.to_le_bytes());
    mbr_entry(
        &mut s[446..462],
        MBR_TYPE_FAT32_LBA,
        lba(l.boot_start),
        lba(l.boot_len),
    )?;
    mbr_entry(
        &mut s[462..478],
        MBR_TYPE_LINUX,
        lba(l.root_start),
        lba(l.root_len),
    )?;
    s[510] = 0x55;
    s[511] = 0xaa;
    w.seek(SeekFrom::Start(0)).map_err(TableError::Write)?;
    w.write_all(&s).map_err(TableError::Write)
}

const GPT_ENTRIES: usize = 128;
const GPT_ENTRY_SIZE: usize = 128;
const GPT_ARRAY_SECTORS: u64 = (GPT_ENTRIES * GPT_ENTRY_SIZE) as u64 / SECTOR;

fn gpt_entry(
    kind: &str,
    unique: Guid,
    first: u64,
    last: u64,
    name: &str,
) -> Result<[u8; 128], TableError> {
    let mut e = [0u8; 128];
    e[0..16].copy_from_slice(&Guid::from_str(kind)?.to_disk());
    e[16..32].copy_from_slice(&unique.to_disk());
    e[32..40].copy_from_slice(&first.to_le_bytes());
    e[40..48].copy_from_slice(&last.to_le_bytes());
    for (i, u) in name.encode_utf16().take(36).enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    Ok(e)
}

#[allow(clippy::too_many_arguments)]
fn gpt_header(
    disk: Guid,
    this: u64,
    other: u64,
    first_usable: u64,
    last_usable: u64,
    array: u64,
    array_crc: u32,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&this.to_le_bytes());
    h[32..40].copy_from_slice(&other.to_le_bytes());
    h[40..48].copy_from_slice(&first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&disk.to_disk());
    h[72..80].copy_from_slice(&array.to_le_bytes());
    h[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&array_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// GPT with a protective MBR, primary and backup headers and entry arrays (CRC32 checked).
pub fn write_gpt<W: Write + Seek>(
    w: &mut W,
    disk: Guid,
    boot: Guid,
    root: Guid,
    l: &Layout,
) -> Result<(), TableError> {
    let total = lba(l.disk_len);
    let last = total - 1;
    let mut pmbr = [0u8; 512];
    mbr_entry(
        &mut pmbr[446..462],
        0xee,
        1,
        (total - 1).min(u64::from(u32::MAX)),
    )?;
    pmbr[446 + 1..446 + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    pmbr[510] = 0x55;
    pmbr[511] = 0xaa;
    let mut array = vec![0u8; GPT_ENTRIES * GPT_ENTRY_SIZE];
    array[0..128].copy_from_slice(&gpt_entry(
        GPT_TYPE_ESP,
        boot,
        lba(l.boot_start),
        lba(l.boot_start + l.boot_len) - 1,
        "boot",
    )?);
    array[128..256].copy_from_slice(&gpt_entry(
        GPT_TYPE_LINUX,
        root,
        lba(l.root_start),
        lba(l.root_start + l.root_len) - 1,
        "root",
    )?);
    let array_crc = crc32fast::hash(&array);
    let first_usable = 2 + GPT_ARRAY_SECTORS;
    let last_usable = last - 1 - GPT_ARRAY_SECTORS;
    let backup_array = last - GPT_ARRAY_SECTORS;
    let primary = gpt_header(disk, 1, last, first_usable, last_usable, 2, array_crc);
    let backup = gpt_header(
        disk,
        last,
        1,
        first_usable,
        last_usable,
        backup_array,
        array_crc,
    );
    let mut put = |at: u64, b: &[u8]| -> Result<(), TableError> {
        w.seek(SeekFrom::Start(at * SECTOR))
            .map_err(TableError::Write)?;
        w.write_all(b).map_err(TableError::Write)
    };
    put(0, &pmbr)?;
    put(1, &primary)?;
    put(2, &array)?;
    put(backup_array, &array)?;
    put(last, &backup)
}

/// A partition as read back from a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `/dev/mmcblk0p<N>`.
    pub number: u32,
    pub start: u64,
    pub len: u64,
    pub kind: PartKind,
    /// GPT unique partition GUID.
    pub guid: Option<Guid>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    Mbr(u8),
    Gpt(Guid),
}

impl PartKind {
    pub fn is_fat(&self) -> bool {
        match self {
            Self::Mbr(t) => matches!(t, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e | 0xef),
            Self::Gpt(g) => [GPT_TYPE_ESP, GPT_TYPE_BASIC_DATA]
                .iter()
                .any(|t| Guid::from_str(t).ok() == Some(*g)),
        }
    }
    pub fn is_linux(&self) -> bool {
        match self {
            Self::Mbr(t) => *t == MBR_TYPE_LINUX,
            // Any type GUID other than FAT ones: discoverable-partition types differ per arch.
            Self::Gpt(_) => !self.is_fat(),
        }
    }
}

/// A table read from a disk image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Table {
    Mbr {
        disk_id: DiskId,
        partitions: Vec<Partition>,
    },
    Gpt {
        disk: Guid,
        partitions: Vec<Partition>,
        problems: Vec<String>,
    },
}

impl Table {
    pub fn partitions(&self) -> &[Partition] {
        match self {
            Self::Mbr { partitions, .. } | Self::Gpt { partitions, .. } => partitions,
        }
    }
    /// The PARTUUID the kernel gives partition `number`.
    pub fn partuuid(&self, number: u32) -> Option<String> {
        match self {
            Self::Mbr {
                disk_id,
                partitions,
            } => partitions
                .iter()
                .any(|p| p.number == number)
                .then(|| format!("{disk_id}-{number:02x}")),
            Self::Gpt { partitions, .. } => partitions
                .iter()
                .find(|p| p.number == number)
                .and_then(|p| p.guid)
                .map(|g| g.to_string()),
        }
    }
}

/// Why a table could not be understood at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadTableError {
    #[error("cannot read the partition table")]
    Io(#[from] io::Error),
    #[error("no MBR signature (0x55aa) in sector 0")]
    NoSignature,
    #[error("GPT header: {0}")]
    Gpt(String),
}

/// Reads an MBR or (behind a protective MBR) a GPT. Only primary MBR partitions are read.
pub fn read_table<R: Read + Seek>(r: &mut R, disk_len: u64) -> Result<Table, ReadTableError> {
    let mut s = [0u8; 512];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut s)?;
    if s[510..512] != [0x55, 0xaa] {
        return Err(ReadTableError::NoSignature);
    }
    let entries: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &s[446 + 16 * i..462 + 16 * i];
            let st = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
            let n = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
            (e[4], st, n)
        })
        .collect();
    if entries.iter().any(|e| e.0 == 0xee) {
        return read_gpt(r, disk_len);
    }
    let disk_id = DiskId(u32::from_le_bytes([s[440], s[441], s[442], s[443]]));
    let partitions = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.0 != 0 && e.2 != 0)
        .map(|(i, e)| Partition {
            number: i as u32 + 1,
            start: e.1 * SECTOR,
            len: e.2 * SECTOR,
            kind: PartKind::Mbr(e.0),
            guid: None,
        })
        .collect();
    Ok(Table::Mbr {
        disk_id,
        partitions,
    })
}

fn read_gpt<R: Read + Seek>(r: &mut R, disk_len: u64) -> Result<Table, ReadTableError> {
    let gerr = |m: &str| ReadTableError::Gpt(m.to_owned());
    let mut h = [0u8; 512];
    r.seek(SeekFrom::Start(SECTOR))?;
    r.read_exact(&mut h)?;
    if &h[0..8] != b"EFI PART" {
        return Err(gerr("no \"EFI PART\" signature at LBA 1"));
    }
    let u32at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let hsize = (u32at(&h, 12) as usize).clamp(92, 512);
    let mut problems = Vec::new();
    let mut hc = h;
    hc[16..20].fill(0);
    if crc32fast::hash(&hc[..hsize]) != u32at(&h, 16) {
        problems.push("primary GPT header CRC32 mismatch".to_owned());
    }
    let backup_lba = u64at(&h, 32);
    let array_lba = u64at(&h, 72);
    let count = u32at(&h, 80) as usize;
    let esize = u32at(&h, 84) as usize;
    if !(128..=4096).contains(&esize) || count > 1024 {
        return Err(gerr("implausible partition entry array size"));
    }
    let mut array = vec![0u8; count * esize];
    r.seek(SeekFrom::Start(array_lba * SECTOR))?;
    r.read_exact(&mut array)?;
    if crc32fast::hash(&array) != u32at(&h, 88) {
        problems.push("GPT partition entry array CRC32 mismatch".to_owned());
    }
    if backup_lba * SECTOR + SECTOR > disk_len {
        problems.push(format!(
            "backup GPT header LBA {backup_lba} lies beyond the end of the image"
        ));
    } else {
        let mut b = [0u8; 512];
        r.seek(SeekFrom::Start(backup_lba * SECTOR))?;
        r.read_exact(&mut b)?;
        let mut bc = b;
        bc[16..20].fill(0);
        if &b[0..8] != b"EFI PART" || crc32fast::hash(&bc[..hsize]) != u32at(&b, 16) {
            problems.push("backup GPT header missing or corrupt".to_owned());
        }
    }
    let partitions = array
        .chunks(esize)
        .enumerate()
        .filter(|(_, e)| e[0..16].iter().any(|&b| b != 0))
        .map(|(i, e)| {
            let first = u64at(e, 32);
            let last = u64at(e, 40);
            Partition {
                number: i as u32 + 1,
                start: first * SECTOR,
                len: (last + 1).saturating_sub(first) * SECTOR,
                kind: PartKind::Gpt(Guid::from_disk(&e[0..16])),
                guid: Some(Guid::from_disk(&e[16..32])),
            }
        })
        .collect();
    Ok(Table::Gpt {
        disk: Guid::from_disk(&h[56..72]),
        partitions,
        problems,
    })
}
