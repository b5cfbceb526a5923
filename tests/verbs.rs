//! The verbs as podman and machinectl users reach for them: `mm exec NAME CMD ARGS…`
//! without `--`, `mm shell` from a pipe or /dev/null, `mm kill --all`/`--leader`, `mm ps`,
//! `mm list --json`'s running details, and the console's escape (`^]` three times).
//!
//! Machine names are global (machined, cgroups), and other test binaries run at the same
//! time: each test here names its machines `vb-…`, a name no other test uses.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Runs `command` with `input` on its standard input, which then ends. A command still
/// running after a minute is killed and the test fails: it would wait for ever (a
/// watchdog against a hang, not a measure of speed).
fn with_input(mut command: Command, input: &[u8]) -> (Output, String, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after 60 s: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn exec_needs_no_separator_and_gives_the_command_the_options_after_it() {
    // Parsing alone: a machine that does not run is the only complaint.
    let dir = shared_tempdir();
    let (out, _, stderr) = run(mm(dir.path(), &["exec", "nosuch", "ls", "-l", "--user"]));
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    if !ready("exec_needs_no_separator") {
        return;
    }
    let mut m = Machines::new();
    m.define("vb-exec", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.ok(&["start", "vb-exec"]);
    let without = m.ok(&["exec", "vb-exec", "ls", "-l", "/bin/busybox"]);
    assert!(without.starts_with("-r"), "ls -l ran: {without}");
    assert_eq!(
        m.ok(&["exec", "vb-exec", "--", "ls", "-l", "/bin/busybox"]),
        without,
        "`--` still works"
    );
    // mm's options before the command, the command's after it (`--` among them).
    assert_eq!(
        m.ok(&["exec", "vb-exec", "--user", "65534", "id", "-u"])
            .trim(),
        "65534"
    );
    let args = m.ok(&[
        "exec",
        "vb-exec",
        "sh",
        "-c",
        "echo \"$@\"",
        "sh",
        "--user",
        "0",
        "--",
        "-l",
    ]);
    assert_eq!(args.trim(), "--user 0 -- -l");
    let (out, _, stderr) = m.mm(&["exec", "vb-exec", "id", "--user"]);
    assert!(!out.status.success(), "id got --user: {stderr}");
    assert!(stderr.contains("id"), "{stderr}");
}

#[test]
fn an_exec_into_a_machine_that_stops_under_it_says_so() {
    if !ready("an_exec_into_a_machine_that_stops") {
        return;
    }
    let mut m = Machines::new();
    m.define("vb-gone", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.ok(&["start", "vb-gone"]);
    let exec = m
        .command(&["exec", "vb-gone", "sleep", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The exec'd sleep is in the machine before it stops.
    eventually("the exec'd sleep runs", || {
        m.ok(&["ps", "vb-gone", "--json"]).contains("600")
    });
    m.ok(&["stop", "vb-gone", "--timeout", "1"]);
    let out = exec.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c > 128),
        "{:?} {stderr}",
        out.status
    );
    assert!(
        stderr.contains("machine vb-gone stopped while the command ran"),
        "{stderr}"
    );
    // And once it is stopped, an exec says that it is not running.
    let (out, _, stderr) = m.mm(&["exec", "vb-gone", "true"]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(stderr.contains("not running"), "{stderr}");
}

#[test]
fn shell_reads_the_end_of_its_input_and_exits() {
    if !ready("shell_reads_the_end_of_its_input_and_exits") {
        return;
    }
    let mut m = Machines::new();
    m.define("vb-shell", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.ok(&["start", "vb-shell"]);
    // As `mm shell NAME < /dev/null`: busybox's interactive shell waited for ever.
    let (out, _, stderr) = with_input(m.command(&["shell", "vb-shell"]), b"");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // A script on standard input runs, and its exit status is mm's.
    let (out, stdout, stderr) = with_input(m.command(&["shell", "vb-shell"]), b"id -u\nexit 7\n");
    assert_eq!(out.status.code(), Some(7), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "0", "{stderr}");
}

/// The single-letter state of a host process (`S`, `T`, …), or `None` once it is gone.
fn state_of(pid: i64) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("State:"))?;
    line.split_whitespace().nth(1)?.chars().next()
}

/// The machine's processes as `mm ps --json` lists them.
fn processes(json: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn command_of(p: &serde_json::Value) -> String {
    let argv: Vec<&str> = p["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    argv.join(" ")
}

/// The definition of a machine with several processes: mm's init, a shell, two sleeps.
const SEVERAL: &str = "[exec]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1001 & sleep 1002 & wait\"]";

/// `mm ps` and `mm kill` on a machine of several processes (plus one `mm exec` started,
/// as user nobody), run through `mm` as `mm(ARGS)` gives it; `ps` must find them through
/// its cgroup or PID namespace as the caller's mode has it.
fn ps_and_kill(mm: &dyn Fn(&[&str]) -> Command, name: &str) {
    let ok = |args: &[&str]| {
        let (out, stdout, stderr) = run(mm(args));
        assert!(out.status.success(), "mm {args:?}: {stdout}{stderr}");
        stdout
    };
    ok(&["start", name]);
    let exec = mm(&["exec", name, "--user", "65534", "sleep", "1003"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exec = KillOnDrop(exec);
    let list = std::cell::RefCell::new(Vec::new());
    eventually(
        "the machine's four processes and the exec'd one are up",
        || {
            let now = processes(&ok(&["ps", name, "--json"]));
            let up = now.len() == 5 && now.iter().any(|p| command_of(p) == "sleep 1003");
            *list.borrow_mut() = now;
            up
        },
    );
    let list = list.into_inner();
    // Tree order: PID 1, the shell below it, the sleeps below that; then the exec'd one.
    let pid = |p: &serde_json::Value| p["pid"].as_i64().unwrap();
    assert_eq!(pid(&list[0]), 1, "{list:#?}");
    assert!(list[0]["ppid"].is_null());
    assert_eq!(list[1]["ppid"], 1);
    assert!(command_of(&list[1]).starts_with("/bin/sh -c"), "{list:#?}");
    let sleeps: Vec<String> = list[2..4].iter().map(command_of).collect();
    assert_eq!(sleeps, ["sleep 1001", "sleep 1002"], "{list:#?}");
    for p in &list[2..4] {
        assert_eq!(p["ppid"].as_i64(), Some(pid(&list[1])));
        assert_eq!(p["depth"], 2);
    }
    assert!(list[4]["ppid"].is_null(), "its parent is mm exec, outside");
    assert_eq!(list[4]["user"], "nobody");
    assert_eq!(list[4]["uid"], 65534);
    for p in &list[..4] {
        assert_eq!(p["user"], "root", "{p}");
        assert_eq!(p["uid"], 0, "{p}");
    }
    // Each is the host's process of that pid, and has that pid in the machine.
    for p in &list {
        let host = p["host_pid"].as_i64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert_eq!(
            nspid.split_whitespace().last().unwrap(),
            pid(p).to_string(),
            "{nspid}"
        );
    }
    let text = ok(&["top", name]);
    assert!(text.starts_with("    HPID     PID USER"), "{text}");
    assert!(text.contains("   \\_ sleep 1001"), "{text}");
    assert!(text.contains(" nobody sleep 1003"), "{text}");

    let host: Vec<i64> = list
        .iter()
        .map(|p| p["host_pid"].as_i64().unwrap())
        .collect();
    // By default (and with --leader) PID 1 alone.
    ok(&["kill", name, "--signal", "STOP"]);
    eventually("PID 1 is stopped", || state_of(host[0]) == Some('T'));
    assert!(host[1..].iter().all(|p| state_of(*p) != Some('T')));
    ok(&["kill", name, "--leader", "--signal", "CONT"]);
    eventually("PID 1 goes on", || state_of(host[0]) != Some('T'));
    // --all: every process, the exec'd one too; mm's init excepted (it passes signals on).
    ok(&["kill", name, "--all", "--signal", "STOP"]);
    eventually("all but mm's init are stopped", || {
        host[1..].iter().all(|p| state_of(*p) == Some('T'))
    });
    assert_ne!(state_of(host[0]), Some('T'));
    ok(&["kill", name, "--all", "--signal", "CONT"]);
    ok(&["kill", name, "--all"]);
    eventually("every process has ended", || {
        host.iter().all(|p| state_of(*p).is_none_or(|s| s == 'Z'))
    });
    let code = exec.0.wait().unwrap().code();
    assert_eq!(code, Some(143), "the exec'd sleep got SIGTERM");
    eventually("the machine has stopped", || {
        mm(&["status", name]).output().unwrap().status.code() == Some(3)
    });
    let (out, _, stderr) = run(mm(&["ps", name]));
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(stderr.contains("not running"), "{stderr}");
}

#[test]
fn ps_and_kill_all_see_every_process_of_a_machine_as_root() {
    if !ready("ps_and_kill_all_see_every_process_of_a_machine_as_root") {
        return;
    }
    let mut m = Machines::new();
    m.define("vb-procs", SEVERAL);
    ps_and_kill(&|args| m.command(args), "vb-procs");
}

#[test]
fn ps_and_kill_all_see_every_process_of_a_machine_rootless() {
    let test = "ps_and_kill_all_see_every_process_of_a_machine_rootless";
    if !is_root() {
        return skip(test, "creating users needs root");
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let image = dir.path().join("images/busybox");
    std::fs::write(
        dir.path().join("machines/vb-rprocs.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n{SEVERAL}\n[network]\nmode = \"host\"\n",
            image.display()
        ),
    )
    .unwrap();
    let runtime = dir.path().join("runtime");
    let data = dir.path().join("data");
    for path in [&runtime, &data] {
        std::fs::create_dir(path).unwrap();
        user.give(path);
    }
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", &data);
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "vb-rprocs", "--timeout", "1"]).output();
        let _ = mm(&["rm", "vb-rprocs"]).output();
    });
    ps_and_kill(&mm, "vb-rprocs");
}

#[test]
fn list_json_gives_a_running_machines_addresses_unit_and_plan_hash() {
    if !ready("list_json_gives_a_running_machines_addresses_unit_and_plan_hash") {
        return;
    }
    let mut m = Machines::new();
    m.define(
        "vb-listed",
        "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n[network]\nmode = \"veth\"",
    );
    m.define(
        "vb-unlisted",
        "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]",
    );
    let entry = |name: &str| -> serde_json::Value {
        let listed: serde_json::Value = serde_json::from_str(&m.ok(&["list", "--json"])).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .cloned()
            .unwrap()
    };
    let stopped = entry("vb-listed");
    assert_eq!(stopped["state"], "stopped");
    for key in ["addresses", "unit", "plan_hash"] {
        assert!(stopped.get(key).is_none(), "{key} while stopped: {stopped}");
    }
    m.ok(&["start", "vb-listed", "--no-systemd"]);
    let running = entry("vb-listed");
    assert_eq!(running["state"], "running");
    assert_eq!(running["plan_hash"], m.status("vb-listed")["plan_hash"]);
    assert!(
        running["plan_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        running["unit"].is_null(),
        "started without systemd: {running}"
    );
    // The address is the one the machine has on its link.
    let inside = m.ok(&[
        "exec",
        "vb-listed",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "host0",
    ]);
    let address = running["addresses"][0].as_str().unwrap();
    assert!(
        inside.contains(&format!("inet {address}/")),
        "{address}: {inside}"
    );
    assert_eq!(running["addresses"].as_array().unwrap().len(), 1);
    // A private network (the default) has loopback only: no address to list.
    m.ok(&["start", "vb-unlisted", "--no-systemd"]);
    assert_eq!(entry("vb-unlisted")["addresses"], serde_json::json!([]));
}

#[test]
fn three_escapes_on_the_console_kill_the_machine_as_nspawn_does() {
    let (_, help, _) = run(mm_bare(&["run", "--help"]));
    assert!(help.contains("^] three times within 1s"), "{help}");
    if !ready("three_escapes_on_the_console_kill_the_machine_as_nspawn_does") {
        return;
    }
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let mut m = Machines::new();
    m.define("vb-escape", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.define("vb-noescape", "[exec]\ncommand = [\"/bin/true\"]");
    // Not on a terminal: no banner.
    let (out, _, stderr) = m.mm(&["run", "vb-noescape"]);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("^]"), "{stderr}");

    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || std::fs::File::from(pty.slave.try_clone().unwrap());
    let mut command = m.command(&["run", "vb-escape"]);
    command.stdin(slave()).stdout(slave()).stderr(slave());
    let mut child = KillOnDrop(command.spawn().unwrap());
    drop(pty.slave);
    let printed = Arc::new(Mutex::new(Vec::new()));
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let sink = printed.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&printed.lock().unwrap()).into_owned();
    eventually("the banner is on the terminal", || {
        text().contains("Press ^] three times within 1s to kill the machine.")
    });
    eventually("the machine runs", || {
        m.status("vb-escape")["state"] == "running"
    });
    master.write_all(b"\x1d\x1d\x1d").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mm run still runs: {}", text());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(137), "{}", text());
    let after = m.status("vb-escape");
    assert_eq!(after["state"], "stopped", "{after}");
    assert_eq!(after["exit_status"], 137, "{after}");
}

#[test]
fn host_root_copies_into_a_running_machines_tmpfs_as_machined_does() {
    if !ready("host_root_copies_into_a_running_machines_tmpfs_as_machined_does") {
        return;
    }
    let mut m = Machines::new();
    m.define("vb-copyto", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.ok(&["start", "vb-copyto"]);
    let leader = m.status("vb-copyto")["leader"].as_i64().unwrap();
    // machined's CopyTo writes as host root through /proc/PID/root: on a tmpfs made in the
    // machine's user namespace that was EOVERFLOW (host uid 0 maps to nothing there).
    for dir in ["/tmp", "/run", "/dev/shm"] {
        let host = format!("/proc/{leader}/root{dir}/copied");
        std::fs::write(&host, format!("into {dir}\n"))
            .unwrap_or_else(|e| panic!("writing {host} as host root: {e}"));
        let inside = m.ok(&["exec", "vb-copyto", "cat", &format!("{dir}/copied")]);
        assert_eq!(inside, format!("into {dir}\n"));
        // The tmpfs' root is the machine's root's, so the machine still writes to it.
        m.ok(&["exec", "vb-copyto", "touch", &format!("{dir}/made-inside")]);
        let owner = m.ok(&["exec", "vb-copyto", "stat", "-c", "%u", dir]);
        assert_eq!(owner.trim(), "0", "{dir} belongs to the machine's root");
    }
}

#[test]
fn bind_puts_a_host_directory_into_a_running_machine() {
    if !ready("bind_puts_a_host_directory_into_a_running_machine") {
        return;
    }
    let mut m = Machines::new();
    m.define("vb-bind", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.ok(&["start", "vb-bind"]);
    let src = m.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), "from the host\n").unwrap();
    let src = src.to_str().unwrap();
    m.ok(&["bind", "vb-bind", src, "/srv"]);
    assert_eq!(
        m.ok(&["exec", "vb-bind", "cat", "/srv/file"]),
        "from the host\n"
    );
    // Read-only on request; the host sees what the machine sees.
    m.ok(&["exec", "vb-bind", "mkdir", "/ro"]);
    m.ok(&["bind", "vb-bind", src, "/ro", "--read-only"]);
    let (out, _, stderr) = m.mm(&["exec", "vb-bind", "touch", "/ro/new"]);
    assert!(!out.status.success(), "wrote into a read-only bind");
    assert!(stderr.contains("Read-only"), "{stderr}");
    // A symlink in the machine cannot aim the bind at the host: it resolves inside.
    m.ok(&["exec", "vb-bind", "ln", "-s", "/", "/escape"]);
    m.ok(&["exec", "vb-bind", "mkdir", "/inside"]);
    m.ok(&["bind", "vb-bind", src, "/escape/inside"]);
    assert_eq!(
        m.ok(&["exec", "vb-bind", "cat", "/inside/file"]),
        "from the host\n"
    );
    // A target the machine does not have is named, with the step.
    let (out, _, stderr) = m.mm(&["bind", "vb-bind", src, "/nosuch"]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains("/nosuch") && stderr.contains("find the target in the machine"),
        "{stderr}"
    );
    let (out, _, stderr) = m.mm(&["bind", "vb-stopped", src, "/srv"]);
    assert!(!out.status.success(), "{stderr}");
}

#[test]
fn bind_into_a_rootless_machine_works_as_its_user() {
    let test = "bind_into_a_rootless_machine_works_as_its_user";
    if !is_root() {
        return skip(test, "creating users needs root");
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let image = dir.path().join("images/busybox");
    std::fs::write(
        dir.path().join("machines/vb-rbind.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n\
             [network]\nmode = \"host\"\n",
            image.display()
        ),
    )
    .unwrap();
    let runtime = dir.path().join("runtime");
    let data = dir.path().join("data");
    let src = dir.path().join("src");
    for path in [&runtime, &data, &src] {
        std::fs::create_dir(path).unwrap();
        user.give(path);
    }
    std::fs::write(src.join("file"), "from the host\n").unwrap();
    user.give(&src);
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", &data);
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "vb-rbind", "--timeout", "1"]).output();
        let _ = mm(&["rm", "vb-rbind"]).output();
    });
    let (out, _, stderr) = run(mm(&["start", "vb-rbind"]));
    assert!(out.status.success(), "{stderr}");
    let (out, _, stderr) = run(mm(&["bind", "vb-rbind", src.to_str().unwrap(), "/srv"]));
    assert!(out.status.success(), "{stderr}");
    let (_, inside, stderr) = run(mm(&["exec", "vb-rbind", "cat", "/srv/file"]));
    assert_eq!(inside, "from the host\n", "{stderr}");
    let (out, _, stderr) = run(mm(&[
        "bind",
        "vb-rbind",
        src.to_str().unwrap(),
        "/mnt",
        "--read-only",
    ]));
    // busybox has no /mnt: named, with the step.
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains("find the target in the machine"),
        "{stderr}"
    );
    let (out, _, stderr) = run(mm(&[
        "bind",
        "vb-rbind",
        src.to_str().unwrap(),
        "/srv",
        "--read-only",
    ]));
    assert!(out.status.success(), "{stderr}");
    // On top of the first: the machine now sees a read-only copy there.
    let (out, _, stderr) = run(mm(&["exec", "vb-rbind", "touch", "/srv/new"]));
    assert!(
        !out.status.success(),
        "wrote into a read-only bind: {stderr}"
    );
}
