//! The agent's journal: one small TOML file per step under
//! `/var/lib/pibake`, written atomically, read by later steps and `status`.

use crate::atomic::{write_atomic, WriteError};
use crate::root::Root;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

/// Directory of the journal, relative to the root.
pub const JOURNAL_DIR: &str = "var/lib/pibake";

/// The steps of first boot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Identity,
    Clock,
    Swarm,
}

impl Step {
    pub const ALL: [Step; 3] = [Step::Identity, Step::Clock, Step::Swarm];

    pub fn name(self) -> &'static str {
        match self {
            Step::Identity => "identity",
            Step::Clock => "clock",
            Step::Swarm => "swarm",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a step ended the last time it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Done,
    Failed,
}

/// The journal entry of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub outcome: Outcome,
    /// Wall-clock time on the board when recorded, Unix seconds (may be
    /// before the clock was verified: it says when, not how trustworthy).
    pub at: u64,
    /// Why the step ended so (a failure's full cause chain).
    pub why: String,
    /// The node chosen by identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Kernel boot id of the boot that recorded it: the clock verdict is
    /// only good for the boot it was made in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl Record {
    /// Same result, ignoring when: rewriting it would change nothing.
    fn same_result(&self, other: &Record) -> bool {
        self.outcome == other.outcome
            && self.why == other.why
            && self.node == other.node
            && self.boot_id == other.boot_id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read journal entry {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal entry {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot encode journal entry")]
    Encode(#[source] toml::ser::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The journal under a root.
#[derive(Debug, Clone)]
pub struct Journal {
    root: Root,
}

impl Journal {
    pub fn new(root: &Root) -> Self {
        Journal { root: root.clone() }
    }

    pub fn path(&self, step: Step) -> PathBuf {
        self.root.at(&format!("{JOURNAL_DIR}/{}.toml", step.name()))
    }

    /// The entry of `step`, `None` while the step is pending.
    pub fn read(&self, step: Step) -> Result<Option<Record>, JournalError> {
        let path = self.path(step);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(JournalError::Read { path, source }),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|source| JournalError::Parse { path, source })
    }

    /// Records `record` for `step`; an entry with the same result is kept as
    /// it is (with its original time), so a repeated run changes nothing.
    pub fn record(&self, step: Step, record: &Record) -> Result<(), JournalError> {
        if let Ok(Some(old)) = self.read(step) {
            if old.same_result(record) {
                return Ok(());
            }
        }
        let text = toml::to_string(record).map_err(JournalError::Encode)?;
        write_atomic(&self.path(step), text.as_bytes(), 0o644)?;
        Ok(())
    }
}

/// The kernel's id of the running boot, if the root has one.
pub fn boot_id(root: &Root) -> Option<String> {
    std::fs::read_to_string(root.at("proc/sys/kernel/random/boot_id"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
