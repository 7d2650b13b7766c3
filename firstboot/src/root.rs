//! The filesystem root the agent works on: `/` on the board, a temporary
//! directory in tests.

use std::path::{Component, Path, PathBuf};

/// The root directory every board path is resolved against.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when the agent works on the running system (commands that act on
    /// the live system, like `ssh-keygen -A`, need no prefix then).
    pub fn is_system(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// Where a board path (absolute or relative to `/`) lives under this root.
    pub fn at(&self, board_path: &str) -> PathBuf {
        self.dir.join(board_path.trim_start_matches('/'))
    }

    /// Where a validated board path lives under this root.
    pub fn at_path(&self, path: &BoardPath) -> PathBuf {
        self.at(path.as_str())
    }
}

/// An absolute, normalized path on the board: no `..`, no `.`, no empty
/// component, so it can never escape the root it is joined to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BoardPath(String);

#[derive(Debug, thiserror::Error)]
#[error("{path:?} is not an absolute normalized path (no `..`, `.`, `//`, trailing `/`)")]
pub struct BadBoardPath {
    pub path: String,
}

impl BoardPath {
    pub fn parse(path: &str) -> Result<Self, BadBoardPath> {
        let bad = || BadBoardPath {
            path: path.to_owned(),
        };
        if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') || path.contains("//") {
            return Err(bad());
        }
        let normal = Path::new(path)
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)));
        if !normal || path.split('/').any(|c| c == "." || c == "..") {
            return Err(bad());
        }
        Ok(BoardPath(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BoardPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_paths_cannot_escape() {
        assert!(BoardPath::parse("/etc/hostname").is_ok());
        for bad in [
            "etc/x",
            "/",
            "/etc/../x",
            "/etc/./x",
            "/etc//x",
            "/etc/",
            "",
        ] {
            assert!(BoardPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn joins_under_root() {
        let root = Root::new("/tmp/r");
        assert_eq!(root.at("/etc/hostname"), Path::new("/tmp/r/etc/hostname"));
        assert!(!root.is_system());
        assert!(Root::new("/").is_system());
    }
}
