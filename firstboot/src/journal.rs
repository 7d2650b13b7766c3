//! The agent's journal: one small TOML file per step under
//! `/var/lib/pibake`, written atomically, read by later steps and `status`.
//!
//! **Test-only hold.** With `pibake.test.hold_after=<step>` (`identity`,
//! `clock`, `images`, `swarm` or `stacks`) on the kernel command line, the agent, once it has
//! run and journaled that step, logs [`hold_marker`] and sleeps forever, so
//! that a test harness can cut the power at exactly that point of first boot
//! (the QEMU ring passes the parameter with `-append`; see
//! tests/qemu/README.md). Only the running kernel's command line enables it:
//! nothing in an image, the node table or the boot-partition files does, and
//! pibake never writes it into cmdline.txt. Never set it on a board: that
//! step's unit would hang until systemd's start timeout kills it.

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
    /// Loading the image's preloaded container images: only where its image
    /// carries some ([`crate::images`]), so not in [`Step::ALL`]. It runs
    /// first in the swarm command, before [`Step::Swarm`].
    Images,
    Swarm,
    /// Deploying the image's compose stacks: only on the node that
    /// initializes the swarm, and only when its image carries stacks
    /// ([`crate::stacks`]), so not in [`Step::ALL`].
    Stacks,
}

impl Step {
    /// The steps every node runs, in order.
    pub const ALL: [Step; 3] = [Step::Identity, Step::Clock, Step::Swarm];

    /// Every step, in the order they run: [`Step::ALL`] with [`Step::Images`]
    /// before the swarm step, then the first manager's [`Step::Stacks`].
    pub const EVERY: [Step; 5] = [
        Step::Identity,
        Step::Clock,
        Step::Images,
        Step::Swarm,
        Step::Stacks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Identity => "identity",
            Step::Clock => "clock",
            Step::Images => "images",
            Step::Swarm => "swarm",
            Step::Stacks => "stacks",
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
    /// A record of a step that chooses no node and holds for every boot.
    pub fn of(outcome: Outcome, at: u64, why: String) -> Self {
        Record {
            outcome,
            at,
            why,
            node: None,
            boot_id: None,
        }
    }

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

/// Kernel command-line parameter of the test-only hold (see the module docs).
pub const HOLD_KEY: &str = "pibake.test.hold_after=";

/// The step the kernel command line asks the agent to hold after (test
/// only): `Ok(None)` without [`HOLD_KEY`], `Err(value)` when its value names
/// no step. The last occurrence wins, as with other kernel parameters.
pub fn hold_after(root: &Root) -> Result<Option<Step>, String> {
    let Ok(cmdline) = std::fs::read_to_string(root.at("proc/cmdline")) else {
        return Ok(None);
    };
    let Some(value) = cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(HOLD_KEY))
    else {
        return Ok(None);
    };
    Step::EVERY
        .into_iter()
        .find(|s| s.name() == value)
        .map(Some)
        .ok_or_else(|| value.to_owned())
}

/// The line the agent logs when it holds after `step` (what a harness waits
/// for on the console before it cuts the power).
pub fn hold_marker(step: Step) -> String {
    format!("pibake test hold: {step} journaled, holding for the power cut ({HOLD_KEY}{step})")
}

/// The kernel's id of the running boot, if the root has one.
pub fn boot_id(root: &Root) -> Option<String> {
    std::fs::read_to_string(root.at("proc/sys/kernel/random/boot_id"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_cmdline(cmdline: Option<&str>) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(line) = cmdline {
            std::fs::create_dir_all(dir.path().join("proc")).expect("proc");
            std::fs::write(dir.path().join("proc/cmdline"), line).expect("cmdline");
        }
        let root = Root::new(dir.path());
        (dir, root)
    }

    #[test]
    fn hold_comes_only_from_the_kernel_command_line() {
        let (_d, root) = root_with_cmdline(None);
        assert_eq!(hold_after(&root), Ok(None));
        let (_d, root) = root_with_cmdline(Some("console=ttyAMA0 root=/dev/vda2 rootwait\n"));
        assert_eq!(hold_after(&root), Ok(None));
        for step in Step::EVERY {
            let line = format!("console=ttyAMA0 {HOLD_KEY}{step} quiet\n");
            let (_d, root) = root_with_cmdline(Some(&line));
            assert_eq!(hold_after(&root), Ok(Some(step)));
            assert!(hold_marker(step).contains(&format!("{step} journaled")));
        }
        let (_d, root) = root_with_cmdline(Some(
            "pibake.test.hold_after=identity pibake.test.hold_after=swarm",
        ));
        assert_eq!(hold_after(&root), Ok(Some(Step::Swarm)));
        let (_d, root) = root_with_cmdline(Some("pibake.test.hold_after=growroot"));
        assert_eq!(hold_after(&root), Err("growroot".to_owned()));
    }
}
