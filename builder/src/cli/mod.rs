//! Argument parsing and the thin glue from commands to library calls.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pibake::model::{self, Cluster};
use pibake::plan::{self, LockInfo, Selection};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "pibake",
    version,
    about = "Reproducible Raspberry Pi cluster images from one declarative description"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ClusterArg {
    /// The cluster description.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "cluster.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the cluster file and its profiles; print every finding.
    Check {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Show the images `build` would make, with their input hashes.
    Plan {
        #[command(flatten)]
        cluster: ClusterArg,
        /// One image per node instead of one per role.
        #[arg(long)]
        per_node: bool,
        /// Only this role (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Only this node, as a per-node image (repeatable).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Check { cluster } => check(&cluster.config),
        Command::Plan {
            cluster,
            per_node,
            roles,
            nodes,
            json,
        } => {
            let Some(model) = load_valid(&cluster.config)? else {
                return Ok(ExitCode::from(1));
            };
            let lock = LockInfo::read(&cluster.config).context("reading the lock file")?;
            let selection = Selection {
                per_node,
                roles,
                nodes,
            };
            let plan = plan::plan(&model, &lock, &selection)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.to_table());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let checked = model::load(path)?;
    eprint!("{}", checked.report());
    if checked.has_errors() {
        Ok(ExitCode::from(1))
    } else {
        eprintln!("{}: ok", path.display());
        Ok(ExitCode::SUCCESS)
    }
}

/// Loads a cluster; on errors prints them and returns `None`.
fn load_valid(path: &Path) -> anyhow::Result<Option<Cluster>> {
    let checked = model::load(path)?;
    if checked.has_errors() {
        eprint!("{}", checked.report());
        return Ok(None);
    }
    let warnings: Vec<_> = checked
        .diagnostics
        .iter()
        .filter(|d| d.severity == pibake::diag::Severity::Warning)
        .collect();
    if !warnings.is_empty() {
        eprintln!(
            "{} warning(s); run `pibake check` to see them",
            warnings.len()
        );
    }
    Ok(checked.cluster)
}
