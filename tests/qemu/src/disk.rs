//! A raw disk file: its MBR partitions, the FAT boot partition (read with
//! mtools at an offset) and the ext4 root (read with debugfs at an offset).
//! Nothing is mounted. The only write is [`RawDisk::replay_root_journal`],
//! meant for private snapshots of a VM that lost power.

use crate::tool::{self, DEBUGFS, MCOPY, MDIR};
use crate::{io_err, HarnessError, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One primary MBR partition, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `p1`, `p2`.
    pub number: u8,
    pub kind: u8,
    pub start: u64,
    pub size: u64,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Reads the primary partitions of an MBR (sector size 512).
pub fn mbr_partitions(mut disk: impl Read + Seek) -> std::result::Result<Vec<Partition>, String> {
    let mut sector = [0u8; 512];
    disk.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    disk.read_exact(&mut sector).map_err(|e| e.to_string())?;
    if sector[510..512] != [0x55, 0xAA] {
        return Err("no 0x55AA boot signature".to_owned());
    }
    let mut parts = Vec::new();
    for i in 0..4u8 {
        let e = &sector[446 + 16 * usize::from(i)..][..16];
        let kind = e[4];
        let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        let count = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
        if kind == 0 || count == 0 {
            continue;
        }
        if kind == 0xEE {
            return Err("protective MBR (GPT); this harness reads MBR images".to_owned());
        }
        parts.push(Partition {
            number: i + 1,
            kind,
            start: u64::from(lba) * 512,
            size: u64::from(count) * 512,
        });
    }
    Ok(parts)
}

/// A raw disk image file with an MBR: partition 1 FAT boot, partition 2 ext4 root.
#[derive(Debug, Clone)]
pub struct RawDisk {
    path: PathBuf,
    parts: Vec<Partition>,
    len: u64,
}

impl RawDisk {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let parts = mbr_partitions(file).map_err(|why| HarnessError::Partitions {
            path: path.to_owned(),
            why,
        })?;
        let disk = RawDisk {
            path: path.to_owned(),
            parts,
            len,
        };
        disk.partition(1)?;
        disk.partition(2)?;
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the disk file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.parts
    }

    pub fn partition(&self, number: u8) -> Result<Partition> {
        self.parts
            .iter()
            .copied()
            .find(|p| p.number == number)
            .ok_or_else(|| HarnessError::Partitions {
                path: self.path.clone(),
                why: format!("no partition {number}"),
            })
    }

    /// Replays the root filesystem's journal when it needs recovery (a VM
    /// killed mid-write), as the kernel would on the next mount, so that what
    /// the tests read is what the next boot sees. debugfs cannot replay at an
    /// offset, so the partition is copied out, replayed, and the chunks that
    /// changed are written back. Returns whether anything was replayed.
    pub fn replay_root_journal(&self) -> Result<bool> {
        if !self.root()?.needs_recovery()? {
            return Ok(false);
        }
        let root = self.partition(2)?;
        let scratch = self.path.with_extension("root-replay");
        copy_range(&self.path, root.start, &scratch, 0, root.size, false)?;
        let replayed = Ext4 {
            target: scratch.display().to_string(),
        };
        let result = replayed.journal_run().and_then(|()| {
            if replayed.needs_recovery()? {
                return Err(HarnessError::Invalid(format!(
                    "{}: the root journal still needs recovery after journal_run",
                    self.path.display()
                )));
            }
            copy_range(&scratch, 0, &self.path, root.start, root.size, true)
        });
        let _ = std::fs::remove_file(&scratch);
        result.map(|()| true)
    }

    /// The boot partition (p1, FAT).
    pub fn boot(&self) -> Result<Fat> {
        Ok(Fat {
            target: format!("{}@@{}", self.path.display(), self.partition(1)?.start),
        })
    }

    /// The root partition (p2, ext4).
    pub fn root(&self) -> Result<Ext4> {
        Ok(Ext4 {
            target: format!(
                "{}?offset={}",
                self.path.display(),
                self.partition(2)?.start
            ),
        })
    }
}

/// Copies `len` bytes from `src` at `src_at` to `dst` at `dst_at` in 1 MiB
/// chunks. All-zero chunks are skipped when the destination is new (it stays
/// sparse); with `only_changed` a chunk is written only where it differs, so
/// a write-back touches just what the journal replay changed.
fn copy_range(
    src: &Path,
    src_at: u64,
    dst: &Path,
    dst_at: u64,
    len: u64,
    only_changed: bool,
) -> Result<()> {
    use std::io::Write;
    const CHUNK: usize = 1 << 20;
    let mut input = std::fs::File::open(src).map_err(io_err(src))?;
    let mut output = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!only_changed)
        .open(dst)
        .map_err(io_err(dst))?;
    if !only_changed {
        output.set_len(dst_at + len).map_err(io_err(dst))?;
    }
    input.seek(SeekFrom::Start(src_at)).map_err(io_err(src))?;
    let mut chunk = vec![0u8; CHUNK];
    let mut existing = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        input.read_exact(&mut chunk[..n]).map_err(io_err(src))?;
        let at = dst_at + done;
        let write = if only_changed {
            output.seek(SeekFrom::Start(at)).map_err(io_err(dst))?;
            output.read_exact(&mut existing[..n]).map_err(io_err(dst))?;
            existing[..n] != chunk[..n]
        } else {
            chunk[..n].iter().any(|b| *b != 0)
        };
        if write {
            output.seek(SeekFrom::Start(at)).map_err(io_err(dst))?;
            output.write_all(&chunk[..n]).map_err(io_err(dst))?;
        }
        done += n as u64;
    }
    output.sync_all().map_err(io_err(dst))
}

/// A FAT filesystem read through mtools (`file@@offset`).
#[derive(Debug, Clone)]
pub struct Fat {
    target: String,
}

impl Fat {
    /// A FAT filesystem that is a whole file (offset 0).
    pub fn whole(path: &Path) -> Self {
        Fat {
            target: path.display().to_string(),
        }
    }

    /// The contents of `name` (path from the FAT root, `/` separated).
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let out = tool::run(
            MCOPY
                .command()?
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-n", "-i", &self.target])
                .arg(format!("::{name}"))
                .arg("-"),
        )?;
        Ok(out.stdout)
    }

    pub fn read_string(&self, name: &str) -> Result<String> {
        String::from_utf8(self.read(name)?).map_err(|_| {
            HarnessError::Invalid(format!("{name} on the boot partition is not UTF-8"))
        })
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        let out = MDIR
            .command()?
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-b", "-i", &self.target])
            .arg(format!("::{name}"))
            .output()
            .map_err(|source| HarnessError::Spawn {
                command: format!("mdir ::{name}"),
                source,
            })?;
        Ok(out.status.success())
    }

    /// Names (bare, no directory) in directory `dir` of the FAT.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let out = tool::run(
            MDIR.command()?
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-b", "-i", &self.target])
                .arg(format!("::{dir}")),
        )?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim_end_matches('/').rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Writes `content` as `name` (replacing it) into a FAT that is a whole file.
    pub fn write(&self, name: &str, content: &[u8]) -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new().map_err(io_err("temporary file"))?;
        std::io::Write::write_all(&mut tmp, content).map_err(io_err(tmp.path()))?;
        tool::run(
            MCOPY
                .command()?
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-o", "-i", &self.target])
                .arg(tmp.path())
                .arg(format!("::{name}")),
        )?;
        Ok(())
    }
}

/// Metadata of one ext4 inode, as debugfs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Permission bits (and set-id/sticky), without the file type.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// An ext4 filesystem read through debugfs (`file?offset=N`).
#[derive(Debug, Clone)]
pub struct Ext4 {
    target: String,
}

impl Ext4 {
    fn debugfs(&self, request: &str) -> Result<(Vec<u8>, String)> {
        let out = tool::run(DEBUGFS.command()?.args(["-R", request, &self.target]))?;
        Ok((
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Whether the journal holds transactions not yet written home.
    pub fn needs_recovery(&self) -> Result<bool> {
        let (out, _) = self.debugfs("stats")?;
        let text = String::from_utf8_lossy(&out);
        let features = text
            .lines()
            .find(|l| l.starts_with("Filesystem features:"))
            .ok_or_else(|| {
                HarnessError::Invalid(format!(
                    "debugfs stats of {}: no features line",
                    self.target
                ))
            })?;
        Ok(features.split_whitespace().any(|f| f == "needs_recovery"))
    }

    fn journal_run(&self) -> Result<()> {
        tool::run(
            DEBUGFS
                .command()?
                .args(["-w", "-R", "journal_run", &self.target]),
        )?;
        Ok(())
    }

    /// The contents of `path`, `None` when it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if self.stat(path)?.is_none() {
            return Ok(None);
        }
        let (out, _) = self.debugfs(&format!("cat \"{path}\""))?;
        Ok(Some(out))
    }

    pub fn read_string(&self, path: &str) -> Result<Option<String>> {
        self.read(path)?
            .map(|b| {
                String::from_utf8(b)
                    .map_err(|_| HarnessError::Invalid(format!("{path} in the root is not UTF-8")))
            })
            .transpose()
    }

    /// Owner, mode and size of `path`, `None` when it does not exist.
    pub fn stat(&self, path: &str) -> Result<Option<Stat>> {
        let (out, err) = self.debugfs(&format!("stat \"{path}\""))?;
        if err.contains("File not found") {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out);
        let field = |key: &str| -> Option<&str> {
            text.split_whitespace().skip_while(|w| *w != key).nth(1)
        };
        let bad = || {
            HarnessError::Invalid(format!(
                "debugfs stat {path}: cannot read:\n{text}\n{}",
                err.trim()
            ))
        };
        let mode = field("Mode:")
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or_else(bad)?;
        let uid = field("User:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        let gid = field("Group:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        let size = field("Size:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        Ok(Some(Stat {
            mode: mode & 0o7777,
            uid,
            gid,
            size,
        }))
    }

    /// Names in directory `dir` (without `.` and `..`), sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let (out, err) = self.debugfs(&format!("ls -p \"{dir}\""))?;
        if err.contains("File not found") {
            return Ok(Vec::new());
        }
        // `ls -p` lines: /inode/mode/uid/gid/name/size/
        let mut names: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split('/').nth(5))
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        for (i, (kind, lba, count)) in entries.iter().enumerate() {
            let e = &mut s[446 + 16 * i..][..16];
            e[4] = *kind;
            e[8..12].copy_from_slice(&lba.to_le_bytes());
            e[12..16].copy_from_slice(&count.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn reads_primary_partitions() {
        let parts = mbr_partitions(Cursor::new(mbr(&[(0x0C, 2048, 4096), (0x83, 6144, 100)])))
            .expect("valid table");
        assert_eq!(
            parts,
            vec![
                Partition {
                    number: 1,
                    kind: 0x0C,
                    start: 2048 * 512,
                    size: 4096 * 512
                },
                Partition {
                    number: 2,
                    kind: 0x83,
                    start: 6144 * 512,
                    size: 100 * 512
                }
            ]
        );
    }

    #[test]
    fn refuses_missing_signature_and_gpt() {
        let mut s = mbr(&[(0x0C, 1, 1)]);
        s[511] = 0;
        assert!(mbr_partitions(Cursor::new(s)).is_err());
        assert!(mbr_partitions(Cursor::new(mbr(&[(0xEE, 1, 100)]))).is_err());
    }

    #[test]
    fn copy_range_round_trips_and_writes_back_only_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path().join("disk");
        let part = dir.path().join("part");
        // 3 MiB + 5 bytes: a partial last chunk, and a middle chunk of zeros.
        let mut bytes = vec![0u8; (3 << 20) + 5];
        bytes[10] = 1;
        bytes[(2 << 20) + 7] = 2;
        bytes[(3 << 20) + 4] = 3;
        std::fs::write(&disk, &bytes).expect("write disk");
        copy_range(&disk, 4, &part, 0, (3 << 20) + 1, false).expect("copy out");
        assert_eq!(std::fs::read(&part).expect("read"), bytes[4..].to_vec());

        let mut changed = std::fs::read(&part).expect("read");
        changed[(1 << 20) + 3] = 9;
        std::fs::write(&part, &changed).expect("change");
        copy_range(&part, 0, &disk, 4, (3 << 20) + 1, true).expect("write back");
        bytes[(1 << 20) + 7] = 9;
        assert_eq!(std::fs::read(&disk).expect("read"), bytes);
    }
}
