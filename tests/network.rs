//! Machines with a network of their own (veth pairs, zones, NAT, port forwards), as root.
//!
//! Each test makes a "host" network namespace where mm runs (through `nsenter --net`) and
//! an "outside" one joined to it by a veth pair, with a server on the outside's address:
//! machines reach it through the host's NAT. Packets go only to addresses these namespaces
//! were given (198.18.0.0/24 and mm's own). Checks read the kernel's own view: `ip -j` and
//! `nft -j` inside the test's host namespace.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use support::*;

const HOST_ADDRESS: &str = "198.18.0.1";
const OUTSIDE_ADDRESS: &str = "198.18.0.2";
const OUTSIDE_PORT: u16 = 8000;

/// A host namespace with an uplink to an outside namespace, which serves `hello` on
/// OUTSIDE_ADDRESS:OUTSIDE_PORT. Both go when it is dropped.
struct Net {
    host: String,
    outside: String,
    server: Option<std::process::Child>,
    served: tempfile::TempDir,
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Net {
    fn new(uplink_mtu: u32) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let (host, outside) = (format!("mmt-host-{id}"), format!("mmt-out-{id}"));
        for ns in [&host, &outside] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &host, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns",
            &outside,
        ]);
        let mtu = uplink_mtu.to_string();
        ip(&["-n", &host, "link", "set", "uplink", "mtu", &mtu, "up"]);
        ip(&["-n", &outside, "link", "set", "eth0", "mtu", &mtu, "up"]);
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{HOST_ADDRESS}/24"),
            "dev",
            "uplink",
        ]);
        ip(&[
            "-n",
            &outside,
            "addr",
            "add",
            &format!("{OUTSIDE_ADDRESS}/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &host,
            "route",
            "add",
            "default",
            "via",
            OUTSIDE_ADDRESS,
        ]);
        let served = tempfile::tempdir().unwrap();
        std::fs::write(served.path().join("hello"), "hello from outside\n").unwrap();
        let server = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{outside}"))
            .args(["busybox", "httpd", "-f", "-v", "-p"])
            .arg(format!("{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}"))
            .arg("-h")
            .arg(served.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("busybox httpd runs");
        let net = Self {
            host,
            outside,
            server: Some(server),
            served,
        };
        eventually("the outside server listens", || {
            listening(&net.outside, OUTSIDE_PORT)
        });
        net
    }

    /// `mm ARGS` in the host namespace, with the state of `machines`.
    fn mm(&self, machines: &Machines, args: &[&str]) -> (std::process::Output, String, String) {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg(MM)
            .args(args)
            .env("MM_PATH", machines.dir.path().join("machines"))
            .env("MM_ROOT", machines.dir.path().join("state"));
        run(command)
    }

    fn ok(&self, machines: &Machines, args: &[&str]) -> String {
        let (out, stdout, stderr) = self.mm(machines, args);
        assert!(
            out.status.success(),
            "mm {args:?}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        stdout
    }

    fn in_host(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.host))
            .args(args);
        command
    }

    fn in_outside(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.outside))
            .args(args);
        command
    }

    /// The host namespace's links, by name.
    fn links(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&ip(&["-n", &self.host, "-j", "-d", "link"])).unwrap()
    }

    fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    /// `nft list ruleset` of the host namespace.
    fn ruleset(&self) -> String {
        let out = self
            .in_host(&["nft", "list", "ruleset"])
            .output()
            .expect("nft runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the outside server logged (busybox httpd -v: one line per request, with the
    /// client's address).
    fn server_log(&mut self) -> String {
        let mut server = self.server.take().expect("the server runs");
        let _ = server.kill();
        let out = server.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in [&self.host, &self.outside] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = &self.served;
    }
}

/// Whether something listens on TCP `port` in the namespace `ns`.
fn listening(ns: &str, port: u16) -> bool {
    let tables = ip(&[
        "netns",
        "exec",
        ns,
        "cat",
        "/proc/net/tcp",
        "/proc/net/tcp6",
    ]);
    tables.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1)
            .is_some_and(|a| a.ends_with(&format!(":{port:04X}")))
            && f.get(3) == Some(&"0A")
    })
}

/// A child killed when dropped (a test that fails must not leave it behind).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn netns_ready(test: &str) -> bool {
    if !ready(test) {
        return false;
    }
    for tool in ["ip", "nft", "nsenter"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: scripts/setup installs it"
        );
    }
    true
}

/// `wget` inside a machine, bounded in time (busybox's own -T is broken in 1.35).
fn fetch(net: &Net, machines: &Machines, machine: &str, url: &str) -> (bool, String) {
    let (out, stdout, stderr) = net.mm(
        machines,
        &["exec", machine, "--", "timeout", "5", "wget", "-qO-", url],
    );
    (out.status.success(), format!("{stdout}{stderr}"))
}

fn host_fetch(cmd: &mut Command) -> String {
    let out = cmd.output().expect("wget runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_veth_machine_has_its_address_and_reaches_the_outside_through_nat() {
    if !netns_ready("a_veth_machine_reaches_the_outside") {
        return;
    }
    let mut net = Net::new(1400);
    let mut machines = Machines::new();
    machines.define(
        "v",
        "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nmode = \"veth\"\n",
    );
    net.ok(&machines, &["start", "v"]);
    // The host's side: ve-v, with the subnet's first address and the uplink's MTU.
    let link = net.link("ve-v").expect("ve-v is on the host");
    assert_eq!(link["mtu"], 1400, "{link}");
    let addrs = ip(&["-n", &net.host, "-j", "addr", "show", "ve-v"]);
    assert!(addrs.contains("\"10.123.0.1\""), "{addrs}");
    // The machine's side: host0 with the second address, a default route, the same MTU.
    let inside = net.ok(
        &machines,
        &["exec", "v", "--", "ip", "addr", "show", "host0"],
    );
    assert!(inside.contains("inet 10.123.0.2/30"), "{inside}");
    assert!(inside.contains("mtu 1400"), "{inside}");
    let routes = net.ok(&machines, &["exec", "v", "--", "ip", "route"]);
    assert!(
        routes.contains("default via 10.123.0.1 dev host0"),
        "{routes}"
    );
    let resolv = net.ok(&machines, &["exec", "v", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("Written by mm"), "{resolv}");
    // Out through NAT: the outside sees the host's address, not the machine's.
    let (ok, body) = fetch(
        &net,
        &machines,
        "v",
        &format!("http://{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}/hello"),
    );
    assert!(ok && body.contains("hello from outside"), "{body}");
    assert!(net.ruleset().contains("table ip mm"), "{}", net.ruleset());
    net.ok(&machines, &["stop", "v"]);
    let log = net.server_log();
    assert!(
        log.contains(HOST_ADDRESS) && !log.contains("10.123."),
        "{log}"
    );
    // Nothing is left: no link, no rules.
    assert!(net.link("ve-v").is_none());
    assert!(!net.ruleset().contains("table ip mm"), "{}", net.ruleset());
}

#[test]
fn a_forward_reaches_the_machine_from_the_host_localhost_and_the_outside() {
    if !netns_ready("a_forward_reaches_the_machine") {
        return;
    }
    let net = Net::new(1500);
    let mut machines = Machines::new();
    machines.define(
        "fwd",
        "[exec]\ncommand = [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/srv\"]\n\
         [network]\nmode = \"veth\"\nports = [\"8080:80\"]\n",
    );
    net.ok(&machines, &["start", "fwd"]);
    let status = net.ok(&machines, &["status", "fwd"]);
    assert!(
        status
            .contains("address 10.123.0.2/30 on host0 (ve-fwd on the host); forwards 8080:80/tcp"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&net.ok(&machines, &["status", "fwd", "--json"])).unwrap();
    assert_eq!(
        json["network"]["address"]["address"], "10.123.0.2/30",
        "{json}"
    );
    let url = |host: &str| format!("http://{host}:8080/");
    let wget = |host: &str| {
        ["timeout", "5", "busybox", "wget", "-qO-"]
            .iter()
            .map(|s| s.to_string())
            .chain([url(host)])
            .collect::<Vec<_>>()
    };
    for from in [HOST_ADDRESS, "127.0.0.1"] {
        let args = wget(from);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let body = host_fetch(&mut net.in_host(&args));
        assert!(
            body.contains("Hello from an mm machine"),
            "from the host to {from}: {body}"
        );
    }
    let args = wget(HOST_ADDRESS);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let body = host_fetch(&mut net.in_outside(&args));
    assert!(
        body.contains("Hello from an mm machine"),
        "from the outside: {body}"
    );
    // The machine's own connections to a port 8080 elsewhere are not caught by it.
    let ruleset = net.ruleset();
    assert!(ruleset.contains("dport 8080"), "{ruleset}");
    net.ok(&machines, &["stop", "fwd"]);
    assert!(!net.ruleset().contains("table ip mm"));
}

#[test]
fn a_taken_host_port_fails_the_start_and_leaves_nothing() {
    if !netns_ready("a_taken_host_port_fails_the_start") {
        return;
    }
    let net = Net::new(1500);
    let holder = Killed(
        net.in_host(&["busybox", "nc", "-l", "-p", "8081"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("nc runs"),
    );
    eventually("nc listens", || listening(&net.host, 8081));
    let mut machines = Machines::new();
    machines.define("clash", "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nmode = \"veth\"\nports = [\"8081:80\"]\n");
    let (out, _, stderr) = net.mm(&machines, &["start", "clash"]);
    drop(holder);
    assert!(!out.status.success());
    assert!(
        stderr.contains("host port 0.0.0.0:8081/tcp is taken by process"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(nc)") || stderr.contains("(busybox)"),
        "{stderr}"
    );
    assert!(net.link("ve-clash").is_none());
    assert!(!net.ruleset().contains("table ip mm"), "{}", net.ruleset());
}

#[test]
fn machines_of_a_zone_reach_each_other_by_name_and_the_bridge_goes_with_the_last() {
    if !netns_ready("machines_of_a_zone_reach_each_other") {
        return;
    }
    let net = Net::new(1450);
    let mut machines = Machines::new();
    machines
        .define("za", "[exec]\ncommand = [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/srv\"]\n[network]\nzone = \"t\"\n")
        .define("zb", "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nzone = \"t\"\n");
    net.ok(&machines, &["start", "za"]);
    net.ok(&machines, &["start", "zb"]);
    let bridge = net.link("vz-t").expect("the zone's bridge");
    assert_eq!(bridge["mtu"], 1450, "{bridge}");
    for member in ["vb-za", "vb-zb"] {
        let link = net.link(member).unwrap_or_else(|| panic!("{member}"));
        assert_eq!(link["master"], "vz-t", "{link}");
    }
    let (ok, body) = fetch(&net, &machines, "zb", "http://za/");
    assert!(ok && body.contains("Hello from an mm machine"), "{body}");
    let (ok, body) = fetch(
        &net,
        &machines,
        "zb",
        &format!("http://{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}/hello"),
    );
    assert!(ok && body.contains("hello from outside"), "{body}");
    net.ok(&machines, &["stop", "za"]);
    assert!(net.link("vz-t").is_some(), "the bridge stays while zb runs");
    let hosts = net.ok(&machines, &["exec", "zb", "--", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("\tza") && hosts.contains("\tzb"), "{hosts}");
    net.ok(&machines, &["stop", "zb"]);
    assert!(
        net.link("vz-t").is_none(),
        "the bridge goes with the zone's last machine"
    );
}

#[test]
fn after_a_killed_supervisor_the_next_mm_command_takes_the_network_away() {
    if !netns_ready("after_a_killed_supervisor") {
        return;
    }
    let net = Net::new(1500);
    let mut machines = Machines::new();
    machines.define("k", "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nzone = \"k\"\nports = [\"8082:80\"]\n");
    net.ok(&machines, &["start", "k"]);
    let status: serde_json::Value =
        serde_json::from_str(&net.ok(&machines, &["status", "k", "--json"])).unwrap();
    let supervisor = status["supervisor"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the supervisor is gone", || !alive(supervisor));
    assert!(
        net.ruleset().contains("table ip mm"),
        "rules stay until someone looks"
    );
    let (_, stdout, _) = net.mm(&machines, &["status", "k"]);
    assert!(stdout.contains("supervisor was killed"), "{stdout}");
    eventually("the machine's links are gone", || {
        net.link("vb-k").is_none()
    });
    assert!(net.link("vz-k").is_none(), "{:?}", net.links());
    assert!(!net.ruleset().contains("table ip mm"), "{}", net.ruleset());
    // And it starts again, with the same address.
    net.ok(&machines, &["start", "k"]);
    let again = net.ok(
        &machines,
        &["exec", "k", "--", "ip", "addr", "show", "host0"],
    );
    assert!(again.contains("inet 10.123.0.2/24"), "{again}");
    net.ok(&machines, &["stop", "k"]);
}

/// `command` (a test user's `mm`) in the test's host namespace.
fn in_netns(ns: &str, command: &Command) -> Command {
    let mut wrapped = Command::new("nsenter");
    wrapped
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

#[test]
fn a_rootless_veth_machine_gets_nat_and_forwards_through_slirp4netns() {
    if !netns_ready("a_rootless_veth_machine_gets_nat_and_forwards") {
        return;
    }
    let net = Net::new(1500);
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    let image = busybox();
    std::fs::write(
        machines.join("rlweb.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/srv\"]\n\
             [network]\nmode = \"veth\"\nports = [\"127.0.0.1:18080:80\"]\n",
            image.display()
        ),
    )
    .unwrap();
    user.give(dir.path());
    let as_user = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("MM_ROOT", dir.path().join("state"));
        run(in_netns(&net.host, &command))
    };
    let (out, stdout, stderr) = as_user(&["start", "rlweb"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    let (_, status, _) = as_user(&["status", "rlweb", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    // This machine's helper: other tests' run as the same user meanwhile.
    let helper = format!("slirp4netns .* {} tap0", status["leader"].as_i64().unwrap());
    let body = host_fetch(&mut net.in_host(&[
        "timeout",
        "5",
        "busybox",
        "wget",
        "-qO-",
        "http://127.0.0.1:18080/",
    ]));
    let (_, inside, _) = as_user(&["exec", "rlweb", "--", "ip", "addr", "show", "tap0"]);
    let (_, outside, _) = as_user(&[
        "exec",
        "rlweb",
        "--",
        "timeout",
        "5",
        "wget",
        "-qO-",
        &format!("http://{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}/hello"),
    ]);
    let (out, _, stderr) = as_user(&["stop", "rlweb"]);
    assert!(out.status.success(), "{stderr}");
    assert!(body.contains("Hello from an mm machine"), "{body}");
    assert!(inside.contains("inet 10.0.2.100/24"), "{inside}");
    assert!(outside.contains("hello from outside"), "{outside}");
    let helpers = Command::new("pgrep")
        .args(["-u", "mm-test", "-f", &helper])
        .output()
        .unwrap();
    assert!(
        helpers.stdout.is_empty(),
        "slirp4netns is left: {:?}",
        helpers
    );
}

#[test]
fn a_rootless_zone_joins_its_machines_gives_nat_and_forwards_and_goes_with_the_last() {
    if !netns_ready("a_rootless_zone_joins_its_machines") {
        return;
    }
    let net = Net::new(1500);
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    let image = busybox();
    let define = |name: &str, command: &str, ports: &str| {
        std::fs::write(
            machines.join(format!("{name}.toml")),
            format!(
                "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = {command}\n\
                 [network]\nzone = \"rz\"\n{ports}",
                image.display()
            ),
        )
        .unwrap();
    };
    define(
        "rzweb",
        r#"["/bin/httpd", "-f", "-p", "80", "-h", "/srv"]"#,
        "ports = [\"127.0.0.1:18081:80\"]\n",
    );
    define("rzcli", r#"["/bin/sleep", "600"]"#, "");
    user.give(dir.path());
    let as_user = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("MM_ROOT", dir.path().join("state"));
        run(in_netns(&net.host, &command))
    };
    let zone_dir = dir.path().join("state/run/.zones/rz");
    for name in ["rzweb", "rzcli"] {
        let (out, stdout, stderr) = as_user(&["start", name]);
        assert!(out.status.success(), "{name}: {stdout}{stderr}");
    }
    let (_, by_name, e1) = as_user(&[
        "exec",
        "rzcli",
        "--",
        "timeout",
        "5",
        "wget",
        "-qO-",
        "http://rzweb/",
    ]);
    let (_, inside, _) = as_user(&["exec", "rzcli", "--", "ip", "addr", "show", "host0"]);
    let (_, outside, e2) = as_user(&[
        "exec",
        "rzcli",
        "--",
        "timeout",
        "5",
        "wget",
        "-qO-",
        &format!("http://{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}/hello"),
    ]);
    let forwarded = host_fetch(&mut net.in_host(&[
        "timeout",
        "5",
        "busybox",
        "wget",
        "-qO-",
        "http://127.0.0.1:18081/",
    ]));
    assert!(
        by_name.contains("Hello from an mm machine"),
        "{by_name}{e1}"
    );
    assert!(
        inside.contains("inet 10.") && inside.contains("mtu 65520"),
        "{inside}"
    );
    assert!(outside.contains("hello from outside"), "{outside}{e2}");
    assert!(
        forwarded.contains("Hello from an mm machine"),
        "{forwarded}"
    );

    // The zone's namespaces, seen by root through its holder.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(zone_dir.join("keeper.json")).unwrap()).unwrap();
    let holder = record["holder"].as_i64().unwrap().to_string();
    let in_zone = |args: &[&str]| {
        let out = Command::new("nsenter")
            .args(["-t", &holder, "-U", "-n", "--"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let links = in_zone(&["ip", "-br", "link"]);
    assert!(
        links.contains("vz-rz") && links.contains("vb-rzweb") && links.contains("tap0"),
        "{links}"
    );

    // A killed supervisor: the next mm command takes its machine out of the zone.
    let (_, status, _) = as_user(&["status", "rzweb", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let supervisor = status["supervisor"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("rzweb's supervisor is gone", || !alive(supervisor));
    let (out, _, _) = as_user(&["status", "rzweb"]);
    assert_eq!(out.status.code(), Some(3));
    let rules = in_zone(&["nft", "list", "ruleset"]);
    assert!(
        !rules.contains("mm:rzweb") && rules.contains("mm:rzcli"),
        "{rules}"
    );
    assert!(!in_zone(&["ip", "-br", "link"]).contains("vb-rzweb"));
    let hosts = std::fs::read_to_string(zone_dir.join("hosts")).unwrap();
    assert!(
        !hosts.contains("rzweb") && hosts.contains("rzcli"),
        "{hosts}"
    );

    // The last machine ends the zone: keeper, slirp4netns and the zone's directory go.
    let (out, _, stderr) = as_user(&["stop", "rzcli"]);
    assert!(out.status.success(), "{stderr}");
    // (Other tests run slirp4netns as the same user meanwhile: this zone's has its socket.)
    let socket = zone_dir.join("slirp4netns.sock");
    let left = Command::new("pgrep")
        .args(["-u", "mm-test", "-f", &socket.to_string_lossy()])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "slirp4netns is left: {left:?}");
    // Ended (a zombie until whoever adopted it reaps it).
    let running = |pid: i64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    for who in ["keeper", "holder"] {
        let pid = record[who].as_i64().unwrap();
        eventually(&format!("the zone's {who} ends"), || !running(pid));
    }
    assert!(!zone_dir.exists(), "{} is left", zone_dir.display());
}

#[test]
fn a_host_firewall_that_drops_forwarded_packets_is_named_with_the_fix() {
    if !netns_ready("a_host_firewall_that_drops_forwarded_packets") {
        return;
    }
    let net = Net::new(1500);
    let status = net
        .in_host(&["nft", "add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut machines = Machines::new();
    machines.define(
        "fw",
        "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nmode = \"veth\"\n",
    );
    let (out, stdout, stderr) = net.mm(&machines, &["start", "fw"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "the host's firewall drops forwarded packets (table ip filter, chain FORWARD)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("iptables -I FORWARD -i ve-fw -j ACCEPT"),
        "{stderr}"
    );
    net.ok(&machines, &["stop", "fw"]);
}

#[test]
fn machined_shows_the_machines_address() {
    if !netns_ready("machined_shows_the_machines_address") {
        return;
    }
    if let Err(why) = system_bus_with_machined() {
        panic!("the system bus and machined: {why}");
    }
    let net = Net::new(1500);
    let mut machines = Machines::new();
    machines.define(
        "mdnet",
        "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nmode = \"veth\"\n",
    );
    net.ok(&machines, &["start", "mdnet"]);
    // What `machinectl status` shows (machinectl and busctl want systemd as PID 1): the
    // addresses machined reads in the machine's namespace, and the host's interface.
    let ask = |args: &[&str]| {
        let out = Command::new("dbus-send")
            .args([
                "--system",
                "--print-reply",
                "--dest=org.freedesktop.machine1",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let addresses = ask(&[
        "/org/freedesktop/machine1",
        "org.freedesktop.machine1.Manager.GetMachineAddresses",
        "string:mdnet",
    ]);
    let interfaces = ask(&[
        "/org/freedesktop/machine1/machine/mdnet",
        "org.freedesktop.DBus.Properties.Get",
        "string:org.freedesktop.machine1.Machine",
        "string:NetworkInterfaces",
    ]);
    let index = net.link("ve-mdnet").unwrap()["ifindex"].clone();
    net.ok(&machines, &["stop", "mdnet"]);
    // AF_INET (2), 10.123.0.2 as bytes.
    assert!(
        addresses.contains("int32 2 array of bytes [ 0a 7b 00 02 ]"),
        "{addresses}"
    );
    assert!(
        interfaces.contains(&format!("array [ int32 {index} ]")),
        "{interfaces}"
    );
}

#[test]
fn the_hosts_network_toml_moves_the_pools_and_a_bad_one_is_named() {
    if !netns_ready("the_hosts_network_toml_moves_the_pools") {
        return;
    }
    let net = Net::new(1500);
    let mut machines = Machines::new();
    machines.define(
        "pool",
        "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nmode = \"veth\"\n",
    );
    let config = machines.state_dir().join("network.toml");
    std::fs::create_dir_all(machines.state_dir()).unwrap();
    std::fs::write(&config, "pools = [\"10.200.0.0/16\"]\n").unwrap();
    net.ok(&machines, &["start", "pool"]);
    let status = net.ok(&machines, &["status", "pool"]);
    net.ok(&machines, &["stop", "pool"]);
    assert!(status.contains("address 10.200.0.2/30"), "{status}");
    std::fs::write(&config, "pools = [\"10.200.0.0/33\"]\n").unwrap();
    let (out, _, stderr) = net.mm(&machines, &["start", "pool"]);
    assert!(!out.status.success());
    assert!(
        stderr.contains("network.toml:1: pools: `33` is not a prefix length"),
        "{stderr}"
    );
}
