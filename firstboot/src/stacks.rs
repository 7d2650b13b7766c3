//! Stacks: on the node that initializes the swarm, once the swarm exists,
//! deploy the compose stacks its image carries, each with
//! `docker stack deploy --compose-file /etc/pibake/stacks/<name>.yml <name>`
//! (the node table's `swarm.stacks`; the builder puts the files in the
//! images of the Swarm managers).
//!
//! **Once, journaled** (`stacks`), not on every boot:
//! - the Swarm keeps deployed stacks in its Raft store across reboots and
//!   restarts their tasks itself, so a reboot needs no deploy;
//! - a deploy is harmless for an unchanged stack but not a no-op: it
//!   resolves each image tag against its registry again (a moved tag such
//!   as `latest` would update the services at a reboot) and resets what an
//!   operator changed since (`docker service scale`). A reboot should not
//!   change what runs.
//!
//! Until the step is done it is retried, like the other steps: on the next
//! run of `pibake-firstboot swarm` (the next boot, or by hand), every stack
//! again, which is harmless for the ones already deployed (and covers a
//! deploy the power cut before the journal recorded it). A failed deploy is
//! journaled with docker's reason and shown by `status`; the other stacks
//! are still deployed.
//!
//! **Preloaded images are not resolved.** A stack that names a preloaded
//! image (the node table's `swarm.preloaded_stacks`) is deployed with
//! `--resolve-image never`. By default the deploy asks the image's registry
//! for the digest of each tag and pins the services to it: in an isolated lab
//! there is no registry (the deploy waits on DNS and then warns), and where
//! one answers, a tag such as `web:1` resolves to whatever Docker Hub has
//! under it, and every node would then try to pull that image instead of
//! running the one it loaded ([`crate::images`]). Never resolving leaves the
//! tag as written, which each node finds among its loaded images.

use crate::hostname::NodeName;
use crate::journal::{Journal, JournalError, Outcome, Record, Step};
use crate::root::Root;
use crate::system::{run_logged, unix_seconds, Cmd};
use crate::table::{stack_path, SwarmRole};
use crate::{error_chain, load_table, Agent, LoadTableError};

#[derive(Debug, thiserror::Error)]
pub enum StacksError {
    #[error("identity is not done ({0}): deploying nothing")]
    NoIdentity(String),
    #[error("node {0} of the identity journal is not in the node table")]
    UnknownNode(String),
    #[error("the swarm step is not done ({0}): deploying nothing")]
    NoSwarm(String),
    #[error("stack name {0:?} of the node table is not a lower-case label: deploying nothing")]
    BadName(String),
    #[error("{}", failed.join("; "))]
    Deploy {
        /// `stack <name>: <reason>`, one per stack that failed.
        failed: Vec<String>,
        /// The stacks deployed in the same run.
        deployed: Vec<String>,
    },
    #[error(transparent)]
    Table(#[from] LoadTableError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What the stacks step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// This node deploys nothing: it does not initialize the swarm, or its
    /// image carries no stacks. Nothing is journaled.
    NotHere,
    /// Done in an earlier run (journaled): nothing ran.
    AlreadyDone,
    /// Deployed in this run, by name.
    Now(Vec<String>),
}

/// The stacks this node deploys: the table's, on the node that initializes
/// the swarm (by the identity journal's node); empty elsewhere.
pub fn stacks_here(root: &Root) -> Result<Vec<String>, StacksError> {
    Ok(here(root)?.0)
}

/// [`stacks_here`], and those of them that name a preloaded image.
fn here(root: &Root) -> Result<(Vec<String>, Vec<String>), StacksError> {
    let journal = Journal::new(root);
    let node = match journal.read(Step::Identity)? {
        Some(Record {
            outcome: Outcome::Done,
            node: Some(node),
            ..
        }) => node,
        Some(r) => return Err(StacksError::NoIdentity(r.why)),
        None => return Err(StacksError::NoIdentity("pending".to_owned())),
    };
    let table = load_table(root)?;
    let entry = table
        .nodes
        .get(&node)
        .ok_or_else(|| StacksError::UnknownNode(node.clone()))?;
    if entry.swarm_role != SwarmRole::Init {
        return Ok((Vec::new(), Vec::new()));
    }
    Ok((table.swarm.stacks, table.swarm.preloaded_stacks))
}

/// Runs the stacks step (after the swarm step of the same run succeeded) and
/// journals it, unless this node deploys nothing.
pub fn run(agent: &Agent<'_>) -> Result<Deployed, StacksError> {
    let journal = Journal::new(&agent.root);
    // A node whose identity or table is not usable deploys nothing and
    // journals nothing: the swarm step has failed on the same cause.
    let (stacks, preloaded) = here(&agent.root)?;
    if stacks.is_empty() {
        return Ok(Deployed::NotHere);
    }
    if let Some(Record {
        outcome: Outcome::Done,
        ..
    }) = journal.read(Step::Stacks)?
    {
        log::info!("stacks: deployed in an earlier run");
        return Ok(Deployed::AlreadyDone);
    }
    let result = deploy(agent, &journal, &stacks, &preloaded);
    let (outcome, why) = match &result {
        Ok(names) => (Outcome::Done, format!("deployed {}", names.join(", "))),
        Err(StacksError::Deploy { failed, deployed }) if !deployed.is_empty() => (
            Outcome::Failed,
            format!("{}; deployed {}", failed.join("; "), deployed.join(", ")),
        ),
        Err(e) => (Outcome::Failed, error_chain(e)),
    };
    match &result {
        Ok(_) => log::info!("stacks: {why}"),
        Err(_) => log::error!("stacks failed: {why}"),
    }
    journal.record(
        Step::Stacks,
        &Record::of(outcome, unix_seconds(agent.clock.now()), why),
    )?;
    result.map(Deployed::Now)
}

fn deploy(
    agent: &Agent<'_>,
    journal: &Journal,
    stacks: &[String],
    preloaded: &[String],
) -> Result<Vec<String>, StacksError> {
    match journal.read(Step::Swarm)? {
        Some(r) if r.outcome == Outcome::Done => {}
        Some(r) => return Err(StacksError::NoSwarm(r.why)),
        None => return Err(StacksError::NoSwarm("pending".to_owned())),
    }
    // The name becomes a path and an argument: the builder's rule, checked again.
    if let Some(bad) = stacks.iter().find(|s| s.parse::<NodeName>().is_err()) {
        return Err(StacksError::BadName(bad.clone()));
    }
    let mut deployed = Vec::new();
    let mut failed = Vec::new();
    for name in stacks {
        let file = agent.root.at(&stack_path(name));
        let mut cmd = Cmd::new("docker")
            .arg("stack")
            .arg("deploy")
            .arg("--compose-file")
            .arg(file.display().to_string());
        if preloaded.contains(name) {
            cmd = cmd.arg("--resolve-image").arg("never");
        }
        let cmd = cmd.arg(name.as_str());
        match run_logged(agent.runner, &cmd) {
            Ok(out) if out.success() => deployed.push(name.clone()),
            Ok(out) => failed.push(format!("stack {name}: {}", out.reason(&cmd))),
            Err(e) => failed.push(format!("stack {name}: {}", error_chain(&e))),
        }
    }
    if failed.is_empty() {
        Ok(deployed)
    } else {
        Err(StacksError::Deploy { failed, deployed })
    }
}
