//! The `.qcow2` of a pc-efi image, for Proxmox (`qm disk import`): QEMU's own
//! `qemu-img convert` of the finished `.img`, not a writer of pibake's. The
//! qcow2 format has no timestamps or random fields, so the same `.img` and
//! the same qemu-img give the same bytes; the manifest records the qemu-img
//! version beside the sha256, so two builds can be compared.

use super::{io, BuildError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A written qcow2 and what it was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2 {
    pub path: PathBuf,
    pub sha256: String,
    /// `qemu-img --version`'s first line.
    pub tool: String,
}

/// The converter, for messages (spawned by its literal name: host/tests/spawned.rs reads it).
const QEMU_IMG: &str = "qemu-img";

fn qemu_img_version(image: &str) -> Result<String, BuildError> {
    let out = Command::new("qemu-img")
        .arg("--version")
        .output()
        .map_err(|e| missing_tool(image, &e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

fn missing_tool(image: &str, e: &std::io::Error) -> BuildError {
    super::image_err(
        image,
        format!("cannot run {QEMU_IMG} for the .qcow2 ({e}): apt-get install qemu-utils (`pibake doctor` lists what is missing)"),
    )
}

/// Where the qcow2 of `img` goes: beside it, `.img` replaced by `.qcow2`.
pub fn path_of(img: &Path) -> PathBuf {
    img.with_extension("qcow2")
}

/// Converts `img` into [`path_of`] it: into a locked temp file beside it,
/// fsynced, then renamed, so a killed build leaves no half qcow2 under the
/// final name (and the next build removes the temp file).
pub fn write(image: &str, img: &Path) -> Result<Qcow2, BuildError> {
    let tool = qemu_img_version(image)?;
    let path = path_of(img);
    let atomic_err = |e: pibake_image::atomic::AtomicError| io("cannot write", &e.path)(e.source);
    let tmp = pibake_image::atomic::temp_beside(&path).map_err(atomic_err)?;
    let out = Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "compat=1.1",
        ])
        .arg(img)
        .arg(tmp.path())
        .output()
        .map_err(|e| missing_tool(image, &e))?;
    if !out.status.success() {
        return Err(super::image_err(
            image,
            format!(
                "{QEMU_IMG} convert to {} failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    // qemu-img wrote through its own descriptor: reopen before the fsync.
    let written = tmp.reopen().map_err(io("cannot open", tmp.path()))?;
    written.sync_all().map_err(io("cannot sync", tmp.path()))?;
    pibake_image::atomic::persist(tmp, &path).map_err(atomic_err)?;
    let sha256 = super::sha256_file(&path).map_err(io("cannot read", &path))?;
    Ok(Qcow2 { path, sha256, tool })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same raw bytes give the same qcow2 bytes, and the qcow2 holds
    /// them: `qemu-img compare` reads it back equal to the raw image.
    #[test]
    fn same_raw_same_qcow2_and_it_reads_back_equal() -> anyhow::Result<()> {
        let t = tempfile::tempdir()?;
        let mut raw = vec![0u8; 4 << 20];
        for (i, b) in raw.iter_mut().enumerate().skip(1 << 20).take(70_000) {
            *b = (i % 251) as u8;
        }
        let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
        std::fs::write(&a, &raw)?;
        std::fs::write(&b, &raw)?;
        let (qa, qb) = (write("a", &a)?, write("b", &b)?);
        assert_eq!(qa.sha256, qb.sha256);
        assert!(qa.tool.starts_with("qemu-img version"), "{}", qa.tool);
        let cmp = Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
            .arg(&a)
            .arg(&qa.path)
            .status()?;
        assert!(cmp.success(), "qcow2 differs from the raw image");
        // A different byte gives a different qcow2 (the sha256 is of the content).
        raw[(1 << 20) + 5] ^= 0xff;
        std::fs::write(&b, &raw)?;
        assert_ne!(write("b", &b)?.sha256, qa.sha256);
        // Nothing but the two outputs and their inputs is left behind.
        let mut names: Vec<String> = std::fs::read_dir(t.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        assert_eq!(names, ["a.img", "a.qcow2", "b.img", "b.qcow2"]);
        Ok(())
    }
}
