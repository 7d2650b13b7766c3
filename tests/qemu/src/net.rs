//! The test's own L2 segment: a network namespace with a bridge and one tap
//! per VM. The host side of the bridge gets lab addresses only inside the
//! namespace, so no traffic leaves it. A chronyd can serve time from there.

use crate::tool::{self, CHRONYD, IP};
use crate::{io_err, HarnessError, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Name of the bridge inside the namespace.
pub const BRIDGE: &str = "br0";

/// Namespaces are named `<PREFIX><pid of the test process>-<n>`.
const PREFIX: &str = "pibake-qemu-";

/// Removes what a test process killed by a signal left behind (Drop never
/// ran): its namespaces, and the QEMUs and chronyds still inside them.
fn reap_stale() -> Result<()> {
    let list = tool::run(IP.command()?.args(["netns", "list"]))?;
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(owner) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if Path::new("/proc").join(owner).exists() {
            continue;
        }
        let pids = tool::run(IP.command()?.args(["netns", "pids", name]))?;
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        log::warn!("removed namespace {name} left by a killed test run");
        tool::run(IP.command()?.args(["netns", "del", name]))?;
    }
    Ok(())
}

/// A network namespace with a bridge; deleted on drop (with its taps).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    taps: AtomicU32,
}

impl NetNs {
    /// Creates the namespace and its bridge, with `addresses` (`a.b.c.d/len`)
    /// on the bridge.
    pub fn create(addresses: &[&str]) -> Result<Self> {
        IP.require()?;
        reap_stale()?;
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        tool::run(IP.command()?.args(["netns", "add", &name]))?;
        // From here on, drop removes the namespace even if setup fails.
        let ns = NetNs {
            name,
            taps: AtomicU32::new(0),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        for addr in addresses {
            ns.ip(&["addr", "add", addr, "dev", BRIDGE])?;
        }
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let out = tool::run(IP.command()?.args(["-n", &self.name]).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command run inside the namespace (`ip netns exec`, which execs:
    /// the child's pid is the program's).
    pub fn command(&self, program: &str) -> Result<Command> {
        let mut cmd = IP.command()?;
        cmd.args(["netns", "exec", &self.name, program]);
        Ok(cmd)
    }

    /// Adds a tap on the bridge and returns its name.
    pub fn add_tap(&self) -> Result<String> {
        let tap = format!("tap{}", self.taps.fetch_add(1, Ordering::Relaxed));
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", BRIDGE])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Whether `addr` answers one ping from the host side within `wait`.
    pub fn ping(&self, addr: Ipv4Addr, wait: Duration) -> Result<bool> {
        let secs = wait.as_secs().max(1).to_string();
        let status = self
            .command("ping")?
            .args(["-c", "1", "-W", &secs, &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| HarnessError::Spawn {
                command: "ping".to_owned(),
                source,
            })?;
        Ok(status.success())
    }
}

impl NetNs {
    /// How far `server`'s NTP time is from the host's clock, seconds
    /// (server minus host, up to the sign chrony prints), measured from
    /// inside the namespace by `chronyd -Q` (a client that only measures:
    /// the host clock is never touched) from four samples.
    pub fn ntp_offset(&self, server: Ipv4Addr) -> Result<f64> {
        // chronyd removes its pidfile when it exits: a private one, never a
        // shared path (`pidfile /dev/null` deleted the host's /dev/null).
        let dir = tempfile::Builder::new()
            .prefix("pibake-ntp-")
            .tempdir()
            .map_err(io_err("temporary directory"))?;
        let mut cmd = self.command(CHRONYD.name)?;
        cmd.args(["-Q", "-t", "60", "-u", "root"])
            .arg(format!("server {server} iburst maxsamples 4"))
            .arg(format!(
                "pidfile {}",
                dir.path().join("chronyd.pid").display()
            ));
        let command = tool::describe(&cmd);
        let out = tool::run(&mut cmd)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_clock_wrong(&text).ok_or_else(|| {
            HarnessError::Invalid(format!("`{command}` measured no offset: {}", text.trim()))
        })
    }
}

/// The `X` of chronyd -Q's "System clock wrong by X seconds".
fn parse_clock_wrong(text: &str) -> Option<f64> {
    let rest = text.split("System clock wrong by ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(mut cmd) = IP.command() {
            let _ = cmd
                .args(["netns", "del", &self.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A chronyd serving time inside a namespace. It never touches the host
/// clock (`-x`) and has no command socket. Killed on drop.
#[derive(Debug)]
pub struct TimeServer {
    child: Child,
    log: PathBuf,
}

impl TimeServer {
    /// Starts chronyd bound to `addr` (an address of the namespace's bridge),
    /// serving `subnet`. It answers as a stratum-8 server from the host's
    /// clock (`local stratum`): to a client that is a real reference.
    pub fn start(ns: &NetNs, addr: Ipv4Addr, subnet: &str, dir: &Path) -> Result<Self> {
        CHRONYD.require()?;
        let conf = dir.join("chronyd.conf");
        let log = dir.join("chronyd.log");
        let text = format!(
            "# Test time server of pibake's QEMU tests.\n\
             bindaddress {addr}\n\
             allow {subnet}\n\
             local stratum 8\n\
             cmdport 0\n\
             bindcmdaddress /\n\
             pidfile {}\n",
            dir.join("chronyd.pid").display()
        );
        std::fs::write(&conf, text).map_err(io_err(&conf))?;
        let logfile = std::fs::File::create(&log).map_err(io_err(&log))?;
        let errfile = logfile.try_clone().map_err(io_err(&log))?;
        let mut cmd = ns.command(CHRONYD.name)?;
        cmd.args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf)
            .stdout(logfile)
            .stderr(errfile);
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            command: tool::describe(&cmd),
            source,
        })?;
        let mut server = TimeServer { child, log };
        // Wait until it listens on 123/udp.
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(HarnessError::Invalid(format!(
                    "chronyd exited ({status}): {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                )));
            }
            let listening = ns
                .command("ss")
                .and_then(|mut c| tool::run(c.args(["-Hlun", "sport", "= :123"])))
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if listening {
                return Ok(server);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = server.child.kill();
                return Err(HarnessError::Invalid(format!(
                    "chronyd does not listen on {addr}:123 after 10 s: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for TimeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod offset_tests {
    use super::*;

    #[test]
    fn reads_chronyd_q_output() {
        let out = "2026-12-01T23:45:52Z chronyd version 4.3 starting\n\
            2026-12-01T23:45:57Z System clock wrong by -273906.012345 seconds (ignored)\n";
        assert_eq!(parse_clock_wrong(out), Some(-273_906.012_345));
        assert_eq!(parse_clock_wrong("Timeout reached\n"), None);
    }
}
