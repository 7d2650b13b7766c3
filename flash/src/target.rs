//! The card (or file) to write, and the checks that keep a flash from destroying the wrong
//! disk: mounted, swapped on, held by device-mapper, or carrying the running system's root.
//! None of these can be overridden: unmount first, or pick another device.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot inspect the target {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("target {0} is neither a block device nor a regular file")]
    Kind(PathBuf),
    #[error("refusing to write {path}: {what} is mounted on {mount_point}; unmount it first")]
    Mounted {
        path: PathBuf,
        what: String,
        mount_point: String,
    },
    #[error("refusing to write {path}: {what} is in use as swap; swapoff it first")]
    Swap { path: PathBuf, what: String },
    #[error("refusing to write {path}: {what} is held by {holder} (device-mapper, RAID or LVM)")]
    Held {
        path: PathBuf,
        what: String,
        holder: String,
    },
    #[error("refusing to write {path}: it is the disk the running system's root (/) is on")]
    SystemDisk { path: PathBuf },
    #[error("refusing to write {path}: the target is {target_bytes} bytes, the image needs {image_bytes}")]
    TooSmall {
        path: PathBuf,
        target_bytes: u64,
        image_bytes: u64,
    },
    #[error("refusing to write {path}: it is the image itself")]
    IsSource { path: PathBuf },
}

/// A block device number, as `major:minor` in /proc and /sys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    pub fn from_raw(raw: u64) -> Self {
        Self {
            major: rustix::fs::major(raw),
            minor: rustix::fs::minor(raw),
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for DevNum {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.trim().split_once(':').ok_or(())?;
        Ok(Self {
            major: a.parse().map_err(|_| ())?,
            minor: b.parse().map_err(|_| ())?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A whole disk (or partition) device; `bytes` is its size.
    BlockDevice {
        dev: DevNum,
        bytes: u64,
        model: Option<String>,
    },
    /// A regular file, created or replaced; it is sized to the image.
    File,
}

/// What the target is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub kind: TargetKind,
}

impl Target {
    pub fn inspect(path: &Path) -> Result<Self, TargetError> {
        let io = |source| TargetError::Io {
            path: path.to_owned(),
            source,
        };
        let md = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: path.to_owned(),
                    kind: TargetKind::File,
                });
            }
            Err(e) => return Err(io(e)),
        };
        let ft = md.file_type();
        if ft.is_file() {
            return Ok(Self {
                path: path.to_owned(),
                kind: TargetKind::File,
            });
        }
        if !ft.is_block_device() {
            return Err(TargetError::Kind(path.to_owned()));
        }
        let dev = DevNum::from_raw(md.rdev());
        // lseek(SEEK_END) on a block device gives its size without an ioctl.
        let bytes = File::open(path)
            .and_then(|mut f| f.seek(SeekFrom::End(0)))
            .map_err(io)?;
        let model = fs::read_to_string(
            Path::new(SYS_DEV_BLOCK)
                .join(dev.to_string())
                .join("device/model"),
        )
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
        Ok(Self {
            path: path.to_owned(),
            kind: TargetKind::BlockDevice { dev, bytes, model },
        })
    }

    pub fn is_device(&self) -> bool {
        matches!(self.kind, TargetKind::BlockDevice { .. })
    }

    /// A line for the confirmation prompt.
    pub fn describe(&self) -> String {
        match &self.kind {
            TargetKind::BlockDevice { bytes, model, .. } => {
                let gb = *bytes as f64 / 1e9;
                match model {
                    Some(m) => format!("{} ({m}, {gb:.1} GB)", self.path.display()),
                    None => format!("{} ({gb:.1} GB)", self.path.display()),
                }
            }
            TargetKind::File => format!("file {}", self.path.display()),
        }
    }
}

/// The device number of `path` if it is a block device (symlinks followed).
pub fn device_number(path: &Path) -> Result<Option<DevNum>, TargetError> {
    match fs::metadata(path) {
        Ok(md) if md.file_type().is_block_device() => Ok(Some(DevNum::from_raw(md.rdev()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TargetError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// The host state the safety checks read; tests build one from text.
#[derive(Clone, Debug)]
pub struct HostView {
    /// `/proc/self/mountinfo`.
    pub mountinfo: String,
    /// `/proc/swaps`.
    pub swaps: String,
    /// `/sys/dev/block`, whose entries link to each device's sysfs directory.
    pub sys_dev_block: PathBuf,
    /// Device of the filesystem at `/`.
    pub root_dev: DevNum,
}

impl HostView {
    pub fn current() -> io::Result<Self> {
        Ok(Self {
            mountinfo: fs::read_to_string("/proc/self/mountinfo")?,
            swaps: fs::read_to_string("/proc/swaps").unwrap_or_default(),
            sys_dev_block: PathBuf::from(SYS_DEV_BLOCK),
            root_dev: DevNum::from_raw(fs::metadata("/")?.dev()),
        })
    }

    fn sys(&self, d: DevNum) -> PathBuf {
        self.sys_dev_block.join(d.to_string())
    }

    /// The disk a partition belongs to (itself for a whole disk).
    pub fn disk_of(&self, d: DevNum) -> DevNum {
        let dir = self.sys(d);
        if dir.join("partition").exists() {
            if let Ok(real) = fs::canonicalize(&dir) {
                if let Some(parent) = real.parent().and_then(|p| read_dev(&p.join("dev"))) {
                    return parent;
                }
            }
        }
        d
    }

    /// The partitions of a whole disk.
    pub fn partitions_of(&self, disk: DevNum) -> Vec<DevNum> {
        let Ok(real) = fs::canonicalize(self.sys(disk)) else {
            return Vec::new();
        };
        let Ok(rd) = fs::read_dir(&real) else {
            return Vec::new();
        };
        let mut v: Vec<DevNum> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("partition").exists())
            .filter_map(|p| read_dev(&p.join("dev")))
            .collect();
        v.sort();
        v
    }

    /// Whole disks under a device, through partitions and device-mapper/RAID slaves.
    fn base_disks(&self, d: DevNum, out: &mut BTreeSet<DevNum>, depth: u32) {
        let disk = self.disk_of(d);
        let slaves: Vec<DevNum> = fs::read_dir(self.sys(disk).join("slaves"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| read_dev(&e.path().join("dev")))
                    .collect()
            })
            .unwrap_or_default();
        if slaves.is_empty() || depth > 8 {
            out.insert(disk);
        } else {
            for s in slaves {
                self.base_disks(s, out, depth + 1);
            }
        }
    }

    /// Disks carrying `/`: from the root's device number, or (btrfs, overlay roots have
    /// anonymous numbers) from the device named as the source of the `/` mount.
    pub fn system_disks(&self) -> BTreeSet<DevNum> {
        let mut out = BTreeSet::new();
        let mut roots = vec![self.root_dev];
        for m in parse_mountinfo(&self.mountinfo) {
            if m.mount_point == "/" {
                roots.push(m.dev);
                if let Ok(md) = fs::metadata(&m.source) {
                    if md.file_type().is_block_device() {
                        roots.push(DevNum::from_raw(md.rdev()));
                    }
                }
            }
        }
        for r in roots {
            // Major 0 is an anonymous device (tmpfs, overlay, btrfs subvolume): no disk.
            if r.major != 0 {
                self.base_disks(r, &mut out, 0);
            }
        }
        out
    }

    /// Refuses a device that is, or has a partition that is, mounted, swapped on or held.
    pub fn check_device(&self, path: &Path, dev: DevNum) -> Result<(), TargetError> {
        let disk = self.disk_of(dev);
        if self.system_disks().contains(&disk) {
            return Err(TargetError::SystemDisk {
                path: path.to_owned(),
            });
        }
        let mut devs = vec![dev];
        if disk == dev {
            devs.extend(self.partitions_of(dev));
        }
        let name = |d: DevNum| -> String {
            fs::canonicalize(self.sys(d))
                .ok()
                .and_then(|p| {
                    p.file_name()
                        .map(|n| format!("/dev/{}", n.to_string_lossy()))
                })
                .unwrap_or_else(|| format!("device {d}"))
        };
        for m in parse_mountinfo(&self.mountinfo) {
            if devs.contains(&m.dev) {
                return Err(TargetError::Mounted {
                    path: path.to_owned(),
                    what: name(m.dev),
                    mount_point: m.mount_point,
                });
            }
        }
        for line in self.swaps.lines().skip(1) {
            let Some(file) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(md) = fs::metadata(unescape(file)) {
                if md.file_type().is_block_device() && devs.contains(&DevNum::from_raw(md.rdev())) {
                    return Err(TargetError::Swap {
                        path: path.to_owned(),
                        what: file.to_owned(),
                    });
                }
            }
        }
        for &d in &devs {
            if let Ok(rd) = fs::read_dir(self.sys(d).join("holders")) {
                if let Some(h) = rd.flatten().next() {
                    return Err(TargetError::Held {
                        path: path.to_owned(),
                        what: name(d),
                        holder: h.file_name().to_string_lossy().into_owned(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn read_dev(p: &Path) -> Option<DevNum> {
    fs::read_to_string(p).ok()?.parse().ok()
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevNum,
    pub mount_point: String,
    pub source: String,
}

/// Parses mountinfo: field 3 is `major:minor`, field 5 the mount point, and after the `-`
/// separator come the filesystem type and the source.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dev = f.get(2)?.parse().ok()?;
            let mount_point = unescape(f.get(4)?);
            let sep = f.iter().position(|x| *x == "-")?;
            let source = unescape(f.get(sep + 2)?);
            Some(Mount {
                dev,
                mount_point,
                source,
            })
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in paths as octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let t = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                 90 27 7:3 / /mnt/my\\040card rw shared:5 - vfat /dev/loop3p1 rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].dev,
            DevNum {
                major: 254,
                minor: 0
            }
        );
        assert_eq!(m[1].mount_point, "/mnt/my card");
        assert_eq!(m[1].source, "/dev/loop3p1");
    }

    #[test]
    fn refuses_the_root_disk_of_this_host() -> anyhow::Result<()> {
        let host = HostView::current()?;
        let Some(&root) = host.system_disks().iter().next() else {
            anyhow::bail!("no system disk found for / on this host");
        };
        let e = host
            .check_device(Path::new("/dev/rootdisk"), root)
            .expect_err("root disk refused");
        assert!(matches!(e, TargetError::SystemDisk { .. }), "{e}");
        Ok(())
    }

    #[test]
    fn a_mounted_device_number_is_refused() {
        let host = HostView {
            mountinfo: "90 27 7:99 / /mnt/x rw - vfat /dev/loop99 rw\n".to_owned(),
            swaps: String::new(),
            sys_dev_block: PathBuf::from("/nonexistent"),
            root_dev: DevNum { major: 0, minor: 1 },
        };
        let e = host
            .check_device(
                Path::new("/dev/loop99"),
                DevNum {
                    major: 7,
                    minor: 99,
                },
            )
            .expect_err("mounted");
        assert!(e.to_string().contains("mounted on /mnt/x"), "{e}");
        assert!(host
            .check_device(
                Path::new("/dev/loop98"),
                DevNum {
                    major: 7,
                    minor: 98
                }
            )
            .is_ok());
    }
}
