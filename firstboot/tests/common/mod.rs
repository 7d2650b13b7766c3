//! Fakes and fixtures shared by the agent's host tests: a temporary root laid
//! out like a Pi's, a clock that only moves when told, a command runner that
//! plays ssh-keygen, growpart, resize2fs, chronyc, timedatectl and docker.
#![allow(dead_code)]

use pibake_firstboot::root::Root;
use pibake_firstboot::system::{Clock, Cmd, CommandRunner, Output};
use pibake_firstboot::table::{
    ClockLimits, NodeEntry, NodeFile, NodeTable, Swarm, SwarmRole, TABLE_FORMAT, TABLE_PATH,
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
        },
        nodes,
    }
}

pub fn write(root: &Root, path: &str, content: impl AsRef<[u8]>) {
    let full = root.at(path);
    fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    fs::write(full, content).expect("write fixture");
}

pub fn write_table(root: &Root, table: &NodeTable) {
    write(root, TABLE_PATH, table.to_toml().expect("table encodes"));
}

/// A root like a freshly flashed card in board `serial`/`mac`: table,
/// kernel command line, device tree serial (NUL-terminated), MAC, /etc/ssh,
/// root device information, secrets on the boot partition.
pub fn card(dir: &Path, serial: &str, mac: &str) -> Root {
    let root = Root::new(dir);
    write_table(&root, &lab_table());
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
    write(&root, "sys/class/net/eth0/address", format!("{mac}\n"));
    write(&root, "etc/ssh/sshd_config", "# stock\n");
    write(&root, "proc/sys/kernel/hostname", "localhost\n");
    write(
        &root,
        "proc/sys/kernel/random/boot_id",
        "0b7c3e2a-0000-4000-8000-000000000001\n",
    );
    fs::create_dir_all(root.at("dev/disk/by-partuuid")).expect("mkdir");
    std::os::unix::fs::symlink(
        "../../mmcblk0p2",
        root.at("dev/disk/by-partuuid/4a1b2c3d-02"),
    )
    .expect("symlink");
    write(
        &root,
        "boot/firmware/pibake-secrets.toml",
        format!(
            "swarm_worker_token = \"{WORKER_TOKEN}\"\nswarm_manager_token = \"{MANAGER_TOKEN}\"\n"
        ),
    );
    root
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
#[derive(Debug, Default)]
pub struct Board {
    pub partition_grown: Cell<bool>,
    pub swarm_state: RefCell<String>,
    /// Answers of successive `docker swarm join` calls (exit code, stderr);
    /// when empty, joins succeed.
    pub join_answers: RefCell<VecDeque<(i32, String)>>,
    /// Answers of successive `chronyc -c tracking` calls; the last repeats.
    pub tracking: RefCell<VecDeque<String>>,
    pub ntp_synchronized: Cell<bool>,
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
            ["growpart", "/dev/mmcblk0", "2"] => {
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
            ["resize2fs", "/dev/mmcblk0p2"] => ok(""),
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
            _ => Output {
                code: Some(127),
                stdout: String::new(),
                stderr: format!("fake runner does not know {}", argv.join(" ")),
            },
        })
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
