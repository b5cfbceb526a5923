//! The host's network, as machines with a network of their own need to know it: the
//! uplink (the IPv4 default route's device) and its MTU, the routes a machine's subnet must
//! stay clear of, and name servers a machine can reach.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::network::addr::Ipv4Net;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFacts {
    pub uplink: Option<Uplink>,
    /// Where root machines' subnets come from: mm's defaults, or `pools` of the host's
    /// network.toml.
    #[serde(default)]
    pub pools: Pools,
    /// The main table's IPv4 routes (their destinations and devices).
    pub routes: Vec<Route>,
    pub resolvers: Resolvers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    pub device: String,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub destination: Ipv4Net,
    pub device: String,
}

/// Name servers for a machine's /etc/resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolvers {
    /// The file they come from.
    pub from: PathBuf,
    /// Reachable from a machine: none on the host's loopback.
    pub servers: Vec<IpAddr>,
    /// `search` and `options` lines, as they are.
    pub other: Vec<String>,
    /// Why there are none, when there are none.
    pub missing: Option<String>,
}

/// The pools, and the file that named them (`None`: mm's defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pools {
    pub from: Option<PathBuf>,
    pub pools: Vec<Ipv4Net>,
    /// What is wrong with the file, which machines with a link then refuse to start with.
    pub problem: Option<String>,
}

impl Default for Pools {
    fn default() -> Self {
        Self {
            from: None,
            pools: crate::network::ipam::default_pools(),
            problem: None,
        }
    }
}

/// The host's network settings for mm: `/etc/mm/network.toml`, or `$MM_ROOT/network.toml`.
pub fn config_path() -> PathBuf {
    match std::env::var_os(super::ENV_ROOT).filter(|v| !v.is_empty()) {
        Some(root) => PathBuf::from(root).join("network.toml"),
        None => PathBuf::from("/etc/mm/network.toml"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    pools: Vec<toml::Spanned<String>>,
}

/// The pools of `path`, when it exists: each an IPv4 subnet of /8 to /24 (a zone takes a
/// /24 of it).
pub fn read_pools(path: &Path) -> Pools {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Pools::default(),
        Err(e) => {
            return Pools {
                problem: Some(format!("{}: {e}", path.display())),
                ..Pools::default()
            };
        }
    };
    let fail = |why: String| Pools {
        from: Some(path.to_owned()),
        problem: Some(why),
        ..Pools::default()
    };
    let config: Config = match toml::from_str(&text) {
        Ok(config) => config,
        Err(e) => return fail(format!("{}: {}", path.display(), e.message())),
    };
    let mut pools = Vec::new();
    for raw in &config.pools {
        let line = text[..raw.span().start].lines().count().max(1);
        match raw.get_ref().parse::<Ipv4Net>() {
            Ok(net) if (8..=24).contains(&net.prefix) && net == net.network() => pools.push(net),
            Ok(net) => {
                return fail(format!(
                    "{}:{line}: pools: {net} is not a subnet of /8 to /24 written as its first address",
                    path.display()
                ));
            }
            Err(why) => return fail(format!("{}:{line}: pools: {why}", path.display())),
        }
    }
    if pools.is_empty() {
        return fail(format!("{}: pools is empty", path.display()));
    }
    Pools {
        from: Some(path.to_owned()),
        pools,
        problem: None,
    }
}

/// A local stub resolver's list of the servers it forwards to (systemd-resolved's).
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

impl NetworkFacts {
    /// Reads the routes from /proc/net/route and the uplink over netlink (both are this
    /// process's network namespace's; /sys/class/net may show another's).
    pub fn probe() -> Self {
        let routes = std::fs::read_to_string("/proc/net/route")
            .map(|text| parse_routes(&text))
            .unwrap_or_default();
        let resolvers = resolvers(Path::new("/etc/resolv.conf"), Path::new(RESOLVED_UPSTREAM));
        Self {
            uplink: uplink(),
            pools: read_pools(&config_path()),
            routes,
            resolvers,
        }
    }
}

impl NetworkFacts {
    /// What a new subnet must stay clear of and where it comes from.
    pub fn around(&self) -> crate::network::ipam::Around<'_> {
        crate::network::ipam::Around {
            routes: self.routes.iter().map(|r| r.destination).collect(),
            pools: &self.pools.pools,
        }
    }
}

/// The device of the IPv4 default route and its MTU, now (`None` without one, or when
/// netlink cannot say).
pub fn uplink() -> Option<Uplink> {
    let link = crate::network::netlink::Netlink::open()
        .ok()?
        .uplink()
        .ok()??;
    Some(Uplink {
        device: link.name,
        mtu: link.mtu,
    })
}

/// `/proc/net/route`'s routes.
fn parse_routes(text: &str) -> Vec<Route> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (device, destination, mask) = (f.first()?, hex(f.get(1)?)?, hex(f.get(7)?)?);
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            let destination = Ipv4Net::new(Ipv4Addr::from(destination), prefix)?;
            Some(Route {
                destination,
                device: (*device).to_owned(),
            })
        })
        .collect()
}

/// The host's name servers as a machine behind NAT can use them: those of `main`, or, when
/// it names only the host's loopback (a local stub such as systemd-resolved's 127.0.0.53),
/// those the stub forwards to, from `upstream`.
fn resolvers(main: &Path, upstream: &Path) -> Resolvers {
    let read = |path: &Path| std::fs::read_to_string(path).ok().map(|t| parse_resolv(&t));
    let Some((servers, other)) = read(main) else {
        return Resolvers {
            from: main.to_owned(),
            missing: Some(format!("{} cannot be read", main.display())),
            ..Resolvers::default()
        };
    };
    let reachable = |servers: &[IpAddr]| {
        servers
            .iter()
            .copied()
            .filter(|s| !s.is_loopback())
            .collect::<Vec<_>>()
    };
    if !servers.is_empty() && reachable(&servers).is_empty() {
        if let Some((up, up_other)) = read(upstream)
            && !reachable(&up).is_empty()
        {
            return Resolvers {
                from: upstream.to_owned(),
                servers: reachable(&up),
                other: up_other,
                missing: None,
            };
        }
        return Resolvers {
            from: main.to_owned(),
            servers: Vec::new(),
            other,
            missing: Some(format!(
                "{} names only name servers on the host's loopback, which a machine with a \
                 network of its own cannot reach, and {} names no others",
                main.display(),
                upstream.display()
            )),
        };
    }
    Resolvers {
        from: main.to_owned(),
        missing: servers
            .is_empty()
            .then(|| format!("{} names no name server", main.display())),
        servers: reachable(&servers),
        other,
    }
}

fn parse_resolv(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let mut servers = Vec::new();
    let mut other = Vec::new();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                servers.extend(words.next().and_then(|w| w.parse::<IpAddr>().ok()))
            }
            Some("search" | "options" | "domain") => other.push(line.to_owned()),
            _ => {}
        }
    }
    (servers, other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_from_proc() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(text);
        assert_eq!(routes[0].destination.to_string(), "0.0.0.0/0");
        assert_eq!(routes[1].destination.to_string(), "192.168.0.0/24");
        assert_eq!(routes[1].device, "eth0");
    }

    #[test]
    fn pools_come_from_the_file_or_mm_and_a_bad_one_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.toml");
        assert_eq!(read_pools(&path), Pools::default());
        std::fs::write(&path, "pools = [\"10.200.0.0/16\"]\n").unwrap();
        let pools = read_pools(&path);
        assert_eq!(pools.pools, ["10.200.0.0/16".parse::<Ipv4Net>().unwrap()]);
        assert!(pools.problem.is_none());
        std::fs::write(
            &path,
            "pools = [\n  \"10.200.0.0/16\",\n  \"10.201.0.5/16\",\n]\n",
        )
        .unwrap();
        let problem = read_pools(&path).problem.unwrap();
        assert!(problem.ends_with("network.toml:3: pools: 10.201.0.5/16 is not a subnet of /8 to /24 written as its first address"), "{problem}");
        std::fs::write(&path, "pool = []\n").unwrap();
        assert!(
            read_pools(&path)
                .problem
                .unwrap()
                .contains("unknown field `pool`")
        );
    }

    #[test]
    fn a_local_stub_gives_way_to_its_upstream_servers() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("resolv.conf");
        let up = dir.path().join("upstream.conf");
        std::fs::write(&main, "nameserver 127.0.0.53\noptions edns0\nsearch lan\n").unwrap();
        std::fs::write(&up, "nameserver 192.0.2.53\nnameserver ::1\n").unwrap();
        let r = resolvers(&main, &up);
        assert_eq!(r.from, up);
        assert_eq!(r.servers, ["192.0.2.53".parse::<IpAddr>().unwrap()]);
        std::fs::remove_file(&up).unwrap();
        let r = resolvers(&main, &up);
        assert!(r.servers.is_empty());
        assert!(r.missing.unwrap().contains("loopback"));
        std::fs::write(&main, "nameserver 198.51.100.1\n").unwrap();
        let r = resolvers(&main, &up);
        assert_eq!(r.from, main);
        assert_eq!(r.servers.len(), 1);
        assert!(r.missing.is_none());
    }
}
