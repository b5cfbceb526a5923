//! IPv4 subnets and port forwards, as definitions write them and plans record them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 address with a prefix length: `10.123.1.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { address, prefix })
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The subnet itself: the address with its host bits cleared.
    pub fn network(self) -> Self {
        Self {
            address: Ipv4Addr::from(u32::from(self.address) & self.mask()),
            prefix: self.prefix,
        }
    }

    pub fn contains(self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.address) & self.mask()
    }

    pub fn overlaps(self, other: Self) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if shorter == self { other } else { self };
        shorter.contains(longer.address)
    }

    /// The `n`th address of the subnet (0 is the subnet's own address).
    pub fn nth(self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network().address) + n))
    }

    /// Addresses a machine may have: not the subnet's own, not its broadcast (below /31).
    pub fn host_addresses(self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        let (first, last) = if self.prefix >= 31 {
            (0, size - 1)
        } else {
            (1, size - 2)
        };
        let base = u64::from(u32::from(self.network().address));
        (first..=last).filter_map(move |n| u32::try_from(base + n).ok().map(Ipv4Addr::from))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no prefix length (write it like 10.123.1.5/24)"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{address}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{prefix}` is not a prefix length (0 to 32)"))?;
        Ok(Self { address, prefix })
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A run of ports, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    /// How many ports: never 0.
    fn count(self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for Ports {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` is not a port (1 to 65535)"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if last < first {
            return Err(format!("the range `{s}` ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

/// The most ports one forward may carry: each is a rule of its own.
pub const MAX_FORWARD_PORTS: u32 = 1024;

/// `[HOSTADDR:]HOSTPORT:PORT[/tcp|udp]`, podman's `--publish` without the address-less
/// short form: the host's port or range, to the machine's port or range of the same length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortForward {
    pub proto: Proto,
    /// Only connections to this host address; `None`: any of the host's addresses.
    pub host_address: Option<Ipv4Addr>,
    pub host_ports: Ports,
    pub ports: Ports,
}

impl PortForward {
    /// Each host port and the machine's port it goes to.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> {
        self.host_ports.iter().zip(self.ports.iter())
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(address) = self.host_address {
            write!(f, "{address}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_ports,
            self.ports,
            self.proto.name()
        )
    }
}

impl FromStr for PortForward {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, proto) = match s.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Proto::Tcp),
            Some((rest, "udp")) => (rest, Proto::Udp),
            Some((_, other)) => return Err(format!("unknown protocol `{other}` (tcp or udp)")),
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_address, host, inside) = match parts.as_slice() {
            [host, inside] => (None, *host, *inside),
            [address, host, inside] => {
                let address: Ipv4Addr = address
                    .parse()
                    .map_err(|_| format!("`{address}` is not an IPv4 address of the host"))?;
                (Some(address), *host, *inside)
            }
            _ => {
                return Err(format!(
                    "`{s}` is not a forward: write [HOSTADDR:]HOSTPORT:PORT[/tcp|udp], \
                     e.g. \"8080:80\""
                ));
            }
        };
        let host_ports: Ports = host.parse()?;
        let ports: Ports = inside.parse()?;
        if host_ports.count() != ports.count() {
            return Err(format!(
                "the host's range {host_ports} and the machine's {ports} differ in length"
            ));
        }
        if host_ports.count() > MAX_FORWARD_PORTS {
            return Err(format!(
                "{host_ports} is {} ports; a forward carries at most {MAX_FORWARD_PORTS}",
                host_ports.count()
            ));
        }
        Ok(Self {
            proto,
            host_address,
            host_ports,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let net: Ipv4Net = "10.123.1.5/24".parse().unwrap();
        assert_eq!(net.network().to_string(), "10.123.1.0/24");
        assert!(net.contains("10.123.1.200".parse().unwrap()));
        assert!(!net.contains("10.123.2.1".parse().unwrap()));
        let pool: Ipv4Net = "10.123.0.0/16".parse().unwrap();
        assert!(pool.overlaps(net) && net.overlaps(pool));
        assert!(!net.overlaps("10.123.2.0/30".parse().unwrap()));
        let p30: Ipv4Net = "10.123.0.4/30".parse().unwrap();
        let hosts: Vec<String> = p30.host_addresses().map(|a| a.to_string()).collect();
        assert_eq!(hosts, ["10.123.0.5", "10.123.0.6"]);
        assert!("10.1.1.1".parse::<Ipv4Net>().is_err());
        assert!("10.1.1.1/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn forwards() {
        let f: PortForward = "8080:80".parse().unwrap();
        assert_eq!(f.to_string(), "8080:80/tcp");
        let f: PortForward = "127.0.0.1:5353:53/udp".parse().unwrap();
        assert_eq!(f.host_address, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(f.proto, Proto::Udp);
        let f: PortForward = "9000-9002:7000-7002".parse().unwrap();
        assert_eq!(
            f.pairs().collect::<Vec<_>>(),
            [(9000, 7000), (9001, 7001), (9002, 7002)]
        );
        for bad in [
            "80",
            "0:80",
            "a:80",
            "1:2:3:4",
            "80:80/sctp",
            "10-20:10-30",
            "9-1:9-1",
        ] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad}");
        }
    }
}
