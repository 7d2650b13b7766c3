//! `[vip]`: the keepalived floating address, its router id, advert interval
//! and holders with their priorities.

use super::{in_range, p, Validator};
use crate::diag::FieldPath;
use crate::model::raw::RawVip;
use crate::model::{Ipv4Net, Network, Node, Vip};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

impl Validator<'_> {
    pub(super) fn vip(
        &mut self,
        subnet: Option<Ipv4Net>,
        nodes: &BTreeMap<String, Node>,
        network: Option<&Network>,
    ) -> Option<Vip> {
        let raw = self.raw.vip.as_ref()?;
        let address = self.address(p(&["vip", "address"]), &raw.address, subnet);
        if let Some(a) = address {
            self.vip_address(a, nodes, network);
        }
        let vrid = self.virtual_router_id(raw);
        if raw.advert_int == 0 || raw.advert_int > 255 {
            self.error(
                p(&["vip", "advert_int"]),
                format!("advert_int {} is out of range", raw.advert_int),
                "use 1 to 255 seconds (1 is usual)",
            );
        }
        let holders = self.holders(raw, nodes);
        Some(Vip {
            address: address?,
            virtual_router_id: vrid,
            preempt: raw.preempt,
            advert_int: raw.advert_int,
            holders,
        })
    }

    /// The VIP is an address nothing else has: no node, the DHCP range, the
    /// gateway or a resolver.
    fn vip_address(
        &mut self,
        a: Ipv4Addr,
        nodes: &BTreeMap<String, Node>,
        network: Option<&Network>,
    ) {
        if let Some(node) = nodes.values().find(|n| n.address == a) {
            self.error(
                p(&["vip", "address"]),
                format!("the VIP {a} is node `{}`'s own address", node.name),
                "the VIP must be an address no node has",
            );
        }
        if let Some((s, e)) = network.and_then(|n| n.dhcp_range) {
            if in_range(a, s, e) {
                self.error(
                    p(&["vip", "address"]),
                    format!("the VIP {a} is inside the DHCP range {s}-{e}"),
                    "pick an address outside the DHCP range so no DHCP client gets it",
                );
            }
        }
        if network.is_some_and(|n| n.gateway == a) {
            self.error(
                p(&["vip", "address"]),
                format!("the VIP {a} is the gateway's address"),
                "pick a free address",
            );
        }
        for (i, server) in self.raw.network.dns.iter().enumerate() {
            if server.parse::<Ipv4Addr>() == Ok(a) {
                self.error(
                    p(&["network", "dns", &i.to_string()]),
                    format!("{a} is the VIP, which the Swarm masters hold; they serve no DNS"),
                    "name the network's DNS server (often the gateway) or a public resolver",
                );
            }
        }
    }

    fn virtual_router_id(&mut self, raw: &RawVip) -> u8 {
        match u8::try_from(raw.virtual_router_id) {
            Ok(v) if v >= 1 => v,
            _ => {
                self.error(
                    p(&["vip", "virtual_router_id"]),
                    format!("{} is not a VRRP router id", raw.virtual_router_id),
                    "use 1 to 255, the same on all holders and unique on the segment",
                );
                1
            }
        }
    }

    /// The holders by priority: Swarm managers on Linux, distinct priorities.
    fn holders(&mut self, raw: &RawVip, nodes: &BTreeMap<String, Node>) -> BTreeMap<String, u8> {
        let mut holders = BTreeMap::new();
        let mut by_priority: BTreeMap<u32, String> = BTreeMap::new();
        if raw.holders.is_empty() {
            self.error(
                p(&["vip", "holders"]),
                "the VIP has no holders",
                "list the masters: holders = { master1 = 150, master2 = 100 }",
            );
        }
        for (name, &priority) in &raw.holders {
            let field = p(&["vip", "holders", name]);
            if !self.raw.nodes.contains_key(name) {
                self.error(
                    field.clone(),
                    format!("node `{name}` does not exist"),
                    "name a node declared under [nodes]",
                );
                continue;
            }
            self.holder(field.clone(), name, nodes);
            self.priority(field, name, priority, &mut by_priority);
            holders.insert(name.clone(), u8::try_from(priority.min(254)).unwrap_or(254));
        }
        holders
    }

    /// A holder must be a Swarm manager where keepalived runs.
    fn holder(&mut self, field: FieldPath, name: &str, nodes: &BTreeMap<String, Node>) {
        if !self.raw.swarm.managers.iter().any(|m| m == name) {
            let role = &self.raw.nodes[name].role;
            self.error(
                field.clone(),
                format!("VIP holder `{name}` (role `{role}`) is not a master"),
                "only Swarm managers (listed in swarm.managers) may hold the VIP: its track script checks the local manager",
            );
        }
        if let Some(node) = nodes.get(name) {
            if !node.platform.is_linux() {
                self.error(
                    field,
                    format!(
                        "`{name}` runs {}, where keepalived does not run",
                        node.platform.name()
                    ),
                    "hold the VIP on Linux nodes only",
                );
            }
        }
    }

    fn priority(
        &mut self,
        field: FieldPath,
        name: &str,
        priority: u32,
        by_priority: &mut BTreeMap<u32, String>,
    ) {
        if !(1..=254).contains(&priority) {
            self.error(
                field.clone(),
                format!("priority {priority} is out of range"),
                "use 1 to 254 (255 is reserved for the address owner)",
            );
        }
        if let Some(other) = by_priority.get(&priority) {
            self.error(
                field,
                format!("priority {priority} is also `{other}`'s"),
                "give every holder a distinct priority, e.g. 150 and 100",
            );
        } else {
            by_priority.insert(priority, name.to_string());
        }
    }
}
