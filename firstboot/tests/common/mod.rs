//! Fakes and fixtures shared by the agent's host tests: a temporary root laid
//! out like a Pi's ([`card`]) or a pc-efi machine's ([`pc_disk`]), a clock that only moves when told, a command runner that
//! plays ssh-keygen, growpart, resize2fs, chronyc, timedatectl and docker.
#![allow(dead_code)]

use pibake_firstboot::bootfiles::{self, BootPartition, TABLE_FILE};
use pibake_firstboot::root::Root;
use pibake_firstboot::system::{Clock, Cmd, CommandRunner, Output};
use pibake_firstboot::table::{
    ClockLimits, NodeEntry, NodeFile, NodeTable, Swarm, SwarmRole, TABLE_FORMAT,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

pub const BUILD_EPOCH: u64 = 1_750_000_000;
pub const NOW: u64 = 1_760_000_000;
pub const WORKER_TOKEN: &str = "fake-worker-token-for-tests-0001";
pub const MANAGER_TOKEN: &str = "fake-manager-token-for-tests-0002";

pub const W1_KEYFILE: &str = "[connection]\nid=eth0\ntype=ethernet\ninterface-name=eth0\n\n[ipv4]\nmethod=manual\naddress1=192.168.188.21/24,192.168.188.1\ndns=192.168.188.1;\n";

fn node(
    address: [u8; 4],
    serial: &str,
    mac: &str,
    role: SwarmRole,
    files: Vec<NodeFile>,
) -> NodeEntry {
    NodeEntry {
        address: address.into(),
        mac: (!mac.is_empty()).then(|| mac.to_owned()),
        serial: (!serial.is_empty()).then(|| serial.to_owned()),
        swarm_role: role,
        files,
    }
}

fn file(path: &str, mode: u32, content: &str) -> NodeFile {
    NodeFile {
        path: path.to_owned(),
        mode,
        content: content.to_owned(),
    }
}

/// A table like the lab's: an initial manager, a second manager, two
/// workers, and the auxiliary node outside the swarm.
pub fn lab_table() -> NodeTable {
    let mut nodes = BTreeMap::new();
    let hosts = "127.0.0.1 localhost\n192.168.188.11 m1\n192.168.188.21 w1\n";
    nodes.insert(
        "m1".to_owned(),
        node(
            [192, 168, 188, 11],
            "10000000aaaa0011",
            "dc:a6:32:00:00:11",
            SwarmRole::Init,
            vec![file("/etc/hosts", 0o644, hosts)],
        ),
    );
    nodes.insert(
        "m2".to_owned(),
        node(
            [192, 168, 188, 12],
            "10000000aaaa0012",
            "dc:a6:32:00:00:12",
            SwarmRole::Manager,
            vec![],
        ),
    );
    nodes.insert(
        "w1".to_owned(),
        node(
            [192, 168, 188, 21],
            "10000000aaaa0021",
            "dc:a6:32:00:00:21",
            SwarmRole::Worker,
            vec![
                file(
                    "/etc/NetworkManager/system-connections/eth0.nmconnection",
                    0o600,
                    W1_KEYFILE,
                ),
                file("/etc/hosts", 0o644, hosts),
                file(
                    "/etc/keepalived/keepalived.conf",
                    0o640,
                    "# fake keepalived for w1\n",
                ),
            ],
        ),
    );
    nodes.insert(
        "w2".to_owned(),
        node(
            [192, 168, 188, 22],
            "10000000aaaa0022",
            "dc:a6:32:00:00:22",
            SwarmRole::Worker,
            vec![file(
                "/etc/NetworkManager/system-connections/eth0.nmconnection",
                0o600,
                "[ipv4]\nmethod=manual\naddress1=192.168.188.22/24\n",
            )],
        ),
    );
    nodes.insert(
        "aux".to_owned(),
        node(
            [192, 168, 188, 30],
            "",
            "dc:a6:32:00:00:30",
            SwarmRole::None,
            vec![file(
                "/etc/default/gpsd",
                0o644,
                "DEVICES=\"/dev/ttyAMA0 /dev/pps0\"\nGPSD_OPTIONS=\"-n\"\n",
            )],
        ),
    );
    NodeTable {
        format: TABLE_FORMAT,
        cluster: "lab".to_owned(),
        domain: "lab.example".to_owned(),
        role: "worker".to_owned(),
        build_epoch: BUILD_EPOCH,
        interface: "eth0".to_owned(),
        clock: ClockLimits {
            max_offset_ms: 100,
            max_root_distance_ms: 1000,
            wait_seconds: 30,
        },
        swarm: Swarm {
            join: vec![[192, 168, 188, 10].into(), [192, 168, 188, 11].into()],
            wait_seconds: 60,
            stacks: vec![],
            preloaded_stacks: vec![],
            images: vec![],
        },
        nodes,
    }
}

pub fn write(root: &Root, path: &str, content: impl AsRef<[u8]>) {
    let full = root.at(path);
    fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    fs::write(full, content).expect("write fixture");
}

/// Puts `table` where the builder does, on the boot partition: over the one the
/// root already has ([`card`]'s in /boot/firmware, [`pc_disk`]'s in /boot/efi),
/// else in /boot/firmware.
pub fn write_table(root: &Root, table: &NodeTable) {
    let partition = bootfiles::find(root, TABLE_FILE)
        .expect("look for the table")
        .map_or(BootPartition::PiFirmware, |found| found.partition);
    write_table_on(root, partition, table);
}

/// Puts `table` on the boot partition `partition` (`boot/firmware/pibake-nodes.toml` or
/// `boot/efi/pibake-nodes.toml` under the root).
pub fn write_table_on(root: &Root, partition: BootPartition, table: &NodeTable) {
    write(
        root,
        &partition.path_of(TABLE_FILE),
        table.to_toml().expect("table encodes"),
    );
}

pub type Ran = (
    Result<pibake_firstboot::images::Loaded, pibake_firstboot::images::ImagesError>,
    Result<pibake_firstboot::swarm::Joined, pibake_firstboot::swarm::SwarmError>,
    Option<Result<pibake_firstboot::stacks::Deployed, pibake_firstboot::stacks::StacksError>>,
    FakeRunner,
);

/// What `pibake-firstboot swarm` runs (as its main does): the images step, the swarm step, then
/// the stacks step when the swarm step succeeded.
pub fn swarm_command(root: &Root, board: &Rc<Board>) -> Ran {
    let runner = FakeRunner::new(root, board.clone());
    let clock = FakeClock::at(NOW);
    let agent = pibake_firstboot::Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    };
    let loaded = pibake_firstboot::images::run(&agent);
    let joined = pibake_firstboot::swarm::run(&agent);
    let deployed = joined
        .is_ok()
        .then(|| pibake_firstboot::stacks::run(&agent));
    (loaded, joined, deployed, runner)
}

/// Where the swarm step starts: `root` personalized by identity (as the node
/// its table gives its serial or MAC), its clock verified in this boot, its
/// docker outside any swarm.
pub fn ready_for_swarm(root: &Root, board: &Rc<Board>) -> anyhow::Result<()> {
    let runner = FakeRunner::new(root, board.clone());
    pibake_firstboot::identity::run(&pibake_firstboot::Agent {
        root: root.clone(),
        clock: &FakeClock::at(NOW),
        runner: &runner,
    })?;
    pibake_firstboot::journal::Journal::new(root).record(
        pibake_firstboot::journal::Step::Clock,
        &pibake_firstboot::journal::Record {
            outcome: pibake_firstboot::journal::Outcome::Done,
            at: NOW,
            why: "synchronized".into(),
            node: None,
            boot_id: Some("0b7c3e2a-0000-4000-8000-000000000001".into()),
        },
    )?;
    *board.swarm_state.borrow_mut() = "inactive".into();
    Ok(())
}

/// A root like a freshly flashed card in board `serial`/`mac`: node table and
/// secrets on the boot partition (/boot/firmware), kernel command line,
/// device tree serial (NUL-terminated), MAC, /etc/ssh, root device
/// information.
pub fn card(dir: &Path, serial: &str, mac: &str) -> Root {
    let root = Root::new(dir);
    common_root(&root, mac, BootPartition::PiFirmware);
    write(
        &root,
        "proc/cmdline",
        "console=tty1 root=PARTUUID=4a1b2c3d-02 rootwait\n",
    );
    write(
        &root,
        "proc/device-tree/serial-number",
        format!("{serial}\0"),
    );
    fs::create_dir_all(root.at("dev/disk/by-partuuid")).expect("mkdir");
    std::os::unix::fs::symlink(
        "../../mmcblk0p2",
        root.at("dev/disk/by-partuuid/4a1b2c3d-02"),
    )
    .expect("symlink");
    write_secrets(&root, "boot/firmware");
    root
}

/// The GPT PARTUUID of [`pc_disk`]'s root partition (partition 2).
pub const PC_ROOT_PARTUUID: &str = "6b0c3f0e-1d2a-4c5b-8e9f-0a1b2c3d4e5f";

/// A root like a pc-efi disk (GPT, ESP on /boot/efi) freshly written to an
/// x86 machine with DMI serial `serial` and wired MAC `mac`: no device tree,
/// the root on `/dev/nvme0n1p2` by GPT PARTUUID (with sysfs as the kernel has
/// it), no /boot/firmware, systemd-boot, the node table and the secrets on
/// the ESP.
pub fn pc_disk(dir: &Path, serial: &str, mac: &str) -> Root {
    let root = Root::new(dir);
    common_root(&root, mac, BootPartition::Esp);
    write(
        &root,
        "proc/cmdline",
        format!("console=tty0 console=ttyS0,115200 root=PARTUUID={PC_ROOT_PARTUUID} rootfstype=ext4 fsck.repair=yes rootwait net.ifnames=0\n"),
    );
    write(
        &root,
        "sys/class/dmi/id/product_serial",
        format!("{serial}\n"),
    );
    fs::create_dir_all(root.at("dev/disk/by-partuuid")).expect("mkdir");
    std::os::unix::fs::symlink(
        "../../nvme0n1p2",
        root.at(&format!("dev/disk/by-partuuid/{PC_ROOT_PARTUUID}")),
    )
    .expect("symlink");
    sys_block(
        &root,
        "pci0000:00/0000:00:1d.0/0000:02:00.0/nvme/nvme0",
        "nvme0n1",
        "nvme0n1p2",
        "259:2",
        2,
    );
    write(
        &root,
        "boot/efi/EFI/BOOT/BOOTX64.EFI",
        "fake systemd-boot\n",
    );
    write_secrets(&root, "boot/efi");
    root
}

/// sysfs for partition `part` (number `number`, device `majmin`) of disk
/// `disk` under /sys/devices/`parent`: the device directory in its disk's,
/// its `partition` file, and the links /sys/class/block/<part> and
/// /sys/dev/block/<majmin> the kernel makes.
pub fn sys_block(root: &Root, parent: &str, disk: &str, part: &str, majmin: &str, number: u32) {
    let devdir = format!("devices/{parent}/{disk}/{part}");
    write(
        root,
        &format!("sys/{devdir}/partition"),
        format!("{number}\n"),
    );
    write(
        root,
        &format!("sys/devices/{parent}/{disk}/size"),
        "1000215216\n",
    );
    for dir in ["sys/class/block", "sys/dev/block"] {
        fs::create_dir_all(root.at(dir)).expect("mkdir");
    }
    std::os::unix::fs::symlink(
        format!("../../{devdir}"),
        root.at(&format!("sys/class/block/{part}")),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(
        format!("../../{devdir}"),
        root.at(&format!("sys/dev/block/{majmin}")),
    )
    .expect("symlink");
}

fn common_root(root: &Root, mac: &str, boot: BootPartition) {
    write_table_on(root, boot, &lab_table());
    write(root, "sys/class/net/eth0/address", format!("{mac}\n"));
    write(root, "etc/ssh/sshd_config", "# stock\n");
    write(root, "proc/sys/kernel/hostname", "localhost\n");
    write(
        root,
        "proc/sys/kernel/random/boot_id",
        "0b7c3e2a-0000-4000-8000-000000000001\n",
    );
}

fn write_secrets(root: &Root, boot_dir: &str) {
    write(
        root,
        &format!("{boot_dir}/pibake-secrets.toml"),
        format!(
            "swarm_worker_token = \"{WORKER_TOKEN}\"\nswarm_manager_token = \"{MANAGER_TOKEN}\"\n"
        ),
    );
}

/// The fake board's clock: fixed wall time, elapsed time moves on sleep.
#[derive(Debug)]
pub struct FakeClock {
    pub wall: Cell<u64>,
    pub elapsed: Cell<Duration>,
}

impl FakeClock {
    pub fn at(wall: u64) -> Self {
        FakeClock {
            wall: Cell::new(wall),
            elapsed: Cell::new(Duration::ZERO),
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.wall.get())
    }
    fn elapsed(&self) -> Duration {
        self.elapsed.get()
    }
    fn sleep(&self, d: Duration) {
        self.elapsed.set(self.elapsed.get() + d);
        self.wall.set(self.wall.get() + d.as_secs());
    }
}

/// State of the fake board that outlives one run (it is on the "disk").
#[derive(Debug)]
pub struct Board {
    /// The disk growpart is asked to grow (partition 2 of it); `/dev/mmcblk0` by default.
    pub root_disk: RefCell<String>,
    pub partition_grown: Cell<bool>,
    pub swarm_state: RefCell<String>,
    /// Answers of successive `docker swarm join` calls (exit code, stderr);
    /// when empty, joins succeed.
    pub join_answers: RefCell<VecDeque<(i32, String)>>,
    /// Answers of successive `chronyc -c tracking` calls; the last repeats.
    pub tracking: RefCell<VecDeque<String>>,
    pub ntp_synchronized: Cell<bool>,
    /// Answers of successive `docker stack deploy` calls (exit code,
    /// stderr); when empty, a deploy on an active swarm of an existing
    /// compose file succeeds.
    pub deploy_answers: RefCell<VecDeque<(i32, String)>>,
    /// The stacks deployed on the swarm, by name (a deploy again is harmless).
    pub stacks: RefCell<std::collections::BTreeSet<String>>,
    /// The stacks deployed with `--resolve-image never`, by name.
    pub unresolved: RefCell<std::collections::BTreeSet<String>>,
    /// Answers of successive `docker load` calls (exit code, stderr); when
    /// empty, loading an existing archive succeeds.
    pub load_answers: RefCell<VecDeque<(i32, String)>>,
    /// The images the engine holds, by tag (loading again only tags again).
    pub images: RefCell<std::collections::BTreeSet<String>>,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            root_disk: RefCell::new("/dev/mmcblk0".to_owned()),
            partition_grown: Cell::default(),
            swarm_state: RefCell::default(),
            join_answers: RefCell::default(),
            tracking: RefCell::default(),
            ntp_synchronized: Cell::default(),
            deploy_answers: RefCell::default(),
            stacks: RefCell::default(),
            unresolved: RefCell::default(),
            load_answers: RefCell::default(),
            images: RefCell::default(),
        }
    }
}

impl Board {
    /// A board whose root is partition 2 of `disk`.
    pub fn with_root_disk(disk: &str) -> Self {
        Board {
            root_disk: RefCell::new(disk.to_owned()),
            ..Board::default()
        }
    }

    /// The root partition's device, as the kernel names partition 2 of [`Board::root_disk`].
    pub fn root_partition(&self) -> String {
        let disk = self.root_disk.borrow();
        if disk.ends_with(|c: char| c.is_ascii_digit()) {
            format!("{disk}p2")
        } else {
            format!("{disk}2")
        }
    }
}

/// Plays the system commands the agent runs, and records them (argv, with
/// secrets, so tests can check what really ran).
#[derive(Debug)]
pub struct FakeRunner {
    pub root: Root,
    pub board: Rc<Board>,
    pub ran: RefCell<Vec<Vec<String>>>,
}

impl FakeRunner {
    pub fn new(root: &Root, board: Rc<Board>) -> Self {
        FakeRunner {
            root: root.clone(),
            board,
            ran: RefCell::new(Vec::new()),
        }
    }

    pub fn programs(&self) -> Vec<String> {
        self.ran.borrow().iter().map(|a| a.join(" ")).collect()
    }
}

fn ok(stdout: &str) -> Output {
    Output {
        code: Some(0),
        stdout: stdout.to_owned(),
        stderr: String::new(),
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output> {
        let argv: Vec<String> = cmd.argv().iter().map(|s| s.to_string()).collect();
        self.ran.borrow_mut().push(argv.clone());
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(match args.as_slice() {
            ["ssh-keygen", "-A", "-f", prefix] => {
                // Like ssh-keygen -A: create only missing keys.
                for kind in ["rsa", "ecdsa", "ed25519"] {
                    let key = Path::new(prefix).join(format!("etc/ssh/ssh_host_{kind}_key"));
                    if !key.exists() {
                        fs::write(&key, format!("fake {kind} private key\n"))?;
                        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
                        let public = key.with_file_name(format!("ssh_host_{kind}_key.pub"));
                        fs::write(public, format!("ssh-{kind} FAKE\n"))?;
                    }
                }
                ok("")
            }
            ["growpart", disk, "2"] if self.board.root_disk.borrow().as_str() == *disk => {
                if self.board.partition_grown.replace(true) {
                    Output {
                        code: Some(1),
                        stdout: "NOCHANGE: partition 2 is size 61000000. it cannot be grown\n"
                            .to_owned(),
                        stderr: String::new(),
                    }
                } else {
                    ok("CHANGED: partition=2 start=1050624 old: size=4194304 end=5244928 new: size=61000000 end=62050624\n")
                }
            }
            ["resize2fs", part] if self.board.root_partition().as_str() == *part => ok(""),
            ["chronyc", "-c", "tracking"] => {
                let mut answers = self.board.tracking.borrow_mut();
                let line = if answers.len() > 1 {
                    answers.pop_front().unwrap_or_default()
                } else {
                    answers.front().cloned().unwrap_or_default()
                };
                ok(&line)
            }
            ["timedatectl", "show", "--property=NTPSynchronized", "--value"] => {
                ok(if self.board.ntp_synchronized.get() {
                    "yes\n"
                } else {
                    "no\n"
                })
            }
            ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"] => {
                ok(&format!("{}\n", self.board.swarm_state.borrow()))
            }
            ["docker", "swarm", "init", ..] => {
                *self.board.swarm_state.borrow_mut() = "active".to_owned();
                ok("Swarm initialized\n")
            }
            ["docker", "swarm", "join", ..] => {
                match self.board.join_answers.borrow_mut().pop_front() {
                    Some((code, stderr)) => Output {
                        code: Some(code),
                        stdout: String::new(),
                        stderr,
                    },
                    None => {
                        *self.board.swarm_state.borrow_mut() = "active".to_owned();
                        ok("This node joined a swarm as a worker.\n")
                    }
                }
            }
            ["docker", "load", "--input", archive] => {
                if let Some((code, stderr)) = self.board.load_answers.borrow_mut().pop_front() {
                    Output {
                        code: Some(code),
                        stdout: String::new(),
                        stderr,
                    }
                } else if !Path::new(archive).is_file() {
                    Output {
                        code: Some(1),
                        stdout: String::new(),
                        stderr: format!("open {archive}: no such file or directory\n"),
                    }
                } else {
                    // The fake's archives hold the image `localhost/<stem>:1`.
                    let stem = Path::new(archive)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let tag = format!("localhost/{stem}:1");
                    self.board.images.borrow_mut().insert(tag.clone());
                    ok(&format!("Loaded image: {tag}\n"))
                }
            }
            ["docker", "stack", "deploy", "--compose-file", file, "--resolve-image", "never", name] =>
            {
                self.board
                    .unresolved
                    .borrow_mut()
                    .insert((*name).to_owned());
                self.deploy(file, name)
            }
            ["docker", "stack", "deploy", "--compose-file", file, name] => self.deploy(file, name),
            _ => Output {
                code: Some(127),
                stdout: String::new(),
                stderr: format!("fake runner does not know {}", argv.join(" ")),
            },
        })
    }
}

impl FakeRunner {
    /// A `docker stack deploy` of `file` as stack `name`.
    fn deploy(&self, file: &str, name: &str) -> Output {
        let fail = |stderr: String| Output {
            code: Some(1),
            stdout: String::new(),
            stderr,
        };
        if let Some((code, stderr)) = self.board.deploy_answers.borrow_mut().pop_front() {
            Output {
                code: Some(code),
                stdout: String::new(),
                stderr,
            }
        } else if self.board.swarm_state.borrow().as_str() != "active" {
            fail("this node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again\n".to_owned())
        } else if !Path::new(file).is_file() {
            fail(format!("open {file}: no such file or directory\n"))
        } else {
            self.board.stacks.borrow_mut().insert(name.to_owned());
            ok(&format!(
                "Creating network {name}_default\nCreating service {name}_web\n"
            ))
        }
    }
}

/// A tree: path → (type, mode, uid, gid, content or link target).
pub type Tree = BTreeMap<String, (char, u32, u32, u32, Vec<u8>)>;

/// Everything in a tree.
pub fn snapshot(dir: &Path) -> Tree {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let rel = path
                .strip_prefix(dir)
                .expect("under dir")
                .display()
                .to_string();
            let (kind, content) = if meta.file_type().is_symlink() {
                (
                    'l',
                    fs::read_link(&path)
                        .expect("link")
                        .display()
                        .to_string()
                        .into_bytes(),
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                ('d', Vec::new())
            } else {
                ('f', fs::read(&path).expect("read"))
            };
            out.insert(
                rel,
                (kind, meta.mode() & 0o7777, meta.uid(), meta.gid(), content),
            );
        }
    }
    out
}

/// Everything in a tree plus file mtimes: "changes nothing" means nothing.
pub fn snapshot_with_mtimes(dir: &Path) -> BTreeMap<String, (String, i64, i64)> {
    snapshot(dir)
        .into_iter()
        .map(|(path, v)| {
            let meta = fs::symlink_metadata(dir.join(&path)).expect("metadata");
            (path, (format!("{v:?}"), meta.mtime(), meta.mtime_nsec()))
        })
        .collect()
}

pub fn tracking_line(
    refid: &str,
    name: &str,
    offset: f64,
    delay: f64,
    dispersion: f64,
    leap: &str,
) -> String {
    format!("{refid},{name},1,1760000000.000000000,{offset:.9},0.000000100,0.000000200,-1.234,0.000,0.010,{delay:.9},{dispersion:.9},16.0,{leap}\n")
}
