//! Cross-building the first-boot agent for the boards (aarch64) with
//! Debian's rustc, and checking the result runs under qemu-user.
//! Recipe and host packages: DEVELOPERS.md, "Cross-building the agent".

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The boards' target.
pub const TARGET: &str = "aarch64-unknown-linux-gnu";
/// Debian's rustc, which has the aarch64 standard library
/// (libstd-rust-web-dev:arm64); rustup's toolchain here has none.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// A target directory of its own: a different rustc would otherwise
/// invalidate the host build's artifacts on every switch.
pub const CROSS_TARGET_DIR: &str = "target/agent-cross";

/// Cross-builds `pibake-firstboot` in release (the workspace release profile:
/// opt-level "s", LTO, strip, panic=abort) and returns the binary's path.
pub fn build_agent(workspace_root: &Path) -> anyhow::Result<PathBuf> {
    for (path, package) in [
        (DEBIAN_RUSTC, "rustc-web"),
        (
            "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib",
            "libstd-rust-web-dev:arm64",
        ),
        ("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        (
            "/usr/aarch64-linux-gnu/lib/libc.so.6",
            "libc6-dev-arm64-cross",
        ),
    ] {
        if !Path::new(path).exists() {
            bail!("{path} missing: apt-get install {package} (see DEVELOPERS.md)");
        }
    }
    let target_dir = workspace_root.join(CROSS_TARGET_DIR);
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace_root)
        .env("RUSTC", DEBIAN_RUSTC)
        .env_remove("RUSTC_WRAPPER")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--locked",
            "--release",
            "-p",
            "pibake-firstboot",
            "--target",
            TARGET,
        ])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cross build of pibake-firstboot failed ({status})");
    }
    let bin = target_dir.join(TARGET).join("release/pibake-firstboot");
    if !bin.is_file() {
        bail!("cross build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Runs the aarch64 binary under `qemu-aarch64-static` with `--help` and
/// checks it is an aarch64 ELF that prints the agent's usage.
pub fn check_agent_runs(bin: &Path) -> anyhow::Result<()> {
    let head = std::fs::read(bin).with_context(|| format!("cannot read {}", bin.display()))?;
    // ELF, 64-bit, e_machine 183 (EM_AARCH64), little endian.
    if head.len() < 20 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[18] != 183 {
        bail!("{} is not an aarch64 ELF", bin.display());
    }
    let qemu = "qemu-aarch64-static";
    let out = Command::new("qemu-aarch64-static")
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("cannot run {qemu}: apt-get install qemu-user-static"))?;
    let help = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} --help under {qemu} failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for word in [
        "Usage: pibake-firstboot",
        "identity",
        "clock",
        "swarm",
        "status",
    ] {
        if !help.contains(word) {
            bail!("--help output lacks {word:?}:\n{help}");
        }
    }
    Ok(())
}

/// Size of the (stripped) binary, bytes.
pub fn agent_size(bin: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(bin)
        .with_context(|| format!("cannot stat {}", bin.display()))?
        .len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The aarch64 agent is built in the test command and runs under
    /// qemu-user (a release cross build: about a minute on a free core).
    #[test]
    fn agent_cross_builds_and_runs_under_qemu() -> anyhow::Result<()> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has a parent")?;
        let bin = build_agent(workspace)?;
        check_agent_runs(&bin)?;
        let size = agent_size(&bin)?;
        assert!(
            size < 5 * 1024 * 1024,
            "agent is {size} bytes, goal < 5 MiB"
        );
        Ok(())
    }
}
