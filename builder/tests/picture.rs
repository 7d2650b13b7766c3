//! The cluster picture (`pibake plan --mermaid`): the lab's golden, the
//! README's copy of it, the command itself, and how the picture follows the
//! model where the lab does not go (no GPS, no VIP, a time server that does
//! not serve).

mod common;

use pibake::model::{self, Cluster, Platform};
use pibake::picture;
use std::path::Path;
use std::process::Command;

const GOLDEN: &str = common::LAB_PICTURE_GOLDEN;

fn lab() -> Cluster {
    common::enter_workspace();
    let checked = model::load(Path::new("examples/lab/cluster.toml")).expect("lab readable");
    assert!(!checked.has_errors(), "{}", checked.report());
    checked.cluster.expect("lab is valid")
}

#[test]
fn lab_picture_matches_golden() {
    common::golden(Path::new(GOLDEN), &picture::mermaid(&lab()));
}

/// The one ```mermaid block of a Markdown text, with its final newline.
fn mermaid_block(markdown: &str) -> Result<String, String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == "```mermaid" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    if current.is_some() {
        return Err("a ```mermaid block is not closed".into());
    }
    match blocks.len() {
        1 => Ok(blocks.remove(0)),
        n => Err(format!("{n} ```mermaid blocks, expected one")),
    }
}

#[test]
fn readme_shows_the_lab_picture() {
    let picture = picture::mermaid(&lab());
    let readme = std::fs::read_to_string(common::workspace_root().join("README.md"))
        .expect("README.md readable");
    let shown = mermaid_block(&readme).unwrap_or_else(|e| panic!("README.md: {e}"));
    assert!(
        shown == picture,
        "README.md's ```mermaid block is not the lab's picture: paste {GOLDEN} \
         (what `pibake plan -c examples/lab/cluster.toml --mermaid` prints) into it\n\
         --- README.md\n{shown}\n--- generated\n{picture}"
    );
}

#[test]
fn mermaid_block_is_found_once() {
    let text = "a\n```mermaid\nflowchart TB\n    x\n```\nb\n";
    assert_eq!(mermaid_block(text).as_deref(), Ok("flowchart TB\n    x\n"));
    assert!(mermaid_block("no picture\n").is_err());
    assert!(mermaid_block(&format!("{text}{text}")).is_err());
    assert!(mermaid_block("```mermaid\nflowchart TB\n").is_err());
}

#[test]
fn plan_mermaid_prints_the_picture() {
    common::enter_workspace();
    let output = Command::new(env!("CARGO_BIN_EXE_pibake"))
        .args(["plan", "-c", "examples/lab/cluster.toml", "--mermaid"])
        .output()
        .expect("run pibake");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        picture::mermaid(&lab())
    );
    // A picture is of the whole cluster: no JSON, no selection of images.
    for extra in [["--json"], ["--per-node"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_pibake"))
            .args(["plan", "-c", "examples/lab/cluster.toml", "--mermaid"])
            .args(extra)
            .output()
            .expect("run pibake");
        assert!(!output.status.success(), "--mermaid {extra:?} was accepted");
    }
}

/// Lines of the picture, trimmed.
fn lines(picture: &str) -> Vec<&str> {
    picture.lines().map(str::trim).collect()
}

#[test]
fn lab_picture_says_what_the_lab_is() {
    let picture = picture::mermaid(&lab());
    let lines = lines(&picture);
    assert_eq!(lines[0], "flowchart LR");
    for expected in [
        "subgraph r_master[\"role master\"]",
        "n_master1[\"master1<br/>pc-efi · 192.168.188.11<br/>Swarm manager 1 (init)\"]",
        "n_master2[\"master2<br/>pc-efi · 192.168.188.12<br/>Swarm manager 2\"]",
        "n_aux1[\"aux1<br/>rpi4 · 192.168.188.20\"]",
        "vip -.-|\"priority 150\"| n_master1",
        "vip -.-|\"priority 100\"| n_master2",
        "gps -->|\"NMEA + PPS\"| n_aux1",
        "upstream -->|\"NTP\"| n_aux1",
        "n_aux1 ==>|\"time\"| r_master",
        "n_aux1 ==>|\"time\"| r_worker",
        "class n_master1,n_master2 manager",
    ] {
        assert!(lines.contains(&expected), "no `{expected}` in\n{picture}");
    }
    // Every node once, in its role.
    for node in lab().nodes.keys() {
        let id = format!("n_{node}[");
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(&id)).count(),
            1,
            "{node} in\n{picture}"
        );
    }
    // The picture is the same every time.
    assert_eq!(picture, picture::mermaid(&lab()));
}

#[test]
fn without_gps_everyone_takes_time_from_upstream() {
    let mut cluster = lab();
    cluster.time.gps = None;
    cluster.time.upstream = vec!["ntp1.example".into(), "ntp2.example".into()];
    let picture = picture::mermaid(&cluster);
    let lines = lines(&picture);
    assert!(!picture.contains("gps"), "{picture}");
    assert!(
        lines.contains(&"upstream([\"upstream NTP<br/>ntp1.example<br/>ntp2.example\"])"),
        "{picture}"
    );
    // aux is a role of one node: the arrow goes to the node.
    for target in ["n_aux1", "r_master", "r_worker"] {
        let edge = format!("upstream ==>|\"time\"| {target}");
        assert!(lines.contains(&edge.as_str()), "no `{edge}` in\n{picture}");
    }
}

#[test]
fn a_gps_node_that_does_not_serve_leaves_the_others_to_upstream() {
    let mut cluster = lab();
    cluster.time.serve_subnet = false;
    let picture = picture::mermaid(&cluster);
    assert!(
        picture.contains("gps -->|\"NMEA + PPS\"| n_aux1"),
        "{picture}"
    );
    assert!(!picture.contains("n_aux1 ==>"), "{picture}");
    assert!(
        picture.contains("upstream ==>|\"time\"| r_worker"),
        "{picture}"
    );
    assert!(
        !picture.contains("upstream ==>|\"time\"| n_aux1"),
        "{picture}"
    );
}

#[test]
fn nodes_that_take_no_time_are_drawn_without_an_arrow() {
    let mut cluster = lab();
    cluster.vip = None;
    cluster
        .nodes
        .get_mut("worker3")
        .expect("lab has worker3")
        .platform = Platform::Macos;
    let picture = picture::mermaid(&cluster);
    assert!(!picture.contains("vip"), "{picture}");
    assert!(
        picture.contains("n_worker3[\"worker3<br/>macos · 192.168.188.23\"]"),
        "{picture}"
    );
    // The worker role is no longer all takers: one arrow per Linux worker.
    assert!(!picture.contains("==>|\"time\"| r_worker"), "{picture}");
    assert!(!picture.contains("| n_worker3\n"), "{picture}");
    for worker in ["worker1", "worker2", "worker4", "worker5", "worker6"] {
        assert!(
            picture.contains(&format!("n_aux1 ==>|\"time\"| n_{worker}\n")),
            "{worker} in\n{picture}"
        );
    }
}
