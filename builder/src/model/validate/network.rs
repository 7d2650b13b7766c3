//! `[network]`: subnet, gateway, resolvers, interface, DHCP range and Wi-Fi.

use super::{p, Validator};
use crate::diag::FieldPath;
use crate::model::{Ipv4Net, Network, Wifi};
use pibake_firstboot::hostname;
use std::net::Ipv4Addr;

impl Validator<'_> {
    pub(super) fn network(&mut self) -> Option<Network> {
        let raw = &self.raw.network;
        let subnet = self.subnet();
        let gateway = self.address(p(&["network", "gateway"]), &raw.gateway, subnet);
        let dns = self.dns(subnet);
        if !hostname::is_dns_label(&raw.interface) {
            self.error(
                p(&["network", "interface"]),
                format!("`{}` is not an interface name", raw.interface),
                "use the kernel's name of the wired interface, e.g. `eth0`",
            );
        }
        let dhcp_range = self.dhcp_range(subnet);
        let wifi = self.wifi();
        Some(Network {
            subnet: subnet?,
            gateway: gateway?,
            dns,
            interface: raw.interface.clone(),
            dhcp_range,
            wifi,
        })
    }

    fn subnet(&mut self) -> Option<Ipv4Net> {
        let written = &self.raw.network.subnet;
        match written.parse::<Ipv4Net>() {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(
                    p(&["network", "subnet"]),
                    format!("`{written}` is not a usable subnet: {e}"),
                    "write the network in CIDR form, e.g. 192.168.188.0/24",
                );
                None
            }
        }
    }

    fn dns(&mut self, subnet: Option<Ipv4Net>) -> Vec<Ipv4Addr> {
        let raw = &self.raw.network;
        let mut dns = Vec::new();
        for (i, server) in raw.dns.iter().enumerate() {
            if let Some(a) = self.resolver(p(&["network", "dns", &i.to_string()]), server, subnet) {
                dns.push(a);
            }
        }
        if raw.dns.is_empty() {
            self.error(
                p(&["network", "dns"]),
                "no DNS server",
                "list at least one, e.g. dns = [\"192.168.188.1\"]",
            );
        }
        dns
    }

    /// A DNS resolver: any unicast IPv4 address, in the subnet or beyond the
    /// gateway, but not the subnet's network or broadcast address (the VIP is
    /// refused in [`Self::vip`]).
    fn resolver(
        &mut self,
        field: FieldPath,
        value: &str,
        subnet: Option<Ipv4Net>,
    ) -> Option<Ipv4Addr> {
        let help = "name a DNS server's own address, e.g. the gateway's or a public resolver's";
        let Ok(address) = value.parse::<Ipv4Addr>() else {
            self.error(
                field,
                format!("`{value}` is not an IPv4 address"),
                format!("{help}: four decimal numbers like 192.168.188.1"),
            );
            return None;
        };
        if let Some(problem) = resolver_problem(address, subnet) {
            self.error(field, format!("{address} {problem}"), help);
            return None;
        }
        if address.is_loopback() {
            self.warning(
                field,
                format!("{address} is each node itself: names resolve only where a DNS server runs on the node"),
                help,
            );
        }
        Some(address)
    }

    fn dhcp_range(&mut self, subnet: Option<Ipv4Net>) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let range = self.raw.network.dhcp_range.as_ref()?;
        let start = self.address(p(&["network", "dhcp_range", "start"]), &range.start, subnet);
        let end = self.address(p(&["network", "dhcp_range", "end"]), &range.end, subnet);
        let (s, e) = (start?, end?);
        if u32::from(s) > u32::from(e) {
            self.error(
                p(&["network", "dhcp_range", "end"]),
                format!("the range ends at {e}, before its start {s}"),
                "make `end` the higher address",
            );
            return None;
        }
        Some((s, e))
    }

    fn wifi(&mut self) -> Option<Wifi> {
        let w = self.raw.network.wifi.as_ref()?;
        if w.country.len() != 2 || !w.country.chars().all(|c| c.is_ascii_uppercase()) {
            self.error(
                p(&["network", "wifi", "country"]),
                format!("`{}` is not an ISO 3166 country code", w.country),
                "use two upper-case letters, e.g. `DE`",
            );
        }
        Some(Wifi {
            ssid: w.ssid.clone(),
            country: w.country.clone(),
        })
    }
}

/// Why `address` cannot be a resolver's, if it cannot.
fn resolver_problem(address: Ipv4Addr, subnet: Option<Ipv4Net>) -> Option<String> {
    if address.is_unspecified() || address.octets()[0] == 0 {
        Some("is not an address a host can have (0.0.0.0/8 means \"this host\")".to_string())
    } else if address.is_broadcast() {
        Some("is the limited broadcast address".to_string())
    } else if address.is_multicast() {
        Some("is a multicast address; a resolver is unicast".to_string())
    } else if address.octets()[0] >= 240 {
        Some("is in the reserved range 240.0.0.0/4".to_string())
    } else {
        let net = subnet.filter(|n| n.contains(address))?;
        if address == net.network() {
            Some(format!("is the network address of the subnet {net}"))
        } else if address == net.broadcast() {
            Some(format!("is the broadcast address of the subnet {net}"))
        } else {
            None
        }
    }
}
