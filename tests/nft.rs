//! mm's nftables table (`mm::network::nft`) against the kernel: each test runs in a network
//! namespace of its own (made by its thread) and reads the kernel's view back with `nft`.
//! Root only: elsewhere each test prints a SKIP line and passes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mm::network::nft::{self, Forward, MachineRules, NftError, Proto};
use nix::sched::{CloneFlags, unshare};
use serde_json::Value;

fn root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIP: {test}: needs root (network namespaces, nftables)");
    }
    root
}

/// Runs `f` on a thread of its own in a new network namespace.
fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_stdin(script: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    assert!(child.wait().expect("nft").success(), "nft -f: {script}");
}

fn ruleset() -> Vec<Value> {
    let json: Value = serde_json::from_str(&run("nft", &["-j", "list", "ruleset"])).expect("json");
    json["nftables"].as_array().expect("nftables array").clone()
}

fn has_mm_table(set: &[Value]) -> bool {
    set.iter()
        .any(|o| o["table"]["family"] == "ip" && o["table"]["name"] == "mm")
}

/// (chain, comment) of each rule of table ip mm, in the kernel's order.
fn mm_rules(set: &[Value]) -> Vec<(String, String)> {
    set.iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["family"] == "ip" && r["table"] == "mm")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("chain"), s("comment"))
        })
        .collect()
}

fn count(rules: &[(String, String)], comment: &str) -> usize {
    rules.iter().filter(|(_, c)| c == comment).count()
}

fn forward(proto: Proto, host_address: Option<Ipv4Addr>, host_port: u16, port: u16) -> Forward {
    Forward {
        proto,
        host_address,
        host_port,
        address: Ipv4Addr::new(10, 0, 0, 2),
        port,
    }
}

fn two_forwards() -> Vec<Forward> {
    vec![
        forward(Proto::Tcp, None, 8080, 80),
        forward(Proto::Udp, Some(Ipv4Addr::new(192, 0, 2, 1)), 53, 5353),
    ]
}

fn machine<'a>(
    name: &'a str,
    link: &'a str,
    last: u8,
    forwards: &'a [Forward],
) -> MachineRules<'a> {
    MachineRules {
        machine: name,
        link,
        address: Ipv4Addr::new(10, 0, 0, last),
        subnet: (Ipv4Addr::new(10, 0, 0, 0), 24),
        forwards,
    }
}

/// What `nft -f` is given for the same rules as `add(&machine("a", "ve-a", 2, &two_forwards()))`.
const SAME_RULES: &str = r#"
table ip mm {
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }
  chain output { type nat hook output priority -100; policy accept; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
  chain forward { type filter hook forward priority filter; policy accept; }
}
add rule ip mm postrouting ip saddr 10.0.0.2 ip daddr != 10.0.0.0/24 masquerade comment "mm:a"
add rule ip mm postrouting oifname "ve-a" ip saddr 127.0.0.0/8 ip daddr 10.0.0.2 masquerade comment "mm:a"
add rule ip mm forward ip saddr 10.0.0.2 accept comment "mm:a"
add rule ip mm forward ip daddr 10.0.0.2 ct state established,related accept comment "mm:a"
add rule ip mm forward ip daddr 10.0.0.2 tcp dport 80 ct status dnat accept comment "mm:a"
add rule ip mm prerouting fib daddr type local tcp dport 8080 dnat to 10.0.0.2:80 comment "mm:a"
add rule ip mm output fib daddr type local tcp dport 8080 dnat to 10.0.0.2:80 comment "mm:a"
add rule ip mm forward ip daddr 10.0.0.2 udp dport 5353 ct status dnat accept comment "mm:a"
add rule ip mm prerouting ip daddr 192.0.2.1 udp dport 53 dnat to 10.0.0.2:5353 comment "mm:a"
add rule ip mm output ip daddr 192.0.2.1 udp dport 53 dnat to 10.0.0.2:5353 comment "mm:a"
"#;

#[test]
fn rules_read_back_as_nft_writes_them() {
    if !root("rules_read_back_as_nft_writes_them") {
        return;
    }
    let forwards = two_forwards();
    let ours = in_netns(|| {
        nft::add(&machine("a", "ve-a", 2, &forwards)).expect("add");
        run("nft", &["list", "ruleset"])
    });
    let theirs = in_netns(|| {
        nft_stdin(SAME_RULES);
        run("nft", &["list", "ruleset"])
    });
    assert_eq!(ours, theirs);

    let set = in_netns(|| {
        nft::add(&machine("a", "ve-a", 2, &forwards)).expect("add");
        ruleset()
    });
    let chains: Vec<_> = set
        .iter()
        .filter_map(|o| o.get("chain"))
        .map(|c| {
            (
                c["name"].clone(),
                c["type"].clone(),
                c["hook"].clone(),
                c["prio"].clone(),
                c["policy"].clone(),
            )
        })
        .collect();
    let want = [
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("postrouting", "nat", "postrouting", 100),
        ("forward", "filter", "forward", 0),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(n, t, h, p)| {
            (
                Value::from(*n),
                Value::from(*t),
                Value::from(*h),
                Value::from(*p),
                Value::from("accept"),
            )
        })
        .collect();
    assert_eq!(chains, want);
}

#[test]
fn two_machines_then_remove_one_then_the_last() {
    if !root("two_machines_then_remove_one_then_the_last") {
        return;
    }
    let forwards = two_forwards();
    let other = [forward(Proto::Tcp, None, 2222, 22)];
    in_netns(|| {
        nft::add(&machine("a", "ve-a", 2, &forwards)).expect("add a");
        nft::add(&machine("b", "ve-b", 3, &other)).expect("add b");
        let rules = mm_rules(&ruleset());
        assert_eq!(
            (count(&rules, "mm:a"), count(&rules, "mm:b"), rules.len()),
            (10, 7, 17)
        );
        assert_eq!(nft::machines().expect("machines"), ["a", "b"]);

        nft::remove("a").expect("remove a");
        let set = ruleset();
        let rules = mm_rules(&set);
        assert_eq!((count(&rules, "mm:b"), rules.len()), (7, 7));
        assert_eq!(nft::machines().expect("machines"), ["b"]);
        nft::remove("a").expect("remove a again");

        nft::remove("b").expect("remove b");
        assert!(!has_mm_table(&ruleset()), "table ip mm left behind");
        assert!(nft::machines().expect("machines").is_empty());
    });
}

#[test]
fn adding_again_replaces() {
    if !root("adding_again_replaces") {
        return;
    }
    let forwards = two_forwards();
    let fewer = [forward(Proto::Udp, None, 9999, 999)];
    in_netns(|| {
        nft::add(&machine("a", "ve-a", 2, &forwards)).expect("add a");
        nft::add(&machine("b", "ve-b", 3, &[])).expect("add b");
        nft::add(&machine("a", "ve-a", 2, &fewer)).expect("add a again");
        let rules = mm_rules(&ruleset());
        assert_eq!((count(&rules, "mm:a"), count(&rules, "mm:b")), (7, 4));
        let text = run("nft", &["list", "table", "ip", "mm"]);
        assert!(
            text.contains("fib daddr type local udp dport 9999 dnat to 10.0.0.2:999"),
            "{text}"
        );
        assert!(!text.contains("8080"), "{text}");
    });
}

#[test]
fn remove_without_a_table_is_ok() {
    if !root("remove_without_a_table_is_ok") {
        return;
    }
    in_netns(|| {
        nft::remove("nothing").expect("remove without table");
        assert!(nft::machines().expect("machines").is_empty());
        assert!(nft::dropping_forward_chains().expect("chains").is_empty());
    });
}

#[test]
fn a_rule_without_tag_keeps_the_table() {
    if !root("a_rule_without_tag_keeps_the_table") {
        return;
    }
    in_netns(|| {
        nft::add(&machine("a", "ve-a", 2, &[])).expect("add a");
        run("nft", &["add", "rule", "ip", "mm", "forward", "counter"]);
        nft::remove("a").expect("remove a");
        let set = ruleset();
        assert!(has_mm_table(&set));
        assert_eq!(mm_rules(&set).len(), 1);
    });
}

#[test]
fn dropping_forward_chains_of_other_tables() {
    if !root("dropping_forward_chains_of_other_tables") {
        return;
    }
    in_netns(|| {
        nft::add(&machine("a", "ve-a", 2, &[])).expect("add a");
        nft_stdin(
            "table ip filter { chain FORWARD { type filter hook forward priority 0; policy drop; }; }
             table inet other {
                 chain pass { type filter hook forward priority 10; policy accept; }
                 chain inbound { type filter hook input priority 0; policy drop; }
             }
             table ip6 six { chain pass { type filter hook forward priority 0; policy drop; }; }",
        );
        assert_eq!(
            nft::dropping_forward_chains().expect("chains"),
            ["table ip filter, chain FORWARD"]
        );
        run(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "other",
                "dropping",
                "{ type filter hook forward priority 5; policy drop; }",
            ],
        );
        let mut found = nft::dropping_forward_chains().expect("chains");
        found.sort();
        assert_eq!(
            found,
            [
                "table inet other, chain dropping",
                "table ip filter, chain FORWARD"
            ]
        );
    });
}

#[test]
fn bad_rules_send_nothing() {
    let err = nft::add(&machine("a", "this-name-is-too-long", 2, &[])).expect_err("refused");
    assert!(matches!(err, NftError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("interface name"), "{err}");
}

#[test]
fn errors_name_what_failed() {
    if !root("errors_name_what_failed") {
        return;
    }
    in_netns(|| {
        // A chain `forward` of another type makes the batch fail at that chain.
        nft_stdin("table ip mm { chain forward { type filter hook input priority 0; }; }");
        let err = nft::add(&machine("a", "ve-a", 2, &[])).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("create chain forward in table ip mm") && text.contains("\"a\""),
            "{text}"
        );
        assert!(matches!(err, NftError::Refused { .. }), "{text}");
        // Nothing of the batch was applied.
        assert!(mm_rules(&ruleset()).is_empty());
    });
}

/// Two threads in one namespace add the same machine, and add and remove another, at once:
/// each change is applied whole over the others' (the generation check makes the loser list
/// again), so the end state has each machine's rules once.
#[test]
fn concurrent_changes_do_not_mix() {
    if !root("concurrent_changes_do_not_mix") {
        return;
    }
    const ROUNDS: usize = 30;
    let forwards = two_forwards();
    in_netns(|| {
        let netns = std::fs::File::open("/proc/thread-self/ns/net").expect("open netns");
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|worker| {
                    let (netns, forwards) = (&netns, &forwards);
                    s.spawn(move || {
                        nix::sched::setns(netns, CloneFlags::CLONE_NEWNET).expect("setns");
                        for _ in 0..ROUNDS {
                            nft::add(&machine("a", "ve-a", 2, forwards)).expect("add a");
                            if worker == 0 {
                                nft::add(&machine("b", "ve-b", 3, &[])).expect("add b");
                            } else {
                                nft::remove("b").expect("remove b");
                            }
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            }
        });
        let rules = mm_rules(&ruleset());
        assert_eq!(count(&rules, "mm:a"), 10, "{rules:?}");
        assert!([0, 4].contains(&count(&rules, "mm:b")), "{rules:?}");
    });
}

/// A real connection through the DNAT rules: netns A (the client, with mm's table) and
/// netns B (the machine, 10.0.0.2) joined by a veth; from A, connections to A's own address
/// port 8080 and to 127.0.0.1 port 8080 reach B's server on port 80.
#[test]
fn a_forward_carries_a_connection() {
    if !root("a_forward_carries_a_connection") {
        return;
    }
    let (tid_tx, tid_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare B");
            tid_tx
                .send(nix::unistd::gettid().as_raw())
                .expect("send tid");
            go_rx.recv().expect("veth is here");
            run("ip", &["link", "set", "lo", "up"]);
            run("ip", &["addr", "add", "10.0.0.2/24", "dev", "host0"]);
            run("ip", &["link", "set", "host0", "up"]);
            let listener =
                TcpListener::bind(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80)).expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut peers = Vec::new();
            while peers.len() < 2 && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        stream.write_all(b"hello from B\n").expect("write");
                        peers.push(peer.ip().to_string());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
            peers
        });
        in_netns(move || {
            let tid = tid_rx.recv().expect("tid").to_string();
            run(
                "ip",
                &[
                    "link", "add", "ve-t", "type", "veth", "peer", "name", "host0", "netns", &tid,
                ],
            );
            go_tx.send(()).expect("go");
            run("ip", &["link", "set", "lo", "up"]);
            run("ip", &["addr", "add", "10.0.0.1/24", "dev", "ve-t"]);
            run("ip", &["link", "set", "ve-t", "up"]);
            run(
                "sysctl",
                &["-q", "-w", "net.ipv4.conf.ve-t.route_localnet=1"],
            );
            let forwards = [forward(Proto::Tcp, None, 8080, 80)];
            nft::add(&machine("t", "ve-t", 2, &forwards)).expect("add");
            ready_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("server ready");
            for to in [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::LOCALHOST] {
                let addr = SocketAddrV4::new(to, 8080).into();
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connect to {to}:8080: {e}"));
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut answer = String::new();
                stream.read_to_string(&mut answer).expect("read");
                assert_eq!(answer, "hello from B\n", "via {to}");
            }
        });
        let peers = server
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // Both arrive from A's address: the second one masqueraded away from 127.0.0.1.
        assert_eq!(peers, ["10.0.0.1", "10.0.0.1"]);
    });
}

/// `add` of a machine with two forwards beside `nft -f` of the same rules: into a namespace
/// without the table, and over the same rules already there (`nft -f` flushes the table
/// first, in the same batch); then `remove` of the last machine beside `nft delete table`.
/// Prints medians. Run: `cargo test --release --test nft -- --ignored --nocapture timing`.
#[test]
#[ignore]
fn timing() {
    if !root("timing") {
        return;
    }
    const RUNS: usize = 100;
    let forwards = two_forwards();
    let rules = machine("a", "ve-a", 2, &forwards);
    let report = in_netns(|| {
        let mut times: [Vec<Duration>; 6] = Default::default();
        let file = |text: &str| {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(text.as_bytes()).expect("write");
            file
        };
        let (fresh, again) = (
            file(SAME_RULES),
            file(&format!("flush table ip mm\n{SAME_RULES}")),
        );
        let path = |f: &tempfile::NamedTempFile| f.path().to_str().expect("utf-8").to_owned();
        let (fresh, again) = (path(&fresh), path(&again));
        let mut time = |slot: usize, f: &mut dyn FnMut()| {
            let start = Instant::now();
            f();
            times[slot].push(start.elapsed());
        };
        for _ in 0..RUNS {
            time(0, &mut || nft::add(&rules).expect("add"));
            time(2, &mut || nft::add(&rules).expect("add again"));
            time(4, &mut || nft::remove("a").expect("remove"));
            time(1, &mut || drop(run("nft", &["-f", &fresh])));
            time(3, &mut || drop(run("nft", &["-f", &again])));
            time(5, &mut || {
                drop(run("nft", &["delete", "table", "ip", "mm"]))
            });
        }
        let medians: Vec<_> = times
            .into_iter()
            .map(|mut v| {
                v.sort();
                v[v.len() / 2]
            })
            .collect();
        format!(
            "median of {RUNS} (mm | nft): add, new table {:?} | {:?}; add over the same rules {:?} | {:?}; \
             remove, table goes {:?} | {:?}",
            medians[0], medians[1], medians[2], medians[3], medians[4], medians[5]
        )
    });
    eprintln!("{report}");
}
