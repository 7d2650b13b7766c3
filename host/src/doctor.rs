//! `pibake doctor`: which rows of the [`tools`](crate::tools) table this host
//! lacks, each with the command that installs it.
//!
//! The host is read through [`Probe`] so the verdicts are tested without
//! touching the machine; [`SystemProbe`] asks dpkg and the PATH.

use crate::tools::{Need, Origin, Requirement, TABLE};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the doctor can ask of a host.
pub trait Probe {
    /// The installed version of a Debian package, `None` when not installed.
    fn package_version(&self, package: &str) -> Option<String>;
    /// Whether `program` can be run (on PATH, or in /usr/sbin or /sbin).
    fn program_found(&self, program: &str) -> bool;
    /// Whether arm64 binaries run through binfmt_misc (qemu-aarch64 registered).
    fn binfmt_aarch64(&self) -> bool;
}

/// A requirement this host does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub requirement: &'static Requirement,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NotInstalled,
    TooOld { installed: String },
    ProgramMissing { program: &'static str },
}

/// The host state outside the package table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// qemu-aarch64 is not registered with binfmt_misc.
    pub binfmt_missing: bool,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty() && !self.binfmt_missing
    }
}

/// Checks every requirement of `needs` against the host.
pub fn examine(probe: &dyn Probe, needs: &[Need]) -> Report {
    let mut findings = Vec::new();
    for requirement in TABLE.iter().filter(|r| needs.contains(&r.need)) {
        if let Some(problem) = problem_of(probe, requirement) {
            findings.push(Finding {
                requirement,
                problem,
            });
        }
    }
    Report {
        findings,
        binfmt_missing: needs.contains(&Need::Build) && !probe.binfmt_aarch64(),
    }
}

fn problem_of(probe: &dyn Probe, requirement: &'static Requirement) -> Option<Problem> {
    if requirement.origin != Origin::Pypi {
        let Some(installed) = probe.package_version(requirement.package) else {
            return Some(Problem::NotInstalled);
        };
        if let Some(min) = requirement.min_version {
            if upstream_version(&installed).is_none_or(|v| v < min) {
                return Some(Problem::TooOld { installed });
            }
        }
    }
    requirement
        .programs
        .iter()
        .find(|p| !probe.program_found(p))
        .map(|program| match requirement.origin {
            Origin::Pypi => Problem::NotInstalled,
            _ => Problem::ProgramMissing { program },
        })
}

/// `1.47.2-3~bpo12+1` → (1, 47, 2); an epoch (`1:`) is dropped.
pub fn upstream_version(debian: &str) -> Option<(u32, u32, u32)> {
    let without_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    let upstream = without_epoch.split(['-', '~', '+']).next()?;
    let mut parts = upstream.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The report as lines for a terminal, one per finding, with install commands.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for finding in &report.findings {
        let r = finding.requirement;
        let what = match &finding.problem {
            Problem::NotInstalled => format!("{} is not installed", r.package),
            Problem::TooOld { installed } => {
                let (a, b, c) = r.min_version.unwrap_or_default();
                format!("{} {installed} is too old (needs {a}.{b}.{c})", r.package)
            }
            Problem::ProgramMissing { program } => {
                format!("{program} (from {}) is not found", r.package)
            }
        };
        out.push_str(&format!(
            "missing for {}: {what}: {}\n  fix: {}\n",
            r.need.describe(),
            r.why,
            r.install_command()
        ));
    }
    if report.binfmt_missing {
        out.push_str(
            "missing for pibake: qemu-aarch64 is not registered with binfmt_misc \
             (arm64 maintainer scripts cannot run)\n  fix: apt-get install qemu-user-static \
             binfmt-support, or `cargo xtask setup` in a checkout\n",
        );
    }
    out
}

/// The real host: dpkg-query for packages, PATH for programs.
#[derive(Debug, Default)]
pub struct SystemProbe {
    /// Extra directories searched for programs (e.g. the PyPI tools' venv).
    pub extra_paths: Vec<PathBuf>,
}

impl Probe for SystemProbe {
    fn package_version(&self, package: &str) -> Option<String> {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}\t${Version}", package])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (status, version) = text.split_once('\t')?;
        (out.status.success() && status.ends_with("install ok installed"))
            .then(|| version.trim().to_owned())
    }

    fn program_found(&self, program: &str) -> bool {
        find_program(program, &self.extra_paths).is_some()
    }

    fn binfmt_aarch64(&self) -> bool {
        Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists()
    }
}

/// Where `program` would be run from: PATH, `extra`, then /usr/sbin and /sbin
/// (not on a normal user's PATH, but where Debian puts mke2fs and friends).
pub fn find_program(program: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fake {
        packages: BTreeMap<&'static str, &'static str>,
        programs: Vec<&'static str>,
        binfmt: bool,
    }

    impl Probe for Fake {
        fn package_version(&self, package: &str) -> Option<String> {
            self.packages.get(package).map(|v| (*v).to_owned())
        }
        fn program_found(&self, program: &str) -> bool {
            self.programs.contains(&program)
        }
        fn binfmt_aarch64(&self) -> bool {
            self.binfmt
        }
    }

    fn complete() -> Fake {
        let mut packages = BTreeMap::new();
        let mut programs = Vec::new();
        for r in TABLE {
            packages.insert(r.package, "1.47.2-3~bpo12+1");
            programs.extend_from_slice(r.programs);
        }
        Fake {
            packages,
            programs,
            binfmt: true,
        }
    }

    #[test]
    fn a_complete_host_is_ok() {
        let report = examine(&complete(), &[Need::Build, Need::Agent, Need::Test]);
        assert!(report.is_ok(), "{}", render(&report));
    }

    #[test]
    fn names_what_is_missing_with_the_fix() {
        let mut host = complete();
        host.packages.remove("arch-test");
        host.packages.insert("e2fsprogs", "1.47.0-2");
        host.programs.retain(|p| *p != "dtc");
        host.binfmt = false;
        let report = examine(&host, &[Need::Build]);
        let text = render(&report);
        assert_eq!(report.findings.len(), 3, "{text}");
        assert!(text.contains("arch-test is not installed"), "{text}");
        assert!(
            text.contains("apt-get install --no-install-recommends arch-test"),
            "{text}"
        );
        assert!(
            text.contains("e2fsprogs 1.47.0-2 is too old (needs 1.47.1)"),
            "{text}"
        );
        assert!(text.contains("-t bookworm-backports e2fsprogs"), "{text}");
        assert!(text.contains("dtc (from device-tree-compiler)"), "{text}");
        assert!(text.contains("binfmt_misc"), "{text}");
        // Test-only rows are not asked of a user who only builds.
        assert!(!text.contains("keepalived"), "{text}");
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("1.47.2-3~bpo12+1"), Some((1, 47, 2)));
        assert_eq!(upstream_version("1:10.0.2+ds-2"), Some((10, 0, 2)));
        assert_eq!(upstream_version("252.38-1~deb12u1"), Some((252, 38, 0)));
        assert_eq!(upstream_version("x"), None);
    }
}
