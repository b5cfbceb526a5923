//! Root-only tests of the netlink client. Each runs in a thread of its own that sits in a
//! fresh network namespace ("here"), with a second fresh one ("other") held open by a file;
//! both vanish, with every link made in them, when the thread ends. The kernel's view is read
//! back through the client's own dumps and through `ip -j`.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, unshare};
use serde_json::Value;

use super::{Netlink, NetlinkError, Route4};

/// The two namespaces of a test; the test's thread is in `here`.
struct Namespaces {
    here: File,
    other: File,
}

/// Runs `body` in a new thread in a fresh network namespace, or prints why not (not root).
fn in_netns(test: &str, body: impl FnOnce(&Namespaces) + Send + 'static) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: {test}: needs root to create network namespaces");
        return;
    }
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare the other network namespace");
        let other = File::open("/proc/thread-self/ns/net").expect("open the other namespace");
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare the test's network namespace");
        let here = File::open("/proc/thread-self/ns/net").expect("open the test's namespace");
        body(&Namespaces { here, other });
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// `ip -j ARGS` run in `netns` (the calling thread's namespace when `None`), parsed.
fn ip(netns: Option<&File>, args: &[&str]) -> Value {
    let mut command = Command::new("ip");
    command.arg("-j").args(args);
    if let Some(netns) = netns {
        let fd = netns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let output = command.output().expect("run ip");
    assert!(output.status.success(), "ip {args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("ip's JSON")
}

/// The entry of an `ip -j link`/`ip -j addr` list whose `ifname` is `name`.
fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|links| links.iter().find(|l| l["ifname"] == name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

fn inode(file: &File) -> u64 {
    file.metadata().expect("stat a namespace").ino()
}

#[test]
fn bridge_veth_master_up_address_route() {
    in_netns("bridge_veth_master_up_address_route", |ns| {
        let mut nl = Netlink::open().expect("open");
        let bridge = nl.add_bridge("mmbr0", 1450).expect("add bridge");
        let veth = nl
            .add_veth("ve-mm0", "host0", ns.other.as_fd(), 1400)
            .expect("add veth");
        let mtu = |nl: &mut Netlink| nl.link("mmbr0").expect("link").map(|l| l.mtu);
        assert_eq!(mtu(&mut nl), Some(1450));
        nl.set_master(veth, bridge).expect("set master");
        assert_eq!(
            mtu(&mut nl),
            Some(1400),
            "the kernel follows the smallest port"
        );
        nl.set_mtu(bridge, 1450).expect("set the bridge's MTU");
        nl.set_up(bridge).expect("bridge up");
        nl.set_up(veth).expect("veth up");
        nl.add_address4(bridge, Ipv4Addr::new(10, 99, 0, 1), 24)
            .expect("add address");

        // Our own dumps.
        let links = nl.links().expect("links");
        let b = links
            .iter()
            .find(|l| l.index == bridge)
            .expect("bridge listed");
        assert_eq!(
            (b.name.as_str(), b.kind.as_deref(), b.mtu, b.up, b.master),
            ("mmbr0", Some("bridge"), 1450, true, None)
        );
        let v = links.iter().find(|l| l.index == veth).expect("veth listed");
        assert_eq!(
            (v.name.as_str(), v.kind.as_deref(), v.mtu, v.up, v.master),
            ("ve-mm0", Some("veth"), 1400, true, Some(bridge))
        );
        assert!(links.iter().any(|l| l.name == "lo" && l.kind.is_none()));
        assert_eq!(nl.link("ve-mm0").expect("link").as_ref(), Some(v));
        assert_eq!(
            nl.link("host0").expect("link"),
            None,
            "the peer is not here"
        );
        assert!(nl.addresses4().expect("addresses").contains(&(
            bridge,
            Ipv4Addr::new(10, 99, 0, 1),
            24
        )));
        assert_eq!(
            nl.uplink().expect("uplink").map(|l| l.mtu),
            None,
            "no default route here"
        );

        // ip's view.
        let ip_links = ip(None, &["-d", "link", "show"]);
        let b = by_name(&ip_links, "mmbr0");
        assert_eq!(b["mtu"], 1450);
        assert_eq!(b["linkinfo"]["info_kind"], "bridge");
        assert!(b["flags"].as_array().expect("flags").contains(&"UP".into()));
        let v = by_name(&ip_links, "ve-mm0");
        assert_eq!(v["mtu"], 1400);
        assert_eq!(v["master"], "mmbr0");
        assert_eq!(v["linkinfo"]["info_kind"], "veth");
        let ip_addresses = ip(None, &["addr", "show", "dev", "mmbr0"]);
        let a = &by_name(&ip_addresses, "mmbr0")["addr_info"][0];
        assert_eq!(
            (&a["family"], &a["local"], &a["prefixlen"], &a["broadcast"]),
            (
                &"inet".into(),
                &"10.99.0.1".into(),
                &24.into(),
                &"10.99.0.255".into()
            )
        );

        // The peer, in the other namespace, through a socket opened there.
        let mut peer = Netlink::open_in(ns.other.as_fd()).expect("open in other");
        let here_now = File::open("/proc/thread-self/ns/net").expect("open own namespace");
        assert_eq!(inode(&here_now), inode(&ns.here), "the thread went back");
        let host0 = peer.link("host0").expect("link").expect("peer is there");
        assert_eq!(
            (host0.kind.as_deref(), host0.mtu, host0.master),
            (Some("veth"), 1400, None)
        );
        let gateway = Ipv4Addr::new(10, 99, 0, 1);
        peer.add_address4(host0.index, Ipv4Addr::new(10, 99, 0, 2), 24)
            .expect("peer address");
        peer.set_up(host0.index).expect("peer up");
        peer.add_default_route4(gateway, host0.index)
            .expect("default route");
        let again = peer.add_default_route4(gateway, host0.index);
        assert_eq!(again.map_err(|e| e.errno()), Err(Some(libc::EEXIST)));
        let routes = peer.routes4().expect("routes");
        assert!(
            routes.contains(&Route4 {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(gateway),
                oif: Some(host0.index),
                metric: 0,
            }),
            "{routes:?}"
        );
        assert!(
            routes
                .iter()
                .any(|r| r.destination == Ipv4Addr::new(10, 99, 0, 0)
                    && r.prefix == 24
                    && r.gateway.is_none()
                    && r.oif == Some(host0.index)),
            "{routes:?}"
        );
        assert_eq!(peer.uplink().expect("uplink").map(|l| l.mtu), Some(1400));
        let ip_routes = ip(Some(&ns.other), &["route", "show"]);
        let default = ip_routes
            .as_array()
            .and_then(|r| r.iter().find(|r| r["dst"] == "default"))
            .expect("ip sees the default route");
        assert_eq!(
            (&default["gateway"], &default["dev"]),
            (&"10.99.0.1".into(), &"host0".into())
        );
        let ip_peer = ip(Some(&ns.other), &["addr", "show", "dev", "host0"]);
        assert_eq!(
            by_name(&ip_peer, "host0")["addr_info"][0]["local"],
            "10.99.0.2"
        );
    });
}

#[test]
fn second_add_is_eexist() {
    in_netns("second_add_is_eexist", |ns| {
        let mut nl = Netlink::open().expect("open");
        let bridge = nl.add_bridge("mmbr1", 0).expect("add bridge");
        let err = nl.add_bridge("mmbr1", 0).expect_err("second bridge");
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        assert!(err.to_string().contains("create bridge mmbr1"), "{err}");

        nl.add_veth("ve-a", "pa", ns.other.as_fd(), 0)
            .expect("add veth");
        let err = nl
            .add_veth("ve-a", "pb", ns.other.as_fd(), 0)
            .expect_err("same host name");
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        let err = nl
            .add_veth("mmbr1", "pc", ns.other.as_fd(), 0)
            .expect_err("host name of the bridge");
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        let err = nl
            .add_veth("ve-b", "pa", ns.other.as_fd(), 0)
            .expect_err("peer name taken there");
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        assert_eq!(nl.link("ve-b").expect("link"), None, "nothing half-made");

        let address = Ipv4Addr::new(10, 98, 1, 1);
        nl.add_address4(bridge, address, 24).expect("address");
        let err = nl.add_address4(bridge, address, 24).expect_err("twice");
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        assert!(err.to_string().contains("10.98.1.1/24"), "{err}");
        let ip_links = ip(None, &["link", "show"]);
        let names: Vec<_> = ip_links
            .as_array()
            .expect("links")
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .collect();
        assert_eq!(names, ["lo", "mmbr1", "ve-a"]);
    });
}

#[test]
fn delete_of_a_missing_link_is_ok() {
    in_netns("delete_of_a_missing_link_is_ok", |ns| {
        let mut nl = Netlink::open().expect("open");
        nl.delete_link(4_000_000).expect("never existed");
        let veth = nl
            .add_veth("ve-del", "pdel", ns.other.as_fd(), 0)
            .expect("add veth");
        let mut other = Netlink::open_in(ns.other.as_fd()).expect("open in other");
        assert!(other.link("pdel").expect("link").is_some());
        nl.delete_link(veth).expect("delete");
        assert_eq!(nl.link("ve-del").expect("link"), None);
        assert_eq!(other.link("pdel").expect("link"), None, "the peer went too");
        nl.delete_link(veth).expect("already gone");

        let err = nl.set_up(veth).expect_err("up on a missing link");
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
        assert!(err.to_string().contains("bring up network link"), "{err}");
        let ip_links = ip(None, &["link", "show"]);
        assert_eq!(
            ip_links.as_array().map(Vec::len),
            Some(1),
            "only lo: {ip_links}"
        );
    });
}

#[test]
fn uplink_mtu_follows_the_default_route() {
    in_netns("uplink_mtu_follows_the_default_route", |ns| {
        let mut nl = Netlink::open().expect("open");
        assert_eq!(nl.uplink().expect("uplink").map(|l| l.mtu), None);
        let up = nl
            .add_veth("up0", "up0p", ns.other.as_fd(), 1280)
            .expect("add veth");
        nl.add_address4(up, Ipv4Addr::new(10, 97, 0, 2), 24)
            .expect("address");
        nl.set_up(up).expect("up");
        nl.add_default_route4(Ipv4Addr::new(10, 97, 0, 1), up)
            .expect("default route");
        assert_eq!(nl.uplink().expect("uplink").map(|l| l.mtu), Some(1280));
        nl.set_mtu(up, 1300).expect("set mtu");
        assert_eq!(nl.uplink().expect("uplink").map(|l| l.mtu), Some(1300));
        assert_eq!(
            by_name(&ip(None, &["link", "show", "up0"]), "up0")["mtu"],
            1300
        );

        // The kernel's own words come along with its errno.
        let err = nl.set_mtu(up, 1 << 20).expect_err("too large");
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
        assert!(
            matches!(
                &err,
                NetlinkError::Request {
                    message: Some(_),
                    ..
                }
            ),
            "the extended ack's text: {err:?}"
        );
    });
}

#[test]
fn ipv6_address_and_default_route() {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        eprintln!("SKIP: ipv6_address_and_default_route: the kernel has no IPv6");
        return;
    }
    in_netns("ipv6_address_and_default_route", |ns| {
        let mut nl = Netlink::open().expect("open");
        let v6 = nl
            .add_veth("v6", "v6p", ns.other.as_fd(), 0)
            .expect("add veth");
        let mut other = Netlink::open_in(ns.other.as_fd()).expect("open in other");
        let peer = other.link("v6p").expect("link").expect("peer");
        other.set_up(peer.index).expect("peer up");
        nl.set_up(v6).expect("up");
        let address: Ipv6Addr = "fd00:6d6d::2".parse().expect("address");
        nl.add_address6(v6, address, 64).expect("address");
        let again = nl.add_address6(v6, address, 64);
        assert_eq!(again.map_err(|e| e.errno()), Err(Some(libc::EEXIST)));
        let gateway: Ipv6Addr = "fd00:6d6d::1".parse().expect("gateway");
        nl.add_default_route6(gateway, v6).expect("default route");

        let addresses = ip(None, &["-6", "addr", "show", "dev", "v6"]);
        let info = by_name(&addresses, "v6")["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            .find(|a| a["local"] == "fd00:6d6d::2")
            .expect("ip sees the address")
            .clone();
        assert_eq!(info["prefixlen"], 64);
        assert_eq!(info["nodad"], true, "{info}");
        let routes = ip(None, &["-6", "route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], "fd00:6d6d::1", "{routes}");
        assert_eq!(routes[0]["dev"], "v6", "{routes}");
    });
}

/// Bridge + veth (peer into another namespace) + master + address + up, timed. Run with
/// `cargo test --lib network::netlink -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_bridge_veth_address_up() {
    in_netns("measure_bridge_veth_address_up", |ns| {
        const ROUNDS: usize = 200;
        let mut nl = Netlink::open().expect("open");
        let mut netlink = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let bridge = nl.add_bridge("mmbench0", 1500).expect("bridge");
            let veth = nl
                .add_veth("ve-bench", "host0", ns.other.as_fd(), 1500)
                .expect("veth");
            nl.set_master(veth, bridge).expect("master");
            nl.add_address4(bridge, Ipv4Addr::new(10, 96, 0, 1), 24)
                .expect("address");
            nl.set_up(bridge).expect("bridge up");
            nl.set_up(veth).expect("veth up");
            netlink.push(start.elapsed());
            nl.delete_link(veth).expect("delete veth");
            nl.delete_link(bridge).expect("delete bridge");
        }
        let other = format!("/proc/{}/fd/{}", std::process::id(), ns.other.as_raw_fd());
        let commands: [&[&str]; 6] = [
            &["link", "add", "mmbench0", "mtu", "1500", "type", "bridge"],
            &[
                "link", "add", "ve-bench", "mtu", "1500", "type", "veth", "peer", "name", "host0",
                "netns", &other,
            ],
            &["link", "set", "ve-bench", "master", "mmbench0"],
            &["addr", "add", "10.96.0.1/24", "dev", "mmbench0"],
            &["link", "set", "mmbench0", "up"],
            &["link", "set", "ve-bench", "up"],
        ];
        let mut commands_time = Vec::with_capacity(ROUNDS / 4);
        for _ in 0..ROUNDS / 4 {
            let start = Instant::now();
            for args in commands {
                let status = Command::new("ip").args(args).status().expect("ip");
                assert!(status.success(), "ip {args:?}");
            }
            commands_time.push(start.elapsed());
            let index = nl.link("ve-bench").expect("link").expect("made").index;
            nl.delete_link(index).expect("delete veth");
            let index = nl.link("mmbench0").expect("link").expect("made").index;
            nl.delete_link(index).expect("delete bridge");
        }
        eprintln!("netlink: {}", summary(&mut netlink));
        eprintln!("six ip commands: {}", summary(&mut commands_time));
    });
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let total: Duration = times.iter().sum();
    let count = u32::try_from(times.len()).unwrap_or(u32::MAX).max(1);
    format!(
        "median {:?}, mean {:?}, min {:?}, max {:?} over {} rounds",
        times[times.len() / 2],
        total / count,
        times[0],
        times[times.len() - 1],
        times.len()
    )
}
