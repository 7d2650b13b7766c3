//! `[swarm]`: the managers (the first initializes the swarm) and where
//! workers join.

use super::{p, Validator};
use crate::model::{JoinVia, Node, Swarm};
use std::collections::{BTreeMap, BTreeSet};

impl Validator<'_> {
    pub(super) fn swarm(&mut self, nodes: &BTreeMap<String, Node>) -> Option<Swarm> {
        let raw = &self.raw.swarm;
        self.managers(nodes);
        let join = self.join();
        Some(Swarm {
            managers: raw.managers.clone(),
            join,
            join_wait_seconds: raw.join_wait_seconds,
        })
    }

    fn managers(&mut self, nodes: &BTreeMap<String, Node>) {
        let managers = &self.raw.swarm.managers;
        if managers.is_empty() {
            self.error(
                p(&["swarm", "managers"]),
                "no Swarm manager",
                "list at least one manager node; the first one initializes the swarm",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, manager) in managers.iter().enumerate() {
            let field = p(&["swarm", "managers", &i.to_string()]);
            if !seen.insert(manager) {
                self.error(
                    field.clone(),
                    format!("`{manager}` is listed twice"),
                    "list each manager once",
                );
            }
            match nodes.get(manager) {
                None if !self.raw.nodes.contains_key(manager) => {
                    self.error(field, format!("node `{manager}` does not exist"), "name a node declared under [nodes]")
                }
                Some(node) if !node.platform.is_linux() => self.warning(
                    field,
                    format!("manager `{manager}` runs on {}, which cannot be a Swarm manager", node.platform.name()),
                    "run masters on Linux (native or a bridged VM); Docker Desktop cannot manage a swarm",
                ),
                _ => {}
            }
        }
        if managers.len() == 2 {
            self.warning(
                p(&["swarm", "managers"]),
                "two Swarm managers tolerate zero failures (Raft needs a majority of 2)",
                "use three managers (e.g. add the Pi 4 aux node) to survive one failure; two give a stable address, not HA",
            );
        }
    }

    fn join(&mut self) -> JoinVia {
        match self.raw.swarm.join.as_str() {
            "vip" => {
                if self.raw.vip.is_none() {
                    self.error(
                        p(&["swarm", "join"]),
                        "workers join via the VIP but there is no [vip]",
                        "add a [vip] table or use join = \"managers\"",
                    );
                }
                JoinVia::Vip
            }
            "managers" => JoinVia::Managers,
            other => {
                self.error(
                    p(&["swarm", "join"]),
                    format!("unknown join target `{other}`"),
                    "use `vip` or `managers`",
                );
                JoinVia::Vip
            }
        }
    }
}
