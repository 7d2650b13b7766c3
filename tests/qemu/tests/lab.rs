//! The lab's role images booted in QEMU: each role personalizes itself, the
//! clock gate, power cuts in first boot (after each journaled step, held
//! there by the agent's test-only `pibake.test.hold_after=`, and one at a
//! random point of identity), a second boot, the GPS node with no time
//! source (its clock gate refuses, the Swarm step waits), and the three-VM
//! Swarm through the VIP with its failover.
//!
//! Needs the images (`cargo xtask lab`), root (network namespaces, taps),
//! qemu-system-arm, qemu-utils, mtools, e2fsprogs, iproute2, chrony.
//! VMs run one at a time; the worker1 first boot is shared by the tests
//! that compare against it.

mod common;

use anyhow::{anyhow, ensure, Context, Result};
use common::*;
use pibake_firstboot::journal::{hold_marker, Outcome, Record, Step, HOLD_KEY};
use pibake_firstboot::table::NodeTable;
use pibake_qemu::disk::{Fat, RawDisk};
use pibake_qemu::images::role_image;
use pibake_qemu::overlay::Overlay;
use pibake_qemu::probe::Probe;
use pibake_qemu::vm::{BootFiles, Vm, MULTI_USER};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// worker1's uninterrupted first boot, by MAC, with a time server.
#[derive(Debug)]
struct Reference {
    dir: PathBuf,
    boot: BootFiles,
    table: NodeTable,
    overlay: Overlay,
    first: Booted,
}

static REFERENCE: OnceLock<std::result::Result<Reference, String>> = OnceLock::new();

/// Boots the reference once (callers hold the serial lock).
fn reference() -> Result<&'static Reference> {
    REFERENCE
        .get_or_init(|| make_reference().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("worker1 reference boot failed: {e}"))
}

fn make_reference() -> Result<Reference> {
    let dir = workdir("reference")?;
    let boot = boot_files("worker", &dir)?;
    let table = node_table("worker")?;
    let overlay = Overlay::create(&role_image("worker")?, &dir, "worker1", GROW)?;
    let lab = Lab::new(&dir, true)?;
    let first = boot_once(
        &lab,
        &boot,
        &overlay,
        WORKER1,
        &table,
        "worker1",
        "worker1-first",
        &dir,
        &BootOpts::default(),
    )?;
    Ok(Reference {
        dir,
        boot,
        table,
        overlay,
        first,
    })
}

fn timed<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f();
    eprintln!("TIMING {name}: {:.0} s", start.elapsed().as_secs_f64());
    out
}

/// The identity step chose `node` by `source` (the agent's words).
fn assert_identity(b: &Booted, node: &str, source: &str) -> Result<()> {
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
fn assert_personalized(b: &Booted, node: Node) -> Result<()> {
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
fn assert_failed_units(b: &Booted, failed: &[&str]) -> Result<()> {
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

#[test]
fn worker_boots_and_personalizes_by_mac() -> Result<()> {
    let _serial = serial();
    timed("worker_boots_and_personalizes_by_mac", || {
        let r = reference()?;
        let b = &r.first;
        ensure!(
            regex::Regex::new(MULTI_USER)?.is_match(&b.console),
            "multi-user.target never reached"
        );
        assert_identity(b, "worker1", "MAC address")?;
        assert_personalized(b, WORKER1)?;
        // A worker without a join token on its card cannot join: the Swarm
        // step fails and says why; nothing else fails.
        assert_failed_units(b, &["pibake-swarm.service"])?;
        let swarm = b
            .report
            .step("swarm")
            .ok_or_else(|| anyhow!("no swarm step"))?;
        ensure!(
            swarm.state == "failed" && swarm.why.contains("swarm_worker_token"),
            "swarm step: {swarm:?}"
        );
        Ok(())
    })
}

#[test]
fn clock_gate_passes_with_a_time_server() -> Result<()> {
    let _serial = serial();
    timed("clock_gate_passes_with_a_time_server", || {
        let b = &reference()?.first;
        let clock = b
            .report
            .step("clock")
            .ok_or_else(|| anyhow!("no clock step"))?;
        ensure!(clock.state == "done", "clock gate: {clock:?}");
        ensure!(
            !b.report
                .failed_units()
                .iter()
                .any(|u| u == "pibake-clock.service"),
            "pibake-clock.service failed"
        );
        Ok(())
    })
}

/// Each assertion the boot tests make fails on a doctored copy of worker1's
/// reference boot: the ring cannot pass by asserting nothing.
#[test]
fn boot_assertions_catch_planted_faults() -> Result<()> {
    let _serial = serial();
    let r = reference()?;
    let good = &r.first;
    assert_identity(good, "worker1", "MAC address")?;
    assert_personalized(good, WORKER1)?;
    // worker1 has no join token in the reference boot: its swarm step fails.
    let expected_failed = ["pibake-swarm.service"];
    assert_failed_units(good, &expected_failed)?;
    let keyfile = "/etc/NetworkManager/system-connections/pibake-wired.nmconnection";
    type Plant = fn(&mut Booted);
    let faults: [(&str, Plant); 9] = [
        ("identity chose another node", |b| {
            let status = b.report.sections.get_mut("status").expect("status");
            *status = status.replace("\"worker1\"", "\"worker2\"");
        }),
        ("hostname file", |b| {
            let f = b.state.files.get_mut("/etc/hostname").expect("hostname");
            f.as_mut().expect("present").content = b"worker2\n".to_vec();
        }),
        ("address not on eth0", |b| {
            b.report.sections.insert("addr".into(), String::new());
        }),
        ("keyfile world-readable", |b| {
            let keyfile = "/etc/NetworkManager/system-connections/pibake-wired.nmconnection";
            let f = b.state.files.get_mut(keyfile).expect("keyfile");
            f.as_mut().expect("present").stat.mode = 0o644;
        }),
        ("machine-id not initialized", |b| {
            let f = b
                .state
                .files
                .get_mut("/etc/machine-id")
                .expect("machine-id");
            f.as_mut().expect("present").content = b"uninitialized\n".to_vec();
        }),
        ("an SSH host key missing", |b| {
            b.state.ssh_keys.retain(|k| k != "ssh_host_ed25519_key");
        }),
        ("root not grown", |b| b.state.root_end -= 64 << 20),
        ("a failed unit", |b| {
            b.report.sections.insert(
                "failed".into(),
                "chrony.service loaded failed failed chrony\n\
                 pibake-swarm.service loaded failed failed pibake Swarm\n"
                    .into(),
            );
        }),
        ("identity failed", |b| {
            let status = b.report.sections.get_mut("status").expect("status");
            *status = status.replacen("\"done\"", "\"failed\"", 1);
        }),
    ];
    for (what, plant) in faults {
        let mut bad = good.clone();
        plant(&mut bad);
        let caught = assert_identity(&bad, "worker1", "MAC address").is_err()
            || assert_personalized(&bad, WORKER1).is_err()
            || assert_failed_units(&bad, &expected_failed).is_err();
        ensure!(caught, "planted fault not caught: {what}");
    }
    // What the power-cut tests check, on the reference itself: a card past
    // every step completes like the reference and is what a cut after the
    // last step leaves, not what a cut after an earlier one does.
    assert_completes_like_reference(r, good, "the reference")?;
    assert_cut_after(Step::Swarm, &good.state, &good.state)?;
    for step in [Step::Identity, Step::Clock] {
        ensure!(
            assert_cut_after(step, &good.state, &good.state).is_err(),
            "planted fault not caught: a card past the swarm step taken for a cut after {step}"
        );
    }
    assert_cut_only_after(Step::Swarm, &good.state, &good.state)?;
    // The chained cuts' check that a resumed boot verified the clock again.
    let verdict = journal_record(&good.state, Step::Clock)?
        .ok_or_else(|| anyhow!("the reference has no clock entry"))?;
    assert_clock_verified_again(&good.state, None, "x")?;
    let earlier = Record {
        boot_id: Some("an earlier boot".to_owned()),
        ..verdict.clone()
    };
    assert_clock_verified_again(&good.state, Some(&earlier), "x")?;
    ensure!(
        assert_clock_verified_again(&good.state, Some(&verdict), "x").is_err(),
        "planted fault not caught: the clock verdict of the boot before the cut carried over"
    );
    let mut lost = good.state.clone();
    lost.files
        .insert("/var/lib/pibake/identity.toml".to_owned(), None);
    ensure!(
        assert_cut_after(Step::Swarm, &lost, &good.state).is_err(),
        "planted fault not caught: the identity entry lost at the cut"
    );
    let mut small = good.state.clone();
    small.root_end -= 64 << 20;
    ensure!(
        assert_cut_after(Step::Swarm, &small, &good.state).is_err(),
        "planted fault not caught: root not grown at the cut"
    );
    let mut unverified = good.clone();
    let clock_done = regex::Regex::new(r#"("step": "clock",\s*"state": )"done""#)?;
    let status = unverified
        .report
        .sections
        .get_mut("status")
        .expect("status");
    ensure!(clock_done.is_match(status), "status format: {status}");
    *status = clock_done.replace(status, r#"${1}"failed""#).into_owned();
    ensure!(
        assert_completes_like_reference(r, &unverified, "x").is_err(),
        "planted fault not caught: the clock gate not passed again after a cut"
    );
    // What the power-cut and second-boot tests compare.
    let mut changed = good.state.clone();
    let f = changed.files.get_mut(keyfile).expect("keyfile");
    f.as_mut().expect("present").content.push(b'#');
    ensure!(
        assert_same(
            &comparable(&good.state, false),
            &comparable(&changed, false),
            "x"
        )
        .is_err(),
        "planted fault not caught: a changed agent-owned file"
    );
    Ok(())
}

#[test]
fn second_boot_changes_nothing_the_agent_owns() -> Result<()> {
    let _serial = serial();
    timed("second_boot_changes_nothing_the_agent_owns", || {
        let r = reference()?;
        let lab = Lab::new(&r.dir, true)?;
        let second = boot_once(
            &lab,
            &r.boot,
            &r.overlay,
            WORKER1,
            &r.table,
            "worker1",
            "worker1-second",
            &r.dir,
            &BootOpts::default(),
        )?;
        // The clock verdict is per boot by design (it carries the boot id).
        let strip = |s: &AgentState| {
            let mut c = comparable(s, false);
            c.remove("/var/lib/pibake/clock.toml");
            c
        };
        assert_same(&strip(&r.first.state), &strip(&second.state), "second boot")?;
        ensure!(
            second.state.root_end == r.first.state.root_end,
            "root partition changed"
        );
        Ok(())
    })
}

#[test]
fn boot_partition_file_wins_over_mac_and_ids_are_unique() -> Result<()> {
    let _serial = serial();
    timed(
        "boot_partition_file_wins_over_mac_and_ids_are_unique",
        || {
            let r = reference()?;
            let dir = workdir("bootfile")?;
            let overlay = Overlay::create(&role_image("worker")?, &dir, "worker2", GROW)?;
            let lab = Lab::new(&dir, true)?;
            // worker1's MAC, but the card says worker2.
            let b = boot_once(
                &lab,
                &r.boot,
                &overlay,
                WORKER1,
                &r.table,
                "worker2",
                "worker2-bootfile",
                &dir,
                &BootOpts {
                    boot_files: vec![(
                        "pibake-node.toml".to_owned(),
                        "node = \"worker2\"\n".to_owned(),
                    )],
                    ..BootOpts::default()
                },
            )?;
            assert_identity(&b, "worker2", "boot partition")?;
            assert_personalized(&b, WORKER2)?;
            let first = machine_id(&r.first.state)?;
            let second = machine_id(&b.state)?;
            ensure!(
                first != second,
                "two fresh copies got the same machine-id {first}"
            );
            let key = "/etc/ssh/ssh_host_ed25519_key.pub";
            ensure!(
                r.first.state.text(key) != b.state.text(key),
                "two fresh copies got the same SSH host key"
            );
            Ok(())
        },
    )
}

/// After a power cut anywhere in first boot, the next boot completes it: the
/// card is what worker1's uninterrupted first boot made, except what is
/// random by nature (machine-id, key material) or per boot (the clock
/// verdict, which must be done again).
fn assert_completes_like_reference(r: &Reference, b: &Booted, what: &str) -> Result<()> {
    assert_identity(b, "worker1", "MAC address")?;
    assert_personalized(b, WORKER1)?;
    let strip = |s: &AgentState| {
        let mut c = comparable(s, true);
        c.retain(|p, _| !p.starts_with("/etc/ssh/ssh_host_"));
        c.remove("/etc/machine-id");
        c.remove("/var/lib/pibake/clock.toml");
        c
    };
    assert_same(&strip(&r.first.state), &strip(&b.state), what)?;
    ensure!(
        b.state.ssh_keys == r.first.state.ssh_keys,
        "{what}: SSH host key set differs: {:?} vs {:?}",
        b.state.ssh_keys,
        r.first.state.ssh_keys
    );
    let clock = b
        .report
        .step("clock")
        .ok_or_else(|| anyhow!("{what}: no clock step"))?;
    ensure!(clock.state == "done", "{what}: clock gate: {clock:?}");
    assert_failed_units(b, &["pibake-swarm.service"])?;
    Ok(())
}

/// A journal entry as read from a card.
fn journal_record(state: &AgentState, step: Step) -> Result<Option<Record>> {
    let path = format!("/var/lib/pibake/{step}.toml");
    state
        .text(&path)
        .map(|text| toml::from_str(&text).with_context(|| format!("{path}:\n{text}")))
        .transpose()
}

/// What the card holds at a cut made once the agent had journaled `step`:
/// the entries of `step` and of the steps before it as in the reference
/// boot (the clock's only its outcome: figures and boot id are per boot),
/// none of the steps after it; identity's files as in the reference (bar
/// SSH key material, which ssh-keygen does not sync, so the next boot may
/// have to remake it, and machine-id, which systemd commits later in the
/// boot); and the root grown.
fn assert_cut_after(step: Step, cut: &AgentState, reference: &AgentState) -> Result<()> {
    let at = Step::ALL.iter().position(|s| *s == step).unwrap_or(0);
    for (i, s) in Step::ALL.into_iter().enumerate() {
        let got = journal_record(cut, s)?;
        if i > at {
            ensure!(
                got.is_none(),
                "cut after {step}: {s} is journaled already, the agent did not hold after {step}: {got:?}"
            );
            continue;
        }
        let got = got.ok_or_else(|| {
            anyhow!("cut after {step}: {s} was journaled before the hold, but its entry is not on the card")
        })?;
        let want = journal_record(reference, s)?
            .ok_or_else(|| anyhow!("the reference boot has no {s} entry"))?;
        let same = match s {
            Step::Clock => got.outcome == Outcome::Done && want.outcome == Outcome::Done,
            _ => {
                Record {
                    at: 0,
                    ..got.clone()
                } == Record {
                    at: 0,
                    ..want.clone()
                }
            }
        };
        ensure!(
            same,
            "cut after {step}: the {s} entry is {got:?}, the uninterrupted boot's {want:?}"
        );
    }
    let strip = |s: &AgentState| {
        let mut c = comparable(s, true);
        c.retain(|p, _| !p.starts_with("/etc/ssh/ssh_host_") && !p.starts_with("/var/lib/pibake/"));
        c.remove("/etc/machine-id");
        c
    };
    assert_same(
        &strip(reference),
        &strip(cut),
        &format!("at the cut after {step}"),
    )?;
    ensure!(
        cut.disk_len - cut.root_end < (1 << 20),
        "cut after {step}: the root partition ends at {} of {} bytes: identity was journaled, the root not grown",
        cut.root_end,
        cut.disk_len
    );
    Ok(())
}

/// Boots worker1's card (`overlay`) with the agent told to hold once it has
/// journaled `step`, pulls the plug at its marker, and returns the card as
/// the cut left it.
fn boot_held_and_cut(
    r: &Reference,
    lab: &Lab,
    overlay: &Overlay,
    step: Step,
) -> Result<AgentState> {
    let label = format!("worker1-cut-after-{step}");
    let marker = hold_marker(step);
    let start = Instant::now();
    {
        let mut vm = lab.start_vm_args(
            &label,
            &r.boot,
            overlay,
            WORKER1,
            None,
            vec![format!("{HOLD_KEY}{step}")],
        )?;
        let seen = vm.wait_for(
            &format!("{}|{MULTI_USER}", regex::escape(&marker)),
            BOOT_TIMEOUT,
        )?;
        ensure!(
            seen.contains(&marker),
            "{label}: the system came up and the agent never held after {step} (an image without the hold switch? `cargo xtask lab` rebuilds it)"
        );
        vm.kill();
    }
    eprintln!(
        "{label}: held after {step}, power cut {:.0} s into the boot",
        start.elapsed().as_secs_f64()
    );
    read_state(overlay, &label, &r.table, "worker1")
}

/// The card cut after `step` is what such a cut leaves
/// ([`assert_cut_after`]) and not what a cut after any other step leaves:
/// the check tells the cut points apart.
fn assert_cut_only_after(step: Step, cut: &AgentState, reference: &AgentState) -> Result<()> {
    assert_cut_after(step, cut, reference)?;
    for other in Step::ALL.into_iter().filter(|s| *s != step) {
        match assert_cut_after(other, cut, reference) {
            Ok(()) => anyhow::bail!("the card cut after {step} passes as one cut after {other}"),
            Err(e) => eprintln!("cut after {step}: taken for a cut after {other}, it fails: {e:#}"),
        }
    }
    Ok(())
}

/// The clock verdict on a card cut in a boot that resumed from an earlier
/// cut was made in that boot, not carried over: its boot id is not the one
/// of the verdict the earlier cut left (`before`, if any).
fn assert_clock_verified_again(
    cut: &AgentState,
    before: Option<&Record>,
    what: &str,
) -> Result<()> {
    let Some(clock) = journal_record(cut, Step::Clock)? else {
        return Ok(());
    };
    ensure!(
        clock.boot_id.is_some(),
        "{what}: the clock verdict carries no boot id: {clock:?}"
    );
    if let Some(before) = before {
        ensure!(
            clock.boot_id != before.boot_id,
            "{what}: the clock verdict is the one of the boot before ({:?}): the boot resumed from the cut did not verify the clock again",
            clock.boot_id
        );
    }
    Ok(())
}

/// One power cut after each journaled step, chained on one fresh worker1
/// card: held after identity, cut, checked; booted again held after clock
/// (resuming from the identity cut), cut, checked; again held after swarm
/// (resuming from the clock cut), cut, checked; then booted normally, which
/// must complete first boot as if never cut. Each boot after the first
/// resumes from the cut before it: the next cut's check shows it finished
/// the earlier steps as the uninterrupted boot did and ran the next one
/// (the clock verified again in that boot); the last boot shows the whole
/// resumed first boot, its running system included.
#[test]
fn power_cuts_after_each_journaled_step_are_completed_by_the_next_boots() -> Result<()> {
    let _serial = serial();
    timed(
        "power_cuts_after_each_journaled_step_are_completed_by_the_next_boots",
        || {
            let r = reference()?;
            let dir = workdir("cuts-after-steps")?;
            let overlay = Overlay::create(&role_image("worker")?, &dir, "worker1", GROW)?;
            let lab = Lab::new(&dir, true)?;
            let mut clock_before: Option<Record> = None;
            for step in Step::ALL {
                let cut = boot_held_and_cut(r, &lab, &overlay, step)?;
                let what = format!("the cut after {step}");
                assert_cut_only_after(step, &cut, &r.first.state).context(what.clone())?;
                assert_clock_verified_again(&cut, clock_before.as_ref(), &what)?;
                clock_before = journal_record(&cut, Step::Clock)?;
            }
            let b = boot_once(
                &lab,
                &r.boot,
                &overlay,
                WORKER1,
                &r.table,
                "worker1",
                "worker1-after-the-cuts",
                &dir,
                &BootOpts::default(),
            )?;
            assert_completes_like_reference(r, &b, "after the cuts after identity, clock and swarm")
        },
    )
}

/// The extra, random-time cut: while identity writes (after it chose the
/// node, before it journaled), wherever the boot happens to be.
#[test]
fn power_cut_in_first_boot_is_completed_by_the_next_boot() -> Result<()> {
    let _serial = serial();
    timed(
        "power_cut_in_first_boot_is_completed_by_the_next_boot",
        || {
            let r = reference()?;
            let dir = workdir("powercut")?;
            let overlay = Overlay::create(&role_image("worker")?, &dir, "worker1", GROW)?;
            let lab = Lab::new(&dir, true)?;
            {
                let mut vm = lab.start_vm("worker1-cut", &r.boot, &overlay, WORKER1, None)?;
                // The agent has chosen the node and starts writing.
                vm.wait_for(r"this board is node worker1", BOOT_TIMEOUT)?;
                vm.kill();
            }
            let cut = read_state(&overlay, "worker1-cut", &r.table, "worker1")?;
            ensure!(
                cut.files.get("/var/lib/pibake/identity.toml") == Some(&None),
                "the cut came too late: identity had already finished"
            );
            let b = boot_once(
                &lab,
                &r.boot,
                &overlay,
                WORKER1,
                &r.table,
                "worker1",
                "worker1-after-cut",
                &dir,
                &BootOpts::default(),
            )?;
            assert_completes_like_reference(r, &b, "after a power cut")
        },
    )
}

#[test]
fn aux_boots_with_its_gps_pieces() -> Result<()> {
    let _serial = serial();
    timed("aux_boots_with_its_gps_pieces", || {
        let dir = workdir("aux")?;
        let boot = boot_files("aux", &dir)?;
        let table = node_table("aux")?;
        let overlay = Overlay::create(&role_image("aux")?, &dir, "aux1", GROW)?;
        // aux1 is the time server itself: no other one on its segment.
        let lab = Lab::new(&dir, false)?;
        let b = boot_once(
            &lab,
            &boot,
            &overlay,
            AUX1,
            &table,
            "aux1",
            "aux1",
            &dir,
            &BootOpts::default(),
        )?;
        assert_identity(&b, "aux1", "MAC address")?;
        assert_personalized(&b, AUX1)?;
        let chrony = b
            .state
            .text("/etc/chrony/chrony.conf")
            .ok_or_else(|| anyhow!("no chrony.conf"))?;
        for line in ["confdir /run/pibake/chrony", "allow 192.168.188.0/24"] {
            ensure!(
                chrony.contains(line),
                "aux1 chrony.conf lacks {line:?}:\n{chrony}"
            );
        }
        let nmea = b
            .state
            .text("/etc/pibake/chrony/nmea-only.conf")
            .ok_or_else(|| anyhow!("no /etc/pibake/chrony/nmea-only.conf on aux1"))?;
        ensure!(
            nmea.contains("refclock SOCK") && !nmea.contains("noselect"),
            "aux1's NMEA-only refclock:\n{nmea}"
        );
        // QEMU's virt board has no /dev/pps0 (no pps-gpio, no GPS): chrony
        // must run without the PPS refclock instead of failing, and with no
        // reference reachable the gate must refuse and the Swarm step wait.
        ensure!(
            b.console
                .contains("no /dev/pps0, chrony runs without the PPS refclock: NMEA time alone"),
            "chrony's PPS helper did not choose NMEA alone"
        );
        ensure!(
            !b.console.contains("Could not open /dev/pps0"),
            "chronyd still tried /dev/pps0"
        );
        assert_failed_units(&b, &["pibake-clock.service"])?;
        let swarm = b
            .report
            .step("swarm")
            .ok_or_else(|| anyhow!("no swarm step"))?;
        ensure!(
            swarm.state == "pending",
            "swarm step ran without a verified clock: {swarm:?}"
        );
        ensure!(
            b.state.files.get("/var/lib/pibake/swarm.toml") == Some(&None),
            "swarm journal entry exists without a verified clock"
        );
        Ok(())
    })
}

/// config.txt of `role` carries the button line on GPIO3, the GPS lines only
/// on the aux, and every `dtoverlay=` has its `overlays/<name>.dtbo`.
fn check_config(role: &str, fat: &Fat) -> Result<()> {
    let config = fat.read_string("config.txt")?;
    let lines: Vec<&str> = config.lines().map(str::trim).collect();
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("dtoverlay=gpio-shutdown") && l.contains("gpio_pin=3")),
        "lab-{role}: no gpio-shutdown on GPIO3 in config.txt:\n{config}"
    );
    let gps = [
        "enable_uart=1",
        "dtoverlay=disable-bt",
        "dtoverlay=pps-gpio,gpiopin=18",
    ];
    for want in gps {
        let has = lines.contains(&want);
        ensure!(
            has == (role == "aux"),
            "lab-{role}: {want:?} {} in config.txt",
            if has { "present" } else { "missing" }
        );
    }
    let dtbos = fat.list("/overlays")?;
    for l in &lines {
        if let Some(rest) = l.strip_prefix("dtoverlay=") {
            let name = rest.split(',').next().unwrap_or_default();
            ensure!(
                dtbos
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&format!("{name}.dtbo"))),
                "lab-{role}: config.txt uses {name} but overlays/{name}.dtbo is missing (have {dtbos:?})"
            );
        }
    }
    Ok(())
}

#[test]
fn config_txt_has_the_button_and_gps_lines_and_their_overlays() -> Result<()> {
    // The Pi roles; the master is a pc-efi Mac Mini, with an ESP and no
    // config.txt (its boot is tested by booting it under OVMF below).
    for role in ["worker", "aux"] {
        let disk = RawDisk::open(&role_image(role)?)?;
        check_config(role, &disk.boot()?)?;
    }
    let master = RawDisk::open(&role_image("master")?)?;
    let esp = master.boot()?;
    let loader = esp.list("/EFI/BOOT")?;
    ensure!(
        esp.read_string("config.txt").is_err()
            && loader.iter().any(|n| n.eq_ignore_ascii_case("BOOTX64.EFI")),
        "lab-master's boot partition is not an ESP with EFI/BOOT/BOOTX64.EFI (has {loader:?})"
    );
    Ok(())
}

/// The check above on planted faults (a copy of the aux boot partition):
/// each fault must be caught.
#[test]
fn config_check_catches_planted_faults() -> Result<()> {
    let dir = workdir("config-faults")?;
    let disk = RawDisk::open(&role_image("aux")?)?;
    let p1 = disk.partition(1)?;
    let fresh = |name: &str| -> Result<Fat> {
        use std::io::{Read, Seek, SeekFrom};
        let path = dir.join(name);
        let mut src = std::fs::File::open(disk.path())?;
        src.seek(SeekFrom::Start(p1.start))?;
        let mut out = std::fs::File::create(&path)?;
        std::io::copy(&mut src.take(p1.size), &mut out)?;
        Ok(Fat::whole(&path))
    };
    let fat = fresh("intact.fat")?;
    check_config("aux", &fat).context("intact copy")?;
    let config = fat.read_string("config.txt")?;
    let faults: [(&str, String); 3] = [
        (
            "button line removed",
            config
                .lines()
                .filter(|l| !l.starts_with("dtoverlay=gpio-shutdown"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "button on GPIO17",
            config.replace("gpio_pin=3", "gpio_pin=17"),
        ),
        (
            "PPS line removed",
            config.replace("dtoverlay=pps-gpio,gpiopin=18", ""),
        ),
    ];
    for (what, text) in faults {
        let fat = fresh("fault.fat")?;
        fat.write("config.txt", text.as_bytes())?;
        ensure!(
            check_config("aux", &fat).is_err(),
            "fault not caught: {what}"
        );
    }
    // A referenced overlay missing from overlays/.
    let fat = fresh("fault.fat")?;
    let path = dir.join("fault.fat");
    pibake_qemu::tool::run(
        std::process::Command::new("mdel")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&path)
            .arg("::overlays/pps-gpio.dtbo"),
    )?;
    ensure!(
        check_config("aux", &fat).is_err(),
        "fault not caught: pps-gpio.dtbo missing"
    );
    // The worker must not carry the GPS lines.
    ensure!(
        check_config("worker", &fresh("intact.fat")?).is_err(),
        "GPS lines accepted on a worker"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Puts a Swarm join token on a board's boot partition, as a user would.
fn give_token(overlay: &Overlay, key: &str, token: &str) -> Result<()> {
    overlay.write_boot_files(&[(
        "pibake-secrets.toml",
        format!("{key} = \"{token}\"\n").as_bytes(),
    )])?;
    Ok(())
}

/// A [`Probe::Member`]'s `joined` section: its local Swarm node state.
fn check_joined(state: &str, host: &str) -> Result<()> {
    ensure!(
        state.trim() == "active",
        "{host} did not join the swarm: its local node state is {:?}",
        state.trim()
    );
    Ok(())
}

/// Waits for a [`Probe::Member`] to have joined (or given up), and fails at
/// once unless it is in the swarm (rather than in a manager's long wait).
fn wait_joined(vm: &mut Vm, host: &str) -> Result<()> {
    let state = vm.wait_probe_section("joined", BOOT_TIMEOUT)?;
    check_joined(&state, host).with_context(|| format!("console: {}", vm.console_path().display()))
}

/// The agent's Swarm step on `host` is done.
fn ensure_swarm_done(report: &pibake_qemu::probe::Report, host: &str) -> Result<()> {
    let swarm = report
        .step("swarm")
        .ok_or_else(|| anyhow!("no swarm step on {host}"))?;
    ensure!(swarm.state == "done", "{host} swarm step: {swarm:?}");
    Ok(())
}

/// Every host is listed Ready in `docker node ls` output.
fn ensure_ready(nodes: &str, hosts: &[&str]) -> Result<()> {
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
fn wait_for_vip(lab: &Lab) -> Result<()> {
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
fn neighbour_mac(lab: &Lab, addr: std::net::Ipv4Addr) -> Result<Option<String>> {
    let out = lab.ns.ip(&["neigh", "show", &addr.to_string()])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_owned))
}

/// The Swarm tests' checks on planted listings: a node Down (what a VM that
/// powered off too early leaves), a node missing, a member that did not join.
#[test]
fn swarm_checks_catch_planted_faults() -> Result<()> {
    let good = "master1 Ready Leader\nmaster2 Ready Reachable\nworker1 Ready \n";
    let hosts = ["master1", "master2", "worker1"];
    ensure_ready(good, &hosts)?;
    for (what, listing) in [
        (
            "worker1 Down",
            "master1 Ready Leader\nmaster2 Ready Reachable\nworker1 Down \n",
        ),
        ("master2 missing", "master1 Ready Leader\nworker1 Ready \n"),
    ] {
        ensure!(
            ensure_ready(listing, &hosts).is_err(),
            "planted fault not caught: {what}"
        );
    }
    check_joined("active\n", "worker1")?;
    for state in ["inactive\n", "pending\n", "error\n", ""] {
        ensure!(
            check_joined(state, "worker1").is_err(),
            "planted fault not caught: joined state {state:?}"
        );
    }
    Ok(())
}

/// The three-VM lab: master1 initializes the Swarm and takes the VIP,
/// master2 (a manager, the VIP's standby) and worker1 join through it, then
/// master1's plug is pulled and the VIP must answer from master2. master1's
/// own boot is checked here as a one-VM test would (identity, VIP, Swarm,
/// keepalived, no failed unit), and worker1's secrets as a member's.
#[test]
fn vip_moves_to_master2_when_master1_dies() -> Result<()> {
    let _serial = serial();
    timed("vip_moves_to_master2_when_master1_dies", || {
        let dir = workdir("failover")?;
        // The masters are pc-efi (x86-64) machines booted through OVMF and
        // their own systemd-boot; the worker an arm64 Pi 5.
        let mboot = pc_efi_boot("master")?;
        let wboot = boot_files("worker", &dir)?;
        let mtable = node_table("master")?;
        let wtable = node_table("worker")?;
        let image = role_image("master")?;
        let m1overlay = Overlay::create(&image, &dir, "master1", GROW)?;
        let m2overlay = Overlay::create(&image, &dir, "master2", GROW)?;
        let woverlay = Overlay::create(&role_image("worker")?, &dir, "worker1", GROW)?;
        let lab = Lab::new(&dir, true)?;
        let wait = Duration::from_secs(15 * 60);
        let mut master1 = lab.start_vm(
            "failover-master1",
            &mboot,
            &m1overlay,
            MASTER1,
            Some(Probe::SwarmManager {
                nodes: 3,
                wait,
                hold: true,
            }),
        )?;
        eprintln!(
            "master1: qemu-system-x86_64 under {} ({})",
            master1.accel().name(),
            pibake_qemu::pc::x86_accel().why
        );
        // The operator reads the join tokens from master1 ...
        let token = master1.wait_probe_section("token", BOOT_TIMEOUT)?;
        let mtoken = master1.wait_probe_section("mtoken", BOOT_TIMEOUT)?;
        let (token, mtoken) = (token.trim(), mtoken.trim());
        ensure!(
            token.starts_with("SWMTKN-") && mtoken.starts_with("SWMTKN-") && token != mtoken,
            "no join tokens from master1: {token:?} {mtoken:?}"
        );
        wait_for_vip(&lab)?;
        // ... and puts them on the boards' boot partitions. Managers join
        // through the VIP too (cluster.toml: join = "vip").
        give_token(&m2overlay, "swarm_manager_token", mtoken)?;
        give_token(&woverlay, "swarm_worker_token", token)?;
        // Joins in order, each awaited on what master1 lists: master2, then
        // worker1. Nobody powers off before master1 has listed all three
        // Ready.
        let mut master2 = lab.start_vm(
            "failover-master2",
            &mboot,
            &m2overlay,
            MASTER2,
            Some(Probe::Standby { vip: VIP, wait }),
        )?;
        master2.wait_probe_section("standby", BOOT_TIMEOUT)?;
        let ready = master1.wait_probe_section("ready2", wait)?;
        ensure_ready(&ready, &["master1", "master2"])?;
        let mut worker = lab.start_vm(
            "failover-worker1",
            &wboot,
            &woverlay,
            WORKER1,
            Some(Probe::Member),
        )?;
        wait_joined(&mut worker, "worker1")?;
        // All three Ready in one listing (the one that ended master1's
        // wait). A later listing may show a node Down for a heartbeat or two
        // while three emulated VMs share two cores.
        let ready = master1.wait_probe_section("ready3", wait)?;
        ensure_ready(&ready, &["master1", "master2", "worker1"])?;
        let nodes = master1.wait_probe_section("nodes", wait)?;
        eprintln!("docker node ls on master1 (all Ready):\n{ready}\nthen:\n{nodes}");
        worker.go()?;
        let wreport = worker.wait_report(BOOT_TIMEOUT)?;
        ensure_swarm_done(&wreport, "worker1")?;
        ensure!(
            !worker.console().contains(token),
            "the join token appears on worker1's console"
        );
        ensure!(
            wreport.failed_units().is_empty(),
            "worker1 failed units: {:?}",
            wreport.failed_units()
        );
        worker.wait_exit(POWEROFF_TIMEOUT)?;
        drop(worker);
        let m1report = master1.wait_report(BOOT_TIMEOUT)?;
        ensure!(
            lab.ns.ping(VIP, Duration::from_secs(2))?
                && neighbour_mac(&lab, VIP)?.as_deref() == Some(MASTER1.mac),
            "the VIP is not on master1 before the failure: {:?}",
            neighbour_mac(&lab, VIP)?
        );

        // Pull master1's plug; the VIP must answer from master2 within 10 s.
        master1.kill();
        let killed = Instant::now();
        master2.go()?;
        let mut answered = None;
        while killed.elapsed() < Duration::from_secs(60) {
            if lab.ns.ping(VIP, Duration::from_secs(1))?
                && neighbour_mac(&lab, VIP)?.as_deref() == Some(MASTER2.mac)
            {
                answered = Some(killed.elapsed());
                break;
            }
        }
        let answered = answered.ok_or_else(|| anyhow!("no VIP answer from master2 within 60 s"))?;
        eprintln!("FAILOVER VIP answered from master2 {answered:.1?} after master1 died");
        ensure!(
            answered <= Duration::from_secs(10),
            "the VIP answered from master2 only after {answered:.1?} (goal: 10 s)"
        );
        let vip = master2.wait_probe_section("vip", BOOT_TIMEOUT)?;
        ensure!(
            vip.contains("Entering MASTER STATE"),
            "master2's keepalived did not enter MASTER:\n{vip}"
        );
        let m2report = master2.wait_report(BOOT_TIMEOUT)?;
        master2.wait_exit(POWEROFF_TIMEOUT)?;
        ensure!(
            m2report.addresses("eth0").contains(&VIP.to_string()),
            "VIP not on master2's eth0: {:?}",
            m2report.addresses("eth0")
        );
        ensure_swarm_done(&m2report, "master2")?;
        // One Swarm of two architectures: the Mac Mini masters and the Pi.
        let arches = [&m1report, &m2report, &wreport].map(|r| r.arch().unwrap_or_default());
        eprintln!(
            "architectures: master1 {}, master2 {}, worker1 {}",
            arches[0], arches[1], arches[2]
        );
        ensure!(
            arches == ["x86_64", "x86_64", "aarch64"],
            "master1, master2, worker1 run {arches:?}, not x86_64, x86_64, aarch64"
        );
        let m1console = master1.console();
        drop((master1, master2));
        let m1 = Booted {
            report: m1report,
            console: m1console,
            state: read_state(&m1overlay, "failover-master1", &mtable, "master1")?,
        };
        assert_master1(&m1)?;
        // The secret moved off the FAT into a root-only file.
        let wstate = read_state(&woverlay, "failover-worker1", &wtable, "worker1")?;
        ensure!(
            !wstate
                .boot_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case("pibake-secrets.toml")),
            "pibake-secrets.toml is still on worker1's boot partition"
        );
        let secrets = wstate
            .stat("/etc/pibake/secrets")
            .ok_or_else(|| anyhow!("no /etc/pibake/secrets on worker1"))?;
        ensure!(
            secrets.mode == 0o600 && secrets.uid == 0,
            "worker1's secrets mode {:o}",
            secrets.mode
        );
        Ok(())
    })
    .context("three-VM failover")
}

/// master1, the first manager and the VIP's first holder, as its report
/// (taken before its plug was pulled) and its disk show it.
fn assert_master1(b: &Booted) -> Result<()> {
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

#[test]
fn missing_images_fail_naming_the_build_command() {
    let err = pibake_qemu::images::role_image("no-such-role").map(|_| ());
    let msg = match err {
        Ok(()) => panic!("a missing image was found"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("cargo xtask lab"), "{msg}");
}

#[test]
fn namespaces_left_by_a_killed_run_are_reaped() -> Result<()> {
    // No process can have this pid (above the kernel's pid_max limit).
    let stale = "pibake-qemu-999999999-0";
    let ip = |args: &[&str]| -> Result<std::process::Output> {
        Ok(std::process::Command::new("ip").args(args).output()?)
    };
    ip(&["netns", "del", stale])?;
    ensure!(ip(&["netns", "add", stale])?.status.success(), "netns add");
    let mut inside = std::process::Command::new("ip")
        .args(["netns", "exec", stale, "sleep", "600"])
        .spawn()?;
    // Give `ip netns exec` time to enter the namespace and exec sleep.
    let start = Instant::now();
    while ip(&["netns", "pids", stale])?.stdout.is_empty() && start.elapsed().as_secs() < 10 {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(pibake_qemu::net::NetNs::create(&[])?);
    let list = String::from_utf8_lossy(&ip(&["netns", "list"])?.stdout).into_owned();
    let status = inside.wait()?;
    ensure!(!list.contains(stale), "{stale} is still there:\n{list}");
    ensure!(
        !status.success(),
        "the process inside was not killed: {status}"
    );
    Ok(())
}
