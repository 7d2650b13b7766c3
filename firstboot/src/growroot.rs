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
    /// Splits a partition name like `mmcblk0p2`, `nvme0n1p2`, `sda2`, `vda2`.
    pub fn from_partition_name(name: &str) -> Result<Self, GrowError> {
        let bad = || GrowError::BadName(name.to_owned());
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits == name.len() {
            return Err(bad());
        }
        let (stem, number) = name.split_at(name.len() - digits);
        let partition: u32 = number.parse().map_err(|_| bad())?;
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
/// number of `/` in /proc/self/mountinfo resolved through /sys/dev/block.
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
    let sys = format!("sys/dev/block/{majmin}");
    let target = std::fs::read_link(root.at(&sys)).map_err(|source| GrowError::Read {
        path: root.at(&sys),
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
    let number =
        read(root, &format!("{sys}/partition"))?.ok_or_else(|| GrowError::BadName(part.clone()))?;
    let partition = number
        .trim()
        .parse()
        .map_err(|_| GrowError::BadName(part.clone()))?;
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

    #[test]
    fn partition_names() -> anyhow::Result<()> {
        let d = RootDevice::from_partition_name("mmcblk0p2")?;
        assert_eq!((d.disk.as_str(), d.partition), ("/dev/mmcblk0", 2));
        let d = RootDevice::from_partition_name("nvme0n1p12")?;
        assert_eq!((d.disk.as_str(), d.partition), ("/dev/nvme0n1", 12));
        let d = RootDevice::from_partition_name("sda2")?;
        assert_eq!((d.disk.as_str(), d.partition), ("/dev/sda", 2));
        let d = RootDevice::from_partition_name("vda2")?;
        assert_eq!(
            (d.disk.as_str(), d.device.as_str()),
            ("/dev/vda", "/dev/vda2")
        );
        assert!(RootDevice::from_partition_name("sda").is_err());
        assert!(RootDevice::from_partition_name("12").is_err());
        Ok(())
    }
}
