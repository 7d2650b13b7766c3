//! The project's device-tree overlays (overlays/dtbo/*.dts), compiled with `dtc -@` because
//! Debian's raspi-firmware lacks gpio-shutdown, pps-gpio and disable-bt (Pi 4), and the
//! upstream Pi 5 tree needs its own: gpio-shutdown-pi5, pps-gpio-pi5 (RP1's `rp1_gpio`) and
//! bcm2712d0 (C0 tree to D0 tree, applied by the firmware itself on D0 boards).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::atomic::{self, AtomicError};

#[derive(Debug, thiserror::Error)]
pub enum DtboError {
    #[error("cannot list overlay sources in {dir}")]
    List {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("dtc not found: apt-get install device-tree-compiler")]
    DtcMissing(#[source] io::Error),
    #[error("overlay {name}: dtc failed: {stderr}")]
    Compile { name: String, stderr: String },
    #[error("overlay {name}: fdtoverlay cannot apply it to {base}: {stderr}")]
    Apply {
        name: String,
        base: PathBuf,
        stderr: String,
    },
    #[error("fdtoverlay not found: apt-get install device-tree-compiler")]
    FdtoverlayMissing(#[source] io::Error),
    #[error(transparent)]
    Write(#[from] AtomicError),
}

/// Compiles every `<name>.dts` in `src_dir` to `<out_dir>/<name>.dtbo` (sorted by name,
/// each output written atomically). Returns the outputs. Fails naming the first overlay that
/// does not compile.
pub fn compile_all(src_dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, DtboError> {
    let lerr = |source| DtboError::List {
        dir: src_dir.to_owned(),
        source,
    };
    let mut srcs: Vec<PathBuf> = std::fs::read_dir(src_dir)
        .map_err(lerr)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(lerr)?;
    srcs.retain(|p| p.extension().is_some_and(|e| e == "dts"));
    srcs.sort();
    srcs.iter().map(|s| compile(s, out_dir)).collect()
}

/// Compiles one overlay source to `<out_dir>/<stem>.dtbo`.
pub fn compile(src: &Path, out_dir: &Path) -> Result<PathBuf, DtboError> {
    let name = src
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = out_dir.join(format!("{name}.dtbo"));
    let tmp = atomic::temp_beside(&dest)?;
    let out = Command::new("dtc")
        .args(["-@", "-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(tmp.path())
        .arg(src)
        .output()
        .map_err(DtboError::DtcMissing)?;
    if !out.status.success() {
        return Err(DtboError::Compile {
            name,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    atomic::persist(tmp, &dest)?;
    Ok(dest)
}

/// Applies `overlay` to `base` with fdtoverlay into `out` (what the firmware does at boot).
pub fn apply(base: &Path, overlay: &Path, out: &Path) -> Result<(), DtboError> {
    let name = overlay
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let o = Command::new("fdtoverlay")
        .arg("-i")
        .arg(base)
        .arg("-o")
        .arg(out)
        .arg(overlay)
        .output()
        .map_err(DtboError::FdtoverlayMissing)?;
    if !o.status.success() {
        let stderr = String::from_utf8_lossy(&o.stderr).trim().to_owned();
        return Err(DtboError::Apply {
            name,
            base: base.to_owned(),
            stderr,
        });
    }
    Ok(())
}

/// The overlay a config.txt `dtoverlay=` value names: `name`, `name,param=x`
/// or `name:param` (the firmware's forms); `None` for an empty value. The one
/// reading of `dtoverlay=` shared by the builder (which .dtbo files an image
/// needs) and `pibake verify` (whether they are there).
pub fn overlay_name(value: &str) -> Option<&str> {
    let name = value.split([',', ':']).next().unwrap_or("").trim();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::overlay_name;

    #[test]
    fn the_firmwares_dtoverlay_forms() {
        assert_eq!(overlay_name("gpio-shutdown"), Some("gpio-shutdown"));
        assert_eq!(
            overlay_name("gpio-shutdown,gpio_pin=3"),
            Some("gpio-shutdown")
        );
        assert_eq!(overlay_name(" pps-gpio:gpiopin=18"), Some("pps-gpio"));
        assert_eq!(overlay_name(""), None);
        assert_eq!(overlay_name(",x=1"), None);
    }
}
