//! `[swarm]`: the managers (the first initializes the swarm), where
//! workers join, and the compose stacks deployed on it (its preloaded
//! images are `images`').

use super::{p, Validator};
use crate::model::{JoinVia, Node, Role, Stack, Swarm};
use pibake_firstboot::hostname::{NodeName, Problem};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

impl Validator<'_> {
    pub(super) fn swarm(
        &mut self,
        nodes: &BTreeMap<String, Node>,
        roles: &BTreeMap<String, Role>,
    ) -> Option<Swarm> {
        let raw = &self.raw.swarm;
        self.managers(nodes);
        let join = self.join();
        let stacks = self.stacks();
        let images = self.images(nodes, roles);
        Some(Swarm {
            managers: raw.managers.clone(),
            join,
            join_wait_seconds: raw.join_wait_seconds,
            stacks,
            images,
        })
    }

    /// Whether `name` of `[swarm.<table>.<name>]` is a lower-case label;
    /// else an error whose help says what the name is used for (`uses`).
    pub(super) fn swarm_label(&mut self, table: &str, name: &str, uses: &str) -> bool {
        let Err(e) = name.parse::<NodeName>() else {
            return true;
        };
        let problem = match e.problem {
            Problem::UpperCase => "has upper-case letters".to_owned(),
            other => other.to_string(),
        };
        let what = table.trim_end_matches('s');
        self.error(
            p(&["swarm", table, name]),
            format!("{what} name `{name}` {problem}"),
            format!(
                "rename the {what} `{}`: {uses}: {}",
                e.suggestion(),
                pibake_firstboot::hostname::RULE
            ),
        );
        false
    }

    /// The directory paths of the cluster file are relative to.
    pub(super) fn base_dir(&self) -> PathBuf {
        self.file.parent().unwrap_or(Path::new("")).to_path_buf()
    }

    /// The help of a file that is not where a path of the cluster file says.
    pub(super) fn relative_path_help(&self) -> String {
        let base = self.base_dir();
        format!(
            "the path is relative to the cluster file's directory ({}); put the file there or fix the path",
            if base.as_os_str().is_empty() {
                ".".to_owned()
            } else {
                super::shown(&base)
            }
        )
    }

    /// `[swarm.stacks.<name>]`: each name a lower-case label (it names the
    /// stack on the Swarm and its file in the image), each compose file
    /// readable, YAML, with a top-level `services` mapping.
    fn stacks(&mut self) -> BTreeMap<String, Stack> {
        let base = self.base_dir();
        let mut stacks = BTreeMap::new();
        for (name, raw) in &self.raw.swarm.stacks {
            if !self.swarm_label(
                "stacks",
                name,
                "it names the stack on the Swarm (its services are `<stack>_<service>`) and its file in the image, /etc/pibake/stacks/<name>.yml",
            ) {
                continue;
            }
            let field = p(&["swarm", "stacks", name, "compose"]);
            let shown = &raw.compose;
            if shown.trim().is_empty() {
                self.error(
                    field,
                    "no compose file",
                    "name the stack's compose file, relative to the cluster file: compose = \"stacks/web.yml\"",
                );
                continue;
            }
            let path = base.join(shown);
            let content = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let help = self.relative_path_help();
                    self.error(
                        field,
                        format!("cannot read the compose file `{shown}`: {}", io_reason(&e)),
                        help,
                    );
                    continue;
                }
            };
            let Ok(content) = String::from_utf8(content) else {
                self.error(
                    field,
                    format!("the compose file `{shown}` is not UTF-8 text"),
                    "save the compose file as UTF-8",
                );
                continue;
            };
            let images = match compose_images(&content) {
                Ok(images) => images,
                Err(problem) => {
                    let (message, help) = match problem {
                    ComposeProblem::Yaml(e) => (
                        format!("the compose file `{shown}` is not valid YAML: {e}"),
                        "fix the YAML at the place named (docker stack deploy reads it as a compose file)",
                    ),
                    ComposeProblem::NoServices => (
                        format!("the compose file `{shown}` has no top-level `services`"),
                        "a compose file lists its services under a top-level `services:` mapping",
                    ),
                    ComposeProblem::ServicesNotMapping => (
                        format!("`services` of the compose file `{shown}` is not a mapping"),
                        "write `services:` as a mapping of service names to their settings",
                    ),
                };
                    self.error(field, message, help);
                    continue;
                }
            };
            stacks.insert(
                name.clone(),
                Stack {
                    name: name.clone(),
                    compose: path,
                    content,
                    images,
                },
            );
        }
        stacks
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

/// What is wrong with a compose file's text.
#[derive(Debug)]
enum ComposeProblem {
    Yaml(yaml_serde::Error),
    NoServices,
    ServicesNotMapping,
}

/// The images a compose file's services name (`services.<name>.image`),
/// when `text` is YAML (one document) with a top-level `services` mapping.
fn compose_images(text: &str) -> Result<BTreeSet<String>, ComposeProblem> {
    let value: yaml_serde::Value = yaml_serde::from_str(text).map_err(ComposeProblem::Yaml)?;
    let services = match value.get("services") {
        None => return Err(ComposeProblem::NoServices),
        Some(yaml_serde::Value::Mapping(services)) => services,
        Some(_) => return Err(ComposeProblem::ServicesNotMapping),
    };
    Ok(services
        .values()
        .filter_map(|service| service.get("image")?.as_str())
        .map(str::to_owned)
        .collect())
}

/// An I/O error's reason without the OS error number (stable in reports).
pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_files_need_a_services_mapping() {
        assert_eq!(
            compose_images("services:\n  web:\n    image: nginx\n  db:\n    build: .\n").ok(),
            Some(BTreeSet::from(["nginx".to_owned()]))
        );
        assert_eq!(compose_images("services: {}\n").ok(), Some(BTreeSet::new()));
        assert!(matches!(
            compose_images("version: \"3.8\"\n"),
            Err(ComposeProblem::NoServices)
        ));
        assert!(matches!(
            compose_images("- services\n"),
            Err(ComposeProblem::NoServices)
        ));
        assert!(matches!(
            compose_images(""),
            Err(ComposeProblem::NoServices)
        ));
        assert!(matches!(
            compose_images("services:\n  - web\n"),
            Err(ComposeProblem::ServicesNotMapping)
        ));
        assert!(matches!(
            compose_images("services:\n  web: [\n"),
            Err(ComposeProblem::Yaml(_))
        ));
        assert!(matches!(
            compose_images("services: {}\n---\nservices: {}\n"),
            Err(ComposeProblem::Yaml(_))
        ));
    }
}
