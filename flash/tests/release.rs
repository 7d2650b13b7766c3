//! `pibake release-manifest`'s operation: the os_list and SHA256SUMS of a
//! folder of built images, read from their manifests.

use anyhow::Result;
use sha2::{Digest, Sha256};

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn publishes_every_manifested_image_with_its_assets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let image = vec![7u8; 4096];
    let zst = zstd::encode_all(&image[..], 3)?;
    std::fs::write(d.join("lab-worker.img.zst"), &zst)?;
    for (ext, body) in [("bmap", "<bmap/>"), ("sha256", "x  lab-worker.img\n")] {
        std::fs::write(d.join(format!("lab-worker.{ext}")), body)?;
    }
    std::fs::write(
        d.join("lab-worker.manifest.json"),
        r#"{"format": 1, "name": "lab-worker", "role": "worker", "platforms": ["rpi4", "rpi5"],
            "source_date_epoch": 1700000000}"#,
    )?;
    let os_list = d.join("os_list.json");
    let sums = d.join("SHA256SUMS");
    let done = pibake_flash::release::publish(d, "https://example.org/rel/", &os_list, &sums)?;
    assert_eq!(done.images, 1);

    let list: serde_json::Value = serde_json::from_slice(&std::fs::read(&os_list)?)?;
    let entry = &list["os_list"][0];
    assert_eq!(entry["name"], "lab-worker");
    assert_eq!(entry["url"], "https://example.org/rel/lab-worker.img.zst");
    assert_eq!(entry["release_date"], "2023-11-14");
    assert_eq!(entry["extract_size"], 4096);
    assert_eq!(entry["extract_sha256"], hex_sha256(&image));
    assert_eq!(entry["image_download_sha256"], hex_sha256(&zst));
    assert_eq!(
        entry["devices"],
        serde_json::json!(["pi4-64bit", "pi5-64bit"])
    );

    let text = std::fs::read_to_string(&sums)?;
    for asset in [
        "lab-worker.img.zst",
        "lab-worker.bmap",
        "lab-worker.sha256",
        "lab-worker.manifest.json",
        "os_list.json",
    ] {
        assert!(
            text.lines().any(|l| l.ends_with(&format!("  {asset}"))),
            "{asset} missing:\n{text}"
        );
    }
    assert!(
        text.contains(&format!("{}  lab-worker.img.zst", hex_sha256(&zst))),
        "{text}"
    );
    Ok(())
}

#[test]
fn a_folder_without_manifests_or_with_a_bad_one_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let out = (d.join("os_list.json"), d.join("SHA256SUMS"));
    let Err(error) = pibake_flash::release::publish(d, "u", &out.0, &out.1) else {
        anyhow::bail!("published a folder it should refuse");
    };
    assert!(error.to_string().contains("no *.manifest.json"), "{error}");
    std::fs::write(d.join("x.manifest.json"), "[1, 2]")?;
    let Err(error) = pibake_flash::release::publish(d, "u", &out.0, &out.1) else {
        anyhow::bail!("published a folder it should refuse");
    };
    assert!(
        error.to_string().contains("is not a pibake image manifest"),
        "{error}"
    );
    assert!(
        !out.0.exists() && !out.1.exists(),
        "nothing is written on an error"
    );
    Ok(())
}
