//! Validated relative paths inside an image's file tree.

use std::fmt;

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path {0:?} contains an empty, `.` or `..` component")]
    BadComponent(String),
}

/// A relative, normalized path (`etc/ssh/sshd_config`): no leading `/`, no `.`/`..`/empty
/// components, no trailing `/`. Byte-wise ordering puts every directory before its contents,
/// which is the order the tar and FAT writers need.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryPath(String);

impl EntryPath {
    /// Strict: the path must already be normalized.
    pub fn new(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.contains('\0') {
            return Err(PathError::Nul(s.to_owned()));
        }
        if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(PathError::BadComponent(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// For compile-time constants known to be valid.
    pub(crate) fn trusted(s: &'static str) -> Self {
        debug_assert!(Self::new(s).is_ok());
        Self(s.to_owned())
    }

    /// Lenient, for names read from archives: strips a leading `./` or `/` and one trailing
    /// `/`. Returns `Ok(None)` for the root itself (`.`, `./`, `/`).
    pub fn from_archive(s: &str) -> Result<Option<Self>, PathError> {
        let mut t = s;
        while let Some(r) = t.strip_prefix("./") {
            t = r;
        }
        let t = t.trim_start_matches('/');
        let t = t.strip_suffix('/').unwrap_or(t);
        if t.is_empty() || t == "." {
            return Ok(None);
        }
        Self::new(t).map(Some)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory, `None` for a top-level entry.
    pub fn parent(&self) -> Option<EntryPath> {
        self.0.rfind('/').map(|i| Self(self.0[..i].to_owned()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// True when `self` is `prefix` or lies below it (component-wise).
    pub fn starts_with(&self, prefix: &EntryPath) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }

    /// The part below `prefix`, `None` if `self` is not strictly below it.
    pub fn strip_prefix(&self, prefix: &EntryPath) -> Option<EntryPath> {
        let rest = self.0.strip_prefix(&prefix.0)?.strip_prefix('/')?;
        Some(Self(rest.to_owned()))
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> Result<EntryPath, PathError> {
        Self::new(&format!("{}/{}", self.0, name))
    }
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

// Same ordering as `str`, so BTreeMaps keyed by paths can be ranged by string prefix.
impl std::borrow::Borrow<str> for EntryPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for EntryPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(EntryPath::new("etc/ssh").is_ok());
        assert_eq!(EntryPath::new(""), Err(PathError::Empty));
        for bad in ["/etc", "etc/", "a//b", "a/../b", "./a", "a/."] {
            assert!(EntryPath::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            EntryPath::from_archive("./etc/")
                .ok()
                .flatten()
                .map(|p| p.0),
            Some("etc".into())
        );
        assert_eq!(EntryPath::from_archive("./"), Ok(None));
        assert!(EntryPath::from_archive("./a/../b").is_err());
    }

    #[test]
    fn prefix_is_component_wise() {
        let p = |s: &str| EntryPath::new(s).unwrap();
        assert!(p("boot/firmware/config.txt").starts_with(&p("boot/firmware")));
        assert!(!p("boot/firmware2").starts_with(&p("boot/firmware")));
        assert_eq!(
            p("boot/firmware/a/b").strip_prefix(&p("boot/firmware")),
            Some(p("a/b"))
        );
        assert_eq!(p("boot/firmware").strip_prefix(&p("boot/firmware")), None);
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert!(p("a") < p("a-b") && p("a-b") < p("a/b"));
    }
}
