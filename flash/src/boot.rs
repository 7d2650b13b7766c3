//! Per-card files on the FAT boot partition (partition 1), written with `fatfs` straight into
//! the flashed target: no mount, so nothing else on the card changes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use fatfs::{FileSystem, FsOptions};
use pibake_image::table::{self, ReadTableError};
use pibake_image::window::Window;

/// The boot-partition file names: the agent's contract (pibake_firstboot::bootfiles).
pub use pibake_firstboot::bootfiles::{NODE_FILE, SECRETS_FILE};

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
    #[error("partition 1 of {path} is not FAT (type {kind}); is this a Raspberry Pi image?")]
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
            kind: format!("{:?}", p.kind),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
