//! A flat local apt repository made of the locked .debs in the store, for the rootfs stage:
//! links to the store entries, a `Packages` index written from each .deb's own control data,
//! and a `Release` dated SOURCE_DATE_EPOCH. No network, no apt-ftparchive.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::control::{self, Paragraph};
use crate::digest::Sha256;
use crate::fetch::{self, FetchError};
use crate::lock::{Closure, LockError};
use crate::release::format_date;
use crate::sources::Source;
use crate::store::Store;
use pibake_host::atomic;

/// A repository view that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Missing(#[from] FetchError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("repository {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a Debian package: {what}")]
    BadDeb { path: PathBuf, what: String },
    #[error("{path}: store entry is corrupt (sha256 {actual}); run `pibake store verify`")]
    Corrupt { path: PathBuf, actual: Sha256 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A flat repository directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoView {
    pub dir: PathBuf,
}

impl RepoView {
    /// The apt line for it: `deb [trusted=yes] file:<dir> ./`.
    pub fn sources_list_line(&self) -> String {
        self.source().sources_list_line()
    }

    /// The view as a [`Source`] (name `local`).
    pub fn source(&self) -> Source {
        Source {
            name: "local".into(),
            uri: format!("file:{}", self.dir.display()),
            suite: "./".into(),
            components: vec![],
            keyring: None,
            trusted: true,
            pin_priority: None,
            pin_packages: Vec::new(),
        }
    }
}

/// Reads `./control` from a .deb (ar archive → control.tar[.gz|.xz|.zst]).
pub fn deb_control(reader: impl Read) -> Result<Paragraph, String> {
    let text = crate::deb::with_member(reader, crate::deb::Member::Control, |inner| {
        let mut tar = tar::Archive::new(inner);
        for f in tar.entries()? {
            let mut f = f?;
            let path = f.path()?.into_owned();
            if path == Path::new("./control") || path == Path::new("control") {
                let mut text = String::new();
                f.read_to_string(&mut text)?;
                return Ok(Some(text));
            }
        }
        Ok(None)
    })?
    .ok_or("the control tar has no ./control")?;
    let mut paras = control::parse(&text).map_err(|(l, t)| format!("control line {l}: {t:?}"))?;
    if paras.len() == 1 {
        Ok(paras.remove(0))
    } else {
        Err("control has no single paragraph".into())
    }
}

/// Makes (or refreshes) the view of one closure in `dir`: every locked .deb must be in the
/// store.
/// Entries are hard-linked (symlinked across file systems) and rehashed on the way.
pub fn build(lock: &Closure, store: &Store, dir: &Path) -> Result<RepoView, RepoError> {
    fetch::check_offline(&lock.packages, store)?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Drop what an older view left, so the directory is exactly this lock.
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        if e.file_name().to_string_lossy().ends_with(".deb") {
            fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
        }
    }
    let mut packages = lock.packages.clone();
    packages.sort();
    let mut index = String::new();
    for p in &packages {
        let entry = p.entry_name()?;
        let src = store.path_of(&entry);
        let mut f = BufReader::new(File::open(&src).map_err(io_err(&src))?);
        let mut head = Vec::new();
        let ctl = deb_control(io::Read::by_ref(&mut TeeRead {
            inner: &mut f,
            copy: &mut head,
        }))
        .map_err(|what| RepoError::BadDeb {
            path: src.clone(),
            what,
        })?;
        let (rest, _) =
            Sha256::of_reader(io::Cursor::new(&head).chain(&mut f)).map_err(io_err(&src))?;
        if rest != p.sha256 {
            return Err(RepoError::Corrupt {
                path: src,
                actual: rest,
            });
        }
        let name = entry.name().to_owned();
        let dest = dir.join(&name);
        if fs::hard_link(&src, &dest).is_err() {
            std::os::unix::fs::symlink(&src, &dest).map_err(io_err(&dest))?;
        }
        let mut para = ctl;
        for f in ["Filename", "Size", "MD5sum", "SHA1", "SHA256"] {
            para.remove(f);
        }
        para.set("Filename", format!("./{name}"));
        para.set("Size", p.size.to_string());
        para.set("SHA256", p.sha256.to_string());
        index.push_str(&para.render());
        index.push('\n');
    }
    let pk = dir.join("Packages");
    atomic::write(&pk, index.as_bytes()).map_err(|e| io_err(&pk)(e.source))?;
    let date = format_date(i64::try_from(lock.source_date_epoch).unwrap_or(i64::MAX));
    let release = format!(
        "Origin: pibake\nLabel: pibake\nArchitectures: {}\nDate: {date}\nSHA256:\n {} {} Packages\n",
        lock.arch,
        Sha256::of(index.as_bytes()),
        index.len()
    );
    let rl = dir.join("Release");
    atomic::write(&rl, release.as_bytes()).map_err(|e| io_err(&rl)(e.source))?;
    Ok(RepoView {
        dir: dir.to_owned(),
    })
}

/// Keeps a copy of what was read, so the hash can cover the bytes the parser consumed.
struct TeeRead<'a, R> {
    inner: &'a mut R,
    copy: &'a mut Vec<u8>,
}

impl<R: Read> Read for TeeRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
