//! The first-boot agent of pibake images.
//!
//! The library holds the node-table format (written by the builder with these
//! very types onto the image's boot partition, read by the agent on the board
//! with [`load_table`]), the host-name rule of node
//! names ([`hostname`], shared with `pibake check` and `pibake flash`) and the
//! agent's steps:
//! [`identity`], [`clock`], [`images`] (where the image carries preloaded
//! container images), [`swarm`] (then, on the first manager, [`stacks`]),
//! [`status`], each journaled under
//! `/var/lib/pibake` ([`journal`]); and keepalived's track check
//! ([`engine`], the Docker Engine API without the docker client). All system access goes through
//! [`root::Root`] and the traits of [`system`] and [`clock`], so the steps run
//! on the host against a temporary root with fakes.

pub mod atomic;
pub mod bootfiles;
pub mod clock;
pub mod engine;
pub mod growroot;
pub mod hostname;
pub mod identity;
pub mod images;
pub mod journal;
pub mod root;
pub mod secrets;
pub mod stacks;
pub mod status;
pub mod swarm;
pub mod system;
pub mod table;

use bootfiles::{FindError, TABLE_FILE};
use root::Root;
use std::path::PathBuf;
use system::{Clock, CommandRunner};
use table::{NodeTable, TableError};

/// What every step works with.
#[derive(Debug)]
pub struct Agent<'a> {
    pub root: Root,
    pub clock: &'a dyn Clock,
    pub runner: &'a dyn CommandRunner,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadTableError {
    #[error("no node table: no {} (the builder puts it on the image's boot partition; is that partition mounted?)", bootfiles::places(TABLE_FILE))]
    Missing,
    #[error("cannot find the node table")]
    Find(#[source] FindError),
    #[error("cannot read the node table {path}")]
    Read {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("node table {path} is not usable")]
    Invalid {
        path: PathBuf,
        #[source]
        cause: TableError,
    },
}

/// Reads the node table, [`TABLE_FILE`] on the boot partition: found by
/// [`bootfiles::find`] in /boot/firmware or /boot/efi under the root (in both
/// is an error). Only read: the file stays on the FAT for later boots, and
/// there is no other place (an image's agent always ships with its table).
pub fn load_table(root: &Root) -> Result<NodeTable, LoadTableError> {
    let path = bootfiles::find(root, TABLE_FILE)
        .map_err(LoadTableError::Find)?
        .ok_or(LoadTableError::Missing)?
        .path;
    let text = std::fs::read_to_string(&path).map_err(|cause| LoadTableError::Read {
        path: path.clone(),
        cause,
    })?;
    NodeTable::from_toml(&text).map_err(|cause| LoadTableError::Invalid { path, cause })
}

/// An error and its causes on one line: what the journal and logs record.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
