//! Time zones: `cluster.timezone` checked against the zone list of the
//! tzdata package the lock pins, so an image never gets a dangling
//! `/etc/localtime`.
//!
//! The cluster file alone gives only the form of a name (validate.rs). The
//! zone list is read from the locked .debs in the store: `tzdata`, and
//! `tzdata-legacy` when the lock has it (Debian trixie moved the old names
//! such as `US/Pacific` there). A zone is every TZif file below
//! `/usr/share/zoneinfo` and every link to one, without `posix/`, `right/`
//! and `posixrules` (what `timedatectl list-timezones` offers).
//!
//! [`Checked::check_locked_inputs`] does this for `pibake check` when the
//! packages are in the store and leaves a note when they are not yet (check
//! before fetch); [`verify_timezone`] does it for `pibake build`, which has
//! fetched them. Store entries are not rehashed here: the store verifies on
//! insert and `pibake store verify` rehashes.

use super::validate::{distance, valid_timezone};
use super::{Checked, Cluster};
use crate::diag::{Diagnostic, FieldPath};
use pibake_inputs::lock::LockedPackage;
use pibake_inputs::{Lock, Store};
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// The packages whose files make up `/usr/share/zoneinfo`.
pub const TZDATA_PACKAGES: [&str; 2] = ["tzdata", "tzdata-legacy"];

const ZONEINFO: &str = "usr/share/zoneinfo";

/// The zone names of the locked tzdata packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zones {
    /// The packages read, as `tzdata 2026f-0+deb13u1`.
    pub packages: String,
    /// Whether `tzdata-legacy` was among them.
    pub legacy: bool,
    pub names: BTreeSet<String>,
}

/// What the lock and the store tell about the zone names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedZones {
    /// The lock pins no tzdata: the images have no zone files at all.
    NoTzdata,
    /// A locked tzdata package is not in the store yet.
    NotInStore {
        packages: String,
    },
    Zones(Zones),
}

/// A tzdata package that is in the store but cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TzdataError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a Debian package with zone files: {what}", path.display())]
    BadDeb { path: PathBuf, what: String },
    #[error("the lock's {package} has no store entry name")]
    Entry {
        package: String,
        #[source]
        source: pibake_inputs::lock::LockError,
    },
}

/// Why `pibake build` refuses the cluster's time zone.
#[derive(Debug, thiserror::Error)]
pub enum TimezoneError {
    /// Located: `file:line:column: cluster.timezone: what; help`.
    #[error("{0}")]
    Unknown(String),
    #[error(transparent)]
    Tzdata(#[from] TzdataError),
}

/// The zone names in a tzdata .deb (ar archive → data.tar[.xz|.gz|.zst]).
pub fn zone_names(deb: impl Read) -> Result<BTreeSet<String>, String> {
    pibake_inputs::deb::with_member(deb, pibake_inputs::deb::Member::Data, |data| {
        zones_in_tar(data)
    })
}

/// `path` relative to the zoneinfo directory, `None` outside it.
fn below_zoneinfo(path: &Path) -> Option<String> {
    let mut rel = path;
    for prefix in [".", "/"] {
        rel = rel.strip_prefix(prefix).unwrap_or(rel);
    }
    let text = rel.strip_prefix(ZONEINFO).ok()?.to_str()?;
    (!text.is_empty()).then(|| text.to_owned())
}

/// Resolves a symlink `target` written in the zoneinfo file `name`, as a name
/// relative to zoneinfo; `None` when it leaves zoneinfo.
fn resolve_symlink(name: &str, target: &Path) -> Option<String> {
    if target.is_absolute() {
        return below_zoneinfo(target);
    }
    let mut parts: Vec<String> = name.split('/').map(str::to_owned).collect();
    parts.pop();
    for component in target.components() {
        match component {
            Component::Normal(c) => parts.push(c.to_str()?.to_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn zones_in_tar(data: impl Read) -> Result<BTreeSet<String>, io::Error> {
    let mut tar = tar::Archive::new(data);
    let mut zones = BTreeSet::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(name) = below_zoneinfo(&path) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let mut magic = [0u8; 4];
            if entry.read_exact(&mut magic).is_ok() && &magic == b"TZif" {
                zones.insert(name);
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name()? else {
                continue;
            };
            let resolved = if kind.is_symlink() {
                resolve_symlink(&name, &target)
            } else {
                // Hard links name their target from the archive's root.
                below_zoneinfo(&target)
            };
            if let Some(resolved) = resolved {
                links.push((name, resolved));
            }
        }
    }
    // Links to links: repeat until nothing changes.
    loop {
        let before = zones.len();
        links.retain(|(name, target)| {
            if zones.contains(target) {
                zones.insert(name.clone());
                false
            } else {
                true
            }
        });
        if zones.len() == before {
            break;
        }
    }
    zones.retain(|z| !(z.starts_with("posix/") || z.starts_with("right/") || z == "posixrules"));
    Ok(zones)
}

fn named(package: &LockedPackage) -> String {
    format!("{} {}", package.name, package.version)
}

/// The zone names of the tzdata packages `lock` pins, read from the store at
/// `store_root` when they are there.
pub fn locked_zones(lock: &Lock, store_root: &Path) -> Result<LockedZones, TzdataError> {
    let packages: Vec<&LockedPackage> = lock
        .packages()
        .into_iter()
        .filter(|p| TZDATA_PACKAGES.contains(&p.name.as_str()))
        .collect();
    if !packages.iter().any(|p| p.name == TZDATA_PACKAGES[0]) {
        return Ok(LockedZones::NoTzdata);
    }
    let described = packages
        .iter()
        .map(|p| named(p))
        .collect::<Vec<_>>()
        .join(" and ");
    let mut paths = Vec::new();
    for package in &packages {
        let entry = package.entry_name().map_err(|source| TzdataError::Entry {
            package: named(package),
            source,
        })?;
        let path = store_root.join(entry.to_string());
        if !path.is_file() {
            return Ok(LockedZones::NotInStore {
                packages: described,
            });
        }
        paths.push(path);
    }
    let mut names = BTreeSet::new();
    for path in paths {
        let file = std::fs::File::open(&path).map_err(|source| TzdataError::Read {
            path: path.clone(),
            source,
        })?;
        let found = zone_names(io::BufReader::new(file))
            .map_err(|what| TzdataError::BadDeb { path, what })?;
        names.extend(found);
    }
    Ok(LockedZones::Zones(Zones {
        packages: described,
        legacy: packages.iter().any(|p| p.name == TZDATA_PACKAGES[1]),
        names,
    }))
}

/// Up to three zone names close to `timezone`: by the whole name, or by its
/// last part (`Berlin` → `Europe/Berlin`), ignoring case.
pub fn close_zones<'a>(timezone: &str, zones: &'a BTreeSet<String>) -> Vec<&'a str> {
    let wanted = timezone.to_ascii_lowercase();
    let wanted_city = wanted.rsplit('/').next().unwrap_or(&wanted);
    let mut scored: Vec<(usize, &str)> = zones
        .iter()
        .filter_map(|zone| {
            let lower = zone.to_ascii_lowercase();
            let city = lower.rsplit('/').next().unwrap_or(&lower);
            let whole = distance(&wanted, &lower);
            let by_city = distance(wanted_city, city);
            let close = whole <= 2.max(wanted.len() / 4) || by_city <= 1.max(wanted_city.len() / 4);
            close.then(|| (whole.min(by_city + 1), zone.as_str()))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, z)| z).collect()
}

fn field() -> FieldPath {
    vec!["cluster".to_string(), "timezone".to_string()]
}

/// The finding about `timezone` of the cluster file `file`, judged by the
/// zones of the tzdata `lock` (at `lock_path`) pins; `None` when it is one.
fn finding(
    file: &Path,
    timezone: &str,
    lock: &Lock,
    lock_path: &Path,
    store_root: &Path,
) -> Result<Option<Diagnostic>, TzdataError> {
    Ok(match locked_zones(lock, store_root)? {
        LockedZones::Zones(zones) if zones.names.contains(timezone) => None,
        LockedZones::Zones(zones) => {
            let close = close_zones(timezone, &zones.names);
            let mut help = if close.is_empty() {
                format!(
                    "use one of its {} zones, e.g. `UTC` or `Europe/Berlin` (`timedatectl list-timezones` lists them)",
                    zones.names.len()
                )
            } else {
                let quoted: Vec<String> = close.iter().map(|z| format!("`{z}`")).collect();
                format!("did you mean {}?", quoted.join(" or "))
            };
            if !zones.legacy && close.is_empty() {
                help.push_str(
                    "; old names such as `US/Pacific` are in tzdata-legacy, which a profile can add to its packages",
                );
            }
            Some(
                Diagnostic::error(
                    file,
                    field(),
                    format!(
                        "`{timezone}` is not a time zone of {}, which {} pins: /etc/localtime would point at nothing",
                        zones.packages,
                        lock_path.display()
                    ),
                )
                .help(help),
            )
        }
        LockedZones::NotInStore { packages } => Some(
            Diagnostic::note(
                file,
                field(),
                format!(
                    "`{timezone}` is checked against the zones of {packages} once it is in the store"
                ),
            )
            .help("`pibake fetch` brings it (`pibake build` fetches and checks it too)"),
        ),
        LockedZones::NoTzdata => Some(
            Diagnostic::warning(
                file,
                field(),
                format!(
                    "{} pins no tzdata: the images have no /usr/share/zoneinfo, so /etc/localtime would point at nothing",
                    lock_path.display()
                ),
            )
            .help("add tzdata to a profile's packages and run `pibake lock --update`"),
        ),
    })
}

/// `cluster.timezone` as written, if the file has one that is a string.
fn written_timezone(text: &str) -> Option<String> {
    let table: toml::Table = text.parse().ok()?;
    table
        .get("cluster")?
        .get("timezone")?
        .as_str()
        .map(str::to_owned)
}

impl Checked {
    /// Checks what needs the locked packages: `cluster.timezone` against the
    /// zones of the tzdata the lock beside the cluster file pins, read from
    /// the store at `store_root` (`None`: the default store). When the lock
    /// or the package is not there yet, a note says when it will be checked;
    /// an unknown zone is an error (and the model is dropped).
    pub fn check_locked_inputs(&mut self, store_root: Option<&Path>) {
        let Some(file) = self.files.first() else {
            return;
        };
        let Some(timezone) = written_timezone(&file.text).filter(|tz| valid_timezone(tz)) else {
            // A missing or malformed name is already reported.
            return;
        };
        let path = file.path.clone();
        let lock_path = pibake_inputs::lock::path_beside(&path);
        let note = |message: String, help: &str| {
            Some(Diagnostic::note(&path, field(), message).help(help))
        };
        let store_root = match store_root {
            Some(root) => Ok(root.to_path_buf()),
            None => Store::default_root(),
        };
        let diagnostic = if !lock_path.is_file() {
            note(
                format!("`{timezone}` is checked against the locked tzdata's zones once `pibake lock` and `pibake fetch` have run"),
                "`pibake build` checks it in any case",
            )
        } else {
            match (Lock::read(&lock_path), store_root) {
                (Err(e), _) => note(
                    format!("`{timezone}` is not checked against tzdata: the lock is not readable ({e})"),
                    "`pibake lock` or `pibake build` reports what is wrong with it",
                ),
                (Ok(_), Err(e)) => note(
                    format!("`{timezone}` is not checked against tzdata: no store to read it from ({e})"),
                    "pass --store",
                ),
                (Ok(lock), Ok(root)) => match finding(&path, &timezone, &lock, &lock_path, &root) {
                    Ok(found) => found,
                    Err(e) => Some(
                        Diagnostic::warning(
                            &path,
                            field(),
                            format!("`{timezone}` is not checked against tzdata: {}", pibake_firstboot::error_chain(&e)),
                        )
                        .help("`pibake store verify` finds a corrupt entry; `pibake gc` and `pibake fetch` replace it"),
                    ),
                },
            }
        };
        if let Some(d) = diagnostic {
            if d.is_error() {
                self.cluster = None;
            }
            self.diagnostics.push(d);
        }
    }
}

/// For `build` (the packages fetched): refuses a `cluster.timezone` that the
/// locked tzdata does not have, located in the cluster file. A lock without
/// tzdata or a package not in the store is not this check's to refuse.
pub fn verify_timezone(
    cluster: &Cluster,
    lock: &Lock,
    store_root: &Path,
) -> Result<(), TimezoneError> {
    let lock_path = pibake_inputs::lock::path_beside(&cluster.file);
    let Some(d) = finding(
        &cluster.file,
        &cluster.timezone,
        lock,
        &lock_path,
        store_root,
    )?
    else {
        return Ok(());
    };
    if !d.is_error() {
        return Ok(());
    }
    Err(TimezoneError::Unknown(d.one_line()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_zoneinfo() {
        assert_eq!(
            resolve_symlink("US/Pacific", Path::new("../America/Los_Angeles")).as_deref(),
            Some("America/Los_Angeles")
        );
        assert_eq!(
            resolve_symlink("UTC", Path::new("Etc/UTC")).as_deref(),
            Some("Etc/UTC")
        );
        assert_eq!(
            resolve_symlink("localtime", Path::new("/etc/localtime")),
            None
        );
        assert_eq!(resolve_symlink("a", Path::new("../../x")), None);
        assert_eq!(
            below_zoneinfo(Path::new("./usr/share/zoneinfo/Europe/Berlin")).as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(below_zoneinfo(Path::new("./usr/share/zoneinfo/")), None);
        assert_eq!(below_zoneinfo(Path::new("./usr/share/doc/tzdata")), None);
    }

    #[test]
    fn close_names_by_whole_name_or_city() {
        let zones: BTreeSet<String> = [
            "Europe/Berlin",
            "Europe/Brussels",
            "America/New_York",
            "UTC",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        assert_eq!(close_zones("Europe/Berln", &zones), vec!["Europe/Berlin"]);
        assert_eq!(close_zones("europe/berlin", &zones), vec!["Europe/Berlin"]);
        assert_eq!(close_zones("Berlin", &zones), vec!["Europe/Berlin"]);
        assert_eq!(
            close_zones("America/New York", &zones),
            vec!["America/New_York"]
        );
        assert!(close_zones("Mars/Olympus", &zones).is_empty());
    }
}
