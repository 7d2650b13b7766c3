//! The pc-efi machine without a pibake image: a GPT disk made here with an
//! EFI system partition laid out as a pc-efi image's (image/src/efi.rs,
//! builder/src/build/esp.rs: Debian trixie's systemd-boot at the removable
//! path and its own, loader.conf with `timeout 0`, one type #1 entry), whose
//! `linux` is a Debian x86-64 kernel without initrd. OVMF boots it under
//! `qemu-system-x86_64 -M q35` on the test's bridge; the test's kernel
//! arguments go in as the SMBIOS Type 11 string systemd-boot appends. The
//! kernel prints its command line first thing, then panics (no root: its
//! virtio drivers are modules and there is no initrd) and, with the test's
//! `panic=-1`, resets, which ends QEMU (`-no-reboot`).
//!
//! What it proves for the ring: the harness's x86 VM (firmware, disk,
//! NIC on the shared bridge, serial console) boots a pc-efi ESP, and the
//! kernel's command line is exactly the entry's options followed by the
//! harness's test arguments, which is how probe settings, device timeouts
//! and hold points reach an x86 master without changing its image.
//!
//! Needs root (network namespace, tap), qemu-system-x86 and ovmf. systemd-boot
//! ≥ 256 and an x86-64 kernel come from, in order: `PIBAKE_SYSTEMD_BOOT_EFI` /
//! `PIBAKE_X86_KERNEL` (a file, or a .deb to unpack), the pibake store's
//! `systemd-boot-efi_*_amd64.deb` / `linux-binary-*-amd64` or
//! `linux-image-*-amd64` .deb (there once a pc-efi image is fetched), the
//! host (/usr/lib/systemd/boot/efi/systemd-bootx64.efi, /boot/vmlinuz-*);
//! else the test fails naming `pibake fetch` of the lab (bookworm has
//! systemd-boot 252 and bookworm-backports 254, neither of which reads the
//! SMBIOS string: the lab's trixie packages are the source).

mod common;

use anyhow::{anyhow, bail, ensure, Context, Result};
use common::{workdir, MASTER1};
use pibake_qemu::disk::{write_gpt, GptEntry, Guid, RawDisk};
use pibake_qemu::net::NetNs;
use pibake_qemu::overlay::Overlay;
use pibake_qemu::pc::{x86_accel, PcEfiBoot, CMDLINE_EXTRA};
use pibake_qemu::tool::{self, DPKG_DEB, MFORMAT, MMD};
use pibake_qemu::vm::{test_kernel_args, Boot, Network, Vm, VmSpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The first systemd-boot that appends `io.systemd.boot.kernel-cmdline-extra`.
const MIN_SYSTEMD_BOOT: u32 = 256;
const WAIT: Duration = Duration::from_secs(180);

/// GPT type of Linux filesystem data (the root partition).
const LINUX_DATA: Guid = Guid([
    0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
]);
const MIB: u64 = 1 << 20;
/// ESP at 1 MiB, 40 MiB (FAT32 with 512-byte clusters needs ~33), root
/// after it (4 MiB, never formatted: the kernel stops before it mounts).
const ESP_START: u64 = MIB;
const ESP_SIZE: u64 = 40 * MIB;
const ROOT_START: u64 = ESP_START + ESP_SIZE;
const ROOT_SIZE: u64 = 4 * MIB;
const DISK_SIZE: u64 = ROOT_START + ROOT_SIZE + MIB;

/// A file the fixture needs, and where it came from (for the log).
#[derive(Debug)]
struct Found {
    path: PathBuf,
    what: String,
}

/// Whether `bytes` are an x86-64 PE/COFF image (what OVMF runs).
fn is_pe_x86_64(bytes: &[u8]) -> bool {
    let pe = bytes
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    bytes.starts_with(b"MZ")
        && pe.is_some_and(|pe| {
            bytes.get(pe..pe + 4) == Some(b"PE\0\0")
                && bytes.get(pe + 4..pe + 6) == Some(&[0x64, 0x86][..])
        })
}

/// systemd-boot's version from its `#### LoaderInfo: systemd-boot V ####`.
fn loader_version(bytes: &[u8]) -> Option<(String, u32)> {
    const MAGIC: &[u8] = b"#### LoaderInfo: systemd-boot ";
    let at = bytes.windows(MAGIC.len()).position(|w| w == MAGIC)? + MAGIC.len();
    let rest = &bytes[at..bytes.len().min(at + 80)];
    let end = rest.windows(5).position(|w| w == b" ####")?;
    let version = String::from_utf8_lossy(&rest[..end]).into_owned();
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((version, major))
}

/// Store entries (`<sha256>-<file>`) whose file name matches, newest
/// (highest file name) first.
fn store_debs(matches: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    // pibake's own rule for where its store is.
    let store = pibake_inputs::Store::default_root().unwrap_or_default();
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(store)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let deb = name.split_once('-').map(|(_, d)| d.to_owned())?;
            matches(&deb).then_some((deb, p))
        })
        .collect();
    found.sort();
    found.into_iter().rev().map(|(_, p)| p).collect()
}

/// Unpacks the members of `deb` that match `patterns` (tar wildcards such
/// as `./boot/vmlinuz-*`) into a fresh directory under `dir`: a kernel
/// package's modules stay packed.
fn unpack(deb: &Path, dir: &Path, patterns: &[&str]) -> Result<PathBuf> {
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = dir.join(format!("unpacked-{}", name.trim_end_matches(".deb")));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let mut data = DPKG_DEB
        .command()?
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("dpkg-deb --fsys-tarfile {}", deb.display()))?;
    let stdin = data
        .stdout
        .take()
        .ok_or_else(|| anyhow!("dpkg-deb gave no output"))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&out)
        .arg("--wildcards")
        .args(patterns)
        .stdin(stdin)
        .output()
        .context("tar")?;
    let packed = data.wait()?;
    // tar says 2 for a pattern that matched nothing: fine, the caller looks.
    ensure!(
        packed.success() && matches!(tar.status.code(), Some(0 | 2)),
        "unpacking {}: dpkg-deb {packed}, tar {}: {}",
        deb.display(),
        tar.status,
        String::from_utf8_lossy(&tar.stderr).trim()
    );
    Ok(out)
}

/// Judges one candidate systemd-boot (an .efi, or a .deb that has one).
fn judge_systemd_boot(candidate: &Path, origin: &str, dir: &Path) -> Result<Found> {
    let efi = if candidate.extension().is_some_and(|e| e == "deb") {
        const EFI: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
        unpack(candidate, dir, &[&format!("./{EFI}")])?.join(EFI)
    } else {
        candidate.to_owned()
    };
    let bytes = std::fs::read(&efi).with_context(|| format!("reading {}", efi.display()))?;
    ensure!(
        is_pe_x86_64(&bytes),
        "{}: not an x86-64 EFI program",
        efi.display()
    );
    let (version, major) = loader_version(&bytes)
        .ok_or_else(|| anyhow!("{}: no systemd-boot LoaderInfo", efi.display()))?;
    ensure!(
        major >= MIN_SYSTEMD_BOOT,
        "{}: systemd-boot {version} (< {MIN_SYSTEMD_BOOT}: does not read {CMDLINE_EXTRA})",
        efi.display()
    );
    Ok(Found {
        path: efi,
        what: format!("systemd-boot {version} from {origin}"),
    })
}

/// Judges one candidate kernel (a vmlinuz, or a .deb that has one).
fn judge_kernel(candidate: &Path, origin: &str, dir: &Path) -> Result<Found> {
    let path = if candidate.extension().is_some_and(|e| e == "deb") {
        let root = unpack(
            candidate,
            dir,
            &["./boot/vmlinuz-*", "./usr/lib/modules/*/vmlinuz"],
        )?;
        let mut found = Vec::new();
        for sub in ["boot", "usr/lib/modules"] {
            for e in std::fs::read_dir(root.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("vmlinuz") && p.is_file() {
                    found.push(p);
                } else if p.join("vmlinuz").is_file() {
                    found.push(p.join("vmlinuz"));
                }
            }
        }
        found
            .pop()
            .ok_or_else(|| anyhow!("{}: no vmlinuz in it", candidate.display()))?
    } else {
        candidate.to_owned()
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        is_pe_x86_64(&bytes),
        "{}: not an x86-64 kernel with an EFI stub",
        path.display()
    );
    Ok(Found {
        what: format!("{} from {origin}", path.display()),
        path,
    })
}

/// The first candidate that passes, or every reason none did.
fn first_good(
    what: &str,
    candidates: Vec<(PathBuf, String)>,
    judge: impl Fn(&Path, &str) -> Result<Found>,
) -> Result<Found> {
    let mut refused = Vec::new();
    for (path, origin) in candidates {
        match judge(&path, &origin) {
            Ok(found) => return Ok(found),
            Err(e) => refused.push(format!("{origin}: {e:#}")),
        }
    }
    // No download of our own: the lab's lock pins trixie's packages, and
    // `pibake fetch` puts them into the store from the host's own mirror.
    bail!(
        "no usable {what}: run `pibake fetch -c examples/lab/cluster.toml` (cargo xtask test \
         does, before the ring) to put the lab's amd64 .debs into the store\n  {}",
        refused.join("\n  ")
    )
}

fn env_candidate(var: &str) -> Vec<(PathBuf, String)> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(|v| (PathBuf::from(v), format!("${var}")))
        .into_iter()
        .collect()
}

fn systemd_boot(dir: &Path) -> Result<Found> {
    let mut candidates = env_candidate("PIBAKE_SYSTEMD_BOOT_EFI");
    candidates.extend(
        store_debs(|n| n.starts_with("systemd-boot-efi_") && n.ends_with("_amd64.deb"))
            .into_iter()
            .map(|p| (p, "the pibake store".to_owned())),
    );
    candidates.push((
        PathBuf::from("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        "the host".to_owned(),
    ));
    first_good("systemd-boot", candidates, |p, origin| {
        judge_systemd_boot(p, origin, dir)
    })
}

fn x86_kernel(dir: &Path) -> Result<Found> {
    let mut candidates = env_candidate("PIBAKE_X86_KERNEL");
    candidates.extend(
        store_debs(|n| {
            (n.starts_with("linux-binary-") || n.starts_with("linux-image-"))
                && n.contains("-amd64_")
                && n.ends_with("_amd64.deb")
                && !n.starts_with("linux-image-amd64_")
                && !n.starts_with("linux-image-cloud-amd64_")
        })
        .into_iter()
        .map(|p| (p, "the pibake store".to_owned())),
    );
    let mut host: Vec<PathBuf> = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    host.sort();
    candidates.extend(host.into_iter().rev().map(|p| (p, "the host".to_owned())));
    first_good("x86-64 kernel", candidates, |p, origin| {
        judge_kernel(p, origin, dir)
    })
}

/// The pc-efi layout of image/src/efi.rs with this kernel and no initrd;
/// returns the root's PARTUUID (what the entry's `root=` names).
fn build_disk(image: &Path, systemd_boot: &Path, kernel: &Path) -> Result<String> {
    let root_guid = Guid([
        0x0f, 0xc6, 0x3d, 0xaf, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02,
    ]);
    {
        let mut file = std::fs::File::create(image)?;
        file.set_len(DISK_SIZE)?;
        write_gpt(
            &mut file,
            DISK_SIZE,
            Guid([0x5a; 16]),
            &[
                GptEntry {
                    type_guid: Guid::ESP,
                    unique: Guid([
                        0xc1, 0x2a, 0x73, 0x28, 0x00, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00,
                        0x00, 0x00, 0x00, 0x01,
                    ]),
                    start: ESP_START,
                    size: ESP_SIZE,
                    name: "boot",
                },
                GptEntry {
                    type_guid: LINUX_DATA,
                    unique: root_guid,
                    start: ROOT_START,
                    size: ROOT_SIZE,
                    name: "root",
                },
            ],
        )?;
        file.sync_all()?;
    }
    let esp = format!("{}@@{ESP_START}", image.display());
    let sectors = (ESP_SIZE / 512).to_string();
    let hidden = (ESP_START / 512).to_string();
    tool::run(
        MFORMAT
            .command()?
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &esp, "-F", "-c", "1", "-h", "64", "-s", "32"])
            .args(["-T", &sectors, "-H", &hidden, "-v", "ESP", "::"]),
    )?;
    tool::run(
        MMD.command()?
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &esp])
            .args([
                "::/EFI",
                "::/EFI/BOOT",
                "::/EFI/systemd",
                "::/loader",
                "::/loader/entries",
            ]),
    )?;
    let partuuid = root_guid.to_string();
    let fat = RawDisk::open(image)?.boot()?;
    let loader = std::fs::read(systemd_boot)?;
    fat.write("EFI/BOOT/BOOTX64.EFI", &loader)?;
    fat.write("EFI/systemd/systemd-bootx64.efi", &loader)?;
    fat.write("vmlinuz", &std::fs::read(kernel)?)?;
    // As efi::loader_conf() and esp.rs' entry (kernel_options) write them,
    // less `rootwait`: with it the kernel would wait for ever for a root
    // device it has no driver for, instead of panicking.
    fat.write(
        "loader/loader.conf",
        b"# Written by pibake.\ndefault pibake.conf\ntimeout 0\neditor no\n",
    )?;
    fat.write(
        "loader/entries/pibake.conf",
        format!(
            "# Written by pibake.\ntitle Debian GNU/Linux (ovmf fixture)\nlinux /vmlinuz\n\
             options console=tty0 console=ttyS0,115200 root=PARTUUID={partuuid} rootfstype=ext4 fsck.repair=yes net.ifnames=0\n"
        )
        .as_bytes(),
    )?;
    Ok(partuuid)
}

#[test]
fn ovmf_boots_an_esp_and_systemd_boot_appends_the_smbios_arguments() -> Result<()> {
    let started = Instant::now();
    let dir = workdir("ovmf")?;
    let loader = systemd_boot(&dir)?;
    let kernel = x86_kernel(&dir)?;
    eprintln!("loader: {}\nkernel: {}", loader.what, kernel.what);

    let image = dir.join("pc-efi-fixture.img");
    let partuuid = build_disk(&image, &loader.path, &kernel.path)?;
    let pc = PcEfiBoot::from_image(&image)?;
    ensure!(
        pc.entry_options
            .contains(&format!("root=PARTUUID={partuuid} "))
            && pc.initrds.is_empty(),
        "the fixture's entry reads back as {pc:?}"
    );
    let overlay = Overlay::create(&image, &dir, "master-x86", 0)?;
    let ns = NetNs::create(&["192.168.188.1/24"])?;
    // A word only this run can put on the command line.
    let marker = format!(
        "pibake.test.smbios={}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let prepared = started.elapsed();
    let mut vm = Vm::start(VmSpec {
        name: "master-x86".to_owned(),
        boot: Boot::PcEfi(&pc),
        disk: &overlay,
        mac: MASTER1.mac.to_owned(),
        rtc_base: "utc".to_owned(),
        network: Network::Tap(&ns),
        probe: None,
        kernel_args: vec![marker.clone()],
        log_dir: dir.clone(),
        gps: None,
    })?;
    let accel = x86_accel();
    eprintln!("accelerator: {} ({})", vm.accel().name(), accel.why);
    // The firmware starts the disk's loader, systemd-boot the kernel.
    vm.wait_for(r"BdsDxe: starting Boot[0-9A-F]+ ", WAIT)?;
    let to_loader = vm.uptime();
    // QEMU's NIC is on the test's bridge, carrier up, like an arm VM's.
    let taps = ns.ip(&["-o", "link", "show", "master", pibake_qemu::net::BRIDGE])?;
    ensure!(
        taps.lines()
            .any(|l| l.contains("tap0") && l.contains("LOWER_UP")),
        "the VM's tap is not up on the bridge:\n{taps}"
    );
    vm.wait_for(r"Linux version ", WAIT)?;
    let to_kernel = vm.uptime();
    let line = vm.wait_for(r"Command line: [^\r\n]*", WAIT)?;
    let want = pc.command_line(&test_kernel_args(None, std::slice::from_ref(&marker)).join(" "));
    ensure!(
        line.trim_end() == format!("Command line: {want}"),
        "the kernel's command line is not the entry's options and the SMBIOS \
         {CMDLINE_EXTRA} string:\n  got:  {line}\n  want: Command line: {want}"
    );
    // panic=-1 came through SMBIOS too: the panic resets, QEMU ends.
    vm.wait_for(r"Kernel panic - not syncing", WAIT)?;
    let status = vm.wait_exit(Duration::from_secs(60))?;
    let to_exit = vm.uptime();
    eprintln!(
        "TIMING ovmf ({}): fixture {:.1} s; QEMU start to OVMF starting systemd-boot {:.1} s, \
         to the kernel's first line {:.1} s, to QEMU's exit after the panic {:.1} s ({status})",
        vm.accel().name(),
        prepared.as_secs_f64(),
        to_loader.as_secs_f64(),
        to_kernel.as_secs_f64(),
        to_exit.as_secs_f64()
    );
    Ok(())
}

#[test]
fn systemd_boot_versions_and_pe_headers_are_read() {
    let mut efi = vec![0u8; 0x200];
    efi[..2].copy_from_slice(b"MZ");
    efi[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    efi[0x80..0x84].copy_from_slice(b"PE\0\0");
    efi[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    assert!(is_pe_x86_64(&efi));
    efi[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
    assert!(!is_pe_x86_64(&efi), "an arm64 PE");
    let mut sd = b"xx#### LoaderInfo: systemd-boot 257.13-1~deb13u1 ####yy".to_vec();
    assert_eq!(
        loader_version(&sd),
        Some(("257.13-1~deb13u1".to_owned(), 257))
    );
    sd = b"#### LoaderInfo: systemd-boot 254.26-1~bpo12+1 ####".to_vec();
    assert_eq!(loader_version(&sd).map(|v| v.1), Some(254));
    assert_eq!(loader_version(b"no magic"), None);
}
