//! In-memory description of a file tree: entries with explicit owner, mode and content,
//! merged from layers (a later layer wins).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::path::EntryPath;

/// Where a file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Bytes held in memory (rendered templates, small generated files).
    Bytes(Arc<[u8]>),
    /// A file on disk, read when the image is written.
    Path(PathBuf),
    /// A byte range of the base rootfs this tree was read from (see [`crate::tar::Rootfs`]).
    Base { offset: u64, len: u64 },
}

impl Content {
    pub fn bytes(b: impl Into<Vec<u8>>) -> Self {
        Self::Bytes(Arc::from(b.into()))
    }
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File(Content),
    Dir,
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// Whiteout: removes the path (and everything below it) from the layers underneath.
    Delete,
}

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: EntryPath,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time; `None` means "the build's SOURCE_DATE_EPOCH". Always clamped to it.
    pub mtime: Option<u64>,
    /// Extended attributes (e.g. `security.capability`), sorted by name when written.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Entries read from a base tar as one hard-linked inode share a group number; the
    /// tar writer emits the first (by path) as the file and the others as links to it.
    pub link_group: Option<u64>,
}

impl Entry {
    /// A root-owned entry with the given mode.
    pub fn new(path: EntryPath, kind: EntryKind, mode: u32) -> Self {
        Self {
            path,
            kind,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime: None,
            xattrs: Vec::new(),
            link_group: None,
        }
    }
    pub fn file(path: EntryPath, content: Content, mode: u32) -> Self {
        Self::new(path, EntryKind::File(content), mode)
    }
    pub fn dir(path: EntryPath, mode: u32) -> Self {
        Self::new(path, EntryKind::Dir, mode)
    }
    pub fn symlink(path: EntryPath, target: impl Into<String>) -> Self {
        Self::new(path, EntryKind::Symlink(target.into()), 0o777)
    }
    pub fn delete(path: EntryPath) -> Self {
        Self::new(path, EntryKind::Delete, 0)
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// A named list of entries, stacked on top of the layers before it.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub name: String,
    pub entries: Vec<Entry>,
}

/// Opens file contents for writers (the base rootfs resolves [`Content::Base`]).
pub trait ContentSource {
    fn open<'a>(&'a self, content: &'a Content) -> io::Result<Box<dyn Read + 'a>>;
    fn len(&self, content: &Content) -> io::Result<u64>;
}

/// Resolves `Bytes` and `Path`; refuses `Base` (there is no base).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBase;

impl ContentSource for NoBase {
    fn open<'a>(&'a self, content: &'a Content) -> io::Result<Box<dyn Read + 'a>> {
        open_simple(content).unwrap_or_else(|| Err(no_base()))
    }
    fn len(&self, content: &Content) -> io::Result<u64> {
        len_simple(content).unwrap_or_else(|| Err(no_base()))
    }
}

fn no_base() -> io::Error {
    io::Error::other("content refers to a base rootfs but none was given")
}

pub(crate) fn open_simple(content: &Content) -> Option<io::Result<Box<dyn Read + '_>>> {
    match content {
        Content::Bytes(b) => Some(Ok(Box::new(&b[..]))),
        Content::Path(p) => Some(File::open(p).map(|f| Box::new(f) as Box<dyn Read>)),
        Content::Base { .. } => None,
    }
}

pub(crate) fn len_simple(content: &Content) -> Option<io::Result<u64>> {
    match content {
        Content::Bytes(b) => Some(Ok(b.len() as u64)),
        Content::Path(p) => Some(std::fs::metadata(p).map(|m| m.len())),
        Content::Base { .. } => None,
    }
}

/// Reads `len` bytes of a shared file from `offset` with positioned reads (no `&mut` needed).
#[derive(Debug)]
pub(crate) struct RangeReader<'a> {
    pub file: &'a File,
    pub pos: u64,
    pub end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "base file shorter than its index",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// A sorted, deduplicated tree. Directories come before their contents.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    entries: BTreeMap<EntryPath, Entry>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges layers in order; see [`Tree::apply`].
    pub fn from_layers<'a>(layers: impl IntoIterator<Item = &'a Layer>) -> Self {
        let mut t = Self::new();
        for l in layers {
            t.apply(l);
        }
        t
    }

    /// Stacks a layer: each entry replaces one at the same path; a non-directory replacing a
    /// directory (or a `Delete`) also removes everything below it.
    pub fn apply(&mut self, layer: &Layer) {
        for e in &layer.entries {
            self.insert(e.clone());
        }
    }

    /// Inserts one entry with layer semantics.
    pub fn insert(&mut self, e: Entry) {
        let replaces_dir = matches!(
            self.entries.get(&e.path).map(|x| &x.kind),
            Some(EntryKind::Dir)
        );
        if replaces_dir && e.kind != EntryKind::Dir {
            self.remove_below(&e.path);
        }
        if e.kind == EntryKind::Delete {
            self.entries.remove(&e.path);
            self.remove_below(&e.path);
            return;
        }
        self.entries.insert(e.path.clone(), e);
    }

    fn remove_below(&mut self, dir: &EntryPath) {
        let keys: Vec<EntryPath> = self.below(dir).map(|e| e.path.clone()).collect();
        for k in keys {
            self.entries.remove(&k);
        }
    }

    /// Entries strictly below `dir`, sorted.
    pub fn below<'a>(&'a self, dir: &EntryPath) -> impl Iterator<Item = &'a Entry> + 'a {
        // '/' + 1 == '0': the range covers exactly the paths starting with "dir/".
        let lo = format!("{dir}/");
        let hi = format!("{dir}0");
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(lo.as_str()),
                std::ops::Bound::Excluded(hi.as_str()),
            ))
            .map(|(_, e)| e)
    }

    /// Adds any missing parent directory as root-owned 0755.
    pub fn add_missing_parents(&mut self) {
        let mut missing = Vec::new();
        for p in self.entries.keys() {
            let mut cur = p.parent();
            while let Some(d) = cur {
                if self.entries.contains_key(&d) || missing.contains(&d) {
                    break;
                }
                cur = d.parent();
                missing.push(d);
            }
        }
        for d in missing {
            self.entries.insert(d.clone(), Entry::dir(d, 0o755));
        }
    }

    /// Moves everything strictly below `dir` into a new tree with paths relative to `dir`;
    /// `dir` itself stays (as the mount point).
    pub fn split_off_below(&mut self, dir: &EntryPath) -> Tree {
        let keys: Vec<EntryPath> = self.below(dir).map(|e| e.path.clone()).collect();
        let mut out = Tree::new();
        for k in keys {
            if let Some(mut e) = self.entries.remove(&k) {
                if let Some(rel) = k.strip_prefix(dir) {
                    e.path = rel.clone();
                    out.entries.insert(rel, e);
                }
            }
        }
        out
    }

    pub fn get(&self, p: &EntryPath) -> Option<&Entry> {
        self.entries.get(p)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> EntryPath {
        EntryPath::new(s).unwrap()
    }

    #[test]
    fn later_layer_wins_and_delete_removes_subtree() {
        let a = Layer {
            name: "a".into(),
            entries: vec![
                Entry::dir(p("etc"), 0o755),
                Entry::file(p("etc/x"), Content::bytes("1"), 0o644),
                Entry::dir(p("opt"), 0o755),
                Entry::file(p("opt/y"), Content::bytes("y"), 0o644),
            ],
        };
        let b = Layer {
            name: "b".into(),
            entries: vec![
                Entry::file(p("etc/x"), Content::bytes("2"), 0o600).owner(1, 2),
                Entry::delete(p("opt")),
                Entry::file(p("usr/z"), Content::bytes("z"), 0o644),
            ],
        };
        let mut t = Tree::from_layers([&a, &b]);
        t.add_missing_parents();
        let x = t.get(&p("etc/x")).unwrap();
        assert_eq!(x.kind, EntryKind::File(Content::bytes("2")));
        assert_eq!((x.mode, x.uid, x.gid), (0o600, 1, 2));
        assert!(t.get(&p("opt")).is_none() && t.get(&p("opt/y")).is_none());
        assert_eq!(t.get(&p("usr")).map(|e| &e.kind), Some(&EntryKind::Dir));
        let order: Vec<_> = t.iter().map(|e| e.path.as_str().to_owned()).collect();
        assert_eq!(order, ["etc", "etc/x", "usr", "usr/z"]);
    }

    #[test]
    fn file_replacing_dir_drops_children_and_split_moves_subtree() {
        let mut t = Tree::new();
        t.insert(Entry::dir(p("boot"), 0o755));
        t.insert(Entry::dir(p("boot/firmware"), 0o755));
        t.insert(Entry::file(
            p("boot/firmware/config.txt"),
            Content::bytes("a"),
            0o644,
        ));
        t.insert(Entry::file(p("boot/firmware2"), Content::bytes("b"), 0o644));
        let boot = t.split_off_below(&p("boot/firmware"));
        assert_eq!(
            boot.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["config.txt"]
        );
        assert!(t.get(&p("boot/firmware")).is_some() && t.get(&p("boot/firmware2")).is_some());
        t.insert(Entry::file(p("boot"), Content::bytes("x"), 0o644));
        assert_eq!(t.len(), 1);
    }
}
