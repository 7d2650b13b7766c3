//! The lock file (`pibake.lock`): every package of one architecture's closure, pinned by
//! sha256, plus the SOURCE_DATE_EPOCH of the build. TOML, sorted, stable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;
use crate::store::EntryName;
use pibake_host::atomic;

/// The lock format this crate reads and writes.
pub const FORMAT: u32 = 1;

const HEADER: &str = "# Written by `pibake lock`; refresh with `pibake lock --update`.\n";

/// The lock of a cluster file: `pibake.lock` beside it.
pub fn path_beside(cluster_file: &Path) -> PathBuf {
    cluster_file
        .parent()
        .map_or_else(|| PathBuf::from("pibake.lock"), |d| d.join("pibake.lock"))
}

/// A resolved, pinned package set for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// Debian suite the closure was resolved for (`trixie`).
    pub suite: String,
    /// Target architecture (`arm64`).
    pub arch: String,
    /// Newest Release date among the sources: the build's clock.
    pub source_date_epoch: u64,
    /// What was asked for (package names), so a changed profile is noticed.
    pub requested: BTreeSet<String>,
    /// Names of the sources the closure was resolved against, so an added or removed source is
    /// noticed. Empty in locks written before sources were recorded, which were resolved
    /// against `debian` alone (see [`Lock::resolved_sources`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub sources: BTreeSet<String>,
    /// The closure, sorted by name, architecture, version.
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
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
    #[error("{path}: packages missing from the lock: {}; run `pibake lock --update`", names.join(", "))]
    Missing { path: PathBuf, names: Vec<String> },
    #[error("{path}: resolved against the sources {}, but the profiles now configure {}; run `pibake lock --update`", locked.join(", "), configured.join(", "))]
    Sources {
        path: PathBuf,
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

impl Lock {
    /// Parses lock text; `path` is only used in messages (errors carry line and column).
    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let lock: Lock = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            LockError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        lock.validate().map_err(|what| LockError::Invalid {
            path: Some(path.to_owned()),
            what,
        })?;
        Ok(lock)
    }

    /// Reads and checks a lock file.
    pub fn read(path: &Path) -> Result<Self, LockError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Writes the lock atomically.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let text = self.to_toml()?;
        atomic::write(path, text.as_bytes()).map_err(|e| LockError::Write {
            path: path.to_owned(),
            source: e.source,
        })
    }

    /// The canonical text: packages sorted, fixed field order, a header comment.
    pub fn to_toml(&self) -> Result<String, LockError> {
        let mut sorted = self.clone();
        sorted.packages.sort();
        Ok(format!("{HEADER}{}", toml::to_string(&sorted)?))
    }

    /// The sha256 of the canonical text: what a build that used this lock depends on.
    pub fn digest(&self) -> Result<Sha256, LockError> {
        Ok(Sha256::of(self.to_toml()?.as_bytes()))
    }

    /// Requested packages the lock does not cover (neither asked for when it was made nor in
    /// its closure), sorted.
    pub fn missing(&self, requested: &BTreeSet<String>) -> Vec<String> {
        let have: BTreeSet<&str> = self.packages.iter().map(|p| p.name.as_str()).collect();
        requested
            .iter()
            .filter(|r| !self.requested.contains(*r) && !have.contains(r.as_str()))
            .cloned()
            .collect()
    }

    /// [`Lock::missing`] as an error that tells the user to update the lock at `path`.
    pub fn check_covers(&self, requested: &BTreeSet<String>, path: &Path) -> Result<(), LockError> {
        let names = self.missing(requested);
        if names.is_empty() {
            Ok(())
        } else {
            Err(LockError::Missing {
                path: path.to_owned(),
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

    /// Checks the lock was resolved against exactly the `configured` source names; a source
    /// added or removed since can change which package wins, so the lock must be updated.
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
                locked: locked.into_iter().collect(),
                configured: configured.iter().cloned().collect(),
            })
        }
    }

    /// The store entry names of every package (what `gc` must keep for this lock).
    pub fn entry_names(&self) -> Result<Vec<EntryName>, LockError> {
        self.packages
            .iter()
            .map(LockedPackage::entry_name)
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format = {} is not supported; this pibake reads format = {FORMAT}",
                self.format
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &self.packages {
            if !seen.insert((&p.name, &p.architecture)) {
                return Err(format!(
                    "package {}:{} appears twice",
                    p.name, p.architecture
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

    fn sample() -> Lock {
        let pkg = |name: &str, sha: u8| LockedPackage {
            name: name.into(),
            version: "1.0-1".into(),
            architecture: "arm64".into(),
            filename: format!("pool/main/{name}_1.0-1_arm64.deb"),
            size: 10,
            sha256: Sha256::of(&[sha]),
            source: name.into(),
            origin: "debian".into(),
        };
        Lock {
            format: FORMAT,
            suite: "trixie".into(),
            arch: "arm64".into(),
            source_date_epoch: 1_700_000_000,
            requested: ["b".to_owned()].into(),
            sources: BTreeSet::new(),
            packages: vec![pkg("b", 1), pkg("a", 2)],
        }
    }

    #[test]
    fn sources_are_recorded_and_checked() -> Result<(), LockError> {
        let debian: BTreeSet<String> = ["debian".to_owned()].into();
        let both: BTreeSet<String> = ["debian", "extra"].map(String::from).into();
        // A lock without `sources` was resolved against debian alone; its text has no key.
        let mut l = sample();
        assert!(!l.to_toml()?.contains("sources"));
        assert_eq!(l.resolved_sources(), debian);
        l.check_sources(&debian, Path::new("pibake.lock"))?;
        let err = l
            .check_sources(&both, Path::new("x/pibake.lock"))
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("the sources debian, but the profiles now configure debian, extra")
                && err.contains("pibake lock --update"),
            "{err}"
        );
        l.sources = both.clone();
        l.packages[0].origin = "extra".into();
        let text = l.to_toml()?;
        assert!(text.contains("sources = [\"debian\", \"extra\"]"), "{text}");
        let back = Lock::parse(&text, Path::new("pibake.lock"))?;
        back.check_sources(&both, Path::new("pibake.lock"))?;
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
        let l = sample();
        let text = l.to_toml()?;
        assert!(text.find("name = \"a\"") < text.find("name = \"b\""));
        let back = Lock::parse(&text, Path::new("pibake.lock"))?;
        assert_eq!(back.to_toml()?, text);
        assert_eq!(back.digest()?, l.digest()?);
        Ok(())
    }

    #[test]
    fn missing_names_lock_update() {
        let l = sample();
        let want: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        assert_eq!(l.missing(&want), vec!["c", "d"]);
        let err = l.check_covers(&want, Path::new("x/pibake.lock"));
        let msg = err.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(
            msg.contains("c, d") && msg.contains("pibake lock --update"),
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
        let text = sample().to_toml()?.replace("format = 1", "format = 2");
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
