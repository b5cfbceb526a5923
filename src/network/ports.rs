//! Host ports of a machine's forwards, held by its supervisor while it runs (as podman's
//! conmon holds them): no other program can take them meanwhile, and a port that is
//! already taken fails the start with the name of what holds it.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use super::addr::{PortForward, Proto};

/// One held port: a listening TCP socket or a bound UDP one. Packets for the port never
/// reach it: they are forwarded to the machine before the host would deliver them.
#[derive(Debug)]
pub enum Held {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

#[derive(Debug, thiserror::Error)]
#[error("host port {address}:{port}/{proto} is taken{by}: {source}", proto = .proto.name(), by = by(.holder.as_deref()))]
pub struct PortTaken {
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
    /// `PID (COMMAND)` of the process that holds it, when it can be found.
    pub holder: Option<String>,
    pub source: std::io::Error,
}

fn by(holder: Option<&str>) -> String {
    holder.map_or_else(String::new, |h| format!(" by {h}"))
}

/// Takes every host port of `forwards`; nothing is held if one is taken.
pub fn hold(forwards: &[PortForward]) -> Result<Vec<Held>, PortTaken> {
    let mut held = Vec::new();
    for forward in forwards {
        let address = forward.host_address.unwrap_or(Ipv4Addr::UNSPECIFIED);
        for (port, _) in forward.pairs() {
            let at = SocketAddrV4::new(address, port);
            let taken = match forward.proto {
                Proto::Tcp => TcpListener::bind(at).map(Held::Tcp),
                Proto::Udp => UdpSocket::bind(at).map(Held::Udp),
            };
            match taken {
                Ok(h) => held.push(h),
                Err(source) => {
                    return Err(PortTaken {
                        address,
                        port,
                        proto: forward.proto,
                        holder: find_holder(forward.proto, port),
                        source,
                    });
                }
            }
        }
    }
    Ok(held)
}

/// The process holding `port` (from /proc/net's socket tables and /proc/PID/fd).
fn find_holder(proto: Proto, port: u16) -> Option<String> {
    let tables = match proto {
        Proto::Tcp => ["/proc/net/tcp", "/proc/net/tcp6"],
        Proto::Udp => ["/proc/net/udp", "/proc/net/udp6"],
    };
    let inode = tables.iter().find_map(|t| {
        let text = std::fs::read_to_string(t).ok()?;
        socket_inode(&text, port, proto == Proto::Tcp)
    })?;
    let link = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()));
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("process {pid} ({})", comm.trim()));
        }
    }
    Some(format!(
        "a socket (inode {inode}) of a process mm may not see"
    ))
}

/// The inode of the socket bound to `port` in a /proc/net table (listening, for TCP).
fn socket_inode(table: &str, port: u16, tcp: bool) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = f.get(1)?;
        let (_, hex_port) = local.rsplit_once(':')?;
        let listening = !tcp || *f.get(3)? == "0A";
        (u16::from_str_radix(hex_port, 16).ok()? == port && listening)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_its_holder() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let forward: PortForward = format!("127.0.0.1:{port}:80").parse().unwrap();
        let e = hold(&[forward]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{port}/tcp is taken")),
            "{text}"
        );
        assert!(
            text.contains(&format!("process {}", std::process::id())),
            "{text}"
        );
        drop(listener);
        // Another test's child, forked while the listener was open, may hold it a moment.
        let mut again = hold(&[forward]);
        for _ in 0..100 {
            if again.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            again = hold(&[forward]);
        }
        let held = again.unwrap();
        assert_eq!(held.len(), 1);
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_err(),
            "held while it lives"
        );
    }
}
