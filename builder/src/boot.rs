//! The Raspberry Pi boot files pibake renders itself: config.txt and
//! cmdline.txt (FACTS.md, "Boot partition and images").

use crate::diag::Diagnostic;
use crate::model::{Button, Cluster, Gps, KernelSource, Platform, CONFIG_TXT_MAX_LINE};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The kernel and initrd file names found in the rootfs' /boot/firmware (a Pi's, copied there
/// by raspi-firmware's hook) or /boot (a pc-efi image's, copied to the ESP by the build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    pub kernel: String,
    pub initrd: Option<String>,
}

impl KernelFiles {
    /// A stand-in used where the rootfs is not built yet (check, plan,
    /// golden tests): the shape of the names of Debian's kernel (7.3 from trixie-backports).
    pub fn placeholder() -> Self {
        KernelFiles {
            kernel: "vmlinuz-7.3.4+deb13-arm64".into(),
            initrd: Some("initrd.img-7.3.4+deb13-arm64".into()),
        }
    }

    /// Picks the kernel and initrd among the names of files in one
    /// directory (newest version wins by string order).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let names: BTreeSet<&str> = names.into_iter().collect();
        let kernel = names
            .iter()
            .filter(|n| n.starts_with("vmlinuz-"))
            .max()?
            .to_string();
        let version = kernel.trim_start_matches("vmlinuz-");
        let initrd = format!("initrd.img-{version}");
        let initrd = names.contains(initrd.as_str()).then_some(initrd);
        Some(KernelFiles { kernel, initrd })
    }
}

/// The device-tree overlay line of the shutdown button on `platform`: the
/// Pi 4's `gpio-shutdown` (pull as the number its `brcm,pull` takes: 0 off,
/// 1 down, 2 up) or the Pi 5's `gpio-shutdown-pi5` on RP1's GPIO (pull-up by
/// default, `pull_down=on`/`pull_off=on` otherwise). The hold time is the
/// overlay's debounce: gpio-keys reports the key only once it has been held
/// that long (overlays/dtbo/README.md, FACTS.md "Shutdown button").
pub fn button_line(platform: Platform, button: &Button) -> String {
    let (gpio, low, hold) = (button.gpio, u8::from(button.active_low), button.hold_ms);
    if platform == Platform::Rpi5 {
        let pull = match button.pull.as_str() {
            "off" => ",pull_off=on",
            "down" => ",pull_down=on",
            _ => "",
        };
        return format!(
            "dtoverlay=gpio-shutdown-pi5,gpio_pin={gpio},active_low={low},debounce={hold}{pull}"
        );
    }
    let pull = match button.pull.as_str() {
        "off" => 0,
        "down" => 1,
        _ => 2,
    };
    format!(
        "dtoverlay=gpio-shutdown,gpio_pin={gpio},active_low={low},gpio_pull={pull},debounce={hold}"
    )
}

/// The lines that make the GPS receiver's UART (when it is on the header)
/// and its PPS pin available on `platform` (FACTS.md, "Clock": Pi 4
/// enable_uart + disable-bt; the Pi 5's header UARTs have no mainline
/// driver, so a Pi 5 takes a USB receiver and only the PPS pin, on RP1).
pub fn gps_lines(platform: Platform, gps: &Gps) -> Vec<String> {
    let mut lines = Vec::new();
    if platform == Platform::Rpi4 && gps.on_header_uart() {
        lines.push("enable_uart=1".to_string());
        lines.push("dtoverlay=disable-bt".to_string());
    }
    let overlay = if platform == Platform::Rpi5 {
        "pps-gpio-pi5"
    } else {
        "pps-gpio"
    };
    lines.push(format!("dtoverlay={overlay},gpiopin={}", gps.pps_gpio));
    lines
}

/// The config.txt section a platform's own lines go in.
pub fn section(platform: Platform) -> &'static str {
    match platform {
        Platform::Rpi4 => "[pi4]",
        Platform::Rpi5 => "[pi5]",
        Platform::PcEfi | Platform::Macos => "[all]",
    }
}

/// Every line pibake adds for the cluster's features on one platform; used
/// by [`lint`] to refuse lines the firmware would cut.
pub fn feature_lines(
    platform: Platform,
    button: Option<&Button>,
    gps: Option<&Gps>,
) -> Vec<String> {
    let mut lines = Vec::new();
    lines.extend(button.map(|b| button_line(platform, b)));
    if let Some(gps) = gps {
        lines.extend(gps_lines(platform, gps));
    }
    lines
}

/// The findings about config.txt lines pibake renders for the cluster's
/// features (shutdown button, GPS) on each node's platform: a line the
/// firmware would cut (over [`CONFIG_TXT_MAX_LINE`] characters) is an
/// error, located at the cluster file's `[button]`. Run on the built model
/// ([`crate::model::Checked::check_model`]) by `check` and every command
/// that loads a cluster.
pub fn lint(cluster: &Cluster) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for node in cluster.nodes.values() {
        let gps = cluster.time.gps.as_ref().filter(|g| g.node == node.name);
        for line in feature_lines(node.platform, cluster.button.as_ref(), gps) {
            if line.chars().count() > CONFIG_TXT_MAX_LINE {
                found.push(
                    Diagnostic::error(
                        &cluster.file,
                        vec!["button".to_string()],
                        format!("rendered config.txt line `{line}` is over {CONFIG_TXT_MAX_LINE} characters"),
                    )
                    .help("shorten the options"),
                );
            }
        }
    }
    found
}

/// What config.txt of one image is made from.
#[derive(Debug, Clone)]
pub struct ConfigTxt<'a> {
    pub image: &'a str,
    pub kernel_source: KernelSource,
    pub kernel: &'a KernelFiles,
    /// The platforms of the image's nodes: each gets its own section where lines differ.
    pub platforms: &'a BTreeSet<Platform>,
    pub button: Option<&'a Button>,
    /// Set when the image carries the GPS node, with that node's platform.
    pub gps: Option<(&'a Gps, Platform)>,
    pub profile_lines: &'a [String],
    pub node_lines: &'a [String],
}

impl ConfigTxt<'_> {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# config.txt of image {}, rendered by pibake.",
            self.image
        );
        let _ = writeln!(
            out,
            "# Edit the cluster description and rebuild instead of this file."
        );
        out.push_str("[all]\narm_64bit=1\n");
        let _ = writeln!(out, "kernel={}", self.kernel.kernel);
        if let Some(initrd) = &self.kernel.initrd {
            let _ = writeln!(out, "initramfs {initrd} followkernel");
        }
        if self.kernel_source == KernelSource::Debian {
            // Debian's kernel uses the upstream device-tree names.
            out.push_str("upstream_kernel=1\n");
        }
        if let Some(button) = self.button {
            let _ = writeln!(
                out,
                "# Shutdown button: GPIO{} to GND (header pins 5 and 6 for GPIO3); hold it {} ms to power off.",
                button.gpio, button.hold_ms
            );
            for platform in self.platforms {
                let _ = writeln!(out, "{}", section(*platform));
                let _ = writeln!(out, "{}", button_line(*platform, button));
            }
            out.push_str("[all]\n");
        }
        if let Some((gps, platform)) = self.gps {
            let _ = writeln!(
                out,
                "# GPS on {} ({}) with PPS on GPIO{} (node {}).",
                gps.uart,
                gps.device(),
                gps.pps_gpio,
                gps.node
            );
            let _ = writeln!(out, "{}", section(platform));
            for line in gps_lines(platform, gps) {
                let _ = writeln!(out, "{line}");
            }
            out.push_str("[all]\n");
        }
        if !self.profile_lines.is_empty() {
            out.push_str("# From the role's profile.\n");
            for line in self.profile_lines {
                let _ = writeln!(out, "{line}");
            }
        }
        if !self.node_lines.is_empty() {
            out.push_str("# From the node's overrides.\n");
            for line in self.node_lines {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

/// cmdline.txt: one line. The serial console is left off on the GPS node,
/// whose UART belongs to the receiver.
pub fn cmdline_txt(root_partuuid: &str, serial_console: bool) -> String {
    let console = if serial_console {
        "console=serial0,115200 console=tty1"
    } else {
        "console=tty1"
    };
    // net.ifnames=0 keeps the wired interface eth0, the name the node
    // table and the NetworkManager keyfile use (Debian would say end0).
    format!("{console} root=PARTUUID={root_partuuid} rootfstype=ext4 fsck.repair=yes rootwait net.ifnames=0\n")
}

/// The dtoverlay names a config.txt refers to (each needs overlays/<name>.dtbo).
pub fn referenced_overlays(config_txt: &str) -> BTreeSet<String> {
    config_txt
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(key, _)| key.trim() == "dtoverlay")
        .filter_map(|(_, value)| pibake_image::dtbo::overlay_name(value))
        .map(str::to_string)
        .collect()
}
