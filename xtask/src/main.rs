//! Developer automation: `cargo xtask setup | lab | test | agent | web-image`.
//!
//! The README's two commands are `cargo xtask lab` (build the reference lab
//! into images/) and `cargo xtask test` (the whole suite, which `.ci/run`
//! calls). Each sets up the host first, or says in one line what is missing.

mod agent;
mod fresh;
mod setup;

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::host(),
        Some("lab") => lab(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("fresh-root") => fresh::fresh_root(),
        Some("web-image") => web_image(),
        // Both paths on stdout, the aarch64 one last (`cargo xtask agent |
        // tail -n 1` is the boards' agent).
        Some("agent") => agent::build_agents(&workspace_root()).and_then(|agents| {
            agent::check_agents_run(&agents)?;
            println!("{}", agents.x86_64.display());
            println!("{}", agents.aarch64.display());
            Ok(())
        }),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  setup   install what pibake needs on this Debian host (apt, binfmt)\n  lab     build the reference lab (examples/lab) into images/\n  test    run the whole test suite (what CI runs)\n  fresh-root  setup and a tiny build inside a freshly bootstrapped Debian 12 root (part of test)\n  agent   build the first-boot agent for aarch64 and x86_64 (prints both paths, aarch64 last)\n  web-image  make the lab's web server archive (examples/lab/oci/web-arm64.tar; part of lab and test)"
            );
            std::process::exit(2);
        }
    };
    if let Err(error) = result {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs a command in the workspace root, echoing it, failing on non-zero.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_env(program, args, &[])
}

pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a command with its output in `log`; on failure the error carries
/// the log's last lines.
pub fn run_logged(program: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
    eprintln!("+ {program} {} > {}", args.join(" "), log.display());
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let status = Command::new(program)
        .args(args)
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("`{program}` failed ({status}):\n{}", tail.join("\n"));
    }
    Ok(())
}

fn pibake(args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["run", "--quiet", "--release", "-p", "pibake", "--"];
    full.extend_from_slice(args);
    run("cargo", &full)
}

/// The lab's preloaded web server image: `[swarm.images.web]` of
/// examples/lab/cluster.toml, which the lab's lock pins.
const LAB_WEB_ARCHIVE: &str = "examples/lab/oci/web-arm64.tar";

/// Makes the lab's web server archive (pibake-webimage: busybox httpd from
/// Debian's busybox-static, the .deb pinned, the archive reproducible). A
/// crate of its own rather than xtask code: it needs pibake's store, fetch and
/// tar writer, and xtask stays a quick build of std and pibake-host.
fn web_image() -> anyhow::Result<()> {
    run(
        "cargo",
        &[
            "run",
            "--quiet",
            "--release",
            "-p",
            "pibake-webimage",
            "--",
            "--out",
            LAB_WEB_ARCHIVE,
        ],
    )
}

/// Builds the reference lab's images into images/ (extra arguments go to
/// `pibake build`, e.g. `--per-node`).
fn lab(args: &[String]) -> anyhow::Result<()> {
    setup::host()?;
    let agents = agent::build_agents(&workspace_root())?;
    build_lab(&agents, args)
}

fn build_lab(agents: &agent::Agents, args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = "examples/lab/cluster.toml";
    // Before check: the cluster file names the archive, and the lock pins it.
    web_image()?;
    pibake(&["check", "-c", config])?;
    // Keeps the committed lock (checking it covers the profiles).
    pibake(&["lock", "-c", config])?;
    pibake(&["fetch", "-c", config])?;
    let agents: Vec<String> = agents
        .paths()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut build = vec!["build", "-c", config];
    for agent in &agents {
        build.extend(["--agent", agent.as_str()]);
    }
    build.extend(args.iter().map(String::as_str));
    pibake(&build)?;
    eprintln!("lab: images built in {:.0?}", started.elapsed());
    Ok(())
}

/// The `[[image]]` tables of the lab's lock (the archives' pins), as text.
fn lab_image_pins() -> anyhow::Result<String> {
    let path = workspace_root().join("examples/lab/pibake.lock");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .find("[[image]]")
        .map(|at| text[at..].to_owned())
        .unwrap_or_default())
}

/// The lab's kernel package in the store that holds the base DTBs the overlay
/// tests apply pibake's .dtbo files to: the 7.x kernel's
/// `linux-base-7*-arm64` (its DTBs under usr/lib/modules/<ver>/dtb/broadcom/),
/// else the 6.12 kernel's `linux-image-6.12*-arm64` (under
/// usr/lib/linux-image-<ver>/broadcom/; not the metapackage). Of several
/// versions, the highest by package file name (the store's hash prefix aside).
fn lab_kernel_deb() -> anyhow::Result<PathBuf> {
    let store = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir).join("pibake"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/pibake"),
    };
    let names: Vec<(String, PathBuf)> = std::fs::read_dir(&store)
        .with_context(|| format!("reading the store {}", store.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            // Store files are `<sha256>-<package file name>`.
            let deb = name.split_once('-').map_or(name.as_str(), |(_, d)| d);
            Some((deb.to_owned(), p))
        })
        .filter(|(deb, _)| deb.ends_with("_arm64.deb") && deb.contains("-arm64_"))
        .collect();
    let newest = |prefix: &str| {
        names
            .iter()
            .filter(|(deb, _)| deb.starts_with(prefix))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, p)| p.clone())
    };
    newest("linux-base-7")
        .or_else(|| newest("linux-image-6"))
        .with_context(|| {
            format!(
                "no linux-base-7*-arm64 (nor linux-image-6*-arm64) .deb in {}: `pibake fetch` first",
                store.display()
            )
        })
}

/// The whole suite: formatting, lints, every crate's tests, the agents'
/// builds (aarch64 under qemu-user, x86_64 natively), the fresh-root check,
/// the QEMU ring.
fn test(args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::host()?;
    // The README's quick start from nothing (setup and a tiny build in a
    // freshly bootstrapped Debian 12 root) needs nothing the steps below
    // make, and waits on the mirror and dpkg much of its ~9 minutes: it runs
    // beside them.
    let fresh = fresh::Background::start()?;
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let agent_started = Instant::now();
    let agents = agent::build_agents(&workspace_root())?;
    agent::check_agents_run(&agents)?;
    for bin in agents.paths() {
        eprintln!(
            "agent: {} ({} KiB stripped)",
            bin.display(),
            agent::agent_size(bin)? / 1024
        );
    }
    eprintln!(
        "agents: built, run under qemu-user (aarch64) and natively (x86_64) in {:.0?}",
        agent_started.elapsed()
    );
    // Both agents (paths separated by `:`): pibake keys each by its ELF header.
    let agents_env = agents.env_value()?;
    // The lab's inputs: its kernel package gives the base DTBs the overlay
    // tests apply pibake's .dtbo files to.
    let config = "examples/lab/cluster.toml";
    web_image()?;
    let pinned = lab_image_pins()?;
    pibake(&["lock", "-c", config])?;
    if lab_image_pins()? != pinned {
        bail!(
            "{LAB_WEB_ARCHIVE} is not the archive examples/lab/pibake.lock pinned: \
             pibake-webimage's output changed (`pibake lock` pinned it again; \
             if on purpose, review and commit the lock)\nwas:\n{pinned}"
        );
    }
    pibake(&["fetch", "-c", config])?;
    let kernel_deb = lab_kernel_deb()?;
    let kernel_deb = kernel_deb.to_string_lossy().into_owned();
    let mut test_args = vec!["test", "--workspace"];
    let qemu_ring = workspace_root().join("tests/qemu/Cargo.toml").exists();
    if qemu_ring {
        test_args.extend(["--exclude", "pibake-qemu-tests"]);
    }
    test_args.extend(args.iter().map(String::as_str));
    // The PyPI tools setup installed into the checkout's venv.
    let path = std::env::join_paths(std::iter::once(setup::python_tools_bin()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let path = path.to_string_lossy().into_owned();
    run_env(
        "cargo",
        &test_args,
        &[
            ("PIBAKE_AGENT_BIN", &agents_env),
            ("PIBAKE_KERNEL_DEB", &kernel_deb),
            ("PATH", &path),
        ],
    )?;
    fresh.wait()?;
    if qemu_ring {
        // The QEMU ring boots the lab's real role images.
        build_lab(&agents, &[])?;
        let ring = Instant::now();
        run_env(
            "cargo",
            // --show-output: each test's wall time and figures (failover
            // delay, docker node ls) in the log, also when it passes.
            &[
                "test",
                "-p",
                "pibake-qemu-tests",
                "--",
                "--test-threads=1",
                "--show-output",
            ],
            &[("PIBAKE_AGENT_BIN", &agents_env)],
        )?;
        eprintln!("qemu ring: {:.0?}", ring.elapsed());
    }
    eprintln!("xtask test: all green in {:.0?}", started.elapsed());
    Ok(())
}
