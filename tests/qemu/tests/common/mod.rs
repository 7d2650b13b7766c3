//! Scaffolding shared by the QEMU tests: serial execution, work dirs, the
//! lab's network, one boot of a node, and the agent-owned state read from
//! the disk after power-off.

#![allow(dead_code)]

pub mod checks;
pub mod swarm;

use anyhow::{anyhow, bail, Context, Result};
use pibake_firstboot::table::NodeTable;
use pibake_qemu::disk::{RawDisk, Stat};
use pibake_qemu::images::{role_image, workspace_root};
use pibake_qemu::net::{NetNs, TimeServer};
use pibake_qemu::overlay::Overlay;
use pibake_qemu::probe::{Probe, Report};
use pibake_qemu::vm::{Boot, BootFiles, Network, Vm, VmSpec, MULTI_USER};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// VMs run one at a time (two cores): every test holds this.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Generous bounds for TCG on a loaded two-core host.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const POWEROFF_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// The root grows onto this much more disk than the image has.
pub const GROW: u64 = 512 << 20;

pub const SUBNET: &str = "192.168.188.0/24";
pub const TIME_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 188, 20);
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 188, 2);

/// A node of the lab (examples/lab/cluster.toml).
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub name: &'static str,
    pub role: &'static str,
    pub mac: &'static str,
    pub address: &'static str,
}

pub const WORKER1: Node = Node {
    name: "worker1",
    role: "worker",
    mac: "2c:cf:67:00:00:21",
    address: "192.168.188.21",
};
pub const WORKER2: Node = Node {
    name: "worker2",
    role: "worker",
    mac: "2c:cf:67:00:00:22",
    address: "192.168.188.22",
};
pub const MASTER1: Node = Node {
    name: "master1",
    role: "master",
    mac: "52:54:00:00:00:11",
    address: "192.168.188.11",
};
pub const MASTER2: Node = Node {
    name: "master2",
    role: "master",
    mac: "52:54:00:00:00:12",
    address: "192.168.188.12",
};
pub const AUX1: Node = Node {
    name: "aux1",
    role: "aux",
    mac: "dc:a6:32:00:00:20",
    address: "192.168.188.20",
};

/// A fresh work directory `<workspace>/target/qemu-tests/<name>` (logs stay
/// there for a failed run).
pub fn workdir(name: &str) -> Result<PathBuf> {
    let dir = workspace_root().join("target/qemu-tests").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The test's L2 segment: a namespace with the gateway address and,
/// optionally, a time server at the GPS node's address.
#[derive(Debug)]
pub struct Lab {
    // Field order: the server dies before its namespace goes.
    pub time: Option<TimeServer>,
    pub ns: NetNs,
    /// Where the VMs' logs go.
    pub dir: PathBuf,
}

impl Lab {
    pub fn new(dir: &Path, time_server: bool) -> Result<Self> {
        let mut addrs = vec!["192.168.188.1/24".to_owned()];
        if time_server {
            addrs.push(format!("{TIME_SERVER}/24"));
        }
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let ns = NetNs::create(&refs)?;
        let time = if time_server {
            Some(TimeServer::start(&ns, TIME_SERVER, SUBNET, dir)?)
        } else {
            None
        };
        Ok(Lab {
            time,
            ns,
            dir: dir.to_owned(),
        })
    }

    /// Boots `disk` as `node` (its MAC) on the lab's segment, the guest's
    /// clock at the host's, with `probe`; logs under `name` in the lab's dir.
    /// `boot` is an arm64 worker's [`BootFiles`] or a pc-efi master's
    /// [`pibake_qemu::pc::PcEfiBoot`]: both VMs share the segment.
    pub fn start_vm<'b>(
        &self,
        name: &str,
        boot: impl Into<Boot<'b>>,
        disk: &Overlay,
        node: Node,
        probe: Option<Probe>,
    ) -> Result<Vm> {
        self.start_vm_args(name, boot, disk, node, probe, Vec::new())
    }

    /// [`Lab::start_vm`] of the GPS node, its UART fed by the emulated
    /// receiver at `gps` ([`pibake_qemu::gps::Feed::base`]).
    pub fn start_gps_vm(
        &self,
        name: &str,
        boot: &BootFiles,
        disk: &Overlay,
        node: Node,
        probe: Probe,
        gps: &Path,
    ) -> Result<Vm> {
        self.start(name, boot, disk, node, Some(probe), Vec::new(), Some(gps))
    }

    /// [`Lab::start_vm`] with more (test-only) kernel arguments.
    pub fn start_vm_args<'b>(
        &self,
        name: &str,
        boot: impl Into<Boot<'b>>,
        disk: &Overlay,
        node: Node,
        probe: Option<Probe>,
        kernel_args: Vec<String>,
    ) -> Result<Vm> {
        self.start(name, boot, disk, node, probe, kernel_args, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn start<'b>(
        &self,
        name: &str,
        boot: impl Into<Boot<'b>>,
        disk: &Overlay,
        node: Node,
        probe: Option<Probe>,
        kernel_args: Vec<String>,
        gps: Option<&Path>,
    ) -> Result<Vm> {
        Ok(Vm::start(VmSpec {
            name: name.to_owned(),
            boot: boot.into(),
            disk,
            mac: node.mac.to_owned(),
            rtc_base: rtc_now(),
            network: Network::Tap(&self.ns),
            probe,
            kernel_args,
            log_dir: self.dir.clone(),
            gps,
        })?)
    }
}

/// Kernel and initrd of a role image, extracted once per work dir.
pub fn boot_files(role: &str, dir: &Path) -> Result<BootFiles> {
    let image = role_image(role)?;
    let out = dir.join(format!("boot-{role}"));
    std::fs::create_dir_all(&out)?;
    Ok(BootFiles::from_image(&image, &out)?)
}

/// How a pc-efi role image boots (its ESP's entry, Debian's OVMF): what
/// [`Lab::start_vm`] takes for an x86-64 master beside arm64 workers.
pub fn pc_efi_boot(role: &str) -> Result<pibake_qemu::pc::PcEfiBoot> {
    Ok(pibake_qemu::pc::PcEfiBoot::from_image(&role_image(role)?)?)
}

/// The node table baked into a role image, on its boot partition.
pub fn node_table(role: &str) -> Result<NodeTable> {
    let disk = RawDisk::open(&role_image(role)?)?;
    let file = pibake_firstboot::bootfiles::TABLE_FILE;
    let text = disk
        .boot()?
        .read_string(file)
        .with_context(|| format!("lab-{role}.img has no {file} on its boot partition"))?;
    Ok(NodeTable::from_toml(&text)?)
}

/// A file as read from the disk: mode, owner and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub stat: Stat,
    pub content: Vec<u8>,
}

/// What the agent owns on a card, read after power-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    /// Path → state (`None`: absent).
    pub files: BTreeMap<String, Option<FileState>>,
    /// Names of the SSH host key files.
    pub ssh_keys: Vec<String>,
    /// Names in the root of the boot partition.
    pub boot_names: Vec<String>,
    /// End of the root partition and size of the disk, bytes.
    pub root_end: u64,
    pub disk_len: u64,
}

pub const JOURNAL: [&str; 3] = [
    "/var/lib/pibake/identity.toml",
    "/var/lib/pibake/clock.toml",
    "/var/lib/pibake/swarm.toml",
];

impl AgentState {
    /// Reads the files of `node` (from the table), the hostname, hosts,
    /// machine-id, secrets, journal and SSH host keys from a raw disk.
    pub fn read(disk: &RawDisk, table: &NodeTable, node: &str) -> Result<Self> {
        let root = disk.root()?;
        let entry = table
            .nodes
            .get(node)
            .ok_or_else(|| anyhow!("node {node} is not in the table"))?;
        let mut paths: Vec<String> = entry.files.iter().map(|f| f.path.clone()).collect();
        paths.extend(
            [
                "/etc/hostname",
                "/etc/hosts",
                "/etc/machine-id",
                "/etc/pibake/secrets",
            ]
            .map(str::to_owned),
        );
        paths.extend(JOURNAL.map(str::to_owned));
        let ssh_keys: Vec<String> = root
            .list("/etc/ssh")?
            .into_iter()
            .filter(|n| n.starts_with("ssh_host_"))
            .collect();
        paths.extend(ssh_keys.iter().map(|k| format!("/etc/ssh/{k}")));
        let mut files = BTreeMap::new();
        for path in paths {
            let state = match root.stat(&path)? {
                Some(stat) => Some(FileState {
                    stat,
                    content: root.read(&path)?.unwrap_or_default(),
                }),
                None => None,
            };
            files.insert(path, state);
        }
        Ok(AgentState {
            files,
            ssh_keys,
            boot_names: disk.boot()?.list("/")?,
            root_end: disk.partition(2)?.end(),
            disk_len: disk.len(),
        })
    }

    pub fn text(&self, path: &str) -> Option<String> {
        self.files
            .get(path)?
            .as_ref()
            .map(|f| String::from_utf8_lossy(&f.content).into_owned())
    }

    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.files.get(path)?.as_ref().map(|f| f.stat)
    }
}

/// Reads the agent state from the overlay and deletes the raw snapshot.
pub fn read_state(
    overlay: &Overlay,
    label: &str,
    table: &NodeTable,
    node: &str,
) -> Result<AgentState> {
    let disk = overlay.disk(label)?;
    let state = AgentState::read(&disk, table, node);
    std::fs::remove_file(disk.path())?;
    state
}

/// One boot to the probe's report and power-off.
#[derive(Debug, Clone)]
pub struct Booted {
    pub report: Report,
    pub console: String,
    pub state: AgentState,
}

/// Options of one boot.
#[derive(Debug, Clone, Default)]
pub struct BootOpts {
    /// Files written into the boot partition before the boot.
    pub boot_files: Vec<(String, String)>,
    pub kernel_args: Vec<String>,
}

pub fn rtc_now() -> String {
    "utc".to_owned()
}

/// Boots `overlay` as `node` (its MAC) in `lab`, waits for multi-user, the
/// probe's report and the power-off, then reads the agent's state.
#[allow(clippy::too_many_arguments)]
pub fn boot_once<'b>(
    lab: &Lab,
    boot: impl Into<Boot<'b>>,
    overlay: &Overlay,
    node: Node,
    table: &NodeTable,
    state_node: &str,
    label: &str,
    dir: &Path,
    opts: &BootOpts,
) -> Result<Booted> {
    if !opts.boot_files.is_empty() {
        let files: Vec<(&str, &[u8])> = opts
            .boot_files
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_bytes()))
            .collect();
        overlay.write_boot_files(&files)?;
    }
    let start = Instant::now();
    let mut vm = Vm::start(VmSpec {
        name: label.to_owned(),
        boot: boot.into(),
        disk: overlay,
        mac: node.mac.to_owned(),
        rtc_base: rtc_now(),
        network: Network::Tap(&lab.ns),
        probe: Some(Probe::Report),
        kernel_args: opts.kernel_args.clone(),
        log_dir: dir.to_owned(),
        gps: None,
    })?;
    vm.wait_for(MULTI_USER, BOOT_TIMEOUT)?;
    let to_multi_user = start.elapsed();
    let report = vm.wait_report(BOOT_TIMEOUT)?;
    vm.wait_exit(POWEROFF_TIMEOUT)?;
    let total = start.elapsed();
    let console = vm.console();
    drop(vm);
    eprintln!(
        "{label}: multi-user after {:.0} s, powered off after {:.0} s",
        to_multi_user.as_secs_f64(),
        total.as_secs_f64()
    );
    let state = read_state(overlay, label, table, state_node)?;
    Ok(Booted {
        report,
        console,
        state,
    })
}

/// The agent-owned files that must not change, with the journal entries
/// compared without their time where `ignore_time` (a power-cut rerun
/// records its own time).
pub fn comparable(state: &AgentState, ignore_time: bool) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for (path, file) in &state.files {
        let text = file.as_ref().map(|f| {
            let body = String::from_utf8_lossy(&f.content).into_owned();
            let body = if ignore_time && path.starts_with("/var/lib/pibake/") {
                body.lines()
                    .filter(|l| !l.starts_with("at ="))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                body
            };
            format!(
                "mode {:o} uid {} gid {}\n{body}",
                f.stat.mode, f.stat.uid, f.stat.gid
            )
        });
        out.insert(path.clone(), text);
    }
    out
}

/// Fails with the differing paths.
pub fn assert_same(
    a: &BTreeMap<String, Option<String>>,
    b: &BTreeMap<String, Option<String>>,
    what: &str,
) -> Result<()> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}:\n  before: {:?}\n  after:  {:?}", a.get(k), b.get(k)))
        .collect();
    if !diff.is_empty() {
        bail!(
            "{what}: {} agent-owned file(s) differ:\n{}",
            diff.len(),
            diff.join("\n")
        );
    }
    Ok(())
}

pub fn machine_id(state: &AgentState) -> Result<String> {
    let id = state
        .text("/etc/machine-id")
        .ok_or_else(|| anyhow!("/etc/machine-id is missing"))?
        .trim()
        .to_owned();
    if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("/etc/machine-id is {id:?}, not a fresh 32-hex-digit id");
    }
    Ok(id)
}

/// Runs `f`, printing its wall time (`TIMING <name>: <s> s`).
pub fn timed<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f();
    eprintln!("TIMING {name}: {:.0} s", start.elapsed().as_secs_f64());
    out
}
