//! The x86-64 `pc-efi` machine (the Swarm masters; Mac Minis in reality):
//! `qemu-system-x86_64 -M q35` with Debian's OVMF as UEFI firmware, booting
//! the image itself: its ESP's systemd-boot reads `loader/loader.conf` and
//! the one Boot Loader Specification entry, and starts the kernel with the
//! entry's `options`.
//!
//! The image is not changed for a test, so the test-only kernel arguments
//! (probe, `systemd.default_device_timeout_sec=`, hold points) cannot be
//! `-append`ed as on the arm64 VMs, whose kernel QEMU loads directly. They
//! go through the firmware instead: QEMU puts an SMBIOS Type 11 (OEM
//! strings) entry `io.systemd.boot.kernel-cmdline-extra=<args>` into the
//! SMBIOS table, and systemd-boot (≥ 256) appends its value to the command
//! line of a type #1 entry with a `linux` key (systemd-boot(7), "SMBIOS Type
//! 11 Strings"). It does so regardless of Secure Boot (which OVMF_CODE_4M.fd
//! does not enforce anyway) and skips it only inside a confidential VM.
//! systemd-boot 254 (bookworm-backports) does not read it; trixie's 257
//! does.
//!
//! KVM or TCG: [`x86_accel`] decides once per test process, by booting
//! OVMF under KVM (`-cpu host`) until its boot manager speaks on the serial
//! port; anything else (no usable /dev/kvm, QEMU aborting, a KVM internal
//! error, silence) means TCG with `-cpu max`. [`crate::vm::Vm::accel`] says
//! which one a VM ran.

use crate::disk::{PartitionKind, RawDisk};
use crate::tool::{self, QEMU_X86};
use crate::{io_err, HarnessError, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The SMBIOS Type 11 string systemd-boot appends to a type #1 entry's
/// command line (`<KEY>=<args>`).
pub const CMDLINE_EXTRA: &str = "io.systemd.boot.kernel-cmdline-extra";

/// The Linux x86 command line limit (COMMAND_LINE_SIZE, with its NUL).
pub const COMMAND_LINE_SIZE: usize = 2048;

/// Debian's OVMF (package `ovmf`): the firmware code, mapped read-only, and
/// the template of its variable store, copied per VM (the firmware writes
/// boot entries into it).
#[derive(Debug, Clone)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

impl Ovmf {
    /// The 4 MiB build without Secure Boot enforcement.
    pub const DEBIAN_CODE: &'static str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    pub const DEBIAN_VARS: &'static str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

    /// Debian's files; missing is an error naming the package.
    pub fn debian() -> Result<Self> {
        let ovmf = Ovmf {
            code: PathBuf::from(Self::DEBIAN_CODE),
            vars_template: PathBuf::from(Self::DEBIAN_VARS),
        };
        for f in [&ovmf.code, &ovmf.vars_template] {
            if !f.is_file() {
                return Err(HarnessError::Invalid(format!(
                    "{} is missing: apt-get install ovmf",
                    f.display()
                )));
            }
        }
        Ok(ovmf)
    }

    /// A fresh writable copy of the variable store at `path`.
    pub fn vars_copy(&self, path: &Path) -> Result<()> {
        std::fs::copy(&self.vars_template, path).map_err(io_err(path))?;
        Ok(())
    }
}

/// How a pc-efi image boots: the firmware, and what its ESP's entry says
/// (read to check that the test's arguments fit beside the image's own).
#[derive(Debug, Clone)]
pub struct PcEfiBoot {
    pub firmware: Ovmf,
    /// `options` of the entry loader.conf's `default` names (the image's own
    /// kernel command line; systemd-boot appends the SMBIOS string to it).
    pub entry_options: String,
    /// The entry's `initrd` paths (systemd-boot puts an `initrd=` for each
    /// before the options).
    pub initrds: Vec<String>,
}

impl PcEfiBoot {
    /// Reads loader/loader.conf and its default entry from the image's EFI
    /// system partition (GPT partition 1), with Debian's OVMF.
    pub fn from_image(image: &Path) -> Result<Self> {
        let disk = RawDisk::open(image)?;
        let esp = disk.partition(1)?;
        if !matches!(esp.kind, PartitionKind::Gpt { type_guid, .. } if type_guid == crate::disk::Guid::ESP)
        {
            return Err(HarnessError::Invalid(format!(
                "{}: partition 1 is not a GPT EFI system partition ({:?}): not a pc-efi image",
                image.display(),
                esp.kind
            )));
        }
        let fat = disk.boot()?;
        let bad = |why: String| HarnessError::Invalid(format!("{}: {why}", image.display()));
        let conf = fat.read_string("loader/loader.conf")?;
        let default = conf
            .lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix("default")
                    .filter(|rest| rest.starts_with(char::is_whitespace))
                    .map(str::trim)
            })
            .ok_or_else(|| bad(format!("loader/loader.conf names no default: {conf:?}")))?;
        let entry_name = format!("loader/entries/{default}");
        let entry = fat.read_string(&entry_name)?;
        let mut options = Vec::new();
        let mut initrds = Vec::new();
        let mut linux = false;
        for line in entry.lines() {
            let line = line.trim();
            let (key, value) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(k, v)| (k, v.trim()));
            match key {
                "options" => options.push(value.to_owned()),
                "initrd" => initrds.push(value.to_owned()),
                "linux" => linux = !value.is_empty(),
                _ => {}
            }
        }
        if !linux {
            // Only a `linux` entry gets the SMBIOS arguments (systemd-boot).
            return Err(bad(format!(
                "{entry_name} has no `linux` line: systemd-boot would not append the test's kernel arguments"
            )));
        }
        Ok(PcEfiBoot {
            firmware: Ovmf::debian()?,
            entry_options: options.join(" "),
            initrds,
        })
    }

    /// The command line systemd-boot hands the kernel with `extra` as the
    /// SMBIOS string: an `initrd=` per initrd (ESP path with `\`), the
    /// entry's options, then `extra`, separated by spaces.
    pub fn command_line(&self, extra: &str) -> String {
        let mut words: Vec<String> = self
            .initrds
            .iter()
            .map(|i| format!("initrd={}", i.replace('/', "\\")))
            .collect();
        for part in [self.entry_options.as_str(), extra] {
            if !part.is_empty() {
                words.push(part.to_owned());
            }
        }
        words.join(" ")
    }
}

/// The value of QEMU's `-smbios type=11,value=` for `args`: commas doubled
/// (QEMU's option syntax).
pub fn smbios_cmdline_extra(args: &str) -> String {
    format!("type=11,value={CMDLINE_EXTRA}={}", args.replace(',', ",,"))
}

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization, `-accel kvm -cpu host`.
    Kvm,
    /// Emulation, `-accel tcg` (`-cpu max` on x86, `cortex-a72` on arm64).
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The `-accel` and `-cpu` arguments of an x86-64 guest.
    pub fn x86_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// What [`x86_accel`] chose, and why.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    pub accel: Accel,
    pub why: String,
}

/// Forces the accelerator (`kvm` or `tcg`) instead of the probe.
pub const ACCEL_ENV: &str = "PIBAKE_QEMU_ACCEL";

/// How long the KVM probe waits for OVMF's boot manager (it speaks after
/// about 10 s under TCG, 1 to 2 s under KVM).
const PROBE_WAIT: Duration = Duration::from_secs(30);

static X86_ACCEL: OnceLock<AccelChoice> = OnceLock::new();

/// KVM if it runs OVMF here, else TCG: decided once per process.
pub fn x86_accel() -> &'static AccelChoice {
    X86_ACCEL.get_or_init(|| {
        match std::env::var(ACCEL_ENV).ok().as_deref() {
            Some("kvm") => {
                return AccelChoice {
                    accel: Accel::Kvm,
                    why: format!("{ACCEL_ENV}=kvm"),
                }
            }
            Some("tcg") => {
                return AccelChoice {
                    accel: Accel::Tcg,
                    why: format!("{ACCEL_ENV}=tcg"),
                }
            }
            _ => {}
        }
        match probe_kvm() {
            Ok(why) => AccelChoice {
                accel: Accel::Kvm,
                why,
            },
            Err(why) => AccelChoice {
                accel: Accel::Tcg,
                why: format!("KVM probe failed: {why}"),
            },
        }
    })
}

/// Boots OVMF under KVM with the CPU and SMP of a real guest until its boot
/// manager (`BdsDxe:`) writes to the serial port. `Ok` says how long it took.
fn probe_kvm() -> std::result::Result<String, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let ovmf = Ovmf::debian().map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("pibake-kvm-probe-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let serial = dir.path().join("serial");
    let vars = dir.path().join("vars.fd");
    let log = dir.path().join("qemu.log");
    ovmf.vars_copy(&vars).map_err(|e| e.to_string())?;
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = QEMU_X86.command().map_err(|e| e.to_string())?;
    cmd.args(["-M", "q35"])
        .args(Accel::Kvm.x86_args())
        .args(["-m", "256", "-smp", "2", "-nodefaults", "-display", "none"])
        .args(["-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            ovmf.code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .stdout(out)
        .stderr(err)
        .stdin(Stdio::null());
    let command = tool::describe(&cmd);
    let mut child = cmd.spawn().map_err(|e| format!("`{command}`: {e}"))?;
    let start = Instant::now();
    let verdict = loop {
        let text = std::fs::read(&serial).unwrap_or_default();
        let qemu_said = std::fs::read_to_string(&log).unwrap_or_default();
        if text.windows(7).any(|w| w == b"BdsDxe:") {
            break Ok(format!(
                "OVMF reached its boot manager under KVM in {:.1} s",
                start.elapsed().as_secs_f64()
            ));
        }
        if qemu_said.contains("KVM internal error") {
            break Err(first_lines(&qemu_said));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!(
                "QEMU exited ({status}): {}",
                first_lines(&qemu_said)
            ));
        }
        if start.elapsed() > PROBE_WAIT {
            break Err(format!(
                "OVMF silent for {PROBE_WAIT:?} under KVM: {}",
                first_lines(&qemu_said)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

fn first_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbios_value_doubles_commas() {
        assert_eq!(
            smbios_cmdline_extra("console=ttyS0,115200 panic=-1"),
            "type=11,value=io.systemd.boot.kernel-cmdline-extra=console=ttyS0,,115200 panic=-1"
        );
    }

    #[test]
    fn accel_arguments() {
        assert_eq!(Accel::Tcg.x86_args(), ["-accel", "tcg", "-cpu", "max"]);
        assert_eq!(Accel::Kvm.x86_args(), ["-accel", "kvm", "-cpu", "host"]);
        assert_eq!(Accel::Kvm.name(), "kvm");
    }
}
