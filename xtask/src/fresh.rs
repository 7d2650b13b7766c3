//! `cargo xtask fresh-root`: proof that the README's quick start works on a
//! machine that has nothing but its stated prerequisites.
//!
//! A Debian 12 root is bootstrapped afresh (`mmdebstrap --variant=minbase`
//! plus the README's prerequisites: git, the C linker rustup's toolchain
//! needs, CA certificates). The host's Rust toolchain is bind-mounted in
//! (rustup's toolchains cannot be downloaded here), the repository is cloned
//! from this checkout's committed HEAD, and inside that root, in a mount
//! namespace of its own: `cargo xtask setup`, the agent's cross build, and a
//! tiny cluster through `check → lock → fetch → build → verify` with an empty
//! store. A row missing from the tools table makes a step fail here, where a
//! long-lived machine would hide it.
//!
//! What the root shares with the host, and why: the Rust toolchain
//! (`~/.rustup`, `~/.cargo`, whose registry cache also saves the crate
//! downloads), the network configuration (resolv.conf, the CA bundle and
//! pip's configuration: this machine reaches its registries through them),
//! and the kernel's binfmt_misc registration (global to the kernel).

use anyhow::{bail, Context};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The README's prerequisites beyond Debian's minbase: what `cargo xtask`
/// needs before it can run at all.
const PREREQUISITES: &str = "ca-certificates,git,gcc,libc6-dev";

/// The tiny cluster (the Essential/required set, a stand-in kernel), shared
/// with builder/tests/reproducible.rs.
const CLUSTER: &str = include_str!("../../tests/fixtures/tiny/cluster.toml");

const PROFILE: &str = include_str!("../../tests/fixtures/tiny/profile.toml");

/// What runs inside the fresh root, as root, in /repo (a clone).
const INSIDE: &str = r#"set -euo pipefail
export PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root CARGO_TERM_COLOR=never
# The host's pip settings may name a wheel folder the fresh root does not have.
[ -d "${PIP_FIND_LINKS:-/nonexistent}" ] || unset PIP_FIND_LINKS
step() { echo "fresh-root: $* ($(( $(date +%s) - T0 )) s)"; }
T0=$(date +%s)
git clone -q /origin /repo
cd /repo
step "cargo xtask setup"
cargo xtask setup
step "cargo xtask agent"
AGENT=$(cargo xtask agent | tail -n 1)
step "cargo build -p pibake"
cargo build -q -p pibake
P=/repo/target/debug/pibake
D=/tmp/tiny
mkdir -p $D/profiles $D/overlays/fake-kernel/root/boot/firmware $D/tiny
for o in gpio-shutdown static-net dtbo; do ln -s /repo/overlays/$o $D/overlays/$o; done
echo "not a kernel" > $D/overlays/fake-kernel/root/boot/firmware/vmlinuz-0.0.0-test
cp /fresh/profile.toml $D/profiles/tiny.toml
cp /fresh/cluster.toml $D/tiny/cluster.toml
C=$D/tiny/cluster.toml
step "pibake doctor"
$P doctor
step "pibake check"
$P check -c $C
step "pibake lock"
$P lock -c $C
step "pibake fetch"
$P fetch -c $C
step "pibake build"
$P build -c $C --agent "$AGENT" --out $D/images
step "pibake verify"
for img in $D/images/*.img; do $P verify "$img"; done
step "done"
"#;

/// Runs the whole check; the root is made under target/ and removed after.
pub fn fresh_root() -> anyhow::Result<()> {
    let started = Instant::now();
    let workspace = crate::workspace_root();
    let base = workspace.join("target/fresh-root");
    remove_root(&base)?;
    let root = base.join("root");
    std::fs::create_dir_all(&base).context("creating target/fresh-root")?;
    let mirror = crate::setup::host_mirror()?;
    let log = base.join("mmdebstrap.log");
    eprintln!(
        "fresh-root: bootstrapping a minbase Debian 12 root (log: {})",
        log.display()
    );
    let include = format!("--include={PREREQUISITES}");
    let root_arg = root.to_string_lossy().into_owned();
    crate::run_logged(
        "mmdebstrap",
        &[
            "--variant=minbase",
            &include,
            "--quiet",
            "bookworm",
            &root_arg,
            &mirror,
        ],
        &log,
    )?;
    let fresh = root.join("fresh");
    std::fs::create_dir_all(&fresh)?;
    std::fs::write(fresh.join("cluster.toml"), CLUSTER)?;
    std::fs::write(fresh.join("profile.toml"), PROFILE)?;
    std::fs::write(fresh.join("inside.sh"), INSIDE)?;
    // The network configuration this machine reaches its registries with.
    for file in [
        "/etc/resolv.conf",
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pip.conf",
    ] {
        if Path::new(file).is_file() {
            let target = root.join(file.trim_start_matches('/'));
            std::fs::copy(file, &target).with_context(|| format!("copying {file}"))?;
        }
    }
    let result = run_inside(&workspace, &root);
    eprintln!(
        "fresh-root: {} in {:.0?}",
        if result.is_ok() { "passed" } else { "FAILED" },
        started.elapsed()
    );
    remove_root(&base)?;
    result
}

/// `cargo xtask fresh-root` run beside other work, its output in a log
/// (`target/fresh-root.log`) that [`Background::wait`] prints.
pub struct Background {
    child: std::process::Child,
    log: PathBuf,
    started: Instant,
    ended: bool,
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        eprintln!(
            "fresh-root: stopping the background check (log: {})",
            self.log.display()
        );
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}

impl Background {
    pub fn start() -> anyhow::Result<Self> {
        let log = crate::workspace_root().join("target/fresh-root.log");
        std::fs::create_dir_all(crate::workspace_root().join("target"))?;
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let exe = std::env::current_exe().context("finding xtask's own binary")?;
        eprintln!(
            "fresh-root: started in the background (log: {})",
            log.display()
        );
        let child = std::process::Command::new(exe)
            .arg("fresh-root")
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(std::process::Stdio::null())
            // Its own process group: if the suite stops early, Drop ends the
            // check with everything it started.
            .process_group(0)
            .spawn()
            .context("cannot start `xtask fresh-root`")?;
        Ok(Self {
            child,
            log,
            started: Instant::now(),
            ended: false,
        })
    }

    /// Waits for the check and prints its log; its failure is an error.
    pub fn wait(mut self) -> anyhow::Result<()> {
        eprintln!("fresh-root: waiting for the background check");
        let status = self
            .child
            .wait()
            .context("waiting for `xtask fresh-root`")?;
        self.ended = true;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        eprintln!("----- {} -----\n{text}-----", self.log.display());
        eprintln!(
            "fresh-root: ended {:.0?} after it started ({status})",
            self.started.elapsed()
        );
        if !status.success() {
            bail!("the fresh-root check failed ({status}); its log is above");
        }
        Ok(())
    }
}

/// The bind mounts and the chroot, in a private mount namespace: nothing
/// is mounted on the host, and the mounts end with the namespace.
fn run_inside(workspace: &Path, root: &Path) -> anyhow::Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let r = root.display();
    let mut script = String::from("set -euo pipefail\n");
    script += &format!("mount -t proc proc {r}/proc\n");
    script += &format!("mount --rbind /sys {r}/sys\nmount --rbind /dev {r}/dev\n");
    script += &format!("mount -t tmpfs tmpfs {r}/tmp\n");
    for dir in [".rustup", ".cargo"] {
        let host = home.join(dir);
        if !host.is_dir() {
            bail!(
                "{} is missing: the fresh root borrows the host's Rust toolchain",
                host.display()
            );
        }
        script += &format!(
            "mkdir -p {r}/root/{dir}\nmount --bind {} {r}/root/{dir}\n",
            host.display()
        );
    }
    script += &format!(
        "mkdir -p {r}/origin\nmount --bind -o ro {} {r}/origin\n",
        workspace.display()
    );
    script += &format!("exec chroot {r} /bin/bash /fresh/inside.sh\n");
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .env("CI", "true")
        // The host's build directory (CI keeps one outside the clone) is
        // not the fresh machine's: its build starts from nothing in /repo.
        .env_remove("CARGO_TARGET_DIR")
        .stdin(std::process::Stdio::null())
        .status()
        .context("cannot run unshare")?;
    if !status.success() {
        bail!("the fresh-root check failed ({status}); its output is above");
    }
    Ok(())
}

/// Removes a previous root. The mounts lived in a namespace that is gone,
/// but a root is only removed when nothing is mounted under it, and never
/// across a file-system boundary.
fn remove_root(base: &Path) -> anyhow::Result<()> {
    if !base.exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = base.to_string_lossy();
    if let Some(line) = mounts.lines().find(|l| {
        l.split_whitespace()
            .nth(4)
            .is_some_and(|m| m.starts_with(&*prefix))
    }) {
        bail!("something is mounted under {prefix}, not removing it: {line}");
    }
    crate::run("rm", &["-rf", "--one-file-system", &prefix])
}
