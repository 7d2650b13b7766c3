//! The Swarm as the tests see it: join tokens on boot partitions, members
//! that joined, `docker node ls` listings, the VIP.

use super::checks::{assert_failed_units, assert_identity, assert_personalized};
use super::{Booted, Lab, BOOT_TIMEOUT, MASTER1, VIP};
use anyhow::{anyhow, ensure, Context, Result};
use pibake_qemu::overlay::Overlay;
use pibake_qemu::vm::Vm;
use std::time::{Duration, Instant};

/// Puts a Swarm join token on a board's boot partition, as a user would.
pub fn give_token(overlay: &Overlay, key: &str, token: &str) -> Result<()> {
    overlay.write_boot_files(&[(
        "pibake-secrets.toml",
        format!("{key} = \"{token}\"\n").as_bytes(),
    )])?;
    Ok(())
}

/// A [`Probe::Member`]'s `joined` section: its local Swarm node state.
pub fn check_joined(state: &str, host: &str) -> Result<()> {
    ensure!(
        state.trim() == "active",
        "{host} did not join the swarm: its local node state is {:?}",
        state.trim()
    );
    Ok(())
}

/// Waits for a [`Probe::Member`] to have joined (or given up), and fails at
/// once unless it is in the swarm (rather than in a manager's long wait).
pub fn wait_joined(vm: &mut Vm, host: &str) -> Result<()> {
    let state = vm.wait_probe_section("joined", BOOT_TIMEOUT)?;
    check_joined(&state, host).with_context(|| format!("console: {}", vm.console_path().display()))
}

/// The agent's Swarm step on `host` is done.
pub fn ensure_swarm_done(report: &pibake_qemu::probe::Report, host: &str) -> Result<()> {
    let swarm = report
        .step("swarm")
        .ok_or_else(|| anyhow!("no swarm step on {host}"))?;
    ensure!(swarm.state == "done", "{host} swarm step: {swarm:?}");
    Ok(())
}

/// Every host is listed Ready in `docker node ls` output.
pub fn ensure_ready(nodes: &str, hosts: &[&str]) -> Result<()> {
    for host in hosts {
        ensure!(
            nodes
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*host) && l.contains("Ready")),
            "{host} not Ready; docker node ls on master1:\n{nodes}"
        );
    }
    Ok(())
}

/// Waits (bounded) until the VIP answers a ping from the test's namespace.
/// keepalived takes it a few advert intervals after its track script first
/// succeeds (FACTS.md: about 3.5 s at 1 s), and the script runs `docker
/// info`, slow under TCG: this can be well after the swarm is up.
pub fn wait_for_vip(lab: &Lab) -> Result<()> {
    let limit = Duration::from_secs(180);
    let start = Instant::now();
    while start.elapsed() < limit {
        if lab.ns.ping(VIP, Duration::from_secs(2))? {
            return Ok(());
        }
    }
    Err(anyhow!("VIP {VIP} does not answer within {limit:?}"))
}

/// The MAC the test namespace resolved `addr` to, if any.
pub fn neighbour_mac(lab: &Lab, addr: std::net::Ipv4Addr) -> Result<Option<String>> {
    let out = lab.ns.ip(&["neigh", "show", &addr.to_string()])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_owned))
}

/// master1, the first manager and the VIP's first holder, as its report
/// (taken before its plug was pulled) and its disk show it.
pub fn assert_master1(b: &Booted) -> Result<()> {
    assert_identity(b, "master1", "MAC address")?;
    assert_personalized(b, MASTER1)?;
    let addrs = b.report.addresses("eth0");
    ensure!(
        addrs.iter().any(|a| *a == VIP.to_string()),
        "VIP {VIP} not on master1's eth0: {addrs:?}"
    );
    ensure_swarm_done(&b.report, "master1")?;
    let keepalived = b
        .state
        .text("/etc/keepalived/keepalived.conf")
        .ok_or_else(|| anyhow!("no keepalived.conf installed on master1"))?;
    ensure!(
        keepalived.contains("priority 150"),
        "keepalived.conf of master1:\n{keepalived}"
    );
    assert_failed_units(b, &[])
}
