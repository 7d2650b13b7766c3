//! Every program the workspace's host code spawns has a row in the tools
//! table, so `cargo xtask setup` installs it and `pibake doctor` names it.
//!
//! The scan reads the sources for the ways this workspace starts programs
//! (`Command::new("x")`, the helpers `run("x", …)`, `tool("x")`,
//! `.command("x")`, `need("x", …)`, the QEMU harness's `Tool` constants).
//! A `Command::new` whose program is not a literal must be one of the
//! reviewed sites below, each fed from a literal the scan sees or from a
//! path that is not a host program. The agent's own sources (firstboot/src)
//! run on the board, from the image's packages, and are not scanned.

use pibake_host::tools::{self, PREREQUISITES};
use regex::Regex;
use std::path::{Path, PathBuf};

/// `Command::new(<expr>)` sites whose program is not a string literal, with why.
const REVIEWED: &[(&str, &str)] = &[
    ("xtask/src/main.rs", "program"), // run_env("x", …): the scan reads its callers
    ("inputs/src/resolve.rs", "tool"), // apt.run("apt-get", …): callers scanned
    ("flash/tests/common/mod.rs", "cmd"), // run("sfdisk", …, "fdisk"): callers scanned
    ("tests/qemu/src/tool.rs", "self.name"), // the Tool constants: scanned
    ("inputs/tests/local_repo.rs", "exe"), // the test binary itself
    ("cache/tests/registry.rs", "std::env::current_exe()?"), // the test binary (the killed pull)
    ("xtask/src/fresh.rs", "exe"),    // xtask itself (fresh-root in the background)
    ("builder/tests/installed.rs", "&bin"), // the installed pibake under test
    ("builder/tests/render.rs", "tool(\"keepalived\")"),
    ("builder/tests/render.rs", "tool(\"chronyd\")"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the workspace")
        .to_path_buf()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// (file, program or expression) pairs.
type Sites = Vec<(String, String)>;

/// Every (file, program) the scan finds, and the non-literal sites.
fn scan() -> (Sites, Sites) {
    let root = workspace();
    let mut files = Vec::new();
    for dir in [
        "builder",
        "cache",
        "firstboot",
        "host",
        "image",
        "inputs",
        "flash",
        "tests",
        "xtask",
    ] {
        sources(&root.join(dir), &mut files);
    }
    files.sort();
    let literal = Regex::new(
        r#"(?:Command::new|\btool|\brun|\brun_env|\brun_logged|\.command|\bneed)\(\s*"([A-Za-z0-9._+-]+)""#,
    )
    .expect("regex");
    let tool_const = Regex::new(r#"name:\s*"([A-Za-z0-9._+-]+)""#).expect("regex");
    let other = Regex::new(r#"Command::new\(\s*([^")\s][^\n]*?)\)(?:\s|\.|;|$)"#).expect("regex");
    let mut found = Vec::new();
    let mut indirect = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        if rel.starts_with("firstboot/src/") || rel == "host/tests/spawned.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for cap in literal.captures_iter(&text) {
            found.push((rel.clone(), cap[1].to_owned()));
        }
        if rel == "tests/qemu/src/tool.rs" {
            for cap in tool_const.captures_iter(&text) {
                found.push((rel.clone(), cap[1].to_owned()));
            }
        }
        for cap in other.captures_iter(&text) {
            let expr = cap[1].trim().to_owned();
            if expr.starts_with("env!(\"CARGO") || expr.starts_with("std::env::var_os(\"CARGO\"") {
                continue; // cargo itself, or a binary of the crate under test
            }
            indirect.push((rel.clone(), expr));
        }
    }
    (found, indirect)
}

#[test]
fn every_spawned_program_is_in_the_table() {
    let (found, indirect) = scan();
    assert!(
        found.iter().any(|(_, p)| p == "mmdebstrap") && found.len() > 40,
        "the scan finds the workspace's spawns ({} found): is it reading the sources?",
        found.len()
    );
    let missing: Vec<String> = found
        .iter()
        .filter(|(_, p)| tools::providing(p).is_none() && !PREREQUISITES.contains(&p.as_str()))
        .map(|(f, p)| format!("{f}: {p}"))
        .collect();
    assert!(
        missing.is_empty(),
        "programs spawned but not in host/src/tools.rs TABLE (add a row with the Debian package):\n{}",
        missing.join("\n")
    );
    let unreviewed: Vec<String> = indirect
        .iter()
        .filter(|(f, e)| !REVIEWED.iter().any(|(rf, re)| rf == f && re == e))
        .map(|(f, e)| format!("{f}: Command::new({e})"))
        .collect();
    assert!(
        unreviewed.is_empty(),
        "Command::new with a program the scan cannot read: spawn a literal, or review the site in REVIEWED:\n{}",
        unreviewed.join("\n")
    );
}

#[test]
fn the_qemu_harness_names_the_tables_packages() {
    let text = std::fs::read_to_string(workspace().join("tests/qemu/src/tool.rs"))
        .expect("the harness's tool list");
    let pair = Regex::new(r#"name:\s*"([^"]+)",\s*package:\s*"([^"]+)""#).expect("regex");
    let mut seen = 0;
    for cap in pair.captures_iter(&text) {
        seen += 1;
        let row =
            tools::providing(&cap[1]).unwrap_or_else(|| panic!("{} not in the table", &cap[1]));
        assert_eq!(
            row.package, &cap[2],
            "{} comes from {}",
            &cap[1], row.package
        );
    }
    assert!(seen > 5, "read {seen} tools from the harness");
}
