//! `diff` golden tests: two builds that differ by one package and one config.txt line, given
//! as manifests and as images (boot texts read from the FAT partition).
//! Rewrite the golden files with `PIBAKE_BLESS=1 cargo test -p pibake-flash --test diff`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use common::*;
use pibake_flash::diff::{diff, PackageChange};

fn golden(name: &str, got: &str) -> Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("PIBAKE_BLESS").is_some_and(|v| v == "1") {
        fs::write(&path, got)?;
        return Ok(());
    }
    let want = fs::read_to_string(&path)
        .with_context(|| format!("missing {}: run with PIBAKE_BLESS=1", path.display()))?;
    assert_eq!(
        got,
        want,
        "{} differs (PIBAKE_BLESS=1 rewrites it)",
        path.display()
    );
    Ok(())
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn manifests_one_package_one_config_line() -> Result<()> {
    let d = diff(
        &fixture("lab-a.manifest.json"),
        &fixture("lab-b.manifest.json"),
    )?;
    assert_eq!(
        d.packages,
        [PackageChange::Added {
            name: "gpsd".into(),
            version: "3.25-5".into()
        }]
    );
    assert_eq!(d.boot.len(), 1);
    assert_eq!(
        d.boot[0].lines,
        [('+', "dtoverlay=pps-gpio,gpiopin=18".to_owned())]
    );
    golden("diff-manifests.txt", &d.render())?;
    // Reversed, the same change reads the other way.
    let r = diff(
        &fixture("lab-b.manifest.json"),
        &fixture("lab-a.manifest.json"),
    )?;
    assert_eq!(
        r.packages,
        [PackageChange::Removed {
            name: "gpsd".into(),
            version: "3.25-5".into()
        }]
    );
    assert!(diff(
        &fixture("lab-a.manifest.json"),
        &fixture("lab-a.manifest.json")
    )?
    .is_empty());
    Ok(())
}

/// Manifest without `boot`, beside an image: config.txt and cmdline.txt come from its FAT.
fn image_with_manifest(
    dir: &Path,
    name: &str,
    fixture_name: &str,
    config: &str,
) -> Result<PathBuf> {
    let t = make_image(dir, name, config)?;
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fixture(fixture_name))?)?;
    m.as_object_mut().context("object")?.remove("boot");
    fs::write(
        dir.join(format!("{name}.manifest.json")),
        serde_json::to_string(&m)?,
    )?;
    Ok(t.img)
}

#[test]
fn images_read_boot_lines_from_their_fat() -> Result<()> {
    let d = tempfile::tempdir()?;
    let a = image_with_manifest(
        d.path(),
        "lab-1.0",
        "lab-a.manifest.json",
        "arm_64bit=1\ndtoverlay=gpio-shutdown\n",
    )?;
    let b = image_with_manifest(
        d.path(),
        "lab-1.1",
        "lab-b.manifest.json",
        "arm_64bit=1\ndtoverlay=gpio-shutdown,debounce=1000\n",
    )?;
    let out = diff(&a, &b)?;
    assert_eq!(out.boot.len(), 1, "{}", out.render());
    golden("diff-images.txt", &out.render())?;
    Ok(())
}

#[test]
fn image_without_manifest_is_an_error() -> Result<()> {
    let d = tempfile::tempdir()?;
    let t = make_image(d.path(), "lone", "x=1\n")?;
    let e = diff(&t.img, &t.img).expect_err("no manifest");
    assert!(e.to_string().contains("lone.manifest.json"), "{e}");
    Ok(())
}
