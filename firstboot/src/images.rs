//! Images: on every node whose image carries preloaded container images (the
//! node table's `swarm.images`, each archive at
//! `/var/lib/pibake/images/<name>.tar`), load them with
//! `docker load --input <archive>` once the engine is up: first in
//! `pibake-firstboot swarm` (ordered after docker.service), before the node
//! joins or initializes the swarm, so a task the Swarm gives it finds its
//! image, and before the first manager deploys its stacks
//! ([`crate::stacks`]). In an isolated lab there is no registry to pull from.
//!
//! **Once, journaled** (`images`): the engine keeps loaded images across
//! reboots. Until the step is done it is retried by the next run, every
//! archive again (loading an image that is there already only tags it
//! again). A failed load is journaled with docker's reason and shown by
//! `status`; the other archives are still loaded, and the swarm step still
//! runs: the node joins, and its tasks of that image fail until a load works.

use crate::hostname::NodeName;
use crate::journal::{Journal, JournalError, Outcome, Record, Step};
use crate::root::Root;
use crate::system::{run_logged, unix_seconds, Cmd};
use crate::table::image_path;
use crate::{error_chain, load_table, Agent, LoadTableError};

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("image name {0:?} of the node table is not a lower-case label: loading nothing")]
    BadName(String),
    #[error("{}", failed.join("; "))]
    Load {
        /// `image <name>: <reason>`, one per archive that failed.
        failed: Vec<String>,
        /// What the same run loaded, as `<name> (<tag>)`.
        loaded: Vec<String>,
    },
    #[error(transparent)]
    Table(#[from] LoadTableError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What the images step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// This node's image carries no preloaded images. Nothing is journaled.
    NotHere,
    /// Done in an earlier run (journaled): nothing ran.
    AlreadyDone,
    /// Loaded in this run, as `<name> (<what docker loaded>)`.
    Now(Vec<String>),
}

/// The preloaded images of this node's image, by name.
pub fn images_here(root: &Root) -> Result<Vec<String>, ImagesError> {
    Ok(load_table(root)?.swarm.images)
}

/// Runs the images step and journals it, unless the image carries none.
pub fn run(agent: &Agent<'_>) -> Result<Loaded, ImagesError> {
    let names = images_here(&agent.root)?;
    if names.is_empty() {
        return Ok(Loaded::NotHere);
    }
    let journal = Journal::new(&agent.root);
    if let Some(Record {
        outcome: Outcome::Done,
        ..
    }) = journal.read(Step::Images)?
    {
        log::info!("images: loaded in an earlier run");
        return Ok(Loaded::AlreadyDone);
    }
    let result = load(agent, &names);
    let (outcome, why) = match &result {
        Ok(loaded) => (Outcome::Done, format!("loaded {}", loaded.join(", "))),
        Err(ImagesError::Load { failed, loaded }) if !loaded.is_empty() => (
            Outcome::Failed,
            format!("{}; loaded {}", failed.join("; "), loaded.join(", ")),
        ),
        Err(e) => (Outcome::Failed, error_chain(e)),
    };
    match &result {
        Ok(_) => log::info!("images: {why}"),
        Err(_) => log::error!("images failed: {why}"),
    }
    journal.record(
        Step::Images,
        &Record::of(outcome, unix_seconds(agent.clock.now()), why),
    )?;
    result.map(Loaded::Now)
}

fn load(agent: &Agent<'_>, names: &[String]) -> Result<Vec<String>, ImagesError> {
    // The name becomes a path: the builder's rule, checked again.
    if let Some(bad) = names.iter().find(|n| n.parse::<NodeName>().is_err()) {
        return Err(ImagesError::BadName(bad.clone()));
    }
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        let archive = agent.root.at(&image_path(name));
        let cmd = Cmd::new("docker")
            .arg("load")
            .arg("--input")
            .arg(archive.display().to_string());
        match run_logged(agent.runner, &cmd) {
            Ok(out) if out.success() => {
                // `Loaded image: localhost/pibake/web:1` (or `Loaded image ID: sha256:…`).
                let what: Vec<&str> = out
                    .stdout
                    .lines()
                    .filter_map(|l| l.split_once(": ").map(|(_, v)| v.trim()))
                    .collect();
                loaded.push(format!("{name} ({})", what.join(", ")));
            }
            Ok(out) => failed.push(format!("image {name}: {}", out.reason(&cmd))),
            Err(e) => failed.push(format!("image {name}: {}", error_chain(&e))),
        }
    }
    if failed.is_empty() {
        Ok(loaded)
    } else {
        Err(ImagesError::Load { failed, loaded })
    }
}
