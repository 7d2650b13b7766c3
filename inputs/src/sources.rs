//! Apt sources: the host's configuration (to find the default Debian mirror) and the
//! [`Source`] type that a lock is resolved against.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::control;

/// The name of the host's Debian mirror among the sources (and in locks
/// that predate recording sources).
pub const HOST_SOURCE: &str = "debian";

/// One apt repository that packages may come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Short label recorded in the lock as the winning source (`debian`, `raspberrypi`):
    /// the lock names sources, never mirrors.
    pub name: String,
    /// Base URI (`http://…/debian`, `file:/srv/repo`).
    pub uri: String,
    /// Suite (`trixie`); for a flat repository the directory under `uri` (`./`).
    pub suite: String,
    /// Components (`main`); empty for a flat repository.
    #[serde(default)]
    pub components: Vec<String>,
    /// Keyring that signs the repository's Release file (apt `signed-by`).
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// Accept the repository unsigned (apt `trusted=yes`); for local repositories.
    #[serde(default)]
    pub trusted: bool,
    /// Apt pin priority for this source's packages (default: apt's 500).
    #[serde(default)]
    pub pin_priority: Option<i32>,
    /// The packages the pin applies to; empty: all of the source's packages. A suite of
    /// the host's mirror that only the kernel comes from pins just the kernel's packages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin_packages: Vec<String>,
}

/// A source that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source name {0:?}: use lowercase letters, digits, '-' and '.'")]
    BadName(String),
    #[error("source {name}: {what} {value:?} must be non-empty and contain no spaces, quotes or brackets")]
    BadField {
        name: String,
        what: &'static str,
        value: String,
    },
    #[error("source {name}: URI {uri:?} must start with http://, https:// or file:/")]
    BadScheme { name: String, uri: String },
    #[error("source {name}: neither a keyring nor trusted = true; apt could not check its index")]
    Unverifiable { name: String },
    #[error("source {name}: suite {suite:?} {}", if *flat { "ends in '/' (a flat repository), which takes no components" } else { "needs at least one component" })]
    Layout {
        name: String,
        suite: String,
        flat: bool,
    },
    #[error(
        "source {name}: pin priority {priority} is not one apt accepts (non-zero, -32768 to 32767)"
    )]
    BadPin { name: String, priority: i32 },
    #[error("source {0:?} is configured twice")]
    Duplicate(String),
    #[error("reading apt sources {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not an apt source line: {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("no `deb` source in the host's apt configuration under {0}")]
    NoHostMirror(PathBuf),
}

fn plain(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || "\"'[]".contains(c))
}

impl Source {
    /// A Debian source from the given mirror: components `main` and `non-free-firmware`
    /// (raspi-firmware lives there), signed by `keyring`.
    pub fn debian(uri: &str, suite: &str, keyring: Option<PathBuf>) -> Self {
        Self {
            name: HOST_SOURCE.into(),
            uri: uri.trim_end_matches('/').to_owned(),
            suite: suite.to_owned(),
            components: vec!["main".into(), "non-free-firmware".into()],
            keyring,
            trusted: false,
            pin_priority: None,
            pin_packages: Vec::new(),
        }
    }

    /// Checks the fields apt will see; the first problem found (see [`Source::problems`]).
    pub fn validate(&self) -> Result<(), SourceError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem of the fields apt will see, in field order (name, uri, suite, components,
    /// keyring, verification, pin priority), so a caller can report them all.
    pub fn problems(&self) -> Vec<SourceError> {
        let mut out = Vec::new();
        let n = &self.name;
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            out.push(SourceError::BadName(n.clone()));
        }
        let bad = |what, value: &str| SourceError::BadField {
            name: n.clone(),
            what,
            value: value.to_owned(),
        };
        if !plain(&self.uri) {
            out.push(bad("uri", &self.uri));
        } else if !["http://", "https://", "file:/"]
            .iter()
            .any(|p| self.uri.starts_with(p))
        {
            out.push(SourceError::BadScheme {
                name: n.clone(),
                uri: self.uri.clone(),
            });
        }
        let suite_ok = plain(&self.suite);
        if !suite_ok {
            out.push(bad("suite", &self.suite));
        }
        let mut components_ok = true;
        for c in &self.components {
            if !plain(c) {
                components_ok = false;
                out.push(bad("component", c));
            }
        }
        // apt: a suite ending in `/` is a flat repository and takes no components; any other
        // suite needs at least one.
        if suite_ok && components_ok && self.suite.ends_with('/') != self.components.is_empty() {
            out.push(SourceError::Layout {
                name: n.clone(),
                suite: self.suite.clone(),
                flat: self.suite.ends_with('/'),
            });
        }
        if let Some(k) = &self.keyring {
            let k = k.to_string_lossy();
            if !plain(&k) {
                out.push(bad("keyring", &k));
            }
        }
        if self.keyring.is_none() && !self.trusted {
            out.push(SourceError::Unverifiable { name: n.clone() });
        }
        for package in &self.pin_packages {
            if !plain(package) {
                out.push(bad("pin package", package));
            }
        }
        if let Some(p) = self.pin_priority {
            if p == 0 || i16::try_from(p).is_err() {
                out.push(SourceError::BadPin {
                    name: n.clone(),
                    priority: p,
                });
            }
        }
        out
    }

    /// The base URI without a trailing slash.
    pub fn base(&self) -> &str {
        self.uri.trim_end_matches('/')
    }

    /// The one-line `sources.list` entry apt reads.
    pub fn sources_list_line(&self) -> String {
        let mut opts = Vec::new();
        if let Some(k) = &self.keyring {
            opts.push(format!("signed-by={}", k.display()));
        }
        if self.trusted {
            opts.push("trusted=yes".to_owned());
        }
        let opts = if opts.is_empty() {
            String::new()
        } else {
            format!("[{}] ", opts.join(" "))
        };
        let mut line = format!("deb {opts}{}/ {}", self.base(), self.suite);
        for c in &self.components {
            line.push(' ');
            line.push_str(c);
        }
        line
    }

    /// The URL of `path` (relative to the base URI, as recorded in a lock).
    pub fn url_of(&self, path: &str) -> String {
        format!("{}/{}", self.base(), percent_encode_path(path))
    }
}

/// Checks every source and that names are unique.
pub fn validate_all(sources: &[Source]) -> Result<(), SourceError> {
    let mut seen = std::collections::BTreeSet::new();
    for s in sources {
        s.validate()?;
        if !seen.insert(s.name.as_str()) {
            return Err(SourceError::Duplicate(s.name.clone()));
        }
    }
    Ok(())
}

/// Escapes what is not safe in a URL path ('+' and ':' appear in Debian file names).
pub(crate) fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes `%XX` escapes (as apt prints URIs).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `deb` entry of the host's apt configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Option<PathBuf>,
    /// Where it was read, for messages.
    pub origin: PathBuf,
}

/// Reads the `deb` entries of the apt configuration under `etc_apt` (normally `/etc/apt`):
/// `sources.list` first, then `sources.list.d/*.list` and `*.sources` in name order, as apt does.
/// Disabled entries (`Enabled: no`) are left out.
pub fn host_entries(etc_apt: &Path) -> Result<Vec<HostEntry>, SourceError> {
    let mut files = Vec::new();
    let main = etc_apt.join("sources.list");
    if main.exists() {
        files.push(main);
    }
    let parts = etc_apt.join("sources.list.d");
    if parts.is_dir() {
        let rd = fs::read_dir(&parts).map_err(|source| SourceError::Read {
            path: parts.clone(),
            source,
        })?;
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("list" | "sources")
                )
            })
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).map_err(|source| SourceError::Read {
            path: f.clone(),
            source,
        })?;
        if f.extension().and_then(|e| e.to_str()) == Some("sources") {
            out.extend(parse_deb822(&text, &f)?);
        } else {
            out.extend(parse_one_line(&text, &f)?);
        }
    }
    Ok(out)
}

fn words(v: Option<&str>) -> Vec<String> {
    v.map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn parse_deb822(text: &str, path: &Path) -> Result<Vec<HostEntry>, SourceError> {
    let paras = control::parse(text).map_err(|(line, text)| SourceError::Syntax {
        path: path.to_owned(),
        line,
        text,
    })?;
    let mut out = Vec::new();
    for p in paras {
        if !words(p.get("Types")).iter().any(|t| t == "deb") {
            continue;
        }
        if p.get("Enabled")
            .is_some_and(|e| e.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        // Signed-By may also hold an inline key block; only a path is useful here.
        let signed_by = p
            .get("Signed-By")
            .map(str::trim)
            .filter(|s| s.starts_with('/') && !s.contains('\n'));
        for uri in words(p.get("URIs")) {
            out.push(HostEntry {
                uri,
                suites: words(p.get("Suites")),
                components: words(p.get("Components")),
                signed_by: signed_by.map(PathBuf::from),
                origin: path.to_owned(),
            });
        }
    }
    Ok(out)
}

fn parse_one_line(text: &str, path: &Path) -> Result<Vec<HostEntry>, SourceError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let syntax = || SourceError::Syntax {
            path: path.to_owned(),
            line: i + 1,
            text: raw.to_owned(),
        };
        let (kind, rest) = line.split_once(char::is_whitespace).ok_or_else(syntax)?;
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(r) = rest.strip_prefix('[') {
            let (opts, after) = r.split_once(']').ok_or_else(syntax)?;
            for o in opts.split_whitespace() {
                if let Some(v) = o.strip_prefix("signed-by=") {
                    signed_by = Some(PathBuf::from(v));
                }
            }
            rest = after.trim_start();
        }
        if kind != "deb" {
            continue;
        }
        let mut it = rest.split_whitespace();
        let uri = it.next().ok_or_else(syntax)?.to_owned();
        let suite = it.next().ok_or_else(syntax)?.to_owned();
        out.push(HostEntry {
            uri,
            suites: vec![suite],
            components: it.map(str::to_owned).collect(),
            signed_by,
            origin: path.to_owned(),
        });
    }
    Ok(out)
}

/// The host's default Debian mirror: the first `deb` entry of its apt configuration under
/// `etc_apt`, as a [`Source`] named `debian` for `suite`. Without a `Signed-By`, Debian's archive
/// keyring is used.
pub fn host_debian_source(etc_apt: &Path, suite: &str) -> Result<Source, SourceError> {
    let entry = host_entries(etc_apt)?
        .into_iter()
        .next()
        .ok_or_else(|| SourceError::NoHostMirror(etc_apt.to_owned()))?;
    let keyring = entry.signed_by.or_else(|| {
        Some(PathBuf::from(
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ))
    });
    Ok(Source::debian(&entry.uri, suite, keyring))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_one_line_in_apt_order() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        fs::create_dir(d.path().join("sources.list.d"))?;
        fs::write(
            d.path().join("sources.list"),
            "# comment\ndeb-src http://src.invalid/x bookworm main\ndeb [arch=arm64 signed-by=/k.gpg] http://one.invalid/debian bookworm main contrib\n",
        )?;
        fs::write(
            d.path().join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://two.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/k.gpg\n\nTypes: deb\nEnabled: no\nURIs: http://off.invalid/\nSuites: x\n",
        )?;
        fs::write(
            d.path().join("sources.list.d/a.list.disabled"),
            "deb http://never.invalid/ x main\n",
        )?;
        let e = host_entries(d.path())?;
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].uri, "http://one.invalid/debian");
        assert_eq!(e[0].signed_by, Some(PathBuf::from("/k.gpg")));
        assert_eq!(e[0].components, vec!["main", "contrib"]);
        assert_eq!(e[1].uri, "http://two.invalid/debian");
        assert_eq!(e[1].suites, vec!["bookworm", "bookworm-updates"]);
        let s = host_debian_source(d.path(), "trixie")?;
        assert_eq!(
            s.sources_list_line(),
            "deb [signed-by=/k.gpg] http://one.invalid/debian/ trixie main non-free-firmware"
        );
        Ok(())
    }

    #[test]
    fn no_mirror_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        assert!(matches!(
            host_debian_source(d.path(), "trixie"),
            Err(SourceError::NoHostMirror(_))
        ));
        Ok(())
    }

    #[test]
    fn validation() {
        let mut s = Source::debian("http://m.invalid/debian/", "trixie", None);
        assert!(matches!(
            s.validate(),
            Err(SourceError::Unverifiable { .. })
        ));
        s.trusted = true;
        assert!(s.validate().is_ok());
        s.uri = "ftp://x".into();
        assert!(matches!(s.validate(), Err(SourceError::BadScheme { .. })));
        s.uri = "http://x y".into();
        assert!(matches!(s.validate(), Err(SourceError::BadField { .. })));
        s.uri = "http://x".into();
        s.name = "Bad Name".into();
        assert!(matches!(s.validate(), Err(SourceError::BadName(_))));
        let a = Source::debian("http://a.invalid", "t", Some("/k".into()));
        assert!(matches!(
            validate_all(&[a.clone(), a]),
            Err(SourceError::Duplicate(_))
        ));
    }

    #[test]
    fn problems_lists_every_bad_field() {
        let s = Source {
            name: "Bad".into(),
            uri: "ftp://x".into(),
            suite: "trixie".into(),
            components: vec![],
            keyring: None,
            trusted: false,
            pin_priority: Some(0),
            pin_packages: Vec::new(),
        };
        let p = s.problems();
        assert!(matches!(
            p.as_slice(),
            [
                SourceError::BadName(_),
                SourceError::BadScheme { .. },
                SourceError::Layout { flat: false, .. },
                SourceError::Unverifiable { .. },
                SourceError::BadPin { priority: 0, .. },
            ]
        ));
        assert!(matches!(s.validate(), Err(SourceError::BadName(_))));
        let flat = Source {
            name: "local".into(),
            uri: "file:/srv/repo".into(),
            suite: "./".into(),
            components: vec!["main".into()],
            keyring: None,
            trusted: true,
            pin_priority: Some(32768),
            pin_packages: Vec::new(),
        };
        assert!(matches!(
            flat.problems().as_slice(),
            [
                SourceError::Layout { flat: true, .. },
                SourceError::BadPin {
                    priority: 32768,
                    ..
                }
            ]
        ));
        let ok = Source {
            components: vec![],
            pin_priority: Some(-32768),
            pin_packages: Vec::new(),
            ..flat
        };
        assert!(ok.problems().is_empty());
    }

    #[test]
    fn url_escaping() {
        let s = Source::debian("http://m.invalid/debian/", "trixie", None);
        assert_eq!(
            s.url_of("pool/main/g/gcc/libstdc++6_1:14_arm64.deb"),
            "http://m.invalid/debian/pool/main/g/gcc/libstdc%2B%2B6_1%3A14_arm64.deb"
        );
        assert_eq!(
            percent_decode("libc6_2.41-12%2bdeb13u5_arm64.deb"),
            "libc6_2.41-12+deb13u5_arm64.deb"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
