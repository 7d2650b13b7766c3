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
    for word in ["identity", "clock", "swarm", "status", "--root"] {
        assert!(help.contains(word), "{help}");
    }
}
