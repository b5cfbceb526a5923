//! Booting real machines as root: namespaces, id maps, the overlay root, cgroup limits,
//! the supervisor and mm's init, exec, stop and kill. Each test has its own MM_ROOT and
//! machine names, and stops its machines when it ends, whatever happens.
//! Needs root and the default image (`scripts/setup` builds it); skips with the reason.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The first line of a uid_map: (inside, outside, count).
fn first_map(text: &str) -> (u64, u64, u64) {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().count() == 3)
        .unwrap_or_else(|| panic!("no map in {text:?}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

#[test]
fn a_machine_runs_as_root_of_its_own_id_block_with_its_name_and_mm_init_as_pid_1() {
    if !ready("a_machine_runs_as_root_of_its_own_id_block") {
        return;
    }
    let mut m = Machines::new();
    m.define(
        "who",
        r#"[exec]
command = ["/bin/sh", "-c", "id -u; hostname; cat /proc/self/uid_map; echo ppid=$PPID; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'"]"#,
    );
    let out = m.ok(&["run", "who"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(lines[1], "who", "{out}");
    let (inside, outside, count) = first_map(lines[2]);
    assert_eq!((inside, count), (0, 65536), "{out}");
    assert!(outside >= 524_288, "the block comes from mm's pool: {out}");
    assert!(
        out.contains("ppid=1"),
        "mm's init is the command's parent: {out}"
    );
    assert!(out.contains("mm-init"), "{out}");
    // Its own PID namespace: PID 1, the shell, and ls and grep.
    let processes: u32 = lines.last().unwrap().trim().parse().unwrap();
    assert!(processes <= 5, "{out}");
}

#[test]
fn whiteouts_and_opaque_directories_of_the_layers_are_honoured() {
    if !ready("whiteouts_and_opaque_directories_of_the_layers_are_honoured") {
        return;
    }
    let fixtures = shared_tempdir();
    let status = Command::new(repo().join("tests/fixtures/images/make-layered.sh"))
        .arg(fixtures.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "make-layered.sh");
    let mut m = Machines::new();
    m.define_with_image(
        "layered",
        &fixtures.path().join("layered"),
        r#"[exec]
command = ["/bin/sh", "-c", "ls /doomed/file; ls /opaque; cat /resurrect/file"]"#,
    );
    let (_, stdout, stderr) = m.mm(&["run", "layered"]);
    assert!(
        stderr.contains("/doomed/file: No such file"),
        "a whited-out file is gone: {stdout}{stderr}"
    );
    assert!(stdout.contains("after-opaque"), "{stdout}");
    assert!(
        !stdout.contains("old-a"),
        "an opaque directory hides the lower layers: {stdout}"
    );
    assert!(stdout.contains("back in layer 4 (new)"), "{stdout}");
}

#[test]
fn writes_persist_across_restarts_when_persistent_and_vanish_when_not() {
    if !ready("writes_persist_across_restarts") {
        return;
    }
    let sleep = r#"[exec]
command = ["/bin/sleep", "1000"]"#;
    let mut m = Machines::new();
    m.define("keep", &format!("{sleep}\n[storage]\npersistent = true"));
    m.define("lose", &format!("{sleep}\n[storage]\npersistent = false"));
    for name in ["keep", "lose"] {
        m.ok(&["start", name]);
        m.ok(&["exec", name, "--", "sh", "-c", "echo kept > /root/note"]);
        m.ok(&["stop", name]);
        m.ok(&["start", name]);
    }
    assert_eq!(
        m.ok(&["exec", "keep", "--", "cat", "/root/note"]).trim(),
        "kept"
    );
    let (out, _, _) = m.mm(&["exec", "lose", "--", "cat", "/root/note"]);
    assert_eq!(out.status.code(), Some(1), "a volatile machine forgets");
    // rm refuses while running, then drops the writable layer.
    let (out, _, stderr) = m.mm(&["rm", "keep"]);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    m.ok(&["stop", "keep"]);
    let upper = m.state_dir().join("machines/keep/upper");
    assert!(upper.join("root/note").exists());
    m.ok(&["rm", "keep"]);
    assert!(!upper.exists());
    m.ok(&["start", "keep"]);
    let (out, _, _) = m.mm(&["exec", "keep", "--", "cat", "/root/note"]);
    assert_eq!(out.status.code(), Some(1), "rm dropped the note");
}

#[test]
fn memory_and_pids_limits_are_applied_and_enforced() {
    if !ready("memory_and_pids_limits_are_applied_and_enforced") {
        return;
    }
    let mut m = Machines::new();
    // /dev/shm is a tmpfs: its pages are charged to the machine's memory cgroup.
    m.define(
        "hog",
        r#"[exec]
command = ["/bin/sh", "-c", "dd if=/dev/zero of=/dev/shm/big bs=1M count=100 2>/dev/null; echo survived"]
[resources]
memory = "32M""#,
    );
    m.define(
        "hog-free",
        r#"[exec]
command = ["/bin/sh", "-c", "dd if=/dev/zero of=/dev/shm/big bs=1M count=100 2>/dev/null; echo survived"]"#,
    );
    m.define(
        "forker",
        r#"[exec]
command = ["/bin/sh", "-c", "for i in $(seq 40); do sleep 5 & done; echo started"]
[resources]
pids = 16"#,
    );
    m.define(
        "limited",
        r#"[exec]
command = ["/bin/sleep", "1000"]
[resources]
memory = "48M"
pids = 20
cpu_weight = 50"#,
    );
    let (out, stdout, _) = m.mm(&["run", "hog"]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "killed by the OOM killer: {stdout}"
    );
    assert_eq!(m.ok(&["run", "hog-free"]).trim(), "survived");
    let (_, _, stderr) = m.mm(&["run", "forker"]);
    assert!(stderr.contains("can't fork"), "{stderr}");

    m.ok(&["start", "limited"]);
    // The files this host's cgroup mode has (v1/hybrid: memory.limit_in_bytes in the
    // memory hierarchy; v2: memory.max in the one tree), found from its mounts, not from mm.
    let scope = "machine.slice/mm-limited.scope";
    let read = |file: PathBuf| {
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_owned()
    };
    let memory = read(cgroup_limit_file(
        scope,
        "memory",
        "memory.limit_in_bytes",
        "memory.max",
    ));
    assert_eq!(memory, (48u64 << 20).to_string());
    assert_eq!(
        read(cgroup_limit_file(scope, "pids", "pids.max", "pids.max")),
        "20"
    );
    // systemd's weight 50 is half of v1's default 1024 shares.
    let cpu = cgroup_limit_file(scope, "cpu", "cpu.shares", "cpu.weight");
    let expected = if cpu.ends_with("cpu.shares") {
        "512"
    } else {
        "50"
    };
    assert_eq!(read(cpu), expected);
    let dirs = cgroup_dirs(scope);
    let missing: Vec<_> = dirs.iter().filter(|d| !d.is_dir()).collect();
    assert!(
        missing.is_empty(),
        "a cgroup in every hierarchy: {missing:?}"
    );
    let leader = m.status("limited")["leader"].as_i64().unwrap();
    m.ok(&["stop", "limited"]);
    assert!(!alive(leader));
    let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "the cgroup is removed at stop: {left:?}");
}

#[test]
fn two_machines_get_disjoint_id_blocks_outside_the_hosts_ids() {
    if !ready("two_machines_get_disjoint_id_blocks") {
        return;
    }
    let mut m = Machines::new();
    let sleep = "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]";
    m.define("one", sleep).define("two", sleep);
    m.ok(&["start", "one"]);
    m.ok(&["start", "two"]);
    let one = first_map(&m.ok(&["exec", "one", "--", "cat", "/proc/self/uid_map"]));
    let two = first_map(&m.ok(&["exec", "two", "--", "cat", "/proc/self/uid_map"]));
    for (_, outside, count) in [one, two] {
        assert!(outside >= 65536 && count == 65536);
    }
    assert!(
        one.1 + one.2 <= two.1 || two.1 + two.2 <= one.1,
        "{one:?} and {two:?} overlap"
    );
    // The block is the machine's: the same after a restart.
    m.ok(&["stop", "one"]);
    m.ok(&["start", "one"]);
    let again = first_map(&m.ok(&["exec", "one", "--", "cat", "/proc/self/uid_map"]));
    assert_eq!(again, one);
}

#[test]
fn a_machine_cannot_write_host_files_it_was_not_given() {
    if !ready("a_machine_cannot_write_host_files_it_was_not_given") {
        return;
    }
    let host = shared_tempdir();
    let given = host.path().join("given");
    let owned = host.path().join("root-owned");
    std::fs::write(&given, "host\n").unwrap();
    std::fs::write(&owned, "host\n").unwrap();
    set_mode(&owned, 0o644);
    let mut m = Machines::new();
    m.define(
        "jail",
        &format!(
            r#"[exec]
command = ["/bin/sleep", "1000"]
[storage]
binds = [
  {{ source = "{}", target = "/given", readonly = true }},
  {{ source = "{}", target = "/owned" }},
]"#,
            given.display(),
            owned.display()
        ),
    );
    m.ok(&["start", "jail"]);
    let attempt = |script: &str| m.mm(&["exec", "jail", "--", "sh", "-c", script]).0.status;
    assert!(!attempt("echo x > /given").success(), "a read-only bind");
    assert!(
        !attempt("echo x > /owned").success(),
        "host root's file: the machine's root is not host root"
    );
    assert!(!attempt("echo 1 > /proc/sys/kernel/sysrq").success());
    assert!(!attempt("echo x > /sys/kernel/uevent_helper").success());
    assert!(!attempt("mknod /tmp/sda b 8 0 && head -c1 /tmp/sda").success());
    assert_eq!(std::fs::read_to_string(&given).unwrap(), "host\n");
    assert_eq!(std::fs::read_to_string(&owned).unwrap(), "host\n");
    assert!(attempt("cat /given /owned").success(), "reading is fine");
}

#[test]
fn exec_passes_on_exit_codes_and_names_what_it_cannot_run() {
    if !ready("exec_passes_on_exit_codes") {
        return;
    }
    let mut m = Machines::new();
    m.define("box", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    let (out, _, stderr) = m.mm(&["exec", "box", "--", "true"]);
    assert_eq!(out.status.code(), Some(66), "not running: {stderr}");
    assert!(stderr.contains("not running"), "{stderr}");
    m.ok(&["start", "box"]);
    let (out, _, _) = m.mm(&["exec", "box", "--", "sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42));
    let (out, _, stderr) = m.mm(&["exec", "box", "--", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    let (out, stdout, _) = m.mm(&["exec", "box", "--user", "65534", "--", "id", "-u"]);
    assert!(out.status.success());
    assert_eq!(stdout.trim(), "65534");
}

#[test]
fn a_killed_supervisor_takes_its_machine_with_it_and_the_next_start_cleans_up() {
    if !ready("a_killed_supervisor_takes_its_machine_with_it") {
        return;
    }
    let mut m = Machines::new();
    m.define(
        "orphan",
        "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n[resources]\npids = 32",
    );
    m.ok(&["start", "orphan"]);
    let status = m.status("orphan");
    assert_eq!(status["state"], "running");
    let (supervisor, leader) = (
        status["supervisor"].as_i64().unwrap(),
        status["leader"].as_i64().unwrap(),
    );
    assert!(alive(leader));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("PID 1 is gone", || !alive(leader));
    eventually("the supervisor is gone", || !alive(supervisor));
    let (out, stdout, _) = m.mm(&["status", "orphan"]);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("stopped"), "{stdout}");
    m.ok(&["start", "orphan"]);
    assert_eq!(m.status("orphan")["state"], "running");
}

#[test]
fn two_starts_at_once_give_one_machine() {
    if !ready("two_starts_at_once_give_one_machine") {
        return;
    }
    let mut m = Machines::new();
    m.define("once", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    let mut codes: Vec<Option<i32>> = Vec::new();
    let mut errors = String::new();
    for out in run_together((0..2).map(|_| m.command(&["start", "once"]))) {
        codes.push(out.status.code());
        errors.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    codes.sort();
    assert_eq!(codes, [Some(0), Some(75)], "{errors}");
    assert!(errors.contains("already running"), "{errors}");
    assert_eq!(m.status("once")["state"], "running");
}

#[test]
fn a_machine_of_the_same_name_under_another_state_root_is_left_alone() {
    if !ready("a_machine_of_the_same_name_under_another_state_root_is_left_alone") {
        return;
    }
    // Root's cgroups and links are named host-wide after the machine: two state roots
    // (MM_ROOT) share them. The second start must refuse, not take the first's down.
    let body = "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n[resources]\npids = 32";
    let mut first = Machines::new();
    first.define("twin", body);
    let mut second = Machines::new();
    second.define("twin", body);
    first.ok(&["start", "twin"]);
    let leader = first.status("twin")["leader"].as_i64().unwrap();
    let (out, _, stderr) = second.mm(&["start", "twin"]);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("machine.slice/mm-twin.scope")
            && stderr.contains(&format!("still has processes ({leader}"))
            && stderr.contains("another supervisor or state root"),
        "{stderr}"
    );
    assert!(alive(leader), "the first machine's PID 1 was killed");
    assert_eq!(first.status("twin")["state"], "running");
    assert_eq!(second.status("twin")["state"], "stopped");
    // Once the first has stopped, the name is free.
    first.ok(&["stop", "twin"]);
    second.ok(&["start", "twin"]);
    assert_eq!(second.status("twin")["state"], "running");
}

#[test]
fn stop_and_kill_end_machines_even_those_that_ignore_sigterm() {
    if !ready("stop_and_kill_end_machines") {
        return;
    }
    let mut m = Machines::new();
    m.define("sleeper", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.define(
        "stubborn",
        r#"[exec]
command = ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"]"#,
    );
    m.ok(&["start", "sleeper"]);
    m.ok(&["kill", "sleeper", "--signal", "TERM"]);
    eventually("sleeper stops", || {
        m.mm(&["status", "sleeper"]).0.status.code() == Some(3)
    });
    let (_, stdout, _) = m.mm(&["status", "sleeper"]);
    assert!(stdout.contains("status 143"), "ended by SIGTERM: {stdout}");

    m.ok(&["start", "stubborn"]);
    let leader = m.status("stubborn")["leader"].as_i64().unwrap();
    let started = Instant::now();
    let out = m.ok(&["stop", "stubborn", "--timeout", "1"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(leader));
    assert!(started.elapsed() < Duration::from_secs(30));
    let (out, _, _) = m.mm(&["stop", "stubborn"]);
    assert_eq!(out.status.code(), Some(66), "stopping a stopped machine");
}

#[test]
fn a_private_network_has_only_loopback_and_it_is_up() {
    if !ready("a_private_network_has_only_loopback") {
        return;
    }
    let mut m = Machines::new();
    m.define(
        "island",
        r#"[exec]
command = ["/bin/sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags"]
[network]
mode = "private""#,
    );
    let out = m.ok(&["run", "island"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "lo", "{out}");
    let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP: {out}");
}

#[test]
fn a_failed_start_names_the_step_and_leaves_nothing_mounted() {
    if !ready("a_failed_start_names_the_step") {
        return;
    }
    let mut m = Machines::new();
    m.define(
        "broken",
        "[exec]\ncommand = [\"/nonexistent\", \"arg\"]\n[resources]\npids = 8",
    );
    let (out, _, stderr) = m.mm(&["run", "broken"]);
    assert_eq!(out.status.code(), Some(127), "{stderr}");
    assert!(stderr.contains("exec /nonexistent arg"), "{stderr}");
    let (out, _, stderr) = m.mm(&["start", "broken"]);
    assert_eq!(out.status.code(), Some(127), "{stderr}");
    let state = m.state_dir().display().to_string();
    let mounts = mounts_anywhere(&state);
    assert!(mounts.is_empty(), "still mounted: {mounts:#?}");
    assert!(!m.state_dir().join("run/broken/root").exists());
    let left: Vec<_> = cgroup_dirs("machine.slice/mm-broken.scope")
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(m.status("broken")["state"], "stopped");
}

#[test]
fn a_machine_mounts_only_in_its_own_namespaces_and_nothing_stays_after_stop() {
    if !ready("a_machine_mounts_only_in_its_own_namespaces") {
        return;
    }
    let mut m = Machines::new();
    m.define("mounter", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]");
    m.ok(&["start", "mounter"]);
    let status = m.status("mounter");
    let state = m.state_dir().display().to_string();
    let root = m.state_dir().join("run/mounter/root").display().to_string();
    let supervisor = mounts_of(status["supervisor"].as_i64().unwrap(), &root);
    assert!(!supervisor.is_empty(), "the supervisor mounts the root");
    let pid1 = mounts_of(status["leader"].as_i64().unwrap(), &state);
    assert!(
        pid1.iter().any(|l| l.split(' ').nth(4) == Some("/")),
        "PID 1's root is the overlay: {pid1:#?}"
    );
    let host = mounts_of(i64::from(std::process::id()), &state);
    assert!(host.is_empty(), "in the host's namespace: {host:#?}");
    m.ok(&["stop", "mounter"]);
    let left = mounts_anywhere(&state);
    assert!(left.is_empty(), "still mounted after stop: {left:#?}");
}
