//! Validation of the raw files into the typed model, collecting every
//! located finding instead of stopping at the first.

use super::raw::{RawCluster, RawProfile, RawSource};
use super::*;
use crate::diag::{Diagnostic, FieldPath, SourceFile};
use pibake_firstboot::hostname::{self, NodeName};
use pibake_inputs::sources::{Source, SourceError};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Builds a field path from string slices.
fn p(parts: &[&str]) -> FieldPath {
    parts.iter().map(|s| (*s).to_string()).collect()
}

/// Known keys of each table of the cluster file; `*` stands for a user-chosen
/// name (a node, role or VIP holder).
const CLUSTER_KEYS: &[(&[&str], &[&str])] = &[
    (
        &[],
        &[
            "format", "cluster", "network", "roles", "nodes", "vip", "time", "swarm", "button",
            "image",
        ],
    ),
    (
        &["cluster"],
        &["name", "domain", "timezone", "suite", "kernel", "admin"],
    ),
    (&["cluster", "admin"], &["user", "ssh_authorized_keys"]),
    (
        &["network"],
        &[
            "subnet",
            "gateway",
            "dns",
            "interface",
            "dhcp_range",
            "wifi",
        ],
    ),
    (&["network", "dhcp_range"], &["start", "end"]),
    (&["network", "wifi"], &["ssid", "country"]),
    (&["roles", "*"], &["profile"]),
    (
        &["nodes", "*"],
        &["role", "platform", "address", "mac", "serial", "config_txt"],
    ),
    (
        &["vip"],
        &[
            "address",
            "virtual_router_id",
            "preempt",
            "advert_int",
            "holders",
        ],
    ),
    (&["time"], &["gps", "upstream", "serve_subnet", "gate"]),
    (&["time", "gps"], &["node", "uart", "pps_gpio"]),
    (
        &["time", "gate"],
        &["max_offset_ms", "max_root_distance_ms", "wait_seconds"],
    ),
    (&["swarm"], &["managers", "join", "join_wait_seconds"]),
    (
        &["button"],
        &["enabled", "gpio", "active_low", "pull", "debounce_ms"],
    ),
    (&["image"], &["table", "boot_size_mib", "root_headroom_mib"]),
];

const PROFILE_KEYS: &[(&[&str], &[&str])] = &[
    (
        &[],
        &[
            "format",
            "description",
            "include",
            "platforms",
            "packages",
            "overlays",
            "services",
            "config_txt",
            "own_rootfs",
            "sources",
        ],
    ),
    (
        &["sources", "*"],
        &[
            "name",
            "uri",
            "suite",
            "components",
            "keyring",
            "trusted",
            "pin_priority",
        ],
    ),
];

fn known_keys(
    table: &'static [(&'static [&'static str], &'static [&'static str])],
    parent: &[String],
) -> Option<&'static [&'static str]> {
    table.iter().find_map(|(pattern, keys)| {
        (pattern.len() == parent.len()
            && pattern
                .iter()
                .zip(parent)
                .all(|(pat, part)| *pat == "*" || pat == part))
        .then_some(*keys)
    })
}

fn serde_path(path: &serde_ignored::Path<'_>, out: &mut FieldPath) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            serde_path(parent, out);
            out.push(index.to_string());
        }
        P::Map { parent, key } => {
            serde_path(parent, out);
            out.push(key.clone());
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            serde_path(parent, out)
        }
    }
}

/// Edit distance, for "did you mean" hints.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

/// Parses a TOML file into `T`, reporting a syntax or type error (located)
/// and every unknown key (located, with the keys that would be right).
fn parse_file<T: DeserializeOwned>(
    file: &SourceFile,
    keys: &'static [(&'static [&'static str], &'static [&'static str])],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<T> {
    let deserializer = match toml::Deserializer::parse(&file.text) {
        Ok(d) => d,
        Err(e) => {
            diagnostics.push(
                Diagnostic::error(
                    &file.path,
                    vec![],
                    format!("not valid TOML: {}", e.message()),
                )
                .with_span(e.span())
                .help("fix the syntax at the marked place"),
            );
            return None;
        }
    };
    let mut unknown: Vec<FieldPath> = Vec::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(deserializer, |path| {
        let mut out = Vec::new();
        serde_path(&path, &mut out);
        unknown.push(out);
    });
    for path in &unknown {
        let Some((key, parent)) = path.split_last() else {
            continue;
        };
        let diagnostic =
            Diagnostic::error(&file.path, path.clone(), format!("unknown key `{key}`"));
        let diagnostic = match known_keys(keys, parent) {
            Some(known) => {
                let list = known.join(", ");
                match closest(key, known.iter().copied()) {
                    Some(best) => {
                        diagnostic.help(format!("did you mean `{best}`? keys allowed here: {list}"))
                    }
                    None => diagnostic.help(format!("keys allowed here: {list}")),
                }
            }
            None => diagnostic.help("remove it: this table takes no such key"),
        };
        diagnostics.push(diagnostic);
    }
    match parsed {
        Ok(value) => Some(value),
        Err(e) => {
            diagnostics.push(
                Diagnostic::error(&file.path, vec![], e.message().to_string())
                    .with_span(e.span())
                    .help("see examples/lab/cluster.toml for the expected form"),
            );
            None
        }
    }
}

/// Validates a cluster file and the profiles it names.
pub(super) fn check(file: SourceFile, profiles_dir: &Path, overlays_dir: &Path) -> Checked {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    let raw: Option<RawCluster> = parse_file(&file, CLUSTER_KEYS, &mut diagnostics);
    let cluster = raw.and_then(|raw| {
        let mut v = Validator {
            file: &file.path,
            raw: &raw,
            diagnostics: &mut diagnostics,
            profile_files: &mut files,
            profiles_dir,
            overlays_dir,
            profile_cache: BTreeMap::new(),
            source_defs: BTreeMap::new(),
        };
        v.run()
    });
    files.insert(0, file);
    // Profiles included by several roles report the same finding once.
    let mut seen = Vec::new();
    diagnostics.retain(|d| {
        if seen.contains(d) {
            false
        } else {
            seen.push(d.clone());
            true
        }
    });
    let cluster = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        cluster
    };
    Checked {
        cluster,
        diagnostics,
        files,
    }
}

struct Validator<'a> {
    file: &'a Path,
    raw: &'a RawCluster,
    diagnostics: &'a mut Vec<Diagnostic>,
    profile_files: &'a mut Vec<SourceFile>,
    profiles_dir: &'a Path,
    overlays_dir: &'a Path,
    profile_cache: BTreeMap<String, Option<(PathBuf, RawProfile)>>,
    /// Every profile source seen so far by name: its definition, file and index.
    source_defs: BTreeMap<String, (Source, PathBuf, usize)>,
}

impl Validator<'_> {
    fn error(&mut self, field: FieldPath, message: impl Into<String>, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(self.file, field, message).help(help));
    }

    fn warning(&mut self, field: FieldPath, message: impl Into<String>, help: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::warning(self.file, field, message).help(help));
    }

    fn address(
        &mut self,
        field: FieldPath,
        value: &str,
        subnet: Option<Ipv4Net>,
    ) -> Option<Ipv4Addr> {
        let Ok(address) = value.parse::<Ipv4Addr>() else {
            self.error(
                field,
                format!("`{value}` is not an IPv4 address"),
                "write four decimal numbers like 192.168.188.21",
            );
            return None;
        };
        if let Some(subnet) = subnet {
            if !subnet.contains_host(address) {
                self.error(
                    field,
                    format!("{address} is outside the subnet {subnet}"),
                    format!(
                        "use a host address in {subnet} (from {} to {}, excluding network and broadcast)",
                        subnet.first_host(),
                        Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
                    ),
                );
            }
        }
        Some(address)
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
        let problem = if address.is_unspecified() || address.octets()[0] == 0 {
            Some("is not an address a host can have (0.0.0.0/8 means \"this host\")".to_string())
        } else if address.is_broadcast() {
            Some("is the limited broadcast address".to_string())
        } else if address.is_multicast() {
            Some("is a multicast address; a resolver is unicast".to_string())
        } else if address.octets()[0] >= 240 {
            Some("is in the reserved range 240.0.0.0/4".to_string())
        } else if let Some(net) = subnet.filter(|n| n.contains(address)) {
            if address == net.network() {
                Some(format!("is the network address of the subnet {net}"))
            } else if address == net.broadcast() {
                Some(format!("is the broadcast address of the subnet {net}"))
            } else {
                None
            }
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.error(field, format!("{address} {problem}"), help);
                None
            }
            None => {
                if address.is_loopback() {
                    self.warning(
                        field,
                        format!("{address} is each node itself: names resolve only where a DNS server runs on the node"),
                        help,
                    );
                }
                Some(address)
            }
        }
    }

    fn run(&mut self) -> Option<Cluster> {
        let raw = self.raw;
        if raw.format != FORMAT {
            self.error(
                p(&["format"]),
                format!("format {} is not known to this pibake", raw.format),
                format!("write `format = {FORMAT}`"),
            );
        }
        if !hostname::is_dns_label(&raw.cluster.name) {
            self.error(
                p(&["cluster", "name"]),
                format!("`{}` is not a valid RFC 1123 label", raw.cluster.name),
                format!(
                    "use letters, digits and hyphens, e.g. `{}`",
                    hostname::suggest(&raw.cluster.name)
                ),
            );
        }
        if !hostname::is_dns_name(&raw.cluster.domain) {
            self.error(
                p(&["cluster", "domain"]),
                format!("`{}` is not a valid DNS domain", raw.cluster.domain),
                "use dot-separated RFC 1123 labels, e.g. `lab.internal`",
            );
        }
        if !valid_timezone(&raw.cluster.timezone) {
            self.error(
                p(&["cluster", "timezone"]),
                format!("`{}` is not a tz database name", raw.cluster.timezone),
                "use a name like `Europe/Berlin` or `UTC`",
            );
        }
        let kernel = match raw.cluster.kernel.as_str() {
            "debian" => KernelSource::Debian,
            "raspberrypi" => KernelSource::Raspberrypi,
            other => {
                self.error(
                    p(&["cluster", "kernel"]),
                    format!("unknown kernel source `{other}`"),
                    "use `debian` or `raspberrypi`",
                );
                KernelSource::Debian
            }
        };
        if !hostname::is_dns_label(&raw.cluster.admin.user)
            || raw
                .cluster
                .admin
                .user
                .starts_with(|c: char| c.is_ascii_digit())
        {
            self.error(
                p(&["cluster", "admin", "user"]),
                format!("`{}` is not a valid user name", raw.cluster.admin.user),
                "use lower-case letters, digits and hyphens, starting with a letter",
            );
        }
        for (i, key) in raw.cluster.admin.ssh_authorized_keys.iter().enumerate() {
            let field = p(&["cluster", "admin", "ssh_authorized_keys", &i.to_string()]);
            if key.contains("PRIVATE KEY") {
                self.error(
                    field,
                    "this is a private key; images must never carry secrets",
                    "put the public key (the .pub file's one line) here",
                );
            } else if !is_public_key(key) {
                self.error(
                    field,
                    "not an OpenSSH public key",
                    "use one line like `ssh-ed25519 AAAA... comment`",
                );
            }
        }

        let network = self.network();
        let subnet = network.as_ref().map(|n| n.subnet);
        let profiles = self.profiles();
        let roles = self.roles(&profiles);
        let nodes = self.nodes(subnet, &roles, network.as_ref());
        let vip = self.vip(subnet, &nodes, network.as_ref());
        let time = self.time(&nodes);
        let swarm = self.swarm(&nodes);
        let button = self.button();
        let image = self.image();
        self.config_txt(&nodes, button.as_ref(), time.as_ref());

        Some(Cluster {
            file: self.file.to_path_buf(),
            name: raw.cluster.name.clone(),
            domain: raw.cluster.domain.clone(),
            timezone: raw.cluster.timezone.clone(),
            suite: raw.cluster.suite.clone(),
            kernel,
            admin: Admin {
                user: raw.cluster.admin.user.clone(),
                ssh_authorized_keys: raw.cluster.admin.ssh_authorized_keys.clone(),
            },
            network: network?,
            roles,
            nodes,
            vip,
            time: time?,
            swarm: swarm?,
            button,
            image: image?,
            overlays_dir: self.overlays_dir.to_path_buf(),
        })
    }

    fn network(&mut self) -> Option<Network> {
        let raw = &self.raw.network;
        let subnet = match raw.subnet.parse::<Ipv4Net>() {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(
                    p(&["network", "subnet"]),
                    format!("`{}` is not a usable subnet: {e}", raw.subnet),
                    "write the network in CIDR form, e.g. 192.168.188.0/24",
                );
                None
            }
        };
        let gateway = self.address(p(&["network", "gateway"]), &raw.gateway, subnet);
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
        if !hostname::is_dns_label(&raw.interface) {
            self.error(
                p(&["network", "interface"]),
                format!("`{}` is not an interface name", raw.interface),
                "use the kernel's name of the wired interface, e.g. `eth0`",
            );
        }
        let mut dhcp_range = None;
        if let Some(range) = &raw.dhcp_range {
            let start = self.address(p(&["network", "dhcp_range", "start"]), &range.start, subnet);
            let end = self.address(p(&["network", "dhcp_range", "end"]), &range.end, subnet);
            if let (Some(s), Some(e)) = (start, end) {
                if u32::from(s) > u32::from(e) {
                    self.error(
                        p(&["network", "dhcp_range", "end"]),
                        format!("the range ends at {e}, before its start {s}"),
                        "make `end` the higher address",
                    );
                } else {
                    dhcp_range = Some((s, e));
                }
            }
        }
        let wifi = raw.wifi.as_ref().map(|w| Wifi {
            ssid: w.ssid.clone(),
            country: w.country.clone(),
        });
        if let Some(w) = &wifi {
            if w.country.len() != 2 || !w.country.chars().all(|c| c.is_ascii_uppercase()) {
                self.error(
                    p(&["network", "wifi", "country"]),
                    format!("`{}` is not an ISO 3166 country code", w.country),
                    "use two upper-case letters, e.g. `DE`",
                );
            }
        }
        Some(Network {
            subnet: subnet?,
            gateway: gateway?,
            dns,
            interface: raw.interface.clone(),
            dhcp_range,
            wifi,
        })
    }

    /// Loads every profile any role names (and what they include).
    fn profiles(&mut self) -> BTreeMap<String, Profile> {
        let mut out = BTreeMap::new();
        let names: BTreeSet<String> = self.raw.roles.values().map(|r| r.profile.clone()).collect();
        for name in names {
            if let Some(profile) = self.profile(&name) {
                out.insert(name, profile);
            }
        }
        out
    }

    fn read_profile(&mut self, name: &str) -> Option<(PathBuf, RawProfile)> {
        if let Some(cached) = self.profile_cache.get(name) {
            return cached.clone();
        }
        let result = self.read_profile_uncached(name);
        self.profile_cache.insert(name.to_string(), result.clone());
        result
    }

    fn read_profile_uncached(&mut self, name: &str) -> Option<(PathBuf, RawProfile)> {
        if !hostname::is_dns_label(name) {
            return None;
        }
        let path = self.profiles_dir.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).ok()?;
        let file = SourceFile::new(path.clone(), text);
        let raw: Option<RawProfile> = parse_file(&file, PROFILE_KEYS, self.diagnostics);
        self.profile_files.push(file);
        let raw = raw?;
        if raw.format != FORMAT {
            self.diagnostics.push(
                Diagnostic::error(
                    &path,
                    p(&["format"]),
                    format!("format {} is not known", raw.format),
                )
                .help(format!("write `format = {FORMAT}`")),
            );
        }
        Some((path, raw))
    }

    fn profile(&mut self, name: &str) -> Option<Profile> {
        let (path, raw) = self.read_profile(name)?;
        let mut profile = Profile {
            name: name.to_string(),
            file: path.clone(),
            description: raw.description.clone(),
            platforms: Vec::new(),
            packages: BTreeSet::new(),
            overlays: Vec::new(),
            services: BTreeSet::new(),
            config_txt: Vec::new(),
            own_rootfs: raw.own_rootfs,
            sources: Vec::new(),
        };
        for (i, include) in raw.include.iter().enumerate() {
            let Some((inc_path, inc)) = self.read_profile(include) else {
                self.diagnostics.push(
                    Diagnostic::error(
                        &path,
                        p(&["include", &i.to_string()]),
                        format!("profile `{include}` does not exist"),
                    )
                    .help(format!(
                        "add {}/{include}.toml or remove it from `include`",
                        shown(self.profiles_dir)
                    )),
                );
                continue;
            };
            if !inc.include.is_empty() {
                self.diagnostics.push(
                    Diagnostic::error(
                        &inc_path,
                        p(&["include"]),
                        "an included profile cannot include others",
                    )
                    .help("list its includes in the including profile instead"),
                );
            }
            self.merge_profile(&mut profile, &inc_path, &inc);
        }
        self.merge_profile(&mut profile, &path, &raw);
        profile.sources.sort_by(|a, b| a.name.cmp(&b.name));
        Some(profile)
    }

    fn merge_profile(&mut self, profile: &mut Profile, path: &Path, raw: &RawProfile) {
        for (i, platform) in raw.platforms.iter().enumerate() {
            match Platform::parse(platform) {
                Some(pl) if !profile.platforms.contains(&pl) => profile.platforms.push(pl),
                Some(_) => {}
                None => self.diagnostics.push(
                    Diagnostic::error(
                        path,
                        p(&["platforms", &i.to_string()]),
                        format!("unknown platform `{platform}`"),
                    )
                    .help(platform_help()),
                ),
            }
        }
        for (i, package) in raw.packages.iter().enumerate() {
            if !valid_package_name(package) {
                self.diagnostics.push(
                    Diagnostic::error(
                        path,
                        p(&["packages", &i.to_string()]),
                        format!("`{package}` is not a Debian package name"),
                    )
                    .help("use lower-case letters, digits, `+`, `-` and `.`"),
                );
            }
            profile.packages.insert(package.clone());
        }
        for (i, overlay) in raw.overlays.iter().enumerate() {
            if !self.overlays_dir.join(overlay).is_dir() {
                self.diagnostics.push(
                    Diagnostic::error(
                        path,
                        p(&["overlays", &i.to_string()]),
                        format!("overlay `{overlay}` does not exist"),
                    )
                    .help(format!(
                        "create {}/{overlay}/ or remove it",
                        shown(self.overlays_dir)
                    )),
                );
            }
            if !profile.overlays.contains(overlay) {
                profile.overlays.push(overlay.clone());
            }
        }
        profile.services.extend(raw.services.iter().cloned());
        for (i, line) in raw.config_txt.iter().enumerate() {
            if line.chars().count() > CONFIG_TXT_MAX_LINE {
                self.diagnostics.push(
                    Diagnostic::error(path, p(&["config_txt", &i.to_string()]), format!(
                        "config.txt line is {} characters; the firmware silently cuts lines after {CONFIG_TXT_MAX_LINE}",
                        line.chars().count()
                    ))
                    .help("split it into several lines (e.g. one dtparam= per line)"),
                );
            }
            profile.config_txt.push(line.clone());
        }
        for (i, raw_source) in raw.sources.iter().enumerate() {
            let source = self.source(path, i, raw_source);
            if !profile.sources.iter().any(|s| s.name == source.name) {
                profile.sources.push(source);
            }
        }
    }

    /// Checks `[[sources]]` entry `index` of the profile at `path` and returns it
    /// as an apt source (keyring made absolute, relative to the profile's directory).
    fn source(&mut self, path: &Path, index: usize, raw: &RawSource) -> Source {
        let i = index.to_string();
        let field = |k: &str| p(&["sources", &i, k]);
        let dir = path.parent().unwrap_or(Path::new(""));
        let keyring = raw.keyring.as_ref().map(|k| {
            let joined = dir.join(k);
            std::path::absolute(&joined).unwrap_or(joined)
        });
        let mut findings: Vec<(FieldPath, String, String)> = Vec::new();
        let pin_priority = match raw.pin_priority.map(i32::try_from) {
            None => None,
            Some(Ok(pin)) => Some(pin),
            Some(Err(_)) => {
                findings.push(pin_finding(
                    field("pin_priority"),
                    raw.pin_priority.unwrap_or(0),
                ));
                None
            }
        };
        let source = Source {
            name: raw.name.clone(),
            uri: raw.uri.clone(),
            suite: raw.suite.clone(),
            components: raw.components.clone(),
            keyring: keyring.clone(),
            trusted: raw.trusted,
            pin_priority,
        };
        for problem in source.problems() {
            findings.push(match problem {
                SourceError::BadName(name) => (
                    field("name"),
                    format!("`{name}` is not a source name"),
                    "use lower-case letters, digits, `-` and `.`, e.g. `raspberrypi`".into(),
                ),
                SourceError::BadField {
                    what: "component",
                    value,
                    ..
                } => {
                    let at = raw.components.iter().position(|c| *c == value).unwrap_or(0);
                    (
                        p(&["sources", &i, "components", &at.to_string()]),
                        format!("component `{value}` is empty or has spaces, quotes or brackets"),
                        "write one component per string, e.g. components = [\"main\"]".into(),
                    )
                }
                SourceError::BadField { what, .. } => {
                    let value = match what {
                        "uri" => raw.uri.as_str(),
                        "suite" => raw.suite.as_str(),
                        _ => raw.keyring.as_deref().unwrap_or(""),
                    };
                    (
                        field(what),
                        format!("{what} `{value}` is empty or has spaces, quotes or brackets"),
                        match what {
                            "uri" => "write the archive's base URI, e.g. `https://archive.example.org/debian`",
                            "suite" => "write one suite, e.g. `trixie`, or `./` for a flat repository",
                            _ => "use a keyring path without spaces, quotes or brackets",
                        }
                        .into(),
                    )
                }
                SourceError::BadScheme { uri, .. } => (
                    field("uri"),
                    format!("`{uri}` is not an http://, https:// or file:/ URI"),
                    "write the archive's base URI, e.g. `https://archive.example.org/debian` or `file:/srv/repo`".into(),
                ),
                SourceError::Layout { suite, flat: true, .. } => (
                    field("components"),
                    format!("suite `{suite}` is a flat repository (it ends in `/`), which has no components"),
                    "remove `components`, or name a suite like `trixie`".into(),
                ),
                SourceError::Layout { suite, flat: false, .. } => (
                    field("suite"),
                    format!("suite `{suite}` needs components"),
                    "add components = [\"main\"], or write suite = \"./\" for a flat repository".into(),
                ),
                SourceError::Unverifiable { .. } => (
                    p(&["sources", &i]),
                    "neither `keyring` nor `trusted = true`: apt could not check this source's index".into(),
                    "add keyring = \"<file>.gpg\" (the archive's signing key, relative to this profile); trusted = true is for a local repository you control".into(),
                ),
                SourceError::BadPin { priority, .. } => pin_finding(field("pin_priority"), priority.into()),
                other => (p(&["sources", &i]), other.to_string(), "fix this source".into()),
            });
        }
        if raw.name == HOST_SOURCE {
            findings.push((
                field("name"),
                format!("the source name `{HOST_SOURCE}` is reserved for the host's Debian mirror"),
                "name the source after its archive, e.g. `raspberrypi`; the Debian mirror always comes from the host's apt sources".into(),
            ));
        }
        if let (Some(written), Some(resolved)) = (&raw.keyring, &keyring) {
            if !resolved.is_file() || written.is_empty() {
                findings.push((
                    field("keyring"),
                    if written.is_empty() {
                        "the keyring path is empty".to_string()
                    } else {
                        format!("keyring `{written}` does not exist")
                    },
                    format!(
                        "put the archive's signing key (.gpg or .asc) at {}; the path is relative to the profile's directory",
                        shown(resolved)
                    ),
                ));
            }
        }
        match self.source_defs.get(&source.name) {
            None => {
                self.source_defs.insert(
                    source.name.clone(),
                    (source.clone(), path.to_path_buf(), index),
                );
            }
            Some((_, file, at)) if file == path && *at == index => {}
            Some((_, file, at)) if file == path => findings.push((
                field("name"),
                format!("source `{}` is defined twice in this profile", source.name),
                format!("keep one of sources[{at}] and sources[{index}]"),
            )),
            Some((other, file, _)) if *other != source => {
                let differs = differing_fields(other, &source);
                findings.push((
                    field("name"),
                    format!(
                        "source `{}` is defined differently in {} ({})",
                        source.name,
                        shown(file),
                        differs.join(", ")
                    ),
                    "define it once, in a profile both include, or make the two definitions identical".into(),
                ));
            }
            Some(_) => {}
        }
        for (field, message, help) in findings {
            self.diagnostics
                .push(Diagnostic::error(path, field, message).help(help));
        }
        source
    }

    fn roles(&mut self, profiles: &BTreeMap<String, Profile>) -> BTreeMap<String, Role> {
        let mut roles = BTreeMap::new();
        for (name, role) in &self.raw.roles {
            if !hostname::is_dns_label(name) {
                self.error(
                    p(&["roles", name]),
                    format!("role name `{name}` is not a valid label"),
                    format!("use e.g. `{}`", hostname::suggest(name)),
                );
            }
            match profiles.get(&role.profile) {
                Some(profile) => {
                    roles.insert(
                        name.clone(),
                        Role {
                            name: name.clone(),
                            profile: profile.clone(),
                        },
                    );
                }
                None => {
                    // A profile that exists but failed to parse is already reported.
                    let file = self.profiles_dir.join(format!("{}.toml", role.profile));
                    if self
                        .diagnostics
                        .iter()
                        .any(|d| d.file == file && d.is_error())
                    {
                        continue;
                    }
                    let known = list_profiles(self.profiles_dir);
                    self.error(
                        p(&["roles", name, "profile"]),
                        format!("profile `{}` does not exist", role.profile),
                        format!(
                            "profiles in {}: {}",
                            shown(self.profiles_dir),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        roles
    }

    fn nodes(
        &mut self,
        subnet: Option<Ipv4Net>,
        roles: &BTreeMap<String, Role>,
        network: Option<&Network>,
    ) -> BTreeMap<String, Node> {
        let mut nodes = BTreeMap::new();
        let mut by_address: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        let mut by_mac: BTreeMap<MacAddr, String> = BTreeMap::new();
        let mut by_serial: BTreeMap<String, String> = BTreeMap::new();
        if self.raw.nodes.is_empty() {
            self.error(
                p(&["nodes"]),
                "the cluster has no nodes",
                "add [nodes.<name>] tables",
            );
        }
        for (name, raw) in &self.raw.nodes {
            let field = |k: &str| p(&["nodes", name, k]);
            // The agent's own rule: the node's name becomes its host name.
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
            let role_known = self.raw.roles.contains_key(&raw.role);
            if !role_known {
                let known: Vec<&str> = self.raw.roles.keys().map(String::as_str).collect();
                let hint = closest(&raw.role, known.iter().copied())
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                self.error(
                    field("role"),
                    format!("role `{}` does not exist", raw.role),
                    format!("{hint}roles declared under [roles]: {}", known.join(", ")),
                );
            }
            let platform = Platform::parse(&raw.platform);
            match platform {
                None => self.error(
                    field("platform"),
                    format!("unknown platform `{}`", raw.platform),
                    platform_help(),
                ),
                Some(platform) => {
                    if let Some(role) = roles.get(&raw.role) {
                        let profile = &role.profile;
                        if !profile.platforms.is_empty() && !profile.platforms.contains(&platform) {
                            let names: Vec<&str> =
                                profile.platforms.iter().map(|p| p.name()).collect();
                            self.error(
                                field("platform"),
                                format!(
                                    "platform `{}` cannot run the packages of profile `{}` (role `{}`)",
                                    platform.name(),
                                    profile.name,
                                    raw.role
                                ),
                                format!("profile `{}` runs on: {}", profile.name, names.join(", ")),
                            );
                        }
                    }
                }
            }
            let address = self.address(field("address"), &raw.address, subnet);
            if let Some(a) = address {
                if let Some(other) = by_address.get(&a) {
                    self.error(
                        field("address"),
                        format!("address {a} is already used by node `{other}`"),
                        "give every node its own address",
                    );
                } else {
                    by_address.insert(a, name.clone());
                }
                if let Some(net) = network {
                    if a == net.gateway {
                        self.error(
                            field("address"),
                            format!("address {a} is the gateway's"),
                            "give the node an address of its own",
                        );
                    }
                    if let Some((s, e)) = net.dhcp_range {
                        if in_range(a, s, e) {
                            self.error(
                                field("address"),
                                format!("address {a} is inside the DHCP range {s}-{e}"),
                                "use a static address outside the DHCP range",
                            );
                        }
                    }
                }
            }
            let mac = match &raw.mac {
                None => None,
                Some(m) => match m.parse::<MacAddr>() {
                    Ok(mac) => {
                        if let Some(other) = by_mac.get(&mac) {
                            self.error(
                                field("mac"),
                                format!("MAC {mac} is already used by node `{other}`"),
                                "each board has its own MAC; copy it from the board's label or `ip link`",
                            );
                        } else {
                            by_mac.insert(mac.clone(), name.clone());
                        }
                        Some(mac)
                    }
                    Err(net::MacError::Form) => {
                        self.error(
                            field("mac"),
                            format!("`{m}` is not a MAC address"),
                            "write six hex pairs like dc:a6:32:01:02:03",
                        );
                        None
                    }
                    Err(e) => {
                        self.error(
                            field("mac"),
                            e.to_string(),
                            "write the board's own MAC, from its label or `ip link` on it (e.g. dc:a6:32:01:02:03)",
                        );
                        None
                    }
                },
            };
            let serial = match &raw.serial {
                None => None,
                Some(s) => {
                    let normalized = s.to_ascii_lowercase();
                    if normalized.is_empty() || !normalized.chars().all(|c| c.is_ascii_hexdigit()) {
                        self.error(
                            field("serial"),
                            format!("`{s}` is not a board serial"),
                            "use the hex digits of /proc/device-tree/serial-number, e.g. 10000000abcdef01",
                        );
                    } else if let Some(other) = by_serial.get(&normalized) {
                        self.error(
                            field("serial"),
                            format!("serial {normalized} is already used by node `{other}`"),
                            "each board has its own serial",
                        );
                    } else {
                        by_serial.insert(normalized.clone(), name.clone());
                    }
                    Some(normalized)
                }
            };
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
            if let (Some(platform), Some(address)) = (platform, address) {
                nodes.insert(
                    name.clone(),
                    Node {
                        name: name.clone(),
                        role: raw.role.clone(),
                        platform,
                        address,
                        mac,
                        serial,
                        config_txt: raw.config_txt.clone(),
                    },
                );
            }
        }
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
        nodes
    }

    fn vip(
        &mut self,
        subnet: Option<Ipv4Net>,
        nodes: &BTreeMap<String, Node>,
        network: Option<&Network>,
    ) -> Option<Vip> {
        let raw = self.raw.vip.as_ref()?;
        let address = self.address(p(&["vip", "address"]), &raw.address, subnet);
        if let Some(a) = address {
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
        let vrid = match u8::try_from(raw.virtual_router_id) {
            Ok(v) if v >= 1 => v,
            _ => {
                self.error(
                    p(&["vip", "virtual_router_id"]),
                    format!("{} is not a VRRP router id", raw.virtual_router_id),
                    "use 1 to 255, the same on all holders and unique on the segment",
                );
                1
            }
        };
        if raw.advert_int == 0 || raw.advert_int > 255 {
            self.error(
                p(&["vip", "advert_int"]),
                format!("advert_int {} is out of range", raw.advert_int),
                "use 1 to 255 seconds (1 is usual)",
            );
        }
        let mut holders = BTreeMap::new();
        let mut by_priority: BTreeMap<u32, String> = BTreeMap::new();
        if raw.holders.is_empty() {
            self.error(
                p(&["vip", "holders"]),
                "the VIP has no holders",
                "list the masters: holders = { master1 = 150, master2 = 100 }",
            );
        }
        let managers = &self.raw.swarm.managers;
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
            if !managers.contains(name) {
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
                        field.clone(),
                        format!(
                            "`{name}` runs {}, where keepalived does not run",
                            node.platform.name()
                        ),
                        "hold the VIP on Linux nodes only",
                    );
                }
            }
            if !(1..=254).contains(&priority) {
                self.error(
                    field.clone(),
                    format!("priority {priority} is out of range"),
                    "use 1 to 254 (255 is reserved for the address owner)",
                );
            }
            if let Some(other) = by_priority.get(&priority) {
                self.error(
                    field.clone(),
                    format!("priority {priority} is also `{other}`'s"),
                    "give every holder a distinct priority, e.g. 150 and 100",
                );
            } else {
                by_priority.insert(priority, name.clone());
            }
            holders.insert(name.clone(), u8::try_from(priority.min(254)).unwrap_or(254));
        }
        Some(Vip {
            address: address?,
            virtual_router_id: vrid,
            preempt: raw.preempt,
            advert_int: raw.advert_int,
            holders,
        })
    }

    fn time(&mut self, nodes: &BTreeMap<String, Node>) -> Option<Time> {
        let raw = &self.raw.time;
        let gps = match &raw.gps {
            None => None,
            Some(gps) => {
                match nodes.get(&gps.node) {
                    None if !self.raw.nodes.contains_key(&gps.node) => self.error(
                        p(&["time", "gps", "node"]),
                        format!("node `{}` does not exist", gps.node),
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
                if gps.uart != "uart0" {
                    self.error(
                        p(&["time", "gps", "uart"]),
                        format!("UART `{}` is not supported", gps.uart),
                        "use `uart0` (header pins 8 and 10, /dev/ttyAMA0)",
                    );
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
                Some(Gps {
                    node: gps.node.clone(),
                    uart: gps.uart.clone(),
                    pps_gpio: pin.unwrap_or(18),
                })
            }
        };
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

    fn swarm(&mut self, nodes: &BTreeMap<String, Node>) -> Option<Swarm> {
        let raw = &self.raw.swarm;
        if raw.managers.is_empty() {
            self.error(
                p(&["swarm", "managers"]),
                "no Swarm manager",
                "list at least one manager node; the first one initializes the swarm",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, manager) in raw.managers.iter().enumerate() {
            let field = p(&["swarm", "managers", &i.to_string()]);
            if !seen.insert(manager) {
                self.error(
                    field.clone(),
                    format!("`{manager}` is listed twice"),
                    "list each manager once",
                );
            }
            match nodes.get(manager) {
                None if !self.raw.nodes.contains_key(manager) => {
                    self.error(field, format!("node `{manager}` does not exist"), "name a node declared under [nodes]")
                }
                Some(node) if !node.platform.is_linux() => self.warning(
                    field,
                    format!("manager `{manager}` runs on {}, which cannot be a Swarm manager", node.platform.name()),
                    "run masters on Linux (native or a bridged VM); Docker Desktop cannot manage a swarm",
                ),
                _ => {}
            }
        }
        if raw.managers.len() == 2 {
            self.warning(
                p(&["swarm", "managers"]),
                "two Swarm managers tolerate zero failures (Raft needs a majority of 2)",
                "use three managers (e.g. add the Pi 4 aux node) to survive one failure; two give a stable address, not HA",
            );
        }
        let join = match raw.join.as_str() {
            "vip" => {
                if self.raw.vip.is_none() {
                    self.error(
                        p(&["swarm", "join"]),
                        "workers join via the VIP but there is no [vip]",
                        "add a [vip] table or use join = \"managers\"",
                    );
                }
                JoinVia::Vip
            }
            "managers" => JoinVia::Managers,
            other => {
                self.error(
                    p(&["swarm", "join"]),
                    format!("unknown join target `{other}`"),
                    "use `vip` or `managers`",
                );
                JoinVia::Vip
            }
        };
        Some(Swarm {
            managers: raw.managers.clone(),
            join,
            join_wait_seconds: raw.join_wait_seconds,
        })
    }

    fn button(&mut self) -> Option<Button> {
        let raw = &self.raw.button;
        if !raw.enabled {
            return None;
        }
        let gpio = u8::try_from(raw.gpio).ok().filter(|g| *g <= 27);
        if gpio.is_none() {
            self.error(
                p(&["button", "gpio"]),
                format!("GPIO {} is not on the header", raw.gpio),
                "use a BCM GPIO number 0-27; 3 (header pin 5) also wakes a halted Pi 4",
            );
        }
        if !["up", "down", "off"].contains(&raw.pull.as_str()) {
            self.error(
                p(&["button", "pull"]),
                format!("unknown pull `{}`", raw.pull),
                "use `up`, `down` or `off`",
            );
        }
        if raw.debounce_ms > 10_000 {
            self.error(
                p(&["button", "debounce_ms"]),
                format!("debounce of {} ms is too long", raw.debounce_ms),
                "use a few tens to hundreds of milliseconds (default 100)",
            );
        }
        Some(Button {
            gpio: gpio.unwrap_or(3),
            active_low: raw.active_low,
            pull: raw.pull.clone(),
            debounce_ms: raw.debounce_ms,
        })
    }

    fn image(&mut self) -> Option<ImageSettings> {
        let raw = &self.raw.image;
        let table = match raw.table.as_str() {
            "mbr" => TableKind::Mbr,
            "gpt" => TableKind::Gpt,
            other => {
                self.error(
                    p(&["image", "table"]),
                    format!("unknown partition table `{other}`"),
                    "use `mbr` (boots every Pi) or `gpt`",
                );
                TableKind::Mbr
            }
        };
        if raw.boot_size_mib < 64 {
            self.error(
                p(&["image", "boot_size_mib"]),
                format!(
                    "{} MiB is too small for a FAT32 boot partition",
                    raw.boot_size_mib
                ),
                "use at least 64 (256 is usual)",
            );
        }
        Some(ImageSettings {
            table,
            boot_size_mib: raw.boot_size_mib,
            root_headroom_mib: raw.root_headroom_mib,
        })
    }

    /// Checks the config.txt lines pibake itself renders for each node.
    fn config_txt(
        &mut self,
        nodes: &BTreeMap<String, Node>,
        button: Option<&Button>,
        time: Option<&Time>,
    ) {
        for node in nodes.values() {
            let gps = time
                .and_then(|t| t.gps.as_ref())
                .filter(|g| g.node == node.name);
            let lines = crate::boot::feature_lines(node.platform, button, gps);
            for line in lines {
                if line.chars().count() > CONFIG_TXT_MAX_LINE {
                    self.error(
                        p(&["button"]),
                        format!("rendered config.txt line `{line}` is over {CONFIG_TXT_MAX_LINE} characters"),
                        "shorten the options",
                    );
                }
            }
        }
        if self.raw.cluster.kernel == "debian"
            && nodes.values().any(|n| n.platform == Platform::Rpi5)
        {
            self.diagnostics.push(
                Diagnostic::note(self.file, p(&["cluster", "kernel"]), "Debian's kernel has no RP1 driver: a real Pi 5 boots without Ethernet and USB")
                    .help("for real Pi 5 boards set kernel = \"raspberrypi\" and add the Raspberry Pi archive as a profile source"),
            );
        }
    }
}

fn pin_finding(field: FieldPath, priority: i64) -> (FieldPath, String, String) {
    (
        field,
        format!("pin priority {priority} is not one apt accepts"),
        "use a non-zero number from -32768 to 32767; above Debian's 500 (e.g. 990) makes this source win".into(),
    )
}

/// The fields in which two definitions of a source differ.
fn differing_fields(a: &Source, b: &Source) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.uri != b.uri {
        out.push("uri");
    }
    if a.suite != b.suite {
        out.push("suite");
    }
    if a.components != b.components {
        out.push("components");
    }
    if a.keyring != b.keyring {
        out.push("keyring");
    }
    if a.trusted != b.trusted {
        out.push("trusted");
    }
    if a.pin_priority != b.pin_priority {
        out.push("pin_priority");
    }
    out
}

fn in_range(a: Ipv4Addr, start: Ipv4Addr, end: Ipv4Addr) -> bool {
    (u32::from(start)..=u32::from(end)).contains(&u32::from(a))
}

fn platform_help() -> String {
    let names: Vec<&str> = Platform::ALL.iter().map(|p| p.name()).collect();
    format!("platforms: {}", names.join(", "))
}

/// The form of a tz database name; [`super::tz`] checks it against tzdata.
pub(super) fn valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && !tz.starts_with('/')
        && !tz.contains("..")
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
}

fn is_public_key(key: &str) -> bool {
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-"))
        && body.starts_with("AAAA")
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
}

fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn list_profiles(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".toml").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A directory as the user would write it: relative to the current directory
/// when it is below it.
fn shown(dir: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_path_buf())
        .display()
        .to_string()
}
