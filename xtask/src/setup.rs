//! Host setup on Debian 12: apt packages (some from bookworm-backports),
//! the arm64 foreign architecture, and qemu-user binfmt for arm64.
//!
//! The Debian mirror is taken from the host's own apt sources; no mirror
//! host name is written into the repository.

use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;

/// Packages from the host's suite.
const PACKAGES: &[&str] = &[
    "keepalived",
    "chrony",
    "device-tree-compiler",
    "mtools",
    "dosfstools",
    "fdisk",
    "mmdebstrap",
    "arch-test",
    "qemu-user-static",
    "binfmt-support",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "rustc-web",
    "libstd-rust-web-dev:arm64",
    "zstd",
    "bmap-tools",
    "dpkg-dev",
    "apt-utils",
    "libarchive13",
    "gpgv",
    "debian-archive-keyring",
    "systemd",
    "curl",
    "python3",
    "iproute2",
    "iputils-ping",
    "qemu-utils",
];

/// Packages that must come from bookworm-backports (mke2fs -d tar needs
/// e2fsprogs >= 1.47.1; QEMU 10 for the image tests).
const BACKPORTS: &[&str] = &["e2fsprogs", "qemu-system-arm"];

const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/pibake-backports.sources";

pub fn host() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let old_e2fsprogs = !e2fsprogs_recent();
    let no_qemu_system = !Path::new("/usr/bin/qemu-system-aarch64").exists();
    if !missing.is_empty() || old_e2fsprogs || no_qemu_system {
        if !is_root() {
            bail!(
                "missing host packages: {} {}{}; run `sudo cargo xtask setup`",
                missing.join(" "),
                if old_e2fsprogs {
                    "e2fsprogs>=1.47.1 "
                } else {
                    ""
                },
                if no_qemu_system {
                    "qemu-system-arm"
                } else {
                    ""
                }
            );
        }
        apt_install(&missing)?;
    }
    binfmt()?;
    python_tools()?;
    Ok(())
}

/// check-jsonschema validates the release workflow against GitHub's schema.
fn python_tools() -> anyhow::Result<()> {
    let have = Command::new("check-jsonschema")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        crate::run(
            "python3",
            &["-m", "pip", "install", "--quiet", "check-jsonschema"],
        )?;
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn e2fsprogs_recent() -> bool {
    let Ok(out) = Command::new("mke2fs").arg("-V").output() else {
        return false;
    };
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // "mke2fs 1.47.2 (1-Jan-2025)"
    text.split_whitespace()
        .nth(1)
        .and_then(|v| {
            let parts: Vec<u32> = v.split('.').filter_map(|p| p.parse().ok()).collect();
            (parts.len() >= 2).then(|| (parts[0], parts[1], parts.get(2).copied().unwrap_or(0)))
        })
        .is_some_and(|v| v >= (1, 47, 1))
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

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
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
    let mut args = vec![
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-t",
        "bookworm-backports",
    ];
    args.extend_from_slice(BACKPORTS);
    crate::run_env("apt-get", &args, &env)?;
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
