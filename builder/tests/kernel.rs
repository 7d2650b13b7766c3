//! The locked kernel decides whether the boards can boot: `pibake check`
//! reads its packages (config, DTBs, modules) from the store. Real packages:
//! Debian trixie's 6.12 (the fixture, the lab's lock before 7.3) and
//! trixie-backports' 7.3 (the lab), fetched into the default store (a no-op
//! when they are there, as after `cargo xtask test`'s lab fetch).

mod common;

use pibake::inputs;
use pibake::model::{self, kernel::KernelFacts};
use std::path::Path;

fn checked_with_kernel(fixture: &str) -> (model::Checked, KernelFacts) {
    common::enter_workspace();
    let mut checked = model::load(Path::new(fixture)).expect("fixture readable");
    let cluster = checked
        .cluster
        .clone()
        .expect("fixture valid before the kernel check");
    let lock = inputs::read_lock(&cluster).expect("fixture's lock");
    let store = inputs::open_store(None).expect("store");
    inputs::fetch(&cluster, &lock, &store, false, false).expect("fetch the locked packages");
    let facts = KernelFacts::of_lock(&lock, store.root())
        .expect("kernel packages readable")
        .expect("kernel packages in the store");
    checked.check_locked_kernel(Some(store.root()));
    (checked, facts)
}

#[test]
fn trixie_612_is_refused_for_the_pi5_nodes() {
    let fixture = "tests/fixtures/check-kernel/cluster.toml";
    let (checked, facts) = checked_with_kernel(fixture);
    assert!(
        !facts.config.contains_key("CONFIG_MISC_RP1"),
        "{:?}",
        facts.packages
    );
    let text = checked.report();
    assert!(checked.has_errors(), "{text}");
    assert!(
        text.contains("error: kernel.suite: the kernel tests/fixtures/check-kernel/pibake.lock pins (linux-image-6.12"),
        "{text}"
    );
    for missing in [
        "CONFIG_MISC_RP1",
        "CONFIG_PINCTRL_RP1",
        "CONFIG_COMMON_CLK_RP1",
        "module rp1_pci",
    ] {
        assert!(text.contains(missing), "{missing} not named:\n{text}");
    }
    assert!(
        text.contains("for the rpi5 nodes master1, master2, worker1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("--> {fixture}:22:9")),
        "located at [kernel] suite:\n{text}"
    );
    assert!(
        text.contains("set `[kernel] suite = \"trixie-backports\"`"),
        "{text}"
    );
    // The Pi 4 (aux1) boots 6.12: no finding for rpi4.
    assert!(!text.contains("rpi4 nodes"), "{text}");
}

#[test]
fn backports_73_boots_the_pi4_and_the_pi5() {
    let (checked, facts) = checked_with_kernel("examples/lab/cluster.toml");
    let text = checked.report();
    assert!(!text.contains("kernel.suite"), "{text}");
    for option in pibake_image::pi5::KERNEL_OPTIONS {
        assert!(
            facts.config.contains_key(option),
            "{option}: {:?}",
            facts.packages
        );
    }
    assert!(facts.builtin.contains("pcie_brcmstb"), "PCIe is built in");
    assert!(facts.modules.contains("rp1_pci") && facts.modules.contains("macb"));
    assert!(
        facts.dtbs.contains("bcm2712-d-rpi-5-b.dtb") && facts.dtbs.contains("bcm2711-rpi-4-b.dtb")
    );
}

/// `[kernel] suite = "trixie-backports"` pins the kernel's packages from
/// that suite and nothing else: every package of the lab's lock taken from
/// it is built from Debian's kernel sources.
#[test]
fn the_lab_takes_only_the_kernel_from_backports() {
    common::enter_workspace();
    let lock = pibake_inputs::Lock::read(Path::new("examples/lab/pibake.lock")).expect("lab lock");
    let from_backports: Vec<(&str, &str)> = lock
        .packages()
        .into_iter()
        .filter(|p| p.origin == "debian-trixie-backports")
        .map(|p| (p.name.as_str(), p.source.as_str()))
        .collect();
    assert!(
        from_backports
            .iter()
            .any(|(name, _)| name.starts_with("linux-image-7.")),
        "{from_backports:?}"
    );
    for (name, source) in &from_backports {
        assert!(
            ["linux", "linux-signed-arm64", "linux-base"].contains(source),
            "{name} (source {source}) comes from backports"
        );
    }
    assert!(lock.closures[0].sources.contains("debian-trixie-backports"));
}
