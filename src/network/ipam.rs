//! Addresses of root machines with a link to the host: each machine's address and its
//! link's subnet, recorded in `MACHINES/NAME/address.json` under one lock, stable across
//! restarts, disjoint from every other machine's and from the host's own routes, and gone
//! with the machine (`mm rm` removes its directory).
//!
//! A veth machine gets a /30 of its own (the host's side is its first address, the machine
//! the second); a zone gets a /24 that its machines share (the bridge is the first address).
//! Both come from the first of [`POOLS`] that does not meet a route of the host.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::addr::Ipv4Net;
use crate::state::{MachineRecords, RecordError};

/// Where subnets come from unless the host's network.toml says otherwise, in order: blocks
/// that meet one of the host's routes are skipped, as docker and podman skip theirs.
pub const POOLS: [&str; 3] = ["10.123.0.0/16", "172.30.0.0/16", "192.168.247.0/24"];

pub fn default_pools() -> Vec<Ipv4Net> {
    POOLS.iter().filter_map(|p| p.parse().ok()).collect()
}
const VETH_PREFIX: u8 = 30;
const ZONE_PREFIX: u8 = 24;

/// Which link an address is on: a veth pair of the machine's own, or a zone's bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKey {
    Veth,
    Zone(String),
}

/// A machine's address, with its link's subnet as the prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub link: LinkKey,
    pub address: Ipv4Net,
}

impl Record {
    pub fn subnet(&self) -> Ipv4Net {
        self.address.network()
    }

    /// The host's side: the subnet's first address (the veth's host end, or the bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet().nth(1).unwrap_or(self.address.address)
    }
}

/// What a machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub link: LinkKey,
    /// `network.address`; `None`: any free one.
    pub address: Option<Ipv4Net>,
}

impl Want {
    /// Whether `record` gives what this asks for.
    pub fn met_by(&self, record: &Record) -> bool {
        record.link == self.link && self.address.is_none_or(|a| a == record.address)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("machine address records: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an address record ({why}); remove it to let mm allocate again", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("{0}")]
    Taken(String),
    #[error(
        "no free subnet of /{prefix} is left in mm's pools ({pools}): machines or the host's routes hold them all"
    )]
    Exhausted { prefix: u8, pools: String },
    #[error("zone `{zone}`'s subnet {subnet} has no free address left")]
    ZoneFull { zone: String, subnet: Ipv4Net },
}

pub struct Ipam {
    records: MachineRecords,
}

impl From<RecordError> for IpamError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Io { path, source } => Self::Io { path, source },
            RecordError::Corrupt { path, why } => Self::Corrupt { path, why },
        }
    }
}

impl Ipam {
    pub fn new(machines: impl Into<PathBuf>) -> Self {
        Self {
            records: MachineRecords::new(machines, "address.json", ".address.lock"),
        }
    }

    pub fn recorded(&self, machine: &str) -> Result<Option<Record>, IpamError> {
        Ok(self.records.read(machine)?)
    }

    /// Every other machine's record, by name.
    pub fn others(&self, machine: &str) -> Result<Vec<(String, Record)>, IpamError> {
        Ok(self.records.others(machine)?)
    }

    /// `machine`'s address: the recorded one if it still gives what `want` asks for, else
    /// a new one, recorded. The host's routes in `around` include those to mm's own links:
    /// a subnet of a machine's is skipped as taken anyway.
    pub fn allocate(
        &self,
        machine: &str,
        want: &Want,
        around: &Around<'_>,
    ) -> Result<Record, IpamError> {
        let _lock = self.records.lock()?;
        if let Some(record) = self.recorded(machine)?
            && want.met_by(&record)
        {
            return Ok(record);
        }
        let record = choose(want, &self.others(machine)?, around)?;
        self.records.write(machine, &record)?;
        Ok(record)
    }

    /// `mm rm`: the machine's address is free again.
    pub fn release(&self, machine: &str) -> Result<(), IpamError> {
        Ok(self.records.remove(machine)?)
    }
}

/// The zone's subnet, if a machine of it has an address.
pub fn zone_subnet(zone: &str, others: &[(String, Record)]) -> Option<Ipv4Net> {
    others
        .iter()
        .find(|(_, r)| r.link == LinkKey::Zone(zone.to_owned()))
        .map(|(_, r)| r.subnet())
}

/// What is around the machines' subnets: the host's routes, and the pools to take from.
#[derive(Debug, Clone)]
pub struct Around<'a> {
    pub routes: Vec<Ipv4Net>,
    pub pools: &'a [Ipv4Net],
}

/// The address `want` gets, given the other machines' records and what is around.
pub fn choose(
    want: &Want,
    others: &[(String, Record)],
    around: &Around<'_>,
) -> Result<Record, IpamError> {
    let address = if let LinkKey::Zone(zone) = &want.link
        && let Some(subnet) = zone_subnet(zone, others)
    {
        in_zone(zone, subnet, want.address, others)?
    } else {
        let taken = Taken::new(others, &around.routes);
        match want.address {
            Some(address) => taken.check(address.network()).map(|()| address)?,
            None => first_free(&want.link, &taken, around.pools)?,
        }
    };
    Ok(Record {
        link: want.link.clone(),
        address,
    })
}

/// An address in a zone that has its subnet: the one asked for, if it is free, or the
/// first free one.
fn in_zone(
    zone: &str,
    subnet: Ipv4Net,
    wanted: Option<Ipv4Net>,
    others: &[(String, Record)],
) -> Result<Ipv4Net, IpamError> {
    let holder = |a: Ipv4Addr| others.iter().find(|(_, r)| r.address.address == a);
    if let Some(address) = wanted {
        if address.network() != subnet {
            return Err(IpamError::Taken(format!(
                "zone `{zone}` has the subnet {subnet}, and {address} is not in it"
            )));
        }
        if let Some((machine, _)) = holder(address.address) {
            return Err(IpamError::Taken(format!(
                "{} is machine `{machine}`'s address",
                address.address
            )));
        }
        return Ok(address);
    }
    let gateway = subnet.nth(1);
    subnet
        .host_addresses()
        .find(|a| Some(*a) != gateway && holder(*a).is_none())
        .map(|address| Ipv4Net {
            address,
            prefix: subnet.prefix,
        })
        .ok_or_else(|| IpamError::ZoneFull {
            zone: zone.to_owned(),
            subnet,
        })
}

/// The subnets a new one must not meet: the other machines', and the host's routes (but
/// those to the machines' own subnets, which are theirs).
struct Taken<'a> {
    others: &'a [(String, Record)],
    routes: Vec<Ipv4Net>,
}

impl<'a> Taken<'a> {
    fn new(others: &'a [(String, Record)], routes: &[Ipv4Net]) -> Self {
        let ours: Vec<Ipv4Net> = others.iter().map(|(_, r)| r.subnet()).collect();
        let routes = routes
            .iter()
            .copied()
            .filter(|r| r.prefix > 0 && !ours.contains(&r.network()))
            .collect();
        Self { others, routes }
    }

    fn check(&self, subnet: Ipv4Net) -> Result<(), IpamError> {
        if let Some((machine, r)) = self
            .others
            .iter()
            .find(|(_, r)| r.subnet().overlaps(subnet))
        {
            return Err(IpamError::Taken(format!(
                "{subnet} overlaps {}, the subnet of machine `{machine}`",
                r.subnet()
            )));
        }
        if let Some(route) = self.routes.iter().find(|r| r.overlaps(subnet)) {
            return Err(IpamError::Taken(format!(
                "{subnet} overlaps the host's route to {route}"
            )));
        }
        Ok(())
    }
}

/// The second address of the first free block of the link's size in the pools.
fn first_free(link: &LinkKey, taken: &Taken<'_>, pools: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    let prefix = match link {
        LinkKey::Veth => VETH_PREFIX,
        LinkKey::Zone(_) => ZONE_PREFIX,
    };
    let size = 1u32 << (32 - prefix);
    for &pool in pools.iter().filter(|p| p.prefix <= prefix) {
        for n in 0..1u32 << (prefix - pool.prefix) {
            let Some(start) = pool.nth(n * size) else {
                break;
            };
            let block = Ipv4Net {
                address: start,
                prefix,
            };
            if taken.check(block).is_ok()
                && let Some(address) = block.nth(2)
            {
                return Ok(Ipv4Net { address, prefix });
            }
        }
    }
    let pools: Vec<String> = pools.iter().map(ToString::to_string).collect();
    Err(IpamError::Exhausted {
        prefix,
        pools: pools.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn around(routes: &[Ipv4Net]) -> Around<'static> {
        static POOLS: std::sync::OnceLock<Vec<Ipv4Net>> = std::sync::OnceLock::new();
        Around {
            routes: routes.to_vec(),
            pools: POOLS.get_or_init(default_pools),
        }
    }

    fn want(link: LinkKey) -> Want {
        Want {
            link,
            address: None,
        }
    }

    #[test]
    fn veth_machines_get_disjoint_subnets_clear_of_the_hosts_routes() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path());
        let routes = [net("0.0.0.0/0"), net("10.123.0.0/29")];
        let a = ipam
            .allocate("a", &want(LinkKey::Veth), &around(&routes))
            .unwrap();
        assert_eq!(
            a.address,
            net("10.123.0.10/30"),
            "skips the host's 10.123.0.0/29"
        );
        assert_eq!(a.gateway().to_string(), "10.123.0.9");
        assert_eq!(
            ipam.allocate("a", &want(LinkKey::Veth), &around(&routes))
                .unwrap(),
            a,
            "stable"
        );
        // The route to a's own link does not push a's next neighbour away.
        let routes = [net("10.123.0.0/29"), net("10.123.0.8/30")];
        let b = ipam
            .allocate("b", &want(LinkKey::Veth), &around(&routes))
            .unwrap();
        assert_eq!(b.address, net("10.123.0.14/30"));
    }

    #[test]
    fn a_zone_shares_one_subnet() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path());
        let zone = || want(LinkKey::Zone("app".into()));
        let a = ipam.allocate("a", &zone(), &around(&[])).unwrap();
        let b = ipam.allocate("b", &zone(), &around(&[])).unwrap();
        assert_eq!(a.address, net("10.123.0.2/24"));
        assert_eq!(b.address, net("10.123.0.3/24"));
        let other = ipam
            .allocate("c", &want(LinkKey::Zone("db".into())), &around(&[]))
            .unwrap();
        assert_eq!(other.address, net("10.123.1.2/24"));
        let veth = ipam
            .allocate("d", &want(LinkKey::Veth), &around(&[]))
            .unwrap();
        assert_eq!(veth.address, net("10.123.2.2/30"));
    }

    #[test]
    fn static_addresses_are_checked_against_the_zone_and_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path());
        let at = |zone: &str, a: &str| Want {
            link: LinkKey::Zone(zone.into()),
            address: Some(net(a)),
        };
        ipam.allocate("a", &at("app", "192.168.50.10/24"), &around(&[]))
            .unwrap();
        let b = ipam
            .allocate("b", &want(LinkKey::Zone("app".into())), &around(&[]))
            .unwrap();
        assert_eq!(b.address, net("192.168.50.2/24"));
        let e = ipam
            .allocate("c", &at("app", "192.168.51.3/24"), &around(&[]))
            .unwrap_err();
        assert!(
            e.to_string().contains("has the subnet 192.168.50.0/24"),
            "{e}"
        );
        let e = ipam
            .allocate("c", &at("app", "192.168.50.10/24"), &around(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("machine `a`"), "{e}");
        let e = ipam
            .allocate("c", &at("db", "192.168.50.20/28"), &around(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let e = ipam
            .allocate(
                "c",
                &at("db", "172.20.0.5/24"),
                &around(&[net("172.16.0.0/12")]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("the host's route"), "{e}");
        // A changed definition gets a new address; a removed machine frees its own.
        let moved = ipam
            .allocate("a", &want(LinkKey::Veth), &around(&[]))
            .unwrap();
        assert_eq!(moved.link, LinkKey::Veth);
        ipam.release("b").unwrap();
        ipam.release("b").unwrap();
        assert!(ipam.recorded("b").unwrap().is_none());
    }
}
