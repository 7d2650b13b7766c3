//! A raw disk file: its MBR partitions, the FAT boot partition (read with
//! mtools at an offset) and the ext4 root (read with debugfs at an offset).
//! Nothing is mounted. The only write is [`RawDisk::replay_root_journal`],
//! meant for private snapshots of a VM that lost power.

use crate::tool::{self, DEBUGFS, E2FSCK, MCOPY, MDIR};
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
    /// killed mid-write), as the kernel does on the next mount, so that what
    /// the tests read is what the next boot sees.
    ///
    /// The replay is `e2fsck -E journal_only`: e2fsck's journal recovery (the
    /// same as the kernel's: it writes the logged blocks home before anything
    /// reads a bitmap) and nothing else. debugfs' `journal_run` is not used:
    /// it opens the filesystem, bitmaps included, before replaying, so it
    /// refuses exactly the disks that need the replay most (a block bitmap
    /// written home while its checksum is still in the journal: "Block
    /// bitmap checksum does not match bitmap"). e2fsck cannot write at an
    /// offset (it reopens the device without it after the replay), so the
    /// partition is copied into a file of its own, replayed there, and the
    /// chunks that changed are written back. Returns whether anything was
    /// replayed.
    pub fn replay_root_journal(&self) -> Result<bool> {
        let root = self.partition(2)?;
        if !ext4_needs_recovery(&self.path, root.start)? {
            return Ok(false);
        }
        let scratch = self.path.with_extension("root-replay");
        copy_range(&self.path, root.start, &scratch, 0, root.size, false)?;
        let result = replay_journal(&scratch).and_then(|()| {
            if ext4_needs_recovery(&scratch, 0)? {
                return Err(HarnessError::Invalid(format!(
                    "{}: the root journal still needs recovery after e2fsck -E journal_only",
                    self.path.display()
                )));
            }
            copy_range(&scratch, 0, &self.path, root.start, root.size, true)
        });
        let _ = std::fs::remove_file(&scratch);
        result.map(|()| true)
    }

    /// Whether the root filesystem's journal holds transactions not yet
    /// written home (read from the superblock, not through debugfs, which
    /// cannot open such a filesystem when a bitmap disagrees with its
    /// checksum).
    pub fn root_needs_recovery(&self) -> Result<bool> {
        ext4_needs_recovery(&self.path, self.partition(2)?.start)
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

/// ext4 superblock: 1024 bytes into the filesystem; magic 0xEF53 at 0x38;
/// s_feature_incompat at 0x60, where 0x4 is RECOVER (`needs_recovery`).
const SUPERBLOCK_AT: u64 = 1024;
const MAGIC_AT: usize = 0x38;
const INCOMPAT_AT: usize = 0x60;
const INCOMPAT_RECOVER: u32 = 0x4;

/// Whether the ext4 filesystem at `offset` of `path` needs its journal
/// replayed.
fn ext4_needs_recovery(path: &Path, offset: u64) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut sb = [0u8; 1024];
    file.seek(SeekFrom::Start(offset + SUPERBLOCK_AT))
        .map_err(io_err(path))?;
    file.read_exact(&mut sb).map_err(io_err(path))?;
    if sb[MAGIC_AT..MAGIC_AT + 2] != [0x53, 0xEF] {
        return Err(HarnessError::Invalid(format!(
            "{}: no ext4 superblock at byte {}",
            path.display(),
            offset + SUPERBLOCK_AT
        )));
    }
    let incompat = u32::from_le_bytes([
        sb[INCOMPAT_AT],
        sb[INCOMPAT_AT + 1],
        sb[INCOMPAT_AT + 2],
        sb[INCOMPAT_AT + 3],
    ]);
    Ok(incompat & INCOMPAT_RECOVER != 0)
}

/// Replays the journal of the ext4 filesystem that is the whole file `fs`
/// with `e2fsck -E journal_only -p` (no other check or repair; exit codes
/// 0 to 2 mean the replay went through).
fn replay_journal(fs: &Path) -> Result<()> {
    let mut cmd = E2FSCK.command()?;
    // The host's /etc/e2fsck.conf has no say in what the harness reads.
    cmd.env("E2FSCK_CONFIG", "/dev/null")
        .args(["-E", "journal_only", "-p"])
        .arg(fs);
    let command = tool::describe(&cmd);
    let out = cmd.output().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;
    match out.status.code() {
        Some(0..=2) => Ok(()),
        _ => Err(HarnessError::Command {
            command,
            status: out.status.to_string(),
            stderr: format!(
                "{} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
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

    /// A disk whose root has a committed journal transaction holding its
    /// group 0 block bitmap, while the bitmap written home is garbage: what a
    /// power cut leaves when the bitmap reached the card before its
    /// descriptor's checksum did. Returns the disk and p1's bytes.
    fn cut_disk(dir: &Path) -> (PathBuf, Vec<u8>) {
        let fs = dir.join("root.ext4");
        tool::run(
            std::process::Command::new("mke2fs")
                .env("MKE2FS_CONFIG", "/dev/null")
                .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-O"])
                .arg("has_journal,metadata_csum,extent,64bit,flex_bg")
                .arg(&fs)
                .arg("16M"),
        )
        .expect("mke2fs");
        let file = dir.join("f");
        std::fs::write(&file, b"written before the cut\n").expect("f");
        let root = Ext4 {
            target: fs.display().to_string(),
        };
        tool::run(
            DEBUGFS
                .command()
                .expect("debugfs")
                .args(["-w", "-R"])
                .arg(format!("write {} f", file.display()))
                .arg(&fs),
        )
        .expect("debugfs write");
        let (stats, _) = root.debugfs("stats").expect("stats");
        let stats = String::from_utf8_lossy(&stats).into_owned();
        let bitmap: u64 = stats
            .split("block bitmap at ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .expect("group 0 block bitmap in debugfs stats");
        let mut bytes = std::fs::read(&fs).expect("read fs");
        let at = usize::try_from(bitmap * 4096).expect("offset");
        let good = dir.join("bitmap");
        std::fs::write(&good, &bytes[at..at + 4096]).expect("bitmap copy");
        let cmds = dir.join("journal.cmds");
        std::fs::write(
            &cmds,
            format!("jo\njw -b {bitmap} {}\njc\n", good.display()),
        )
        .expect("cmds");
        tool::run(
            DEBUGFS
                .command()
                .expect("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&cmds)
                .arg(&fs),
        )
        .expect("debugfs journal_write");
        bytes = std::fs::read(&fs).expect("read fs");
        for (i, b) in bytes[at..at + 4096].iter_mut().enumerate() {
            *b = (i as u8) ^ 0xA5;
        }
        // MBR, p1 (1 MiB of a pattern) at 1 MiB, p2 (the root) at 2 MiB.
        let p1: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut disk = mbr(&[(0x0C, 2048, 2048), (0x83, 4096, 32768)]);
        disk.resize(1 << 20, 0);
        disk.extend_from_slice(&p1);
        disk.extend_from_slice(&bytes);
        let path = dir.join("disk.raw");
        std::fs::write(&path, &disk).expect("disk");
        (path, p1)
    }

    #[test]
    fn replay_recovers_a_root_whose_bitmap_only_the_journal_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, p1) = cut_disk(dir.path());
        let disk = RawDisk::open(&path).expect("open");
        assert!(disk.root_needs_recovery().expect("superblock"));
        // The fixture is the failure seen on a cut VM: debugfs cannot open
        // it, and its journal_run (the harness's replay before) leaves it so.
        assert!(disk.root().expect("p2").stat("/f").is_err());
        let old = dir.path().join("old-replay.ext4");
        copy_range(&path, 2 << 20, &old, 0, 16 << 20, false).expect("copy");
        let old = Ext4 {
            target: old.display().to_string(),
        };
        let _ = tool::run(DEBUGFS.command().expect("debugfs").args([
            "-w",
            "-R",
            "journal_run",
            &old.target,
        ]));
        assert!(
            old.stat("/f").is_err(),
            "debugfs journal_run recovered the fixture: it no longer shows the failure"
        );

        assert!(disk.replay_root_journal().expect("replay"));
        assert!(!disk.root_needs_recovery().expect("superblock"));
        let root = disk.root().expect("p2");
        assert_eq!(
            root.read_string("/f").expect("read").as_deref(),
            Some("written before the cut\n")
        );
        // What the next mount sees is a clean filesystem, and only the root
        // partition was written.
        let check = dir.path().join("check.ext4");
        copy_range(&path, 2 << 20, &check, 0, 16 << 20, false).expect("copy");
        tool::run(
            E2FSCK
                .command()
                .expect("e2fsck")
                .env("E2FSCK_CONFIG", "/dev/null")
                .arg("-fn")
                .arg(&check),
        )
        .expect("e2fsck -fn after the replay");
        let after = std::fs::read(&path).expect("read");
        assert_eq!(&after[1 << 20..2 << 20], &p1[..]);
        assert!(!disk.replay_root_journal().expect("second replay"));
    }
}
