//! A profile's `[[sources]]`: apt repositories packages may come from,
//! checked with [`Source::problems`] and against the other profiles'
//! definitions of the same name.

use super::{p, shown, Validator};
use crate::diag::{Diagnostic, FieldPath};
use crate::model::raw::RawSource;
use crate::model::HOST_SOURCE;
use pibake_inputs::sources::{Source, SourceError};
use std::path::{Path, PathBuf};

/// A finding about a source: field, message, help.
type Finding = (FieldPath, String, String);

/// One `[[sources]]` entry being checked: where it is and how it is written.
struct Entry<'a> {
    path: &'a Path,
    index: usize,
    raw: &'a RawSource,
}

impl Entry<'_> {
    /// The path of one of the entry's fields.
    fn field(&self, key: &str) -> FieldPath {
        p(&["sources", &self.index.to_string(), key])
    }

    /// The whole entry.
    fn whole(&self) -> FieldPath {
        p(&["sources", &self.index.to_string()])
    }

    /// The keyring, absolute (relative to the profile's directory).
    fn keyring(&self) -> Option<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        self.raw.keyring.as_ref().map(|k| {
            let joined = dir.join(k);
            std::path::absolute(&joined).unwrap_or(joined)
        })
    }
}

impl Validator<'_> {
    /// Checks `[[sources]]` entry `index` of the profile at `path` and returns it
    /// as an apt source (keyring made absolute, relative to the profile's directory).
    pub(super) fn source(&mut self, path: &Path, index: usize, raw: &RawSource) -> Source {
        let entry = Entry { path, index, raw };
        let mut findings: Vec<Finding> = Vec::new();
        let pin_priority = match raw.pin_priority.map(i32::try_from) {
            None => None,
            Some(Ok(pin)) => Some(pin),
            Some(Err(_)) => {
                findings.push(pin_finding(
                    entry.field("pin_priority"),
                    raw.pin_priority.unwrap_or(0),
                ));
                None
            }
        };
        let source = Source {
            name: raw.name.clone(),
            uri: raw.uri.clone(),
            suite: raw.suite.clone(),
            components: raw.components.clone(),
            keyring: entry.keyring(),
            trusted: raw.trusted,
            pin_priority,
            pin_packages: Vec::new(),
        };
        findings.extend(source.problems().into_iter().map(|e| problem(&entry, e)));
        findings.extend(name_and_keyring(&entry, source.keyring.as_deref()));
        findings.extend(self.redefinition(&entry, &source));
        for (field, message, help) in findings {
            self.diagnostics
                .push(Diagnostic::error(path, field, message).help(help));
        }
        source
    }

    /// Records the first definition of a source's name, or compares with it.
    fn redefinition(&mut self, entry: &Entry, source: &Source) -> Option<Finding> {
        let (path, index) = (entry.path, entry.index);
        let Some((other, file, at)) = self.source_defs.get(&source.name) else {
            self.source_defs.insert(
                source.name.clone(),
                (source.clone(), path.to_path_buf(), index),
            );
            return None;
        };
        if file == path && *at == index {
            None
        } else if file == path {
            Some((
                entry.field("name"),
                format!("source `{}` is defined twice in this profile", source.name),
                format!("keep one of sources[{at}] and sources[{index}]"),
            ))
        } else if other != source {
            let differs = differing_fields(other, source);
            Some((
                entry.field("name"),
                format!(
                    "source `{}` is defined differently in {} ({})",
                    source.name,
                    shown(file),
                    differs.join(", ")
                ),
                "define it once, in a profile both include, or make the two definitions identical"
                    .into(),
            ))
        } else {
            None
        }
    }
}

/// The finding for one of [`Source::problems`].
fn problem(entry: &Entry, problem: SourceError) -> Finding {
    let raw = entry.raw;
    let field = |k: &str| entry.field(k);
    match problem {
        SourceError::BadName(name) => (
            field("name"),
            format!("`{name}` is not a source name"),
            "use lower-case letters, digits, `-` and `.`, e.g. `raspberrypi`".into(),
        ),
        SourceError::BadField {
            what: "component",
            value,
            ..
        } => {
            let at = raw.components.iter().position(|c| *c == value).unwrap_or(0);
            (
                p(&["sources", &entry.index.to_string(), "components", &at.to_string()]),
                format!("component `{value}` is empty or has spaces, quotes or brackets"),
                "write one component per string, e.g. components = [\"main\"]".into(),
            )
        }
        SourceError::BadField { what, .. } => bad_field(entry, what),
        SourceError::BadScheme { uri, .. } => (
            field("uri"),
            format!("`{uri}` is not an http://, https:// or file:/ URI"),
            "write the archive's base URI, e.g. `https://archive.example.org/debian` or `file:/srv/repo`".into(),
        ),
        SourceError::Layout { suite, flat: true, .. } => (
            field("components"),
            format!("suite `{suite}` is a flat repository (it ends in `/`), which has no components"),
            "remove `components`, or name a suite like `trixie`".into(),
        ),
        SourceError::Layout { suite, flat: false, .. } => (
            field("suite"),
            format!("suite `{suite}` needs components"),
            "add components = [\"main\"], or write suite = \"./\" for a flat repository".into(),
        ),
        SourceError::Unverifiable { .. } => (
            entry.whole(),
            "neither `keyring` nor `trusted = true`: apt could not check this source's index".into(),
            "add keyring = \"<file>.gpg\" (the archive's signing key, relative to this profile); trusted = true is for a local repository you control".into(),
        ),
        SourceError::BadPin { priority, .. } => pin_finding(field("pin_priority"), priority.into()),
        other => (entry.whole(), other.to_string(), "fix this source".into()),
    }
}

/// The finding for a `uri`, `suite` or `keyring` apt could not take.
fn bad_field(entry: &Entry, what: &str) -> Finding {
    let raw = entry.raw;
    let value = match what {
        "uri" => raw.uri.as_str(),
        "suite" => raw.suite.as_str(),
        _ => raw.keyring.as_deref().unwrap_or(""),
    };
    (
        entry.field(what),
        format!("{what} `{value}` is empty or has spaces, quotes or brackets"),
        match what {
            "uri" => "write the archive's base URI, e.g. `https://archive.example.org/debian`",
            "suite" => "write one suite, e.g. `trixie`, or `./` for a flat repository",
            _ => "use a keyring path without spaces, quotes or brackets",
        }
        .into(),
    )
}

/// The reserved name, and a keyring that is not there.
fn name_and_keyring(entry: &Entry, resolved: Option<&Path>) -> Vec<Finding> {
    let mut findings = Vec::new();
    if entry.raw.name == HOST_SOURCE {
        findings.push((
            entry.field("name"),
            format!("the source name `{HOST_SOURCE}` is reserved for the host's Debian mirror"),
            "name the source after its archive, e.g. `raspberrypi`; the Debian mirror always comes from the host's apt sources".into(),
        ));
    }
    if let (Some(written), Some(resolved)) = (&entry.raw.keyring, resolved) {
        if !resolved.is_file() || written.is_empty() {
            findings.push((
                entry.field("keyring"),
                if written.is_empty() {
                    "the keyring path is empty".to_string()
                } else {
                    format!("keyring `{written}` does not exist")
                },
                format!(
                    "put the archive's signing key (.gpg or .asc) at {}; the path is relative to the profile's directory",
                    shown(resolved)
                ),
            ));
        }
    }
    findings
}

fn pin_finding(field: FieldPath, priority: i64) -> Finding {
    (
        field,
        format!("pin priority {priority} is not one apt accepts"),
        "use a non-zero number from -32768 to 32767; above Debian's 500 (e.g. 990) makes this source win".into(),
    )
}

/// The fields in which two definitions of a source differ.
fn differing_fields(a: &Source, b: &Source) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.uri != b.uri {
        out.push("uri");
    }
    if a.suite != b.suite {
        out.push("suite");
    }
    if a.components != b.components {
        out.push("components");
    }
    if a.keyring != b.keyring {
        out.push("keyring");
    }
    if a.trusted != b.trusted {
        out.push("trusted");
    }
    if a.pin_priority != b.pin_priority {
        out.push("pin_priority");
    }
    out
}
