//! Network values of the model: IPv4 subnets and MAC addresses. Host names
//! and DNS labels follow the agent's rule, `pibake_firstboot::hostname`.

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

    /// Whether `address` is in this subnet, network and broadcast address included.
    pub fn contains(self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
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

/// Why a MAC address is not one a node's NIC can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("expected six hex pairs like dc:a6:32:01:02:03")]
    Form,
    /// The I/G bit (lowest bit of the first octet) is set: a group address.
    #[error("{0} is a multicast address (the I/G bit, the lowest bit of its first octet, is set); a NIC's own address is unicast")]
    Multicast(String),
    #[error("{0} is the all-zero address, which no NIC has; a NIC's own address is unicast")]
    Zero(String),
}

impl FromStr for MacAddr {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6
            || parts
                .iter()
                .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(MacError::Form);
        }
        let octets: Vec<u8> = parts
            .iter()
            .map(|p| u8::from_str_radix(p, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| MacError::Form)?;
        let text = parts.join(":").to_ascii_lowercase();
        if octets.iter().all(|o| *o == 0) {
            return Err(MacError::Zero(text));
        }
        if octets[0] & 1 == 1 {
            return Err(MacError::Multicast(text));
        }
        Ok(MacAddr(text))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
    fn macs_are_unicast_and_not_zero() {
        let mac: MacAddr = "DC-A6-32-00-00-01".parse().expect("mac");
        assert_eq!(mac.as_str(), "dc:a6:32:00:00:01");
        assert_eq!("dc:a6:32:00:00".parse::<MacAddr>(), Err(MacError::Form));
        assert_eq!("dc:a6:32:00:00:0g".parse::<MacAddr>(), Err(MacError::Form));
        assert_eq!(
            "01:00:5E:00:00:FB".parse::<MacAddr>(),
            Err(MacError::Multicast("01:00:5e:00:00:fb".into()))
        );
        assert_eq!(
            "ff:ff:ff:ff:ff:ff".parse::<MacAddr>(),
            Err(MacError::Multicast("ff:ff:ff:ff:ff:ff".into()))
        );
        assert_eq!(
            "00-00-00-00-00-00".parse::<MacAddr>(),
            Err(MacError::Zero("00:00:00:00:00:00".into()))
        );
        // Locally administered unicast (QEMU's 52:54:00, 02:…) is a NIC's own address.
        assert!("02:00:00:00:00:01".parse::<MacAddr>().is_ok());
        assert!("52:54:00:12:34:56".parse::<MacAddr>().is_ok());
    }
}
