//! The overlay's systemd units, judged by `systemd-analyze verify` against a
//! root holding the host's units, a stub docker.service and the agent binary
//! at the path the units name.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = [
    "pibake-identity.service",
    "pibake-clock.service",
    "pibake-swarm.service",
];

fn overlay_units() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/firstboot/root/usr/lib/systemd/system")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, target)?;
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Runs `systemd-analyze verify --root` on the units; returns its stderr.
fn verify(edit: impl Fn(&str, String) -> String) -> anyhow::Result<(bool, String)> {
    let root = tempfile::tempdir()?;
    let system = root.path().join("usr/lib/systemd/system");
    copy_dir(Path::new("/usr/lib/systemd/system"), &system)?;
    fs::write(
        system.join("docker.service"),
        "[Unit]\nDescription=stub\n[Service]\nExecStart=/usr/bin/dockerd\n",
    )?;
    fs::create_dir_all(root.path().join("usr/bin"))?;
    fs::copy(
        env!("CARGO_BIN_EXE_pibake-firstboot"),
        root.path().join("usr/bin/pibake-firstboot"),
    )?;
    fs::copy("/usr/bin/true", root.path().join("usr/bin/dockerd"))?;
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = fs::read_to_string(overlay_units().join(unit))?;
        let path = system.join(unit);
        fs::write(&path, edit(unit, text))?;
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(&paths)
        .output()
        .map_err(|e| {
            anyhow::anyhow!("systemd-analyze not runnable ({e}): apt-get install systemd")
        })?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    let (ok, stderr) = verify(|_, text| text)?;
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    Ok(())
}

#[test]
fn verify_catches_a_bad_unit() -> anyhow::Result<()> {
    let (_, stderr) = verify(|unit, text| {
        if unit == "pibake-clock.service" {
            text.replace("Type=oneshot", "Typo=oneshot")
        } else {
            text
        }
    })?;
    assert!(stderr.contains("Typo"), "the check can fail: {stderr}");
    Ok(())
}

#[test]
fn units_order_identity_early_and_swarm_after_the_clock() -> anyhow::Result<()> {
    let read = |u: &str| fs::read_to_string(overlay_units().join(u));
    let identity = read("pibake-identity.service")?;
    assert!(identity.contains("Before=network-pre.target NetworkManager.service"));
    assert!(identity.contains("DefaultDependencies=no"));
    let clock = read("pibake-clock.service")?;
    assert!(clock.contains("Before=time-sync.target") && clock.contains("After=chrony.service"));
    let swarm = read("pibake-swarm.service")?;
    assert!(swarm.contains("Requires=docker.service pibake-clock.service"));
    Ok(())
}

/// Each unit runs only where the image has its node table, on the boot
/// partition in either of its mount points (`|`: either triggers), the
/// places the agent reads it from.
#[test]
fn units_are_conditioned_on_the_table_on_the_boot_partition() -> anyhow::Result<()> {
    use pibake_firstboot::bootfiles::{BootPartition, TABLE_FILE};
    let want: Vec<String> = BootPartition::ALL
        .iter()
        .map(|p| format!("ConditionPathExists=|/{}", p.path_of(TABLE_FILE)))
        .collect();
    for unit in UNITS {
        let text = fs::read_to_string(overlay_units().join(unit))?;
        let conditions: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Condition"))
            .collect();
        assert_eq!(conditions, want, "{unit}");
        assert!(!text.contains("/etc/pibake/nodes.toml"), "{unit}");
    }
    Ok(())
}
