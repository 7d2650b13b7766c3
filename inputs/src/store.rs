//! The content-addressed store: `<store>/<sha256>-<name>`, one immutable file per entry.
//!
//! Inserts stream into a temp file under `<store>/tmp/`, are hashed on the way, fsynced and
//! renamed into place, so an entry is complete or absent. Inserts hold a shared lock on
//! `<store>/lock`; `gc` holds it exclusively (and then also clears temp files left by killed
//! processes), so concurrent processes are safe. Roots (`<store>/roots/<name>`) record what
//! locks and builds reference, one entry name per line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::digest::{HashingWriter, Sha256};
use pibake_host::atomic::{self, sync_dir};

/// The name of a store entry: `<sha256>-<name>`, where `name` is a plain file name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryName {
    sha256: Sha256,
    name: String,
}

/// A name that cannot be a store entry.
#[derive(Debug, thiserror::Error)]
#[error(
    "not a store entry name: {0:?} (want <sha256>-<file name> with no '/', not starting with '.')"
)]
pub struct BadEntryName(pub String);

impl EntryName {
    /// `name` must be a plain file name (ASCII graphic characters, no '/', not starting with '.').
    pub fn new(sha256: Sha256, name: &str) -> Result<Self, BadEntryName> {
        let ok = !name.is_empty()
            && name.len() <= 180
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\');
        if !ok {
            return Err(BadEntryName(name.to_owned()));
        }
        Ok(Self {
            sha256,
            name: name.to_owned(),
        })
    }

    /// The content digest.
    pub fn sha256(&self) -> Sha256 {
        self.sha256
    }

    /// The human part of the name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for EntryName {
    type Err = BadEntryName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEntryName(s.to_owned());
        let (h, n) = (s.get(..64).ok_or_else(bad)?, s.get(64..).ok_or_else(bad)?);
        let n = n.strip_prefix('-').ok_or_else(bad)?;
        Self::new(h.parse().map_err(|_| bad())?, n).map_err(|_| bad())
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.sha256, self.name)
    }
}

impl fmt::Debug for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryName({self})")
    }
}

/// What an insert must receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Sha256,
    pub size: u64,
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("reading the data to insert as {name}")]
    Source { name: String, source: io::Error },
    #[error("{name}: expected sha256 {expected} ({expected_size} bytes), received sha256 {received} ({received_size} bytes); nothing stored")]
    Mismatch {
        name: String,
        expected: Sha256,
        expected_size: u64,
        received: Sha256,
        received_size: u64,
    },
    #[error("{name}: more than the expected {expected_size} bytes; nothing stored")]
    TooLong { name: String, expected_size: u64 },
    #[error(transparent)]
    BadName(#[from] BadEntryName),
    #[error("no home directory: set XDG_CACHE_HOME or HOME, or pass --store")]
    NoHome,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Result of [`Store::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries rehashed.
    pub checked: usize,
    /// Entries whose content does not match their name.
    pub corrupt: Vec<EntryName>,
}

/// Result of [`Store::gc`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed: Vec<EntryName>,
    /// Bytes freed, temp files included.
    pub freed_bytes: u64,
}

/// A file whose content was checked to be an entry ([`Store::check_part`]); removed when
/// dropped unless [`Store::adopt`]ed.
#[derive(Debug)]
pub struct CheckedPart {
    tmp: tempfile::NamedTempFile,
    entry: EntryName,
}

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// A content-addressed store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// `$XDG_CACHE_HOME/pibake`, else `~/.cache/pibake`.
    pub fn default_root() -> Result<PathBuf, StoreError> {
        let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
        if let Some(x) = abs(std::env::var_os("XDG_CACHE_HOME")) {
            return Ok(x.join("pibake"));
        }
        abs(std::env::var_os("HOME"))
            .map(|h| h.join(".cache/pibake"))
            .ok_or(StoreError::NoHome)
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for d in [root.clone(), root.join("tmp"), root.join("roots")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(Self { root })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pointer file of a cached stage output (`stages/<kind>-<input hash>`), which
    /// names the entry holding it. The store owns this layout; stages only ask for it.
    pub fn stage_pointer(&self, kind: &str, input_hash: &str) -> PathBuf {
        self.root
            .join("stages")
            .join(format!("{kind}-{input_hash}"))
    }

    /// Scratch space for builds (spool files, mmdebstrap's work), created on demand.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// apt's private state for resolving packages of `suite` and `arch`.
    pub fn apt_dir(&self, suite: &str, arch: &str) -> PathBuf {
        self.root.join("apt").join(format!("{suite}-{arch}"))
    }

    /// Where `entry` lives (whether or not it exists).
    pub fn path_of(&self, entry: &EntryName) -> PathBuf {
        self.root.join(entry.to_string())
    }

    /// Whether `entry` is present.
    pub fn contains(&self, entry: &EntryName) -> bool {
        self.path_of(entry).is_file()
    }

    fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        let p = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        if exclusive { f.lock() } else { f.lock_shared() }.map_err(io_err(&p))?;
        Ok(StoreLock { _file: f })
    }

    /// A shared lock: entries are not collected while it is held (hold it while a build reads).
    pub fn shared_lock(&self) -> Result<StoreLock, StoreError> {
        self.lock(false)
    }

    /// Streams `reader` into the store as `name`. With `expected`, the content must have that
    /// sha256 and size, or nothing is stored. Returns the entry name.
    pub fn insert_reader(
        &self,
        name: &str,
        expected: Option<Expected>,
        reader: impl Read,
    ) -> Result<EntryName, StoreError> {
        // Validate the name before any I/O.
        EntryName::new(expected.map_or(Sha256::of(b""), |e| e.sha256), name)?;
        let _lock = self.shared_lock()?;
        let tmp_dir = self.root.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("insert-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err(&tmp_dir))?;
        let mut w = HashingWriter::new(BufWriter::with_capacity(256 * 1024, tmp));
        copy_checked(reader, &mut w, name, expected, &tmp_dir)?;
        let (sha256, size, buf) = w.finish();
        let tmp = buf.into_inner().map_err(|e| StoreError::Io {
            path: tmp_dir.clone(),
            source: e.into_error(),
        })?;
        if let Some(e) = expected {
            if e.sha256 != sha256 || e.size != size {
                return Err(StoreError::Mismatch {
                    name: name.to_owned(),
                    expected: e.sha256,
                    expected_size: e.size,
                    received: sha256,
                    received_size: size,
                });
            }
        }
        self.persist(tmp, EntryName::new(sha256, name)?)
    }

    /// Makes a complete temp file read-only and renames it into place as `entry`.
    fn persist(
        &self,
        tmp: tempfile::NamedTempFile,
        entry: EntryName,
    ) -> Result<EntryName, StoreError> {
        let dest = self.path_of(&entry);
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err(tmp.path()))?;
        // Same content under the same name: a concurrent insert that won is as good as ours.
        atomic::persist(tmp, &dest).map_err(|e| StoreError::Io {
            path: e.path,
            source: e.source,
        })?;
        Ok(entry)
    }

    /// Inserts a local file.
    pub fn insert_file(
        &self,
        name: &str,
        path: &Path,
        expected: Option<Expected>,
    ) -> Result<EntryName, StoreError> {
        let f = File::open(path).map_err(io_err(path))?;
        self.insert_reader(name, expected, f)
    }

    /// A temp file in the store's `tmp/` for an output called `name` there, for a stage that
    /// writes its output in place (a sparse file that a copy through [`Store::insert_reader`]
    /// would fill in). The temp files of `name` that a killed process left (a root
    /// partition's is as big as the image) are removed first; one a running process writes
    /// is locked and kept. `gc` clears any left.
    pub fn temp_file(&self, name: &str) -> Result<tempfile::NamedTempFile, StoreError> {
        EntryName::new(Sha256::of(b""), name)?;
        let dest = self.root.join("tmp").join(name);
        let err = |e: atomic::AtomicError| StoreError::Io {
            path: e.path,
            source: e.source,
        };
        atomic::remove_stale_temps(&dest).map_err(err)?;
        atomic::temp_beside(&dest).map_err(err)
    }

    /// Inserts a temp file of [`Store::temp_file`] as `name` by renaming it, so that its
    /// holes stay holes: it is hashed (read once), made read-only, fsynced and renamed.
    pub fn insert_temp(
        &self,
        name: &str,
        tmp: tempfile::NamedTempFile,
    ) -> Result<EntryName, StoreError> {
        EntryName::new(Sha256::of(b""), name)?;
        let _lock = self.shared_lock()?;
        // Its writer may have left the shared cursor anywhere.
        io::Seek::seek(&mut tmp.as_file(), io::SeekFrom::Start(0)).map_err(io_err(tmp.path()))?;
        let (sha256, _) = Sha256::of_reader(io::BufReader::with_capacity(1 << 20, tmp.as_file()))
            .map_err(io_err(tmp.path()))?;
        self.persist(tmp, EntryName::new(sha256, name)?)
    }

    /// Checks the complete file at `path` (in the store's `tmp/`, see [`Store::pull_path`])
    /// against `expected`: the result can become entry `name` by [`Store::adopt`]. On a
    /// mismatch the file is removed; a checked file that is never adopted is removed when
    /// the result is dropped, so a multi-entry pull that fails half way stores nothing.
    pub fn check_part(
        &self,
        name: &str,
        path: &Path,
        expected: Expected,
    ) -> Result<CheckedPart, StoreError> {
        let entry = EntryName::new(expected.sha256, name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let temp_path = tempfile::TempPath::try_from_path(path).map_err(io_err(path))?;
        let tmp = tempfile::NamedTempFile::from_parts(file, temp_path);
        let (sha256, size) =
            Sha256::of_reader(io::BufReader::with_capacity(1 << 20, tmp.as_file()))
                .map_err(io_err(path))?;
        if sha256 != expected.sha256 || size != expected.size {
            // Dropping `tmp` removes the file.
            return Err(StoreError::Mismatch {
                name: name.to_owned(),
                expected: expected.sha256,
                expected_size: expected.size,
                received: sha256,
                received_size: size,
            });
        }
        Ok(CheckedPart { tmp, entry })
    }

    /// Makes a checked file the entry it was checked to be: read-only, fsynced, renamed, so
    /// that its holes stay holes.
    pub fn adopt(&self, part: CheckedPart) -> Result<EntryName, StoreError> {
        let _lock = self.shared_lock()?;
        self.persist(part.tmp, part.entry)
    }

    /// Where a download of `entry` is kept until it is complete (`tmp/pull-<entry>.part`): a
    /// download killed half way is resumed from it; `gc` removes it.
    pub fn pull_path(&self, entry: &EntryName) -> PathBuf {
        self.root.join("tmp").join(format!("pull-{entry}.part"))
    }

    /// The entry a stage pointer names, if the pointer exists and reads as one.
    pub fn stage_entry(&self, kind: &str, input_hash: &str) -> Option<EntryName> {
        let text = fs::read_to_string(self.stage_pointer(kind, input_hash)).ok()?;
        text.trim().parse().ok()
    }

    /// Points stage `kind`/`input_hash` at `entry` (atomically: the old pointer or the new).
    pub fn set_stage_pointer(
        &self,
        kind: &str,
        input_hash: &str,
        entry: &EntryName,
    ) -> Result<(), StoreError> {
        let p = self.stage_pointer(kind, input_hash);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        atomic::write(&p, format!("{entry}\n").as_bytes()).map_err(|e| io_err(&p)(e.source))
    }

    /// Every stage pointer, as (kind, input hash), sorted.
    pub fn stage_pointers(&self) -> Result<Vec<(String, String)>, StoreError> {
        let dir = self.root.join("stages");
        let rd = match fs::read_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(io_err(&dir))?,
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name();
            let Some((kind, hash)) = name.to_str().and_then(|n| n.split_once('-')) else {
                continue;
            };
            // Temp files of an interrupted pointer write start with '.'.
            if !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric()) {
                out.push((kind.to_owned(), hash.to_owned()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every entry, sorted (temp files, roots and the lock file are not entries).
    pub fn entries(&self) -> Result<Vec<EntryName>, StoreError> {
        let rd = fs::read_dir(&self.root).map_err(io_err(&self.root))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io_err(&self.root))?;
            if let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<EntryName>().ok())
            {
                out.push(n);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Rehashes every entry; corrupt ones are reported (not removed).
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let _lock = self.shared_lock()?;
        let mut report = VerifyReport::default();
        for e in self.entries()? {
            let p = self.path_of(&e);
            let f = File::open(&p).map_err(io_err(&p))?;
            let (d, _) = Sha256::of_reader(io::BufReader::with_capacity(256 * 1024, f))
                .map_err(io_err(&p))?;
            report.checked += 1;
            if d != e.sha256() {
                report.corrupt.push(e);
            }
        }
        Ok(report)
    }

    /// Records a root: a named set of entries that `gc` keeps (a lock, a build).
    pub fn add_root(&self, root: &str, entries: &[EntryName]) -> Result<(), StoreError> {
        let p = self.root_path(root)?;
        let mut text: Vec<String> = entries.iter().map(ToString::to_string).collect();
        text.sort();
        text.dedup();
        let body = text.iter().map(|l| format!("{l}\n")).collect::<String>();
        atomic::write(&p, body.as_bytes()).map_err(|e| io_err(&p)(e.source))
    }

    /// Forgets a root (absent is fine).
    pub fn remove_root(&self, root: &str) -> Result<(), StoreError> {
        let p = self.root_path(root)?;
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&p)(e)),
            _ => Ok(()),
        }
    }

    /// All roots and their entries.
    pub fn roots(&self) -> Result<BTreeMap<String, Vec<EntryName>>, StoreError> {
        let dir = self.root.join("roots");
        let mut out = BTreeMap::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let text = fs::read_to_string(e.path()).map_err(io_err(&e.path()))?;
            let entries = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            out.insert(name, entries);
        }
        Ok(out)
    }

    fn root_path(&self, root: &str) -> Result<PathBuf, StoreError> {
        let ok = !root.is_empty()
            && !root.starts_with('.')
            && root.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if !ok {
            return Err(BadEntryName(root.to_owned()).into());
        }
        Ok(self.root.join("roots").join(root))
    }

    /// Removes every entry whose digest is neither in `keep` nor referenced by a root, and
    /// temp files left by killed inserts. Waits for running inserts (exclusive lock): do not
    /// call it while holding a [`StoreLock`] of this store.
    pub fn gc(&self, keep: &BTreeSet<Sha256>) -> Result<GcReport, StoreError> {
        let _lock = self.lock(true)?;
        let mut keep = keep.clone();
        for entries in self.roots()?.values() {
            keep.extend(entries.iter().map(EntryName::sha256));
        }
        let mut report = GcReport::default();
        for e in self.entries()? {
            if keep.contains(&e.sha256()) {
                continue;
            }
            let p = self.path_of(&e);
            let len = fs::metadata(&p).map_err(io_err(&p))?.len();
            fs::remove_file(&p).map_err(io_err(&p))?;
            report.freed_bytes += len;
            report.removed.push(e);
        }
        let tmp = self.root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let e = e.map_err(io_err(&tmp))?;
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            report.freed_bytes += len;
        }
        sync_dir(&self.root).map_err(io_err(&self.root))?;
        Ok(report)
    }
}

fn copy_checked(
    mut reader: impl Read,
    w: &mut impl Write,
    name: &str,
    expected: Option<Expected>,
    tmp_dir: &Path,
) -> Result<(), StoreError> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(StoreError::Source {
                    name: name.to_owned(),
                    source,
                })
            }
        };
        total += n as u64;
        if let Some(e) = expected {
            if total > e.size {
                return Err(StoreError::TooLong {
                    name: name.to_owned(),
                    expected_size: e.size,
                });
            }
        }
        w.write_all(&buf[..n]).map_err(io_err(tmp_dir))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_stores() -> Result<(), Box<dyn std::error::Error>> {
        // Existing stores hold pointers at these paths: changing them would
        // orphan every cached stage.
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let root = dir.path();
        assert_eq!(
            store.stage_pointer("rootfs", "ab12"),
            root.join("stages/rootfs-ab12")
        );
        assert_eq!(store.work_dir(), root.join("work"));
        assert_eq!(
            store.apt_dir("trixie", "arm64"),
            root.join("apt/trixie-arm64")
        );
        Ok(())
    }

    #[test]
    fn a_temp_file_is_inserted_by_rename_and_stays_sparse() -> Result<(), Box<dyn std::error::Error>>
    {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let stale = dir.path().join("tmp/.part.ext4.AAAAAA.tmp");
        fs::write(&stale, b"left by a killed build")?;
        let mut tmp = store.temp_file("part.ext4")?;
        assert!(!stale.exists(), "the stale temp file stayed");
        // 64 MiB with 4 KiB of data at its end, written through the handle: the cursor is
        // at the end when it is inserted.
        tmp.as_file().set_len(64 << 20)?;
        io::Seek::seek(&mut tmp, io::SeekFrom::Start((64 << 20) - 4096))?;
        tmp.write_all(&[7u8; 4096])?;
        let inode = tmp.as_file().metadata()?.ino();
        let entry = store.insert_temp("part.ext4", tmp)?;
        let path = store.path_of(&entry);
        let meta = fs::metadata(&path)?;
        assert_eq!(meta.ino(), inode, "renamed, not copied");
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "filled in: {} blocks",
            meta.blocks()
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        let mut bytes = vec![0u8; 64 << 20];
        bytes[(64 << 20) - 4096..].fill(7);
        assert_eq!(entry.sha256(), Sha256::of(&bytes));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp"))?.count(),
            0,
            "temp left"
        );
        Ok(())
    }

    #[test]
    fn entry_names() {
        let d = Sha256::of(b"x");
        let e = EntryName::new(d, "a_1.0_arm64.deb").ok();
        let s = e.as_ref().map(ToString::to_string).unwrap_or_default();
        assert_eq!(s.parse::<EntryName>().ok(), e);
        for bad in ["", ".hidden", "a/b", "a b"] {
            assert!(EntryName::new(d, bad).is_err(), "{bad:?}");
        }
        assert!("lock".parse::<EntryName>().is_err());
        assert!(format!("{d}_x").parse::<EntryName>().is_err());
    }

    #[test]
    fn insert_verify_gc() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("s"))?;
        let a = store.insert_reader("a.deb", None, &b"aaa"[..])?;
        let exp = Expected {
            sha256: Sha256::of(b"bbbb"),
            size: 4,
        };
        let b = store.insert_reader("b.deb", Some(exp), &b"bbbb"[..])?;
        assert_eq!(a.sha256(), Sha256::of(b"aaa"));
        assert_eq!(store.entries()?, {
            let mut v = vec![a.clone(), b.clone()];
            v.sort();
            v
        });

        // Wrong content: error names both hashes; nothing stored, no temp left.
        let bad = store.insert_reader("c.deb", Some(exp), &b"cccc"[..]);
        let msg = bad
            .map(|_| ())
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(
            msg.contains(&exp.sha256.to_string()) && msg.contains(&Sha256::of(b"cccc").to_string()),
            "{msg}"
        );
        let long = store.insert_reader("c.deb", Some(exp), &b"ccccc"[..]);
        assert!(matches!(long, Err(StoreError::TooLong { .. })));
        assert_eq!(store.entries()?.len(), 2);
        assert_eq!(fs::read_dir(dir.path().join("s/tmp"))?.count(), 0);

        // Corruption is found by verify.
        let pa = store.path_of(&a);
        fs::set_permissions(&pa, fs::Permissions::from_mode(0o644))?;
        fs::write(&pa, b"tampered")?;
        let r = store.verify()?;
        assert_eq!((r.checked, r.corrupt.clone()), (2, vec![a.clone()]));

        // gc keeps roots and the keep set, frees the rest and stale temp files.
        fs::write(dir.path().join("s/tmp/insert-stale"), b"12345")?;
        store.add_root("lab", std::slice::from_ref(&b))?;
        let r = store.gc(&BTreeSet::new())?;
        assert_eq!(r.removed, vec![a.clone()]);
        assert_eq!(r.freed_bytes, 8 + 5);
        assert!(store.contains(&b) && !store.contains(&a));
        store.remove_root("lab")?;
        let r = store.gc(&[b.sha256()].into())?;
        assert!(r.removed.is_empty());
        let r = store.gc(&BTreeSet::new())?;
        assert_eq!((r.removed, r.freed_bytes), (vec![b], 4));
        Ok(())
    }
}
