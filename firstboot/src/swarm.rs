//! Swarm: initialize the swarm on the first manager, join it elsewhere.
//! Idempotent: the local node state is read first. The first manager's
//! compose stacks follow once this step is done ([`crate::stacks`]).

use crate::journal::{Journal, JournalError, Outcome, Record, Step};
use crate::secrets::{self, SecretsError, MANAGER_TOKEN, WORKER_TOKEN};
use crate::system::{run_checked, run_logged, unix_seconds, Cmd, CommandError};
use crate::table::SwarmRole;
use crate::{error_chain, load_table, Agent, LoadTableError};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Swarm management port.
pub const MANAGER_PORT: u16 = 2377;

/// First and largest pause between two rounds of join attempts.
pub const BACKOFF_START: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// `docker info --format '{{.Swarm.LocalNodeState}}'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Inactive,
    Pending,
    Active,
    Locked,
    Error,
}

impl NodeState {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim() {
            "inactive" => NodeState::Inactive,
            "pending" => NodeState::Pending,
            "active" => NodeState::Active,
            "locked" => NodeState::Locked,
            "error" => NodeState::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("identity is not done ({0}): joining nothing")]
    NoIdentity(String),
    #[error("the clock is not verified in this boot ({0}): joining nothing")]
    ClockUnverified(String),
    #[error("node {0} of the identity journal is not in the node table")]
    UnknownNode(String),
    #[error("docker reports swarm state {0:?}")]
    BadState(String),
    #[error("this node's swarm is {0:?}: needs an operator (docker swarm unlock, or leave)")]
    Stuck(NodeState),
    #[error("{key} is missing from /{}", secrets::SECRETS_PATH)]
    NoToken { key: &'static str },
    #[error("no join address other than this node's own in the node table")]
    NoJoinAddress,
    #[error("join rejected by {addr}: {reason}")]
    Rejected { addr: Ipv4Addr, reason: String },
    #[error("no manager answered within {waited} s; last error: {last}")]
    Unreachable { waited: u64, last: String },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Table(#[from] LoadTableError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What the swarm step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    AlreadyActive,
    Initialized,
    Joined { via: Ipv4Addr },
    NotInSwarm,
}

/// Reads the local node's swarm state from docker.
pub fn local_state(agent: &Agent<'_>) -> Result<NodeState, SwarmError> {
    let out = run_checked(
        agent.runner,
        &Cmd::new("docker")
            .arg("info")
            .arg("--format")
            .arg("{{.Swarm.LocalNodeState}}"),
    )?;
    NodeState::parse(&out.stdout).ok_or_else(|| SwarmError::BadState(out.stdout.trim().to_owned()))
}

/// Runs the swarm step and journals it.
pub fn run(agent: &Agent<'_>) -> Result<Joined, SwarmError> {
    let journal = Journal::new(&agent.root);
    let result = join(agent, &journal);
    let (outcome, why) = match &result {
        Ok(j) => (
            Outcome::Done,
            match j {
                Joined::AlreadyActive | Joined::Initialized | Joined::Joined { .. } => {
                    "member of the swarm".to_owned()
                }
                Joined::NotInSwarm => "this node takes no part in the swarm".to_owned(),
            },
        ),
        Err(e) => (Outcome::Failed, error_chain(e)),
    };
    match &result {
        Ok(j) => log::info!("swarm: {j:?}"),
        Err(_) => log::error!("swarm failed: {why}"),
    }
    journal.record(
        Step::Swarm,
        &Record {
            outcome,
            at: unix_seconds(agent.clock.now()),
            why,
            node: None,
            boot_id: None,
        },
    )?;
    result
}

fn join(agent: &Agent<'_>, journal: &Journal) -> Result<Joined, SwarmError> {
    let identity = journal.read(Step::Identity)?;
    let node = match &identity {
        Some(Record {
            outcome: Outcome::Done,
            node: Some(node),
            ..
        }) => node.clone(),
        Some(r) => return Err(SwarmError::NoIdentity(r.why.clone())),
        None => return Err(SwarmError::NoIdentity("pending".to_owned())),
    };
    let boot = crate::journal::boot_id(&agent.root);
    match journal.read(Step::Clock)? {
        Some(r) if r.outcome == Outcome::Done && r.boot_id == boot => {}
        Some(r) if r.outcome == Outcome::Done => {
            return Err(SwarmError::ClockUnverified(
                "verified in an earlier boot".to_owned(),
            ))
        }
        Some(r) => return Err(SwarmError::ClockUnverified(r.why)),
        None => return Err(SwarmError::ClockUnverified("pending".to_owned())),
    }
    let table = load_table(&agent.root)?;
    let entry = table
        .nodes
        .get(&node)
        .ok_or_else(|| SwarmError::UnknownNode(node.clone()))?;
    if entry.swarm_role == SwarmRole::None {
        return Ok(Joined::NotInSwarm);
    }
    match local_state(agent)? {
        NodeState::Active => return Ok(Joined::AlreadyActive),
        NodeState::Inactive | NodeState::Pending => {}
        stuck => return Err(SwarmError::Stuck(stuck)),
    }
    let own = entry.address;
    let key = match entry.swarm_role {
        SwarmRole::Init => {
            run_checked(
                agent.runner,
                &Cmd::new("docker")
                    .arg("swarm")
                    .arg("init")
                    .arg("--advertise-addr")
                    .arg(own.to_string()),
            )?;
            return Ok(Joined::Initialized);
        }
        SwarmRole::Manager => MANAGER_TOKEN,
        SwarmRole::Worker | SwarmRole::None => WORKER_TOKEN,
    };
    let secrets = secrets::load(&agent.root)?;
    let token = secrets.get(key).ok_or(SwarmError::NoToken { key })?;
    let targets: Vec<Ipv4Addr> = table
        .swarm
        .join
        .iter()
        .copied()
        .filter(|a| *a != own)
        .collect();
    if targets.is_empty() {
        return Err(SwarmError::NoJoinAddress);
    }
    let limit = Duration::from_secs(table.swarm.wait_seconds);
    let start = agent.clock.elapsed();
    let mut backoff = BACKOFF_START;
    loop {
        let mut last = String::new();
        for addr in &targets {
            let cmd = Cmd::new("docker")
                .arg("swarm")
                .arg("join")
                .arg("--token")
                .secret(token)
                .arg("--advertise-addr")
                .arg(own.to_string())
                .arg(format!("{addr}:{MANAGER_PORT}"));
            let out = run_logged(agent.runner, &cmd)?;
            if out.success() {
                return Ok(Joined::Joined { via: *addr });
            }
            let reason = out.stderr.trim().to_owned();
            if reason.contains("already part of a swarm") {
                return Ok(Joined::AlreadyActive);
            }
            // A wrong token will not get better by waiting.
            if reason.contains("invalid join token") || reason.contains("InvalidArgument") {
                return Err(SwarmError::Rejected {
                    addr: *addr,
                    reason,
                });
            }
            last = format!("{addr}: {reason}");
        }
        let waited = agent.clock.elapsed().saturating_sub(start);
        if waited + backoff > limit {
            return Err(SwarmError::Unreachable {
                waited: waited.as_secs(),
                last,
            });
        }
        log::warn!(
            "no manager reachable yet, retrying in {} s",
            backoff.as_secs()
        );
        agent.clock.sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
