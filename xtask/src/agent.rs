//! Building the first-boot agent with Debian's rustc for each architecture
//! pibake makes images for: aarch64 (the boards, checked under qemu-user) and
//! x86_64 (pc-efi images, checked natively). One compiler for both, so the
//! two agents come from the same toolchain.
//! Recipe and host packages: DEVELOPERS.md, "Cross-building the agent".

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The boards' target.
pub const TARGET: &str = "aarch64-unknown-linux-gnu";
/// The pc-efi images' target.
pub const X86_64_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian's rustc, which has the aarch64 standard library
/// (libstd-rust-web-dev:arm64); rustup's toolchain here has none.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// A target directory of its own: a different rustc would otherwise
/// invalidate the host build's artifacts on every switch.
pub const CROSS_TARGET_DIR: &str = "target/agent-cross";

/// Both agents, built by the same rustc.
pub struct Agents {
    /// aarch64 (Raspberry Pi images).
    pub aarch64: PathBuf,
    /// x86_64 (pc-efi images).
    pub x86_64: PathBuf,
}

impl Agents {
    /// Both paths, aarch64 first.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.aarch64, &self.x86_64]
    }

    /// `PIBAKE_AGENT_BIN`'s value for both (paths separated by `:`).
    pub fn env_value(&self) -> anyhow::Result<String> {
        let joined = std::env::join_paths(self.paths()).context("an agent path holds a `:`")?;
        Ok(joined.to_string_lossy().into_owned())
    }
}

/// The host packages `target`'s build needs: (path, package).
fn needs(target: &str) -> Vec<(&'static str, &'static str)> {
    let mut needs = vec![(DEBIAN_RUSTC, "rustc-web")];
    if target == TARGET {
        needs.extend([
            (
                "/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib",
                "libstd-rust-web-dev:arm64",
            ),
            ("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
            (
                "/usr/aarch64-linux-gnu/lib/libc.so.6",
                "libc6-dev-arm64-cross",
            ),
        ]);
    } else {
        needs.push((
            "/usr/lib/rustlib/x86_64-unknown-linux-gnu/lib",
            "libstd-rust-web-dev",
        ));
    }
    needs
}

/// Builds both agents (aarch64, then x86_64) into [`CROSS_TARGET_DIR`].
pub fn build_agents(workspace_root: &Path) -> anyhow::Result<Agents> {
    Ok(Agents {
        aarch64: build_agent(workspace_root)?,
        x86_64: build_agent_for(
            workspace_root,
            &workspace_root.join(CROSS_TARGET_DIR),
            X86_64_TARGET,
        )?,
    })
}

/// Cross-builds the aarch64 `pibake-firstboot` and returns the binary's path.
pub fn build_agent(workspace_root: &Path) -> anyhow::Result<PathBuf> {
    build_agent_for(
        workspace_root,
        &workspace_root.join(CROSS_TARGET_DIR),
        TARGET,
    )
}

/// Builds `pibake-firstboot` for `target` with Debian's rustc in release (the
/// workspace release profile: opt-level "s", LTO, strip, panic=abort) into
/// `target_dir`, and returns the binary's path.
pub fn build_agent_for(
    workspace_root: &Path,
    target_dir: &Path,
    target: &str,
) -> anyhow::Result<PathBuf> {
    for (path, package) in needs(target) {
        if !Path::new(path).exists() {
            bail!("{path} missing: apt-get install {package} (see DEVELOPERS.md)");
        }
    }
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace_root)
        .env("RUSTC", DEBIAN_RUSTC)
        .env_remove("RUSTC_WRAPPER")
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "build",
            "--locked",
            "--release",
            "-p",
            "pibake-firstboot",
            "--target",
            target,
        ])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("{target} build of pibake-firstboot failed ({status})");
    }
    let bin = target_dir.join(target).join("release/pibake-firstboot");
    if !bin.is_file() {
        bail!("{target} build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Checks `bin` is a 64-bit little-endian ELF of `e_machine` `machine`.
fn check_elf(bin: &Path, machine: u16, what: &str) -> anyhow::Result<()> {
    let head = std::fs::read(bin).with_context(|| format!("cannot read {}", bin.display()))?;
    if head.len() < 20
        || &head[..4] != b"\x7fELF"
        || head[4] != 2
        || head[5] != 1
        || u16::from_le_bytes([head[18], head[19]]) != machine
    {
        bail!("{} is not an {what} ELF", bin.display());
    }
    Ok(())
}

/// Runs `command` (the agent with `--help`) and checks it prints the agent's usage.
/// `how` says where it ran ("natively"), `cannot_run` what to do when it could not start.
fn check_help(mut command: Command, bin: &Path, how: &str, cannot_run: &str) -> anyhow::Result<()> {
    let out = command
        .arg("--help")
        .output()
        .with_context(|| format!("cannot run {} {how}: {cannot_run}", bin.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} --help {how} failed ({}): {}",
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

/// Runs the aarch64 binary under `qemu-aarch64-static` with `--help` and
/// checks it is an aarch64 ELF (e_machine 183) that prints the agent's usage.
pub fn check_agent_runs(bin: &Path) -> anyhow::Result<()> {
    check_elf(bin, 183, "aarch64")?;
    let mut command = Command::new("qemu-aarch64-static");
    command.args(["-L", "/usr/aarch64-linux-gnu"]).arg(bin);
    check_help(
        command,
        bin,
        "under qemu-aarch64-static",
        "apt-get install qemu-user-static",
    )
}

/// Runs the x86_64 binary natively with `--help` and checks it is an x86-64
/// ELF (e_machine 62) that prints the agent's usage.
pub fn check_x86_64_agent_runs(bin: &Path) -> anyhow::Result<()> {
    check_elf(bin, 62, "x86-64")?;
    if !cfg!(target_arch = "x86_64") {
        bail!(
            "{} is an x86-64 program and this host is not: check it on an x86-64 host",
            bin.display()
        );
    }
    check_help(
        Command::new(bin),
        bin,
        "natively",
        "is it executable? (`cargo xtask agent` builds it)",
    )
}

/// Checks both agents run (see [`check_agent_runs`], [`check_x86_64_agent_runs`]).
pub fn check_agents_run(agents: &Agents) -> anyhow::Result<()> {
    check_agent_runs(&agents.aarch64)?;
    check_x86_64_agent_runs(&agents.x86_64)
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

    /// Both agents are built in the test command: the aarch64 one runs under
    /// qemu-user, the x86_64 one natively (release builds: about a minute
    /// each on a free core, nothing when `cargo xtask agent` built them).
    #[test]
    fn agents_build_and_run() -> anyhow::Result<()> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has a parent")?;
        let agents = build_agents(workspace)?;
        check_agents_run(&agents)?;
        for bin in agents.paths() {
            let size = agent_size(bin)?;
            assert!(
                size < 5 * 1024 * 1024,
                "{} is {size} bytes, goal < 5 MiB",
                bin.display()
            );
        }
        assert_eq!(
            agents.env_value()?,
            format!("{}:{}", agents.aarch64.display(), agents.x86_64.display())
        );
        Ok(())
    }
}
