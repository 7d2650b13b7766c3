//! Per-card files on the FAT boot partition (partition 1), written with `fatfs` straight into
//! the flashed target: no mount, so nothing else on the card changes. Partition 1 is found in
//! either table pibake writes ([`table::read_table`]): a Raspberry Pi image's MBR (FAT32 LBA,
//! mounted at /boot/firmware) or a pc-efi image's GPT (the EFI system partition, FAT32,
//! mounted at /boot/efi); the agent looks for the files in both places
//! ([`pibake_firstboot::bootfiles::find`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use fatfs::{FileSystem, FsOptions};
use pibake_image::table::{self, PartKind, ReadTableError};
use pibake_image::window::Window;

/// The boot-partition file names: the agent's contract (pibake_firstboot::bootfiles). flash
/// writes the node and secrets files and reads the node table ([`crate::nodes`]).
pub use pibake_firstboot::bootfiles::{NODE_FILE, SECRETS_FILE, TABLE_FILE};

#[derive(Debug, thiserror::Error)]
pub enum BootFilesError {
    #[error("cannot read the secrets file {0}")]
    SecretsRead(PathBuf, #[source] io::Error),
    #[error("secrets file {path} is not valid TOML (line {line}); it is copied as is for the agent, so fix it first")]
    SecretsToml { path: PathBuf, line: usize },
    #[error("cannot read the partition table of {0}")]
    Table(PathBuf, #[source] ReadTableError),
    #[error("{0} has no partition 1")]
    NoBootPartition(PathBuf),
    #[error("partition 1 of {path} is not FAT ({kind}); a pibake image has its boot partition there: FAT32 in an MBR (Raspberry Pi) or the EFI system partition of a GPT (pc-efi). Is this a pibake image?")]
    NotFat { path: PathBuf, kind: String },
    #[error("cannot open the FAT boot partition of {0}")]
    Fat(PathBuf, #[source] io::Error),
    #[error("cannot write {file} to the boot partition of {path}")]
    Write {
        path: PathBuf,
        file: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{file} on the boot partition of {path} reads back different from what was written")]
    ReadBack { path: PathBuf, file: &'static str },
}

/// A node's name: the one host-name rule of `pibake check` and the agent, lower case only
/// (`pibake_firstboot::hostname`); [`NodeName::node_file`] is the content of [`NODE_FILE`].
pub use pibake_firstboot::hostname::{NodeName, NodeNameError};

/// Reads a secrets file and checks it parses, without echoing any of it in errors.
pub fn read_secrets(path: &Path) -> Result<Vec<u8>, BootFilesError> {
    let bytes = std::fs::read(path).map_err(|e| BootFilesError::SecretsRead(path.to_owned(), e))?;
    let bad = |off: usize| BootFilesError::SecretsToml {
        path: path.to_owned(),
        line: bytes[..off.min(bytes.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| bad(e.valid_up_to()))?;
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(bad(e.span().map_or(0, |s| s.start)));
    }
    Ok(bytes)
}

/// Writes `files` (name, content) into the root of partition 1 of the disk (or image) open as
/// `disk`, replacing files of the same name, and reads them back.
pub fn write_boot_files(
    disk: &File,
    disk_len: u64,
    path: &Path,
    files: &[(&'static str, &[u8])],
) -> Result<(), BootFilesError> {
    let t = table::read_table(&mut &*disk, disk_len)
        .map_err(|e| BootFilesError::Table(path.to_owned(), e))?;
    let p = t
        .partitions()
        .iter()
        .find(|p| p.number == 1)
        .ok_or_else(|| BootFilesError::NoBootPartition(path.to_owned()))?;
    if !p.kind.is_fat() {
        return Err(BootFilesError::NotFat {
            path: path.to_owned(),
            kind: describe(&p.kind),
        });
    }
    let fat_err = |e| BootFilesError::Fat(path.to_owned(), e);
    let win = Window::new(disk, p.start, p.len).map_err(fat_err)?;
    let fs = FileSystem::new(win, FsOptions::new()).map_err(fat_err)?;
    {
        let root = fs.root_dir();
        for &(file, content) in files {
            let werr = |source| BootFilesError::Write {
                path: path.to_owned(),
                file,
                source,
            };
            let mut f = root.create_file(file).map_err(werr)?;
            f.truncate().map_err(werr)?;
            f.write_all(content).map_err(werr)?;
            f.flush().map_err(werr)?;
        }
        for &(file, content) in files {
            let mut back = Vec::new();
            root.open_file(file)
                .and_then(|mut f| f.read_to_end(&mut back))
                .map_err(|source| BootFilesError::Write {
                    path: path.to_owned(),
                    file,
                    source,
                })?;
            if back != content {
                return Err(BootFilesError::ReadBack {
                    path: path.to_owned(),
                    file,
                });
            }
        }
    }
    fs.unmount().map_err(fat_err)
}

/// A partition type as a message names it: `MBR type 0x83`, `GPT type <guid>`.
pub(crate) fn describe(kind: &PartKind) -> String {
    match kind {
        PartKind::Mbr(t) => format!("MBR type 0x{t:02x}"),
        PartKind::Gpt(g) => format!("GPT type {g}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fatfs::{FatType, FormatVolumeOptions};
    use pibake_image::assemble::{ImageIds, TableKind};
    use pibake_image::table::Layout;
    use std::fs::OpenOptions;
    use std::io::{Seek, SeekFrom};

    #[test]
    fn node_names() {
        assert_eq!(
            "w1".parse::<NodeName>().expect("valid").node_file(),
            "node = \"w1\"\n"
        );
        for bad in ["", "W1", "w_1", "-w", "w-", "a\"b", &"a".repeat(64)] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad:?} accepted");
        }
        // The rule is the agent's: upper case is refused with the name that would be right.
        let e = "Worker1".parse::<NodeName>().expect_err("upper case");
        assert_eq!(e.suggestion(), "worker1");
        assert!(e.to_string().contains("e.g. `worker1`"), "{e}");
    }

    #[test]
    fn secrets_must_parse_and_errors_do_not_echo_them() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("s.toml");
        std::fs::write(&p, "token = \"example-not-a-secret\"\n")?;
        assert_eq!(read_secrets(&p)?, b"token = \"example-not-a-secret\"\n");
        std::fs::write(&p, "a = 1\nswarm_token = SWMTKN-example\n")?;
        let e = read_secrets(&p).expect_err("bad TOML");
        let msg = e.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("SWMTKN"), "{msg}");
        Ok(())
    }

    /// A pibake-shaped disk image in a temp file: `table` (the builder's ids), a FAT32 boot
    /// partition (as `pibake_image::fat` formats it) holding `files`, a patterned root.
    fn image(
        dir: &Path,
        table: TableKind,
        files: &[(&str, &[u8])],
    ) -> anyhow::Result<(File, PathBuf, Layout)> {
        // FAT32 needs ~65 600 clusters of 512 bytes: 36 MiB is the smallest 4 MiB multiple.
        let layout = table::layout(36 << 20, 4 << 20, table == TableKind::Gpt);
        let path = dir.join("disk.img");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.set_len(layout.disk_len)?;
        let ids = ImageIds::from_input_hash(&[3; 32], table);
        table::write_table(&mut &f, &ids.table, &layout)?;
        let mut win = Window::new(&f, layout.boot_start, layout.boot_len)?;
        let opts = FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .bytes_per_cluster(512)
            .volume_id(0x1234_5678);
        fatfs::format_volume(&mut win, opts)?;
        let fs = FileSystem::new(
            Window::new(&f, layout.boot_start, layout.boot_len)?,
            FsOptions::new(),
        )?;
        for &(name, content) in files {
            if let Some((parent, _)) = name.rsplit_once('/') {
                let mut dir = fs.root_dir();
                for part in parent.split('/') {
                    dir = dir.create_dir(part)?;
                }
            }
            fs.root_dir().create_file(name)?.write_all(content)?;
        }
        fs.unmount()?;
        let mut w = &f;
        w.seek(SeekFrom::Start(layout.root_start))?;
        w.write_all(&[0xa5; 64 << 10])?;
        Ok((f, path, layout))
    }

    /// Path and content of each file of a FAT filesystem, sorted.
    type Files = Vec<(String, Vec<u8>)>;

    fn read_fat(f: &File, layout: &Layout) -> anyhow::Result<(FatType, Files)> {
        let fs = FileSystem::new(
            Window::new(f, layout.boot_start, layout.boot_len)?,
            FsOptions::new(),
        )?;
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), fs.root_dir())];
        while let Some((prefix, dir)) = stack.pop() {
            for e in dir.iter() {
                let e = e?;
                let name = e.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = format!("{prefix}{name}");
                if e.is_dir() {
                    stack.push((format!("{path}/"), e.to_dir()));
                } else {
                    let mut content = Vec::new();
                    e.to_file().read_to_end(&mut content)?;
                    out.push((path, content));
                }
            }
        }
        out.sort();
        Ok((fs.fat_type(), out))
    }

    fn root_bytes(f: &File, layout: &Layout) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0; layout.root_len as usize];
        let mut r = f;
        r.seek(SeekFrom::Start(layout.root_start))?;
        r.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// The boot files land in partition 1 of both tables pibake writes: a Pi's MBR and a
    /// pc-efi image's GPT, whose partition 1 is the EFI system partition holding the loader.
    #[test]
    fn boot_files_go_to_partition_1_of_an_mbr_and_of_a_gpt() -> anyhow::Result<()> {
        let esp: &[(&str, &[u8])] = &[
            ("EFI/BOOT/BOOTX64.EFI", b"fake systemd-boot"),
            ("loader/loader.conf", b"default pibake.conf\n"),
            (NODE_FILE, b"node = \"old\"\n"),
        ];
        let pi: &[(&str, &[u8])] = &[("config.txt", b"arm_64bit=1\n")];
        for (table, existing) in [(TableKind::Gpt, esp), (TableKind::Mbr, pi)] {
            let d = tempfile::tempdir()?;
            let (f, path, layout) = image(d.path(), table, existing)?;
            let want_kind = match table {
                TableKind::Gpt => PartKind::Gpt(table::GPT_TYPE_ESP.parse()?),
                TableKind::Mbr => PartKind::Mbr(table::MBR_TYPE_FAT32_LBA),
            };
            let t = table::read_table(&mut &f, layout.disk_len)?;
            assert_eq!(t.partitions()[0].kind, want_kind, "{table:?}");
            let root_before = root_bytes(&f, &layout)?;
            let node = b"node = \"w3\"\n".as_slice();
            let secrets = b"swarm_worker_token = \"example-token-for-tests\"\n".as_slice();
            write_boot_files(
                &f,
                layout.disk_len,
                &path,
                &[(NODE_FILE, node), (SECRETS_FILE, secrets)],
            )?;
            let (fat, files) = read_fat(&f, &layout)?;
            assert_eq!(fat, FatType::Fat32, "{table:?}");
            let mut want: Files = existing
                .iter()
                .filter(|(n, _)| *n != NODE_FILE)
                .map(|(n, c)| ((*n).to_owned(), c.to_vec()))
                .chain([
                    (NODE_FILE.to_owned(), node.to_vec()),
                    (SECRETS_FILE.to_owned(), secrets.to_vec()),
                ])
                .collect();
            want.sort();
            assert_eq!(files, want, "{table:?}: replaced, added, the rest kept");
            assert!(
                root_bytes(&f, &layout)? == root_before,
                "{table:?}: root untouched"
            );
            // The table is as it was: the GPT's CRCs and backup header still check.
            match table::read_table(&mut &f, layout.disk_len)? {
                table::Table::Gpt { problems, .. } => assert!(problems.is_empty(), "{problems:?}"),
                table::Table::Mbr { .. } => {}
            }
        }
        Ok(())
    }

    #[test]
    fn a_partition_1_that_is_not_fat_is_named_by_its_type() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let (f, path, layout) = image(d.path(), TableKind::Mbr, &[])?;
        // Partition 1's MBR type byte: Linux instead of FAT32 LBA.
        let mut w = &f;
        w.seek(SeekFrom::Start(446 + 4))?;
        w.write_all(&[table::MBR_TYPE_LINUX])?;
        let e = write_boot_files(&f, layout.disk_len, &path, &[(NODE_FILE, b"x")])
            .expect_err("not FAT");
        let msg = e.to_string();
        assert!(msg.contains("(MBR type 0x83)"), "{msg}");
        assert!(
            msg.contains("Raspberry Pi") && msg.contains("EFI system partition"),
            "{msg}"
        );
        assert_eq!(
            describe(&PartKind::Gpt(table::GPT_TYPE_LINUX.parse()?)),
            "GPT type 0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
        Ok(())
    }

    /// Where the agent looks for the files is where the image builder puts partition 1.
    #[test]
    fn the_agent_looks_where_the_image_mounts_partition_1() {
        use pibake_firstboot::bootfiles::BootPartition;
        assert_eq!(
            BootPartition::PiFirmware.dir(),
            pibake_image::assemble::boot_dir().as_str()
        );
        assert_eq!(BootPartition::Esp.dir(), pibake_image::efi::ESP_DIR);
    }
}
