//! Identity: choose which node of the table this board is, then personalize
//! the card as that node (files, hostname, secrets, SSH host keys, root size).
//!
//! Every phase is idempotent, so a run interrupted anywhere converges when
//! run again, and a second run changes nothing.

use crate::atomic::{write_atomic, WriteError};
use crate::bootfiles::{self, FindError, NODE_FILE};
use crate::growroot::{self, Grown};
use crate::hostname::{NodeName, NodeNameError};
use crate::journal::{Journal, JournalError, Outcome, Record, Step};
use crate::root::{BadBoardPath, BoardPath, Root};
use crate::secrets::{self, Ingested, SecretsError};
use crate::system::{run_checked, unix_seconds, Cmd, CommandError};
use crate::table::{NodeEntry, NodeTable};
use crate::{error_chain, load_table, Agent, LoadTableError};
use serde::Deserialize;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Kernel command-line parameter naming the node.
pub const CMDLINE_KEY: &str = "pibake.node=";

/// Where the choice of node came from, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    BootFile,
    Cmdline,
    Serial,
    Mac,
    /// The table has a single node (a per-node image).
    OnlyNode,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::BootFile => "boot partition pibake-node.toml",
            Source::Cmdline => "kernel command line pibake.node=",
            Source::Serial => "board serial",
            Source::Mac => "MAC address",
            Source::OnlyNode => "only node of the table",
        })
    }
}

/// The node chosen for this board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub node: String,
    pub source: Source,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Table(#[from] LoadTableError),
    #[error("{from} names node {name:?}, which is not in the node table (nodes: {known})")]
    UnknownNode {
        from: Source,
        name: String,
        known: String,
    },
    #[error("{from} {value} matches several nodes: {nodes}")]
    Ambiguous {
        from: Source,
        value: String,
        nodes: String,
    },
    #[error("no node matches this board (serial {serial}, {interface} MAC {mac}; no {}, no {CMDLINE_KEY} on the kernel command line)", bootfiles::places(NODE_FILE))]
    NoMatch {
        serial: String,
        interface: String,
        mac: String,
    },
    #[error("the table's only node {node} declares {key} {declared}, this board has {found}")]
    OnlyNodeMismatch {
        node: String,
        key: &'static str,
        declared: String,
        found: String,
    },
    #[error("{path} is not valid (expected `node = \"<name>\"`)")]
    NodeFile {
        path: PathBuf,
        #[source]
        cause: toml::de::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        cause: io::Error,
    },
    #[error("node table interface {0:?} is not an interface name")]
    BadInterface(String),
    #[error("cannot make the node's name the host name")]
    BadHostname(#[source] NodeNameError),
    #[error("file of node {node} has a bad path")]
    BadPath {
        node: String,
        #[source]
        cause: BadBoardPath,
    },
    #[error("file {path} of node {node} has mode {mode:o}, more than permission bits")]
    BadMode {
        node: String,
        path: String,
        mode: u32,
    },
    #[error("this card was personalized as {previous}, but this board is {now} by {from}; delete /var/lib/pibake/identity.toml to personalize it again")]
    Moved {
        previous: String,
        now: String,
        from: Source,
    },
    #[error("cannot create SSH host keys")]
    SshKeys(#[source] CommandError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    BootFile(#[from] FindError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn read_opt(root: &Root, path: &str) -> Result<Option<String>, IdentityError> {
    let full = root.at(path);
    match std::fs::read_to_string(&full) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(IdentityError::Read { path: full, cause }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFileToml {
    node: String,
}

fn named(table: &NodeTable, name: &str, from: Source) -> Result<Choice, IdentityError> {
    if table.nodes.contains_key(name) {
        Ok(Choice {
            node: name.to_owned(),
            source: from,
        })
    } else {
        Err(IdentityError::UnknownNode {
            from,
            name: name.to_owned(),
            known: table.nodes.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

/// Picks the node whose `key` equals `value`: `None` when none does.
fn matching(
    table: &NodeTable,
    value: &str,
    from: Source,
    key: impl Fn(&NodeEntry) -> Option<&str>,
) -> Result<Option<Choice>, IdentityError> {
    let found: Vec<&String> = table
        .nodes
        .iter()
        .filter(|(_, n)| key(n).is_some_and(|k| k.eq_ignore_ascii_case(value)))
        .map(|(name, _)| name)
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(Choice {
            node: (*one).clone(),
            source: from,
        })),
        many => Err(IdentityError::Ambiguous {
            from,
            value: value.to_owned(),
            nodes: many
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Where a Raspberry Pi's serial is (the device tree's, NUL-terminated).
pub const DT_SERIAL: &str = "proc/device-tree/serial-number";
/// Where an x86 machine's serial is (SMBIOS system serial; a Mac Mini's is Apple's).
pub const DMI_SERIAL: &str = "sys/class/dmi/id/product_serial";

/// What firmware writes into SMBIOS when a machine has no serial: never an identity.
const DMI_PLACEHOLDERS: [&str; 6] = [
    "0",
    "none",
    "not specified",
    "to be filled by o.e.m.",
    "system serial number",
    "default string",
];

/// The board serial: the device tree's (without its trailing NUL) on a Pi, else the DMI
/// product serial on an x86 machine (firmware placeholders count as none).
pub fn board_serial(root: &Root) -> Result<Option<String>, IdentityError> {
    if let Some(dt) = read_opt(root, DT_SERIAL)?
        .map(|s| s.trim_end_matches('\0').trim().to_owned())
        .filter(|s| !s.is_empty())
    {
        return Ok(Some(dt));
    }
    Ok(read_opt(root, DMI_SERIAL)?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !DMI_PLACEHOLDERS.contains(&s.to_ascii_lowercase().as_str())))
}

/// The MAC of the table's wired interface, lower case.
pub fn board_mac(root: &Root, interface: &str) -> Result<Option<String>, IdentityError> {
    if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
        return Err(IdentityError::BadInterface(interface.to_owned()));
    }
    Ok(
        read_opt(root, &format!("sys/class/net/{interface}/address"))?
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty()),
    )
}

/// Chooses the node: boot-partition file ([`NODE_FILE`], whose content is
/// [`NodeName::node_file`], found by [`bootfiles::find`] in /boot/firmware or
/// /boot/efi), kernel command line, board
/// serial, MAC of the wired interface, and finally the only node of a
/// single-node table. An explicit name that is not in the table is an error,
/// not a reason to guess.
pub fn choose(root: &Root, table: &NodeTable) -> Result<Choice, IdentityError> {
    if let Some(found) = bootfiles::find(root, NODE_FILE)? {
        log::debug!("node file {}", found.path.display());
        let text = std::fs::read_to_string(&found.path).map_err(|cause| IdentityError::Read {
            path: found.path.clone(),
            cause,
        })?;
        let file: NodeFileToml =
            toml::from_str(&text).map_err(|cause| IdentityError::NodeFile {
                path: found.path,
                cause,
            })?;
        return named(table, file.node.trim(), Source::BootFile);
    }
    if let Some(cmdline) = read_opt(root, "proc/cmdline")? {
        if let Some(name) = cmdline
            .split_whitespace()
            .rev()
            .find_map(|w| w.strip_prefix(CMDLINE_KEY))
        {
            return named(table, name, Source::Cmdline);
        }
    }
    let serial = board_serial(root)?;
    if let Some(serial) = &serial {
        if let Some(c) = matching(table, serial, Source::Serial, |n| n.serial.as_deref())? {
            return Ok(c);
        }
    }
    let mac = board_mac(root, &table.interface)?;
    if let Some(mac) = &mac {
        if let Some(c) = matching(table, mac, Source::Mac, |n| n.mac.as_deref())? {
            return Ok(c);
        }
    }
    if let [(name, node)] = table.nodes.iter().collect::<Vec<_>>().as_slice() {
        // Reaching here means any key the node declares did not match.
        let mismatch =
            |key, declared: &Option<String>, found: &Option<String>| match (declared, found) {
                (Some(d), Some(f)) => Err(IdentityError::OnlyNodeMismatch {
                    node: (*name).clone(),
                    key,
                    declared: d.clone(),
                    found: f.clone(),
                }),
                _ => Ok(()),
            };
        mismatch("serial", &node.serial, &serial)?;
        mismatch("MAC", &node.mac, &mac)?;
        return Ok(Choice {
            node: (*name).clone(),
            source: Source::OnlyNode,
        });
    }
    let unknown = || "unknown".to_owned();
    Err(IdentityError::NoMatch {
        serial: serial.unwrap_or_else(unknown),
        interface: table.interface.clone(),
        mac: mac.unwrap_or_else(unknown),
    })
}

/// The phases of personalization, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Secrets first: the shorter they sit on FAT, the better.
    Secrets,
    Files,
    Hostname,
    SshKeys,
    GrowRoot,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Secrets,
        Phase::Files,
        Phase::Hostname,
        Phase::SshKeys,
        Phase::GrowRoot,
    ];
}

/// Runs one phase for the chosen node. Returns a warning for problems that
/// do not make the board unusable (the root not grown).
pub fn run_phase(
    agent: &Agent<'_>,
    table: &NodeTable,
    choice: &Choice,
    phase: Phase,
) -> Result<Option<String>, IdentityError> {
    let root = &agent.root;
    match phase {
        Phase::Secrets => {
            match secrets::ingest(root)? {
                Ingested::Moved => log::info!("secrets moved to /{}", secrets::SECRETS_PATH),
                Ingested::LeftoverRemoved => log::info!("removed a wiped secrets leftover"),
                Ingested::NothingThere => log::debug!("no secrets on the boot partition"),
            }
            Ok(None)
        }
        Phase::Files => {
            let node = table
                .nodes
                .get(&choice.node)
                .ok_or_else(|| IdentityError::UnknownNode {
                    from: choice.source,
                    name: choice.node.clone(),
                    known: String::new(),
                })?;
            // Secrets were ingested in the phase before this one.
            let secrets = secrets::load(root)?;
            for file in &node.files {
                let path =
                    BoardPath::parse(&file.path).map_err(|cause| IdentityError::BadPath {
                        node: choice.node.clone(),
                        cause,
                    })?;
                if file.mode > 0o7777 {
                    return Err(IdentityError::BadMode {
                        node: choice.node.clone(),
                        path: file.path.clone(),
                        mode: file.mode,
                    });
                }
                let content = secrets.fill(&file.content);
                write_atomic(&root.at_path(&path), content.as_bytes(), file.mode)?;
            }
            Ok(None)
        }
        Phase::Hostname => {
            let name: NodeName = choice.node.parse().map_err(IdentityError::BadHostname)?;
            write_atomic(
                &root.at("etc/hostname"),
                format!("{name}\n").as_bytes(),
                0o644,
            )?;
            // The kernel's name too: NetworkManager and logs start before
            // anything would read /etc/hostname again.
            let kernel = root.at("proc/sys/kernel/hostname");
            if let Ok(current) = std::fs::read_to_string(&kernel) {
                if current.trim() != name.as_str() {
                    std::fs::write(&kernel, name.as_str()).map_err(|cause| {
                        IdentityError::Read {
                            path: kernel.clone(),
                            cause,
                        }
                    })?;
                }
            }
            Ok(None)
        }
        Phase::SshKeys => ssh_host_keys(agent).map(|()| None),
        Phase::GrowRoot => match growroot::grow(root, agent.runner) {
            Ok(Grown::Grown) => Ok(Some("root partition grown".to_owned())),
            Ok(Grown::AlreadyFull) => Ok(None),
            Err(e) => {
                let why = format!("root filesystem not grown: {}", error_chain(&e));
                log::error!("{why}");
                Ok(Some(why))
            }
        },
    }
}

/// Creates missing SSH host keys with `ssh-keygen -A`. A key pair half
/// written when power was cut (private key without its .pub or the reverse)
/// is removed first, since `ssh-keygen -A` only creates missing keys.
fn ssh_host_keys(agent: &Agent<'_>) -> Result<(), IdentityError> {
    let dir = agent.root.at("etc/ssh");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::info!("no /etc/ssh: no SSH server in this image, no host keys made");
            return Ok(());
        }
        Err(cause) => return Err(IdentityError::Read { path: dir, cause }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|cause| IdentityError::Read {
            path: dir.clone(),
            cause,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    for name in &names {
        let is_key = name.starts_with("ssh_host_") && name.ends_with("_key");
        let half = if is_key {
            !names.contains(&format!("{name}.pub"))
        } else if let Some(private) = name.strip_suffix(".pub") {
            private.starts_with("ssh_host_") && !names.iter().any(|n| n == private)
        } else {
            false
        };
        let empty = is_key
            && std::fs::metadata(dir.join(name))
                .map(|m| m.len() == 0)
                .unwrap_or(false);
        if half || empty {
            log::warn!("removing incomplete SSH host key {name}");
            crate::atomic::remove_durable(&dir.join(name)).map_err(|cause| {
                IdentityError::Read {
                    path: dir.join(name),
                    cause,
                }
            })?;
        }
    }
    let mut cmd = Cmd::new("ssh-keygen").arg("-A");
    if !agent.root.is_system() {
        cmd = cmd.arg("-f").arg(agent.root.dir().to_string_lossy());
    }
    run_checked(agent.runner, &cmd).map_err(IdentityError::SshKeys)?;
    Ok(())
}

/// Runs identity: chooses the node, personalizes the card and journals the
/// result. On failure nothing network-related has been written when the
/// node could not be chosen, the cause is logged at error level and
/// journaled, and the error is returned (the caller exits non-zero).
pub fn run(agent: &Agent<'_>) -> Result<Choice, IdentityError> {
    let journal = Journal::new(&agent.root);
    let boot_id = crate::journal::boot_id(&agent.root);
    let result = personalize(agent, &journal);
    let record = match &result {
        Ok((choice, notes)) => {
            let mut why = format!("node {} chosen by {}", choice.node, choice.source);
            for note in notes {
                why.push_str("; ");
                why.push_str(note);
            }
            log::info!("identity done: {why}");
            Record {
                outcome: Outcome::Done,
                at: unix_seconds(agent.clock.now()),
                why,
                node: Some(choice.node.clone()),
                boot_id: None,
            }
        }
        Err(e) => {
            let why = error_chain(e);
            log::error!("identity failed, staying on DHCP and joining nothing: {why}");
            Record {
                outcome: Outcome::Failed,
                at: unix_seconds(agent.clock.now()),
                why,
                node: None,
                boot_id,
            }
        }
    };
    journal.record(Step::Identity, &record)?;
    result.map(|(choice, _)| choice)
}

fn personalize(
    agent: &Agent<'_>,
    journal: &Journal,
) -> Result<(Choice, Vec<String>), IdentityError> {
    let table = load_table(&agent.root)?;
    let choice = choose(&agent.root, &table)?;
    if let Ok(Some(previous)) = journal.read(Step::Identity) {
        if let (Outcome::Done, Some(node)) = (previous.outcome, &previous.node) {
            if *node != choice.node {
                return Err(IdentityError::Moved {
                    previous: node.clone(),
                    now: choice.node.clone(),
                    from: choice.source,
                });
            }
        }
    }
    log::info!("this board is node {} ({})", choice.node, choice.source);
    let mut notes = Vec::new();
    for phase in Phase::ALL {
        // "root partition grown" is news for the log, not for the journal:
        // it would make the second run's record differ from the first's.
        if let Some(note) = run_phase(agent, &table, &choice, phase)? {
            if note.starts_with("root filesystem not grown") {
                notes.push(note);
            } else {
                log::info!("{note}");
            }
        }
    }
    Ok((choice, notes))
}
