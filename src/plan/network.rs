//! `[network]` compiled: the machine's link, its address, forwards, and the files that tell
//! the machine its name servers and, in a zone, the other machines' names.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::{Address, Link, Mount, Network, RootlessZone, UserMode, Zone};
use crate::definition::{Definition, Diagnostic, NetworkMode, UserRange};
use crate::host::Host;
use crate::network::addr::Ipv4Net;
use crate::network::ipam::{self, LinkKey, Record, Want};
use crate::network::rootless;

/// The name the machine's end of its veth pair has, as with systemd-nspawn.
pub const MACHINE_SIDE: &str = "host0";
/// The longest interface name the kernel takes.
const IFNAME_MAX: usize = 15;

/// What mm holds of the machines' addresses, read before compiling.
#[derive(Debug, Clone, Copy, Default)]
pub struct KnownAddresses<'a> {
    /// This machine's record.
    pub own: Option<&'a Record>,
    /// Every other machine's, by name.
    pub others: &'a [(String, Record)],
}

/// What a plan's link still needs allocated: its zone (or a veth of its own) and the
/// definition's static address; `None` once it has an address.
pub fn unallocated(link: &Link) -> Option<Want> {
    let Address::Allocate { wanted } = link.address else {
        return None;
    };
    let key = match &link.zone {
        Some(zone) => LinkKey::Zone(zone.name.clone()),
        None => LinkKey::Veth,
    };
    Some(Want {
        link: key,
        address: wanted,
    })
}

/// What the definition's network asks of the machine's link, if it has one.
pub fn wanted(def: &Definition) -> Option<Want> {
    let link = match &def.network.mode {
        NetworkMode::Veth => LinkKey::Veth,
        NetworkMode::Zone(zone) => LinkKey::Zone(zone.as_str().to_owned()),
        NetworkMode::Host | NetworkMode::Private => return None,
    };
    Some(Want {
        link,
        address: def.network.address.as_ref().map(|a| a.value),
    })
}

/// A static address another machine or the host's routes already hold (checked when
/// compiling; the allocation at start checks again under the lock).
pub(super) fn address_taken(
    def: &Definition,
    host: &Host,
    known: KnownAddresses<'_>,
) -> Option<Diagnostic> {
    let want = wanted(def)?;
    let located = def.network.address.as_ref()?;
    if known.own.is_some_and(|own| want.met_by(own)) {
        return None;
    }
    match ipam::choose(&want, known.others, &host.network.around()) {
        Ok(_) => None,
        Err(e) => Some(
            def.file
                .error_at(&located.span, e.to_string())
                .key("network.address"),
        ),
    }
}

/// The machine's network and the mounts that go with it (name servers, the zone's names).
pub(super) fn network(
    def: &Definition,
    host: &Host,
    known: KnownAddresses<'_>,
) -> Result<(Network, Vec<Mount>), Diagnostic> {
    let zone = match &def.network.mode {
        NetworkMode::Host => return Ok((Network::Host, Vec::new())),
        NetworkMode::Private => return Ok((Network::Private, Vec::new())),
        NetworkMode::Veth => None,
        NetworkMode::Zone(zone) => Some(zone),
    };
    if !host.is_root() && zone.is_none() {
        return user_mode(def);
    }
    if let Some(problem) = &host.network.pools.problem {
        return Err(def
            .file
            .error(format!("the host's address pools: {problem}"))
            .key("network.mode")
            .help(format!(
                "fix it, or remove it to use mm's pools ({})",
                ipam::POOLS.join(", ")
            )));
    }
    let name = def.name.as_str();
    let want = wanted(def).expect("a veth or zone machine wants a link");
    let address = match known.own.filter(|own| want.met_by(own)) {
        Some(record) => Address::Assigned {
            address: record.address,
            gateway: record.gateway(),
        },
        None => Address::Allocate {
            wanted: want.address,
        },
    };
    let rootless = !host.is_root();
    if rootless && def.users.value != UserRange::Auto {
        return Err(def
            .file
            .error_at(
                &def.users.span,
                "the machines of an ordinary user's zone share the zone's user namespace, \
                 which has all of your subordinate ids: `users.range` cannot choose others",
            )
            .key("users.range")
            .help("remove `users.range`, or give the machine `mode = \"veth\"`"));
    }
    if rootless && let Some(keep) = &def.keep_id {
        return Err(def
            .file
            .error_at(
                &keep.span,
                "the machines of an ordinary user's zone share the zone's user namespace and \
                 its id maps: `keep_id`, which maps your own uid elsewhere, cannot be one of them \
                 yet",
            )
            .key("users.keep_id")
            .help("give the machine `mode = \"veth\"` (or `mode = \"host\"`), or run the zone as root"));
    }
    let mtu = match def.network.mtu {
        Some(mtu) if rootless && mtu > rootless::MAX_MTU => {
            return Err(def
                .file
                .error(format!(
                    "a rootless zone's MTU is at most {} ({} says so), not {mtu}",
                    rootless::MAX_MTU,
                    rootless::TOOL
                ))
                .key("network.mtu"));
        }
        Some(mtu) => mtu,
        None if rootless => rootless::DEFAULT_MTU,
        None => host.network.uplink.as_ref().map_or(1500, |u| u.mtu),
    };
    let zone = zone.map(|zone| {
        let dir = host.dirs.runtime.join(".zones").join(zone.as_str());
        Zone {
            name: zone.as_str().to_owned(),
            bridge: format!("vz-{}", zone.as_str()),
            hosts: dir.join("hosts"),
            rootless: rootless.then(|| RootlessZone {
                dir: dir.clone(),
                helper: rootless::TOOL.to_owned(),
                mtu,
                address: rootless::addresses().machine,
            }),
        }
    });
    let resolv = if rootless {
        helper_resolv_conf()
    } else {
        resolv_conf(host)
    };
    let mut mounts = vec![Mount::File {
        target: "/etc/resolv.conf".to_owned(),
        content: resolv,
    }];
    if let Some(zone) = &zone {
        mounts.push(Mount::Bind {
            source: zone.hosts.clone(),
            target: "/etc/hosts".to_owned(),
            readonly: true,
            recursive: false,
        });
    }
    let link = Link {
        host_side: link_name(if zone.is_some() { "vb-" } else { "ve-" }, name),
        machine_side: MACHINE_SIDE.to_owned(),
        zone,
        mtu,
        address,
        forwards: def.network.ports.iter().map(|p| p.value).collect(),
    };
    Ok((Network::Link(link), mounts))
}

/// A rootless machine's network: an ordinary user may not make links in the host's
/// namespace, so slirp4netns serves the machine's own (as podman's rootless networks).
fn user_mode(def: &Definition) -> Result<(Network, Vec<Mount>), Diagnostic> {
    if let Some(address) = &def.network.address {
        return Err(def
            .file
            .error_at(
                &address.span,
                format!(
                    "a rootless machine's address is {}'s: every one gets {}",
                    rootless::TOOL,
                    rootless::addresses().machine
                ),
            )
            .key("network.address")
            .help("remove `address`, or run the machine as root"));
    }
    let mtu = def.network.mtu.unwrap_or(rootless::DEFAULT_MTU);
    if mtu > rootless::MAX_MTU {
        return Err(def
            .file
            .error(format!(
                "a rootless machine's MTU is at most {} ({} says so), not {mtu}",
                rootless::MAX_MTU,
                rootless::TOOL
            ))
            .key("network.mtu"));
    }
    let a = rootless::addresses();
    let address = Ipv4Net {
        address: a.machine,
        prefix: a.prefix_len,
    };
    let mode = UserMode {
        helper: rootless::TOOL.to_owned(),
        interface: rootless::INTERFACE.to_owned(),
        mtu,
        address,
        gateway: a.gateway,
        dns: a.dns,
        forwards: def.network.ports.iter().map(|p| p.value).collect(),
    };
    let resolv = Mount::File {
        target: "/etc/resolv.conf".to_owned(),
        content: helper_resolv_conf(),
    };
    Ok((Network::UserMode(mode), vec![resolv]))
}

/// A rootless machine's /etc/resolv.conf: the helper's name server, which asks the host's
/// (the host's own may be on its loopback, which the helper does not let machines reach).
fn helper_resolv_conf() -> String {
    format!(
        "# Written by mm: {}'s name server, which asks the host's\nnameserver {}\n",
        rootless::TOOL,
        rootless::addresses().dns
    )
}

/// `PREFIX` and the machine's name, as an interface name: cut to 15 bytes, with a hash of
/// the whole name at the end when cut, so that two long names do not meet.
pub fn link_name(prefix: &str, machine: &str) -> String {
    let whole = format!("{prefix}{machine}");
    if whole.len() <= IFNAME_MAX {
        return whole;
    }
    let hash = crate::digest::Digest::of(machine.as_bytes());
    let keep = IFNAME_MAX - prefix.len() - 5;
    format!("{prefix}{}-{}", &machine[..keep], &hash.hex()[..4])
}

/// The machine's /etc/resolv.conf: the host's name servers that it can reach.
fn resolv_conf(host: &Host) -> String {
    let r = &host.network.resolvers;
    let mut text = format!(
        "# Written by mm: the host's name servers, from {}\n",
        r.from.display()
    );
    if let Some(why) = &r.missing {
        let _ = writeln!(text, "# None: {why}.");
    }
    for server in &r.servers {
        let _ = writeln!(text, "nameserver {server}");
    }
    for line in &r.other {
        let _ = writeln!(text, "{line}");
    }
    text
}

/// A zone's /etc/hosts: localhost, then each machine of the zone (name, address).
pub fn zone_hosts(machines: &[(String, Ipv4Addr)]) -> String {
    let mut text = String::from(
        "# Written by mm: the machines of this zone\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    for (name, address) in machines {
        let _ = writeln!(text, "{address}\t{name}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_and_kept_apart() {
        assert_eq!(link_name("ve-", "web"), "ve-web");
        assert_eq!(link_name("ve-", "twelve-chars"), "ve-twelve-chars");
        let a = link_name("ve-", "a-very-long-machine-name");
        let b = link_name("ve-", "a-very-long-machine-other");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("ve-a-very-"), "{a}");
        assert_ne!(a, b);
    }
}
