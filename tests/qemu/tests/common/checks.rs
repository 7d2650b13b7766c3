//! What a booted node's report and disk must show: its identity, its
//! personal files, its failed units.

use super::{machine_id, Booted, Node};
use anyhow::{anyhow, ensure, Result};

/// The identity step chose `node` by `source` (the agent's words).
pub fn assert_identity(b: &Booted, node: &str, source: &str) -> Result<()> {
    let id = b.report.step("identity").ok_or_else(|| {
        anyhow!(
            "no identity step in the status: {:?}",
            b.report.section("status")
        )
    })?;
    ensure!(id.state == "done", "identity is {}: {}", id.state, id.why);
    ensure!(
        id.node.as_deref() == Some(node),
        "identity chose {:?}, expected {node}",
        id.node
    );
    ensure!(
        id.why.contains(source),
        "identity why {:?} does not name {source:?}",
        id.why
    );
    Ok(())
}

/// Hostname, address, NM keyfile, machine-id, SSH host keys of `node`.
pub fn assert_personalized(b: &Booted, node: Node) -> Result<()> {
    let hostname = b.state.text("/etc/hostname").unwrap_or_default();
    ensure!(
        hostname.trim() == node.name,
        "/etc/hostname is {hostname:?}"
    );
    ensure!(
        b.report.hostname().as_deref() == Some(node.name),
        "running hostname {:?}",
        b.report.hostname()
    );
    let addrs = b.report.addresses("eth0");
    ensure!(
        addrs.iter().any(|a| a == node.address),
        "eth0 has {addrs:?}, not {}",
        node.address
    );
    let keyfile = "/etc/NetworkManager/system-connections/pibake-wired.nmconnection";
    let stat = b
        .state
        .stat(keyfile)
        .ok_or_else(|| anyhow!("{keyfile} is missing"))?;
    ensure!(
        stat.mode == 0o600 && stat.uid == 0,
        "{keyfile} has mode {:o} uid {} (NM ignores it unless root 0600)",
        stat.mode,
        stat.uid
    );
    let text = b.state.text(keyfile).unwrap_or_default();
    ensure!(
        text.contains(&format!("address1={}/24", node.address)),
        "{keyfile} does not carry {}:\n{text}",
        node.address
    );
    machine_id(&b.state)?;
    for kind in ["ed25519", "ecdsa", "rsa"] {
        for suffix in ["", ".pub"] {
            let name = format!("ssh_host_{kind}_key{suffix}");
            ensure!(
                b.state.ssh_keys.contains(&name),
                "SSH host key {name} missing (have {:?})",
                b.state.ssh_keys
            );
        }
        let key = b
            .state
            .stat(&format!("/etc/ssh/ssh_host_{kind}_key"))
            .ok_or_else(|| anyhow!("no {kind} key"))?;
        ensure!(
            key.mode == 0o600 && key.size > 0,
            "{kind} host key mode {:o} size {}",
            key.mode,
            key.size
        );
    }
    // The disk is GROW bytes larger than the image; growpart may keep a
    // few sectors free at the end.
    ensure!(
        b.state.disk_len - b.state.root_end < (1 << 20),
        "root partition ends at {} but the disk has {} bytes: not grown",
        b.state.root_end,
        b.state.disk_len
    );
    Ok(())
}

/// No "Failed to start" on the console except for `allowed` units, and
/// `systemctl --failed` lists exactly `failed`.
pub fn assert_failed_units(b: &Booted, failed: &[&str]) -> Result<()> {
    let mut units = b.report.failed_units();
    units.sort();
    let mut want: Vec<String> = failed.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    ensure!(
        units == want,
        "systemctl --failed lists {units:?}, expected {want:?}:\n{}",
        b.report.section("failed").unwrap_or_default()
    );
    Ok(())
}
