//! Which nodes an image serves, learnt before anything is written, so that `--node` can only
//! name one of them.
//!
//! The truth is the image's own node table, `/etc/pibake/nodes.toml` in its ext4 root, parsed
//! by the agent's own definition ([`pibake_firstboot::table::NodeTable`]). It is read with
//! `debugfs` (e2fsprogs), never by mounting:
//!
//! - a raw `.img`: straight from the image file, at the root partition's offset;
//! - a `.img.zst`: the manifest a build writes beside it (`<stem>.manifest.json`) lists the
//!   served nodes, and is believed only when its `sha256` is the decoded image's (one decoding
//!   pass, nothing written); otherwise the root partition is decoded into a sparse temp file
//!   (in `$TMPDIR`, removed afterwards) and its table read from there.
//!
//! A refusal names the image beside it that serves the node: sibling raw images are asked
//! for their own tables, compressed ones for their manifests (a hint, not a decision).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use pibake_firstboot::table::{NodeTable, TableError, TABLE_FORMAT};
use pibake_image::manifest::Manifest;
use pibake_image::table::{self, Partition, ReadTableError};

use crate::boot::NodeName;
use crate::source::{self, ImageSource, SourceError};

/// Where the node table lives in an image: firstboot's `TABLE_PATH`, absolute (a test keeps
/// the two equal).
pub const TABLE_PATH: &str = "/etc/pibake/nodes.toml";

/// How the served nodes were learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The image's own node table.
    Table,
    /// The manifest beside a compressed image, whose sha256 is the decoded image's.
    Manifest(PathBuf),
}

/// The nodes an image serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub image: PathBuf,
    /// The role the image was built for.
    pub role: String,
    pub nodes: BTreeSet<String>,
    pub evidence: Evidence,
    /// Decoded size and sha256, when learning the nodes took a whole decoding pass.
    pub measured: Option<(u64, String)>,
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
    #[error("it has no Linux root partition, so no {TABLE_PATH}")]
    NoRoot,
    #[error("it ends before the end of its root partition {number}")]
    Short { number: u32 },
    #[error(
        "its root partition {number} is not ext4, so it has no {TABLE_PATH}: is it a pibake image?"
    )]
    NotExt4 { number: u32 },
    #[error("its root filesystem has no {TABLE_PATH}: it is not a pibake image, or one built before images carried their node table")]
    NoTable,
    #[error("its {TABLE_PATH} is not a node table ({0})")]
    BadTable(String),
    #[error("its {TABLE_PATH} has format {found}; this pibake reads format {TABLE_FORMAT}")]
    Format { found: u32 },
    #[error("debugfs cannot be run (install e2fsprogs)")]
    Tool(#[source] io::Error),
    #[error("debugfs could not read {TABLE_PATH}: {0}")]
    Debugfs(String),
    #[error("its root partition could not be decoded into {dir} to read {TABLE_PATH} (set TMPDIR to a directory with room, or flash the raw .img)")]
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

/// The nodes `image` (`.img` or `.img.zst`, told by content) serves.
pub fn served(image: &Path) -> Result<Served, Missing> {
    if !source::is_zstd(image) {
        let text = table_of_raw(image, true)?;
        return served_from_text(image, &text);
    }
    let mpath = crate::diff::manifest_path(image);
    if let Some(m) = ManifestNodes::read(&mpath) {
        // Believed only if it describes these very bytes.
        let (size, sha256) = source::measure(image)?;
        if m.sha256 == sha256 {
            return Ok(Served {
                image: image.to_owned(),
                role: m.role,
                nodes: m.nodes.into_iter().collect(),
                evidence: Evidence::Manifest(mpath),
                measured: Some((size, sha256)),
            });
        }
    }
    let text = table_of_compressed(image)?;
    served_from_text(image, &text)
}

fn served_from_text(image: &Path, text: &str) -> Result<Served, Missing> {
    let (role, nodes) = parse_table(text)?;
    Ok(Served {
        image: image.to_owned(),
        role,
        nodes,
        evidence: Evidence::Table,
        measured: None,
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
    sha256: String,
    role: String,
    nodes: Vec<String>,
}

impl ManifestNodes {
    /// None when absent, unreadable or without a node list (older builds).
    fn read(path: &Path) -> Option<Self> {
        let m = Manifest::from_json(&std::fs::read(path).ok()?).ok()?;
        Some(ManifestNodes {
            nodes: m.nodes?,
            sha256: m.sha256,
            role: m.role,
        })
    }
}

/// The partition that holds the root: the first Linux one (a Pi image's partition 2).
fn root_partition(t: &table::Table) -> Result<Partition, Missing> {
    t.partitions()
        .iter()
        .find(|p| p.kind.is_linux() && p.len > 0)
        .cloned()
        .ok_or(Missing::NoRoot)
}

fn is_ext(superblock_area: &[u8]) -> bool {
    // The superblock starts at byte 1024; its magic 0xef53 is at offset 56.
    superblock_area.len() >= 1024 + 58 && superblock_area[1024 + 56..1024 + 58] == [0x53, 0xef]
}

/// The table of a raw image; `may_copy` allows reading through a temp copy of the root when
/// debugfs cannot be pointed at the image itself.
fn table_of_raw(image: &Path, may_copy: bool) -> Result<String, Missing> {
    let src = |source| {
        Missing::Source(SourceError::Io {
            path: image.to_owned(),
            source,
        })
    };
    let mut f = File::open(image).map_err(src)?;
    let len = f.metadata().map_err(src)?.len();
    let t = table::read_table(&mut f, len).map_err(Missing::Table)?;
    let root = root_partition(&t)?;
    if root.start + root.len > len {
        return Err(Missing::Short {
            number: root.number,
        });
    }
    let mut sb = vec![0u8; 2048];
    f.seek(SeekFrom::Start(root.start))
        .and_then(|_| f.read_exact(&mut sb))
        .map_err(src)?;
    if !is_ext(&sb) {
        return Err(Missing::NotExt4 {
            number: root.number,
        });
    }
    // debugfs's unix I/O manager takes options after a '?': a name holding one cannot be
    // given with an offset, so such an image is read through a copy of its root.
    if image.to_string_lossy().contains('?') {
        return if may_copy {
            table_of_compressed(image)
        } else {
            Err(Missing::Debugfs("a '?' in the file name".to_owned()))
        };
    }
    read_with_debugfs(&format!("{}?offset={}", image.display(), root.start))
}

/// Decodes the image up to the end of its root partition, keeping only the root, sparse, in a
/// temp file; then reads the table from it.
fn table_of_compressed(image: &Path) -> Result<String, Missing> {
    let mut src = ImageSource::open(image)?;
    let mut head = vec![0u8; 1 << 20];
    let n = src.read_full(&mut head)?;
    head.truncate(n);
    let t =
        table::read_table(&mut Cursor::new(&head), head.len() as u64).map_err(Missing::Table)?;
    let root = root_partition(&t)?;
    let short = || Missing::Short {
        number: root.number,
    };
    let dir = std::env::temp_dir();
    let ext = |source| Missing::Extract {
        dir: dir.clone(),
        source,
    };
    let tmp = TempFile::create(&dir, "pibake-flash-root").map_err(ext)?;
    let mut copy = RootCopy {
        out: &tmp.file,
        at: 0,
        superblock: Vec::with_capacity(2048),
    };
    // What of the root the head already holds, then the rest of the stream.
    let in_head = usize::try_from(root.start).map_or(&[][..], |s| head.get(s..).unwrap_or(&[]));
    let in_head = &in_head[..in_head
        .len()
        .min(usize::try_from(root.len).unwrap_or(usize::MAX))];
    copy.put(in_head).map_err(ext)?;
    let mut buf = vec![0u8; 1 << 20];
    if !src.skip_to(root.start, &mut buf)? {
        return Err(short());
    }
    while copy.at < root.len {
        let want = usize::try_from(root.len - copy.at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let k = src.read_full(&mut buf[..want])?;
        if k == 0 {
            return Err(short());
        }
        copy.put(&buf[..k]).map_err(ext)?;
    }
    if !is_ext(&copy.superblock) {
        return Err(Missing::NotExt4 {
            number: root.number,
        });
    }
    tmp.file.set_len(root.len).map_err(ext)?;
    read_with_debugfs(&tmp.path.to_string_lossy())
}

/// Writes the root's non-zero 4 KiB blocks at their offsets (the copy stays sparse) and keeps
/// the first 2 KiB to check the superblock.
struct RootCopy<'a> {
    out: &'a File,
    at: u64,
    superblock: Vec<u8>,
}

impl RootCopy<'_> {
    fn put(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.superblock.len() < 2048 {
            let k = (2048 - self.superblock.len()).min(chunk.len());
            self.superblock.extend_from_slice(&chunk[..k]);
        }
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

fn debugfs(fs: &str, request: &str) -> Result<(bool, String, String), Missing> {
    // A relative name starting with '-' would read as an option.
    let fs = if fs.starts_with('-') {
        format!("./{fs}")
    } else {
        fs.to_owned()
    };
    let o = Command::new("debugfs")
        .env("LC_ALL", "C")
        // Catastrophic mode: read-only, bitmaps not read (faster, and enough to read a file).
        .arg("-c")
        .arg("-R")
        .arg(request)
        .arg(fs)
        .output()
        .map_err(Missing::Tool)?;
    Ok((
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

fn debugfs_message(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.contains("catastrophic mode"))
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// `stat` then `cat` of the table; None of the file's absence is an error of its own.
fn read_with_debugfs(fs: &str) -> Result<String, Missing> {
    let (ok, stat, err) = debugfs(fs, &format!("stat {TABLE_PATH}"))?;
    if !ok {
        return Err(Missing::Debugfs(debugfs_message(&err)));
    }
    if !stat.contains("Type: regular") {
        return if err.contains("not found") || stat.trim().is_empty() {
            Err(Missing::NoTable)
        } else {
            Err(Missing::BadTable("not a regular file".to_owned()))
        };
    }
    let size = stat
        .lines()
        .find(|l| l.trim_start().starts_with("User:"))
        .and_then(|l| l.split("Size:").nth(1))
        .and_then(|s| s.trim().parse::<usize>().ok());
    let (ok, text, err) = debugfs(fs, &format!("cat {TABLE_PATH}"))?;
    if !ok || size.is_some_and(|n| n != text.len()) {
        return Err(Missing::Debugfs(debugfs_message(&err)));
    }
    Ok(text)
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
            .then(|| table_of_raw(&raw, false).ok())
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
        assert_eq!(
            TABLE_PATH,
            format!("/{}", pibake_firstboot::table::TABLE_PATH)
        );
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

    #[test]
    fn stems() {
        assert_eq!(stem("lab-worker.img.zst"), "lab-worker");
        assert_eq!(stem("lab-worker.img"), "lab-worker");
        assert_eq!(stem("lab-worker.manifest.json"), "lab-worker");
    }
}
