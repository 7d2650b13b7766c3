//! Resolution: the host's apt, run in a private directory (its own config, sources, lists,
//! empty dpkg status, cache) for the target architecture, computes a [`Closure`] (one architecture of a lock).
//! Nothing of the host's apt state is read or written; index signatures are checked by apt.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::control;
use crate::digest::Sha256;
use crate::lock::{Closure, LockedPackage};
use crate::release;
use crate::sources::{percent_decode, validate_all, Source, SourceError};

/// What to lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// Debian architecture (`arm64`).
    pub arch: String,
    /// Suite name recorded in the lock (`trixie`).
    pub suite: String,
    /// Sources in priority-neutral order; pinning comes from [`Source::pin_priority`].
    pub sources: Vec<Source>,
    /// Package names to install.
    pub packages: BTreeSet<String>,
    /// Also install Debian's Priority: required and Essential packages (a bootable base).
    pub include_required: bool,
}

/// Resolution that failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{what} {value:?} is not valid")]
    BadRequest { what: &'static str, value: String },
    #[error("apt work directory {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running `{command}` (is apt installed?)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Apt {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected output from `{command}`: {line:?}")]
    Output { command: String, line: String },
    #[error("sources {a} and {b} have the same Release fields ({selector}), so a pin priority cannot tell them apart")]
    AmbiguousPin {
        a: String,
        b: String,
        selector: String,
    },
    #[error("no Release file with a Date among the sources; cannot set SOURCE_DATE_EPOCH")]
    NoReleaseDate,
    #[error("apt chose {uri}, which belongs to no configured source")]
    UnknownOrigin { uri: String },
    #[error("no index record matches {name} {version} (sha256 {sha256}, {size} bytes)")]
    NoRecord {
        name: String,
        version: String,
        sha256: String,
        size: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResolveError + '_ {
    move |source| ResolveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Debian Policy 5.6.1's rule for package names (suite and architecture
/// names follow it too).
pub fn valid_package_name(n: &str) -> bool {
    n.len() >= 2
        && n.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// A private apt installation rooted at a work directory.
#[derive(Debug)]
pub struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    /// Lays out `workdir` (kept between runs so apt can reuse its lists) for `arch` and
    /// `sources`, with an empty dpkg status.
    pub fn new(workdir: &Path, arch: &str, sources: &[Source]) -> Result<Self, ResolveError> {
        validate_all(sources)?;
        if !valid_package_name(arch) {
            return Err(ResolveError::BadRequest {
                what: "architecture",
                value: arch.to_owned(),
            });
        }
        fs::create_dir_all(workdir).map_err(io(workdir))?;
        let dir = workdir.canonicalize().map_err(io(workdir))?;
        let s = dir.to_string_lossy();
        if s.contains('"') || s.contains('\n') {
            return Err(ResolveError::BadRequest {
                what: "work directory",
                value: s.into_owned(),
            });
        }
        for sub in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "etc/trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            fs::write(&p, text).map_err(io(&p))
        };
        write("state/status", "")?;
        write("etc/preferences", "")?;
        let root_user = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let d = dir.display();
        let mut conf = format!(
            "Dir \"{d}/\";\n\
             Dir::State \"{d}/state/\";\n\
             Dir::State::status \"{d}/state/status\";\n\
             Dir::Cache \"{d}/cache/\";\n\
             Dir::Etc \"{d}/etc/\";\n\
             Dir::Etc::SourceList \"{d}/etc/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/etc/sources.list.d\";\n\
             Dir::Etc::Parts \"{d}/etc/apt.conf.d\";\n\
             Dir::Etc::Preferences \"{d}/etc/preferences\";\n\
             Dir::Etc::PreferencesParts \"{d}/etc/preferences.d\";\n\
             Dir::Etc::Trusted \"{d}/etc/trusted.gpg\";\n\
             Dir::Etc::TrustedParts \"{d}/etc/trusted.gpg.d\";\n\
             Dir::Log \"{d}/log/\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             APT::Install-Recommends \"false\";\n\
             APT::Install-Suggests \"false\";\n\
             APT::Update::Error-Mode \"any\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::ForceHash \"SHA256\";\n\
             Debug::NoLocking \"true\";\n"
        );
        if root_user {
            // The _apt sandbox user may not be able to enter a private temp directory.
            conf.push_str("APT::Sandbox::User \"root\";\n");
        }
        write("apt.conf", &conf)?;
        let list: String = sources
            .iter()
            .map(|s| s.sources_list_line() + "\n")
            .collect();
        write("etc/sources.list", &list)?;
        Ok(Self { dir })
    }

    /// The work directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs an apt tool with the private configuration; returns stdout.
    pub fn run(&self, tool: &str, args: &[&str]) -> Result<String, ResolveError> {
        let command = format!("{tool} {}", args.join(" "));
        let out = Command::new(tool)
            .args(args)
            .env("APT_CONFIG", self.dir.join("apt.conf"))
            .env("LC_ALL", "C.UTF-8")
            .env_remove("LANGUAGE")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ResolveError::Spawn {
                command: command.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() || stderr.lines().any(|l| l.starts_with("E:")) {
            return Err(ResolveError::Apt {
                command,
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `apt-get update`: downloads the indices and checks their signatures.
    pub fn update(&self) -> Result<(), ResolveError> {
        self.run("apt-get", &["update", "-q"]).map(drop)
    }

    /// Newest `Date:` among the downloaded Release files.
    pub fn newest_release_date(&self) -> Result<i64, ResolveError> {
        let lists = self.dir.join("state/lists");
        let mut newest = None;
        for e in fs::read_dir(&lists).map_err(io(&lists))? {
            let e = e.map_err(io(&lists))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if !(n.ends_with("_InRelease") || n.ends_with("_Release")) {
                continue;
            }
            let text = fs::read_to_string(e.path()).map_err(io(&e.path()))?;
            let date = text
                .lines()
                .find_map(|l| l.strip_prefix("Date:"))
                .and_then(release::parse_date);
            newest = newest.max(date);
        }
        newest.ok_or(ResolveError::NoReleaseDate)
    }

    /// Writes apt preferences giving each source with a `pin_priority` that priority, selecting
    /// its packages by the fields of its Release file.
    pub fn write_pins(&self, sources: &[Source]) -> Result<(), ResolveError> {
        let cmd = "apt-get indextargets";
        let out = self.run(
            "apt-get",
            &[
                "indextargets",
                "--format",
                "$(SOURCESENTRY)\t$(ORIGIN)\t$(LABEL)\t$(SUITE)\t$(CODENAME)\t$(SITE)",
                "Identifier: Packages",
            ],
        )?;
        // sources.list line number (1-based) → release selector.
        let mut selectors: BTreeMap<usize, String> = BTreeMap::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let bad = || ResolveError::Output {
                command: cmd.into(),
                line: line.to_owned(),
            };
            let [entry, origin, label, suite, codename, site] = f[..] else {
                return Err(bad());
            };
            let n: usize = entry
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?;
            let mut parts = Vec::new();
            for (k, v) in [("o", origin), ("l", label), ("a", suite), ("n", codename)] {
                // indextargets prints an unset field as its own placeholder.
                if !v.is_empty() && !v.starts_with("$(") {
                    parts.push(format!("{k}={v}"));
                }
            }
            let sel = if parts.is_empty() {
                let host = site
                    .split("://")
                    .nth(1)
                    .unwrap_or(site)
                    .split(['/', ':'])
                    .next()
                    .unwrap_or("");
                format!("origin \"{host}\"")
            } else {
                format!("release {}", parts.join(","))
            };
            selectors.insert(n, sel);
        }
        let mut prefs = String::new();
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, s) in sources.iter().enumerate() {
            let Some(sel) = selectors.get(&(i + 1)) else {
                continue;
            };
            if let Some(prev) = seen.insert(sel.as_str(), s.name.as_str()) {
                let other = sources.iter().find(|o| o.name == prev);
                if s.pin_priority.is_some() || other.is_some_and(|o| o.pin_priority.is_some()) {
                    return Err(ResolveError::AmbiguousPin {
                        a: prev.to_owned(),
                        b: s.name.clone(),
                        selector: sel.clone(),
                    });
                }
            }
            if let Some(p) = s.pin_priority {
                let packages = if s.pin_packages.is_empty() {
                    "*".to_owned()
                } else {
                    s.pin_packages.join(" ")
                };
                prefs.push_str(&format!(
                    "Explanation: source {}\nPackage: {packages}\nPin: {sel}\nPin-Priority: {p}\n\n",
                    s.name
                ));
            }
        }
        let p = self.dir.join("etc/preferences");
        fs::write(&p, prefs).map_err(io(&p))
    }
}

impl PrivateApt {
    /// Which sources' indices list each package file (by sha256), as indices
    /// into the sources given to [`PrivateApt::new`]: two suites of one
    /// mirror share its pool, so the URI alone cannot tell where apt took a
    /// package from.
    pub fn indexed_by(&self) -> Result<BTreeMap<Sha256, BTreeSet<usize>>, ResolveError> {
        let cmd = "apt-get indextargets";
        let out = self.run(
            "apt-get",
            &[
                "indextargets",
                "--format",
                "$(FILENAME)\t$(SOURCESENTRY)",
                "Identifier: Packages",
            ],
        )?;
        let mut by_sha: BTreeMap<Sha256, BTreeSet<usize>> = BTreeMap::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let bad = || ResolveError::Output {
                command: cmd.into(),
                line: line.to_owned(),
            };
            let (file, entry) = line.split_once('\t').ok_or_else(bad)?;
            let n: usize = entry
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(bad)?;
            let path = Path::new(file);
            let text = match fs::read_to_string(path) {
                Ok(text) => text,
                // A component the mirror does not have for this suite.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(path)(e)),
            };
            for sha in text.lines().filter_map(|l| l.strip_prefix("SHA256: ")) {
                if let Ok(sha) = sha.trim().parse() {
                    by_sha.entry(sha).or_default().insert(n - 1);
                }
            }
        }
        Ok(by_sha)
    }
}

/// The source a planned download belongs to: the longest base that prefixes
/// its URI (so nested repositories are told apart) and, among sources of one
/// base (suites of one mirror), the first whose index lists the file.
fn origin_of<'a>(
    sources: &'a [Source],
    uri: &str,
    sha256: &Sha256,
    indexed_by: &BTreeMap<Sha256, BTreeSet<usize>>,
) -> Option<&'a Source> {
    let matching: Vec<(usize, &Source)> = sources
        .iter()
        .enumerate()
        .filter(|(_, s)| uri.starts_with(&format!("{}/", s.base())))
        .collect();
    let longest = matching.iter().map(|(_, s)| s.base().len()).max()?;
    let tied: Vec<(usize, &Source)> = matching
        .into_iter()
        .filter(|(_, s)| s.base().len() == longest)
        .collect();
    let listed = indexed_by.get(sha256);
    tied.iter()
        .find(|(i, _)| listed.is_some_and(|l| l.contains(i)))
        .or_else(|| tied.first())
        .map(|(_, s)| *s)
}

/// One download apt planned: `'URI' file size SHA256:hex`.
struct Planned {
    uri: String,
    size: u64,
    sha256: Sha256,
    name: String,
    version: String,
}

fn parse_print_uris(out: &str) -> Result<Vec<Planned>, ResolveError> {
    let mut v = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || ResolveError::Output {
            command: "apt-get install --print-uris".into(),
            line: line.to_owned(),
        };
        let mut it = line.split_whitespace();
        let uri = it
            .next()
            .and_then(|u| u.strip_prefix('\''))
            .and_then(|u| u.strip_suffix('\''))
            .ok_or_else(bad)?;
        let file = it.next().ok_or_else(bad)?;
        let size = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let sha256 = it
            .next()
            .and_then(|h| h.strip_prefix("SHA256:"))
            .and_then(|h| h.parse().ok())
            .ok_or_else(bad)?;
        let mut parts = file.splitn(3, '_');
        let name = parts.next().ok_or_else(bad)?.to_owned();
        let version = percent_decode(parts.next().ok_or_else(bad)?);
        v.push(Planned {
            uri: percent_decode(uri),
            size,
            sha256,
            name,
            version,
        });
    }
    Ok(v)
}

/// Drops `.` path segments (flat repositories give `./pkg.deb`).
fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Resolves `req` with apt in `workdir` (created if needed; reusing it saves downloads).
pub fn lock(req: &LockRequest, workdir: &Path) -> Result<Closure, ResolveError> {
    for p in &req.packages {
        if !valid_package_name(p) {
            return Err(ResolveError::BadRequest {
                what: "package name",
                value: p.clone(),
            });
        }
    }
    if !valid_package_name(&req.suite) {
        return Err(ResolveError::BadRequest {
            what: "suite",
            value: req.suite.clone(),
        });
    }
    let apt = PrivateApt::new(workdir, &req.arch, &req.sources)?;
    apt.update()?;
    apt.write_pins(&req.sources)?;
    let epoch = apt.newest_release_date()?;

    let mut args: Vec<&str> = vec!["install", "--print-uris", "-qq", "-y"];
    args.extend(req.packages.iter().map(String::as_str));
    if req.include_required {
        args.extend(["?priority(required)", "?essential"]);
    }
    let planned = parse_print_uris(&apt.run("apt-get", &args)?)?;
    let indexed_by = apt.indexed_by()?;

    // The index records of exactly these versions (all sources), to read Source and Filename.
    let mut records: BTreeMap<Sha256, control::Paragraph> = BTreeMap::new();
    if !planned.is_empty() {
        let specs: Vec<String> = planned
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
        let mut args = vec!["show"];
        args.extend(specs.iter().map(String::as_str));
        let out = apt.run("apt-cache", &args)?;
        let paras = control::parse(&out).map_err(|(_, line)| ResolveError::Output {
            command: "apt-cache show".into(),
            line,
        })?;
        for p in paras {
            if let Some(h) = p.get("SHA256").and_then(|h| h.parse().ok()) {
                records.insert(h, p);
            }
        }
    }

    let mut packages = Vec::new();
    for p in planned {
        let no_record = || ResolveError::NoRecord {
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.sha256.to_string(),
            size: p.size,
        };
        let rec = records.get(&p.sha256).ok_or_else(no_record)?;
        if rec.get("Size").and_then(|s| s.parse::<u64>().ok()) != Some(p.size) {
            return Err(no_record());
        }
        let origin = origin_of(&req.sources, &p.uri, &p.sha256, &indexed_by)
            .ok_or_else(|| ResolveError::UnknownOrigin { uri: p.uri.clone() })?;
        let filename = normalize(&p.uri[origin.base().len() + 1..]);
        let source = rec
            .get("Source")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or(&p.name)
            .to_owned();
        packages.push(LockedPackage {
            name: rec.get("Package").unwrap_or(&p.name).to_owned(),
            version: rec.get("Version").unwrap_or(&p.version).to_owned(),
            architecture: rec.get("Architecture").unwrap_or(&req.arch).to_owned(),
            filename,
            size: p.size,
            sha256: p.sha256,
            source,
            origin: origin.name.clone(),
        });
    }
    packages.sort();
    Ok(Closure {
        arch: req.arch.clone(),
        source_date_epoch: u64::try_from(epoch).unwrap_or(0),
        requested: req.packages.clone(),
        sources: req.sources.iter().map(|s| s.name.clone()).collect(),
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_uris_lines() -> Result<(), ResolveError> {
        let h = Sha256::of(b"x");
        let out = format!("'http://m.invalid/debian/pool/main/g/glibc/libc6_2.41-12%2bdeb13u5_arm64.deb' libc6_2.41-12+deb13u5_arm64.deb 2488872 SHA256:{h}\n\
                           'http://h.invalid/r/./a_1%3a2.0_all.deb' a_1%3a2.0_all.deb 5 SHA256:{h}\n");
        let v = parse_print_uris(&out)?;
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].uri,
            "http://m.invalid/debian/pool/main/g/glibc/libc6_2.41-12+deb13u5_arm64.deb"
        );
        assert_eq!(
            (v[0].name.as_str(), v[0].version.as_str(), v[0].size),
            ("libc6", "2.41-12+deb13u5", 2_488_872)
        );
        assert_eq!(v[1].version, "1:2.0");
        assert!(parse_print_uris("'x' y 1 MD5Sum:00").is_err());
        assert_eq!(normalize("./a.deb"), "a.deb");
        assert_eq!(normalize("pool/./main//x.deb"), "pool/main/x.deb");
        Ok(())
    }

    #[test]
    fn suites_of_one_mirror_are_told_apart_by_their_indices() {
        let mirror = |name: &str, suite: &str| Source {
            name: name.into(),
            suite: suite.into(),
            ..Source::debian("http://m.invalid/debian", "x", None)
        };
        let sources = [
            mirror("debian", "trixie"),
            mirror("debian-trixie-backports", "trixie-backports"),
            Source {
                name: "nested".into(),
                ..Source::debian("http://m.invalid/debian/extra", "x", None)
            },
        ];
        let (base, kernel) = (Sha256::of(b"adduser"), Sha256::of(b"linux"));
        let indexed_by: BTreeMap<Sha256, BTreeSet<usize>> =
            [(base, [0].into()), (kernel, [1].into())].into();
        let uri = "http://m.invalid/debian/pool/main/x.deb";
        let name = |sha| origin_of(&sources, uri, &sha, &indexed_by).map(|s| s.name.as_str());
        assert_eq!(name(base), Some("debian"));
        assert_eq!(name(kernel), Some("debian-trixie-backports"));
        // Listed nowhere: the first source of the base.
        assert_eq!(name(Sha256::of(b"?")), Some("debian"));
        let nested = origin_of(
            &sources,
            "http://m.invalid/debian/extra/a.deb",
            &base,
            &indexed_by,
        );
        assert_eq!(nested.map(|s| s.name.as_str()), Some("nested"));
        assert!(origin_of(&sources, "http://other.invalid/a.deb", &base, &indexed_by).is_none());
    }

    #[test]
    fn bad_requests() {
        let req = LockRequest {
            arch: "arm64".into(),
            suite: "trixie".into(),
            sources: vec![],
            packages: ["Bad Name".to_owned()].into(),
            include_required: false,
        };
        let dir = std::env::temp_dir();
        assert!(matches!(
            lock(&req, &dir),
            Err(ResolveError::BadRequest {
                what: "package name",
                ..
            })
        ));
    }
}
