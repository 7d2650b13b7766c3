//! Network values of the model: IPv4 subnets and MAC addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 subnet in CIDR form, normalized to its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    pub fn network(self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(self) -> u8 {
        self.prefix_len
    }

    fn mask(self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// Whether `address` is a usable host address of this subnet (not the
    /// network or broadcast address).
    pub fn contains_host(self, address: Ipv4Addr) -> bool {
        let a = u32::from(address);
        a & self.mask() == u32::from(self.network)
            && (self.prefix_len >= 31 || (address != self.network && address != self.broadcast()))
    }

    /// The first usable host address, for help texts.
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Why a subnet did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetParseError {
    #[error("expected CIDR form like 192.168.188.0/24")]
    Form,
    #[error("the prefix length must be 8 to 30")]
    Prefix,
    #[error("host bits are set; the network address is {0}")]
    HostBits(Ipv4Addr),
}

impl FromStr for Ipv4Net {
    type Err = NetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or(NetParseError::Form)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| NetParseError::Form)?;
        let prefix_len: u8 = len.parse().map_err(|_| NetParseError::Form)?;
        if !(8..=30).contains(&prefix_len) {
            return Err(NetParseError::Prefix);
        }
        let net = Ipv4Net {
            network: addr,
            prefix_len,
        };
        let normalized = Ipv4Addr::from(u32::from(addr) & net.mask());
        if normalized != addr {
            return Err(NetParseError::HostBits(normalized));
        }
        Ok(net)
    }
}

/// A MAC address, stored lower-case and colon-separated as Linux shows it
/// in /sys/class/net/*/address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(String);

impl MacAddr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MacAddr {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6
            || parts
                .iter()
                .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(());
        }
        Ok(MacAddr(parts.join(":").to_ascii_lowercase()))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is a valid RFC 1123 host label: 1–63 characters of
/// letters, digits and hyphens, not starting or ending with a hyphen.
pub fn is_host_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A suggestion for a bad host label: lower-case, other characters replaced
/// by hyphens.
pub fn suggest_host_label(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let mut s: String = trimmed.chars().take(63).collect();
    if s.is_empty() {
        s = "node".into();
    }
    s
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parsing_and_membership() {
        let net: Ipv4Net = "192.168.188.0/24".parse().expect("valid");
        assert!(net.contains_host("192.168.188.2".parse().expect("ip")));
        assert!(!net.contains_host("192.168.188.255".parse().expect("ip")));
        assert!(!net.contains_host("192.168.189.2".parse().expect("ip")));
        assert_eq!(
            "192.168.188.1/24".parse::<Ipv4Net>(),
            Err(NetParseError::HostBits(
                "192.168.188.0".parse().expect("ip")
            ))
        );
        assert_eq!("10.0.0.0".parse::<Ipv4Net>(), Err(NetParseError::Form));
    }

    #[test]
    fn mac_and_labels() {
        let mac: MacAddr = "DC-A6-32-00-00-01".parse().expect("mac");
        assert_eq!(mac.as_str(), "dc:a6:32:00:00:01");
        assert!("dc:a6:32:00:00".parse::<MacAddr>().is_err());
        assert!(is_host_label("worker-1"));
        assert!(!is_host_label("worker_1"));
        assert!(!is_host_label("-worker"));
        assert_eq!(suggest_host_label("Worker_1"), "worker-1");
    }
}
