//! The lab's role images booted in QEMU: each role personalizes itself, the
//! clock gate, power cuts in first boot (one at a random point of
//! identity, then after each journaled step, held there by the agent's
//! test-only `pibake.test.hold_after=`), a second boot. Personalization by
//! the boot-partition file is seed.rs's worker2. The whole lab (five VMs: the
//! GPS node and its time, the Swarm, the VIP's failover under HTTP load,
//! the button) is tests/seed.rs.
//!
//! Needs the images (`cargo xtask lab`), root (network namespaces, taps),
//! qemu-system-arm, qemu-utils, mtools, e2fsprogs, iproute2, chrony.
//! VMs run one at a time; the worker1 first boot is shared by the tests
//! that compare against it.

mod common;

use anyhow::{anyhow, ensure, Context, Result};
use common::checks::*;
use common::swarm::*;
use common::*;
use pibake_firstboot::journal::{hold_marker, Outcome, Record, Step, HOLD_KEY};
use pibake_firstboot::table::NodeTable;
use pibake_qemu::disk::{Fat, RawDisk};
use pibake_qemu::images::role_image;
use pibake_qemu::overlay::Overlay;
use pibake_qemu::vm::{BootFiles, MULTI_USER};
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

/// A power cut while identity writes (after it chose the node, before it
/// journaled), wherever the boot happens to be; then one power cut after
/// each journaled step, chained on the same fresh worker1 card: held after
/// identity (resuming from the random cut), cut, checked; booted again held
/// after clock (resuming from the identity cut), cut, checked; again held
/// after swarm (resuming from the clock cut), cut, checked; then booted
/// normally, which must complete first boot as if never cut. Each boot
/// after the first resumes from the cut before it: the next cut's check
/// shows it finished the earlier steps as the uninterrupted boot did and ran
/// the next one (the clock verified again in that boot); the last boot
/// shows the whole resumed first boot, its running system included. One
/// chain rather than two cards: each card's completing boot costs the ring
/// a whole first boot, and every check still names the cut it is about.
#[test]
fn power_cuts_in_first_boot_are_completed_by_the_next_boots() -> Result<()> {
    let _serial = serial();
    timed(
        "power_cuts_in_first_boot_are_completed_by_the_next_boots",
        || {
            let r = reference()?;
            let dir = workdir("power-cuts")?;
            let overlay = Overlay::create(&role_image("worker")?, &dir, "worker1", GROW)?;
            let lab = Lab::new(&dir, true)?;
            cut_while_identity_writes(r, &lab, &overlay)?;
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
            assert_completes_like_reference(
                r,
                &b,
                "after cuts in identity and after identity, clock and swarm",
            )
        },
    )
}

/// Boots worker1's fresh card and pulls the plug once the agent has chosen
/// the node and starts writing; the cut must come before identity's entry.
fn cut_while_identity_writes(r: &Reference, lab: &Lab, overlay: &Overlay) -> Result<()> {
    {
        let mut vm = lab.start_vm("worker1-cut", &r.boot, overlay, WORKER1, None)?;
        vm.wait_for(r"this board is node worker1", BOOT_TIMEOUT)?;
        vm.kill();
    }
    let cut = read_state(overlay, "worker1-cut", &r.table, "worker1")?;
    ensure!(
        cut.files.get("/var/lib/pibake/identity.toml") == Some(&None),
        "the cut came too late: identity had already finished"
    );
    Ok(())
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
