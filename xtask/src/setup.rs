//! Host setup on Debian 12: every row of pibake-host's tools table (apt
//! packages, some from bookworm-backports, and the PyPI tools in a venv), the
//! arm64 foreign architecture, and qemu-user binfmt for arm64.
//!
//! The Debian mirror is taken from the host's own apt sources; no mirror
//! host name is written into the repository.

use anyhow::{bail, Context};
use pibake_host::doctor;
use pibake_host::tools::{self, Need, Origin};
use std::path::{Path, PathBuf};
use std::process::Command;

const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/pibake-backports.sources";

/// Installs every row of the table the host lacks, then checks the table again.
pub fn host() -> anyhow::Result<()> {
    let needs = [Need::Build, Need::Agent, Need::Test];
    let report = doctor::examine(&probe(), &needs);
    let debian = missing(&report, Origin::Debian);
    let backports = missing(&report, Origin::Backports);
    if !debian.is_empty() || !backports.is_empty() {
        if !is_root() {
            bail!(
                "missing host packages: {}; run `sudo cargo xtask setup`\n{}",
                debian
                    .iter()
                    .chain(&backports)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" "),
                doctor::render(&report)
            );
        }
        apt_install(&debian, &backports)?;
    }
    binfmt()?;
    python_tools()?;
    // What setup installed must now satisfy the table: a row setup cannot
    // install (or installs wrongly) fails here, not later in a build.
    let after = doctor::examine(&probe(), &needs);
    if !after.is_ok() {
        bail!(
            "setup finished but the host still lacks:\n{}",
            doctor::render(&after)
        );
    }
    Ok(())
}

/// The packages of `origin` the report finds missing or too old.
fn missing(report: &doctor::Report, origin: Origin) -> Vec<&'static str> {
    report
        .findings
        .iter()
        .filter(|f| f.requirement.origin == origin)
        .map(|f| f.requirement.package)
        .collect()
}

/// Where setup puts the PyPI tools: a virtual environment of the checkout
/// (Debian's python refuses global pip installs, PEP 668).
pub fn python_tools_bin() -> PathBuf {
    crate::workspace_root().join("target/pytools/bin")
}

fn probe() -> doctor::SystemProbe {
    doctor::SystemProbe {
        extra_paths: vec![python_tools_bin()],
    }
}

/// The PyPI rows of the table, installed into the checkout's venv.
fn python_tools() -> anyhow::Result<()> {
    let bin = python_tools_bin();
    let wanted: Vec<&str> = tools::TABLE
        .iter()
        .filter(|r| r.origin == Origin::Pypi)
        .filter(|r| r.programs.iter().any(|p| !bin.join(p).is_file()))
        .map(|r| r.package)
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let venv = bin.parent().context("the venv's bin has a parent")?;
    if !bin.join("pip").is_file() {
        crate::run("python3", &["-m", "venv", &venv.to_string_lossy()])?;
    }
    let pip = bin.join("pip").to_string_lossy().into_owned();
    let mut args = vec!["install", "--quiet"];
    args.extend(wanted);
    crate::run(&pip, &args)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The host's Debian mirror URI, from its deb822 or one-line apt sources.
pub fn host_mirror() -> anyhow::Result<String> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.push("/etc/apt/sources.list".into());
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.to_string_lossy();
        if name.ends_with(".sources") && !name.ends_with("pibake-backports.sources") {
            // deb822: the stanza whose Suites name the host's release.
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
                };
                if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
                    if suites.split_whitespace().any(|s| s == "bookworm") {
                        if let Some(uri) = uris.split_whitespace().next() {
                            return Ok(uri.to_string());
                        }
                    }
                }
            }
        } else if name.ends_with(".list") {
            for line in text.lines() {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                if words.len() >= 3 && words[0] == "deb" && words[2] == "bookworm" {
                    return Ok(words[1].to_string());
                }
            }
        }
    }
    bail!("no Debian bookworm source in /etc/apt/sources.list.d or /etc/apt/sources.list; add one")
}

fn apt_install(packages: &[&str], backports: &[&str]) -> anyhow::Result<()> {
    let mirror = host_mirror()?;
    if !Path::new(BACKPORTS_SOURCE).exists() {
        let text = format!(
            "# Written by `cargo xtask setup` (pibake): newer e2fsprogs and QEMU.\nTypes: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        std::fs::write(BACKPORTS_SOURCE, text)
            .with_context(|| format!("writing {BACKPORTS_SOURCE}"))?;
    }
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .context("running dpkg")?;
    if !String::from_utf8_lossy(&foreign.stdout).contains("arm64") {
        crate::run("dpkg", &["--add-architecture", "arm64"])?;
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    crate::run_env("apt-get", &["update", "-q"], &env)?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    if !packages.is_empty() {
        crate::run_env("apt-get", &args, &env)?;
    }
    // `-t bookworm-backports`: `package/bookworm-backports` would take the
    // dependencies from bookworm (qemu-system-arm 10 then cannot have its
    // qemu-system-common 10). Only what the table names comes from here;
    // nothing in it needs a newer systemd.
    let mut args = vec![
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-t",
        "bookworm-backports",
    ];
    args.extend_from_slice(backports);
    if !backports.is_empty() {
        crate::run_env("apt-get", &args, &env)?;
    }
    Ok(())
}

/// Registers qemu-aarch64 with binfmt_misc so arm64 maintainer scripts run.
fn binfmt() -> anyhow::Result<()> {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("register").exists() {
        if !is_root() {
            bail!(
                "binfmt_misc is not mounted; run `sudo mount -t binfmt_misc binfmt_misc {}`",
                dir.display()
            );
        }
        crate::run(
            "mount",
            &[
                "-t",
                "binfmt_misc",
                "binfmt_misc",
                "/proc/sys/fs/binfmt_misc",
            ],
        )?;
    }
    if dir.join("qemu-aarch64").exists() {
        return Ok(());
    }
    let conf = Path::new("/usr/lib/binfmt.d/qemu-aarch64.conf");
    let rule = std::fs::read_to_string(conf)
        .with_context(|| format!("{} is missing; install qemu-user-static", conf.display()))?;
    if !is_root() {
        bail!("qemu-aarch64 is not registered with binfmt_misc; run `sudo cargo xtask setup`");
    }
    std::fs::write(dir.join("register"), rule.trim_end())
        .context("registering qemu-aarch64 with binfmt_misc")?;
    Ok(())
}
