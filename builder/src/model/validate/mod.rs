//! Validation of the raw files into the typed model, collecting every
//! located finding instead of stopping at the first.
//!
//! This module holds the shared [`Validator`] (the files, the findings and
//! the helpers every table uses) and [`check`], which parses the cluster
//! file and runs the tables' checks in order. Each table has its own module:
//! `cluster` ([cluster]), `network`, `profiles` (roles and the profiles they
//! name), `sources` (a profile's `[[sources]]`), `nodes`, `vip`, `time`,
//! `swarm` (with `images`, its `[swarm.images]`), `button` and `image`. The keys each table may hold come from the
//! raw types themselves (`keys`). Checks of what pibake renders from the
//! model (config.txt lines) run on the built model, in the boot module
//! (`boot::lint`), so that the model does not depend on it.

mod button;
mod cluster;
mod image;
mod images;
mod kernel;
mod keys;
mod network;
mod nodes;
mod profiles;
mod sources;
mod swarm;
mod time;
mod vip;

use super::raw::{RawCluster, RawProfile};
use super::*;
use crate::diag::{Diagnostic, FieldPath, SourceFile};
use keys::Schema;
use pibake_inputs::sources::Source;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

pub(super) use cluster::valid_timezone;

/// Builds a field path from string slices.
fn p(parts: &[&str]) -> FieldPath {
    parts.iter().map(|s| (*s).to_string()).collect()
}

fn serde_path(path: &serde_ignored::Path<'_>, out: &mut FieldPath) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            serde_path(parent, out);
            out.push(index.to_string());
        }
        P::Map { parent, key } => {
            serde_path(parent, out);
            out.push(key.clone());
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            serde_path(parent, out)
        }
    }
}

/// Edit distance, for "did you mean" hints.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

/// Parses a TOML file into `T`, reporting a syntax or type error (located)
/// and every unknown key (located, with the keys of `T`'s table that would
/// be right).
fn parse_file<T: DeserializeOwned>(
    file: &SourceFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<T> {
    let deserializer = match toml::Deserializer::parse(&file.text) {
        Ok(d) => d,
        Err(e) => {
            diagnostics.push(
                Diagnostic::error(
                    &file.path,
                    vec![],
                    format!("not valid TOML: {}", e.message()),
                )
                .with_span(e.span())
                .help("fix the syntax at the marked place"),
            );
            return None;
        }
    };
    let mut unknown: Vec<FieldPath> = Vec::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(deserializer, |path| {
        let mut out = Vec::new();
        serde_path(&path, &mut out);
        unknown.push(out);
    });
    let schema = Schema::of::<T>();
    for path in &unknown {
        if let Some(diagnostic) = unknown_key(&file.path, path, &schema) {
            diagnostics.push(diagnostic);
        }
    }
    match parsed {
        Ok(value) => Some(value),
        Err(e) => {
            diagnostics.push(
                Diagnostic::error(&file.path, vec![], e.message().to_string())
                    .with_span(e.span())
                    .help("see examples/lab/cluster.toml for the expected form"),
            );
            None
        }
    }
}

/// The finding for an unknown key at `path`, with the keys allowed there.
fn unknown_key(file: &Path, path: &FieldPath, schema: &Schema) -> Option<Diagnostic> {
    let (key, parent) = path.split_last()?;
    let diagnostic = Diagnostic::error(file, path.clone(), format!("unknown key `{key}`"));
    Some(match schema.known_keys(parent) {
        Some(known) => {
            let list = known.join(", ");
            match closest(key, known.iter().copied()) {
                Some(best) => {
                    diagnostic.help(format!("did you mean `{best}`? keys allowed here: {list}"))
                }
                None => diagnostic.help(format!("keys allowed here: {list}")),
            }
        }
        None => diagnostic.help("remove it: this table takes no such key"),
    })
}

/// Validates a cluster file and the profiles it names.
pub(super) fn check(file: SourceFile, profiles_dir: &Path, overlays_dir: &Path) -> Checked {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    let raw: Option<RawCluster> = parse_file(&file, &mut diagnostics);
    let cluster = raw.and_then(|raw| {
        let mut v = Validator {
            file: &file.path,
            raw: &raw,
            diagnostics: &mut diagnostics,
            profile_files: &mut files,
            profiles_dir,
            overlays_dir,
            profile_cache: BTreeMap::new(),
            source_defs: BTreeMap::new(),
        };
        v.run()
    });
    files.insert(0, file);
    dedup(&mut diagnostics);
    let cluster = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        cluster
    };
    Checked {
        cluster,
        diagnostics,
        files,
    }
}

/// Profiles included by several roles report the same finding once.
fn dedup(diagnostics: &mut Vec<Diagnostic>) {
    let mut seen = Vec::new();
    diagnostics.retain(|d| {
        if seen.contains(d) {
            false
        } else {
            seen.push(d.clone());
            true
        }
    });
}

/// What validation reads and what it has found so far.
struct Validator<'a> {
    file: &'a Path,
    raw: &'a RawCluster,
    diagnostics: &'a mut Vec<Diagnostic>,
    profile_files: &'a mut Vec<SourceFile>,
    profiles_dir: &'a Path,
    overlays_dir: &'a Path,
    profile_cache: BTreeMap<String, Option<(PathBuf, RawProfile)>>,
    /// Every profile source seen so far by name: its definition, file and index.
    source_defs: BTreeMap<String, (Source, PathBuf, usize)>,
}

impl Validator<'_> {
    fn error(&mut self, field: FieldPath, message: impl Into<String>, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(self.file, field, message).help(help));
    }

    fn warning(&mut self, field: FieldPath, message: impl Into<String>, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::warning(self.file, field, message).help(help));
    }

    /// A host address, in `subnet` when one is given.
    fn address(
        &mut self,
        field: FieldPath,
        value: &str,
        subnet: Option<Ipv4Net>,
    ) -> Option<Ipv4Addr> {
        let Ok(address) = value.parse::<Ipv4Addr>() else {
            self.error(
                field,
                format!("`{value}` is not an IPv4 address"),
                "write four decimal numbers like 192.168.188.21",
            );
            return None;
        };
        if let Some(subnet) = subnet {
            if !subnet.contains_host(address) {
                self.error(
                    field,
                    format!("{address} is outside the subnet {subnet}"),
                    format!(
                        "use a host address in {subnet} (from {} to {}, excluding network and broadcast)",
                        subnet.first_host(),
                        Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
                    ),
                );
            }
        }
        Some(address)
    }

    /// Checks every table, in the order findings are reported, and builds
    /// the model from what is valid.
    fn run(&mut self) -> Option<Cluster> {
        let raw = self.raw;
        self.format();
        self.cluster_table();
        let kernel = self.kernel_table();
        let network = self.network();
        let subnet = network.as_ref().map(|n| n.subnet);
        let profiles = self.profiles();
        let roles = self.roles(&profiles);
        let nodes = self.nodes(subnet, &roles, network.as_ref());
        let vip = self.vip(subnet, &nodes, network.as_ref());
        let time = self.time(&nodes);
        let swarm = self.swarm(&nodes, &roles);
        let button = self.button();
        let image = self.image();

        Some(Cluster {
            file: self.file.to_path_buf(),
            name: raw.cluster.name.clone(),
            domain: raw.cluster.domain.clone(),
            timezone: raw.cluster.timezone.clone(),
            suite: raw.cluster.suite.clone(),
            kernel,
            admin: Admin {
                user: raw.cluster.admin.user.clone(),
                ssh_authorized_keys: raw.cluster.admin.ssh_authorized_keys.clone(),
            },
            network: network?,
            roles,
            nodes,
            vip,
            time: time?,
            swarm: swarm?,
            button,
            image: image?,
            overlays_dir: self.overlays_dir.to_path_buf(),
        })
    }

    fn format(&mut self) {
        if self.raw.format != FORMAT {
            self.error(
                p(&["format"]),
                format!("format {} is not known to this pibake", self.raw.format),
                format!("write `format = {FORMAT}`"),
            );
        }
    }
}

fn in_range(a: Ipv4Addr, start: Ipv4Addr, end: Ipv4Addr) -> bool {
    (u32::from(start)..=u32::from(end)).contains(&u32::from(a))
}

fn platform_help() -> String {
    let names: Vec<&str> = Platform::ALL.iter().map(|p| p.name()).collect();
    format!("platforms: {}", names.join(", "))
}

/// A directory as the user would write it: relative to the current directory
/// when it is below it.
fn shown(dir: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    /// Data flows one way: the boot module and the plan read the model,
    /// never the other way round (the checks of what boot renders run on the
    /// built model through `Checked::check_model`), so no file of `model/`
    /// names either.
    #[test]
    fn the_model_depends_on_neither_boot_nor_plan() {
        let mut pending = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model")];
        // Spelt in two so that this file does not name them.
        let needles = [["crate", "boot"].join("::"), ["crate", "plan"].join("::")];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("model sources") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                for needle in &needles {
                    assert!(
                        !text.contains(needle.as_str()),
                        "{} uses {needle}",
                        path.display()
                    );
                }
            }
        }
    }
}
