//! `[nodes.<name>]`: each node's name, role, platform, address, MAC, board
//! serial and config.txt lines; and roles no node has.

use super::{closest, in_range, p, platform_help, Validator};
use crate::diag::{Diagnostic, FieldPath};
use crate::model::net::{self, MacAddr};
use crate::model::raw::RawNode;
use crate::model::{Ipv4Net, Network, Node, Platform, Role, CONFIG_TXT_MAX_LINE};
use pibake_firstboot::hostname::{self, NodeName};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What the nodes checked so far use, so that a second use is refused.
#[derive(Default)]
struct Taken {
    addresses: BTreeMap<Ipv4Addr, String>,
    macs: BTreeMap<MacAddr, String>,
    serials: BTreeMap<String, String>,
}

/// The context a node is checked in.
struct Context<'a> {
    subnet: Option<Ipv4Net>,
    roles: &'a BTreeMap<String, Role>,
    network: Option<&'a Network>,
}

impl Validator<'_> {
    pub(super) fn nodes(
        &mut self,
        subnet: Option<Ipv4Net>,
        roles: &BTreeMap<String, Role>,
        network: Option<&Network>,
    ) -> BTreeMap<String, Node> {
        let context = Context {
            subnet,
            roles,
            network,
        };
        let mut taken = Taken::default();
        let mut nodes = BTreeMap::new();
        if self.raw.nodes.is_empty() {
            self.error(
                p(&["nodes"]),
                "the cluster has no nodes",
                "add [nodes.<name>] tables",
            );
        }
        for (name, raw) in &self.raw.nodes {
            if let Some(node) = self.node(name, raw, &context, &mut taken) {
                nodes.insert(name.clone(), node);
            }
        }
        self.roles_without_nodes();
        self.roles_of_one_architecture(&nodes);
        nodes
    }

    /// One image per role serves one architecture: a role whose nodes are on
    /// arm64 boards and on amd64 machines cannot be built.
    fn roles_of_one_architecture(&mut self, nodes: &BTreeMap<String, Node>) {
        let mut first: BTreeMap<&str, &Node> = BTreeMap::new();
        for node in nodes.values() {
            let Some(arch) = node.platform.arch() else {
                continue;
            };
            let seen = *first.entry(node.role.as_str()).or_insert(node);
            let seen_arch = seen.platform.arch().unwrap_or(arch);
            if seen_arch != arch {
                self.error(
                    p(&["nodes", &node.name, "platform"]),
                    format!(
                        "role `{}` has nodes on {seen_arch} (`{}`: {}) and on {arch} (`{}`: {}): one image per role serves one architecture",
                        node.role,
                        seen.name,
                        seen.platform.name(),
                        node.name,
                        node.platform.name()
                    ),
                    format!(
                        "give the {} nodes a role of their own (e.g. `{}-{}`) with the same profile",
                        node.platform.name(),
                        node.role,
                        arch
                    ),
                );
            }
        }
    }

    /// One node, if its platform and address are valid.
    fn node(
        &mut self,
        name: &str,
        raw: &RawNode,
        context: &Context,
        taken: &mut Taken,
    ) -> Option<Node> {
        let field = |k: &str| p(&["nodes", name, k]);
        self.node_name(name);
        self.node_role(field("role"), raw);
        let platform = self.node_platform(field("platform"), raw, context.roles);
        let address = self.address(field("address"), &raw.address, context.subnet);
        if let Some(a) = address {
            self.node_address(field("address"), name, a, context.network, taken);
        }
        let mac = self.node_mac(field("mac"), name, raw.mac.as_deref(), taken);
        let serial = self.node_serial(
            field("serial"),
            name,
            raw.serial.as_deref(),
            platform,
            taken,
        );
        self.node_config_txt(name, raw, platform);
        Some(Node {
            name: name.to_string(),
            role: raw.role.clone(),
            platform: platform?,
            address: address?,
            mac,
            serial,
            config_txt: raw.config_txt.clone(),
        })
    }

    /// The agent's own rule: the node's name becomes its host name.
    fn node_name(&mut self, name: &str) {
        if let Err(e) = name.parse::<NodeName>() {
            self.error(
                p(&["nodes", name]),
                format!("node name `{name}` {}", e.problem),
                format!(
                    "rename the node `{}` (also where it is named: vip.holders, swarm.managers, time.gps.node); a node's name is its host name: {}",
                    e.suggestion(),
                    hostname::RULE
                ),
            );
        }
    }

    fn node_role(&mut self, field: FieldPath, raw: &RawNode) {
        if self.raw.roles.contains_key(&raw.role) {
            return;
        }
        let known: Vec<&str> = self.raw.roles.keys().map(String::as_str).collect();
        let hint = closest(&raw.role, known.iter().copied())
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        self.error(
            field,
            format!("role `{}` does not exist", raw.role),
            format!("{hint}roles declared under [roles]: {}", known.join(", ")),
        );
    }

    /// The node's platform, which its role's profile must run on.
    fn node_platform(
        &mut self,
        field: FieldPath,
        raw: &RawNode,
        roles: &BTreeMap<String, Role>,
    ) -> Option<Platform> {
        let Some(platform) = Platform::parse(&raw.platform) else {
            self.error(
                field,
                format!("unknown platform `{}`", raw.platform),
                platform_help(),
            );
            return None;
        };
        let Some(profile) = roles.get(&raw.role).map(|r| &r.profile) else {
            return Some(platform);
        };
        if !profile.platforms.is_empty() && !profile.platforms.contains(&platform) {
            let names: Vec<&str> = profile.platforms.iter().map(|p| p.name()).collect();
            self.error(
                field,
                format!(
                    "platform `{}` cannot run the packages of profile `{}` (role `{}`)",
                    platform.name(),
                    profile.name,
                    raw.role
                ),
                format!("profile `{}` runs on: {}", profile.name, names.join(", ")),
            );
        }
        Some(platform)
    }

    /// A node's address: its own, not the gateway's, outside the DHCP range.
    fn node_address(
        &mut self,
        field: FieldPath,
        name: &str,
        a: Ipv4Addr,
        network: Option<&Network>,
        taken: &mut Taken,
    ) {
        if let Some(other) = taken.addresses.get(&a) {
            self.error(
                field.clone(),
                format!("address {a} is already used by node `{other}`"),
                "give every node its own address",
            );
        } else {
            taken.addresses.insert(a, name.to_string());
        }
        let Some(net) = network else {
            return;
        };
        if a == net.gateway {
            self.error(
                field.clone(),
                format!("address {a} is the gateway's"),
                "give the node an address of its own",
            );
        }
        if let Some((s, e)) = net.dhcp_range {
            if in_range(a, s, e) {
                self.error(
                    field,
                    format!("address {a} is inside the DHCP range {s}-{e}"),
                    "use a static address outside the DHCP range",
                );
            }
        }
    }

    fn node_mac(
        &mut self,
        field: FieldPath,
        name: &str,
        written: Option<&str>,
        taken: &mut Taken,
    ) -> Option<MacAddr> {
        let m = written?;
        match m.parse::<MacAddr>() {
            Ok(mac) => {
                if let Some(other) = taken.macs.get(&mac) {
                    self.error(
                        field,
                        format!("MAC {mac} is already used by node `{other}`"),
                        "each board has its own MAC; copy it from the board's label or `ip link`",
                    );
                } else {
                    taken.macs.insert(mac.clone(), name.to_string());
                }
                Some(mac)
            }
            Err(net::MacError::Form) => {
                self.error(
                    field,
                    format!("`{m}` is not a MAC address"),
                    "write six hex pairs like dc:a6:32:01:02:03",
                );
                None
            }
            Err(e) => {
                self.error(
                    field,
                    e.to_string(),
                    "write the board's own MAC, from its label or `ip link` on it (e.g. dc:a6:32:01:02:03)",
                );
                None
            }
        }
    }

    /// The board serial, lower-cased.
    fn node_serial(
        &mut self,
        field: FieldPath,
        name: &str,
        written: Option<&str>,
        platform: Option<Platform>,
        taken: &mut Taken,
    ) -> Option<String> {
        let s = written?;
        let normalized = s.to_ascii_lowercase();
        // A Pi's serial is the device tree's hex digits; an x86 machine's the SMBIOS system
        // serial (letters and digits: a Mac Mini's is Apple's), which the agent reads from
        // /sys/class/dmi/id/product_serial.
        let dmi = platform.is_some_and(|p| !p.is_raspberry_pi());
        let valid = if dmi {
            normalized.len() <= 64
                && normalized
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        } else {
            normalized.chars().all(|c| c.is_ascii_hexdigit())
        };
        if normalized.is_empty() || !valid {
            let help = if dmi {
                "use the machine's serial as `cat /sys/class/dmi/id/product_serial` prints it (letters, digits, - . _)"
            } else {
                "use the hex digits of /proc/device-tree/serial-number, e.g. 10000000abcdef01"
            };
            self.error(field, format!("`{s}` is not a board serial"), help);
        } else if let Some(other) = taken.serials.get(&normalized) {
            self.error(
                field,
                format!("serial {normalized} is already used by node `{other}`"),
                "each board has its own serial",
            );
        } else {
            taken.serials.insert(normalized.clone(), name.to_string());
        }
        Some(normalized)
    }

    fn node_config_txt(&mut self, name: &str, raw: &RawNode, platform: Option<Platform>) {
        if let Some(platform) = platform.filter(|p| !p.is_raspberry_pi()) {
            if !raw.config_txt.is_empty() {
                self.error(
                    p(&["nodes", name, "config_txt"]),
                    format!(
                        "node `{name}` is {}: it boots through UEFI and has no config.txt",
                        platform.name()
                    ),
                    "remove config_txt from this node (config.txt lines are for Raspberry Pi nodes)",
                );
                return;
            }
        }
        for (i, line) in raw.config_txt.iter().enumerate() {
            if line.chars().count() > CONFIG_TXT_MAX_LINE {
                self.error(
                    p(&["nodes", name, "config_txt", &i.to_string()]),
                    format!(
                        "config.txt line is {} characters; the firmware silently cuts lines after {CONFIG_TXT_MAX_LINE}",
                        line.chars().count()
                    ),
                    "split it into several lines",
                );
            }
        }
    }

    /// A note for each role no node has.
    fn roles_without_nodes(&mut self) {
        for (name, role) in &self.raw.roles {
            if !self.raw.nodes.values().any(|n| &n.role == name) {
                self.diagnostics.push(
                    Diagnostic::note(
                        self.file,
                        p(&["roles", name]),
                        format!("role `{name}` has no nodes; no image is built for it"),
                    )
                    .help(format!(
                        "assign it to a node with role = \"{name}\" or remove it (profile `{}`)",
                        role.profile
                    )),
                );
            }
        }
    }
}
