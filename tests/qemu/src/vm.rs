//! One QEMU virtual machine: `qemu-system-aarch64 -M virt -cpu cortex-a72`
//! booting the kernel and initrd of the image itself, with the serial console
//! captured to a file. Dropping a [`Vm`] kills QEMU (also when a test panics).

use crate::disk::RawDisk;
use crate::net::NetNs;
use crate::overlay::Overlay;
use crate::probe::{self, Probe, Report};
use crate::tool::{self, QEMU};
use crate::{io_err, HarnessError, Result};
use regex::Regex;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The console line systemd prints when the system is up.
pub const MULTI_USER: &str = r"Reached target .*(multi-user\.target|Multi-User System)";

/// Kernel and initrd read out of an image's boot partition, and the root
/// arguments of its cmdline.txt.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// `root=`, `rootfstype=`, `fsck.repair=`, `rootwait` from cmdline.txt.
    pub root_args: Vec<String>,
}

impl BootFiles {
    /// Copies the kernel and initrd named by the image's config.txt
    /// (`kernel=`, `initramfs <file>`) into `dir`.
    pub fn from_image(image: &Path, dir: &Path) -> Result<Self> {
        let disk = RawDisk::open(image)?;
        let fat = disk.boot()?;
        let config = fat.read_string("config.txt")?;
        let kernel_name = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("kernel="))
            .map(|s| s.trim().to_owned())
            .ok_or_else(|| {
                HarnessError::Invalid(format!(
                    "{}: config.txt has no kernel= line",
                    image.display()
                ))
            })?;
        let initrd_name = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("initramfs "))
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| {
                HarnessError::Invalid(format!(
                    "{}: config.txt has no initramfs line",
                    image.display()
                ))
            })?;
        let cmdline = fat.read_string("cmdline.txt")?;
        let root_args: Vec<String> = cmdline
            .split_whitespace()
            .filter(|a| {
                a.starts_with("root=")
                    || a.starts_with("rootfstype=")
                    || a.starts_with("fsck.repair=")
                    || *a == "rootwait"
            })
            .map(str::to_owned)
            .collect();
        if !root_args.iter().any(|a| a.starts_with("root=")) {
            return Err(HarnessError::Invalid(format!(
                "{}: cmdline.txt has no root=: {cmdline:?}",
                image.display()
            )));
        }
        let kernel = dir.join(&kernel_name);
        let initrd = dir.join(&initrd_name);
        for (name, out) in [(&kernel_name, &kernel), (&initrd_name, &initrd)] {
            let bytes = fat.read(name)?;
            std::fs::write(out, bytes).map_err(io_err(out))?;
        }
        Ok(BootFiles {
            kernel,
            initrd,
            root_args,
        })
    }
}

/// Where a VM's NIC is plugged.
#[derive(Debug, Clone, Copy)]
pub enum Network<'a> {
    /// A tap of this namespace's bridge (QEMU runs inside the namespace).
    Tap(&'a NetNs),
}

/// What to boot and how.
#[derive(Debug)]
pub struct VmSpec<'a> {
    /// Used in file names and messages.
    pub name: String,
    pub boot: &'a BootFiles,
    pub disk: &'a Overlay,
    /// MAC of the virtio NIC (what the agent matches the node table on).
    pub mac: String,
    /// `-rtc base=`: `utc` or a time like `2025-11-25T12:00:00`.
    pub rtc_base: String,
    pub network: Network<'a>,
    pub probe: Option<Probe>,
    /// More kernel arguments (test-only).
    pub kernel_args: Vec<String>,
    /// Directory for the console, probe and QEMU logs.
    pub log_dir: PathBuf,
}

/// A running VM. Killed on drop.
#[derive(Debug)]
pub struct Vm {
    name: String,
    child: Child,
    console: PathBuf,
    probe_log: PathBuf,
    qemu_log: PathBuf,
    started: Instant,
    exit: Option<ExitStatus>,
    /// QEMU's socket behind the probe's control port, in a short private
    /// directory (a socket path has at most 107 bytes).
    control: PathBuf,
    _control_dir: tempfile::TempDir,
    /// Kept open once connected: the guest reads end-of-file while no one is.
    control_stream: Option<UnixStream>,
}

impl Vm {
    pub fn start(spec: VmSpec<'_>) -> Result<Self> {
        QEMU.require()?;
        let console = spec.log_dir.join(format!("{}.console.log", spec.name));
        let probe_log = spec.log_dir.join(format!("{}.probe.log", spec.name));
        let qemu_log = spec.log_dir.join(format!("{}.qemu.log", spec.name));
        for f in [&console, &probe_log] {
            std::fs::write(f, b"").map_err(io_err(f))?;
        }
        let mut append: Vec<String> = vec!["console=ttyAMA0".to_owned()];
        append.extend(spec.boot.root_args.iter().cloned());
        append.extend(
            [
                // The lab's interface is eth0; virtio would be enp0sN.
                "net.ifnames=0",
                "panic=-1",
                "systemd.show_status=1",
                // The agent's log lines on the console too.
                "systemd.journald.forward_to_console=1",
                // Emulation only: with three VMs on two cores, udev has been
                // seen to announce the boot partition after systemd's 90 s
                // default, which drops the VM into emergency mode. A board
                // keeps the image's own default.
                "systemd.default_device_timeout_sec=600",
            ]
            .map(str::to_owned),
        );
        if let Some(p) = &spec.probe {
            append.extend(p.kernel_args());
        }
        append.extend(spec.kernel_args.iter().cloned());
        let append = append.join(" ");
        // The kernel cuts a longer command line silently (arm64
        // COMMAND_LINE_SIZE), which would lose the probe's arguments.
        if append.len() >= 2048 {
            return Err(HarnessError::Invalid(format!(
                "{}: kernel command line of {} bytes, over arm64's 2047",
                spec.name,
                append.len()
            )));
        }

        let control_dir = tempfile::Builder::new()
            .prefix("pibake-vm-")
            .tempdir()
            .map_err(io_err("temporary directory"))?;
        let control = control_dir.path().join("control.sock");

        let Network::Tap(ns) = spec.network;
        let tap = ns.add_tap()?;
        let mut cmd = ns.command(QEMU.name)?;
        cmd.args([
            "-M",
            "virt",
            "-cpu",
            "cortex-a72",
            "-m",
            "1024",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&spec.boot.kernel)
        .arg("-initrd")
        .arg(&spec.boot.initrd)
        .arg("-append")
        .arg(&append)
        .arg("-drive")
        .arg(format!(
            "if=none,id=disk0,format=qcow2,file={}",
            spec.disk.path().display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0"])
        .arg("-netdev")
        .arg(format!("tap,id=net0,ifname={tap},script=no,downscript=no"))
        // No option ROM: the kernel is loaded directly, iPXE is not needed.
        .arg("-device")
        .arg(format!(
            "virtio-net-pci,netdev=net0,mac={},romfile=",
            spec.mac
        ))
        .arg("-rtc")
        .arg(format!("base={},clock=host", spec.rtc_base))
        .args(["-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!("file,id=probe0,path={}", probe_log.display()))
        .arg("-device")
        .arg(format!(
            "virtserialport,chardev=probe0,name={}",
            probe::PORT
        ))
        .arg("-chardev")
        .arg(format!(
            "socket,id=control0,path={},server=on,wait=off",
            control.display()
        ))
        .arg("-device")
        .arg(format!(
            "virtserialport,chardev=control0,name={}",
            probe::CONTROL_PORT
        ));
        let out = std::fs::File::create(&qemu_log).map_err(io_err(&qemu_log))?;
        let err = out.try_clone().map_err(io_err(&qemu_log))?;
        cmd.stdout(out).stderr(err).stdin(Stdio::null());
        let command = tool::describe(&cmd);
        std::fs::write(spec.log_dir.join(format!("{}.cmd", spec.name)), &command)
            .map_err(io_err(&spec.log_dir))?;
        let child = cmd
            .spawn()
            .map_err(|source| HarnessError::Spawn { command, source })?;
        Ok(Vm {
            name: spec.name,
            child,
            console,
            probe_log,
            qemu_log,
            started: Instant::now(),
            exit: None,
            control,
            _control_dir: control_dir,
            control_stream: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Time since QEMU started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// What the probe wrote so far.
    pub fn probe_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.probe_log).unwrap_or_default()).into_owned()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    fn timeout(&mut self, what: String, waited: Duration) -> HarnessError {
        let exited = match self.exited() {
            Some(status) => format!(
                " (QEMU exited: {status}; {})",
                std::fs::read_to_string(&self.qemu_log)
                    .unwrap_or_default()
                    .trim()
            ),
            None => String::new(),
        };
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        HarnessError::Timeout {
            what: format!("{}: {what}", self.name),
            waited,
            exited,
            tail,
        }
    }

    /// Polls `check` until it gives a value, QEMU exits, or `timeout`.
    fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            if let Some(v) = check(self) {
                return Ok(v);
            }
            if self.exited().is_some() {
                // One last look: output may land just before exit.
                if let Some(v) = check(self) {
                    return Ok(v);
                }
                return Err(self.timeout(what.to_owned(), start.elapsed()));
            }
            if start.elapsed() >= timeout {
                return Err(self.timeout(what.to_owned(), start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the console matches `pattern`; returns the matched text.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let re = Regex::new(pattern)
            .map_err(|e| HarnessError::Invalid(format!("bad pattern {pattern:?}: {e}")))?;
        self.poll(&format!("console /{pattern}/"), timeout, |vm| {
            re.find(&vm.console()).map(|m| m.as_str().to_owned())
        })
    }

    /// Waits until the probe wrote section `name` followed by another one;
    /// returns the section's text.
    pub fn wait_probe_section(&mut self, name: &str, timeout: Duration) -> Result<String> {
        self.poll(&format!("probe section {name}"), timeout, |vm| {
            let text = vm.probe_text();
            let start = text.find(&format!("@@ {name}\n"))?;
            let body = &text[start + name.len() + 4..];
            let end = body.find("@@ ")?;
            Some(body[..end].to_owned())
        })
    }

    /// Waits for the probe's complete report.
    pub fn wait_report(&mut self, timeout: Duration) -> Result<Report> {
        self.poll("probe report", timeout, |vm| {
            let r = Report::parse(&vm.probe_text());
            r.complete().then_some(r)
        })
    }

    /// Waits until QEMU exits (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(self.timeout("power-off".to_owned(), start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Sends the probe its [`probe::GO`] over the control port: a probe that
    /// waits for it (e.g. [`Probe::Member`]) goes on to report and power off.
    pub fn go(&mut self) -> Result<()> {
        use std::io::Write;
        let mut tries = 0;
        let stream = loop {
            if let Some(stream) = &mut self.control_stream {
                break stream;
            }
            match UnixStream::connect(&self.control) {
                Ok(stream) => self.control_stream = Some(stream),
                // QEMU makes the socket as it starts: normally long done.
                Err(_) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(io_err(&self.control)(e)),
            }
        };
        writeln!(stream, "{}", probe::GO)
            .and_then(|()| stream.flush())
            .map_err(io_err(&self.control))
    }

    /// Pulls the plug: SIGKILL to QEMU, no guest shutdown.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
