//! A small blocking rtnetlink client: the links (veth pairs, bridges), addresses and routes
//! that mm gives a machine, over one `NETLINK_ROUTE` socket, with no thread and no async
//! runtime, so that a single-threaded supervisor can use it.
//!
//! Each request is sent with `NLM_F_REQUEST|NLM_F_ACK` and its replies are read until the
//! kernel's acknowledgement or error with the request's sequence number; a dump is read until
//! `NLMSG_DONE` (and done again if the kernel says it was interrupted). A kernel error becomes
//! `io::Error::from_raw_os_error(errno)`, with the kernel's extended-ack message if it gave one.
//! The socket belongs to the network namespace it was opened in, whatever the thread does later.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use socket::{Channel, Failure};

/// A `NETLINK_ROUTE` socket bound to the network namespace it was opened in.
pub struct Netlink {
    channel: Channel,
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The bridge (or bond) the link is attached to.
    pub master: Option<u32>,
    /// Administratively up (`IFF_UP`); says nothing of the carrier.
    pub up: bool,
    /// The driver's kind (`"veth"`, `"bridge"`, `"dummy"`, ...); `None` for physical devices
    /// and loopback.
    pub kind: Option<String>,
}

/// An IPv4 unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The output interface (of the first next hop for a multipath route).
    pub oif: Option<u32>,
    /// The route's priority; lower wins. 0 when the kernel reports none.
    pub metric: u32,
}

/// What was being done when netlink failed, with the link's name or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    ListLinks,
    GetLink(String),
    GetLinkIndex(u32),
    AddVeth {
        host: String,
        peer: String,
    },
    AddBridge(String),
    SetMaster {
        index: u32,
        master: u32,
    },
    SetUp(u32),
    SetMtu {
        index: u32,
        mtu: u32,
    },
    DeleteLink(u32),
    AddAddress {
        index: u32,
        address: IpAddr,
        prefix: u8,
    },
    ListAddresses,
    AddDefaultRoute {
        gateway: IpAddr,
        index: u32,
    },
    ListRoutes,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ListLinks => write!(f, "list network links"),
            Self::GetLink(name) => write!(f, "look up network link {name}"),
            Self::GetLinkIndex(index) => write!(f, "look up network link {index}"),
            Self::AddVeth { host, peer } => write!(f, "create veth pair {host} (peer {peer})"),
            Self::AddBridge(name) => write!(f, "create bridge {name}"),
            Self::SetMaster { index, master } => {
                write!(f, "attach network link {index} to bridge {master}")
            }
            Self::SetUp(index) => write!(f, "bring up network link {index}"),
            Self::SetMtu { index, mtu } => write!(f, "set MTU {mtu} on network link {index}"),
            Self::DeleteLink(index) => write!(f, "delete network link {index}"),
            Self::AddAddress {
                index,
                address,
                prefix,
            } => {
                write!(f, "add address {address}/{prefix} to network link {index}")
            }
            Self::ListAddresses => write!(f, "list addresses"),
            Self::AddDefaultRoute { gateway, index } => {
                write!(f, "add default route via {gateway} on network link {index}")
            }
            Self::ListRoutes => write!(f, "list routes"),
        }
    }
}

/// A netlink failure: which step, and the errno behind it.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {source}")]
    Open { source: io::Error },
    /// Opening a socket in another namespace failed before the socket existed; the thread is
    /// in its own network namespace.
    #[error("cannot {step}: {source}")]
    Namespace {
        step: &'static str,
        source: io::Error,
    },
    /// The thread could not return to its own network namespace after opening a socket in
    /// another one: it is left in the other namespace.
    #[error(
        "cannot return to the thread's own network namespace after opening a socket in another: \
         {source}"
    )]
    Stranded { source: io::Error },
    /// The kernel refused a request, or its reply could not be read. `message` is the
    /// kernel's extended-ack text, if it gave one.
    #[error("cannot {operation}: {source}{}", kernel_note(.message))]
    Request {
        operation: Operation,
        source: io::Error,
        message: Option<String>,
    },
}

fn kernel_note(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

impl NetlinkError {
    /// The errno behind the failure (`EEXIST`, `ENODEV`, ...), if there is one (a reply that
    /// could not be decoded has none).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Open { source }
            | Self::Namespace { source, .. }
            | Self::Stranded { source }
            | Self::Request { source, .. } => source.raw_os_error(),
        }
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let channel = Channel::open().map_err(|source| NetlinkError::Open { source })?;
        Ok(Self { channel })
    }

    /// Opens a socket in another network namespace: setns into `netns`, socket(), setns back
    /// into the namespace the thread was in (opened from /proc/thread-self/ns/net before).
    /// [`NetlinkError::Stranded`] if it cannot go back.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<Self, NetlinkError> {
        let own =
            File::open("/proc/thread-self/ns/net").map_err(|source| NetlinkError::Namespace {
                step: "open the thread's network namespace (/proc/thread-self/ns/net)",
                source,
            })?;
        move_into_link_name_space(netns, Some(LinkNameSpaceType::Network)).map_err(|e| {
            NetlinkError::Namespace {
                step: "enter the network namespace",
                source: e.into(),
            }
        })?;
        let opened = Self::open();
        move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(|e| NetlinkError::Stranded { source: e.into() })?;
        opened
    }

    /// All links of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let replies = self
            .channel
            .dump(request)
            .map_err(|f| f.during(Operation::ListLinks))?;
        Ok(replies.into_iter().filter_map(new_link).collect())
    }

    /// The link called `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(message)
            .map_err(|f| f.during(Operation::GetLink(name.to_owned())))
    }

    /// The link with index `index`, or `None` if there is none.
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.get_link(message)
            .map_err(|f| f.during(Operation::GetLinkIndex(index)))
    }

    fn get_link(&mut self, message: LinkMessage) -> Result<Option<Link>, Failure> {
        match self
            .channel
            .request(RouteNetlinkMessage::GetLink(message), 0)
        {
            Ok(replies) => Ok(replies.into_iter().find_map(new_link)),
            Err(f) if f.errno() == Some(libc::ENODEV) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// A veth pair: `host` here, `peer` created directly in the namespace `peer_netns`
    /// (`IFLA_NET_NS_FD` on the peer's info), both with `mtu` (0: the kernel's default).
    /// Returns the host side's index. `EEXIST` if `host` exists (here) or `peer` exists (there).
    pub fn add_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        mtu: u32,
    ) -> Result<u32, NetlinkError> {
        let operation = || Operation::AddVeth {
            host: host.to_owned(),
            peer: peer.to_owned(),
        };
        let mut peer_message = LinkMessage::default();
        peer_message.attributes = named(peer, mtu);
        peer_message
            .attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let info = InfoData::Veth(InfoVeth::Peer(peer_message));
        self.create_link(host, mtu, InfoKind::Veth, Some(info))
            .map_err(|f| f.during(operation()))
    }

    /// A bridge called `name` with `mtu` (0: the kernel's default). Returns its index.
    /// `EEXIST` if `name` exists. The kernel lowers a bridge's MTU to its smallest port's as
    /// ports join, unless the MTU was changed with [`Netlink::set_mtu`] after creation.
    pub fn add_bridge(&mut self, name: &str, mtu: u32) -> Result<u32, NetlinkError> {
        self.create_link(name, mtu, InfoKind::Bridge, None)
            .map_err(|f| f.during(Operation::AddBridge(name.to_owned())))
    }

    fn create_link(
        &mut self,
        name: &str,
        mtu: u32,
        kind: InfoKind,
        data: Option<InfoData>,
    ) -> Result<u32, Failure> {
        let mut info = vec![LinkInfo::Kind(kind)];
        info.extend(data.map(LinkInfo::Data));
        let mut message = LinkMessage::default();
        message.attributes = named(name, mtu);
        message.attributes.push(LinkAttribute::LinkInfo(info));
        self.channel.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        // The kernel's acknowledgement carries no index (NLM_F_ECHO on links is too new).
        let mut lookup = LinkMessage::default();
        lookup
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        match self.get_link(lookup)? {
            Some(link) => Ok(link.index),
            None => Err(io::Error::from_raw_os_error(libc::ENODEV).into()),
        }
    }

    /// Attaches link `index` to the bridge `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Controller(master));
        self.set_link(message)
            .map_err(|f| f.during(Operation::SetMaster { index, master }))
    }

    /// Sets link `index` administratively up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.set_link(message)
            .map_err(|f| f.during(Operation::SetUp(index)))
    }

    /// Sets the MTU of link `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(message)
            .map_err(|f| f.during(Operation::SetMtu { index, mtu }))
    }

    fn set_link(&mut self, message: LinkMessage) -> Result<(), Failure> {
        self.channel
            .request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// Deletes link `index` (both ends, for a veth). A link that is already gone (`ENODEV`)
    /// is not an error.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self
            .channel
            .request(RouteNetlinkMessage::DelLink(message), 0)
        {
            Ok(_) => Ok(()),
            Err(f) if f.errno() == Some(libc::ENODEV) => Ok(()),
            Err(f) => Err(f.during(Operation::DeleteLink(index))),
        }
    }

    /// Adds `address/prefix` to link `index`, with the broadcast address when `prefix` < 31.
    /// `EEXIST` if the link has it already.
    pub fn add_address4(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut message = address_message(index, IpAddr::V4(address), prefix);
        if prefix < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let broadcast = Ipv4Addr::from(u32::from(address) | host_bits);
            message
                .attributes
                .push(AddressAttribute::Broadcast(broadcast));
        }
        let operation = Operation::AddAddress {
            index,
            address: address.into(),
            prefix,
        };
        self.add_address(message, operation)
    }

    /// Adds `address/prefix` to link `index`, without duplicate address detection (the
    /// address is usable at once). `EEXIST` if the link has it already.
    pub fn add_address6(
        &mut self,
        index: u32,
        address: Ipv6Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut message = address_message(index, IpAddr::V6(address), prefix);
        message.header.flags = AddressHeaderFlags::Nodad;
        let operation = Operation::AddAddress {
            index,
            address: address.into(),
            prefix,
        };
        self.add_address(message, operation)
    }

    fn add_address(
        &mut self,
        message: AddressMessage,
        operation: Operation,
    ) -> Result<(), NetlinkError> {
        self.channel
            .request(
                RouteNetlinkMessage::NewAddress(message),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|f| f.during(operation))
    }

    /// Every IPv4 address of the namespace: (link index, address, prefix length).
    pub fn addresses4(&mut self) -> Result<Vec<(u32, Ipv4Addr, u8)>, NetlinkError> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self
            .channel
            .dump(RouteNetlinkMessage::GetAddress(request))
            .map_err(|f| f.during(Operation::ListAddresses))?;
        let mut addresses = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(message) = reply else {
                continue;
            };
            let mut local = None;
            let mut peer = None;
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                    AddressAttribute::Address(IpAddr::V4(a)) => peer = Some(*a),
                    _ => {}
                }
            }
            if let Some(address) = local.or(peer) {
                addresses.push((message.header.index, address, message.header.prefix_len));
            }
        }
        Ok(addresses)
    }

    /// Adds a default route of the main table via `gateway` on link `index`. `EEXIST` if one
    /// with the same metric exists.
    pub fn add_default_route4(
        &mut self,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<(), NetlinkError> {
        self.add_default_route(IpAddr::V4(gateway), index)
    }

    /// Adds a default route of the main table via `gateway` (link-local ones too) on link
    /// `index`. `EEXIST` if one with the same metric exists.
    pub fn add_default_route6(
        &mut self,
        gateway: Ipv6Addr,
        index: u32,
    ) -> Result<(), NetlinkError> {
        self.add_default_route(IpAddr::V6(gateway), index)
    }

    fn add_default_route(&mut self, gateway: IpAddr, index: u32) -> Result<(), NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(gateway);
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Static;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![
            RouteAttribute::Gateway(match gateway {
                IpAddr::V4(a) => RouteAddress::Inet(a),
                IpAddr::V6(a) => RouteAddress::Inet6(a),
            }),
            RouteAttribute::Oif(index),
        ];
        self.channel
            .request(
                RouteNetlinkMessage::NewRoute(message),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|f| f.during(Operation::AddDefaultRoute { gateway, index }))
    }

    /// The IPv4 unicast routes of the main table.
    pub fn routes4(&mut self) -> Result<Vec<Route4>, NetlinkError> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let replies = self
            .channel
            .dump(RouteNetlinkMessage::GetRoute(request))
            .map_err(|f| f.during(Operation::ListRoutes))?;
        Ok(replies.into_iter().filter_map(new_route4).collect())
    }

    /// The device of the IPv4 default route (lowest metric), if there is one.
    pub fn uplink(&mut self) -> Result<Option<Link>, NetlinkError> {
        let default = self
            .routes4()?
            .into_iter()
            .filter(|r| r.prefix == 0)
            .min_by_key(|r| r.metric);
        match default.and_then(|r| r.oif) {
            Some(index) => self.link_by_index(index),
            None => Ok(None),
        }
    }
}

/// A new link's name and MTU (0: none given).
fn named(name: &str, mtu: u32) -> Vec<LinkAttribute> {
    let mut attributes = vec![LinkAttribute::IfName(name.to_owned())];
    if mtu != 0 {
        attributes.push(LinkAttribute::Mtu(mtu));
    }
    attributes
}

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address_message(index: u32, address: IpAddr, prefix: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = family(address);
    message.header.prefix_len = prefix;
    message.header.scope = AddressScope::Universe;
    message.header.index = index;
    message.attributes = vec![
        AddressAttribute::Local(address),
        AddressAttribute::Address(address),
    ];
    message
}

fn new_link(reply: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(message) = reply else {
        return None;
    };
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mtu: 0,
        master: None,
        up: message.header.flags.contains(LinkFlags::Up),
        kind: None,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Controller(master) if master != 0 => link.master = Some(master),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

fn new_route4(reply: RouteNetlinkMessage) -> Option<Route4> {
    let RouteNetlinkMessage::NewRoute(message) = reply else {
        return None;
    };
    let header = &message.header;
    if header.address_family != AddressFamily::Inet || header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut route = Route4 {
        destination: Ipv4Addr::UNSPECIFIED,
        prefix: header.destination_prefix_length,
        gateway: None,
        oif: None,
        metric: 0,
    };
    let mut first_hop = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => route.destination = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.gateway = Some(*a),
            RouteAttribute::Oif(index) => route.oif = Some(*index),
            RouteAttribute::Priority(metric) => route.metric = *metric,
            RouteAttribute::MultiPath(hops) => first_hop = hops.first(),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    if let (None, Some(hop)) = (route.oif, first_hop) {
        route.oif = Some(hop.interface_index);
        route.gateway = hop.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
            _ => None,
        });
    }
    Some(route)
}

mod socket;
#[cfg(test)]
mod tests;
