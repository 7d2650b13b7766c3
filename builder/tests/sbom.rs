//! The SBOM a build writes beside each image (`<name>.spdx.json`): a fixture image's document
//! against its golden, and SPDX's own validator (PyPI's spdx-tools, `pyspdxtools`) on it, on
//! the lab's closures, and on a planted fault it must refuse.

mod common;

use anyhow::{bail, Context, Result};
use pibake::build::sbom::Sbom;
use pibake_inputs::{Lock, LockedPackage, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn deb(name: &str, version: &str, arch: &str, source: &str, origin: &str) -> LockedPackage {
    let base = version.split_once(':').map_or(version, |(_, v)| v);
    LockedPackage {
        name: name.into(),
        version: version.into(),
        architecture: arch.into(),
        filename: format!(
            "pool/main/{}/{source}/{name}_{base}_{arch}.deb",
            &source[..1]
        ),
        size: 1000,
        sha256: Sha256::of(format!("{name} {version} {arch}").as_bytes()),
        source: source.into(),
        origin: origin.into(),
    }
}

/// A small closure with what the document must encode: an epoch, `+` in a name and in a
/// version, an `all` package, one of a backports suite and one of a vendor's source.
fn fixture() -> Vec<LockedPackage> {
    vec![
        deb(
            "zlib1g",
            "1:1.3.dfsg+really1.3.1-1+b1",
            "arm64",
            "zlib",
            "debian",
        ),
        deb("adduser", "3.152", "all", "adduser", "debian"),
        deb("libstdc++6", "14.2.0-19", "arm64", "gcc-14", "debian"),
        deb("curl", "8.14.1-2", "arm64", "curl", "debian"),
        deb(
            "linux-base",
            "4.12~bpo13+1",
            "all",
            "linux-base",
            "debian-trixie-backports",
        ),
        deb("vendor-tool", "2.0-1", "arm64", "vendor-tool", "vendor"),
    ]
}

fn render(packages: &[LockedPackage], licenses: &BTreeMap<String, String>) -> Vec<u8> {
    let origins = BTreeSet::from(["debian".to_string(), "debian-trixie-backports".to_string()]);
    let image_sha256 = hex_of("lab-worker.img");
    Sbom {
        image: "lab-worker",
        image_sha256: &image_sha256,
        source_date_epoch: 1_796_005_301,
        // Fixed so that a release does not rewrite the golden.
        tool_version: "0.0.0-test",
        packages,
        licenses,
        debian_origins: &origins,
    }
    .to_json()
    .expect("render")
}

fn hex_of(s: &str) -> String {
    Sha256::of(s.as_bytes()).to_hex()
}

fn fixture_licenses() -> BTreeMap<String, String> {
    [("zlib1g", "Zlib"), ("curl", "curl")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `pyspdxtools -i <file>`: whether it validates, and what it said.
fn validate(dir: &Path, name: &str, json: &[u8]) -> Result<(bool, String)> {
    let file = dir.join(name);
    std::fs::write(&file, json)?;
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(&file)
        .output()
        .context(
            "pyspdxtools not found: install it with `pip install spdx-tools` \
             (`cargo xtask setup` puts it in target/pytools/bin, which must be on PATH)",
        )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[test]
fn the_fixture_document_matches_its_golden() {
    let json = render(&fixture(), &fixture_licenses());
    let text = String::from_utf8(json).expect("utf-8");
    common::golden(Path::new(common::SBOM_GOLDEN), &text);
}

#[test]
fn spdx_tools_validates_the_document_and_refuses_a_planted_fault() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let json = render(&fixture(), &fixture_licenses());
    let (ok, text) = validate(dir.path(), "fixture.spdx.json", &json)?;
    if !ok {
        bail!("pyspdxtools refuses the fixture's SBOM:\n{text}");
    }
    // The validator does refuse a broken document: a checksum that is no sha256.
    let good = hex_of("curl 8.14.1-2 arm64");
    let broken = String::from_utf8(json)?.replace(&good, "not-a-sha256");
    assert!(broken.contains("not-a-sha256"), "the fault was planted");
    let (ok, text) = validate(dir.path(), "broken.spdx.json", broken.as_bytes())?;
    assert!(!ok, "pyspdxtools accepted a malformed checksum:\n{text}");
    assert!(text.contains("not-a-sha256"), "{text}");
    Ok(())
}

/// Every closure of the lab's real lock (hundreds of packages, the versions and names Debian
/// really has) renders to a document the validator accepts.
#[test]
fn spdx_tools_validates_the_lab_closures() -> Result<()> {
    let path = common::workspace_root().join("examples/lab/pibake.lock");
    let lock = Lock::parse(&std::fs::read_to_string(&path)?, &path)?;
    assert!(!lock.closures.is_empty());
    let dir = tempfile::tempdir()?;
    for closure in &lock.closures {
        let json = render(&closure.packages, &BTreeMap::new());
        let doc: serde_json::Value = serde_json::from_slice(&json)?;
        let packages = doc["packages"].as_array().context("packages")?;
        assert_eq!(
            packages.len(),
            closure.packages.len() + 1,
            "the image and each .deb"
        );
        let relationships = doc["relationships"].as_array().context("relationships")?;
        assert_eq!(relationships.len(), closure.packages.len() + 1);
        let name = format!("lab-{}.spdx.json", closure.arch);
        let (ok, text) = validate(dir.path(), &name, &json)?;
        if !ok {
            bail!(
                "pyspdxtools refuses the SBOM of the lab's {} closure:\n{text}",
                closure.arch
            );
        }
    }
    Ok(())
}
