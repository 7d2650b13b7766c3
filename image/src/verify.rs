//! Checks any Raspberry Pi image (ours or a stock one) or pibake pc-efi image without
//! mounting it: partition table, FAT and ext4 consistency (fsck.vfat -n, e2fsck -fn),
//! cmdline.txt root and config.txt references and line lengths (Pi), or the loader at the
//! removable path and its entry's kernel, initrd and root (EFI, [`crate::efi`]), and identity
//! that must not be baked (SSH host keys, machine-id). Problems in the image are findings; only failures to check are errors.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use fatfs::{FileSystem, FsOptions};

use crate::efi;
use crate::table::{self, Partition, Table};
use crate::window::Window;

/// The firmware silently truncates longer config.txt lines.
pub const MAX_CONFIG_LINE: usize = 98;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    PartitionTable,
    BootFilesystem,
    RootFilesystem,
    Cmdline,
    ConfigReference,
    ConfigLineTooLong,
    /// A config.txt with a `[pi5]` section lacks what a Pi 5 boots with.
    Pi5Boot,
    /// The EFI system partition of a pc-efi image lacks what UEFI firmware boots with.
    EfiBoot,
    SshHostKey,
    MachineId,
}

/// One problem found in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// Where: `config.txt:7`, `partition 2`, `/etc/ssh/ssh_host_ed25519_key`, ...
    pub location: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{tool} not found: apt-get install {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot extract partition {number} to {path}")]
    Extract {
        number: u32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn finding(kind: FindingKind, location: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding {
        kind,
        location: location.into(),
        message: message.into(),
    }
}

/// Verifies `image`; scratch copies of the partitions go to `work_dir` and are removed.
pub fn verify_image(image: &Path, work_dir: &Path) -> Result<Vec<Finding>, VerifyError> {
    let oerr = |source| VerifyError::Open {
        path: image.to_owned(),
        source,
    };
    let mut f = File::open(image).map_err(oerr)?;
    let disk_len = f.metadata().map_err(oerr)?.len();
    let mut out = Vec::new();
    let table = match table::read_table(&mut f, disk_len) {
        Ok(t) => t,
        Err(e) => {
            out.push(finding(
                FindingKind::PartitionTable,
                "sector 0",
                format!("no usable partition table: {e}"),
            ));
            return Ok(out);
        }
    };
    check_table(&table, disk_len, &mut out);
    let parts = table.partitions();
    let Some(boot) = parts
        .iter()
        .find(|p| p.kind.is_fat() && p.start + p.len <= disk_len)
    else {
        out.push(finding(
            FindingKind::PartitionTable,
            "partition table",
            "no FAT boot partition",
        ));
        return Ok(out);
    };

    // Boot partition.
    let boot_copy = tempfile::Builder::new()
        .prefix("pibake-verify-boot.")
        .tempfile_in(work_dir)
        .map_err(|source| VerifyError::Extract {
            number: boot.number,
            path: work_dir.to_owned(),
            source,
        })?;
    extract(&f, boot, boot_copy.as_file()).map_err(|source| VerifyError::Extract {
        number: boot.number,
        path: boot_copy.path().to_owned(),
        source,
    })?;
    let loc = format!("partition {} (FAT)", boot.number);
    let (code, text) = run_tool(
        "fsck.vfat",
        "dosfstools",
        Command::new("fsck.vfat").arg("-n").arg(boot_copy.path()),
    )?;
    if code != Some(0) {
        out.push(finding(
            FindingKind::BootFilesystem,
            &loc,
            format!("fsck.vfat -n reports problems: {}", text.trim()),
        ));
    }
    let boot_files = match BootFiles::open(&f, boot) {
        Ok(b) => b,
        Err(e) => {
            out.push(finding(
                FindingKind::BootFilesystem,
                &loc,
                format!("cannot read the FAT filesystem: {e}"),
            ));
            return Ok(out);
        }
    };
    let root_part =
        if boot_files.exists(efi::REMOVABLE_LOADER) || boot_files.exists(efi::ENTRIES_DIR) {
            check_efi(&boot_files, &table, &mut out)
        } else {
            let root = check_cmdline(&boot_files, &table, &mut out);
            if let Some(config) = check_config(&boot_files, &mut out) {
                check_pi5(&boot_files, &config, &mut out);
            }
            root
        };
    drop(boot_files);
    drop(boot_copy);

    // Root partition.
    let root = root_part.or_else(|| {
        parts
            .iter()
            .find(|p| p.kind.is_linux() && p.number != boot.number)
            .cloned()
    });
    let Some(root) = root else {
        out.push(finding(
            FindingKind::PartitionTable,
            "partition table",
            "no Linux root partition",
        ));
        return Ok(out);
    };
    if root.start + root.len > disk_len {
        return Ok(out);
    }
    let rloc = format!("partition {} (root)", root.number);
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(root.start + 1024))
        .and_then(|_| f.read_exact(&mut sb))
        .map_err(oerr)?;
    if sb[56..58] != [0x53, 0xef] {
        out.push(finding(
            FindingKind::RootFilesystem,
            &rloc,
            "not an ext2/3/4 filesystem (no superblock magic)",
        ));
        return Ok(out);
    }
    let root_copy = tempfile::Builder::new()
        .prefix("pibake-verify-root.")
        .tempfile_in(work_dir)
        .map_err(|source| VerifyError::Extract {
            number: root.number,
            path: work_dir.to_owned(),
            source,
        })?;
    extract(&f, &root, root_copy.as_file()).map_err(|source| VerifyError::Extract {
        number: root.number,
        path: root_copy.path().to_owned(),
        source,
    })?;
    let rp = root_copy.path();
    let (code, text) = run_tool(
        "e2fsck",
        "e2fsprogs",
        Command::new("e2fsck").arg("-fn").arg(rp),
    )?;
    if code != Some(0) {
        out.push(finding(
            FindingKind::RootFilesystem,
            &rloc,
            format!("e2fsck -fn reports problems: {}", text.trim()),
        ));
    }
    let (_, ls) = debugfs(rp, "ls -l /etc/ssh")?;
    for name in ls.lines().filter_map(|l| l.split_whitespace().last()) {
        if name.starts_with("ssh_host_") {
            out.push(finding(
                FindingKind::SshHostKey,
                format!("/etc/ssh/{name}"),
                "SSH host key baked into the image: every card would share it",
            ));
        }
    }
    let (_, stat) = debugfs(rp, "stat /etc/machine-id")?;
    if stat.contains("Type: regular") {
        let (_, id) = debugfs(rp, "cat /etc/machine-id")?;
        let id = id.trim();
        if !(id.is_empty() || id == "uninitialized") {
            out.push(finding(FindingKind::MachineId, "/etc/machine-id", format!("machine-id {id:?} baked into the image (want missing, empty or \"uninitialized\")")));
        }
    }
    Ok(out)
}

fn check_table(t: &Table, disk_len: u64, out: &mut Vec<Finding>) {
    if let Table::Gpt { problems, .. } = t {
        for p in problems {
            out.push(finding(FindingKind::PartitionTable, "GPT", p.clone()));
        }
    }
    let parts = t.partitions();
    if parts.is_empty() {
        out.push(finding(
            FindingKind::PartitionTable,
            "partition table",
            "no partitions",
        ));
    }
    for p in parts {
        if p.start + p.len > disk_len {
            out.push(finding(
                FindingKind::PartitionTable,
                format!("partition {}", p.number),
                format!(
                    "ends at byte {} beyond the end of the image ({disk_len})",
                    p.start + p.len
                ),
            ));
        }
        if p.start < 512 {
            out.push(finding(
                FindingKind::PartitionTable,
                format!("partition {}", p.number),
                "starts inside the partition table",
            ));
        }
        for q in parts.iter().filter(|q| q.number > p.number) {
            if p.start < q.start + q.len && q.start < p.start + p.len {
                out.push(finding(
                    FindingKind::PartitionTable,
                    format!("partition {}", p.number),
                    format!("overlaps partition {}", q.number),
                ));
            }
        }
    }
}

/// Read access to the files of the boot partition (case-insensitive, as the firmware).
struct BootFiles<'a> {
    fs: FileSystem<Window<&'a File>>,
}

impl<'a> BootFiles<'a> {
    fn open(f: &'a File, p: &Partition) -> io::Result<Self> {
        let w = Window::new(f, p.start, p.len)?;
        Ok(Self {
            fs: FileSystem::new(w, FsOptions::new())?,
        })
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let mut file = self
            .fs
            .root_dir()
            .open_file(path.trim_start_matches('/'))
            .ok()?;
        let mut v = Vec::new();
        file.read_to_end(&mut v).ok()?;
        Some(v)
    }
    fn exists(&self, path: &str) -> bool {
        let p = path.trim_start_matches('/');
        self.fs.root_dir().open_file(p).is_ok() || self.fs.root_dir().open_dir(p).is_ok()
    }
}

/// Checks cmdline.txt; returns the partition its `root=` names, if it names one.
fn check_cmdline(b: &BootFiles<'_>, t: &Table, out: &mut Vec<Finding>) -> Option<Partition> {
    let Some(raw) = b.read("cmdline.txt") else {
        out.push(finding(FindingKind::Cmdline, "cmdline.txt", "missing"));
        return None;
    };
    let text = String::from_utf8_lossy(&raw);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if body.contains('\n') || body.contains('\r') {
        out.push(finding(
            FindingKind::Cmdline,
            "cmdline.txt",
            "must be a single line (the firmware reads only the first)",
        ));
    }
    let first = body.lines().next().unwrap_or("");
    let Some(root) = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root="))
    else {
        out.push(finding(
            FindingKind::Cmdline,
            "cmdline.txt",
            "no root= parameter",
        ));
        return None;
    };
    match root_partition(root, t) {
        Ok(found) => found,
        Err(message) => {
            out.push(finding(FindingKind::Cmdline, "cmdline.txt", message));
            None
        }
    }
}

/// The partition a kernel's `root=` value names: `Ok(None)` for UUID=/LABEL= (they name a
/// filesystem, not a partition, and are accepted unlocated), `Err` saying why when it names no
/// Linux partition of the image.
fn root_partition(root: &str, t: &Table) -> Result<Option<Partition>, String> {
    let parts = t.partitions();
    let found = if let Some(id) = root.strip_prefix("PARTUUID=") {
        parts
            .iter()
            .find(|p| {
                t.partuuid(p.number)
                    .is_some_and(|u| u.eq_ignore_ascii_case(id))
            })
            .cloned()
    } else if let Some(dev) = root.strip_prefix("/dev/") {
        // mmcblk0p2, nvme0n1p2, sda2, vda2: the trailing number is the partition.
        let digits: String = dev
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits
            .parse::<u32>()
            .ok()
            .and_then(|n| parts.iter().find(|p| p.number == n).cloned())
    } else {
        return Ok(None);
    };
    match found {
        None => Err(format!("root={root} matches no partition of the image")),
        Some(p) if !p.kind.is_linux() => Err(format!(
            "root={root} names partition {}, which is not a Linux partition",
            p.number
        )),
        Some(p) => Ok(Some(p)),
    }
}

/// Checks the ESP of a pc-efi image: an x86-64 loader at the removable path, a loader.conf
/// whose default entry exists, that entry's kernel and initrds on the ESP, and its `root=`
/// naming the image's Linux partition (returned).
fn check_efi(b: &BootFiles<'_>, t: &Table, out: &mut Vec<Finding>) -> Option<Partition> {
    let mut bad = |location: &str, message: String| {
        out.push(finding(FindingKind::EfiBoot, location, message));
    };
    match b.read(efi::REMOVABLE_LOADER) {
        None => bad(
            efi::REMOVABLE_LOADER,
            "missing: Mac firmware and a fresh OVMF boot only the removable path".into(),
        ),
        Some(bytes) if !efi::is_pe_x86_64(&bytes) => bad(
            efi::REMOVABLE_LOADER,
            "not an x86-64 PE/COFF executable: UEFI firmware cannot run it".into(),
        ),
        Some(_) => {}
    }
    let entry_name = match b.read(efi::LOADER_CONF) {
        None => {
            bad(
                efi::LOADER_CONF,
                "missing: systemd-boot shows a menu and waits".into(),
            );
            format!("{}.conf", efi::ENTRY_ID)
        }
        Some(raw) => match efi::default_entry(&String::from_utf8_lossy(&raw)) {
            Some(name) => name.to_owned(),
            None => {
                bad(efi::LOADER_CONF, "no `default` entry".into());
                format!("{}.conf", efi::ENTRY_ID)
            }
        },
    };
    let path = format!("{}/{entry_name}", efi::ENTRIES_DIR);
    let Some(raw) = b.read(&path) else {
        bad(&path, "missing: loader.conf's default names it".into());
        return None;
    };
    let entry = match efi::LoaderEntry::parse(&String::from_utf8_lossy(&raw)) {
        Ok(e) => e,
        Err(why) => {
            bad(&path, why);
            return None;
        }
    };
    for (what, file) in
        std::iter::once(("linux", &entry.linux)).chain(entry.initrd.iter().map(|i| ("initrd", i)))
    {
        if !b.exists(file) {
            bad(&path, format!("{what} {file} is not on the ESP"));
        }
    }
    let Some(root) = entry.root() else {
        bad(&path, "no root= in its options".into());
        return None;
    };
    root_partition(root, t).unwrap_or_else(|message| {
        bad(&path, message);
        None
    })
}

/// Checks config.txt; returns its text when there is one.
fn check_config(b: &BootFiles<'_>, out: &mut Vec<Finding>) -> Option<String> {
    let Some(raw) = b.read("config.txt") else {
        out.push(finding(
            FindingKind::ConfigReference,
            "config.txt",
            "missing",
        ));
        return None;
    };
    let text = String::from_utf8_lossy(&raw);
    let mut os_prefix = String::new();
    let mut overlay_prefix = "overlays/".to_owned();
    for (i, line) in text.lines().enumerate() {
        let loc = format!("config.txt:{}", i + 1);
        let line = line.trim_end_matches('\r');
        let n = line.chars().count();
        if n > MAX_CONFIG_LINE {
            out.push(finding(
                FindingKind::ConfigLineTooLong,
                &loc,
                format!(
                    "line is {n} characters; the firmware truncates lines over {MAX_CONFIG_LINE}"
                ),
            ));
        }
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
            continue;
        }
        let mut need = |path: String, what: &str| {
            if !b.exists(&path) {
                out.push(finding(
                    FindingKind::ConfigReference,
                    &loc,
                    format!("{what} {path} is not on the boot partition"),
                ));
            }
        };
        if let Some(rest) = l
            .strip_prefix("initramfs ")
            .or_else(|| l.strip_prefix("initramfs\t"))
        {
            if let Some(file) = rest.split_whitespace().next() {
                need(format!("{os_prefix}{file}"), "initramfs");
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix("include ") {
            need(rest.trim().to_owned(), "included file");
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "os_prefix" => os_prefix = value.to_owned(),
            "overlay_prefix" => overlay_prefix = value.to_owned(),
            "kernel" | "ramfsfile" | "device_tree" if !value.is_empty() => {
                need(format!("{os_prefix}{value}"), key)
            }
            "dtoverlay" => {
                if let Some(name) = crate::dtbo::overlay_name(value) {
                    need(
                        format!("{os_prefix}{overlay_prefix}{name}.dtbo"),
                        "dtoverlay",
                    );
                }
            }
            _ => {}
        }
    }
    Some(text.into_owned())
}

/// The value of the last `key=` line (or `initramfs <file>`) of config.txt.
fn config_value(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if key == "initramfs" {
            if let Some(rest) = line.strip_prefix("initramfs ") {
                found = rest.split_whitespace().next().map(str::to_owned);
            }
        } else if let Some((k, v)) = line.split_once('=') {
            if k.trim() == key {
                found = Some(v.trim().to_owned());
            }
        }
    }
    found
}

/// For an image whose config.txt has a `[pi5]` section: the Pi 5's device
/// trees, a kernel, and an initramfs that loads the modules of
/// [`crate::pi5::INITRAMFS_MODULES`] (listed in its conf/modules, each one
/// in it or built in).
fn check_pi5(b: &BootFiles<'_>, text: &str, out: &mut Vec<Finding>) {
    if !text.lines().any(|l| l.trim() == "[pi5]") {
        return;
    }
    let prefix = config_value(text, "os_prefix").unwrap_or_default();
    let mut gap = |location: &str, message: String| {
        out.push(finding(FindingKind::Pi5Boot, location, message));
    };
    for dtb in crate::pi5::DTBS {
        if !b.exists(&format!("{prefix}{dtb}")) {
            gap(dtb, "missing: the Pi 5's firmware needs it".into());
        }
    }
    let kernel = config_value(text, "kernel").unwrap_or_else(|| "kernel_2712.img".into());
    if !b.exists(&format!("{prefix}{kernel}")) {
        gap(
            &kernel,
            "the Pi 5's kernel is not on the boot partition".into(),
        );
    }
    let Some(initrd) = config_value(text, "initramfs") else {
        gap(
            "config.txt",
            "no initramfs line: a Pi 5 needs its RP1 and SD modules early".into(),
        );
        return;
    };
    let Some(data) = b.read(&format!("{prefix}{initrd}")) else {
        return; // check_config reports the missing file.
    };
    let files = match crate::initramfs::files(&data) {
        Ok(f) => f,
        Err(e) => return gap(&initrd, format!("not a readable initramfs: {e}")),
    };
    let listed: Vec<String> = files
        .get("conf/modules")
        .map(|t| {
            String::from_utf8_lossy(t)
                .lines()
                .map(|l| crate::pi5::module_key(l.split_whitespace().next().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let (loadable, builtin) = crate::initramfs::modules(&files);
    for module in crate::pi5::INITRAMFS_MODULES {
        let key = crate::pi5::module_key(module);
        if !listed.contains(&key) {
            gap(
                &initrd,
                format!("conf/modules does not load {module} early"),
            );
        } else if !loadable.contains(&key) && !builtin.contains(&key) {
            gap(
                &initrd,
                format!("module {module} is neither in it nor built in"),
            );
        }
    }
}

/// Copies a partition into `dst`, skipping zero blocks so the copy stays sparse.
fn extract(src: &File, p: &Partition, dst: &File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let mut w = dst;
    while off < p.len {
        let n = usize::try_from((p.len - off).min(buf.len() as u64)).unwrap_or(buf.len());
        src.read_exact_at(&mut buf[..n], p.start + off)?;
        if buf[..n].iter().any(|&b| b != 0) {
            w.seek(SeekFrom::Start(off))?;
            w.write_all(&buf[..n])?;
        }
        off += n as u64;
    }
    dst.set_len(p.len)
}

fn run_tool(
    tool: &'static str,
    package: &'static str,
    cmd: &mut Command,
) -> Result<(Option<i32>, String), VerifyError> {
    let o = cmd
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| VerifyError::ToolMissing {
            tool,
            package,
            source,
        })?;
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    Ok((o.status.code(), text))
}

fn debugfs(fs: &Path, request: &str) -> Result<(Option<i32>, String), VerifyError> {
    let o = Command::new("debugfs")
        .env("LC_ALL", "C")
        .arg("-R")
        .arg(request)
        .arg(fs)
        .output()
        .map_err(|source| VerifyError::ToolMissing {
            tool: "debugfs",
            package: "e2fsprogs",
            source,
        })?;
    // stdout carries the answer; stderr only the banner and "not found" messages.
    Ok((
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    ))
}
