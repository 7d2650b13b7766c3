//! The release workflow is checked against the GitHub workflow JSON schema (check-jsonschema's
//! vendored copy, no network) and for the steps the release promises.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn workflow() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.github/workflows/release.yml")
}

fn schema_check(path: &Path) -> Result<(bool, String)> {
    let out = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(path)
        .output()
        .context("check-jsonschema not found: install it with `pip install check-jsonschema`")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[test]
fn release_workflow_is_schema_valid() -> Result<()> {
    let (ok, text) = schema_check(&workflow())?;
    if !ok {
        bail!("release.yml fails the workflow schema:\n{text}");
    }
    // The checker does reject a broken workflow (a job without runs-on, a bad trigger).
    let d = tempfile::tempdir()?;
    let bad = d.path().join("bad.yml");
    let broken = std::fs::read_to_string(workflow())?
        .replace("    runs-on: ubuntu-24.04\n", "")
        .replace("tags: [\"v*\"]", "tags: 5");
    std::fs::write(&bad, broken)?;
    let (ok, _) = schema_check(&bad)?;
    assert!(!ok, "schema check accepted a broken workflow");
    Ok(())
}

#[test]
fn release_workflow_does_what_the_release_promises() -> Result<()> {
    let w = std::fs::read_to_string(workflow())?;
    for needle in [
        "tags: [\"v*\"]",
        "cargo xtask setup",
        "fetch -c \"$CLUSTER\"",
        "--offline build",
        "store-a",
        "store-b",
        "diff -u \"$RUNNER_TEMP/a.sums\" \"$RUNNER_TEMP/b.sums\"",
        "pibake release-manifest",
        "out-a/*.img.zst",
        "out-a/*.bmap",
        "out-a/*.sha256",
        "out-a/*.manifest.json",
        "out-a/*.spdx.json",
        "packages: write",
        "--substituter \"$CACHE\" --trusted-key",
        "cache push -c \"$CLUSTER\"",
        "never the cache",
        "out-a/SHA256SUMS",
        "out-a/os_list.json",
    ] {
        assert!(w.contains(needle), "release.yml lacks {needle:?}");
    }
    // Context values reach scripts through env, never spliced into a `run:` script.
    let mut run_indent: Option<usize> = None;
    for line in w.lines() {
        let indent = line.len() - line.trim_start().len();
        if run_indent.is_some_and(|i| !line.trim().is_empty() && indent <= i) {
            run_indent = None;
        }
        let key = line.trim_start();
        if key.starts_with("run:") || key.starts_with("- run:") {
            assert!(
                !line.contains("${{"),
                "context expression in a script: {line}"
            );
            run_indent = Some(indent);
        } else if run_indent.is_some() {
            assert!(
                !line.contains("${{"),
                "context expression in a script: {line}"
            );
        }
    }
    Ok(())
}
