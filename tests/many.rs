//! Many machines at once (issue 16, point 4; bench/many.sh is the 100-machine run): ten
//! busybox machines of one zone, with memory and pids limits, started at the same moment
//! in a network namespace of the test's own (standing in for the host): all up, all
//! registered with systemd-machined, each reachable by name from another (the zone's
//! hosts file), all stopped cleanly at once (no link, mount or registration left).
//! `MM_MANY=N` runs N machines (at most 253: the zone's /24).
//! Needs root, `ip`, `nsenter`, dbus and systemd-machined; skips with the reason otherwise.

mod support;

use std::process::Command;
use std::time::Instant;

use support::*;

fn count() -> usize {
    std::env::var("MM_MANY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
}

/// A network namespace of the test's own, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("mmt-many-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        let out = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "ip link set lo up: {out:?}");
        Self(name)
    }

    /// `mm ARGS` in the namespace, with the machines' state.
    fn mm(&self, machines: &Machines, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.0))
            .arg(MM)
            .args(args)
            .env("MM_PATH", machines.dir.path().join("machines"))
            .env("MM_ROOT", machines.dir.path().join("state"));
        command
    }

    /// The names of the links in the namespace.
    fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-o", "link"])
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The machines systemd-machined lists (its ListMachines, through busctl: machinectl
/// wants systemd as PID 1).
fn registered() -> Vec<String> {
    let out = Command::new("busctl")
        .args([
            "--system",
            "--json=short",
            "call",
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            "ListMachines",
        ])
        .output()
        .expect("busctl runs");
    assert!(out.status.success(), "busctl ListMachines: {out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["data"][0]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m[0].as_str().map(str::to_owned))
        .collect()
}

/// Runs every command at once; the failures, as `NAME: status: stderr`.
fn all_at_once(commands: Vec<(String, Command)>) -> Vec<String> {
    let (names, commands): (Vec<String>, Vec<Command>) = commands.into_iter().unzip();
    run_together(commands)
        .into_iter()
        .zip(names)
        .filter(|(out, _)| !out.status.success())
        .map(|(out, name)| {
            format!(
                "{name}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
        .collect()
}

#[test]
fn many_machines_start_register_answer_by_name_and_stop_at_once() {
    let test = "many_machines_start_register_answer_by_name_and_stop_at_once";
    if !ready(test) {
        return;
    }
    for tool in ["ip", "nsenter", "busctl"] {
        let installed = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join(tool).exists());
        if !installed {
            return skip(test, &format!("{tool} is not installed"));
        }
    }
    if let Err(why) = system_bus_with_machined() {
        return skip(test, &why);
    }
    let n = count();
    assert!(n <= 253, "MM_MANY={n}: a zone's /24 holds 253 machines");
    let net = Netns::new();
    let mut machines = Machines::new();
    let names: Vec<String> = (0..n).map(|i| format!("many-{i:03}")).collect();
    for name in &names {
        machines.define(
            name,
            "[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n[network]\nzone = \"tmany\"\n\
             [resources]\nmemory = \"32M\"\npids = 64\n",
        );
    }
    // Machines' own Drop stops them outside the namespace; stop them in it first.
    let _stop = OnDrop(|| {
        for name in &names {
            let _ = net
                .mm(&machines, &["stop", name, "--timeout", "1"])
                .output();
        }
    });
    // The image once, before the clock starts.
    let (out, _, stderr) = run(net.mm(
        &machines,
        &[
            "image",
            "import",
            &format!("oci:{}:latest", busybox().display()),
        ],
    ));
    assert!(out.status.success(), "import: {stderr}");

    let started = Instant::now();
    let failed = all_at_once(
        names
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    net.mm(&machines, &["start", name, "--no-systemd"]),
                )
            })
            .collect(),
    );
    let up = started.elapsed();
    assert!(failed.is_empty(), "starts that failed: {failed:#?}");
    eprintln!("{test}: {n} machines up in {:.2} s", up.as_secs_f64());

    let listed = registered();
    let missing: Vec<&String> = names.iter().filter(|m| !listed.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "not registered with systemd-machined: {missing:?} (machined has {listed:?})"
    );

    // Each machine by name from its neighbour (the last from the first).
    let unreachable: Vec<String> = (0..n)
        .filter_map(|i| {
            let (from, to) = (&names[i], &names[(i + 1) % n]);
            let (out, stdout, stderr) = run(net.mm(
                &machines,
                &["exec", from, "--", "ping", "-c", "1", "-W", "5", to],
            ));
            (!out.status.success()).then(|| format!("{from} → {to}: {stdout}{stderr}"))
        })
        .collect();
    assert!(
        unreachable.is_empty(),
        "not reachable by name: {unreachable:#?}"
    );
    eprintln!("{test}: each of {n} reached its neighbour by name");

    let stopping = Instant::now();
    let failed = all_at_once(
        names
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    net.mm(&machines, &["stop", name, "--timeout", "5"]),
                )
            })
            .collect(),
    );
    assert!(failed.is_empty(), "stops that failed: {failed:#?}");
    eprintln!(
        "{test}: {n} machines stopped in {:.2} s",
        stopping.elapsed().as_secs_f64()
    );
    let links: Vec<String> = net
        .links()
        .into_iter()
        .filter(|l| l.starts_with("vb-") || l.starts_with("vz-"))
        .collect();
    assert!(links.is_empty(), "links left: {links:?}");
    let mounts = mounts_anywhere(&machines.dir.path().display().to_string());
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    let listed = registered();
    let left: Vec<&String> = names.iter().filter(|m| listed.contains(m)).collect();
    assert!(left.is_empty(), "still registered: {left:?}");
}
