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

/// The lab's plan table (render.rs).
pub const LAB_PLAN_GOLDEN: &str = "tests/golden/lab/plan.txt";

/// The lab's Mermaid picture (picture.rs).
pub const LAB_PICTURE_GOLDEN: &str = "tests/golden/lab/cluster.mmd";

/// The SBOM of a fixture image (sbom.rs).
pub const SBOM_GOLDEN: &str = "tests/golden/sbom/fixture.spdx.json";

/// Compares `actual` with the golden file, or rewrites it when
/// `PIBAKE_BLESS=1` (to change a golden on purpose, then review the diff).
pub fn golden(path: &Path, actual: &str) {
    let Some(expected) = expected_or_bless(path, actual.as_bytes()) else {
        return;
    };
    let expected = String::from_utf8_lossy(&expected);
    if expected != actual {
        panic!(
            "{} differs from what was generated (PIBAKE_BLESS=1 rewrites it on purpose)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// [`golden`] for bytes.
pub fn golden_bytes(path: &Path, actual: &[u8]) {
    if let Some(expected) = expected_or_bless(path, actual) {
        assert!(
            expected == actual,
            "{} differs from what was generated (PIBAKE_BLESS=1 rewrites it on purpose)",
            path.display()
        );
    }
}

/// The golden file's bytes; `None` when `PIBAKE_BLESS=1` had it rewritten
/// with `actual`.
fn expected_or_bless(path: &Path, actual: &[u8]) -> Option<Vec<u8>> {
    let path = workspace_root().join(path);
    if std::env::var_os("PIBAKE_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden has a parent")).expect("mkdir");
        std::fs::write(&path, actual).expect("write golden");
        return None;
    }
    Some(std::fs::read(&path).unwrap_or_else(|_| {
        panic!(
            "golden file {} is missing; run with PIBAKE_BLESS=1 to create it",
            path.display()
        )
    }))
}

/// A copy of the reference lab in `dir` (cluster file, lock, the stack's
/// compose file, the preloaded image's archive); returns its cluster file.
pub fn copy_lab(dir: &Path) -> PathBuf {
    copy_tree(&workspace_root().join("examples/lab"), dir);
    dir.join("cluster.toml")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// A small image archive of `arch` (Go's name) with `tags`, as `docker save`
/// lays it out: one layer holding `hello.txt` (the check fixtures' archives).
pub fn fixture_archive(arch: &str, tags: &[&str]) -> Vec<u8> {
    use pibake_image::oci::{write_archive, ImageToWrite, Platform, RuntimeConfig};
    use pibake_image::tar::{Rootfs, SourceDateEpoch};
    use pibake_image::{Content, Entry, EntryPath, Layer};
    let epoch = SourceDateEpoch(1_700_000_000);
    let mut tree = Rootfs::empty();
    tree.apply_layer(&Layer {
        name: "fixture".into(),
        entries: vec![Entry::file(
            EntryPath::new("hello.txt").expect("path"),
            Content::bytes("hello\n"),
            0o644,
        )],
    });
    let mut layer = Vec::new();
    tree.write_tar(&mut layer, epoch).expect("layer");
    let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    let mut out = Vec::new();
    write_archive(
        &mut out,
        &ImageToWrite {
            platform: Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            },
            runtime: RuntimeConfig {
                entrypoint: vec!["/bin/true".into()],
                env: vec![],
                exposed_ports: vec![],
                working_dir: "/".into(),
            },
            layers: &[layer],
            tags: &tags,
            epoch,
            created_by: "pibake's check fixtures",
        },
    )
    .expect("archive");
    out
}

/// Fails on a golden file in `dir` (workspace-relative; with `recursive`,
/// its subdirectories too) that is not in `generated`, the set of goldens
/// the tests compare: a golden no test generates any more is stale and
/// would silently stop guarding anything. `is_golden` picks the golden
/// files among the directory's (e.g. `*.expected` beside the fixtures).
pub fn assert_no_stale_goldens(
    dir: &Path,
    recursive: bool,
    is_golden: impl Fn(&Path) -> bool,
    generated: &std::collections::BTreeSet<PathBuf>,
) {
    let root = workspace_root();
    let mut stale = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(root.join(&dir))
            .unwrap_or_else(|e| panic!("cannot list golden directory {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = dir.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                if recursive {
                    pending.push(path);
                }
            } else if is_golden(&path) && !generated.contains(&path) {
                stale.push(path.display().to_string());
            }
        }
    }
    stale.sort();
    assert!(
        stale.is_empty(),
        "golden file(s) that no test generates any more (remove them, or restore the test that compares them):\n  {}",
        stale.join("\n  ")
    );
}

/// Whether `path` is a check report golden (`<rule>.expected`).
pub fn is_expected_report(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "expected")
}
