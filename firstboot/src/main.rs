//! `pibake-firstboot`: parses arguments, wires the real system into the
//! library's steps, prints errors and picks exit codes.

use clap::{Parser, Subcommand};
use pibake_firstboot::clock::{Chronyc, Timedatectl};
use pibake_firstboot::journal::{self, Step};
use pibake_firstboot::root::Root;
use pibake_firstboot::system::{ProcessRunner, SystemClock};
use pibake_firstboot::{
    clock, engine, error_chain, identity, images, stacks, status, swarm, Agent,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// First-boot agent of pibake images: gives the card its node identity,
/// gates on a verified clock and joins the Docker Swarm.
#[derive(Debug, Parser)]
#[command(
    name = "pibake-firstboot",
    version,
    after_help = "Test only: with pibake.test.hold_after=<identity|clock|images|swarm|stacks> on the kernel \
command line, the agent holds (logs a marker and sleeps forever) once it has run and journaled \
that step, so a test harness can cut the power there. Never set it on a board."
)]
struct Cli {
    /// Root of the system to act on (a temporary tree in tests).
    #[arg(long, global = true, default_value = "/")]
    root: PathBuf,
    /// Log debug messages too.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Choose the node, install its files, hostname, secrets, SSH host keys; grow the root.
    Identity,
    /// Wait (bounded) for chrony to report a verified clock.
    Clock,
    /// Load the image's preloaded container images (once); initialize or join the Docker
    /// Swarm (needs identity and a verified clock); then, on the node that initializes it,
    /// deploy the image's compose stacks once.
    Swarm,
    /// Exit 0 when this node is an active Swarm manager, 1 otherwise (keepalived's track
    /// script: it asks the Docker daemon's socket itself, in milliseconds).
    SwarmManagerCheck,
    /// Show each step: done, pending or failed, when and why.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Logs to stderr; under systemd (JOURNAL_STREAM set) with `<N>` priority
/// prefixes, which journald turns into log levels.
#[derive(Debug)]
struct StderrLogger {
    journald: bool,
    max: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.max
    }
    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if self.journald {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            eprintln!("<{priority}>{}", record.args());
        } else {
            eprintln!(
                "{}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }
    fn flush(&self) {}
}

/// The test-only hold (journal module docs): when the kernel command line
/// asks for a hold after `step`, which has just run and been journaled, log
/// the marker and never return.
fn test_hold(agent: &Agent<'_>, step: Step) {
    match journal::hold_after(&agent.root) {
        Ok(Some(wanted)) if wanted == step => {
            log::warn!("{}", journal::hold_marker(step));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Ok(_) => {}
        Err(value) => log::warn!(
            "ignoring {}{value}: not a step (identity, clock, images, swarm, stacks)",
            journal::HOLD_KEY
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let max = if cli.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger = StderrLogger {
        journald: std::env::var_os("JOURNAL_STREAM").is_some(),
        max,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    let clock = SystemClock::new();
    let runner = ProcessRunner;
    let agent = Agent {
        root: Root::new(cli.root),
        clock: &clock,
        runner: &runner,
    };
    // Steps log and journal their own failures; main only picks the code.
    let ok = match cli.command {
        Command::Identity => {
            let ok = identity::run(&agent).is_ok();
            test_hold(&agent, Step::Identity);
            ok
        }
        Command::Clock => {
            let ok = clock::run(&agent, &Chronyc(&runner), &Timedatectl(&runner)).is_ok();
            test_hold(&agent, Step::Clock);
            ok
        }
        Command::Swarm => {
            // Preloaded images first, so that the node's tasks and the
            // first manager's stacks find them (the images module's docs);
            // a failed load is journaled and does not stop the swarm step.
            let loaded = images::run(&agent);
            if !matches!(loaded, Ok(images::Loaded::NotHere)) {
                test_hold(&agent, Step::Images);
            }
            let joined = swarm::run(&agent).is_ok();
            test_hold(&agent, Step::Swarm);
            // The first manager's stacks, once the swarm exists (the stacks
            // module's docs); a failed deploy is journaled, and retried by
            // the next run.
            let deployed = joined && {
                let deployed = stacks::run(&agent);
                if !matches!(deployed, Ok(stacks::Deployed::NotHere)) {
                    test_hold(&agent, Step::Stacks);
                }
                deployed.is_ok()
            };
            loaded.is_ok() && deployed
        }
        Command::SwarmManagerCheck => {
            // keepalived's `timeout 10` bounds the whole script; answer before it.
            match engine::info(agent.root.dir(), Duration::from_secs(8)) {
                Ok(info) => info.is_active_manager(),
                Err(e) => {
                    log::debug!("{}", error_chain(&e));
                    false
                }
            }
        }
        Command::Status { json } => {
            let steps = status::status(&agent.root);
            if json {
                match serde_json::to_string_pretty(&steps) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("error: {}", error_chain(&e));
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", status::render(&steps));
            }
            true
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
