//! `[network]`: the mode, the zone, a static address, port forwards and the MTU.

use toml::Spanned;

use super::Checker;
use crate::definition::diagnostic::closest;
use crate::definition::raw::RawNetwork;
use crate::definition::{Located, Network, NetworkMode, ZoneName};
use crate::network::addr::{Ipv4Net, PortForward};

const MODES: [&str; 4] = ["host", "private", "veth", "zone"];

/// The smallest MTU IPv4 promises to carry unfragmented, and the largest a link takes.
const MTU_RANGE: std::ops::RangeInclusive<i64> = 576..=65535;

pub(super) fn network(c: &mut Checker<'_>, raw: RawNetwork) -> Network {
    let mode = mode(c, raw.mode.as_ref(), raw.zone.as_ref());
    let linked = matches!(mode, NetworkMode::Veth | NetworkMode::Zone(_));
    let address = raw.address.and_then(|a| {
        needs_link(c, linked, &a, "network.address");
        let span = a.span();
        address(c, &a).map(|value| Located { value, span })
    });
    let mut ports: Vec<Located<PortForward>> = Vec::new();
    for p in raw.ports {
        needs_link(c, linked, &p, "network.ports");
        match p.get_ref().parse::<PortForward>() {
            Ok(forward) => {
                if let Some(other) = ports.iter().find(|o| clash(&o.value, &forward)) {
                    c.at(
                        &p,
                        "network.ports",
                        format!(
                            "`{forward}` takes a host port that `{}` takes too",
                            other.value
                        ),
                    );
                } else {
                    ports.push(Located {
                        value: forward,
                        span: p.span(),
                    });
                }
            }
            Err(why) => {
                c.at(&p, "network.ports", why).help.push(
                    "e.g. \"8080:80\", \"127.0.0.1:5353:53/udp\", \"9000-9009:9000-9009\""
                        .to_owned(),
                );
            }
        }
    }
    let mtu = raw.mtu.and_then(|m| {
        needs_link(c, linked, &m, "network.mtu");
        if MTU_RANGE.contains(m.get_ref()) {
            u32::try_from(*m.get_ref()).ok()
        } else {
            c.at(
                &m,
                "network.mtu",
                format!(
                    "an MTU of {} is out of range ({} to {})",
                    m.get_ref(),
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            );
            None
        }
    });
    Network {
        mode,
        address,
        ports,
        mtu,
    }
}

fn needs_link<T>(c: &mut Checker<'_>, linked: bool, span: &Spanned<T>, key: &str) {
    if !linked {
        c.at(
            span,
            key,
            format!("`{key}` needs a network of its own with a link to the host"),
        )
        .help
        .push("set `mode = \"veth\"` or a `zone`".to_owned());
    }
}

fn mode(
    c: &mut Checker<'_>,
    mode: Option<&Spanned<String>>,
    zone: Option<&Spanned<String>>,
) -> NetworkMode {
    let zone = zone.and_then(|z| match ZoneName::new(z.get_ref()) {
        Ok(name) => Some((z, name)),
        Err(why) => {
            c.at(z, "network.zone", why);
            None
        }
    });
    let Some(mode) = mode else {
        return zone.map_or(NetworkMode::Private, |(_, name)| NetworkMode::Zone(name));
    };
    let chosen = match mode.get_ref().as_str() {
        "host" => NetworkMode::Host,
        "private" => NetworkMode::Private,
        "veth" => NetworkMode::Veth,
        "zone" => match &zone {
            Some((_, name)) => NetworkMode::Zone(name.clone()),
            None => {
                c.at(mode, "network.mode", "mode `zone` needs the zone's name")
                    .help
                    .push(
                        "add `zone = \"NAME\"` (machines of one zone reach each other)".to_owned(),
                    );
                NetworkMode::Private
            }
        },
        other => {
            let d = c.at(
                mode,
                "network.mode",
                format!("unknown network mode `{other}`"),
            );
            if other == "bridge" {
                d.help
                    .push("a bridge shared by machines is a zone: `zone = \"NAME\"`".to_owned());
            } else if let Some(guess) = closest(other, MODES) {
                d.help.push(format!("did you mean `{guess}`?"));
            }
            d.help.push(format!("valid modes: {}", MODES.join(", ")));
            NetworkMode::Private
        }
    };
    if let Some((z, _)) = zone
        && !matches!(chosen, NetworkMode::Zone(_))
    {
        c.at(
            z,
            "network.zone",
            format!(
                "a zone needs `mode = \"zone\"` (or no mode), not `{}`",
                mode.get_ref()
            ),
        );
    }
    chosen
}

/// A static address with its link's subnet: inside a private range, with room for the
/// host's side (the subnet's first address) and not one of the subnet's own addresses.
fn address(c: &mut Checker<'_>, raw: &Spanned<String>) -> Option<Ipv4Net> {
    let net: Ipv4Net = match raw.get_ref().parse() {
        Ok(net) => net,
        Err(why) => {
            c.at(raw, "network.address", why);
            return None;
        }
    };
    let subnet = net.network();
    let problem = if !(8..=30).contains(&net.prefix) {
        Some(format!(
            "a /{} subnet has no room for the host's side and the machine (use /8 to /30)",
            net.prefix
        ))
    } else if !net.address.is_private() {
        Some(format!(
            "{} is not in a private range (10/8, 172.16/12, 192.168/16)",
            net.address
        ))
    } else if Some(net.address) == subnet.nth(1) {
        Some(format!(
            "{} is the host's side of {subnet} (its first address)",
            net.address
        ))
    } else if !subnet.host_addresses().any(|a| a == net.address) {
        Some(format!(
            "{} is {subnet}'s own or broadcast address",
            net.address
        ))
    } else {
        None
    };
    match problem {
        Some(why) => {
            c.at(raw, "network.address", why);
            None
        }
        None => Some(net),
    }
}

/// Two forwards take one host port: the same protocol, overlapping ranges, and the same
/// host address (or either takes all of them).
fn clash(a: &PortForward, b: &PortForward) -> bool {
    let addresses =
        a.host_address.is_none() || b.host_address.is_none() || a.host_address == b.host_address;
    a.proto == b.proto
        && addresses
        && a.host_ports.first <= b.host_ports.last
        && b.host_ports.first <= a.host_ports.last
}
