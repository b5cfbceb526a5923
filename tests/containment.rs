//! A machine cannot harm its host (issue 16, point 6): from inside a root machine and a
//! rootless one, as root inside, tests/fixtures/escape tries one attack at a time (sysrq,
//! the kernel keyring, a host disk's device node, mounting host disks, ptrace of and
//! signals to host processes, its process group, the host's cgroups) and the bombs (fork,
//! memory, a volatile machine's disk) run against the machine's limits. Each attack is its
//! own assertion, judged from the host as well as by what the probe says.
//! TIOCSTI into the caller's terminal is tests/security.rs's (`mm exec` and `mm run`).
//! Needs root (machines as root, test users, a C compiler); skips with the reason otherwise.

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// Builds tests/fixtures/escape into `dir`.
fn build_probe(dir: &Path) {
    let (out, stdout, stderr) = run({
        let mut c = Command::new(repo().join("tests/fixtures/escape/make.sh"));
        c.arg(dir);
        c
    });
    assert!(out.status.success(), "escape/make.sh: {stdout}{stderr}");
}

/// The host's first disk as MAJOR:MINOR, from /proc/partitions.
fn host_disk() -> String {
    let text = std::fs::read_to_string("/proc/partitions").unwrap();
    text.lines()
        .skip(2)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() == 4).then(|| format!("{}:{}", fields[0], fields[1]))
        })
        .unwrap_or_else(|| "8:0".to_owned())
}

/// Root's machine, or a test user's, with the probe bound at /escape.
struct Target {
    dir: tempfile::TempDir,
    user: Option<TestUser>,
    mode: &'static str,
}

impl Target {
    fn command(&self, args: &[&str]) -> Command {
        match &self.user {
            None => mm(self.dir.path(), args),
            Some(user) => {
                let mut c = user.mm(self.dir.path(), args);
                c.env("XDG_RUNTIME_DIR", self.dir.path().join("runtime"))
                    .env("XDG_DATA_HOME", self.dir.path().join("data"));
                c
            }
        }
    }

    /// `mm exec NAME -- /escape/escape ARGS`: exit code and standard output.
    fn probe(&self, name: &str, args: &[&str]) -> (Option<i32>, String) {
        let mut all = vec!["exec", name, "--", "/escape/escape"];
        all.extend(args);
        let (out, stdout, stderr) = run(self.command(&all));
        eprintln!(
            "{} {}: {}{}",
            self.mode,
            args.join(" "),
            stdout.trim(),
            stderr.trim()
        );
        (out.status.code(), stdout)
    }

    fn ok(&self, args: &[&str]) {
        let (out, stdout, stderr) = run(self.command(args));
        assert!(out.status.success(), "mm {args:?}: {stdout}{stderr}");
    }
}

fn target(user: Option<TestUser>, mode: &'static str) -> Target {
    let dir = shared_tempdir();
    build_probe(&dir.path().join("escape"));
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    set_mode(&machines, 0o755);
    if let Some(user) = &user {
        for sub in ["runtime", "data"] {
            let path = dir.path().join(sub);
            user.give(&path);
            set_mode(&path, 0o700);
        }
    }
    Target { dir, user, mode }
}

impl Target {
    /// Writes machines/NAME.toml: busybox sleeping, the probe bound, then `extra`.
    fn define(&self, name: &str, extra: &str) {
        let text = format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n\
             [storage]\npersistent = false\n\
             binds = [{{ source = \"{}\", target = \"/escape\", readonly = true }}]\n{extra}",
            busybox().display(),
            self.dir.path().join("escape").display()
        );
        std::fs::write(
            self.dir
                .path()
                .join("machines")
                .join(format!("{name}.toml")),
            text,
        )
        .unwrap();
    }

    /// Starts NAME; it is stopped when the guard is dropped.
    fn start(&self, name: &'static str) -> impl Drop + '_ {
        self.ok(&["start", name, "--no-systemd"]);
        OnDrop(move || {
            let _ = self
                .command(&["stop", name, "--timeout", "1"])
                .stdin(Stdio::null())
                .output();
        })
    }
}

/// Asserts the probe said `refused` (exit 0), naming the attack.
fn assert_refused(mode: &str, attack: &str, (code, stdout): &(Option<i32>, String)) {
    assert!(
        stdout.contains(&format!("{attack}: refused")) && *code == Some(0),
        "{mode}: {attack} was not refused: exit {code:?}: {stdout}"
    );
}

/// A host process to aim at: `sleep 600`, killed when dropped.
fn host_victim() -> KillOnDrop {
    KillOnDrop(
        Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn alive_and_untraced(victim: &mut KillOnDrop) -> bool {
    let pid = victim.0.id();
    victim.0.try_wait().unwrap().is_none()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["TracerPid:", "0"])
}

/// The cgroup directories named `mm-escape` anywhere at the top of the host's hierarchies.
fn escaped_cgroups() -> Vec<PathBuf> {
    cgroup_hierarchies()
        .iter()
        .map(|h| h.path.join("mm-escape"))
        .filter(|p| p.exists())
        .collect()
}

fn the_host_refuses_every_attack(t: &Target) {
    let mode = t.mode;
    t.define("escapee", "");
    let _running = t.start("escapee");
    let disk = host_disk();

    assert_refused(mode, "sysrq", &t.probe("escapee", &["sysrq"]));
    assert_refused(mode, "keyring", &t.probe("escapee", &["keyring"]));
    assert_refused(mode, "mknod", &t.probe("escapee", &["mknod", &disk]));
    assert_refused(mode, "mount", &t.probe("escapee", &["mount", &disk]));

    let mut victim = host_victim();
    let pid = victim.0.id().to_string();
    assert_refused(mode, "ptrace", &t.probe("escapee", &["ptrace", &pid]));
    assert!(
        alive_and_untraced(&mut victim),
        "{mode}: ptrace: the host process was traced or ended"
    );
    assert_refused(mode, "signal", &t.probe("escapee", &["signal", &pid]));
    assert!(
        alive_and_untraced(&mut victim),
        "{mode}: signal: the host process got the signal"
    );

    assert_refused(mode, "cgroup", &t.probe("escapee", &["cgroup"]));
    let escaped = escaped_cgroups();
    assert!(
        escaped.is_empty(),
        "{mode}: cgroup: made on the host: {escaped:?}"
    );

    // Its process group: SIGKILL to its group must reach neither `mm exec` nor what shares
    // the caller's process group on the host (a shell's job: here a sleep beside it, of
    // the same user as mm).
    let mut neighbour = match &t.user {
        None => Command::new("sleep"),
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                user.name,
                "--regid",
                "users",
                "--init-groups",
                "--",
            ])
            .arg("sleep");
            c
        }
    };
    neighbour.arg("600").process_group(0).stdin(Stdio::null());
    let mut neighbour = KillOnDrop(neighbour.spawn().unwrap());
    let group = neighbour.0.id() as i32;
    let mut exec = t.command(&["exec", "escapee", "--", "/escape/escape", "group"]);
    exec.process_group(group).stdin(Stdio::null());
    let (out, stdout, stderr) = run(exec);
    eprintln!(
        "{mode} group: {} {} ({})",
        stdout.trim(),
        stderr.trim(),
        out.status
    );
    assert!(
        stdout.contains("group: SIGKILL"),
        "{mode}: group: the probe did not run: {stdout}{stderr}"
    );
    // The probe killed itself: mm exec lives to report it, as 128+9.
    assert_eq!(
        out.status.code(),
        Some(137),
        "{mode}: group: the machine's SIGKILL to its process group killed mm exec ({})",
        out.status
    );
    assert!(
        neighbour.0.try_wait().unwrap().is_none(),
        "{mode}: group: the machine's SIGKILL to its process group killed a host process"
    );
}

/// The file with `oom_kill N` of the memory cgroup of the machine's PID 1 (v1
/// memory.oom_control, v2 memory.events), found through /proc/PID/cgroup: root's and a
/// user's alike.
fn oom_file(t: &Target, name: &str) -> PathBuf {
    let (_, stdout, _) = run(t.command(&["status", name, "--json"]));
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let leader = status["leader"]
        .as_i64()
        .expect("a running machine has a leader");
    let cgroups = std::fs::read_to_string(format!("/proc/{leader}/cgroup")).unwrap();
    let all = cgroup_hierarchies();
    cgroups
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let relative = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                let v1 = all
                    .iter()
                    .find(|h| !h.v2 && h.controllers.iter().any(|c| c == "memory"))?;
                Some(v1.path.join(relative).join("memory.oom_control"))
            } else if controllers.is_empty() {
                let v2 = all
                    .iter()
                    .find(|h| h.v2 && h.controllers.iter().any(|c| c == "memory"))?;
                Some(v2.path.join(relative).join("memory.events"))
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no memory cgroup for PID {leader}: {cgroups}"))
}

/// The OOM kills `file` counts; `None` once the cgroup is gone (the machine ended: its
/// PID 1 was a victim too).
fn oom_kills(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// The largest `N` of the probe's `memory: N MiB` / `fill: N MiB` lines.
fn furthest(stdout: &str, attack: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{attack}: ")))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

fn the_limits_bound_the_bombs(t: &Target) {
    let mode = t.mode;
    t.define("bomber", "[resources]\nmemory = \"32M\"\npids = 64\n");
    let _running = t.start("bomber");

    // Fork bomb: the pids limit stops it; the host still forks.
    let (code, stdout) = t.probe("bomber", &["forks"]);
    let forked: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("forks: stopped after "))
        .and_then(|l| l.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{mode}: forks: not stopped: exit {code:?}: {stdout}"));
    assert!(
        forked < 64 && stdout.contains("Resource temporarily unavailable"),
        "{mode}: forks: {stdout}"
    );
    assert!(
        Command::new("true").status().unwrap().success(),
        "{mode}: forks: the host cannot fork"
    );

    // Memory bomb: the memory limit's OOM killer ends the probe (SIGKILL: mm exec says 137).
    let oom = oom_file(t, "bomber");
    let before = oom_kills(&oom).unwrap_or(0);
    let (code, stdout) = t.probe("bomber", &["memory", "1024"]);
    assert_eq!(code, Some(137), "{mode}: memory: not killed: {stdout}");
    assert!(
        furthest(&stdout, "memory") <= 32,
        "{mode}: memory: got past the limit: {stdout}"
    );
    match oom_kills(&oom) {
        Some(after) => assert!(
            after > before,
            "{mode}: memory: the machine's cgroup saw no OOM kill"
        ),
        None => eprintln!("{mode}: memory: the OOM killer took the machine's PID 1 too"),
    }
}

fn a_volatile_machines_disk_is_bounded(t: &Target) {
    let mode = t.mode;
    // Its writable layer is a tmpfs whose pages are charged to the machine's memory
    // cgroup: the memory limit bounds a disk fill (the machine is OOM-killed, its tmpfs
    // goes at stop), not the host's RAM.
    t.define("filler", "[resources]\nmemory = \"32M\"\n");
    let _running = t.start("filler");
    let (code, stdout) = t.probe("filler", &["fill", "/fill", "1024"]);
    assert!(
        !stdout.contains("ALLOWED"),
        "{mode}: fill: wrote 1 GiB: {stdout}"
    );
    assert!(
        furthest(&stdout, "fill") <= 32,
        "{mode}: fill: got past the memory limit: exit {code:?}: {stdout}"
    );
    // Ended by ENOSPC (exit 0, `fill: stopped`) or by the OOM killer (137).
    assert!(
        code == Some(137) || stdout.contains("fill: stopped"),
        "{mode}: fill: neither ENOSPC nor an OOM kill bounded it: exit {code:?}: {stdout}"
    );
    // The machine's tmpfs went with it: nothing of it is mounted on the host.
    drop(_running);
    let left = mounts_anywhere(&t.dir.path().display().to_string());
    assert!(left.is_empty(), "{mode}: fill: mounts left: {left:#?}");
}

#[test]
fn a_root_machine_cannot_harm_its_host() {
    let test = "a_root_machine_cannot_harm_its_host";
    if !ready(test) {
        return;
    }
    let t = target(None, "root");
    the_host_refuses_every_attack(&t);
}

#[test]
fn a_rootless_machine_cannot_harm_its_host() {
    let test = "a_rootless_machine_cannot_harm_its_host";
    if !ready(test) {
        return;
    }
    let t = target(Some(test_user("mm-test", Some(300_000))), "rootless");
    the_host_refuses_every_attack(&t);
}

#[test]
fn a_root_machines_limits_bound_its_bombs() {
    let test = "a_root_machines_limits_bound_its_bombs";
    if !ready(test) {
        return;
    }
    let t = target(None, "root");
    the_limits_bound_the_bombs(&t);
    a_volatile_machines_disk_is_bounded(&t);
}

#[test]
fn a_rootless_machines_limits_bound_its_bombs() {
    let test = "a_rootless_machines_limits_bound_its_bombs";
    if !ready(test) {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    let t = target(Some(user), "rootless");
    if let Some(why) = rootless_limits_refused(&t) {
        return skip(test, &why);
    }
    the_limits_bound_the_bombs(&t);
    a_volatile_machines_disk_is_bounded(&t);
}

/// Why the test user's machine cannot have limits here (no delegated cgroup v2 subtree).
fn rootless_limits_refused(t: &Target) -> Option<String> {
    let (out, stdout, stderr) = run(t.command(&["host", "--json"]));
    assert!(out.status.success(), "mm host --json: {stderr}");
    let facts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    facts["cgroup"]["delegated"].is_null().then(|| {
        "no cgroup subtree is delegated to the test user here, so its machines get no limits"
            .to_owned()
    })
}
