//! Argument parsing and the thin glue from commands to library calls.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pibake::build::{self, BuildOptions};
use pibake::inputs::{self, LockOutcome};
use pibake::model::TableKind;
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
    /// The content-addressed store (default: $XDG_CACHE_HOME/pibake or ~/.cache/pibake).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Never touch the network; fail listing every missing input.
    #[arg(long, global = true)]
    offline: bool,
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
    /// Resolve every package the images need into pibake.lock beside the cluster file.
    Lock {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Resolve again even if a lock exists.
        #[arg(long)]
        update: bool,
    },
    /// Download what the lock needs and the store lacks, verifying every hash.
    Fetch {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Store maintenance.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Remove store entries no lock or recorded build references.
    Gc,
    /// Build the images of the plan into images/ (or --out).
    Build {
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
        /// Output directory.
        #[arg(long, value_name = "DIR", default_value = "images")]
        out: PathBuf,
        /// Partition table, overriding the cluster file.
        #[arg(long, value_name = "mbr|gpt")]
        table: Option<String>,
        /// The aarch64 first-boot agent (default: what `cargo xtask agent` builds).
        #[arg(long, value_name = "FILE")]
        agent: Option<PathBuf>,
    },
    /// Check any Raspberry Pi image: table, filesystems, boot files, no baked identity.
    Verify {
        /// The image file (.img).
        image: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Rehash every entry and report corrupt ones.
    Verify,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store_dir = args.store.clone();
    let offline = args.offline;
    match args.command {
        Command::Lock { cluster, update } => {
            let Some(model) = load_valid(&cluster.config)? else {
                return Ok(ExitCode::from(1));
            };
            if offline && (update || !inputs::lock_path(&model).exists()) {
                anyhow::bail!(
                    "--offline: resolving a lock needs the network (the archive's indices)"
                );
            }
            let store = inputs::open_store(store_dir.as_deref())?;
            match inputs::lock(&model, &store, update)? {
                LockOutcome::Kept(lock) => eprintln!(
                    "{}: up to date ({} packages); `pibake lock --update` resolves again",
                    inputs::lock_path(&model).display(),
                    lock.packages.len()
                ),
                LockOutcome::Written(lock) => eprintln!(
                    "{}: {} packages, SOURCE_DATE_EPOCH {}",
                    inputs::lock_path(&model).display(),
                    lock.packages.len(),
                    lock.source_date_epoch
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch { cluster } => {
            let Some(model) = load_valid(&cluster.config)? else {
                return Ok(ExitCode::from(1));
            };
            let store = inputs::open_store(store_dir.as_deref())?;
            let lock = inputs::read_lock(&model)?;
            let report = inputs::fetch(
                &model,
                &lock,
                &store,
                offline,
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )?;
            eprintln!(
                "fetched {} files ({} bytes); {} already in {}",
                report.fetched.len(),
                report.bytes,
                report.present,
                store.root().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Store {
            command: StoreCommand::Verify,
        } => {
            let store = inputs::open_store(store_dir.as_deref())?;
            let report = store.verify()?;
            for entry in &report.corrupt {
                println!("corrupt: {}", store.path_of(entry).display());
            }
            eprintln!(
                "{} entries checked, {} corrupt",
                report.checked,
                report.corrupt.len()
            );
            Ok(if report.corrupt.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Build {
            cluster,
            per_node,
            roles,
            nodes,
            out,
            table,
            agent,
        } => {
            let Some(model) = load_valid(&cluster.config)? else {
                return Ok(ExitCode::from(1));
            };
            let table = match table.as_deref() {
                None => None,
                Some("mbr") => Some(TableKind::Mbr),
                Some("gpt") => Some(TableKind::Gpt),
                Some(other) => anyhow::bail!("--table {other}: use mbr or gpt"),
            };
            let store = inputs::open_store(store_dir.as_deref())?;
            let lock = inputs::read_lock(&model)?;
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            inputs::fetch(&model, &lock, &store, offline, progress)?;
            let lock_info = LockInfo::read(&cluster.config).context("reading the lock file")?;
            let selection = Selection {
                per_node,
                roles,
                nodes,
            };
            let plan = plan::plan(&model, &lock_info, &selection)?;
            let data = model::data_dir_for(&cluster.config);
            let agent = agent
                .or_else(|| std::env::var_os("PIBAKE_AGENT_BIN").map(PathBuf::from))
                .unwrap_or_else(|| {
                    data.join(
                        "target/agent-cross/aarch64-unknown-linux-gnu/release/pibake-firstboot",
                    )
                });
            let work_dir = store.root().join("work");
            let options = BuildOptions {
                out_dir: out,
                work_dir,
                agent,
                dtbo_dir: data.join("overlays/dtbo"),
                table,
                progress,
            };
            let built = build::build(&model, &plan, &lock, &store, &options)?;
            print!("{}", build::summary(&built));
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { image } => {
            let work = tempfile::tempdir().context("creating a work directory")?;
            let findings = pibake_image::verify::verify_image(&image, work.path())?;
            for finding in &findings {
                println!("{finding}");
            }
            if findings.is_empty() {
                eprintln!("{}: ok", image.display());
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{}: {} finding(s)", image.display(), findings.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Gc => {
            let store = inputs::open_store(store_dir.as_deref())?;
            let keep = store
                .roots()?
                .into_values()
                .flatten()
                .map(|e| e.sha256())
                .collect();
            let report = store.gc(&keep)?;
            eprintln!(
                "removed {} entries, freed {:.1} MiB",
                report.removed.len(),
                report.freed_bytes as f64 / (1024.0 * 1024.0)
            );
            Ok(ExitCode::SUCCESS)
        }
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
