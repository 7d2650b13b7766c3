//! The lock file (`pibake.lock`): for each architecture the images need, every package of its
//! closure pinned by sha256, plus the SOURCE_DATE_EPOCH of its builds. TOML, sorted, stable.
//!
//! One file, one [`Closure`] per architecture: each closure is resolved, kept and hashed on
//! its own, so adding an amd64 machine to a cluster leaves the arm64 closure (and the arm64
//! root file systems built from it) untouched. After the closures, one [`LockedImage`] per
//! preloaded container image (`[swarm.images.<name>]`): its archive pinned by sha256.
//!
//! Formats: 1 is one closure at the top level; 2 has `[[closure]]` tables; 3 adds
//! `[[image]]` tables. A lock is written in the oldest format that holds it (2 without
//! images), so a cluster without images keeps its lock byte for byte and older pibakes
//! still read it; one with images says format 3, which they refuse by its number.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;
use crate::store::EntryName;
use pibake_host::atomic;

/// The newest lock format: closures and preloaded images.
pub const FORMAT: u32 = 3;
/// The format of a lock without preloaded images: closures only.
pub const FORMAT_CLOSURES: u32 = 2;
/// The single-architecture format of older locks, still read (as one closure).
pub const FORMAT_SINGLE_ARCH: u32 = 1;

const HEADER: &str = "# Written by `pibake lock`; refresh with `pibake lock --update`.\n";

/// The lock of a cluster file: `pibake.lock` beside it.
pub fn path_beside(cluster_file: &Path) -> PathBuf {
    cluster_file
        .parent()
        .map_or_else(|| PathBuf::from("pibake.lock"), |d| d.join("pibake.lock"))
}

/// The lock file: a Debian suite and one closure per architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// Debian suite the closures were resolved for (`trixie`).
    pub suite: String,
    /// The closures, sorted by architecture, one per architecture.
    #[serde(default, rename = "closure")]
    pub closures: Vec<Closure>,
    /// The preloaded images' archives, sorted by name (format 3).
    #[serde(default, rename = "image", skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<LockedImage>,
}

/// A preloaded container image: an OCI archive (`docker save`'s format) pinned by sha256.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// Its name in the cluster file (`[swarm.images.<name>]`).
    pub name: String,
    /// The archive as the cluster file names it (relative to the cluster file).
    pub archive: String,
    /// The Debian architecture of the images that carry it, from the archive's config
    /// (Go's `arm64` is `arm64`, `arm` v7 is `armhf`).
    pub architecture: String,
    /// The tags the archive gives its image (what `docker load` tags it as).
    #[serde(default)]
    pub tags: Vec<String>,
    pub size: u64,
    pub sha256: Sha256,
}

impl LockedImage {
    /// The store entry it is kept under: `<sha256>-oci-<name>.tar`.
    pub fn entry_name(&self) -> Result<EntryName, LockError> {
        EntryName::new(self.sha256, &format!("oci-{}.tar", self.name)).map_err(|e| {
            LockError::Invalid {
                path: None,
                what: format!("image {}: {e}", self.name),
            }
        })
    }
}

/// A resolved, pinned package set for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closure {
    /// Target architecture (`arm64`).
    pub arch: String,
    /// Newest Release date among the sources when this closure was resolved: its builds' clock.
    pub source_date_epoch: u64,
    /// What was asked for (package names), so a changed profile is noticed.
    pub requested: BTreeSet<String>,
    /// Names of the sources the closure was resolved against, so an added or removed source is
    /// noticed. Empty in locks written before sources were recorded, which were resolved
    /// against `debian` alone (see [`Closure::resolved_sources`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub sources: BTreeSet<String>,
    /// The closure, sorted by name, architecture, version.
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

/// The format-1 file: one architecture's closure at the top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SingleArchLock {
    /// Always 1 (read to accept the key; [`FormatOnly`] chose this parser).
    #[serde(rename = "format")]
    _format: u32,
    suite: String,
    arch: String,
    source_date_epoch: u64,
    requested: BTreeSet<String>,
    #[serde(default)]
    sources: BTreeSet<String>,
    #[serde(default, rename = "package")]
    packages: Vec<LockedPackage>,
}

/// Only the format, to choose the parser.
#[derive(Debug, Deserialize)]
struct FormatOnly {
    format: u32,
}

/// One pinned .deb.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Path below the source's base URI (`pool/main/s/systemd/systemd_257_arm64.deb`).
    pub filename: String,
    pub size: u64,
    pub sha256: Sha256,
    /// Source package name.
    pub source: String,
    /// Name of the configured source apt chose (after pinning).
    pub origin: String,
}

impl LockedPackage {
    /// The store entry this package is kept under: `<sha256>-<file name>`.
    pub fn entry_name(&self) -> Result<EntryName, LockError> {
        let base = self.filename.rsplit('/').next().unwrap_or(&self.filename);
        EntryName::new(self.sha256, base).map_err(|e| LockError::Invalid {
            path: None,
            what: format!("package {}: {e}", self.name),
        })
    }
}

/// A lock that cannot be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}{what}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Invalid { path: Option<PathBuf>, what: String },
    #[error("serializing the lock")]
    Serialize(#[from] toml::ser::Error),
    #[error("{path}: packages missing from the {arch} closure: {}; run `pibake lock --update`", names.join(", "))]
    Missing {
        path: PathBuf,
        arch: String,
        names: Vec<String>,
    },
    #[error(
        "{path}: no {arch} closure, which the cluster's {arch} images need; run `pibake lock`"
    )]
    NoClosure { path: PathBuf, arch: String },
    #[error("{path}: the {arch} closure was resolved against the sources {}, but the profiles now configure {}; run `pibake lock --update`", locked.join(", "), configured.join(", "))]
    Sources {
        path: PathBuf,
        arch: String,
        locked: Vec<String>,
        configured: Vec<String>,
    },
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Parses `text` as `T`, locating a syntax error by line and column.
fn from_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, LockError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        LockError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })
}

impl Lock {
    /// An empty lock of `suite` (closures are added with [`Lock::set_closure`]).
    pub fn new(suite: &str) -> Self {
        Lock {
            format: FORMAT,
            suite: suite.to_owned(),
            closures: Vec::new(),
            images: Vec::new(),
        }
    }

    /// Parses lock text (format 2, or the single-architecture format 1 as one closure);
    /// `path` is only used in messages (errors carry line and column).
    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let invalid = |what: String| LockError::Invalid {
            path: Some(path.to_owned()),
            what,
        };
        let lock = match from_toml::<FormatOnly>(text, path)?.format {
            FORMAT | FORMAT_CLOSURES => from_toml::<Lock>(text, path)?,
            FORMAT_SINGLE_ARCH => {
                let old: SingleArchLock = from_toml(text, path)?;
                Lock {
                    format: FORMAT,
                    suite: old.suite,
                    closures: vec![Closure {
                        arch: old.arch,
                        source_date_epoch: old.source_date_epoch,
                        requested: old.requested,
                        sources: old.sources,
                        packages: old.packages,
                    }],
                    images: Vec::new(),
                }
            }
            other => {
                return Err(invalid(format!(
                    "format = {other} is not supported; this pibake reads format = {FORMAT} \
                     (and {FORMAT_CLOSURES}, {FORMAT_SINGLE_ARCH})"
                )))
            }
        };
        lock.validate().map_err(invalid)?;
        // In memory a lock is of the format this crate models, whichever
        // older one its file had (`to_toml` picks the file's again).
        Ok(Lock {
            format: FORMAT,
            ..lock
        })
    }

    /// Reads and checks a lock file.
    pub fn read(path: &Path) -> Result<Self, LockError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Writes the lock atomically (in the oldest format that holds it).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let text = self.to_toml()?;
        atomic::write(path, text.as_bytes()).map_err(|e| LockError::Write {
            path: path.to_owned(),
            source: e.source,
        })
    }

    /// The canonical text: closures by architecture, packages sorted, images by name, fixed
    /// field order, a header comment; [`FORMAT_CLOSURES`] without images, else [`FORMAT`].
    pub fn to_toml(&self) -> Result<String, LockError> {
        let mut sorted = self.clone();
        sorted.format = if self.images.is_empty() {
            FORMAT_CLOSURES
        } else {
            FORMAT
        };
        sorted.closures.sort_by(|a, b| a.arch.cmp(&b.arch));
        sorted.images.sort();
        for closure in &mut sorted.closures {
            closure.packages.sort();
        }
        Ok(format!("{HEADER}{}", toml::to_string(&sorted)?))
    }

    /// The sha256 of the canonical text: what a build that used this lock depends on.
    pub fn digest(&self) -> Result<Sha256, LockError> {
        Ok(Sha256::of(self.to_toml()?.as_bytes()))
    }

    /// The closure of `arch`, if the lock has one.
    pub fn closure(&self, arch: &str) -> Option<&Closure> {
        self.closures.iter().find(|c| c.arch == arch)
    }

    /// The architectures the lock has closures for.
    pub fn arches(&self) -> BTreeSet<&str> {
        self.closures.iter().map(|c| c.arch.as_str()).collect()
    }

    /// Adds `closure`, replacing the one of its architecture.
    pub fn set_closure(&mut self, closure: Closure) {
        self.closures.retain(|c| c.arch != closure.arch);
        self.closures.push(closure);
        self.closures.sort_by(|a, b| a.arch.cmp(&b.arch));
    }

    /// The locked image `name`, if any.
    pub fn image(&self, name: &str) -> Option<&LockedImage> {
        self.images.iter().find(|i| i.name == name)
    }

    /// Replaces the locked images with `images` (sorted by name).
    pub fn set_images(&mut self, mut images: Vec<LockedImage>) {
        images.sort();
        self.images = images;
    }

    /// Keeps only the closures of `arches`.
    pub fn retain_arches(&mut self, arches: &BTreeSet<String>) {
        self.closures.retain(|c| arches.contains(&c.arch));
    }

    /// Every locked .deb once (an `Architecture: all` package can be in several closures).
    pub fn packages(&self) -> Vec<&LockedPackage> {
        let mut seen = BTreeSet::new();
        self.closures
            .iter()
            .flat_map(|c| &c.packages)
            .filter(|p| seen.insert((p.sha256, p.filename.as_str())))
            .collect()
    }

    /// The store entry names of every package and image (what `gc` must keep for this lock).
    pub fn entry_names(&self) -> Result<Vec<EntryName>, LockError> {
        self.packages()
            .into_iter()
            .map(LockedPackage::entry_name)
            .chain(self.images.iter().map(LockedImage::entry_name))
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        let mut arches = BTreeSet::new();
        for closure in &self.closures {
            if !arches.insert(&closure.arch) {
                return Err(format!("two closures for architecture {}", closure.arch));
            }
            closure
                .validate()
                .map_err(|e| format!("closure {}: {e}", closure.arch))?;
        }
        if self.format == FORMAT_CLOSURES && !self.images.is_empty() {
            return Err(format!(
                "format = {FORMAT_CLOSURES} has no images: write format = {FORMAT}"
            ));
        }
        let mut names = BTreeSet::new();
        for image in &self.images {
            if !names.insert(&image.name) {
                return Err(format!("image {} appears twice", image.name));
            }
            image.entry_name().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Closure {
    /// Requested packages the closure does not cover (neither asked for when it was made nor
    /// in it), sorted.
    pub fn missing(&self, requested: &BTreeSet<String>) -> Vec<String> {
        let have: BTreeSet<&str> = self.packages.iter().map(|p| p.name.as_str()).collect();
        requested
            .iter()
            .filter(|r| !self.requested.contains(*r) && !have.contains(r.as_str()))
            .cloned()
            .collect()
    }

    /// [`Closure::missing`] as an error that tells the user to update the lock at `path`.
    pub fn check_covers(&self, requested: &BTreeSet<String>, path: &Path) -> Result<(), LockError> {
        let names = self.missing(requested);
        if names.is_empty() {
            Ok(())
        } else {
            Err(LockError::Missing {
                path: path.to_owned(),
                arch: self.arch.clone(),
                names,
            })
        }
    }

    /// The names of the sources the closure was resolved against (`debian` for a lock that
    /// predates recording them).
    pub fn resolved_sources(&self) -> BTreeSet<String> {
        if self.sources.is_empty() {
            BTreeSet::from([crate::sources::HOST_SOURCE.to_owned()])
        } else {
            self.sources.clone()
        }
    }

    /// Checks the closure was resolved against exactly the `configured` source names; a
    /// source added or removed since can change which package wins, so the lock must be
    /// updated.
    pub fn check_sources(
        &self,
        configured: &BTreeSet<String>,
        path: &Path,
    ) -> Result<(), LockError> {
        let locked = self.resolved_sources();
        if &locked == configured {
            Ok(())
        } else {
            Err(LockError::Sources {
                path: path.to_owned(),
                arch: self.arch.clone(),
                locked: locked.into_iter().collect(),
                configured: configured.iter().cloned().collect(),
            })
        }
    }

    /// The store entry names of the closure's packages.
    pub fn entry_names(&self) -> Result<Vec<EntryName>, LockError> {
        self.packages
            .iter()
            .map(LockedPackage::entry_name)
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for p in &self.packages {
            if !seen.insert((&p.name, &p.architecture)) {
                return Err(format!(
                    "package {}:{} appears twice",
                    p.name, p.architecture
                ));
            }
            if p.architecture != self.arch && p.architecture != "all" {
                return Err(format!(
                    "package {} is {}, not {} or all",
                    p.name, p.architecture, self.arch
                ));
            }
            if p.filename.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(format!(
                    "package {}: filename {:?} is not a relative path",
                    p.name, p.filename
                ));
            }
            p.entry_name().map_err(|e| e.to_string())?;
            if !self.sources.is_empty() && !self.sources.contains(&p.origin) {
                return Err(format!(
                    "package {}: origin {:?} is not one of the lock's sources",
                    p.name, p.origin
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, arch: &str, sha: u8) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: "1.0-1".into(),
            architecture: arch.into(),
            filename: format!("pool/main/{name}_1.0-1_{arch}.deb"),
            size: 10,
            sha256: Sha256::of(&[sha]),
            source: name.into(),
            origin: "debian".into(),
        }
    }

    fn closure(arch: &str) -> Closure {
        Closure {
            arch: arch.into(),
            source_date_epoch: 1_700_000_000,
            requested: ["b".to_owned()].into(),
            sources: BTreeSet::new(),
            packages: vec![pkg("b", arch, 1), pkg("a", arch, 2), pkg("t", "all", 3)],
        }
    }

    fn sample() -> Lock {
        let mut lock = Lock::new("trixie");
        lock.set_closure(closure("arm64"));
        lock
    }

    #[test]
    fn sources_are_recorded_and_checked() -> Result<(), LockError> {
        let debian: BTreeSet<String> = ["debian".to_owned()].into();
        let both: BTreeSet<String> = ["debian", "extra"].map(String::from).into();
        // A closure without `sources` was resolved against debian alone; its text has no key.
        let mut l = sample();
        assert!(!l.to_toml()?.contains("sources"));
        let c = &l.closures[0];
        assert_eq!(c.resolved_sources(), debian);
        c.check_sources(&debian, Path::new("pibake.lock"))?;
        let err = c
            .check_sources(&both, Path::new("x/pibake.lock"))
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("the arm64 closure was resolved against the sources debian, but the profiles now configure debian, extra")
                && err.contains("pibake lock --update"),
            "{err}"
        );
        l.closures[0].sources = both.clone();
        l.closures[0].packages[0].origin = "extra".into();
        let text = l.to_toml()?;
        assert!(text.contains("sources = [\"debian\", \"extra\"]"), "{text}");
        let back = Lock::parse(&text, Path::new("pibake.lock"))?;
        back.closures[0].check_sources(&both, Path::new("pibake.lock"))?;
        // Every origin must be one of the recorded sources.
        let bad = text.replace("origin = \"extra\"", "origin = \"other\"");
        assert!(matches!(
            Lock::parse(&bad, Path::new("pibake.lock")),
            Err(LockError::Invalid { .. })
        ));
        Ok(())
    }

    #[test]
    fn round_trip_is_sorted_and_stable() -> Result<(), LockError> {
        let mut l = sample();
        l.set_closure(closure("amd64"));
        let text = l.to_toml()?;
        assert!(text.find("name = \"a\"") < text.find("name = \"b\""));
        assert!(
            text.find("arch = \"amd64\"") < text.find("arch = \"arm64\""),
            "{text}"
        );
        let back = Lock::parse(&text, Path::new("pibake.lock"))?;
        assert_eq!(back.to_toml()?, text);
        assert_eq!(back.digest()?, l.digest()?);
        assert_eq!(back.arches(), BTreeSet::from(["amd64", "arm64"]));
        Ok(())
    }

    #[test]
    fn closures_are_kept_apart_and_shared_debs_listed_once() -> Result<(), LockError> {
        let mut l = sample();
        let arm = l.closures[0].clone();
        l.set_closure(closure("amd64"));
        // Replacing one architecture's closure leaves the other as it was.
        let mut amd = closure("amd64");
        amd.packages.push(pkg("c", "amd64", 4));
        l.set_closure(amd);
        assert_eq!(l.closure("arm64"), Some(&arm));
        assert_eq!(l.closure("amd64").map(|c| c.packages.len()), Some(4));
        // t (Architecture: all) is in both closures, fetched once.
        let names: Vec<&str> = l.packages().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.iter().filter(|n| **n == "t").count(), 1, "{names:?}");
        assert_eq!(l.entry_names()?.len(), 6);
        l.retain_arches(&BTreeSet::from(["arm64".to_owned()]));
        assert_eq!(l.arches(), BTreeSet::from(["arm64"]));
        // A package of a third architecture does not belong in a closure.
        let mut bad = closure("arm64");
        bad.packages.push(pkg("x", "amd64", 9));
        l.set_closure(bad);
        assert!(matches!(
            Lock::parse(&l.to_toml()?, Path::new("p")),
            Err(LockError::Invalid { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_single_arch_lock_reads_as_one_closure() -> Result<(), LockError> {
        let old = "format = 1\nsuite = \"trixie\"\narch = \"arm64\"\nsource_date_epoch = 5\n\
                   requested = [\"a\"]\n\n[[package]]\nname = \"a\"\nversion = \"1\"\n\
                   architecture = \"arm64\"\nfilename = \"pool/a_1_arm64.deb\"\nsize = 1\n\
                   sha256 = \""
            .to_owned()
            + &Sha256::of(b"a").to_string()
            + "\"\nsource = \"a\"\norigin = \"debian\"\n";
        let lock = Lock::parse(&old, Path::new("p"))?;
        let c = lock.closure("arm64").expect("one closure");
        assert_eq!((c.source_date_epoch, c.packages.len()), (5, 1));
        assert!(lock.to_toml()?.contains("format = 2"));
        // Keys of the old format are still checked.
        let typo = old.replace("requested", "requestd");
        assert!(matches!(
            Lock::parse(&typo, Path::new("p")),
            Err(LockError::Syntax { .. })
        ));
        Ok(())
    }

    fn image(name: &str, sha: u8) -> LockedImage {
        LockedImage {
            name: name.into(),
            archive: format!("oci/{name}.tar"),
            architecture: "arm64".into(),
            tags: vec![format!("localhost/{name}:1")],
            size: 3,
            sha256: Sha256::of(&[sha]),
        }
    }

    /// Without images a lock is format 2, the same text as before images existed; with
    /// them it is format 3, the images after the closures, which stay as they were.
    #[test]
    fn images_come_after_the_closures_in_format_3() -> Result<(), LockError> {
        let without = sample();
        let before = without.to_toml()?;
        assert!(
            before.contains("format = 2\n") && !before.contains("image"),
            "{before}"
        );
        let mut with = without.clone();
        with.set_images(vec![image("web", 7), image("db", 8)]);
        let text = with.to_toml()?;
        assert!(text.contains("format = 3\n"), "{text}");
        let closures = &before[before.find("[[closure]]").expect("a closure")..];
        assert!(
            text.contains(closures),
            "the closures' text changed:\n{text}"
        );
        assert!(text.find("[[closure]]") < text.find("[[image]]"), "{text}");
        assert!(
            text.find("name = \"db\"") < text.find("name = \"web\""),
            "{text}"
        );
        let back = Lock::parse(&text, Path::new("pibake.lock"))?;
        assert_eq!((back.format, &back.images), (FORMAT, &with.images));
        assert_eq!(back.to_toml()?, text);
        let web = back.image("web").expect("web");
        assert_eq!(web.tags, ["localhost/web:1"]);
        assert_eq!(
            web.entry_name()?.to_string(),
            format!("{}-oci-web.tar", Sha256::of(&[7]))
        );
        // gc keeps the archives with the packages.
        let names: Vec<String> = back
            .entry_names()?
            .iter()
            .map(|e| e.name().to_owned())
            .collect();
        assert!(names.contains(&"oci-web.tar".to_owned()), "{names:?}");
        // Dropping the images gives the format-2 text back.
        let mut dropped = back.clone();
        dropped.set_images(Vec::new());
        assert_eq!(dropped.to_toml()?, before);
        // A format-2 file reads as the lock this crate makes: equal to it.
        let mut sorted = without.clone();
        sorted.closures[0].packages.sort();
        assert_eq!(Lock::parse(&before, Path::new("p"))?, sorted);
        Ok(())
    }

    #[test]
    fn bad_image_entries_are_refused() -> Result<(), LockError> {
        let mut with = sample();
        with.set_images(vec![image("web", 7)]);
        let text = with.to_toml()?;
        for bad in [
            // Images need format 3.
            text.replace("format = 3", "format = 2"),
            text.replace("[[image]]", "[[image]]\ncolour = \"red\""),
            format!("{text}\n[[image]]\nname = \"web\"\narchive = \"a\"\narchitecture = \"arm64\"\nsize = 1\nsha256 = \"{}\"\n", Sha256::of(b"x")),
            text.replace("name = \"web\"", "name = \"w/b\""),
        ] {
            assert!(Lock::parse(&bad, Path::new("p")).is_err(), "accepted:\n{bad}");
        }
        Ok(())
    }

    #[test]
    fn missing_names_lock_update() {
        let l = sample();
        let want: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        assert_eq!(l.closures[0].missing(&want), vec!["c", "d"]);
        let err = l.closures[0].check_covers(&want, Path::new("x/pibake.lock"));
        let msg = err.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(
            msg.contains("arm64 closure: c, d") && msg.contains("pibake lock --update"),
            "{msg}"
        );
    }

    #[test]
    fn errors_are_located() -> Result<(), LockError> {
        let text = sample().to_toml()?.replace("size = 10", "size = \"ten\"");
        match Lock::parse(&text, Path::new("p.lock")) {
            Err(LockError::Syntax { line, .. }) => {
                let bad = text
                    .lines()
                    .position(|l| l.contains("\"ten\""))
                    .map(|i| i + 1);
                assert_eq!(Some(line), bad);
            }
            other => panic!("expected a located error, got {other:?}"),
        }
        let text = sample().to_toml()?.replace("format = 2", "format = 4");
        assert!(matches!(
            Lock::parse(&text, Path::new("p")),
            Err(LockError::Invalid { .. })
        ));
        let text = sample()
            .to_toml()?
            .replace("suite =", "colour = \"red\"\nsuite =");
        assert!(matches!(
            Lock::parse(&text, Path::new("p")),
            Err(LockError::Syntax { .. })
        ));
        Ok(())
    }
}
