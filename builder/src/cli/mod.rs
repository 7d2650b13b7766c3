//! Argument parsing and the thin glue from commands to library calls.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pibake::build::{self, BuildOptions};
use pibake::data::{self, DataLookup};
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
    /// Where profiles/ and overlays/ are read from. Without it: $PIBAKE_DATA_DIR, else the
    /// nearest directory at or above the cluster file's that holds both, else the copy built
    /// into pibake (unpacked into the store as data-<sha256>).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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

/// Which images of the plan.
#[derive(Debug, clap::Args)]
struct SelectionArgs {
    /// One image per node instead of one per role.
    #[arg(long)]
    per_node: bool,
    /// Only this role (repeatable).
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// Only this node, as a per-node image (repeatable).
    #[arg(long = "node", value_name = "NODE")]
    nodes: Vec<String>,
}

impl From<SelectionArgs> for Selection {
    fn from(args: SelectionArgs) -> Self {
        Selection {
            per_node: args.per_node,
            roles: args.roles,
            nodes: args.nodes,
        }
    }
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
        #[command(flatten)]
        selection: SelectionArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Draw the cluster (roles, nodes, VIP, time, Swarm managers) as a Mermaid flowchart.
        #[arg(long, conflicts_with_all = ["json", "per_node", "roles", "nodes"])]
        mermaid: bool,
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
    /// Name the host programs pibake needs and this machine lacks, with install commands.
    Doctor {
        /// Also what the agent's cross build and the test suite need.
        #[arg(long)]
        all: bool,
    },
    /// Build the images of the plan into images/ (or --out).
    Build {
        #[command(flatten)]
        cluster: ClusterArg,
        #[command(flatten)]
        selection: SelectionArgs,
        /// Output directory.
        #[arg(long, value_name = "DIR", default_value = "images")]
        out: PathBuf,
        /// Partition table, overriding the cluster file.
        #[arg(long, value_name = "mbr|gpt")]
        table: Option<String>,
        /// A first-boot agent (pibake-firstboot); give it once per architecture (arm64 for
        /// Raspberry Pi images, amd64 for pc-efi ones), each file's ELF header says which.
        /// Default: $PIBAKE_AGENT_BIN (paths separated by `:`), else what `cargo xtask agent`
        /// built in the checkout the profiles come from.
        #[arg(long, value_name = "FILE")]
        agent: Vec<PathBuf>,
        #[command(flatten)]
        substituter: SubstituterArgs,
    },
    /// Prove an image came from its sources: check that this cluster, lock and agent are
    /// what its manifest records, build it again in an empty store and compare the bytes.
    Rebuild {
        /// The image (.img).
        image: PathBuf,
        /// Its manifest (default: IMAGE's name with .manifest.json).
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// The agents, as for `build`.
        #[arg(long, value_name = "FILE")]
        agent: Vec<PathBuf>,
        /// Where the empty store and the rebuilt image go (default: a temp directory,
        /// removed after).
        #[arg(long, value_name = "DIR")]
        work: Option<PathBuf>,
    },
    /// Signing keys for the shared cache.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The shared build cache in an OCI registry (credentials: $PIBAKE_CACHE_USER and
    /// $PIBAKE_CACHE_TOKEN).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Write an image to a card (or file), verify it, and put the node and secrets files on it.
    Flash {
        /// The image (.img or .img.zst); its .bmap beside it is used when present.
        image: PathBuf,
        /// A block device or a file.
        target: PathBuf,
        /// The node this card becomes (pibake-node.toml on the boot partition).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// Secrets for the agent (pibake-secrets.toml on the boot partition).
        #[arg(long, value_name = "FILE")]
        secrets: Option<PathBuf>,
        /// Do not ask before overwriting a device.
        #[arg(long)]
        yes: bool,
    },
    /// What differs between two images or manifests: packages, files, boot files.
    Diff { a: PathBuf, b: PathBuf },
    /// Write the rpi-imager repository JSON and SHA256SUMS for built images.
    ReleaseManifest {
        /// Directory with the built images and manifests.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// URL the assets are published under.
        #[arg(long, value_name = "URL")]
        url_base: String,
        #[arg(long, value_name = "FILE")]
        os_list: PathBuf,
        #[arg(long, value_name = "FILE")]
        sums: PathBuf,
    },
    /// Check any Raspberry Pi image: table, filesystems, boot files, no baked identity.
    Verify {
        /// The image file (.img).
        image: PathBuf,
    },
}

/// Where stage outputs this store lacks may come from, and whose signatures make them good.
#[derive(Debug, clap::Args)]
struct SubstituterArgs {
    /// A cache to pull stage outputs from before making them (http://HOST:PORT/NAME for a
    /// registry on the build's network, https:// or oci:// for one with TLS).
    #[arg(long, value_name = "URL", requires = "trusted_keys")]
    substituter: Option<String>,
    /// A public key (`<name>:<base64>`, a `.pub` of `pibake key generate`) whose signatures
    /// are trusted (repeatable). Stage outputs signed by no trusted key are refused.
    #[arg(long = "trusted-key", value_name = "FILE")]
    trusted_keys: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Make an ed25519 key pair: FILE (secret, mode 0600) and FILE.pub.
    Generate {
        /// The key's name, which signatures carry (`lab-ci-1`).
        #[arg(long, value_name = "NAME")]
        name: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Push the lock's entries and the stage outputs the cluster's images were last built
    /// from (rootfs and root partitions), the stage outputs signed; what the cache has
    /// already is not sent again.
    Push {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The cache (http://HOST:PORT/NAME, https://… or oci://…).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The secret key signing the stage outputs.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Pull what the cluster's lock and plan need and the store lacks.
    Pull {
        #[command(flatten)]
        cluster: ClusterArg,
        #[arg(long, value_name = "URL")]
        from: String,
        /// A trusted public key (repeatable).
        #[arg(long = "trusted-key", value_name = "FILE", required = true)]
        trusted_keys: Vec<PathBuf>,
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
    let data_lookup = DataLookup::from_env(args.data_dir.clone(), args.store.clone());
    match args.command {
        Command::Lock { cluster, update } => {
            let Some(model) = load_valid(&cluster.config, &data_lookup)? else {
                return Ok(ExitCode::from(1));
            };
            if offline && (update || !inputs::lock_path(&model).exists()) {
                anyhow::bail!(
                    "--offline: resolving a lock needs the network (the archive's indices)"
                );
            }
            let store = inputs::open_store(store_dir.as_deref())?;
            let outcome = if offline {
                // Resolving a stale closure needs the archive: say what is
                // stale; the archives' pins need no network.
                inputs::lock_offline(&model, &store)?
            } else {
                inputs::lock(&model, &store, update)?
            };
            match outcome {
                LockOutcome::Kept(lock) => eprintln!(
                    "{}: up to date ({}); `pibake lock --update` resolves again",
                    inputs::lock_path(&model).display(),
                    inputs::describe_lock(&lock)
                ),
                LockOutcome::Written(lock) => eprintln!(
                    "{}: {}",
                    inputs::lock_path(&model).display(),
                    inputs::describe_lock(&lock)
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch { cluster } => {
            let Some(model) = load_valid(&cluster.config, &data_lookup)? else {
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
            selection,
            out,
            table,
            agent,
            substituter,
        } => {
            let Some(mut model) = load_valid(&cluster.config, &data_lookup)? else {
                return Ok(ExitCode::from(1));
            };
            // The override is part of the model the plan (and so each image's spec) is made of.
            match table.as_deref() {
                None => {}
                Some("mbr") => model.image.table = TableKind::Mbr,
                Some("gpt") => model.image.table = TableKind::Gpt,
                Some(other) => anyhow::bail!("--table {other}: use mbr or gpt"),
            }
            if offline && substituter.substituter.is_some() {
                anyhow::bail!("--offline with --substituter: a substituter is on the network (drop one of them)");
            }
            let store = inputs::open_store(store_dir.as_deref())?;
            let lock = inputs::read_lock(&model)?;
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            inputs::fetch(&model, &lock, &store, offline, progress)?;
            let lock_info = LockInfo::read(&cluster.config).context("reading the lock file")?;
            let plan = plan::plan(&model, &lock_info, &selection.into())?;
            let data = model::data_dir_for(&cluster.config, &data_lookup)?;
            let agents = data::agents(agent, std::env::var_os(data::AGENT_ENV), &data)?;
            let work_dir = store.work_dir();
            let options = BuildOptions {
                out_dir: out,
                work_dir,
                agents,
                dtbo_dir: data.dtbo(),
                progress,
                substituter: match substituter.substituter {
                    Some(url) => Some(std::sync::Arc::new(puller(
                        &url,
                        &substituter.trusted_keys,
                    )?)),
                    None => None,
                },
            };
            let built = build::build(&model, &plan, &lock, &store, &options)?;
            print!("{}", build::summary(&built));
            Ok(ExitCode::SUCCESS)
        }
        Command::Key {
            command: KeyCommand::Generate { name, out },
        } => {
            let name = pibake_cache::KeyName::new(&name).ok_or_else(|| {
                anyhow::anyhow!("--name {name:?}: letters, digits, `.`, `_` or `-`, at most 64")
            })?;
            let public = pibake_cache::SecretKey::generate(name)?.write_new(&out)?;
            eprintln!(
                "wrote {} (secret: keep it out of the repository) and {} (give it to pullers as --trusted-key)",
                out.display(),
                public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { command } => cache(command, store_dir.as_deref(), &data_lookup),
        Command::Rebuild {
            image,
            manifest,
            cluster,
            agent,
            work,
        } => {
            if offline {
                anyhow::bail!("--offline: a rebuild fetches the lock's inputs into an empty store");
            }
            let Some(model) = load_valid(&cluster.config, &data_lookup)? else {
                return Ok(ExitCode::from(1));
            };
            let lock = inputs::read_lock(&model)?;
            let data = model::data_dir_for(&cluster.config, &data_lookup)?;
            let options = BuildOptions {
                out_dir: PathBuf::new(),
                work_dir: PathBuf::new(),
                agents: data::agents(agent, std::env::var_os(data::AGENT_ENV), &data)?,
                dtbo_dir: data.dtbo(),
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                substituter: None,
            };
            let manifest = manifest.unwrap_or_else(|| image.with_extension("manifest.json"));
            let temp;
            let work = match work {
                Some(dir) => dir,
                None => {
                    temp = tempfile::tempdir().context("creating a work directory")?;
                    temp.path().to_owned()
                }
            };
            let outcome = pibake::rebuild::rebuild(
                &image,
                &manifest,
                &model,
                &cluster.config,
                &lock,
                &options,
                &work,
            )?;
            match outcome {
                pibake::rebuild::Outcome::Identical { sha256 } => {
                    println!("{}: bit-identical (sha256 {sha256}), rebuilt from its sources in an empty store", image.display());
                    Ok(ExitCode::SUCCESS)
                }
                pibake::rebuild::Outcome::Differs {
                    given,
                    rebuilt,
                    diff,
                } => {
                    println!(
                        "{}: differs: sha256 {given}, rebuilt {rebuilt}\n{diff}",
                        image.display()
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Doctor { all } => {
            use pibake_host::{doctor, tools::Need};
            let needs: &[Need] = if all {
                &[Need::Build, Need::Agent, Need::Test]
            } else {
                &[Need::Build]
            };
            let report = doctor::examine(&doctor::SystemProbe::default(), needs);
            print!("{}", doctor::render(&report));
            if report.is_ok() {
                eprintln!("doctor: this host has everything pibake needs");
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
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
        Command::Flash {
            image,
            target,
            node,
            secrets,
            yes,
        } => {
            let node = match node {
                Some(n) => Some(n.parse().map_err(|e| anyhow::anyhow!("--node {n}: {e}"))?),
                None => None,
            };
            let options = pibake_flash::FlashOptions {
                image,
                target,
                node,
                secrets,
                yes,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                ..pibake_flash::FlashOptions::default()
            };
            let mut confirm = |question: &str| -> bool {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    eprintln!("{question} (no terminal to ask on: pass --yes)");
                    return false;
                }
                eprint!("{question} [y/N] ");
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                matches!(answer.trim(), "y" | "Y" | "yes")
            };
            let report = pibake_flash::flash(&options, &mut confirm)?;
            eprintln!(
                "wrote {} of {} bytes, verified {} bytes in {:.1?}; boot files: {}",
                report.bytes_written,
                report.image_bytes,
                report.bytes_verified,
                report.elapsed,
                report.boot_files.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { a, b } => {
            let diff = pibake_flash::diff::diff(&a, &b)?;
            print!("{}", diff.render());
            Ok(ExitCode::SUCCESS)
        }
        Command::ReleaseManifest {
            dir,
            url_base,
            os_list,
            sums,
        } => {
            release_manifest(&dir, &url_base, &os_list, &sums)?;
            Ok(ExitCode::SUCCESS)
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
        Command::Check { cluster } => check(&cluster.config, &data_lookup),
        Command::Plan {
            cluster,
            selection,
            json,
            mermaid,
        } => {
            let Some(model) = load_valid(&cluster.config, &data_lookup)? else {
                return Ok(ExitCode::from(1));
            };
            if mermaid {
                print!("{}", pibake::picture::mermaid(&model));
                return Ok(ExitCode::SUCCESS);
            }
            let lock = LockInfo::read(&cluster.config).context("reading the lock file")?;
            let plan = plan::plan(&model, &lock, &selection.into())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.to_table());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(path: &Path, lookup: &DataLookup) -> anyhow::Result<ExitCode> {
    let data = model::data_dir_for(path, lookup)?;
    eprintln!("{}", data.describe());
    let mut checked = model::load_from(path, &data)?;
    checked.check_model(pibake::boot::lint);
    checked.check_locked_inputs(lookup.store.as_deref());
    checked.check_locked_kernel(lookup.store.as_deref());
    eprint!("{}", checked.report());
    if checked.has_errors() {
        Ok(ExitCode::from(1))
    } else {
        eprintln!("{}: ok", path.display());
        Ok(ExitCode::SUCCESS)
    }
}

/// Loads a cluster; on errors prints them and returns `None`.
fn load_valid(path: &Path, lookup: &DataLookup) -> anyhow::Result<Option<Cluster>> {
    let data = model::data_dir_for(path, lookup)?;
    eprintln!("{}", data.describe());
    let mut checked = model::load_from(path, &data)?;
    checked.check_model(pibake::boot::lint);
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

/// Writes the rpi-imager os_list JSON for every built image in `dir`, then
/// SHA256SUMS over every asset (the os_list included).
fn release_manifest(dir: &Path, url_base: &str, os_list: &Path, sums: &Path) -> anyhow::Result<()> {
    let done = pibake_flash::release::publish(dir, url_base, os_list, sums)?;
    eprintln!(
        "{}: {} images; {}",
        done.os_list.display(),
        done.images,
        done.sums.display()
    );
    Ok(())
}

/// The cache's credentials, from the environment (never from a flag: it would show in `ps`).
fn credentials() -> pibake_cache::Credentials {
    match (
        std::env::var("PIBAKE_CACHE_USER"),
        std::env::var("PIBAKE_CACHE_TOKEN"),
    ) {
        (Ok(user), Ok(token)) if !token.is_empty() => {
            pibake_cache::Credentials(Some((user, token)))
        }
        _ => pibake_cache::Credentials(None),
    }
}

fn puller(url: &str, trusted: &[PathBuf]) -> anyhow::Result<pibake_cache::Puller> {
    let trusted = trusted
        .iter()
        .map(|p| pibake_cache::PublicKey::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pibake_cache::Puller {
        cache: pibake_cache::Cache::open(url, credentials())?,
        trusted,
    })
}

/// The store, lock and role plan of a cluster, what a push sends from and a pull fills;
/// `None` when the cluster has errors (printed).
fn cache_inputs(
    config: &Path,
    store_dir: Option<&Path>,
    lookup: &DataLookup,
) -> anyhow::Result<Option<(pibake_inputs::Store, pibake_inputs::Lock, plan::Plan)>> {
    let Some(model) = load_valid(config, lookup)? else {
        return Ok(None);
    };
    let store = inputs::open_store(store_dir)?;
    let lock = inputs::read_lock(&model)?;
    let lock_info = LockInfo::read(config).context("reading the lock file")?;
    let plan = plan::plan(&model, &lock_info, &Selection::default())?;
    Ok(Some((store, lock, plan)))
}

fn cache(
    command: CacheCommand,
    store_dir: Option<&Path>,
    lookup: &DataLookup,
) -> anyhow::Result<ExitCode> {
    let log = |line: &str| eprintln!("{line}");
    match command {
        CacheCommand::Push { cluster, to, key } => {
            let Some((store, lock, plan)) = cache_inputs(&cluster.config, store_dir, lookup)?
            else {
                return Ok(ExitCode::from(1));
            };
            let locked: Vec<_> = pibake::cache::locked_entries(&lock)?
                .into_iter()
                .map(|(e, _)| e)
                .filter(|e| store.contains(e))
                .collect();
            let stages = pibake::cache::stage_outputs(&store, &plan)?;
            let key = key.map(|k| pibake_cache::SecretKey::read(&k)).transpose()?;
            let cache = pibake_cache::Cache::open(&to, credentials())?;
            let r = pibake_cache::push(&cache, &store, &locked, &stages, key.as_ref(), &log)?;
            eprintln!(
                "{}: {} items pushed, {} there already; {} blobs sent ({:.1} MiB), {} there already",
                cache.url(),
                r.pushed,
                r.present,
                r.blobs_sent,
                r.bytes_sent as f64 / (1024.0 * 1024.0),
                r.blobs_present
            );
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Pull {
            cluster,
            from,
            trusted_keys,
        } => {
            let Some((store, lock, plan)) = cache_inputs(&cluster.config, store_dir, lookup)?
            else {
                return Ok(ExitCode::from(1));
            };
            let puller = puller(&from, &trusted_keys)?;
            let locked = pibake::cache::locked_entries(&lock)?;
            let stages = pibake::cache::plan_stages(&plan);
            let r = pibake_cache::pull(&puller, &store, &locked, &stages, &log)?;
            eprintln!(
                "{}: {} items pulled ({:.1} MiB), {} in the store already, {} not in the cache",
                puller.cache.url(),
                r.pulled,
                r.bytes as f64 / (1024.0 * 1024.0),
                r.present,
                r.absent
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
