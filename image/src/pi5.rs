//! What a Raspberry Pi 5 needs from a mainline kernel, in one place for the
//! builder (which puts it into the image), `pibake check` (which reads it
//! from the locked kernel package) and `pibake verify` (which looks for it
//! in an image). FACTS.md, "Boot partition and images".

/// Kernel options the Pi 5 needs for its SD card, Ethernet and header GPIO
/// (RP1 sits behind PCIe; `y` or `m` both do).
pub const KERNEL_OPTIONS: [&str; 5] = [
    "CONFIG_MISC_RP1",
    "CONFIG_PINCTRL_RP1",
    "CONFIG_COMMON_CLK_RP1",
    "CONFIG_MACB",
    "CONFIG_MMC_SDHCI_BRCMSTB",
];

/// The device trees of a Pi 5 on the boot partition: the firmware refuses to
/// boot without the first; the second is the D0 stepping's.
pub const DTBS: [&str; 2] = ["bcm2712-rpi-5-b.dtb", "bcm2712-d-rpi-5-b.dtb"];

/// The Pi 4's device tree.
pub const PI4_DTB: &str = "bcm2711-rpi-4-b.dtb";

/// Modules the initramfs loads so that the root on the SD card (behind
/// gio_aon and the SDHCI) and the wire (behind RP1 on PCIe) come up before
/// the root is mounted. `pcie-brcmstb` is built into Debian's kernel; it is
/// listed for kernels that build it as a module.
pub const INITRAMFS_MODULES: [&str; 7] = [
    "pcie-brcmstb",
    "rp1_pci",
    "clk-rp1",
    "pinctrl-rp1",
    "gpio-brcmstb",
    "sdhci-brcmstb",
    "macb",
];

/// Where initramfs-tools reads extra module lists from (besides
/// /etc/initramfs-tools/modules, a conffile pibake leaves alone).
pub const INITRAMFS_MODULES_FILE: &str = "usr/share/initramfs-tools/modules.d/pibake-rpi5";

/// The text of [`INITRAMFS_MODULES_FILE`].
pub fn initramfs_modules_text() -> String {
    let mut text = String::from(
        "# Written by pibake: what a Raspberry Pi 5 needs in the initramfs for an SD root\n\
         # and the wire (RP1 behind PCIe). Harmless on other boards.\n",
    );
    for module in INITRAMFS_MODULES {
        text.push_str(module);
        text.push('\n');
    }
    text
}

/// A module's name as the kernel knows it (`clk-rp1` and `clk_rp1` are one).
pub fn module_key(name: &str) -> String {
    name.replace('-', "_")
}
