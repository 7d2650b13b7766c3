//! The locked kernel, read from its packages in the store: can it boot the
//! cluster's boards? A Pi 5 needs RP1's drivers, its device trees and the
//! initramfs modules of [`pibake_image::pi5`]; a Pi 4 its device tree. The
//! cluster file only names the package (`[kernel]`); the lock pins the
//! version, and only the package's own `config`, DTB list and module list
//! tell what that version can do (Debian trixie's 6.12 has no RP1 driver,
//! trixie-backports' 7.x has).

use super::{Checked, Cluster, Platform};
use crate::diag::{Diagnostic, FieldPath};
use pibake_image::pi5;
use pibake_inputs::lock::LockedPackage;
use pibake_inputs::Lock;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// What the locked kernel packages hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFacts {
    /// The packages read, as `linux-image-6.12.117+deb13-arm64 6.12.117-1`.
    pub packages: Vec<String>,
    /// `CONFIG_*` options set to `y` or `m`.
    pub config: BTreeMap<String, String>,
    /// Whether a kernel config was found at all.
    pub has_config: bool,
    /// File names of the Broadcom DTBs (`bcm2712-rpi-5-b.dtb`).
    pub dtbs: BTreeSet<String>,
    /// Loadable modules, by [`pi5::module_key`].
    pub modules: BTreeSet<String>,
    /// Built-in modules (modules.builtin), by [`pi5::module_key`].
    pub builtin: BTreeSet<String>,
}

/// The kernel's packages among the lock's: the files of Debian's kernel are
/// split over linux-image-/linux-base-/linux-modules-/linux-binary-<version>
/// since 7.x (one linux-image-<version> before).
/// Only the Raspberry Pi architecture's closure: `[kernel]` is the Pis'.
fn kernel_packages(lock: &Lock) -> Vec<&LockedPackage> {
    let pi_arch = Platform::Rpi5.arch().unwrap_or_default();
    lock.closure(pi_arch)
        .into_iter()
        .flat_map(|c| &c.packages)
        .filter(|p| {
            [
                "linux-image-",
                "linux-base-",
                "linux-modules-",
                "linux-binary-",
            ]
            .iter()
            .any(|prefix| p.name.starts_with(prefix))
        })
        .collect()
}

/// A module's key from a path like `…/kernel/drivers/clk/clk-rp1.ko.xz`.
fn module_of(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))?;
    Some(pi5::module_key(stem))
}

impl KernelFacts {
    /// Adds what one package's data tar holds.
    fn read_tar(&mut self, data: &mut dyn Read) -> io::Result<()> {
        let mut tar = tar::Archive::new(data);
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            let modules_dir = path.contains("/lib/modules/");
            if (modules_dir && path.ends_with("/config")) || path.contains("/boot/config-") {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                self.has_config = true;
                for line in text.lines() {
                    if let Some((key, value)) = line.split_once('=') {
                        if value == "y" || value == "m" {
                            self.config.insert(key.to_owned(), value.to_owned());
                        }
                    }
                }
            } else if modules_dir && path.ends_with("/modules.builtin") {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                self.builtin.extend(text.lines().filter_map(module_of));
            } else if path.ends_with(".dtb") && path.contains("/broadcom/") {
                if let Some(name) = path.rsplit('/').next() {
                    self.dtbs.insert(name.to_owned());
                }
            } else if let Some(module) = module_of(&path) {
                self.modules.insert(module);
            }
        }
        Ok(())
    }

    /// Reads the lock's kernel packages from the store at `store_root`;
    /// `Ok(None)` when one is not there yet.
    pub fn of_lock(lock: &Lock, store_root: &Path) -> Result<Option<KernelFacts>, String> {
        let mut facts = KernelFacts::default();
        for package in kernel_packages(lock) {
            let entry = package.entry_name().map_err(|e| e.to_string())?;
            let path: PathBuf = store_root.join(entry.to_string());
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            pibake_inputs::deb::with_member(
                io::BufReader::new(file),
                pibake_inputs::deb::Member::Data,
                |data| facts.read_tar(data),
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            facts
                .packages
                .push(format!("{} {}", package.name, package.version));
        }
        Ok(Some(facts))
    }

    fn has_module(&self, name: &str) -> bool {
        let key = pi5::module_key(name);
        self.modules.contains(&key) || self.builtin.contains(&key)
    }

    /// What keeps this kernel from booting `platform`, each as (what is
    /// missing, what it breaks).
    pub fn gaps(&self, platform: Platform) -> Vec<(String, &'static str)> {
        let mut gaps = Vec::new();
        match platform {
            Platform::Rpi5 => {
                for option in pi5::KERNEL_OPTIONS {
                    if !self.config.contains_key(option) {
                        gaps.push((
                            option.to_string(),
                            "the Pi 5 would boot without its SD card, Ethernet or header GPIO (RP1)",
                        ));
                    }
                }
                for dtb in pi5::DTBS {
                    if !self.dtbs.contains(dtb) {
                        gaps.push((dtb.to_string(), "the Pi 5's firmware needs its device tree"));
                    }
                }
                for module in pi5::INITRAMFS_MODULES {
                    if !self.has_module(module) {
                        gaps.push((
                            format!("module {module}"),
                            "the Pi 5's initramfs needs it for the SD root and the wire",
                        ));
                    }
                }
            }
            Platform::Rpi4 if !self.dtbs.contains(pi5::PI4_DTB) => {
                gaps.push((
                    pi5::PI4_DTB.to_string(),
                    "the Pi 4's firmware needs its device tree",
                ));
            }
            _ => {}
        }
        gaps
    }
}

fn field() -> FieldPath {
    vec!["kernel".to_string(), "suite".to_string()]
}

/// The findings about the locked kernel for the cluster's platforms.
pub fn findings(cluster: &Cluster, facts: &KernelFacts, lock_path: &Path) -> Vec<Diagnostic> {
    let platforms: BTreeSet<Platform> = cluster.nodes.values().map(|n| n.platform).collect();
    let mut out = Vec::new();
    for platform in platforms {
        let gaps = facts.gaps(platform);
        if gaps.is_empty() {
            continue;
        }
        let nodes: Vec<&str> = cluster
            .nodes
            .values()
            .filter(|n| n.platform == platform)
            .map(|n| n.name.as_str())
            .collect();
        let missing: Vec<String> = gaps.iter().map(|(what, _)| what.clone()).collect();
        let why = gaps[0].1;
        let help = if platform == Platform::Rpi5 {
            "Debian's 7.x kernel has RP1: set `[kernel] suite = \"trixie-backports\"` and run `pibake lock --update`"
        } else {
            "pin a kernel package that ships the board's device tree"
        };
        out.push(
            Diagnostic::error(
                &cluster.file,
                field(),
                format!(
                    "the kernel {} pins ({}) lacks {} for the {} nodes {}: {why}",
                    lock_path.display(),
                    facts.packages.join(", "),
                    missing.join(", "),
                    platform.name(),
                    nodes.join(", "),
                ),
            )
            .help(help),
        );
    }
    out
}

impl Checked {
    /// Checks the locked kernel against the cluster's boards, when the lock
    /// and the kernel's packages are there (a note says when they are not),
    /// reading the store at `store_root` (`None`: the default store).
    pub fn check_locked_kernel(&mut self, store_root: Option<&Path>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let store_root = match store_root {
            Some(root) => root.to_path_buf(),
            None => match pibake_inputs::Store::default_root() {
                Ok(root) => root,
                // check_locked_inputs has said there is no store.
                Err(_) => return,
            },
        };
        if cluster.kernel.package.is_none()
            || !cluster.nodes.values().any(|n| n.platform.is_raspberry_pi())
        {
            return;
        }
        let lock_path = pibake_inputs::lock::path_beside(&cluster.file);
        let note = |message: &str| {
            Diagnostic::note(&cluster.file, field(), message.to_string())
                .help("`pibake lock` and `pibake fetch` bring it (`pibake build` does both)")
        };
        let found = match Lock::read(&lock_path) {
            Err(_) => vec![note(
                "the kernel is checked against the boards once it is locked and fetched",
            )],
            Ok(lock) => match KernelFacts::of_lock(&lock, &store_root) {
                Ok(Some(facts)) => findings(cluster, &facts, &lock_path),
                Ok(None) => vec![note(
                    "the locked kernel is checked against the boards once it is in the store",
                )],
                Err(e) => vec![Diagnostic::warning(
                    &cluster.file,
                    field(),
                    format!("the locked kernel cannot be read: {e}"),
                )
                .help("`pibake store verify` finds a corrupt entry")],
            },
        };
        if found.iter().any(Diagnostic::is_error) {
            self.cluster = None;
        }
        self.diagnostics.extend(found);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rp1_kernel() -> KernelFacts {
        let mut facts = KernelFacts::default();
        for option in pi5::KERNEL_OPTIONS {
            facts.config.insert(option.into(), "m".into());
        }
        facts.dtbs.extend(pi5::DTBS.iter().map(|d| d.to_string()));
        facts.dtbs.insert(pi5::PI4_DTB.into());
        facts.modules.extend(
            pi5::INITRAMFS_MODULES
                .iter()
                .skip(1)
                .map(|m| pi5::module_key(m)),
        );
        facts.builtin.insert("pcie_brcmstb".into());
        facts
    }

    #[test]
    fn a_kernel_with_rp1_boots_both_boards() {
        let facts = rp1_kernel();
        assert!(facts.gaps(Platform::Rpi5).is_empty());
        assert!(facts.gaps(Platform::Rpi4).is_empty());
    }

    #[test]
    fn each_missing_piece_is_named() {
        let mut facts = rp1_kernel();
        facts.config.remove("CONFIG_MISC_RP1");
        facts.dtbs.remove("bcm2712-d-rpi-5-b.dtb");
        facts.modules.remove("clk_rp1");
        let gaps: Vec<String> = facts
            .gaps(Platform::Rpi5)
            .into_iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(
            gaps,
            ["CONFIG_MISC_RP1", "bcm2712-d-rpi-5-b.dtb", "module clk-rp1"]
        );
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_of("./usr/lib/modules/7.3/kernel/drivers/clk/clk-rp1.ko.xz").as_deref(),
            Some("clk_rp1")
        );
        assert_eq!(
            module_of("kernel/drivers/pci/controller/pcie-brcmstb.ko").as_deref(),
            Some("pcie_brcmstb")
        );
        assert_eq!(module_of("./usr/lib/modules/7.3/modules.dep"), None);
    }
}
