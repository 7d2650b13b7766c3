//! Growing the root partition and its ext4 filesystem to the card: images are
//! sized to their content, cards are bigger.

use crate::root::Root;
use crate::system::{run_checked, run_logged, Cmd, CommandError, CommandRunner};
use std::io;
use std::path::PathBuf;

/// The block devices holding the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    /// Whole disk, e.g. `/dev/mmcblk0`.
    pub disk: String,
    /// Partition number on it, e.g. 2.
    pub partition: u32,
    /// Partition device, e.g. `/dev/mmcblk0p2`.
    pub device: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("cannot find the root device (no usable root= on the kernel command line, no `/` in mountinfo)")]
    NotFound,
    #[error("cannot tell disk and partition number from device name {0:?}")]
    BadName(String),
    #[error("the root filesystem is on {0:?}, a whole disk, not a partition: nothing to grow")]
    NotAPartition(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// What growing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grown {
    /// The partition was enlarged.
    Grown,
    /// The partition already filled the card (growpart said NOCHANGE).
    AlreadyFull,
}

impl RootDevice {
    /// Splits a partition name like `mmcblk0p2`, `nvme0n1p2`, `sda2`, `vda2` by the kernel's
    /// naming rule: a disk whose name ends in a digit separates the partition number with
    /// `p` (`nvme0n1` → `nvme0n1p2`), any other disk appends it (`sda` → `sda2`).
    ///
    /// A name alone cannot tell a whole disk from a partition (`nvme0n1` also reads as
    /// partition 1 of a disk `nvme0n`), so [`find_root_device`] asks sysfs first and uses
    /// this only where sysfs does not know the name.
    pub fn from_partition_name(name: &str) -> Result<Self, GrowError> {
        let bad = || GrowError::BadName(name.to_owned());
        if name.contains('/') {
            return Err(bad());
        }
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits == name.len() {
            return Err(bad());
        }
        let (stem, number) = name.split_at(name.len() - digits);
        let partition: u32 = number.parse().map_err(|_| bad())?;
        if partition == 0 {
            return Err(bad()); // partitions count from 1
        }
        // Disks whose name ends in a digit separate the partition with `p`.
        let disk = match stem.strip_suffix('p') {
            Some(d) if d.ends_with(|c: char| c.is_ascii_digit()) => d,
            _ => stem,
        };
        if disk.is_empty() {
            return Err(bad());
        }
        Ok(RootDevice {
            disk: format!("/dev/{disk}"),
            partition,
            device: format!("/dev/{name}"),
        })
    }
}

/// Finds the root device: `root=` of the kernel command line (a `/dev/` path
/// or `PARTUUID=` resolved through /dev/disk/by-partuuid), else the device
/// number of `/` in /proc/self/mountinfo. The partition's disk and number
/// come from sysfs (the device's directory under its disk's, and its
/// `partition` file), which knows them for every naming (`sda2`, `vda2`,
/// `nvme0n1p2`, `mmcblk0p2`); a name sysfs does not know is split by
/// [`RootDevice::from_partition_name`].
pub fn find_root_device(root: &Root) -> Result<RootDevice, GrowError> {
    if let Some(dev) = from_cmdline(root)? {
        return Ok(dev);
    }
    from_mountinfo(root)
}

fn read(root: &Root, path: &str) -> Result<Option<String>, GrowError> {
    let full = root.at(path);
    match std::fs::read_to_string(&full) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(GrowError::Read { path: full, source }),
    }
}

fn from_cmdline(root: &Root) -> Result<Option<RootDevice>, GrowError> {
    let Some(cmdline) = read(root, "proc/cmdline")? else {
        return Ok(None);
    };
    let Some(value) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root="))
    else {
        return Ok(None);
    };
    let name = if let Some(dev) = value.strip_prefix("/dev/") {
        dev.to_owned()
    } else if let Some(uuid) = value.strip_prefix("PARTUUID=") {
        let link = root.at(&format!(
            "dev/disk/by-partuuid/{}",
            uuid.to_ascii_lowercase()
        ));
        match std::fs::read_link(&link) {
            Ok(target) => match target.file_name() {
                Some(n) => n.to_string_lossy().into_owned(),
                None => return Ok(None),
            },
            Err(_) => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    if name == "root" {
        return Ok(None); // /dev/root names nothing real
    }
    if name.contains('/') {
        // /dev/disk/by-*/… or /dev/mapper/…: not a partition name.
        return Ok(None);
    }
    let sys = format!("sys/class/block/{name}");
    if std::fs::symlink_metadata(root.at(&sys)).is_ok() {
        return from_sysfs(root, &sys).map(Some);
    }
    RootDevice::from_partition_name(&name).map(Some)
}

fn from_mountinfo(root: &Root) -> Result<RootDevice, GrowError> {
    let info = read(root, "proc/self/mountinfo")?.ok_or(GrowError::NotFound)?;
    // Fields: id parent major:minor root mount-point ...; the last `/` wins
    // (mounts stack).
    let majmin = info
        .lines()
        .rev()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 4 && f[4] == "/").then(|| f[2].to_owned())
        })
        .next()
        .ok_or(GrowError::NotFound)?;
    from_sysfs(root, &format!("sys/dev/block/{majmin}"))
}

/// The partition whose sysfs link is `sys` (`sys/class/block/<name>` or
/// `sys/dev/block/<major:minor>`, both links to the device's directory,
/// which sits in its disk's: `…/block/nvme0n1/nvme0n1p2`). A device without a
/// `partition` file is a whole disk, which growpart cannot grow.
fn from_sysfs(root: &Root, sys: &str) -> Result<RootDevice, GrowError> {
    let target = std::fs::read_link(root.at(sys)).map_err(|source| GrowError::Read {
        path: root.at(sys),
        source,
    })?;
    let part = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or(GrowError::NotFound)?;
    let disk = target
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or(GrowError::NotFound)?;
    let number = read(root, &format!("{sys}/partition"))?
        .ok_or_else(|| GrowError::NotAPartition(part.clone()))?;
    let partition = number
        .trim()
        .parse()
        .ok()
        .filter(|&n: &u32| n > 0)
        .ok_or_else(|| GrowError::BadName(part.clone()))?;
    Ok(RootDevice {
        disk: format!("/dev/{disk}"),
        partition,
        device: format!("/dev/{part}"),
    })
}

/// Grows the root partition (growpart) then its filesystem (resize2fs).
/// resize2fs runs even after NOCHANGE: a crash between the two must not
/// leave a grown partition with a small filesystem.
pub fn grow(root: &Root, runner: &dyn CommandRunner) -> Result<Grown, GrowError> {
    let dev = find_root_device(root)?;
    let cmd = Cmd::new("growpart")
        .arg(&dev.disk)
        .arg(dev.partition.to_string());
    let out = run_logged(runner, &cmd)?;
    let grown = if out.success() {
        Grown::Grown
    } else if out.code == Some(1) && out.stdout.contains("NOCHANGE") {
        Grown::AlreadyFull
    } else {
        return Err(CommandError::Failed {
            cmd: cmd.to_string(),
            code: out.code,
            stderr: format!("{} {}", out.stdout.trim(), out.stderr.trim()),
        }
        .into());
    };
    run_checked(runner, &Cmd::new("resize2fs").arg(&dev.device))?;
    Ok(grown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str) -> anyhow::Result<(String, u32, String)> {
        let d = RootDevice::from_partition_name(name)?;
        Ok((d.disk, d.partition, d.device))
    }

    fn dev(disk: &str, partition: u32, device: &str) -> (String, u32, String) {
        (disk.to_owned(), partition, device.to_owned())
    }

    #[test]
    fn partition_names_of_every_disk_kind() -> anyhow::Result<()> {
        // Pi: SD card (and eMMC).
        assert_eq!(
            split("mmcblk0p2")?,
            dev("/dev/mmcblk0", 2, "/dev/mmcblk0p2")
        );
        assert_eq!(
            split("mmcblk1p2")?,
            dev("/dev/mmcblk1", 2, "/dev/mmcblk1p2")
        );
        // pc-efi: SATA/SCSI (the Mac Mini's SSD, Proxmox scsi0), virtio, NVMe.
        assert_eq!(split("sda2")?, dev("/dev/sda", 2, "/dev/sda2"));
        assert_eq!(split("vda2")?, dev("/dev/vda", 2, "/dev/vda2"));
        assert_eq!(
            split("nvme0n1p2")?,
            dev("/dev/nvme0n1", 2, "/dev/nvme0n1p2")
        );
        assert_eq!(
            split("nvme0n1p12")?,
            dev("/dev/nvme0n1", 12, "/dev/nvme0n1p12")
        );
        // A disk whose name ends in `p` appends the number like any other letter.
        assert_eq!(split("sdp2")?, dev("/dev/sdp", 2, "/dev/sdp2"));
        assert_eq!(split("vdp12")?, dev("/dev/vdp", 12, "/dev/vdp12"));
        assert_eq!(split("xvda2")?, dev("/dev/xvda", 2, "/dev/xvda2"));
        assert_eq!(split("loop0p2")?, dev("/dev/loop0", 2, "/dev/loop0p2"));
        for bad in ["sda", "12", "mmcblk0", "sda0", "disk/by-id/x2", ""] {
            assert!(RootDevice::from_partition_name(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
