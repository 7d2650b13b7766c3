//! The Raspberry Pi boot files pibake renders itself: config.txt and
//! cmdline.txt (FACTS.md, "Boot partition and images").

use crate::diag::Diagnostic;
use crate::model::{Button, Cluster, Gps, KernelSource, Platform, CONFIG_TXT_MAX_LINE};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The kernel and initrd file names found in the rootfs' /boot/firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    pub kernel: String,
    pub initrd: Option<String>,
}

impl KernelFiles {
    /// A stand-in used where the rootfs is not built yet (check, plan,
    /// golden tests): the shape of Debian trixie's names.
    pub fn placeholder() -> Self {
        KernelFiles {
            kernel: "vmlinuz-6.12.0-0-arm64".into(),
            initrd: Some("initrd.img-6.12.0-0-arm64".into()),
        }
    }

    /// Picks the kernel and initrd among the names of files in
    /// /boot/firmware (newest version wins by string order).
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

/// The device-tree overlay line of the shutdown button. `gpio_pull` is
/// written as the number the overlay's `brcm,pull` takes (0 off, 1 down,
/// 2 up): overlays/dtbo/gpio-shutdown.dts.
pub fn button_line(button: &Button) -> String {
    let pull = match button.pull.as_str() {
        "off" => 0,
        "down" => 1,
        _ => 2,
    };
    format!(
        "dtoverlay=gpio-shutdown,gpio_pin={},active_low={},gpio_pull={pull},debounce={}",
        button.gpio,
        u8::from(button.active_low),
        button.debounce_ms
    )
}

/// The lines that make the header UART and the PPS pin available to a GPS
/// receiver on `platform` (FACTS.md, "Clock": Pi 4 enable_uart + disable-bt,
/// Pi 5 dtparam=uart0=on).
pub fn gps_lines(platform: Platform, gps: &Gps) -> Vec<String> {
    let mut lines = match platform {
        Platform::Rpi4 => vec![
            "enable_uart=1".to_string(),
            "dtoverlay=disable-bt".to_string(),
        ],
        Platform::Rpi5 => vec!["dtparam=uart0=on".to_string()],
        Platform::PcEfi | Platform::Macos => vec![],
    };
    lines.push(format!("dtoverlay=pps-gpio,gpiopin={}", gps.pps_gpio));
    lines
}

/// Every line pibake adds for the cluster's features on one platform; used
/// by [`lint`] to refuse lines the firmware would cut.
pub fn feature_lines(
    platform: Platform,
    button: Option<&Button>,
    gps: Option<&Gps>,
) -> Vec<String> {
    let mut lines = Vec::new();
    lines.extend(button.map(button_line));
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
                "# Shutdown button: GPIO{} to GND (header pins 5 and 6 for GPIO3).",
                button.gpio
            );
            let _ = writeln!(out, "{}", button_line(button));
        }
        if let Some((gps, platform)) = self.gps {
            let _ = writeln!(
                out,
                "# GPS on {} with PPS on GPIO{} (node {}).",
                gps.uart, gps.pps_gpio, gps.node
            );
            let section = match platform {
                Platform::Rpi4 => "[pi4]",
                Platform::Rpi5 => "[pi5]",
                Platform::PcEfi | Platform::Macos => "[all]",
            };
            let lines = gps_lines(platform, gps);
            let (pps, uart) = lines
                .split_last()
                .map_or((None, &[][..]), |(l, r)| (Some(l), r));
            let _ = writeln!(out, "{section}");
            for line in uart {
                let _ = writeln!(out, "{line}");
            }
            out.push_str("[all]\n");
            if let Some(pps) = pps {
                let _ = writeln!(out, "{pps}");
            }
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
