//! The seed's lab end to end, as its user sees it, in one scenario of five
//! VMs (booted once, then again), because every part needs the ones before:
//!
//! 1. **An isolated lab timed by GPS.** No time server and no route out of
//!    the test network: aux1's UART is fed by an emulated receiver
//!    ([`pibake_qemu::gps`]) for a time days away from the host's clock;
//!    aux1's own gpsd and chrony take it, and the masters and workers pass
//!    their clock gate from aux1 alone (their clocks end at the GPS time).
//! 2. **The Swarm through the VIP**: master1 (x86-64, pc-efi) initializes
//!    it and takes the VIP; master2 (its standby) and worker1, worker2
//!    (arm64 Pi 5) join through the VIP.
//! 3. **The web stack through the VIP while a master dies**: GETs on
//!    http://192.168.188.2/ are answered by both workers; master1's plug is
//!    pulled while the GETs go on, the VIP moves to master2 and the page
//!    still comes from the workers (the routing mesh serves without a
//!    Swarm leader).
//! 4. **The button**: QEMU's power button on every running VM at once; each
//!    powers off cleanly (root file system clean, no journal to replay).
//! 5. **Power on again**: all five at once (aux1 now with its join token,
//!    as its user would add it): the cluster comes back by itself (clock
//!    gate from aux1, five nodes Ready, the page on the VIP) and no
//!    first-boot step that was done runs again.
//!
//! Needs what tests/lab.rs needs, and curl.

mod common;

use anyhow::{anyhow, ensure, Context, Result};
use common::swarm::*;
use common::*;
use pibake_firstboot::bootfiles::NODE_FILE;
use pibake_firstboot::table::NodeTable;
use pibake_qemu::disk::RawDisk;
use pibake_qemu::gps::{host_now, Feed, GpsClock};
use pibake_qemu::http::{self, Poller, Summary};
use pibake_qemu::images::role_image;
use pibake_qemu::overlay::Overlay;
use pibake_qemu::probe::{Probe, Report, StepStatus};
use pibake_qemu::vm::{Boot, Vm};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// GPS time minus host time: 3 days, 4 h, 5 min, 6 s. A node whose clock
/// came from anywhere but the GPS chain is days off.
const GPS_AHEAD: i64 = 3 * 86_400 + 4 * 3_600 + 5 * 60 + 6;
/// When the emulated receiver sends second S (see [`pibake_qemu::gps`]).
const NMEA_LAG: Duration = Duration::from_millis(500);
/// The seed's web service, through the VIP.
const WEB: &str = "http://192.168.188.2/";
/// How long a node may take from the button to QEMU's exit (TCG, five VMs
/// on two cores; a board takes seconds).
const BUTTON_BOUND: Duration = Duration::from_secs(240);
/// The longest the web page may be away while the VIP moves.
const GAP_GOAL: Duration = Duration::from_secs(20);
/// worker2's board has worker3's MAC, and its card names worker2
/// (`pibake-node.toml`): the boot-partition file must win over the MAC.
const WORKER2_BY_CARD: Node = Node {
    mac: "2c:cf:67:00:00:23",
    ..WORKER2
};

/// One VM of the scenario: its node, disk and boot.
struct Member<'a> {
    node: Node,
    overlay: &'a Overlay,
    boot: Boot<'a>,
    table: &'a NodeTable,
}

/// A running VM and the host time it started at.
struct Running {
    node: Node,
    vm: Vm,
    started_at: f64,
}

fn start(
    lab: &Lab,
    m: &Member<'_>,
    round: u32,
    probe: Probe,
    gps: Option<&Feed>,
) -> Result<Running> {
    let name = format!("seed{round}-{}", m.node.name);
    let started_at = host_now();
    let vm = match (gps, m.boot) {
        (Some(feed), Boot::ArmVirt(boot)) => {
            lab.start_gps_vm(&name, boot, m.overlay, m.node, probe, feed.base())?
        }
        (Some(_), Boot::PcEfi(_)) => return Err(anyhow!("{name}: GPS on a pc-efi VM")),
        (None, boot) => lab.start_vm(&name, boot, m.overlay, m.node, Some(probe))?,
    };
    Ok(Running {
        node: m.node,
        vm,
        started_at,
    })
}

#[test]
fn the_isolated_lab_end_to_end() -> Result<()> {
    let _serial = serial();
    timed("the_isolated_lab_end_to_end", || {
        let dir = workdir("seed")?;
        let mboot = pc_efi_boot("master")?;
        let wboot = boot_files("worker", &dir)?;
        let aboot = boot_files("aux", &dir)?;
        let (mtable, wtable, atable) = (node_table("master")?, node_table("worker")?, node_table("aux")?);
        let disk = |role: &str, node: Node| Overlay::create(&role_image(role)?, &dir, node.name, GROW);
        let disks = [
            disk("aux", AUX1)?,
            disk("master", MASTER1)?,
            disk("master", MASTER2)?,
            disk("worker", WORKER1)?,
            disk("worker", WORKER2)?,
        ];
        let [aux1, master1, master2, worker1, worker2] = [
            Member { node: AUX1, overlay: &disks[0], boot: (&aboot).into(), table: &atable },
            Member { node: MASTER1, overlay: &disks[1], boot: (&mboot).into(), table: &mtable },
            Member { node: MASTER2, overlay: &disks[2], boot: (&mboot).into(), table: &mtable },
            Member { node: WORKER1, overlay: &disks[3], boot: (&wboot).into(), table: &wtable },
            Member { node: WORKER2_BY_CARD, overlay: &disks[4], boot: (&wboot).into(), table: &wtable },
        ];
        worker2.overlay.write_boot_files(&[(NODE_FILE, b"node = \"worker2\"\n")])?;
        let lab = Lab::new(&dir, false)?;
        ensure_isolated(&lab)?;
        let gps_dir = tempfile::Builder::new().prefix("pibake-gps-").tempdir()?;
        let clock = GpsClock { offset_secs: GPS_AHEAD };
        let feed = Feed::start(&gps_dir.path().join("gps"), clock, NMEA_LAG)?;
        eprintln!(
            "GPS TIME chosen: host + {GPS_AHEAD} s (3 d 4 h 5 min 6 s), sentences {NMEA_LAG:?} after each second"
        );

        let first = first_power_on(&lab, &feed, [&aux1, &master1, &master2, &worker1, &worker2])?;
        let FirstBoot { mut running, worker_token, reports } = first;
        check_time_chain(&lab, clock, &reports, &running)?;
        check_first_boot(&reports)?;
        let m2report = web_through_a_failover(&lab, &mut running)?;
        check_time_chain(&lab, clock, &BTreeMap::from([(MASTER2.name, m2report)]), &running)?;
        let offs = press_the_button(&mut running, "first")?;
        eprintln!("POWER-OFF after the button (first round): {offs}");
        let aux_console = running[AUX1.name].vm.console();
        drop(running);
        // master1 lost power (its plug was pulled): its disk is read as its
        // next boot sees it; the others must be clean.
        let mut journals = BTreeMap::new();
        for m in [&aux1, &master1, &master2, &worker1, &worker2] {
            let label = format!("seed1-{}", m.node.name);
            let state = if m.node.name == MASTER1.name {
                let state = read_state(m.overlay, &label, m.table, m.node.name)?;
                assert_master1(&Booted {
                    report: reports[MASTER1.name].clone(),
                    console: String::new(),
                    state: state.clone(),
                })?;
                state
            } else {
                read_clean_state(m, &label).context("after the button")?
            };
            journals.insert(m.node.name, state);
        }
        assert_secrets_moved(&journals[WORKER1.name], WORKER1.name)?;
        ensure_fresh_ids(&journals[WORKER1.name], &journals[WORKER2.name])?;
        assert_gps_pieces(&journals[AUX1.name], &aux_console)?;
        eprintln!("root file systems clean after the button: aux1, master2, worker1, worker2 (e2fsck -fn, no journal recovery)");

        // aux1's user puts its join token on its card, as for the others.
        give_token(aux1.overlay, "swarm_worker_token", &worker_token)?;
        let second = second_power_on(&lab, &feed, [&aux1, &master1, &master2, &worker1, &worker2], &reports)?;
        let mut running = second;
        let offs = press_the_button(&mut running, "second")?;
        eprintln!("POWER-OFF after the button (second round): {offs}");
        drop(running);
        for m in [&aux1, &master1, &master2, &worker1, &worker2] {
            let state = read_clean_state(m, &format!("seed2-{}", m.node.name))
                .context("after the second button press")?;
            ensure_no_step_rerun(&journals[m.node.name], &state, m.node.name)?;
        }
        drop(feed);
        Ok(())
    })
    .context("the isolated lab end to end")
}

/// The test network is the whole world: no default route out of it (the
/// nodes' gateway, 192.168.188.1, is the test's own address and forwards
/// nothing), and no time server on it but what aux1 serves.
fn ensure_isolated(lab: &Lab) -> Result<()> {
    let routes = lab.ns.ip(&["route", "show", "default"])?;
    ensure!(
        routes.trim().is_empty(),
        "the test network has a route out: {routes}"
    );
    ensure!(
        lab.time.is_none(),
        "the test network has the harness's time server"
    );
    Ok(())
}

struct FirstBoot {
    running: BTreeMap<&'static str, Running>,
    /// master1's worker join token (aux1 gets it before the second boot).
    worker_token: String,
    reports: BTreeMap<&'static str, Report>,
}

/// aux1 and master1 first (aux1 is the only clock; master1's gate waits for
/// it), then master2 and both workers at once, with the tokens master1 gives.
fn first_power_on(lab: &Lab, feed: &Feed, m: [&Member<'_>; 5]) -> Result<FirstBoot> {
    let [aux1, master1, master2, worker1, worker2] = m;
    let wait = Duration::from_secs(20 * 60);
    let mut aux = start(
        lab,
        aux1,
        1,
        Probe::Hold(Box::new(Probe::GpsServer { wait })),
        Some(feed),
    )?;
    let mut m1 = start(
        lab,
        master1,
        1,
        Probe::SwarmManager {
            nodes: 4,
            wait,
            hold: true,
        },
        None,
    )?;
    eprintln!(
        "master1: qemu-system-x86_64 under {} ({})",
        m1.vm.accel().name(),
        pibake_qemu::pc::x86_accel().why
    );
    let gps = aux.vm.wait_probe_section("gps", BOOT_TIMEOUT)?;
    check_gps_selected(&gps, feed.seconds_sent())
        .with_context(|| format!("aux1 console: {}", aux.vm.console_path().display()))?;
    eprintln!(
        "aux1 serves GPS time ({} seconds of NMEA sent):\n{gps}",
        feed.seconds_sent()
    );
    let worker = m1
        .vm
        .wait_probe_section("token", BOOT_TIMEOUT)?
        .trim()
        .to_owned();
    let manager = m1
        .vm
        .wait_probe_section("mtoken", BOOT_TIMEOUT)?
        .trim()
        .to_owned();
    ensure!(
        worker.starts_with("SWMTKN-") && manager.starts_with("SWMTKN-") && worker != manager,
        "no join tokens from master1: {worker:?} {manager:?}"
    );
    wait_for_vip(lab)?;
    give_token(master2.overlay, "swarm_manager_token", &manager)?;
    give_token(worker1.overlay, "swarm_worker_token", &worker)?;
    give_token(worker2.overlay, "swarm_worker_token", &worker)?;
    let vip = Probe::Hold(Box::new(Probe::Standby { vip: VIP, wait }));
    // The three join at once, as boards powered on together would: none
    // needs another's join (the workers join through the VIP, master1's).
    let mut m2 = start(lab, master2, 1, vip, None)?;
    let member = || Probe::Hold(Box::new(Probe::Member));
    let mut w1 = start(lab, worker1, 1, member(), None)?;
    let mut w2 = start(lab, worker2, 1, member(), None)?;
    m2.vm.wait_probe_section("standby", BOOT_TIMEOUT)?;
    wait_joined(&mut w1.vm, "worker1")?;
    wait_joined(&mut w2.vm, "worker2")?;
    let ready = m1.vm.wait_probe_section("ready4", wait)?;
    ensure_ready(&ready, &["master1", "master2", "worker1", "worker2"])?;
    ensure_manager(&ready, "master2")?;
    eprintln!("docker node ls on master1 (all Ready):\n{ready}");
    let mut reports = BTreeMap::new();
    for r in [&mut w1, &mut w2] {
        r.vm.go()?;
        reports.insert(r.node.name, r.vm.wait_report(BOOT_TIMEOUT)?);
    }
    reports.insert(AUX1.name, aux.vm.wait_report(BOOT_TIMEOUT)?);
    reports.insert(MASTER1.name, m1.vm.wait_report(BOOT_TIMEOUT)?);
    for (name, r) in &reports {
        ensure!(
            !r.section("status").unwrap_or_default().contains(&worker),
            "{name}'s report shows the join token"
        );
    }
    let running = [aux, m1, m2, w1, w2]
        .into_iter()
        .map(|r| (r.node.name, r))
        .collect();
    Ok(FirstBoot {
        running,
        worker_token: worker,
        reports,
    })
}

/// `host` is a manager in `docker node ls` (`HOST STATUS MANAGERSTATUS`
/// lines): Leader or Reachable.
fn ensure_manager(nodes: &str, host: &str) -> Result<()> {
    ensure!(
        nodes.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&host)
                && f.iter()
                    .skip(2)
                    .any(|m| *m == "Leader" || *m == "Reachable")
        }),
        "{host} is not a Swarm manager; docker node ls on master1:\n{nodes}"
    );
    Ok(())
}

/// chrony on aux1 selected the NMEA refclock (`#* NMEA`) and the feed has
/// been sending.
fn check_gps_selected(sources: &str, seconds_sent: u64) -> Result<()> {
    ensure!(
        seconds_sent > 0,
        "the emulated receiver sent nothing (no reader on aux1's ttyAMA0)"
    );
    ensure!(
        sources.lines().any(|l| l.starts_with("#* NMEA")),
        "aux1's chrony did not select the NMEA refclock:\n{sources}"
    );
    Ok(())
}

/// Every node's clock is the GPS time: aux1's as measured from the test
/// network by NTP, the others' through their chrony's verdict on aux1, and
/// every clock days away from the host's (so it came from nowhere else).
fn check_time_chain(
    lab: &Lab,
    clock: GpsClock,
    reports: &BTreeMap<&'static str, Report>,
    running: &BTreeMap<&'static str, Running>,
) -> Result<()> {
    // aux1's time minus host time is GPS_AHEAD plus aux1's error.
    let measured = lab.ns.ntp_offset(AUX1.address.parse()?)?;
    let aux_error = measured.abs() - clock.offset_secs as f64;
    eprintln!(
        "OFFSET aux1 from GPS time: {:+.3} s (NTP from the test network)",
        aux_error
    );
    ensure!(
        aux_error.abs() < 0.5,
        "aux1 is {aux_error:+.3} s off the GPS time (NTP: {measured:+.3} s from the host)"
    );
    for (name, r) in reports {
        let c = r.clock().ok_or_else(|| {
            anyhow!(
                "{name}: no clock reading in its report:\n{:?}",
                r.section("clock")
            )
        })?;
        check_node_clock(name, &c, running[name].started_at, clock, aux_error)?;
    }
    Ok(())
}

/// One node's clock reading: its chrony follows aux1 (aux1's follows
/// NMEA), its clock is the GPS time rather than the host's (the report's
/// host time is about when the VM started plus the guest's uptime: QEMU's
/// start to the kernel's is seconds), and its offset from the GPS time,
/// through aux1's measured one, is within the clock gate's 0.5 s.
fn check_node_clock(
    name: &str,
    c: &pibake_qemu::probe::Clock,
    started_at: f64,
    clock: GpsClock,
    aux_error: f64,
) -> Result<()> {
    let want = if name == AUX1.name {
        "NMEA"
    } else {
        AUX1.address
    };
    ensure!(
        c.reference == want,
        "{name}'s chrony follows {:?}, not {want}",
        c.reference
    );
    let ahead = c.unix - (started_at + c.uptime);
    ensure!(
        (ahead - clock.offset_secs as f64).abs() < 300.0,
        "{name}'s clock is {ahead:.0} s from the host's, not the GPS time's {} s",
        clock.offset_secs
    );
    let total = c.system_offset + if name == AUX1.name { 0.0 } else { aux_error };
    eprintln!(
        "OFFSET {name} from GPS time: {total:+.4} s (chrony: {:+.6} s from {}, root distance {:.4} s)",
        c.system_offset, c.reference, c.root_distance
    );
    ensure!(
        total.abs() < 0.5,
        "{name} ends {total:+.3} s off the GPS time"
    );
    Ok(())
}

/// What the first boot must show on every node besides the Swarm: identity
/// done, the clock verified, no failed unit (aux1: only its Swarm step,
/// for want of a token).
fn check_first_boot(reports: &BTreeMap<&'static str, Report>) -> Result<()> {
    for (name, r) in reports {
        let step = |s: &str| r.step(s).ok_or_else(|| anyhow!("{name}: no {s} step"));
        check_identity_source(name, &step("identity")?)?;
        ensure!(
            step("clock")?.state == "done",
            "{name} clock: {:?}",
            step("clock")?
        );
        let mut failed = r.failed_units();
        failed.sort();
        let allowed: &[&str] = if *name == AUX1.name {
            &["pibake-swarm.service"]
        } else {
            &[]
        };
        ensure!(
            failed == allowed,
            "{name} failed units {failed:?}, expected {allowed:?}"
        );
    }
    ensure_swarm_done(&reports[MASTER1.name], "master1")?;
    let arches: Vec<String> = [MASTER1, WORKER1]
        .iter()
        .map(|n| reports[n.name].arch().unwrap_or_default())
        .collect();
    ensure!(
        arches == ["x86_64", "aarch64"],
        "master1, worker1 run {arches:?}"
    );
    Ok(())
}

/// Every node chose itself by its MAC address but worker2, whose card's
/// `pibake-node.toml` wins over the MAC of its board (worker3's).
fn check_identity_source(name: &str, id: &StepStatus) -> Result<()> {
    let source = if name == WORKER2.name {
        "boot partition"
    } else {
        "MAC address"
    };
    ensure!(
        id.state == "done" && id.node.as_deref() == Some(name) && id.why.contains(source),
        "{name} identity: {id:?}, expected done, node {name}, chosen by {source}"
    );
    Ok(())
}

/// Two fresh copies of the worker image got a machine-id and an SSH host
/// key of their own.
fn ensure_fresh_ids(a: &AgentState, b: &AgentState) -> Result<()> {
    let (ida, idb) = (machine_id(a)?, machine_id(b)?);
    ensure!(
        ida != idb,
        "worker1 and worker2 got the same machine-id {ida}"
    );
    let key = "/etc/ssh/ssh_host_ed25519_key.pub";
    ensure!(
        a.text(key).is_some() && a.text(key) != b.text(key),
        "worker1 and worker2 got the same SSH host key (or none)"
    );
    Ok(())
}

/// GETs in a row that must all be answered, by both workers, before the
/// failover starts (every 500 ms: the service has served ~5 s).
const SETTLED_RUN: usize = 10;

/// GETs until the service has settled ([`http::settled`]): both workers
/// answer and the last [`SETTLED_RUN`] were all answered (bounded: the
/// stack's tasks start once the workers have loaded the preloaded image).
/// Returns the summary of every GET made, failures while settling included.
fn wait_until_settled(lab: &Lab, limit: Duration) -> Result<Summary> {
    let nodes = ["worker1", "worker2"];
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let at = start.elapsed();
        let answer = http::get(&lab.ns, WEB)?;
        samples.push(http::Sample {
            at,
            took: start.elapsed() - at,
            answer,
        });
        if http::settled(&samples, &nodes, SETTLED_RUN) {
            return Ok(http::summarize(&samples, &nodes));
        }
        if at > limit {
            let sum = http::summarize(&samples, &nodes);
            return Err(anyhow!(
                "{WEB} did not settle (the last {SETTLED_RUN} GETs answered, by both workers) within {limit:?}: {sum:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The web page through the VIP, before and while master1 dies.
fn web_through_a_failover(
    lab: &Lab,
    running: &mut BTreeMap<&'static str, Running>,
) -> Result<Report> {
    let settle = wait_until_settled(lab, Duration::from_secs(10 * 60))?;
    eprintln!(
        "WEB {WEB} settled: answered by both workers {:?}, {} failed while the tasks started (first failure {:?})",
        settle.by_node, settle.failed, settle.first_failure
    );
    ensure!(
        neighbour_mac(lab, VIP)?.as_deref() == Some(MASTER1.mac),
        "the VIP is not on master1 before the failure: {:?}",
        neighbour_mac(lab, VIP)?
    );
    let poller = Poller::start(&lab.ns, WEB, Duration::from_millis(250))?;
    std::thread::sleep(Duration::from_secs(10));
    let killed_at = poller.elapsed();
    let m1 = running
        .get_mut(MASTER1.name)
        .ok_or_else(|| anyhow!("no master1"))?;
    m1.vm.kill();
    let m2 = running
        .get_mut(MASTER2.name)
        .ok_or_else(|| anyhow!("no master2"))?;
    m2.vm.go()?;
    let killed = Instant::now();
    let mut moved = None;
    while killed.elapsed() < Duration::from_secs(60) {
        if lab.ns.ping(VIP, Duration::from_secs(1))?
            && neighbour_mac(lab, VIP)?.as_deref() == Some(MASTER2.mac)
        {
            moved = Some(killed.elapsed());
            break;
        }
    }
    let moved = moved.ok_or_else(|| anyhow!("no VIP answer from master2 within 60 s"))?;
    eprintln!("FAILOVER VIP answered from master2 {moved:.1?} after master1 died");
    ensure!(
        moved <= Duration::from_secs(10),
        "the VIP answered from master2 only after {moved:.1?} (goal: 10 s)"
    );
    std::thread::sleep(Duration::from_secs(30));
    let samples = poller.stop()?;
    let (pre, post): (Vec<_>, Vec<_>) = samples.into_iter().partition(|s| s.at < killed_at);
    let nodes = ["worker1", "worker2", "master1", "master2", "aux1"];
    let (pre, post) = (
        http::summarize(&pre, &nodes),
        http::summarize(&post, &nodes),
    );
    eprintln!(
        "WEB while master1 died: before {} answered, {} failed, slowest {:.1?}; after {} answered, {} failed, longest gap {:.1?}, slowest {:.1?}, pages {:?}, first failure {:?}",
        pre.answered, pre.failed, pre.slowest, post.answered, post.failed, post.longest_gap, post.slowest, post.by_node, post.first_failure
    );
    check_failover_gets(&pre, &post)?;
    let vip = m2.vm.wait_probe_section("vip", BOOT_TIMEOUT)?;
    ensure!(
        vip.contains("Entering MASTER STATE"),
        "master2's keepalived did not enter MASTER:\n{vip}"
    );
    let report = m2.vm.wait_report(BOOT_TIMEOUT)?;
    ensure!(
        report.addresses("eth0").contains(&VIP.to_string()),
        "VIP not on master2's eth0"
    );
    ensure_swarm_done(&report, "master2")?;
    Ok(report)
}

/// Before the kill every GET was answered; after it, pages still come from
/// the workers only, with the longest gap within [`GAP_GOAL`].
fn check_failover_gets(pre: &Summary, post: &Summary) -> Result<()> {
    ensure!(
        pre.failed == 0 && pre.answered > 0,
        "GETs failed before master1 died: {pre:?}"
    );
    ensure!(
        post.answered > 0,
        "no GET was answered after master1 died: {post:?}"
    );
    let strays: Vec<&String> = post
        .by_node
        .keys()
        .filter(|n| !n.starts_with("worker"))
        .collect();
    ensure!(
        strays.is_empty(),
        "pages not from a worker after the failover: {:?}",
        post.by_node
    );
    ensure!(
        post.longest_gap <= GAP_GOAL,
        "the web page was away {:.1?} while the VIP moved (goal {GAP_GOAL:?})",
        post.longest_gap
    );
    Ok(())
}

/// The power button on every running VM at once; each must power off
/// within [`BUTTON_BOUND`]. Returns each node's time, for the log.
fn press_the_button(running: &mut BTreeMap<&'static str, Running>, round: &str) -> Result<String> {
    let live: Vec<&'static str> = running
        .iter_mut()
        .filter_map(|(name, r)| r.vm.is_running().then_some(*name))
        .collect();
    let pressed = Instant::now();
    for name in &live {
        running
            .get_mut(name)
            .ok_or_else(|| anyhow!("{name}"))?
            .vm
            .power_button()?;
    }
    let mut times = Vec::new();
    for name in &live {
        let vm = &mut running.get_mut(name).ok_or_else(|| anyhow!("{name}"))?.vm;
        let left = BUTTON_BOUND.saturating_sub(pressed.elapsed());
        vm.wait_exit_for(&format!("power-off after the button ({round} round)"), left)?;
        times.push(format!("{name} {:.0} s", pressed.elapsed().as_secs_f64()));
    }
    Ok(times.join(", "))
}

/// The agent's state on a disk that must have been shut down cleanly: its
/// root file system is checked before anything replays a journal.
fn read_clean_state(m: &Member<'_>, label: &str) -> Result<AgentState> {
    let raw = m.overlay.snapshot(label)?;
    let disk = RawDisk::open(&raw)?;
    let state = disk
        .root_clean()
        .map_err(anyhow::Error::from)
        .and_then(|()| AgentState::read(&disk, m.table, m.node.name))
        .with_context(|| format!("{}'s disk", m.node.name));
    std::fs::remove_file(&raw)?;
    state
}

fn assert_secrets_moved(state: &AgentState, node: &str) -> Result<()> {
    ensure!(
        !state
            .boot_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case("pibake-secrets.toml")),
        "pibake-secrets.toml is still on {node}'s boot partition"
    );
    let secrets = state
        .stat("/etc/pibake/secrets")
        .ok_or_else(|| anyhow!("no /etc/pibake/secrets on {node}"))?;
    ensure!(
        secrets.mode == 0o600 && secrets.uid == 0,
        "{node}'s secrets mode {:o}",
        secrets.mode
    );
    Ok(())
}

/// aux1's GPS pieces on its disk and console: chrony serves the subnet
/// from its confdir's refclock choice, and with QEMU's board having no
/// /dev/pps0 the choice was NMEA alone (never the PPS device, which would
/// keep chronyd from starting).
fn assert_gps_pieces(state: &AgentState, console: &str) -> Result<()> {
    let chrony = state
        .text("/etc/chrony/chrony.conf")
        .ok_or_else(|| anyhow!("no chrony.conf on aux1"))?;
    for line in ["confdir /run/pibake/chrony", "allow 192.168.188.0/24"] {
        ensure!(
            chrony.contains(line),
            "aux1 chrony.conf lacks {line:?}:\n{chrony}"
        );
    }
    let nmea = state
        .text("/etc/pibake/chrony/nmea-only.conf")
        .ok_or_else(|| anyhow!("no /etc/pibake/chrony/nmea-only.conf on aux1"))?;
    ensure!(
        nmea.contains("refclock SOCK") && !nmea.contains("noselect"),
        "aux1's NMEA-only refclock:\n{nmea}"
    );
    ensure!(
        console.contains("no /dev/pps0, chrony runs without the PPS refclock: NMEA time alone"),
        "chrony's PPS helper did not choose NMEA alone"
    );
    ensure!(
        !console.contains("Could not open /dev/pps0"),
        "chronyd still tried /dev/pps0"
    );
    Ok(())
}

/// All five at once, as the whole cluster's power comes back: five nodes
/// Ready on master1, the page on the VIP, each clock verified again in this
/// boot from aux1.
fn second_power_on(
    lab: &Lab,
    feed: &Feed,
    m: [&Member<'_>; 5],
    first: &BTreeMap<&'static str, Report>,
) -> Result<BTreeMap<&'static str, Running>> {
    let wait = Duration::from_secs(20 * 60);
    let t0 = Instant::now();
    let mut running = BTreeMap::new();
    for member in m {
        let probe = match member.node.name {
            "master1" => Probe::SwarmManager {
                nodes: 5,
                wait,
                hold: true,
            },
            "aux1" => Probe::Hold(Box::new(Probe::GpsServer { wait })),
            _ => Probe::Hold(Box::new(Probe::Member)),
        };
        let gps = (member.node.name == AUX1.name).then_some(feed);
        running.insert(member.node.name, start(lab, member, 2, probe, gps)?);
    }
    let m1 = &mut running
        .get_mut(MASTER1.name)
        .ok_or_else(|| anyhow!("master1"))?
        .vm;
    let ready = m1.wait_probe_section("ready5", wait)?;
    ensure_ready(
        &ready,
        &["master1", "master2", "worker1", "worker2", "aux1"],
    )?;
    let back = wait_until_settled(lab, Duration::from_secs(10 * 60))?;
    eprintln!(
        "POWER-ON: the cluster is back {:.0} s after power-on (five nodes Ready, {WEB} answered by {:?}):\n{ready}",
        t0.elapsed().as_secs_f64(),
        back.by_node
    );
    let mut reports = BTreeMap::new();
    for (name, r) in running.iter_mut() {
        if *name != MASTER1.name && *name != AUX1.name {
            r.vm.go()?;
        }
        reports.insert(*name, r.vm.wait_report(BOOT_TIMEOUT)?);
    }
    for (name, r) in &reports {
        ensure!(
            r.failed_units().is_empty(),
            "{name} failed units after power-on: {:?}",
            r.failed_units()
        );
        let before = &first.get(name);
        ensure_steps_not_rerun(before.and_then(|b| b.status()), r.status(), name)?;
    }
    check_time_chain(lab, feed.clock(), &reports, &running)?;
    Ok(running)
}

/// By the agent's status: what was done in the first boot is done at the
/// same time (not re-run); the clock is verified in this boot.
fn ensure_steps_not_rerun(
    before: Option<Vec<StepStatus>>,
    after: Option<Vec<StepStatus>>,
    node: &str,
) -> Result<()> {
    let after = after.ok_or_else(|| anyhow!("{node}: no status after power-on"))?;
    for s in &after {
        ensure!(
            s.state == "done",
            "{node}'s {} step after power-on: {s:?}",
            s.step
        );
    }
    let Some(before) = before else { return Ok(()) };
    for b in before
        .iter()
        .filter(|b| b.state == "done" && b.step != "clock")
    {
        let a = after.iter().find(|a| a.step == b.step);
        ensure!(
            a.is_some_and(|a| a.at == b.at && a.why == b.why),
            "{node}'s {} step ran again at power-on: before {b:?}, after {a:?}",
            b.step
        );
    }
    Ok(())
}

/// The journal on the disk: every record of a step done in the first round
/// other than the clock's is byte for byte the same after the second. A step
/// that failed then (aux1's swarm step, without its token) is retried by
/// design; [`ensure_steps_not_rerun`] wants it done now.
fn ensure_no_step_rerun(first: &AgentState, second: &AgentState, node: &str) -> Result<()> {
    use pibake_firstboot::journal::{Outcome, Record};
    for path in JOURNAL.iter().filter(|p| !p.ends_with("clock.toml")) {
        let (a, b) = (first.text(path), second.text(path));
        let Some(text) = &a else { continue };
        let record: Record = toml::from_str(text)
            .with_context(|| format!("{node}: {path} is not a journal record:\n{text}"))?;
        if record.outcome == Outcome::Done {
            ensure!(a == b, "{node}: {path} changed at power-on (a step ran again):\nbefore {a:?}\nafter  {b:?}");
        }
    }
    ensure!(
        first.text("/var/lib/pibake/clock.toml") != second.text("/var/lib/pibake/clock.toml"),
        "{node}: the clock was not verified again at power-on"
    );
    Ok(())
}

/// The checks of this scenario on planted data: each fails on what a broken
/// lab would show.
#[test]
fn seed_checks_catch_planted_faults() -> Result<()> {
    use pibake_qemu::http::Sample;
    let ok = |ms: u64, page: &str| Sample {
        at: Duration::from_millis(ms),
        took: Duration::from_millis(40),
        answer: Ok(page.to_owned()),
    };
    let err = |ms: u64| Sample {
        at: Duration::from_millis(ms),
        took: http::GET_BOUND,
        answer: Err("timeout".to_owned()),
    };
    let nodes = ["worker1", "worker2", "master1", "master2", "aux1"];
    let pre = http::summarize(&[ok(0, "worker1"), ok(250, "worker2")], &nodes);
    let good = http::summarize(&[ok(0, "worker1"), err(250), ok(3000, "worker2")], &nodes);
    check_failover_gets(&pre, &good)?;
    let long = http::summarize(&[ok(0, "worker1"), err(250), ok(25_000, "worker2")], &nodes);
    let stray = http::summarize(&[ok(0, "worker1"), ok(250, "master2")], &nodes);
    let dead = http::summarize(&[err(0), err(30_000)], &nodes);
    let failing_before = http::summarize(&[ok(0, "worker1"), err(250)], &nodes);
    for (what, pre, post) in [
        ("a 25 s gap", &pre, &long),
        ("a page from master2", &pre, &stray),
        ("no answer after the kill", &pre, &dead),
        ("failures before the kill", &failing_before, &good),
    ] {
        ensure!(
            check_failover_gets(pre, post).is_err(),
            "planted fault not caught: {what}"
        );
    }
    // GPS: nothing sent (no reader on ttyAMA0), NMEA not selected, another
    // source selected.
    let selected =
        "MS Name/IP address\n====\n#* NMEA    0   4    77    18  -2728us[  -13ms] +/-  105ms\n";
    check_gps_selected(selected, 90)?;
    ensure!(
        check_gps_selected(selected, 0).is_err(),
        "planted fault not caught: no NMEA sent"
    );
    for sources in [
        selected.replace("#* NMEA", "#? NMEA"),
        selected.replace("#* NMEA", "^* 10.0.0.1"),
    ] {
        ensure!(
            check_gps_selected(&sources, 90).is_err(),
            "planted fault not caught: {sources}"
        );
    }
    // Clocks: aux1's reference, the GPS time, the offset.
    let gps = GpsClock {
        offset_secs: GPS_AHEAD,
    };
    let reading = pibake_qemu::probe::Clock {
        unix: 1_000_000.0 + GPS_AHEAD as f64 + 40.0,
        uptime: 40.0,
        reference: AUX1.address.to_owned(),
        system_offset: 0.001,
        root_distance: 0.11,
        leap: "Normal".to_owned(),
    };
    check_node_clock("worker1", &reading, 1_000_000.0, gps, -0.03)?;
    let host_time = pibake_qemu::probe::Clock {
        unix: 1_000_040.0,
        ..reading.clone()
    };
    let other = pibake_qemu::probe::Clock {
        reference: "192.168.188.1".to_owned(),
        ..reading.clone()
    };
    let far = pibake_qemu::probe::Clock {
        system_offset: 0.6,
        ..reading.clone()
    };
    for (what, c) in [
        ("the host's time", &host_time),
        ("another server", &other),
        ("0.6 s off", &far),
    ] {
        ensure!(
            check_node_clock("worker1", c, 1_000_000.0, gps, -0.03).is_err(),
            "planted fault not caught: {what}"
        );
    }
    // Steps: a re-run identity (another why) and a pending step after power-on.
    let st = |step: &str, state: &str, why: &str| StepStatus {
        step: step.to_owned(),
        state: state.to_owned(),
        at: Some(why.len() as u64),
        why: why.to_owned(),
        node: None,
    };
    let before = vec![
        st("identity", "done", "MAC at 10"),
        st("clock", "done", "boot a"),
    ];
    let after = vec![
        st("identity", "done", "MAC at 10"),
        st("clock", "done", "boot b"),
    ];
    ensure_steps_not_rerun(Some(before.clone()), Some(after), "w")?;
    let rerun = vec![
        st("identity", "done", "MAC at 99"),
        st("clock", "done", "boot b"),
    ];
    ensure!(
        ensure_steps_not_rerun(Some(before.clone()), Some(rerun), "w").is_err(),
        "planted fault not caught: identity re-run"
    );
    let pending = vec![
        st("identity", "done", "MAC at 10"),
        st("clock", "failed", "no source"),
    ];
    ensure!(
        ensure_steps_not_rerun(Some(before), Some(pending), "w").is_err(),
        "planted fault not caught: clock failed"
    );
    let ls = "master1 Ready Leader\nmaster2 Ready Reachable\nworker1 Ready\n";
    ensure_manager(ls, "master2")?;
    for (what, host) in [("a worker", "worker1"), ("a node not listed", "worker2")] {
        ensure!(
            ensure_manager(ls, host).is_err(),
            "planted fault not caught: {what} taken for a manager"
        );
    }
    identity_checks_catch_planted_faults()?;
    journal_checks_catch_planted_faults()
}

/// worker2 must be chosen by its card, the others by their MAC; two fresh
/// workers must not share a machine-id or an SSH host key.
fn identity_checks_catch_planted_faults() -> Result<()> {
    let id = |node: &str, why: &str| StepStatus {
        step: "identity".to_owned(),
        state: "done".to_owned(),
        at: None,
        why: why.to_owned(),
        node: Some(node.to_owned()),
    };
    check_identity_source(
        "worker2",
        &id("worker2", "node worker2 chosen by boot partition"),
    )?;
    check_identity_source(
        "worker1",
        &id("worker1", "node worker1 chosen by MAC address"),
    )?;
    for (name, planted) in [
        (
            "worker2",
            id("worker3", "node worker3 chosen by MAC address"),
        ),
        (
            "worker2",
            id("worker2", "node worker2 chosen by MAC address"),
        ),
        (
            "worker1",
            id("worker1", "node worker1 chosen by boot partition"),
        ),
    ] {
        ensure!(
            check_identity_source(name, &planted).is_err(),
            "planted fault not caught: {name} {planted:?}"
        );
    }
    let card = |machine_id: &str, key: &str| {
        planted_state([
            ("/etc/machine-id", machine_id.to_owned()),
            ("/etc/ssh/ssh_host_ed25519_key.pub", key.to_owned()),
        ])
    };
    let (id1, id2) = (
        "0123456789abcdef0123456789abcdef\n",
        "fedcba9876543210fedcba9876543210\n",
    );
    ensure_fresh_ids(
        &card(id1, "ssh-ed25519 AAAA1"),
        &card(id2, "ssh-ed25519 AAAA2"),
    )?;
    for (what, b) in [
        ("the same machine-id", card(id1, "ssh-ed25519 AAAA2")),
        ("the same SSH host key", card(id2, "ssh-ed25519 AAAA1")),
    ] {
        ensure!(
            ensure_fresh_ids(&card(id1, "ssh-ed25519 AAAA1"), &b).is_err(),
            "planted fault not caught: {what}"
        );
    }
    Ok(())
}

/// An agent state of these files (root's, 0644) and nothing else, for planted faults.
fn planted_state<'a>(files: impl IntoIterator<Item = (&'a str, String)>) -> AgentState {
    AgentState {
        files: files
            .into_iter()
            .map(|(path, text)| {
                let stat = pibake_qemu::disk::Stat {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    size: text.len() as u64,
                };
                let content = text.into_bytes();
                (path.to_owned(), Some(FileState { stat, content }))
            })
            .collect(),
        ssh_keys: Vec::new(),
        boot_names: Vec::new(),
        root_end: 0,
        disk_len: 0,
    }
}

/// The journal files compared byte for byte: a done step's record that
/// changed is caught; a failed step done later, as aux1's swarm step without
/// its token, is not a re-run; a clock not verified again is caught.
fn journal_checks_catch_planted_faults() -> Result<()> {
    let record =
        |outcome: &str, at: u64| format!("outcome = \"{outcome}\"\nat = {at}\nwhy = \"x\"\n");
    let state = |identity: String, clock: String, swarm: String| {
        planted_state(JOURNAL.iter().copied().zip([identity, clock, swarm]))
    };
    let first = state(record("done", 1), record("done", 2), record("failed", 3));
    let retried = state(record("done", 1), record("done", 9), record("done", 9));
    ensure_no_step_rerun(&first, &retried, "aux1")?;
    let rerun = state(record("done", 7), record("done", 9), record("done", 9));
    ensure!(
        ensure_no_step_rerun(&first, &rerun, "aux1").is_err(),
        "planted fault not caught: identity's record rewritten"
    );
    let stale_clock = state(record("done", 1), record("done", 2), record("done", 9));
    ensure!(
        ensure_no_step_rerun(&first, &stale_clock, "aux1").is_err(),
        "planted fault not caught: the clock not verified again"
    );
    Ok(())
}
