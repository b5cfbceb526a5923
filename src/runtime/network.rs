//! The host's side of a machine's own network, done by its supervisor: before PID 1 is
//! cloned, the forwarded host ports are held and the machine is written into its zone's
//! hosts file; once PID 1 is in its network namespace (and waits), the veth pair, the
//! zone's bridge, addresses, routes and mm's nftables rules; when the machine ends (or at
//! the next mm command after a crash), all of it goes again, the bridge with its zone's
//! last machine.
//!
//! Shared objects (a zone's bridge and hosts file, mm's nft table) change under one lock,
//! `RUNTIME/.network.lock`. Netlink and nfnetlink are spoken directly: no `ip` or `nft`
//! child, no thread.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::unistd::Pid;

use super::launch::{Step, StepFailure, WithStep};
use super::zone::{self, Reach};
use crate::network::addr::{Ipv4Net, PortForward};
use crate::network::netlink::Netlink;
use crate::network::nft;
use crate::network::ports::{self, Held};
use crate::network::rootless;
use crate::plan::{Address, Link, Network, Plan, Zone, zone_hosts};

/// What the supervisor holds for the machine's network while it runs; dropped, the
/// rootless helper is killed and reaped.
#[derive(Debug, Default)]
pub struct Holding {
    /// The forwarded host ports.
    _ports: Vec<Held>,
    helper: Option<rootless::Helper>,
    /// What the user should know: a host firewall that drops forwarded packets.
    pub notice: Option<String>,
}

fn link(plan: &Plan) -> Option<&Link> {
    match &plan.network {
        Network::Link(link) => Some(link),
        Network::Host | Network::Private | Network::Joined | Network::UserMode(_) => None,
    }
}

/// In an ordinary user's zone: joins the zone's user and network namespaces, its keeper
/// started first if the zone has none, so that what follows happens there (the machine's
/// user namespace is made as a child of the zone's). Nothing elsewhere.
pub fn enter(plan: &Plan) -> Result<(), StepFailure> {
    let Some(own) = plan.network.rootless_zone() else {
        return Ok(());
    };
    let zone = link(plan).and_then(|l| l.zone.as_ref());
    let _lock = lock(plan)?;
    let record = zone::ensure(own, &plan.ids)?;
    zone::join(&record)?;
    // A member from now on (under the same lock): the zone's last machine, stopping
    // meanwhile, must not end the zone under this one.
    match zone {
        Some(zone) => join_hosts(plan, zone),
        None => Ok(()),
    }
}

/// The machine's line in its zone's hosts file.
fn join_hosts(plan: &Plan, zone: &Zone) -> Result<(), StepFailure> {
    let Some(link) = link(plan) else {
        return Ok(());
    };
    let (address, _) = assigned(link)?;
    edit_hosts(zone, |members| {
        members.retain(|(name, _)| name != plan.machine.name.as_str());
        members.push((plan.machine.name.to_string(), address.address));
    })
}

/// One of `make`'s per host port of `forwards` (a range forwards each of its ports).
fn per_port<T>(forwards: &[PortForward], make: impl Fn(&PortForward, u16, u16) -> T) -> Vec<T> {
    let make = &make;
    forwards
        .iter()
        .flat_map(|f| {
            f.pairs()
                .map(move |(host_port, port)| make(f, host_port, port))
        })
        .collect()
}

/// Where the machine meets the host: its veth's host end, or its zone's bridge.
fn host_end(link: &Link) -> &str {
    link.zone
        .as_ref()
        .map_or(link.host_side.as_str(), |z| z.bridge.as_str())
}

/// Whether PID 1 waits for the supervisor to set the network up before it goes on.
pub fn pid1_waits(plan: &Plan) -> bool {
    matches!(plan.network, Network::Link(_) | Network::UserMode(_))
}

fn failed(what: impl Into<String>) -> impl FnOnce(String) -> StepFailure {
    let what = what.into();
    move |message| StepFailure::other(Step::Network { what }, message)
}

/// A netlink, nfnetlink or helper error as the failure of the network step `what`.
trait NetStep<T> {
    fn net(self, what: impl FnOnce() -> String) -> Result<T, StepFailure>;
}

impl<T, E: std::fmt::Display> NetStep<T> for Result<T, E> {
    fn net(self, what: impl FnOnce() -> String) -> Result<T, StepFailure> {
        self.map_err(|e| failed(what())(e.to_string()))
    }
}

/// `RUNTIME/.network.lock`, beside the machines' runtime directories.
fn lock(plan: &Plan) -> Result<File, StepFailure> {
    let path = plan.machine.runtime_dir.with_file_name(".network.lock");
    crate::state::lock(&path, true).step(|| Step::Network {
        what: format!("take the lock {}", path.display()),
    })
}

fn assigned(link: &Link) -> Result<(Ipv4Net, Ipv4Addr), StepFailure> {
    match link.address {
        Address::Assigned { address, gateway } => Ok((address, gateway)),
        Address::Allocate { .. } => Err(failed("find the machine's address")(
            "the plan has no address yet (mm start allocates one before the launch)".to_owned(),
        )),
    }
}

/// Before PID 1 exists: the host ports held, the machine in its zone's hosts file.
pub fn before(plan: &Plan) -> Result<Holding, StepFailure> {
    let Some(link) = link(plan) else {
        return Ok(Holding::default());
    };
    assigned(link)?;
    // A rootless zone's forwards are slirp4netns's to hold.
    let held = match link.rootless_zone() {
        Some(_) => Vec::new(),
        None => ports::hold(&link.forwards)
            .map_err(|e| StepFailure::other(Step::HoldPort, e.to_string()))?,
    };
    if let Some(zone) = &link.zone {
        let _lock = lock(plan)?;
        join_hosts(plan, zone)?;
    }
    Ok(Holding {
        _ports: held,
        helper: None,
        notice: None,
    })
}

/// Once PID 1 is in its network namespace: the links, addresses, routes and rules, or
/// the rootless helper (held in `holding`). Returns the host's side of the machine's
/// network (interface indexes), for machined.
pub fn attach(plan: &Plan, leader: Pid, holding: &mut Holding) -> Result<Vec<u32>, StepFailure> {
    match &plan.network {
        Network::Host | Network::Private | Network::Joined => Ok(Vec::new()),
        Network::Link(link) => {
            let interfaces = attach_link(plan, link, leader)?;
            if link.rootless_zone().is_none() {
                holding.notice = firewall_notice(link);
            }
            Ok(interfaces)
        }
        Network::UserMode(mode) => {
            let forwards = per_port(&mode.forwards, |f, host_port, port| rootless::Forward {
                proto: f.proto,
                host_address: f.host_address,
                host_port,
                port,
            });
            let options = rootless::Options {
                pid: leader.as_raw(),
                mtu: mode.mtu,
                forwards: &forwards,
            };
            let helper = rootless::start(&options).net(|| format!("start {}", mode.helper))?;
            holding.helper = Some(helper);
            Ok(Vec::new())
        }
    }
}

fn attach_link(plan: &Plan, link: &Link, leader: Pid) -> Result<Vec<u32>, StepFailure> {
    let (address, gateway) = assigned(link)?;
    let netns_path = PathBuf::from(format!("/proc/{}/ns/net", leader.as_raw()));
    let netns = File::open(&netns_path).step(|| Step::Network {
        what: format!("open {}", netns_path.display()),
    })?;
    let mut host = Netlink::open().net(|| "open a netlink socket".to_owned())?;
    let _lock = lock(plan)?;
    let bridge = match &link.zone {
        Some(zone) => Some(bridge(&mut host, zone, link.mtu, gateway, address.prefix)?),
        None => None,
    };
    // A link of this name left by a machine of the same name whose namespace lives on.
    if let Ok(Some(stale)) = host.link(&link.host_side) {
        let _ = host.delete_link(stale.index);
    }
    let index = host
        .add_veth(&link.host_side, &link.machine_side, netns.as_fd(), link.mtu)
        .net(|| {
            format!(
                "make the veth pair {} ↔ {}",
                link.host_side, link.machine_side
            )
        })?;
    match bridge {
        Some(bridge) => host
            .set_master(index, bridge)
            .net(|| format!("put {} in its zone's bridge", link.host_side))?,
        None => host
            .add_address4(index, gateway, address.prefix)
            .net(|| format!("give {} the address {gateway}", link.host_side))?,
    }
    host.set_up(index)
        .net(|| format!("bring {} up", link.host_side))?;
    let host_end = host_end(link);
    inside(&netns, link, address, gateway)?;
    forwarding(host_end)?;
    let rootless = link.rootless_zone();
    let forwards = per_port(&link.forwards, |f, host_port, port| nft::Forward {
        proto: f.proto,
        // In a rootless zone, slirp4netns listens on the host's address; here the
        // forward arrives at the zone's.
        host_address: if rootless.is_some() {
            None
        } else {
            f.host_address
        },
        host_port,
        address: address.address,
        port,
    });
    let subnet = address.network();
    nft::add(&nft::MachineRules {
        machine: plan.machine.name.as_str(),
        link: host_end,
        address: address.address,
        subnet: (subnet.address, subnet.prefix),
        forwards: &forwards,
    })
    .net(|| "add the machine's rules to nft table ip mm".to_owned())?;
    let Some(own) = rootless else {
        return Ok(vec![bridge.unwrap_or(index)]);
    };
    let api = zone::api_socket(own);
    rootless::add_forwards(&api, &helper_forwards(link))
        .net(|| format!("forward the host's ports through {}", own.helper))?;
    // The zone's interfaces are not the host's: nothing for machined.
    Ok(Vec::new())
}

/// A rootless zone's forwards as slirp4netns takes them, per host port.
fn helper_forwards(link: &Link) -> Vec<rootless::Forward> {
    per_port(&link.forwards, |f, host_port, port| rootless::Forward {
        proto: f.proto,
        host_address: f.host_address,
        host_port,
        port,
    })
}

/// A host firewall (docker's, firewalld's) whose forward chain drops what it does not
/// know drops the machine's traffic too, whatever mm's table accepts: say so, with the fix.
fn firewall_notice(link: &Link) -> Option<String> {
    let chains = nft::dropping_forward_chains().ok()?;
    if chains.is_empty() {
        return None;
    }
    let host_end = host_end(link);
    Some(format!(
        "the host's firewall drops forwarded packets ({}): the machine cannot reach the world \
         or take forwards until it lets {host_end} through, e.g. `iptables -I FORWARD -i \
         {host_end} -j ACCEPT; iptables -I FORWARD -o {host_end} -j ACCEPT` (docker: the \
         DOCKER-USER chain; firewalld: a trusted zone for {host_end})",
        chains.join("; ")
    ))
}

/// The zone's bridge, made (with the zone's first address, up) if it is not there yet.
fn bridge(
    host: &mut Netlink,
    zone: &Zone,
    mtu: u32,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<u32, StepFailure> {
    let what = |w: &'static str| move || format!("{w} the zone's bridge {}", zone.bridge);
    if let Some(existing) = host.link(&zone.bridge).net(what("look for"))? {
        return Ok(existing.index);
    }
    let index = host.add_bridge(&zone.bridge, mtu).net(what("make"))?;
    host.add_address4(index, gateway, prefix)
        .net(what("give an address to"))?;
    host.set_up(index).net(what("bring up"))?;
    Ok(index)
}

/// Inside the machine's namespace: loopback and the machine's end up, its address, and the
/// default route through the host's side.
fn inside(
    netns: &File,
    link: &Link,
    address: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), StepFailure> {
    let inside = |what: String| move || format!("{what} inside the machine");
    let mut nl = Netlink::open_in(netns.as_fd()).net(inside("open a netlink socket".into()))?;
    let side = &link.machine_side;
    for name in ["lo", side.as_str()] {
        let Some(found) = nl.link(name).net(inside(format!("find {name}")))? else {
            return Err(failed(inside(format!("find {name}"))())(
                "it is not there".to_owned(),
            ));
        };
        if name == side {
            nl.add_address4(found.index, address.address, address.prefix)
                .net(inside(format!("give {side} the address {address}")))?;
        }
        nl.set_up(found.index)
            .net(inside(format!("bring {name} up")))?;
        if name == side {
            nl.add_default_route4(gateway, found.index)
                .net(inside(format!("route through {gateway}")))?;
        }
    }
    Ok(())
}

/// IPv4 forwarding on the machine's host end and on the uplink (replies come in there),
/// and `route_localnet` on the host end, so that forwards from the host's 127.0.0.1 work.
fn forwarding(host_end: &str) -> Result<(), StepFailure> {
    let mut settings = vec![
        (host_end.to_owned(), "forwarding"),
        (host_end.to_owned(), "route_localnet"),
    ];
    if let Some(uplink) = crate::host::uplink() {
        settings.push((uplink.device, "forwarding"));
    }
    for (device, key) in settings {
        let path = format!("/proc/sys/net/ipv4/conf/{device}/{key}");
        std::fs::write(&path, "1").step(|| Step::Network {
            what: format!("write 1 to {path}"),
        })?;
    }
    Ok(())
}

/// Takes everything of the machine's network off the host: its nft rules, its line in the
/// zone's hosts file, its veth (gone with its namespace, unless something holds that), and
/// the zone's bridge when no machine of the zone is left. Safe to call again. In an
/// ordinary user's zone this happens in the zone's namespaces (from outside them, through
/// `mm __zone-release`), and the zone's last machine ends its keeper instead.
pub fn release(plan: &Plan) {
    let Some(link) = link(plan) else { return };
    let rootless = link.rootless_zone();
    let reach = rootless.map(zone::reach);
    if reach == Some(Reach::Outside) {
        return zone::release_from_outside(plan);
    }
    let _lock = match lock(plan) {
        Ok(lock) => lock,
        Err(failure) => return eprintln!("mm: {failure}"),
    };
    let mut host = None;
    if reach != Some(Reach::Gone) {
        if let Err(e) = nft::remove(plan.machine.name.as_str()) {
            eprintln!("mm: {e}");
        }
        match Netlink::open() {
            Ok(mut nl) => {
                if let Ok(Some(veth)) = nl.link(&link.host_side) {
                    let _ = nl.delete_link(veth.index);
                }
                host = Some(nl);
            }
            Err(e) => eprintln!("mm: taking {}'s network down: {e}", plan.machine.name),
        }
    }
    let Some(zone) = &link.zone else { return };
    let mut left = 0;
    if edit_hosts(zone, |members| {
        members.retain(|(name, _)| name != plan.machine.name.as_str());
        left = members.len();
    })
    .is_err()
    {
        return;
    }
    if left > 0 {
        if let Some(own) = rootless
            && reach == Some(Reach::Inside)
            && let Err(e) =
                rootless::remove_forwards(&zone::api_socket(own), &helper_forwards(link))
        {
            eprintln!("mm: taking {}'s forwards down: {e}", plan.machine.name);
        }
        return;
    }
    match rootless {
        Some(own) => zone::stop(own),
        None => {
            if let Some(host) = &mut host
                && let Ok(Some(bridge)) = host.link(&zone.bridge)
            {
                let _ = host.delete_link(bridge.index);
            }
        }
    }
    let _ = std::fs::remove_file(&zone.hosts);
    if let Some(dir) = zone.hosts.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Rewrites the zone's hosts file in place (machines have it bind-mounted: the file must
/// stay the same one) after `change` edits its list of machines.
fn edit_hosts(
    zone: &Zone,
    change: impl FnOnce(&mut Vec<(String, Ipv4Addr)>),
) -> Result<(), StepFailure> {
    let step = || Step::Network {
        what: format!("write {}", zone.hosts.display()),
    };
    if let Some(dir) = zone.hosts.parent() {
        std::fs::create_dir_all(dir).step(step)?;
    }
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&zone.hosts)
        .step(step)?;
    let mut text = String::new();
    file.read_to_string(&mut text).step(step)?;
    let mut members: Vec<(String, Ipv4Addr)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (address, name) = l.split_once('\t')?;
            Some((name.to_owned(), address.parse().ok()?))
        })
        .filter(|(name, _)| name != "localhost" && !name.starts_with("localhost "))
        .collect();
    change(&mut members);
    members.sort();
    let text = zone_hosts(&members);
    file.set_len(0).step(step)?;
    file.rewind().step(step)?;
    file.write_all(text.as_bytes()).step(step)
}
