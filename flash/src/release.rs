//! Release files: the rpi-imager repository JSON (`rpi-imager --repo <url>`) and SHA256SUMS.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::source::{self, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot hash {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{0} has no file name")]
    NoName(PathBuf),
    #[error(transparent)]
    Image(#[from] SourceError),
    #[error("release date {0:?}: want YYYY-MM-DD")]
    Date(String),
    #[error("cannot read {0}")]
    Dir(PathBuf, #[source] io::Error),
    #[error("no *.manifest.json in {0}: build the images first")]
    NoManifests(PathBuf),
    #[error("{0} is not a pibake image manifest")]
    Manifest(PathBuf, #[source] serde_json::Error),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] pibake_image::atomic::AtomicError),
}

/// What [`publish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub images: usize,
    pub os_list: PathBuf,
    pub sums: PathBuf,
}

/// The release of the images built into `dir`: rpi-imager's `os_list`
/// (each image's `.img.zst` measured, its URL under `url_base`, its date
/// from the manifest's SOURCE_DATE_EPOCH) and SHA256SUMS of every asset
/// (`.img.zst`, `.bmap`, `.sha256`, `.manifest.json` and the os_list).
pub fn publish(
    dir: &Path,
    url_base: &str,
    os_list: &Path,
    sums: &Path,
) -> Result<Published, ReleaseError> {
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ReleaseError::Dir(dir.to_owned(), e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    manifests.sort();
    if manifests.is_empty() {
        return Err(ReleaseError::NoManifests(dir.to_owned()));
    }
    let mut images = Vec::new();
    let mut assets = Vec::new();
    for path in &manifests {
        let bytes = std::fs::read(path).map_err(|e| ReleaseError::Read(path.clone(), e))?;
        let manifest = pibake_image::manifest::Manifest::from_json(&bytes)
            .map_err(|e| ReleaseError::Manifest(path.clone(), e))?;
        let meta = ImageMeta {
            name: manifest.name.clone(),
            description: format!("pibake image {} (role {})", manifest.name, manifest.role),
            url: format!(
                "{}/{}.img.zst",
                url_base.trim_end_matches('/'),
                manifest.name
            ),
            icon: None,
            release_date: release_date(manifest.source_date_epoch),
            devices: manifest
                .platforms
                .iter()
                .map(|p| imager_device(p))
                .collect(),
        };
        let zst = dir.join(format!("{}.img.zst", manifest.name));
        images.push(ReleaseImage::measure(&zst, &meta)?);
        for ext in ["img.zst", "bmap", "sha256", "manifest.json"] {
            assets.push(dir.join(format!("{}.{ext}", manifest.name)));
        }
    }
    let write = |path: &Path, text: String| {
        pibake_image::atomic::write(path, text.as_bytes())
            .map_err(|e| ReleaseError::Write(path.to_owned(), e))
    };
    write(os_list, rpi_imager_manifest(&images))?;
    assets.push(os_list.to_path_buf());
    write(sums, sha256sums(&assets)?)?;
    Ok(Published {
        images: images.len(),
        os_list: os_list.to_owned(),
        sums: sums.to_owned(),
    })
}

/// rpi-imager's device tag of a pibake platform.
fn imager_device(platform: &str) -> String {
    match platform {
        "rpi4" => "pi4-64bit".to_string(),
        "rpi5" => "pi5-64bit".to_string(),
        other => other.to_string(),
    }
}

/// One entry of rpi-imager's `os_list`. Field names are rpi-imager's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseImage {
    pub name: String,
    pub description: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// `YYYY-MM-DD`; derive it from the build's SOURCE_DATE_EPOCH ([`release_date`]), not the clock.
    pub release_date: String,
    /// Size and SHA-256 of the decompressed image (what lands on the card).
    pub extract_size: u64,
    pub extract_sha256: String,
    /// Size and SHA-256 of the file behind `url`.
    pub image_download_size: u64,
    pub image_download_sha256: String,
    /// rpi-imager device tags, e.g. `pi4-64bit`, `pi5-64bit`; empty = offered for every board.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// rpi-imager's customisation mechanism (`systemd` = firstrun.sh, `cloudinit`). Left out
    /// for pibake images: their agent takes identity from the boot partition, and rpi-imager
    /// offers no customisation for an entry without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_format: Option<String>,
}

/// What describes an image besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageMeta {
    pub name: String,
    pub description: String,
    /// Download URL of the `.img.zst` (e.g. the release asset's URL).
    pub url: String,
    pub icon: Option<String>,
    pub release_date: String,
    pub devices: Vec<String>,
}

impl ReleaseImage {
    /// Measures a published `.img.zst` (or `.img`): download size and hash of the file,
    /// extract size and hash of its decoded content.
    pub fn measure(download: &Path, meta: &ImageMeta) -> Result<Self, ReleaseError> {
        check_date(&meta.release_date)?;
        let (image_download_size, image_download_sha256) = hash_file(download)?;
        let (extract_size, extract_sha256) = source::measure(download)?;
        Ok(Self {
            name: meta.name.clone(),
            description: meta.description.clone(),
            url: meta.url.clone(),
            icon: meta.icon.clone(),
            release_date: meta.release_date.clone(),
            extract_size,
            extract_sha256,
            image_download_size,
            image_download_sha256,
            devices: meta.devices.clone(),
            init_format: None,
        })
    }
}

#[derive(Serialize)]
struct OsList<'a> {
    os_list: &'a [ReleaseImage],
}

/// `{"os_list": [...]}`, pretty-printed, entries in the given order, newline-terminated.
pub fn rpi_imager_manifest(images: &[ReleaseImage]) -> String {
    let mut s = serde_json::to_string_pretty(&OsList { os_list: images }).unwrap_or_default();
    s.push('\n');
    s
}

/// `sha256sum`-compatible lines (`<hex>  <file name>`), sorted by file name.
pub fn sha256sums(paths: &[PathBuf]) -> Result<String, ReleaseError> {
    let mut lines = Vec::with_capacity(paths.len());
    for p in paths {
        let name = p
            .file_name()
            .ok_or_else(|| ReleaseError::NoName(p.clone()))?
            .to_string_lossy()
            .into_owned();
        let (_, h) = hash_file(p)?;
        lines.push((name, h));
    }
    lines.sort();
    Ok(lines
        .into_iter()
        .map(|(n, h)| format!("{h}  {n}\n"))
        .collect())
}

fn hash_file(p: &Path) -> Result<(u64, String), ReleaseError> {
    let err = |e| ReleaseError::Read(p.to_owned(), e);
    let mut f = File::open(p).map_err(err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(err)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// `YYYY-MM-DD` (UTC) of a Unix time, e.g. the lock's SOURCE_DATE_EPOCH.
pub fn release_date(epoch_secs: u64) -> String {
    // No clock or time zone is consulted.
    let days = i64::try_from(epoch_secs / 86_400).unwrap_or(i64::MAX / 2);
    let (y, m, d) = pibake_host::civil::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn check_date(s: &str) -> Result<(), ReleaseError> {
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ReleaseError::Date(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_epoch() {
        assert_eq!(release_date(0), "1970-01-01");
        assert_eq!(release_date(951_782_400), "2000-02-29");
        assert_eq!(release_date(1_735_689_599), "2024-12-31");
        assert_eq!(release_date(1_735_689_600), "2025-01-01");
    }

    #[test]
    fn os_list_fields_and_sums() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let raw = vec![7u8; 10_000];
        let zst = d.path().join("lab-worker.img.zst");
        std::fs::write(&zst, zstd::encode_all(&raw[..], 3)?)?;
        let meta = ImageMeta {
            name: "lab worker".into(),
            description: "Pi 5 worker".into(),
            url: "https://example.invalid/lab-worker.img.zst".into(),
            icon: None,
            release_date: "2025-01-01".into(),
            devices: vec!["pi5-64bit".into()],
        };
        let img = ReleaseImage::measure(&zst, &meta)?;
        assert_eq!(img.extract_size, 10_000);
        assert_eq!(img.extract_sha256, hex::encode(Sha256::digest(&raw)));
        assert_eq!(img.image_download_size, std::fs::metadata(&zst)?.len());
        let json: serde_json::Value = serde_json::from_str(&rpi_imager_manifest(&[img]))?;
        let e = &json["os_list"][0];
        for k in [
            "name",
            "description",
            "url",
            "release_date",
            "extract_size",
            "extract_sha256",
            "image_download_size",
            "image_download_sha256",
            "devices",
        ] {
            assert!(!e[k].is_null(), "{k} missing");
        }
        assert!(e.get("icon").is_none());
        let sums = sha256sums(std::slice::from_ref(&zst))?;
        assert_eq!(
            sums,
            format!(
                "{}  lab-worker.img.zst\n",
                hex::encode(Sha256::digest(std::fs::read(&zst)?))
            )
        );
        assert!(ReleaseImage::measure(
            &zst,
            &ImageMeta {
                release_date: "2025-1-1".into(),
                ..meta
            }
        )
        .is_err());
        Ok(())
    }
}
