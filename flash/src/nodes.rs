//! Which nodes an image serves, learnt before anything is written, so that `--node` can only
//! name one of them.
//!
//! The truth is the image's own node table, [`TABLE_FILE`] (`pibake-nodes.toml`) on its FAT
//! boot partition (partition 1, of an MBR or a GPT: [`table::read_table`]), where the builder
//! writes it and the agent reads it; parsed by the agent's own definition
//! ([`pibake_firstboot::table::NodeTable`]). It is read with `fatfs`, never by mounting, and
//! through a reader that refuses writes, so nothing of the image changes:
//!
//! - a raw `.img`: straight from the image file, through a window at the boot partition's
//!   offset (as [`crate::boot`] writes the node file);
//! - a `.img.zst`: the stream is decoded only up to the end of the boot partition (which
//!   starts a few MiB into the image and is a small part of it), the partition kept as a
//!   sparse temp file (in `$TMPDIR`, removed afterwards) and read from there.
//!
//! The manifest a build writes beside an image (`<stem>.manifest.json`) lists the served nodes
//! too, but is not asked about the image being flashed: believing it would take its `sha256`
//! checked against the whole decoded image, more work than reading the table.
//!
//! A refusal names the image beside it that serves the node: sibling raw images are asked
//! for their own tables, compressed ones for their manifests (a hint, not a decision; no
//! sibling is decoded).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fatfs::{FileSystem, FsOptions};
use pibake_firstboot::table::{NodeTable, TableError, TABLE_FORMAT};
use pibake_image::manifest::Manifest;
use pibake_image::table::{self, Partition, ReadTableError};
use pibake_image::window::Window;

pub use crate::boot::TABLE_FILE;
use crate::boot::{self, NodeName};
use crate::source::{self, ImageSource, SourceError};

/// The nodes an image serves, from its node table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub image: PathBuf,
    /// The role the image was built for.
    pub role: String,
    pub nodes: BTreeSet<String>,
}

/// What another image in the same folder serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// File name as found beside the image (`lab-master.img.zst`).
    pub file: String,
    pub nodes: BTreeSet<String>,
}

/// Why the served nodes could not be learnt.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    #[error("cannot read the image")]
    Source(#[from] SourceError),
    #[error("its partition table cannot be read")]
    Table(#[source] ReadTableError),
    #[error("it has no FAT boot partition, so no {TABLE_FILE}")]
    NoBoot,
    #[error(
        "its partition 1 is not FAT ({kind}), so it has no {TABLE_FILE}: is it a pibake image?"
    )]
    NotFat { kind: String },
    #[error("it ends before the end of its boot partition {number}")]
    Short { number: u32 },
    #[error("its boot partition {number} is not a FAT filesystem, so it has no {TABLE_FILE}: is it a pibake image?")]
    BadFat {
        number: u32,
        #[source]
        source: io::Error,
    },
    #[error("its boot partition has no {TABLE_FILE}: it is not a pibake image, or one built before the node table moved there from /etc/pibake/nodes.toml of the root (build it again)")]
    NoTable,
    #[error("its {TABLE_FILE} cannot be read")]
    Read(#[source] io::Error),
    #[error("its {TABLE_FILE} is not a node table ({0})")]
    BadTable(String),
    #[error("its {TABLE_FILE} has format {found}; this pibake reads format {TABLE_FORMAT}")]
    Format { found: u32 },
    #[error("its boot partition could not be decoded into {dir} to read {TABLE_FILE} (set TMPDIR to a directory with room, or flash the raw .img)")]
    Extract {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error("{}", not_served(node, served, siblings, target))]
    NotServed {
        node: String,
        served: Box<Served>,
        /// Every other image in the folder whose nodes could be learnt cheaply.
        siblings: Vec<Sibling>,
        target: PathBuf,
    },
    #[error("--node {node}: cannot tell which nodes {} serves, so {node} cannot be checked; nothing was written to {}", image.display(), target.display())]
    Unknown {
        node: String,
        image: PathBuf,
        target: PathBuf,
        #[source]
        why: Missing,
    },
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn not_served(node: &str, served: &Served, siblings: &[Sibling], target: &Path) -> String {
    let role = if served.role.is_empty() {
        String::new()
    } else {
        format!(" (role {})", served.role)
    };
    let mut s = format!(
        "--node {node}: {} serves {}{role}, not {node}",
        file_name(&served.image),
        describe(&served.nodes),
    );
    let by: Vec<&str> = siblings
        .iter()
        .filter(|x| x.nodes.contains(node))
        .map(|x| x.file.as_str())
        .collect();
    if !by.is_empty() {
        s += &format!(
            "; {node} is served by {}: flash that image instead",
            by.join(" and ")
        );
    } else if siblings.is_empty() {
        s += "; no other image beside it says which nodes it serves";
    } else {
        let others: Vec<String> = siblings
            .iter()
            .map(|x| format!("{} serves {}", x.file, describe(&x.nodes)))
            .collect();
        s += &format!(
            "; no image beside it serves {node} either ({}): check the name against the cluster file, and build again if the node is new",
            others.join(", ")
        );
    }
    s + &format!("; nothing was written to {}", target.display())
}

/// Node names in natural order, consecutive numbered runs of three or more shortened:
/// `aux1, worker1..worker6`.
pub fn describe(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "no node".to_owned();
    }
    let split = |n: &str| -> (String, Option<u64>) {
        let digits = n.len() - n.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (p, d) = n.split_at(n.len() - digits);
        match d.parse::<u64>() {
            // Only canonical numbers (no leading zero) join a run.
            Ok(v) if v.to_string() == d => (p.to_owned(), Some(v)),
            _ => (n.to_owned(), None),
        }
    };
    let mut items: Vec<(String, Option<u64>, &str)> = names
        .iter()
        .map(|n| {
            let (p, v) = split(n);
            (p, v, n.as_str())
        })
        .collect();
    items.sort();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let mut j = i;
        while let (Some(a), Some(b)) = (items[j].1, items.get(j + 1).and_then(|x| x.1)) {
            if items[j + 1].0 != items[i].0 || b != a + 1 {
                break;
            }
            j += 1;
        }
        if j - i >= 2 {
            out.push(format!("{}..{}", items[i].2, items[j].2));
        } else {
            out.extend(items[i..=j].iter().map(|x| x.2.to_owned()));
        }
        i = j + 1;
    }
    out.join(", ")
}

/// Refuses `node` unless `image` serves it; `target` is only named in the messages.
pub fn check(image: &Path, node: &NodeName, target: &Path) -> Result<Served, NodesError> {
    let served = served(image).map_err(|why| NodesError::Unknown {
        node: node.to_string(),
        image: image.to_owned(),
        target: target.to_owned(),
        why,
    })?;
    if served.nodes.contains(node.as_str()) {
        return Ok(served);
    }
    Err(NodesError::NotServed {
        node: node.to_string(),
        siblings: siblings(image),
        served: Box::new(served),
        target: target.to_owned(),
    })
}

/// The nodes `image` (`.img` or `.img.zst`, told by content) serves, from its node table.
pub fn served(image: &Path) -> Result<Served, Missing> {
    let text = if source::is_zstd(image) {
        table_of_compressed(image)?
    } else {
        table_of_raw(image)?
    };
    let (role, nodes) = parse_table(&text)?;
    Ok(Served {
        image: image.to_owned(),
        role,
        nodes,
    })
}

/// The role and node names of a node table.
pub fn parse_table(text: &str) -> Result<(String, BTreeSet<String>), Missing> {
    match NodeTable::from_toml(text) {
        Ok(t) => Ok((t.role, t.nodes.into_keys().collect())),
        Err(TableError::Format { found }) => Err(Missing::Format { found }),
        Err(TableError::Parse(e)) => Err(Missing::BadTable(e.message().trim().to_owned())),
        Err(e) => Err(Missing::BadTable(e.to_string())),
    }
}

/// The node list of a build's manifest (the one manifest type, `pibake_image::manifest`).
struct ManifestNodes {
    nodes: Vec<String>,
}

impl ManifestNodes {
    /// None when absent, unreadable or without a node list (older builds).
    fn read(path: &Path) -> Option<Self> {
        let m = Manifest::from_json(&std::fs::read(path).ok()?).ok()?;
        Some(ManifestNodes { nodes: m.nodes? })
    }
}

/// The boot partition: partition 1, FAT (a Pi's FAT32 in an MBR, the EFI system partition
/// of a GPT), as [`crate::boot`] finds it to write the node file.
fn boot_partition(t: &table::Table) -> Result<Partition, Missing> {
    let p = t
        .partitions()
        .iter()
        .find(|p| p.number == 1 && p.len > 0)
        .ok_or(Missing::NoBoot)?;
    if !p.kind.is_fat() {
        return Err(Missing::NotFat {
            kind: boot::describe(&p.kind),
        });
    }
    Ok(p.clone())
}

/// The table of a raw image, read in place through a window over the boot partition.
fn table_of_raw(image: &Path) -> Result<String, Missing> {
    let src = |source| {
        Missing::Source(SourceError::Io {
            path: image.to_owned(),
            source,
        })
    };
    let f = File::open(image).map_err(src)?;
    let len = f.metadata().map_err(src)?.len();
    let t = table::read_table(&mut &f, len).map_err(Missing::Table)?;
    let boot = boot_partition(&t)?;
    if boot.start + boot.len > len {
        return Err(Missing::Short {
            number: boot.number,
        });
    }
    let win = Window::new(&f, boot.start, boot.len).map_err(src)?;
    table_in_fat(win, boot.number)
}

/// Decodes the image up to the end of its boot partition, keeping only that partition,
/// sparse, in a temp file; then reads the table from it. The rest of the image (the root) is
/// never decoded.
fn table_of_compressed(image: &Path) -> Result<String, Missing> {
    let mut src = ImageSource::open(image)?;
    let mut head = vec![0u8; 1 << 20];
    let n = src.read_full(&mut head)?;
    head.truncate(n);
    let t =
        table::read_table(&mut Cursor::new(&head), head.len() as u64).map_err(Missing::Table)?;
    let boot = boot_partition(&t)?;
    let short = || Missing::Short {
        number: boot.number,
    };
    let dir = std::env::temp_dir();
    let ext = |source| Missing::Extract {
        dir: dir.clone(),
        source,
    };
    let tmp = TempFile::create(&dir, "pibake-flash-boot").map_err(ext)?;
    let mut copy = SparseCopy {
        out: &tmp.file,
        at: 0,
    };
    // What of the partition the head already holds, then the rest of the stream.
    let in_head = usize::try_from(boot.start).map_or(&[][..], |s| head.get(s..).unwrap_or(&[]));
    let in_head = &in_head[..in_head
        .len()
        .min(usize::try_from(boot.len).unwrap_or(usize::MAX))];
    copy.put(in_head).map_err(ext)?;
    let mut buf = vec![0u8; 1 << 20];
    if !src.skip_to(boot.start + copy.at, &mut buf)? {
        return Err(short());
    }
    while copy.at < boot.len {
        let want = usize::try_from(boot.len - copy.at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let k = src.read_full(&mut buf[..want])?;
        if k == 0 {
            return Err(short());
        }
        copy.put(&buf[..k]).map_err(ext)?;
    }
    tmp.file.set_len(boot.len).map_err(ext)?;
    let win = Window::new(&tmp.file, 0, boot.len).map_err(ext)?;
    table_in_fat(win, boot.number)
}

/// [`TABLE_FILE`] in the root directory of the FAT filesystem `part` (partition `number`,
/// for messages), read through [`ReadOnly`].
fn table_in_fat<T: Read + Seek>(part: T, number: u32) -> Result<String, Missing> {
    let fs = FileSystem::new(ReadOnly(part), FsOptions::new())
        .map_err(|source| Missing::BadFat { number, source })?;
    let mut bytes = Vec::new();
    match fs.root_dir().open_file(TABLE_FILE) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(Missing::Read)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Missing::NoTable),
        Err(e) => return Err(Missing::Read(e)),
    }
    String::from_utf8(bytes).map_err(|_| Missing::BadTable("not UTF-8".to_owned()))
}

/// A reader that fails every write: `fatfs` wants a `Write` even to read, and reading the table
/// must leave the image as it is (it writes nothing when it only reads, with access dates off,
/// as in [`FsOptions::new`]; this makes sure).
struct ReadOnly<T>(T);

impl<T: Read> Read for ReadOnly<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Seek> Seek for ReadOnly<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

impl<T> Write for ReadOnly<T> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the image is only read",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the partition's non-zero 4 KiB blocks at their offsets (the copy stays sparse).
struct SparseCopy<'a> {
    out: &'a File,
    at: u64,
}

impl SparseCopy<'_> {
    fn put(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut w = self.out;
        for (i, blk) in chunk.chunks(4096).enumerate() {
            if blk.iter().any(|&b| b != 0) {
                w.seek(SeekFrom::Start(self.at + (i * 4096) as u64))?;
                w.write_all(blk)?;
            }
        }
        self.at += chunk.len() as u64;
        Ok(())
    }
}

/// A temp file removed when dropped (this crate has no `tempfile` dependency).
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create(dir: &Path, prefix: &str) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for i in 0..16u32 {
            let path = dir.join(format!("{prefix}.{pid}.{nanos:08x}{i:02}"));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => return Ok(Self { path, file }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free temp file name")))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl fmt::Debug for TempFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempFile")
            .field("path", &self.path)
            .finish()
    }
}

/// The other images in `image`'s folder and the nodes they serve, learnt cheaply: a raw image's
/// own table, else a compressed one's manifest. Images whose nodes cannot be learnt so are left
/// out; none is decoded.
pub fn siblings(image: &Path) -> Vec<Sibling> {
    let dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let own = stem(&file_name(image));
    let want_zst = source::is_zstd(image);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let stems: BTreeSet<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| {
            [".img.zst", ".img", ".manifest.json"]
                .iter()
                .find_map(|s| n.strip_suffix(s).map(str::to_owned))
        })
        .filter(|s| !s.is_empty() && *s != own)
        .collect();
    let mut out = Vec::new();
    for s in stems {
        let raw = dir.join(format!("{s}.img"));
        let zst = dir.join(format!("{s}.img.zst"));
        let file = if (want_zst || !raw.is_file()) && zst.is_file() {
            format!("{s}.img.zst")
        } else if raw.is_file() {
            format!("{s}.img")
        } else {
            continue;
        };
        let from_table = (raw.is_file() && !source::is_zstd(&raw))
            .then(|| table_of_raw(&raw).ok())
            .flatten()
            .and_then(|t| parse_table(&t).ok())
            .map(|(_, n)| n);
        let nodes = from_table.or_else(|| {
            ManifestNodes::read(&dir.join(format!("{s}.manifest.json")))
                .map(|m| m.nodes.into_iter().collect())
        });
        if let Some(nodes) = nodes {
            out.push(Sibling { file, nodes });
        }
    }
    out
}

/// `x.img.zst` / `x.img` / `x.manifest.json` → `x`.
fn stem(name: &str) -> String {
    [".img.zst", ".img", ".manifest.json"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn node_lists_read_naturally() {
        let w: Vec<String> = (1..=12).map(|i| format!("worker{i}")).collect();
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        assert_eq!(describe(&set(&w)), "worker1..worker12");
        assert_eq!(
            describe(&set(&["master1", "master2", "aux1"])),
            "aux1, master1, master2"
        );
        assert_eq!(
            describe(&set(&["n1", "n2", "n3", "n5", "n01", "gps"])),
            "gps, n1..n3, n5, n01"
        );
        assert_eq!(describe(&set(&[])), "no node");
    }

    fn table(role: &str, nodes: &[&str]) -> NodeTable {
        use pibake_firstboot::table::{ClockLimits, NodeEntry, Swarm, SwarmRole};
        NodeTable {
            format: TABLE_FORMAT,
            cluster: "lab".into(),
            domain: "lab.example".into(),
            role: role.into(),
            build_epoch: 1,
            interface: "eth0".into(),
            clock: ClockLimits {
                max_offset_ms: 1,
                max_root_distance_ms: 1,
                wait_seconds: 1,
            },
            swarm: Swarm {
                join: vec![],
                wait_seconds: 1,
                stacks: vec![],
                preloaded_stacks: vec![],
                images: vec![],
            },
            nodes: nodes
                .iter()
                .map(|n| {
                    let e = NodeEntry {
                        address: std::net::Ipv4Addr::new(10, 0, 0, 1),
                        mac: None,
                        serial: None,
                        swarm_role: SwarmRole::Worker,
                        files: vec![],
                    };
                    ((*n).to_owned(), e)
                })
                .collect(),
        }
    }

    #[test]
    fn tables_are_the_agents() {
        assert_eq!(TABLE_FILE, pibake_firstboot::bootfiles::TABLE_FILE);
        let text = table("worker", &["worker1", "worker2"])
            .to_toml()
            .expect("toml");
        let (role, nodes) = parse_table(&text).expect("table");
        assert_eq!(role, "worker");
        assert_eq!(nodes, set(&["worker1", "worker2"]));
        let mut t = table("worker", &["worker1"]);
        t.format = TABLE_FORMAT + 1;
        assert!(matches!(
            parse_table(&t.to_toml().expect("toml")),
            Err(Missing::Format { found }) if found == TABLE_FORMAT + 1
        ));
        assert!(matches!(
            parse_table("format = 1\nrole = \"w\"\n"),
            Err(Missing::BadTable(_))
        ));
    }

    /// A 4 MiB FAT filesystem in memory holding `files` (name, content) in its root; a name
    /// ending in `/` is made a directory.
    fn fat(files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
        let mut disk = Cursor::new(vec![0u8; 4 << 20]);
        fatfs::format_volume(
            &mut disk,
            fatfs::FormatVolumeOptions::new().volume_id(0x1234_5678),
        )?;
        disk.set_position(0);
        {
            let fs = FileSystem::new(&mut disk, FsOptions::new())?;
            for &(name, content) in files {
                match name.strip_suffix('/') {
                    Some(dir) => {
                        fs.root_dir().create_dir(dir)?;
                    }
                    None => fs.root_dir().create_file(name)?.write_all(content)?,
                }
            }
            fs.unmount()?;
        }
        Ok(disk.into_inner())
    }

    #[test]
    fn the_table_is_read_from_the_fat_root() -> anyhow::Result<()> {
        let text = table("worker", &["worker1"]).to_toml()?;
        let bytes = fat(&[
            ("config.txt", b"arm_64bit=1\n"),
            (TABLE_FILE, text.as_bytes()),
        ])?;
        let mut disk = Cursor::new(bytes.clone());
        assert_eq!(table_in_fat(&mut disk, 1).expect("a table"), text);
        assert!(disk.into_inner() == bytes, "reading changed the FAT");
        Ok(())
    }

    #[test]
    fn a_fat_without_a_readable_table_says_why() -> anyhow::Result<()> {
        let read = |bytes: Vec<u8>| table_in_fat(Cursor::new(bytes), 1);
        let e = read(fat(&[("config.txt", b"x")])?).expect_err("no table");
        assert!(matches!(e, Missing::NoTable), "{e:?}");
        assert!(e.to_string().contains("no pibake-nodes.toml"), "{e}");
        let e = read(fat(&[("pibake-nodes.toml/", b"")])?).expect_err("a directory");
        assert!(matches!(e, Missing::Read(_)), "{e:?}");
        let e = read(fat(&[(TABLE_FILE, b"\xff\xfe")])?).expect_err("not text");
        assert!(matches!(e, Missing::BadTable(_)), "{e:?}");
        let e = read(vec![0u8; 4 << 20]).expect_err("no FAT");
        assert!(matches!(e, Missing::BadFat { number: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("not a FAT filesystem"), "{e}");
        Ok(())
    }

    #[test]
    fn reads_of_the_image_cannot_write() {
        let mut disk = Cursor::new(vec![7u8; 16]);
        let mut r = ReadOnly(&mut disk);
        assert!(r.write_all(b"x").is_err());
        let mut b = [0u8; 4];
        assert!(r.read_exact(&mut b).is_ok());
        assert_eq!(disk.into_inner(), vec![7u8; 16]);
    }

    #[test]
    fn stems() {
        assert_eq!(stem("lab-worker.img.zst"), "lab-worker");
        assert_eq!(stem("lab-worker.img"), "lab-worker");
        assert_eq!(stem("lab-worker.manifest.json"), "lab-worker");
    }
}
