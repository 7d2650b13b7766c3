//! Helpers shared by the builder's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Once;

/// The workspace root; tests run from there so reported paths are relative.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder has a parent")
        .to_path_buf()
}

pub fn enter_workspace() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_current_dir(workspace_root()).expect("chdir to workspace"));
}

/// Compares `actual` with the golden file, or rewrites it when
/// `PIBAKE_BLESS=1` (to change a golden on purpose, then review the diff).
pub fn golden(path: &Path, actual: &str) {
    let path = workspace_root().join(path);
    if std::env::var_os("PIBAKE_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden has a parent")).expect("mkdir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "golden file {} is missing; run with PIBAKE_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} differs from what was generated (PIBAKE_BLESS=1 rewrites it on purpose)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}
