//! `[time]`: the GPS receiver, upstream NTP servers and the clock gate.

use super::{p, Validator};
use crate::model::raw::RawGps;
use crate::model::{Gps, Node, Platform, Time};
use pibake_firstboot::hostname;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

impl Validator<'_> {
    pub(super) fn time(&mut self, nodes: &BTreeMap<String, Node>) -> Option<Time> {
        let raw = &self.raw.time;
        let gps = raw.gps.as_ref().map(|gps| self.gps(gps, nodes));
        for (i, server) in raw.upstream.iter().enumerate() {
            let ok = server.parse::<Ipv4Addr>().is_ok() || hostname::is_dns_name(server);
            if !ok {
                self.error(
                    p(&["time", "upstream", &i.to_string()]),
                    format!("`{server}` is not a host name or address"),
                    "use a name like `pool.ntp.org` or an IPv4 address",
                );
            }
        }
        if gps.is_none() && raw.upstream.is_empty() {
            self.warning(
                p(&["time"]),
                "no GPS and no upstream NTP server: the clock gate can never pass",
                "add time.upstream servers or a [time.gps]",
            );
        }
        Some(Time {
            gps,
            upstream: raw.upstream.clone(),
            serve_subnet: raw.serve_subnet,
            max_offset_ms: raw.gate.max_offset_ms,
            max_root_distance_ms: raw.gate.max_root_distance_ms,
            wait_seconds: raw.gate.wait_seconds,
        })
    }

    /// `[time.gps]`: a node with a UART, `uart0`, a header pin for PPS that
    /// the shutdown button does not use.
    fn gps(&mut self, gps: &RawGps, nodes: &BTreeMap<String, Node>) -> Gps {
        self.gps_node(&gps.node, nodes);
        let platform = nodes.get(&gps.node).map(|n| n.platform);
        match gps.uart.as_str() {
            "usb" => {}
            "uart0" if platform == Some(Platform::Rpi5) => self.error(
                p(&["time", "gps", "uart"]),
                format!("node `{}` is a Pi 5: Debian's kernel has no driver for its header UARTs (RP1's UART driver is not in mainline)", gps.node),
                "use `uart = \"usb\"` (a USB receiver on /dev/ttyACM0, which works on a Pi 4 and a Pi 5), or wire the receiver to a Pi 4",
            ),
            "uart0" => {}
            other => self.error(
                p(&["time", "gps", "uart"]),
                format!("UART `{other}` is not supported"),
                "use `uart0` (header pins 8 and 10, /dev/ttyAMA0; Pi 4) or `usb` (/dev/ttyACM0)",
            ),
        }
        let pin = u8::try_from(gps.pps_gpio).ok().filter(|p| *p <= 27);
        if pin.is_none() {
            self.error(
                p(&["time", "gps", "pps_gpio"]),
                format!("GPIO {} is not on the header", gps.pps_gpio),
                "use a BCM GPIO number 0-27 (pps-gpio's default is 18)",
            );
        }
        if self.raw.button.enabled && gps.pps_gpio == self.raw.button.gpio {
            self.error(
                p(&["time", "gps", "pps_gpio"]),
                format!("GPIO {} is also the shutdown button's", gps.pps_gpio),
                "use another pin, e.g. 18",
            );
        }
        Gps {
            node: gps.node.clone(),
            uart: gps.uart.clone(),
            pps_gpio: pin.unwrap_or(18),
        }
    }

    fn gps_node(&mut self, name: &str, nodes: &BTreeMap<String, Node>) {
        match nodes.get(name) {
            None if !self.raw.nodes.contains_key(name) => self.error(
                p(&["time", "gps", "node"]),
                format!("node `{name}` does not exist"),
                "name the node the GPS receiver is wired to",
            ),
            None => {}
            Some(node) if !node.platform.has_uart() => self.error(
                p(&["time", "gps", "node"]),
                format!(
                    "node `{}` ({}) has no UART for a GPS receiver",
                    node.name,
                    node.platform.name()
                ),
                "wire the GPS to a Raspberry Pi node (rpi4 or rpi5)",
            ),
            Some(_) => {}
        }
    }
}
