//! Where the built role images are.

use crate::{HarnessError, Result};
use std::path::{Path, PathBuf};

/// Environment variable naming the images directory.
pub const IMAGES_DIR_ENV: &str = "PIBAKE_IMAGES_DIR";

/// The directory of built images: `PIBAKE_IMAGES_DIR`, or `<workspace>/images`.
pub fn images_dir() -> PathBuf {
    match std::env::var_os(IMAGES_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("images"),
    }
}

/// The workspace root (this crate lives in `<workspace>/tests/qemu`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The built image of the lab's `role` (`lab-<role>.img`). Missing is an
/// error naming the command that builds it: a test must fail, not skip.
pub fn role_image(role: &str) -> Result<PathBuf> {
    let path = images_dir().join(format!("lab-{role}.img"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::ImageMissing { path })
    }
}
