//! Startup cost of `identity` on the host: the first run (personalizes a
//! fresh card) and a later boot's run (changes nothing), against a temporary
//! root like the tests' with fake system commands; and the size of the
//! stripped aarch64 binary when it has been cross-built (`build_agent` of
//! xtask). Goals: identity < 50 ms, binary < 5 MiB. Prints figures only.

use pibake_firstboot::bootfiles::{BootPartition, TABLE_FILE};
use pibake_firstboot::identity;
use pibake_firstboot::root::Root;
use pibake_firstboot::system::{Clock, Cmd, CommandRunner, Output};
use pibake_firstboot::table::{
    ClockLimits, NodeEntry, NodeFile, NodeTable, Swarm, SwarmRole, TABLE_FORMAT,
};
use pibake_firstboot::Agent;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug)]
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000)
    }
    fn elapsed(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep(&self, _: Duration) {}
}

/// Answers like the real tools on a card already the right size, without
/// their own cost (which is theirs, not the agent's).
#[derive(Debug)]
struct QuietRunner;

impl CommandRunner for QuietRunner {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output> {
        let nochange = cmd.program == "growpart";
        Ok(Output {
            code: Some(if nochange { 1 } else { 0 }),
            stdout: if nochange {
                "NOCHANGE: it cannot be grown".into()
            } else {
                String::new()
            },
            stderr: String::new(),
        })
    }
}

/// A 32-node table (the lab has 9), each node with 5 rendered files.
fn table() -> NodeTable {
    let mut nodes = BTreeMap::new();
    for i in 0..32u8 {
        let files = [
            (
                "/etc/NetworkManager/system-connections/eth0.nmconnection",
                0o600,
            ),
            ("/etc/hosts", 0o644),
            ("/etc/keepalived/keepalived.conf", 0o640),
            ("/etc/chrony/conf.d/pibake.conf", 0o644),
            ("/etc/default/gpsd", 0o644),
        ]
        .iter()
        .map(|(path, mode)| NodeFile {
            path: (*path).into(),
            mode: *mode,
            content: format!("# node {i}\n{}", "x = y\n".repeat(40)),
        })
        .collect();
        nodes.insert(
            format!("node{i:02}"),
            NodeEntry {
                address: [192, 168, 188, 20 + i].into(),
                mac: Some(format!("dc:a6:32:00:00:{i:02x}")),
                serial: Some(format!("10000000aaaa00{i:02x}")),
                swarm_role: SwarmRole::Worker,
                files,
            },
        );
    }
    NodeTable {
        format: TABLE_FORMAT,
        cluster: "bench".into(),
        domain: "bench.example".into(),
        role: "worker".into(),
        build_epoch: 1_750_000_000,
        interface: "eth0".into(),
        clock: ClockLimits {
            max_offset_ms: 100,
            max_root_distance_ms: 1000,
            wait_seconds: 30,
        },
        swarm: Swarm {
            join: vec![[192, 168, 188, 10].into()],
            wait_seconds: 60,
            stacks: vec![],
            preloaded_stacks: vec![],
            images: vec![],
        },
        nodes,
    }
}

fn card(dir: &Path, table_text: &str) -> std::io::Result<Root> {
    let root = Root::new(dir);
    let put = |path: &str, content: &str| -> std::io::Result<()> {
        let full = root.at(path);
        std::fs::create_dir_all(full.parent().unwrap_or(dir))?;
        std::fs::write(full, content)
    };
    put(&BootPartition::PiFirmware.path_of(TABLE_FILE), table_text)?;
    put("proc/cmdline", "root=/dev/mmcblk0p2 rootwait\n")?;
    put("proc/device-tree/serial-number", "10000000aaaa001f\0")?;
    put("sys/class/net/eth0/address", "dc:a6:32:00:00:1f\n")?;
    put("etc/ssh/sshd_config", "")?;
    put(
        "boot/firmware/pibake-secrets.toml",
        "swarm_worker_token = \"fake\"\n",
    )?;
    Ok(root)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = table().to_toml()?;
    let runs = 50;
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let root = card(dir.path(), &text)?;
        let agent = Agent {
            root,
            clock: &FixedClock,
            runner: &QuietRunner,
        };
        let t = Instant::now();
        identity::run(&agent)?;
        first.push(t.elapsed());
        let t = Instant::now();
        identity::run(&agent)?;
        again.push(t.elapsed());
    }
    let (first, again) = (median(first), median(again));
    println!(
        "identity, first boot (32-node table, 5 files): median {:.2} ms over {runs} runs",
        first.as_secs_f64() * 1e3
    );
    println!(
        "identity, later boot (no change):              median {:.2} ms over {runs} runs",
        again.as_secs_f64() * 1e3
    );
    println!(
        "goal < 50 ms: {}",
        if first < Duration::from_millis(50) {
            "met"
        } else {
            "NOT met"
        }
    );
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot");
    match std::fs::metadata(&bin) {
        Ok(meta) => println!(
            "aarch64 stripped binary: {} bytes ({:.2} MiB), goal < 5 MiB: {}",
            meta.len(),
            meta.len() as f64 / 1048576.0,
            if meta.len() < 5 * 1048576 {
                "met"
            } else {
                "NOT met"
            }
        ),
        Err(_) => println!("aarch64 binary not built yet: run xtask's build_agent (DEVELOPERS.md)"),
    }
    Ok(())
}
