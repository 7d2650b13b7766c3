//! The root file tree as tar: read a base rootfs tar (mmdebstrap's) without holding file
//! contents in memory, stack layers on it, split `boot/firmware/` off, and write one sorted,
//! clamped, deterministic tar of the root for `mke2fs -d`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ::tar::{Archive, Builder, EntryType, Header};

use crate::path::{EntryPath, PathError};
use crate::tree::{
    len_simple, open_simple, Content, ContentSource, Entry, EntryKind, Layer, RangeReader, Tree,
};

/// Seconds since the epoch that every timestamp in an image is clamped to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceDateEpoch(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("cannot read base rootfs tar {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read entry {index} of base rootfs tar {path}")]
    Read {
        path: PathBuf,
        index: usize,
        #[source]
        source: io::Error,
    },
    #[error("base rootfs tar {path}: bad entry name")]
    Name {
        path: PathBuf,
        #[source]
        source: PathError,
    },
    #[error("base rootfs tar {path}: hard link {link} points to {target}, which is not an earlier regular file")]
    Hardlink {
        path: PathBuf,
        link: String,
        target: String,
    },
    #[error("base rootfs tar {path}: entry {name} has unsupported type {kind:?}")]
    Unsupported {
        path: PathBuf,
        name: String,
        kind: EntryType,
    },
    #[error("cannot spool base rootfs contents to a temporary file")]
    Spool(#[source] io::Error),
    #[error("cannot write root tar entry {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Sizes of a written root tar, used to size the ext4 partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarStats {
    /// Number of entries written (inodes needed, roughly).
    pub entries: u64,
    /// Sum of regular file sizes, each rounded up to 4 KiB (blocks needed for data).
    pub data_blocks_bytes: u64,
    /// Size of the tar file itself.
    pub tar_bytes: u64,
}

/// Where `Content::Base` ranges live.
#[derive(Debug)]
enum Base {
    None,
    /// An uncompressed tar on disk: ranges point into it directly (no copy).
    InPlace(File),
    /// Contents copied out of a compressed tar into an anonymous temp file.
    Spool(File),
}

/// A root file tree whose regular-file contents stay on disk.
#[derive(Debug)]
pub struct Rootfs {
    tree: Tree,
    base: Base,
}

impl ContentSource for Rootfs {
    fn open<'a>(&'a self, content: &'a Content) -> io::Result<Box<dyn Read + 'a>> {
        let Content::Base { offset, len } = content else {
            return open_simple(content)
                .unwrap_or_else(|| Err(io::Error::other("unresolvable content")));
        };
        let file = match &self.base {
            Base::InPlace(f) | Base::Spool(f) => f,
            Base::None => {
                return Err(io::Error::other(
                    "content refers to a base rootfs but there is none",
                ))
            }
        };
        Ok(Box::new(RangeReader {
            file,
            pos: *offset,
            end: offset + len,
        }))
    }
    fn len(&self, content: &Content) -> io::Result<u64> {
        match content {
            Content::Base { len, .. } => Ok(*len),
            other => len_simple(other).unwrap_or(Ok(0)),
        }
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Rootfs {
    /// An empty root (for images made only of layers).
    pub fn empty() -> Self {
        Self {
            tree: Tree::new(),
            base: Base::None,
        }
    }

    /// Indexes a base rootfs tar. An uncompressed tar is indexed in place (file contents are
    /// read from it later by offset); a zstd-compressed one is decompressed once, its file
    /// contents spooled to an unlinked temp file in `spool_dir`.
    pub fn from_base_tar(path: &Path, spool_dir: &Path) -> Result<Self, TarError> {
        let open_err = |source| TarError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic).map_err(open_err)?;
        file.seek(SeekFrom::Start(0)).map_err(open_err)?;
        if n == 4 && magic == ZSTD_MAGIC {
            let dec = zstd::Decoder::new(file).map_err(open_err)?;
            let spool = tempfile::tempfile_in(spool_dir).map_err(TarError::Spool)?;
            let mut spool_w = BufWriter::new(spool);
            let mut pos = 0u64;
            let tree = index(
                path,
                Archive::new(dec).entries().map_err(open_err)?,
                |entry| {
                    let len = io::copy(entry, &mut spool_w)?;
                    let off = pos;
                    pos += len;
                    Ok(Content::Base { offset: off, len })
                },
            )?;
            let spool = spool_w
                .into_inner()
                .map_err(|e| TarError::Spool(e.into_error()))?;
            Ok(Self {
                tree,
                base: Base::Spool(spool),
            })
        } else {
            let reader = File::open(path).map_err(open_err)?;
            let mut ar = Archive::new(BufReader::with_capacity(1 << 16, reader));
            let tree = index(path, ar.entries_with_seek().map_err(open_err)?, |entry| {
                Ok(Content::Base {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                })
            })?;
            Ok(Self {
                tree,
                base: Base::InPlace(file),
            })
        }
    }

    /// Stacks a layer on the tree (later wins, `Delete` removes).
    pub fn apply_layer(&mut self, layer: &Layer) {
        self.tree.apply(layer);
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Removes everything below `dir` (normally `boot/firmware`) from the root and returns it
    /// as its own tree, paths relative to `dir`; its contents still resolve through `self`.
    pub fn split_off(&mut self, dir: &EntryPath) -> Tree {
        self.tree.split_off_below(dir)
    }

    /// Writes the tree as one sorted tar: mtimes clamped to `epoch`, numeric owners only
    /// (no user/group names), hard-link groups kept, missing parents added as 0755 root dirs.
    pub fn write_tar<W: Write>(
        &mut self,
        out: W,
        epoch: SourceDateEpoch,
    ) -> Result<TarStats, TarError> {
        self.tree.add_missing_parents();
        let mut counting = CountingWriter { inner: out, n: 0 };
        let mut b = Builder::new(&mut counting);
        let mut stats = TarStats::default();
        let werr = |p: &str| {
            let p = p.to_owned();
            move |source| TarError::Write { path: p, source }
        };
        // Root directory first, like mmdebstrap's "./".
        let mut root = header(EntryType::Directory, 0o755, 0, 0, epoch.0);
        b.append_data(&mut root, "./", io::empty())
            .map_err(werr("."))?;
        let mut groups: HashMap<u64, String> = HashMap::new();
        for e in self.tree.iter() {
            let name = e.path.to_string();
            let mtime = e.mtime.unwrap_or(epoch.0).min(epoch.0);
            if !e.xattrs.is_empty() {
                let mut x: Vec<(String, &[u8])> = e
                    .xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                    .collect();
                x.sort();
                b.append_pax_extensions(x.iter().map(|(k, v)| (k.as_str(), *v)))
                    .map_err(werr(&name))?;
            }
            stats.entries += 1;
            match &e.kind {
                EntryKind::File(c) => {
                    if let Some(g) = e.link_group {
                        if let Some(first) = groups.get(&g) {
                            let mut h = header(EntryType::Link, e.mode, e.uid, e.gid, mtime);
                            b.append_link(&mut h, &name, first).map_err(werr(&name))?;
                            continue;
                        }
                        groups.insert(g, name.clone());
                    }
                    let len = ContentSource::len(self, c).map_err(werr(&name))?;
                    let mut h = header(EntryType::Regular, e.mode, e.uid, e.gid, mtime);
                    h.set_size(len);
                    let r = ContentSource::open(self, c).map_err(werr(&name))?;
                    // A short source must not yield a corrupt archive: take + length check.
                    let mut r = ExactReader {
                        inner: r.take(len),
                        left: len,
                    };
                    b.append_data(&mut h, &name, &mut r).map_err(werr(&name))?;
                    stats.data_blocks_bytes += len.div_ceil(4096) * 4096;
                }
                EntryKind::Dir => {
                    let mut h = header(EntryType::Directory, e.mode, e.uid, e.gid, mtime);
                    b.append_data(&mut h, format!("{name}/"), io::empty())
                        .map_err(werr(&name))?;
                }
                EntryKind::Symlink(t) => {
                    let mut h = header(EntryType::Symlink, e.mode, e.uid, e.gid, mtime);
                    b.append_link(&mut h, &name, t).map_err(werr(&name))?;
                }
                EntryKind::CharDevice { major, minor }
                | EntryKind::BlockDevice { major, minor } => {
                    let t = if matches!(e.kind, EntryKind::CharDevice { .. }) {
                        EntryType::Char
                    } else {
                        EntryType::Block
                    };
                    let mut h = header(t, e.mode, e.uid, e.gid, mtime);
                    h.set_device_major(*major).map_err(werr(&name))?;
                    h.set_device_minor(*minor).map_err(werr(&name))?;
                    b.append_data(&mut h, &name, io::empty())
                        .map_err(werr(&name))?;
                }
                EntryKind::Fifo => {
                    let mut h = header(EntryType::Fifo, e.mode, e.uid, e.gid, mtime);
                    b.append_data(&mut h, &name, io::empty())
                        .map_err(werr(&name))?;
                }
                EntryKind::Delete => stats.entries -= 1,
            }
        }
        b.finish().map_err(werr("end of archive"))?;
        drop(b);
        counting.inner.flush().map_err(werr("end of archive"))?;
        stats.tar_bytes = counting.n;
        Ok(stats)
    }
}

fn header(t: EntryType, mode: u32, uid: u32, gid: u32, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(mode & 0o7777);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file content shorter than its size",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Builds the tree from archive entries; `content` stores or locates a regular file's bytes.
fn index<R: Read>(
    path: &Path,
    entries: ::tar::Entries<'_, R>,
    mut content: impl FnMut(&mut ::tar::Entry<'_, R>) -> io::Result<Content>,
) -> Result<Tree, TarError> {
    let mut tree = Tree::new();
    let mut next_group = 0u64;
    for (index, entry) in entries.enumerate() {
        let rerr = |source| TarError::Read {
            path: path.to_owned(),
            index,
            source,
        };
        let mut entry = entry.map_err(rerr)?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(p) = EntryPath::from_archive(&raw_name).map_err(|source| TarError::Name {
            path: path.to_owned(),
            source,
        })?
        else {
            continue; // the root itself
        };
        let h = entry.header().clone();
        let mode = h.mode().map_err(rerr)? & 0o7777;
        let uid = u32::try_from(h.uid().map_err(rerr)?).unwrap_or(u32::MAX);
        let gid = u32::try_from(h.gid().map_err(rerr)?).unwrap_or(u32::MAX);
        let mtime = h.mtime().map_err(rerr)?;
        let et = h.entry_type();
        let dev = |h: &Header| -> io::Result<(u32, u32)> {
            Ok((
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            ))
        };
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(rerr)? {
            for ext in exts {
                let ext = ext.map_err(rerr)?;
                if let Ok(k) = ext.key() {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        let mut link_group = None;
        let kind = match et {
            EntryType::Regular | EntryType::Continuous => {
                EntryKind::File(content(&mut entry).map_err(rerr)?)
            }
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink => {
                let t = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                EntryKind::Symlink(t)
            }
            EntryType::Link => {
                let t = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let bad = || TarError::Hardlink {
                    path: path.to_owned(),
                    link: raw_name.clone(),
                    target: t.clone(),
                };
                let tp = EntryPath::from_archive(&t).ok().flatten().ok_or_else(bad)?;
                let target = tree.get(&tp).ok_or_else(bad)?;
                let EntryKind::File(c) = &target.kind else {
                    return Err(bad());
                };
                let c = c.clone();
                let g = match target.link_group {
                    Some(g) => g,
                    None => {
                        let g = next_group;
                        next_group += 1;
                        let mut te = target.clone();
                        te.link_group = Some(g);
                        tree.insert(te);
                        g
                    }
                };
                link_group = Some(g);
                EntryKind::File(c)
            }
            EntryType::Char => {
                let (major, minor) = dev(&h).map_err(rerr)?;
                EntryKind::CharDevice { major, minor }
            }
            EntryType::Block => {
                let (major, minor) = dev(&h).map_err(rerr)?;
                EntryKind::BlockDevice { major, minor }
            }
            EntryType::Fifo => EntryKind::Fifo,
            // Global pax headers carry no file.
            EntryType::XGlobalHeader => continue,
            other => {
                return Err(TarError::Unsupported {
                    path: path.to_owned(),
                    name: raw_name,
                    kind: other,
                })
            }
        };
        tree.insert(Entry {
            path: p,
            kind,
            mode,
            uid,
            gid,
            mtime: Some(mtime),
            xattrs,
            link_group,
        });
    }
    Ok(tree)
}
