//! A picture of the cluster as a Mermaid flowchart (`pibake plan --mermaid`).
//!
//! Drawn from the typed [`Cluster`], never from the file's text: one subgraph
//! per role with its nodes (platform, address, Swarm manager marks), the VIP
//! linked to its holders by priority, and where time comes from, as the
//! rendered chrony.conf files have it: the GPS receiver and the upstream
//! servers feed the GPS node, which serves every other Linux node when
//! `time.serve_subnet` is on; otherwise (or without a GPS node) the other
//! nodes take time from the upstream servers.
//!
//! The output is deterministic: roles and nodes in name order, VIP holders by
//! priority (highest first), then name. Every id is made of `[A-Za-z0-9_]`
//! only and is prefixed by its kind, so no id is a Mermaid keyword (`end`) or
//! clashes with another; every label is quoted with its special characters
//! written as Mermaid entity codes.

use crate::model::{Cluster, JoinVia, Node};
use std::fmt::Write as _;

/// The cluster as a Mermaid `flowchart`, ending with a newline.
pub fn mermaid(cluster: &Cluster) -> String {
    let mut out = String::new();
    // Left to right: time flows from its sources to the nodes; nodes of a
    // role share a rank, so they stack in a column.
    line(&mut out, 0, "flowchart LR");
    line(
        &mut out,
        1,
        &format!(
            "%% cluster {} ({}), drawn by pibake plan --mermaid",
            comment(&cluster.name),
            comment(&cluster.domain)
        ),
    );

    // Roles and their nodes.
    for role in cluster.roles.values() {
        let nodes: Vec<&Node> = cluster.nodes_of_role(&role.name).collect();
        if nodes.is_empty() {
            continue;
        }
        let title = if role.profile.name == role.name {
            format!("role {}", role.name)
        } else {
            format!("role {} (profile {})", role.name, role.profile.name)
        };
        line(
            &mut out,
            1,
            &format!("subgraph {}[{}]", role_id(&role.name), label(&[&title])),
        );
        line(&mut out, 2, "direction LR");
        for node in nodes {
            let mut lines = vec![
                node.name.clone(),
                format!("{} · {}", node.platform.name(), node.address),
            ];
            match cluster.swarm.managers.iter().position(|m| *m == node.name) {
                Some(0) => lines.push("Swarm manager 1 (init)".into()),
                Some(i) => lines.push(format!("Swarm manager {}", i + 1)),
                None => {}
            }
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            line(
                &mut out,
                2,
                &format!("{}[{}]", node_id(&node.name), label(&lines)),
            );
        }
        line(&mut out, 1, "end");
    }

    // The VIP and its holders.
    if let Some(vip) = &cluster.vip {
        let mut lines = vec![
            format!("VIP {}", vip.address),
            format!(
                "VRID {} · {}",
                vip.virtual_router_id,
                if vip.preempt { "preempt" } else { "no preempt" }
            ),
        ];
        if cluster.swarm.join == JoinVia::Vip {
            lines.push("Swarm join address".into());
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        line(&mut out, 1, &format!("vip{{{{{}}}}}", label(&lines)));
        let mut holders: Vec<(&String, &u8)> = vip.holders.iter().collect();
        holders.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (name, priority) in holders {
            line(
                &mut out,
                1,
                &format!(
                    "vip -.-|{}| {}",
                    label(&[&format!("priority {priority}")]),
                    node_id(name)
                ),
            );
        }
    }

    // Time.
    let gps = cluster
        .time
        .gps
        .as_ref()
        .and_then(|g| cluster.nodes.get(&g.node).map(|n| (g, n)));
    let upstream = !cluster.time.upstream.is_empty();
    let serves = gps.is_some() && cluster.time.serve_subnet;
    if upstream {
        let mut lines = vec!["upstream NTP".to_string()];
        lines.extend(cluster.time.upstream.iter().cloned());
        if serves {
            lines.push("fallback of the other nodes".into());
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        line(&mut out, 1, &format!("upstream([{}])", label(&lines)));
    }
    if let Some((g, node)) = gps {
        let receiver = format!("on {} · PPS on GPIO {}", g.uart, g.pps_gpio);
        line(
            &mut out,
            1,
            &format!("gps[/{}/]", label(&["GPS receiver", &receiver])),
        );
        line(
            &mut out,
            1,
            &format!(
                "gps -->|{}| {}",
                label(&["NMEA + PPS"]),
                node_id(&node.name)
            ),
        );
        if upstream {
            line(
                &mut out,
                1,
                &format!("upstream -->|{}| {}", label(&["NTP"]), node_id(&node.name)),
            );
        }
    }
    let source = match gps {
        Some((_, node)) if serves => Some(node_id(&node.name)),
        _ if upstream => Some("upstream".to_string()),
        _ => None,
    };
    if let Some(source) = source {
        let gps_name = gps.map(|(_, n)| n.name.as_str());
        for target in time_targets(cluster, gps_name) {
            line(
                &mut out,
                1,
                &format!("{source} ==>|{}| {target}", label(&["time"])),
            );
        }
    }

    // Managers stand out.
    if !cluster.swarm.managers.is_empty() {
        line(&mut out, 1, "classDef manager stroke-width:3px");
        let mut managers: Vec<String> = cluster
            .swarm
            .managers
            .iter()
            .filter(|m| cluster.nodes.contains_key(*m))
            .map(|m| node_id(m))
            .collect();
        managers.sort();
        if !managers.is_empty() {
            line(
                &mut out,
                1,
                &format!("class {} manager", managers.join(",")),
            );
        }
    }
    out
}

/// Who takes time from the cluster's source: every Linux node but the GPS
/// node, as ids; a role of two or more nodes that all take it is one arrow to
/// its subgraph.
fn time_targets(cluster: &Cluster, gps: Option<&str>) -> Vec<String> {
    let takes = |n: &Node| n.platform.is_linux() && Some(n.name.as_str()) != gps;
    let mut targets = Vec::new();
    for role in cluster.roles.keys() {
        let nodes: Vec<&Node> = cluster.nodes_of_role(role).collect();
        if nodes.len() >= 2 && nodes.iter().all(|n| takes(n)) {
            targets.push(role_id(role));
        } else {
            targets.extend(
                nodes
                    .into_iter()
                    .filter(|n| takes(n))
                    .map(|n| node_id(&n.name)),
            );
        }
    }
    targets
}

fn line(out: &mut String, indent: usize, text: &str) {
    let _ = writeln!(out, "{:width$}{text}", "", width = indent * 4);
}

fn node_id(name: &str) -> String {
    format!("n_{}", safe_id(name))
}

fn role_id(name: &str) -> String {
    format!("r_{}", safe_id(name))
}

/// `name` as an id of `[A-Za-z0-9_]`: ASCII letters and digits stay, every
/// other byte (`_` included) becomes `_` and two hex digits, so distinct names
/// give distinct ids.
pub fn safe_id(name: &str) -> String {
    let mut id = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            id.push(char::from(byte));
        } else {
            let _ = write!(id, "_{byte:02x}");
        }
    }
    id
}

/// A quoted Mermaid label of one or more lines.
pub fn label(lines: &[&str]) -> String {
    let lines: Vec<String> = lines.iter().map(|l| escape(l)).collect();
    format!("\"{}\"", lines.join("<br/>"))
}

/// Text for inside a quoted label: characters Mermaid or HTML would read
/// (quote, entity start, angle brackets, ampersand, pipe, backtick) as
/// numeric entity codes, control characters as spaces.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '#' | '&' | '<' | '>' | '|' | '`' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text for a `%%` comment: on one line.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_and_distinct() {
        let names = ["a-b", "a_b", "a2db", "end", "A", "a", "é"];
        let ids: Vec<String> = names.iter().map(|n| safe_id(n)).collect();
        for id in &ids {
            assert!(
                id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{id}"
            );
        }
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        assert_eq!(safe_id("worker1"), "worker1");
        assert_eq!(safe_id("a-b"), "a_2db");
        assert_eq!(node_id("end"), "n_end");
    }

    #[test]
    fn labels_are_quoted_and_escaped() {
        assert_eq!(label(&["plain", "two"]), "\"plain<br/>two\"");
        assert_eq!(
            label(&["a \"q\" #1 <b> & |x| `y`\nz"]),
            "\"a #34;q#34; #35;1 #60;b#62; #38; #124;x#124; #96;y#96; z\""
        );
    }
}
