//! One QEMU virtual machine, with the serial console captured to a file:
//! an arm64 worker (`qemu-system-aarch64 -M virt -cpu cortex-a72`) booting
//! the kernel and initrd of the image itself, or an x86-64 pc-efi master
//! (`qemu-system-x86_64 -M q35`, OVMF, see [`crate::pc`]) booting through its
//! own ESP. Both on the same kind of disk (a qcow2 overlay), NIC (virtio-net
//! with the node's MAC, a tap of the test's bridge) and probe ports.
//! Dropping a [`Vm`] kills QEMU (also when a test panics).

use crate::disk::RawDisk;
use crate::net::NetNs;
use crate::overlay::Overlay;
use crate::pc::{smbios_cmdline_extra, x86_accel, Accel, PcEfiBoot, COMMAND_LINE_SIZE};
use crate::probe::{self, Probe, Report};
use crate::tool::{self, QEMU, QEMU_X86};
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

/// The machine and how it boots.
#[derive(Debug, Clone, Copy)]
pub enum Boot<'a> {
    /// `qemu-system-aarch64 -M virt -cpu cortex-a72` (TCG), the image's
    /// kernel and initrd loaded by QEMU, the kernel arguments `-append`ed.
    ArmVirt(&'a BootFiles),
    /// `qemu-system-x86_64 -M q35` with OVMF (KVM or TCG, [`x86_accel`]): the
    /// image boots itself through its ESP's systemd-boot; the test's kernel
    /// arguments reach the kernel as the SMBIOS Type 11 string
    /// [`crate::pc::CMDLINE_EXTRA`], which systemd-boot appends to its entry's
    /// `options` (see [`crate::pc`]).
    PcEfi(&'a PcEfiBoot),
}

impl<'a> From<&'a BootFiles> for Boot<'a> {
    fn from(b: &'a BootFiles) -> Self {
        Boot::ArmVirt(b)
    }
}

impl<'a> From<&'a PcEfiBoot> for Boot<'a> {
    fn from(b: &'a PcEfiBoot) -> Self {
        Boot::PcEfi(b)
    }
}

/// What to boot and how.
#[derive(Debug)]
pub struct VmSpec<'a> {
    /// Used in file names and messages.
    pub name: String,
    pub boot: Boot<'a>,
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
    /// The GPS node's receiver (arm64 only): its UART, ttyAMA0, is
    /// connected to the FIFOs of this [`crate::gps::Feed::base`], and the
    /// console moves to the second PL011, ttyAMA1.
    pub gps: Option<&'a Path>,
}

/// The kernel arguments every test boot gets besides the image's own, in
/// this order: these, the probe's, the test's.
pub fn test_kernel_args(probe: Option<&Probe>, extra: &[String]) -> Vec<String> {
    test_kernel_args_with(probe.map(Probe::kernel_args), extra)
}

/// [`test_kernel_args`] of a pc-efi guest: the probe's credentials go
/// through SMBIOS ([`Probe::smbios_credentials`]); only its unit is named
/// on the command line.
pub fn pc_test_kernel_args(probe: Option<&Probe>, extra: &[String]) -> Vec<String> {
    test_kernel_args_with(probe.map(|_| vec![Probe::wants_arg()]), extra)
}

fn test_kernel_args_with(probe_args: Option<Vec<String>>, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        // The lab's interface is eth0; virtio would be enp0sN. (A pc-efi
        // image's entry says so itself; twice does no harm.)
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
    .map(str::to_owned)
    .to_vec();
    args.extend(probe_args.into_iter().flatten());
    args.extend(extra.iter().cloned());
    args
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
    accel: Accel,
    /// QEMU's socket behind the probe's control port, in a short private
    /// directory (a socket path has at most 107 bytes).
    control: PathBuf,
    /// QEMU's QMP socket, beside `control`.
    qmp: PathBuf,
    _control_dir: tempfile::TempDir,
    /// Kept open once connected: the guest reads end-of-file while no one is.
    control_stream: Option<UnixStream>,
}

impl Vm {
    pub fn start(spec: VmSpec<'_>) -> Result<Self> {
        let console = spec.log_dir.join(format!("{}.console.log", spec.name));
        let probe_log = spec.log_dir.join(format!("{}.probe.log", spec.name));
        let qemu_log = spec.log_dir.join(format!("{}.qemu.log", spec.name));
        let test_args = test_kernel_args(spec.probe.as_ref(), &spec.kernel_args).join(" ");

        let control_dir = tempfile::Builder::new()
            .prefix("pibake-vm-")
            .tempdir()
            .map_err(io_err("temporary directory"))?;
        let control = control_dir.path().join("control.sock");
        let qmp = control_dir.path().join("qmp.sock");

        let Network::Tap(ns) = spec.network;
        let (mut cmd, accel) = match spec.boot {
            Boot::ArmVirt(boot) => {
                QEMU.require()?;
                // With a GPS receiver on ttyAMA0 (the header UART of a Pi 4
                // with disable-bt) the console is the second PL011: QEMU's
                // virt board has two since 10.0, in the order of -serial,
                // and ttyAMA1 carries the kernel's lines from the first one
                // (a virtio console would only once its driver loads).
                let console = if spec.gps.is_some() {
                    "ttyAMA1"
                } else {
                    "ttyAMA0"
                };
                let mut append: Vec<String> = vec![format!("console={console}")];
                append.extend(boot.root_args.iter().cloned());
                append.push(test_args);
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
                .arg("-kernel")
                .arg(&boot.kernel)
                .arg("-initrd")
                .arg(&boot.initrd)
                .arg("-append")
                .arg(&append);
                (cmd, Accel::Tcg)
            }
            Boot::PcEfi(pc) => {
                QEMU_X86.require()?;
                if spec.gps.is_some() {
                    return Err(HarnessError::Invalid(format!(
                        "{}: a GPS receiver is on a Pi's UART; a pc-efi VM has none",
                        spec.name
                    )));
                }
                let test_args =
                    pc_test_kernel_args(spec.probe.as_ref(), &spec.kernel_args).join(" ");
                // x86's COMMAND_LINE_SIZE cuts a longer line silently.
                let total = pc.command_line(&test_args).len();
                if total >= COMMAND_LINE_SIZE {
                    return Err(HarnessError::Invalid(format!(
                        "{}: kernel command line of {total} bytes (the test's {}), over x86's {}",
                        spec.name,
                        test_args.len(),
                        COMMAND_LINE_SIZE - 1
                    )));
                }
                let choice = x86_accel();
                let vars = spec.log_dir.join(format!("{}.vars.fd", spec.name));
                pc.firmware.vars_copy(&vars)?;
                let mut cmd = ns.command(QEMU_X86.name)?;
                cmd.args(["-M", "q35"])
                    .args(choice.accel.x86_args())
                    .args(["-m", "1024", "-smp", "2"])
                    // No default VGA, CD-ROM or NIC: what OVMF finds to boot
                    // is the disk (bootindex=0) and nothing else.
                    .args(["-nodefaults", "-display", "none"])
                    .args(["-monitor", "none", "-no-reboot"])
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        pc.firmware.code.display()
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        vars.display()
                    ))
                    .arg("-smbios")
                    .arg(smbios_cmdline_extra(&test_args));
                for credential in spec.probe.iter().flat_map(Probe::smbios_credentials) {
                    cmd.arg("-smbios").arg(credential);
                }
                (cmd, choice.accel)
            }
        };
        for f in [&console, &probe_log] {
            std::fs::write(f, b"").map_err(io_err(f))?;
        }
        let tap = ns.add_tap()?;
        let bootindex = match spec.boot {
            Boot::ArmVirt(_) => "",
            Boot::PcEfi(_) => ",bootindex=0",
        };
        // The first serial port: ttyAMA0 on virt (the GPS receiver's when
        // there is one, the console then on the second), ttyS0 (COM1) on q35.
        if let Some(gps) = spec.gps {
            cmd.arg("-chardev")
                .arg(format!("pipe,id=gps0,path={}", gps.display()))
                .args(["-serial", "chardev:gps0"]);
        }
        cmd.arg("-serial")
            .arg(format!("file:{}", console.display()))
            // QMP, for the power button (`system_powerdown`).
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-drive")
            .arg(format!(
                "if=none,id=disk0,format=qcow2,file={}",
                spec.disk.path().display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive=disk0{bootindex}"))
            .arg("-netdev")
            .arg(format!("tap,id=net0,ifname={tap},script=no,downscript=no"))
            // No option ROM: nothing boots from the network (on q35 OVMF's
            // own virtio-net driver still gives the NIC to the firmware).
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
            accel,
            control,
            qmp,
            _control_dir: control_dir,
            control_stream: None,
        })
    }

    /// Whether QEMU still runs (the guest has not powered off).
    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Which accelerator this VM runs on (arm64 guests: always TCG).
    pub fn accel(&self) -> Accel {
        self.accel
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
        self.wait_exit_for("power-off", timeout)
    }

    /// [`Vm::wait_exit`] naming what was awaited in its timeout.
    pub fn wait_exit_for(&mut self, what: &str, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(self.timeout(what.to_owned(), start.elapsed()));
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

    /// Presses the machine's power button: QMP `system_powerdown`. On
    /// `-M virt` that is the gpio-keys KEY_POWER of its device tree, on q35
    /// the ACPI power button; systemd-logind powers off on either
    /// (HandlePowerKey, overlays/gpio-shutdown). What the Pi's button does
    /// after its 3 s hold (the overlay's debounce) is this key press.
    pub fn power_button(&mut self) -> Result<()> {
        crate::qmp::execute(&self.qmp, "system_powerdown")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pc::Ovmf;
    use std::time::Duration;

    /// The longest probe with a hold point fits x86's command line beside a
    /// pc-efi image's own entry (esp.rs' options, an initrd).
    #[test]
    fn probe_arguments_fit_beside_a_pc_efi_entry() {
        let pc = PcEfiBoot {
            firmware: Ovmf {
                code: PathBuf::from(Ovmf::DEBIAN_CODE),
                vars_template: PathBuf::from(Ovmf::DEBIAN_VARS),
            },
            entry_options: "console=tty0 console=ttyS0,115200 \
                root=PARTUUID=0fc63daf-0000-4000-8000-000000000002 rootfstype=ext4 \
                fsck.repair=yes rootwait net.ifnames=0"
                .to_owned(),
            initrds: vec!["/initrd.img-7.3.4+deb13-amd64".to_owned()],
        };
        let wait = Duration::from_secs(900);
        for probe in [
            Probe::Report,
            Probe::Member,
            Probe::SwarmManager {
                nodes: 3,
                wait,
                hold: true,
            },
            Probe::Standby {
                vip: std::net::Ipv4Addr::new(192, 168, 188, 2),
                wait,
            },
        ] {
            let extra = pc_test_kernel_args(
                Some(&probe),
                &["pibake.test.hold_after=identity".to_owned()],
            )
            .join(" ");
            let line = pc.command_line(&extra);
            assert!(line.starts_with("initrd=\\initrd.img-7.3.4+deb13-amd64 console=tty0 "));
            assert!(line.ends_with(&extra));
            assert!(
                line.len() < COMMAND_LINE_SIZE - 40,
                "{probe:?}: {} bytes, too near x86's {COMMAND_LINE_SIZE}",
                line.len()
            );
        }
    }
}
