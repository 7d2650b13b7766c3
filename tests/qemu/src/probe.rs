//! The test probe: a unit and a script that exist only on the kernel command
//! line the test passes (systemd credentials: `systemd.extra-unit.*` makes
//! the unit, `ImportCredential=` hands it the script). Nothing is baked into
//! the image. It runs after multi-user.target, writes a report to a virtio
//! serial port (kept apart from the console, so lines never interleave) and
//! powers the VM off. A second port carries the test's word the other way
//! ([`GO`], see [`crate::vm::Vm::go`]): a probe that waits for it keeps its
//! VM up for as long as another VM's step needs it.

use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Name of the virtio serial port the probe writes to.
pub const PORT: &str = "pibake.probe";
/// Name of the virtio serial port the probe reads the test's word from.
pub const CONTROL_PORT: &str = "pibake.control";
/// The word that lets a waiting probe go on (one line).
pub const GO: &str = "go";
/// Name of the probe unit.
pub const UNIT: &str = "pibake-probe.service";
/// Name of the credential holding the probe script.
const SCRIPT_CREDENTIAL: &str = "pibake.probe.sh";

/// Marks the start of a section in the report: `@@ <name>`.
const MARK: &str = "@@ ";

const UNIT_TEXT: &str = "\
[Unit]
Description=pibake test probe (kernel command line only)
After=multi-user.target
SuccessAction=poweroff
FailureAction=poweroff
[Service]
Type=oneshot
ImportCredential=pibake.probe.sh
ExecStart=/bin/sh ${CREDENTIALS_DIRECTORY}/pibake.probe.sh
TimeoutStartSec=infinity
";

/// Opens the port, then the common report.
const PRELUDE: &str = "\
o=/dev/virtio-ports/pibake.probe
modprobe virtio_console
i=0;while [ ! -e $o ]&&[ $i -lt 60 ];do sleep 1;i=$((i+1));done
s(){ echo \"@@ $1\";}
";

// Opens the control port at once: the guest's driver drops what the host
// sends to a port nobody has open. A read gives end-of-file while the test
// is not connected, hence the loop.
const OPEN_CONTROL: &str = "exec 3</dev/virtio-ports/pibake.control\n";
const WAIT_GO: &str = "until read -r g <&3&&[ \"$g\" = go ];do sleep 1;done\n";

// What every probe ends with: the report, then (the unit's SuccessAction)
// power-off.
const REPORT: &str = "\
{ s failed;systemctl --failed --no-legend --plain
s status;pibake-firstboot status --json
s addr;ip -4 -o addr show
s hostname;hostname
s arch;uname -m
s clock;date +%s.%N;cut -d' ' -f1 /proc/uptime;chronyc -n tracking
s end;} >$o 2>&1
";

// Before a plain [`Probe::Report`]: a VIP holder takes its address a few
// VRRP adverts after its track script first succeeds (FACTS.md: about 3.5 s
// at 1 s), which can be after multi-user. A node whose keepalived runs and
// that reports this way is meant to hold the VIP (no ring test boots one so
// today: the masters report through the Swarm probes; on workers and the aux
// node, which have no keepalived.conf, this waits for nothing): wait for
// exactly that state, the
// VIP its keepalived.conf names on eth0 (or keepalived no longer running).
// The bound is only a guard so that a broken node still reports (the test
// then fails naming the missing VIP); no passing run comes near it. The
// other probes need no such wait: the Swarm tests wait for the VIP
// themselves (ping), and a standby waits for it before its report.
const VIP_WAIT: &str = "\
v=$(grep -som1 '[0-9.]*/[0-9]* dev' /etc/keepalived/keepalived.conf);t=0
while [ \"$v\" ]&&systemctl -q is-active keepalived&&! ip -4 -o addr show eth0|grep -q \" inet ${v%/*}/\"&&[ $t -lt 600 ];do sleep 1;t=$((t+1));done
";

/// How long a [`Probe::Member`] waits for its node to join, seconds (the
/// agent's own retries end well before).
const MEMBER_JOIN_WAIT: u64 = 900;

/// Waits (bounded) until the local Swarm node is active or the agent's
/// Swarm step failed.
fn swarm_active(wait_secs: u64) -> String {
    format!(
        "t=0;until [ \"$(docker info -f '{{{{.Swarm.LocalNodeState}}}}')\" = active ]||systemctl -q is-failed pibake-swarm||[ $t -ge {wait_secs} ];do sleep 5;t=$((t+5));done\n"
    )
}

/// What the probe does before its report.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Report and power off.
    Report,
    /// On the first Swarm manager: once the swarm is active, report the
    /// worker and manager join tokens (what an operator reads to flash the
    /// other boards' boot partitions). Then, for k = 2 to `nodes`, section
    /// `ready<k>` lists the nodes (`docker node ls`) once k of them are
    /// Ready, so the test awaits each join in turn; then `nodes`, the
    /// report, and power-off, or with `hold` stay up until the test pulls
    /// the plug. It polls `docker node ls` every 10 s: the docker client
    /// is costly under emulation, and the other VMs boot beside it.
    SwarmManager {
        nodes: u32,
        wait: Duration,
        hold: bool,
    },
    /// On a node that joins the swarm: once its swarm is active or its Swarm
    /// step failed, section `joined` says its local node state; then it
    /// waits for the test's [`GO`] (sent once the manager lists it Ready),
    /// reports and powers off. Its VM stays up while the manager needs it.
    Member,
    /// On a standby VIP holder: once its swarm step is done and keepalived is
    /// BACKUP, say `standby`; then wait for the test's [`GO`] (sent when it
    /// pulls the holder's plug), then until the VIP is on eth0, say `vip`,
    /// report and power off. It never powers off before the test says so:
    /// a VIP that moves early is the test's finding, not the end of the
    /// Swarm's majority.
    Standby {
        vip: std::net::Ipv4Addr,
        wait: Duration,
    },
    /// On the GPS node: once chrony has selected a source (bounded by
    /// `wait`), section `gps` holds `chronyc -n sources`, then the report.
    GpsServer { wait: Duration },
    /// The inner probe, but the VM stays up after its report, until the
    /// test presses the power button or pulls the plug.
    Hold(Box<Probe>),
}

impl Probe {
    fn script(&self) -> String {
        match self {
            Probe::Report => format!("{PRELUDE}{VIP_WAIT}{REPORT}"),
            Probe::SwarmManager { nodes, wait, hold } => {
                let w = wait.as_secs();
                let hold = if *hold { "sleep infinity\n" } else { "" };
                format!(
                    "{PRELUDE}{SWARM_ACTIVE}\
{{ s token;docker swarm join-token -q worker;s mtoken;docker swarm join-token -q manager;s joining;}} >$o 2>&1
l(){{ docker node ls --format '{{{{.Hostname}}}} {{{{.Status}}}} {{{{.ManagerStatus}}}}';}}
k=2;t=0;while [ $k -le {nodes} ]&&[ $t -lt {w} ];do
if [ $(l|grep -c ' Ready') -ge $k ];then {{ s ready$k;l;s ok;}} >$o;k=$((k+1));else sleep 10;t=$((t+10));fi;done
{{ s nodes;l;}} >$o
{REPORT}{hold}",
                    SWARM_ACTIVE = swarm_active(w),
                )
            }
            Probe::Member => format!(
                "{PRELUDE}{OPEN_CONTROL}{SWARM_ACTIVE}\
{{ s joined;docker info -f '{{{{.Swarm.LocalNodeState}}}}';s waiting;}} >$o 2>&1
{WAIT_GO}{REPORT}",
                SWARM_ACTIVE = swarm_active(MEMBER_JOIN_WAIT),
            ),
            Probe::Standby { vip, wait } => {
                let w = wait.as_secs();
                format!(
                    "{PRELUDE}{OPEN_CONTROL}{SWARM_ACTIVE}\
t=0;until journalctl -b -u keepalived|grep -q 'Entering BACKUP'||[ $t -ge {w} ];do sleep 2;t=$((t+2));done
{{ s standby;s waiting;}} >$o
{WAIT_GO}t=0;until ip -4 -o addr show eth0|grep -q ' inet {vip}/'||[ $t -ge {w} ];do sleep 1;t=$((t+1));done
{{ s vip;journalctl -b -u keepalived -o cat|grep -F '(';s waited;}} >$o 2>&1
{REPORT}",
                    SWARM_ACTIVE = swarm_active(w),
                )
            }
            Probe::GpsServer { wait } => format!(
                "{PRELUDE}t=0;until chronyc -n sources|grep -q '^.\\*'||[ $t -ge {w} ];do sleep 2;t=$((t+2));done
{{ s gps;chronyc -n sources;s gpsd;journalctl -b -u gpsd -o cat|tail -n5;}} >$o 2>&1
{REPORT}",
                w = wait.as_secs()
            ),
            Probe::Hold(inner) => format!("{}sleep infinity\n", inner.script()),
        }
    }

    /// The probe's two system credentials (name, bytes): its unit, which
    /// systemd's debug generator installs (`systemd.extra-unit.*`), and its
    /// script, which the unit imports.
    pub fn credentials(&self) -> [(String, Vec<u8>); 2] {
        [
            (
                format!("systemd.extra-unit.{UNIT}"),
                UNIT_TEXT.as_bytes().to_vec(),
            ),
            (SCRIPT_CREDENTIAL.to_owned(), self.script().into_bytes()),
        ]
    }

    /// The kernel argument that starts the probe's unit (its credentials
    /// come by [`Probe::kernel_args`] or by [`Probe::smbios_credentials`]).
    pub fn wants_arg() -> String {
        format!("systemd.wants={UNIT}")
    }

    /// The kernel command-line arguments that install and start the probe
    /// (arm64: QEMU loads the kernel and takes any command line).
    pub fn kernel_args(&self) -> Vec<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut args: Vec<String> = self
            .credentials()
            .iter()
            .map(|(name, bytes)| {
                format!("systemd.set_credential_binary={name}:{}", b64.encode(bytes))
            })
            .collect();
        args.push(Self::wants_arg());
        args
    }

    /// The probe's credentials as SMBIOS Type 11 strings, which systemd
    /// imports as system credentials like those of the command line
    /// (systemd.system-credentials(7)): a pc-efi guest's command line is
    /// systemd-boot's, at most 2047 bytes, too short for the scripts.
    pub fn smbios_credentials(&self) -> Vec<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.credentials()
            .iter()
            .map(|(name, bytes)| {
                format!(
                    "type=11,value=io.systemd.credential.binary:{name}={}",
                    b64.encode(bytes)
                )
            })
            .collect()
    }
}

/// One step of `pibake-firstboot status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StepStatus {
    pub step: String,
    pub state: String,
    /// Unix seconds of the board's clock when the step was journaled.
    #[serde(default)]
    pub at: Option<u64>,
    pub why: String,
    #[serde(default)]
    pub node: Option<String>,
}

/// The probe's report, by section.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sections: BTreeMap<String, String>,
}

impl Report {
    /// Parses the text of the probe port. The last section of a name wins.
    pub fn parse(text: &str) -> Self {
        let mut sections = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix(MARK) {
                if let Some((n, body)) = current.take() {
                    sections.insert(n, body);
                }
                current = Some((name.trim().to_owned(), String::new()));
            } else if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        if let Some((n, body)) = current {
            sections.insert(n, body);
        }
        Report { sections }
    }

    /// Whether the report is complete (its last section was written).
    pub fn complete(&self) -> bool {
        self.sections.contains_key("end")
    }

    pub fn section(&self, name: &str) -> Option<&str> {
        self.sections.get(name).map(String::as_str)
    }

    /// Failed units (`systemctl --failed`), by unit name.
    pub fn failed_units(&self) -> Vec<String> {
        self.section("failed")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|u| u.contains('.'))
            .map(str::to_owned)
            .collect()
    }

    /// The agent's status, `None` when the JSON is missing or invalid.
    pub fn status(&self) -> Option<Vec<StepStatus>> {
        serde_json::from_str(self.section("status")?).ok()
    }

    pub fn step(&self, step: &str) -> Option<StepStatus> {
        self.status()?.into_iter().find(|s| s.step == step)
    }

    /// IPv4 addresses on `dev` (`ip -4 -o addr`), without prefix length.
    pub fn addresses(&self, dev: &str) -> Vec<String> {
        self.section("addr")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.get(1) == Some(&dev) && w.get(2) == Some(&"inet"))
                    .then(|| w.get(3).and_then(|a| a.split('/').next()))
                    .flatten()
                    .map(str::to_owned)
            })
            .collect()
    }

    pub fn hostname(&self) -> Option<String> {
        self.section("hostname").map(|s| s.trim().to_owned())
    }

    /// The machine's architecture as `uname -m` says it (`x86_64`, `aarch64`).
    pub fn arch(&self) -> Option<String> {
        self.section("arch").map(|s| s.trim().to_owned())
    }
}

/// The `clock` section: the guest's clock when it reported, and what its
/// chrony says of it (`chronyc -n tracking`).
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    /// `date +%s.%N`.
    pub unix: f64,
    /// Seconds since the guest's kernel started (/proc/uptime).
    pub uptime: f64,
    /// `Reference ID`'s name: an address, or a refclock's refid (`NMEA`).
    pub reference: String,
    /// `System time`: how far the clock is ahead (+) or behind (-) of
    /// chrony's estimate of true time, seconds.
    pub system_offset: f64,
    /// `Root delay` / 2 + `Root dispersion`, seconds: chrony's bound on
    /// the error to the stratum-0 source.
    pub root_distance: f64,
    /// `Leap status` (`Normal`, `Not synchronised`).
    pub leap: String,
}

impl Clock {
    pub fn parse(section: &str) -> Option<Self> {
        let mut lines = section.lines();
        let unix = lines.next()?.trim().parse().ok()?;
        let uptime = lines.next()?.trim().parse().ok()?;
        let fields: BTreeMap<&str, &str> = lines
            .filter_map(|l| l.split_once(" : "))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let secs =
            |key: &str| -> Option<f64> { fields.get(key)?.split_whitespace().next()?.parse().ok() };
        let system = fields.get("System time")?;
        let sign = if system.contains("slow") { -1.0 } else { 1.0 };
        let reference = fields.get("Reference ID")?;
        let reference = reference
            .split_once('(')
            .map_or(*reference, |(_, r)| r.trim_end_matches(')'))
            .to_owned();
        Some(Clock {
            unix,
            uptime,
            reference,
            system_offset: sign * secs("System time")?,
            root_distance: secs("Root delay")? / 2.0 + secs("Root dispersion")?,
            leap: fields.get("Leap status")?.to_string(),
        })
    }
}

impl Report {
    /// The `clock` section, parsed.
    pub fn clock(&self) -> Option<Clock> {
        Clock::parse(self.section("clock")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_clock_section() {
        let text = "1796361462.250000000\n12.34\n\
Reference ID    : C0A8BC14 (192.168.188.20)\n\
Stratum         : 2\n\
System time     : 0.000123000 seconds slow of NTP time\n\
Root delay      : 0.002000 seconds\n\
Root dispersion : 0.010000 seconds\n\
Leap status     : Normal\n";
        let c = Clock::parse(text).expect("parsed");
        assert_eq!(c.reference, "192.168.188.20");
        assert!((c.system_offset + 0.000123).abs() < 1e-9);
        assert!((c.root_distance - 0.011).abs() < 1e-9);
        assert_eq!((c.unix, c.uptime), (1_796_361_462.25, 12.34));
        assert_eq!(c.leap, "Normal");
        let nmea = text.replace("C0A8BC14 (192.168.188.20)", "4E4D4541 (NMEA)");
        assert_eq!(Clock::parse(&nmea).expect("test setup").reference, "NMEA");
        // chronyc without a daemon prints no table: no reading.
        assert!(Clock::parse("1796361462.25\n12.3\n506 Cannot talk to daemon\n").is_none());
    }

    #[test]
    fn parses_sections() {
        let text = "noise\n@@ failed\npibake-swarm.service loaded failed failed pibake Swarm\n\
            @@ status\n[{\"step\":\"identity\",\"state\":\"done\",\"at\":1,\"at_utc\":\"x\",\"why\":\"w\",\"node\":\"worker1\"}]\n\
            @@ addr\n2: eth0    inet 192.168.188.21/24 brd 192.168.188.255 scope global eth0\\n\n\
            @@ hostname\nworker1\n@@ end\n";
        let r = Report::parse(text);
        assert!(r.complete());
        assert_eq!(r.failed_units(), vec!["pibake-swarm.service"]);
        assert_eq!(r.addresses("eth0"), vec!["192.168.188.21"]);
        assert_eq!(r.hostname().as_deref(), Some("worker1"));
        let id = r.step("identity").expect("identity step");
        assert_eq!(id.node.as_deref(), Some("worker1"));
        assert_eq!(id.state, "done");
    }

    #[test]
    fn incomplete_report_is_not_complete() {
        let r = Report::parse("@@ failed\n@@ status\n[");
        assert!(!r.complete());
        assert!(r.status().is_none());
        assert!(r.failed_units().is_empty());
    }

    #[test]
    fn kernel_args_fit_the_command_line() {
        let wait = Duration::from_secs(900);
        for probe in [
            Probe::Report,
            Probe::SwarmManager {
                nodes: 2,
                wait,
                hold: true,
            },
            Probe::Standby {
                vip: std::net::Ipv4Addr::new(192, 168, 188, 2),
                wait,
            },
            Probe::Member,
            Probe::GpsServer { wait },
            Probe::Hold(Box::new(Probe::Standby {
                vip: std::net::Ipv4Addr::new(192, 168, 188, 2),
                wait,
            })),
        ] {
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(probe.script())
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "{probe:?}: not valid sh: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                probe.script()
            );
            let len: usize = probe.kernel_args().iter().map(|a| a.len() + 1).sum();
            // arm64 COMMAND_LINE_SIZE is 2048; leave room for the ~200 bytes
            // of root=, console= and the rest (Vm::start checks the whole).
            assert!(len < 1800, "{probe:?}: probe arguments take {len} bytes");
        }
        let manager = Probe::SwarmManager {
            nodes: 2,
            wait,
            hold: true,
        };
        assert!(manager.script().contains("{{.Swarm.LocalNodeState}}"));
        assert!(manager.script().ends_with("sleep infinity\n"));
        let standby = Probe::Standby {
            vip: std::net::Ipv4Addr::new(10, 0, 0, 9),
            wait,
        };
        assert!(standby.script().contains("grep -q ' inet 10.0.0.9/'"));
        // The standby waits for the test's word before it watches the VIP.
        let standby = standby.script();
        assert!(standby.find(OPEN_CONTROL) < standby.find("s standby"));
        assert!(standby.find(WAIT_GO) < standby.find("s vip"));
        let member = Probe::Member.script();
        assert!(WAIT_GO.contains(&format!("= {GO} ]")));
        assert!(member.contains(CONTROL_PORT) && member.contains(WAIT_GO));
        // The control port is open before the test is told to send.
        assert!(member.find(OPEN_CONTROL) < member.find("s joined"));
        // A plain report waits for the VIP its keepalived.conf names (on a
        // node without one, not at all) before it reports.
        let report = Probe::Report.script();
        let wait_at = report.find(VIP_WAIT).expect("the VIP wait");
        assert!(report.find(REPORT).is_some_and(|at| wait_at < at));
        assert!(VIP_WAIT.contains("keepalived.conf") && !VIP_WAIT.contains("-ge 2"));
        // A held probe reports, then stays up.
        let held = Probe::Hold(Box::new(Probe::Member)).script();
        assert!(held.starts_with(&Probe::Member.script()) && held.ends_with("sleep infinity\n"));
        // The GPS server waits for chrony's selected source ("^*" / "#*").
        let gps = Probe::GpsServer { wait }.script();
        assert!(gps.contains("grep -q '^.\\*'"), "{gps}");
    }
}
