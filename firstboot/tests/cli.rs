//! The binary: exit codes and `status` output against a temporary root.

mod common;

use common::*;
use std::process::Command;

fn agent(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pibake-firstboot"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("agent runs")
}

#[test]
fn unknown_board_exits_non_zero_and_status_says_why() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    card(dir.path(), "10000000ffffffff", "02:00:00:00:00:99");
    let out = agent(dir.path(), &["identity"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: identity failed"), "{stderr}");

    let out = agent(dir.path(), &["status", "--json"]);
    assert!(out.status.success());
    let steps: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(steps[0]["step"], "identity");
    assert_eq!(steps[0]["state"], "failed");
    assert!(steps[0]["why"]
        .as_str()
        .unwrap_or("")
        .contains("no node matches"));
    assert_eq!(steps[1]["state"], "pending");
    assert_eq!(steps[2]["state"], "pending");

    let out = agent(dir.path(), &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .next()
            .unwrap_or("")
            .starts_with("identity  FAILED"),
        "{text}"
    );
    Ok(())
}

#[test]
fn swarm_without_identity_exits_non_zero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    card(dir.path(), "10000000ffffffff", "02:00:00:00:00:99");
    let out = agent(dir.path(), &["swarm"]);
    assert!(!out.status.success());
    Ok(())
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_pibake-firstboot"))
        .arg("--version")
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pibake-firstboot {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pibake-firstboot"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "identity",
        "clock",
        "swarm",
        "status",
        "--root",
        "Test only: with pibake.test.hold_after=",
    ] {
        assert!(help.contains(word), "{help}");
    }
}

/// The test-only hold: `pibake.test.hold_after=<step>` on the kernel command
/// line stops the agent after it journaled that step, with a marker on
/// stderr; any other step, or no parameter, runs to its end.
#[test]
fn holds_after_the_step_the_kernel_command_line_names() -> anyhow::Result<()> {
    use pibake_firstboot::journal::{hold_marker, Step, HOLD_KEY};
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir()?;
    card(dir.path(), "10000000ffffffff", "02:00:00:00:00:99");
    let cmdline = dir.path().join("proc/cmdline");
    std::fs::write(&cmdline, format!("root=/dev/mmcblk0p2 {HOLD_KEY}clock\n"))?;
    // Another step named: identity ends (it fails: this board is no node).
    let out = agent(dir.path(), &["identity"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("test hold"));

    let entry = dir.path().join("var/lib/pibake/identity.toml");
    assert!(entry.exists(), "identity was not journaled");
    std::fs::remove_file(&entry)?;
    std::fs::write(
        &cmdline,
        format!("root=/dev/mmcblk0p2 {HOLD_KEY}identity\n"),
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pibake-firstboot"))
        .arg("--root")
        .arg(dir.path())
        .arg("identity")
        .env_remove("JOURNAL_STREAM")
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let marker = hold_marker(Step::Identity);
    let start = Instant::now();
    let mut seen = false;
    while !seen && start.elapsed() < Duration::from_secs(30) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = line.contains(&marker);
        }
    }
    let journaled = entry.exists();
    std::thread::sleep(Duration::from_millis(500));
    let running = child.try_wait()?.is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "no hold marker {marker:?} within 30 s");
    assert!(journaled, "held before identity was journaled");
    assert!(running, "the agent did not hold after the marker");

    // A value that names no step is ignored, with a warning.
    std::fs::write(
        &cmdline,
        format!("root=/dev/mmcblk0p2 {HOLD_KEY}growroot\n"),
    )?;
    let out = agent(dir.path(), &["identity"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ignoring pibake.test.hold_after=growroot"),
        "{stderr}"
    );
    Ok(())
}
