//! kill -9 at every step: for each operation (`mm image import` as root and rootless, `mm
//! start` of a veth machine, `mm stop`, `mm rm`, `mm commit`), a bounded, seeded loop that
//! starts it, waits a seeded delay and SIGKILLs one of its processes (the CLI, the
//! supervisor, its registrar, the spawner, PID 1, the image worker), then runs the next
//! command on the same machine or image and checks that nothing is left and that mm tells
//! the truth (`faults_kit::checks`). Violations are counted, not stopped at; each test
//! prints its table (per operation, process and phase) and fails with the list.
//!
//! `MM_FAULTS_SEED=N` replays a run (each test prints its seed); `MM_FAULTS_KILLS=N` sets
//! the kills per test (`bench/faults.sh` runs it long).

mod faults_kit;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use faults_kit::checks::{Scene, Verified, settled};
use faults_kit::{
    Netns, Rng, Round, Tally, Target, Timing, failed, procs, round, run_bounded, timed,
};
use support::*;

/// One test's definitions and state (its own MM_ROOT), and how it runs mm.
struct Lab {
    dir: tempfile::TempDir,
    names: Vec<String>,
    netns: Option<Netns>,
    user: Option<TestUser>,
}

impl Lab {
    fn new(names: &[&str], body: &str, netns: Option<Netns>) -> Self {
        let mut machines = Machines::new();
        for name in names {
            machines.define(name, body);
        }
        // The lab stops its machines itself (through its namespace), not Machines' drop.
        let dir = std::mem::replace(&mut machines.dir, shared_tempdir());
        machines.names.clear();
        Self {
            dir,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            netns,
            user: None,
        }
    }

    fn rootless(user: TestUser) -> Self {
        let dir = shared_tempdir();
        user.give(&dir.path().join("state"));
        Self {
            dir,
            names: Vec::new(),
            netns: None,
            user: Some(user),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn mm(&self, args: &[&str]) -> Command {
        if let Some(user) = &self.user {
            let mut command = user.mm(self.dir.path(), args);
            command.env("MM_ROOT", self.root());
            return command;
        }
        let mut command = match &self.netns {
            Some(ns) => ns.command(MM),
            None => Command::new(MM),
        };
        command
            .args(args)
            .env("MM_PATH", self.dir.path().join("machines"))
            .env("MM_ROOT", self.root());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        run_bounded(self.mm(args))
    }

    /// `mm ARGS`, which must succeed here (set-up, not a checked step).
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mm {args:?}: {:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `mm ARGS` as a checked step: a violation when it fails.
    fn step(&self, args: &[&str], found: &mut Vec<String>) {
        let out = self.run(args);
        found.extend(failed(&format!("the next `mm {}`", args.join(" ")), &out));
    }

    /// The next commands on a machine after a kill: `mm stop` (which may find it stopped),
    /// then a start (which may find it started by a supervisor whose CLI was killed) and a
    /// stop, which must succeed.
    fn restart(&self, name: &str, found: &mut Vec<String>) {
        let out = self.run(&["stop", name, "--timeout", "2"]);
        let stopped = String::from_utf8_lossy(&out.stderr).contains("is not running");
        if !out.status.success() && !stopped {
            found.extend(failed(&format!("the next `mm stop {name}`"), &out));
        }
        // A start whose CLI was killed just after it spawned the supervisor goes on
        // (the supervisor outlives its caller): then the machine is up, and saying so is
        // the truth. The stop after it must work either way.
        let out = self.run(&["start", name]);
        let running = String::from_utf8_lossy(&out.stderr).contains("is already running");
        if !out.status.success() && !running {
            found.extend(failed(&format!("the next `mm start {name}`"), &out));
        }
        self.step(&["stop", name, "--timeout", "2"], found);
    }

    /// Every invariant of `checks`, over this lab.
    fn check(&self, verified: &mut Verified) -> Vec<String> {
        let root = self.root();
        let mm = |args: &[&str]| self.mm(args);
        let scene = Scene {
            root: &root,
            names: &self.names,
            netns: self.netns.as_ref().map(|n| n.name.as_str()),
            mm: &mm,
        };
        settled(&scene, verified)
    }

    fn find(&self, target: Target, name: &str, cli: u32) -> Option<u32> {
        procs::find(target, &self.root(), name, cli)
    }

    /// Which step a machine's start or stop is in, from the processes that exist now.
    fn machine_phase(&self, name: &str, cli: u32) -> String {
        let has = |t| self.find(t, name, cli).is_some();
        let cli_alive = Path::new(&format!("/proc/{cli}")).exists();
        let supervisor = has(Target::Supervisor);
        let phase = if !supervisor {
            "no supervisor (cli alone)"
        } else if has(Target::Spawner) {
            "spawner up (namespaces)"
        } else if has(Target::Pid1) && cli_alive {
            "pid1 up (root, network, exec)"
        } else if has(Target::Pid1) {
            "pid1 up, cli gone (running)"
        } else if cli_alive {
            "supervisor, no pid1"
        } else {
            "supervisor alone, cli gone"
        };
        phase.to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.run(&["stop", name, "--timeout", "1"]);
        }
    }
}

/// A delay in `0..1.3 × typical`, so kills fall over the whole operation and a little after.
fn delay(rng: &mut Rng, typical: Duration) -> Duration {
    let span = (typical.as_micros() as u64 * 13 / 10).max(1000);
    Duration::from_micros(rng.below(span))
}

/// Which quarter of the typical duration a delay is in.
fn bucket(delay: Duration, typical: Duration) -> String {
    let q = delay.as_micros() * 4 / typical.as_micros().max(1);
    match q {
        0 => "0-25% of its time".into(),
        1 => "25-50% of its time".into(),
        2 => "50-75% of its time".into(),
        3 => "75-100% of its time".into(),
        _ => "after it ended".into(),
    }
}

/// Records a round: a kill and the checker's findings, or a miss (whose duration then
/// joins `timing`).
fn tally(
    tally: &mut Tally,
    timing: &mut Timing,
    op: &str,
    target: Target,
    outcome: Round,
    found: Vec<String>,
) {
    match outcome {
        Round::Killed { phase, .. } => tally.record(op, target, &phase, found),
        Round::Missed { output, took } => {
            if output.status.success() {
                timing.add(took);
            }
            eprintln!(
                "faults: {op}: {} gone before its delay; the operation ended {}",
                target.name(),
                output.status
            );
            tally.miss(op, target, found);
        }
    }
}

fn veth_machine() -> &'static str {
    "[exec]\ncommand = [\"sleep\", \"1000\"]\n[network]\nmode = \"veth\"\n"
}

fn names(tag: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("f{tag}{}{i}", std::process::id() % 100_000))
        .collect()
}

#[test]
fn start_of_a_veth_machine_killed_at_every_step() {
    const TEST: &str = "start_of_a_veth_machine_killed_at_every_step";
    if !ready(TEST) {
        return;
    }
    let mut targets = vec![
        Target::Cli,
        Target::Supervisor,
        Target::Spawner,
        Target::Pid1,
    ];
    match system_bus_with_machined() {
        Ok(()) => targets.push(Target::Registrar),
        Err(e) => eprintln!("faults: no registrar to kill, machined is not here: {e}"),
    }
    let mut rng = Rng::new(faults_kit::seed(TEST));
    let kills = faults_kit::kills(12);
    let name = names("s", 1).remove(0);
    let lab = Lab::new(&[&name], veth_machine(), Some(Netns::new("start")));
    let mut verified = Verified::with_sources(&[&busybox()]);
    // The first start imports the image; the second is the typical one.
    lab.ok(&["start", &name]);
    lab.ok(&["stop", &name]);
    let (first, out) = timed(lab.mm(&["start", &name]));
    assert!(out.status.success(), "{out:?}");
    lab.ok(&["stop", &name]);
    eprintln!("faults: mm start takes {first:?} here");
    let mut timing = Timing::default();
    timing.add(first);
    let mut t = Tally::default();
    for _ in 0..kills {
        let typical = timing.typical();
        let target = rng.pick(&targets);
        // The spawner and the registrar live for a fraction of a start.
        let brief = matches!(target, Target::Spawner | Target::Registrar);
        let wait = if brief {
            Duration::from_micros(rng.below(2000))
        } else {
            delay(&mut rng, typical)
        };
        let outcome = round(
            lab.mm(&["start", &name]),
            wait,
            target,
            |cli| lab.find(target, &name, cli),
            |cli| lab.machine_phase(&name, cli),
        );
        let mut found = Vec::new();
        lab.restart(&name, &mut found);
        found.extend(lab.check(&mut verified));
        tally(&mut t, &mut timing, "start", target, outcome, found);
    }
    t.finish(TEST);
}

/// The Debian rootfs with systemd of tests/boot.rs (tests/fixtures/debian/make-rootfs.sh
/// builds it when missing, and keeps it between runs).
fn debian_rootfs() -> PathBuf {
    let dest = PathBuf::from("/var/tmp/mm-test-debian-bookworm");
    let status = Command::new(repo().join("tests/fixtures/debian/make-rootfs.sh"))
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success(), "make-rootfs.sh {}", dest.display());
    dest
}

#[test]
fn start_of_a_booted_machine_killed_at_every_step() {
    const TEST: &str = "start_of_a_booted_machine_killed_at_every_step";
    if !ready(TEST) {
        return;
    }
    let mut targets = vec![Target::Cli, Target::Supervisor, Target::Pid1];
    if system_bus_with_machined().is_ok() {
        targets.push(Target::Registrar);
    }
    let mut rng = Rng::new(faults_kit::seed(TEST));
    let kills = faults_kit::kills(4);
    let name = names("b", 1).remove(0);
    let rootfs = debian_rootfs();
    let mut lab = Lab::new(&[], "", None);
    let machines = lab.dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join(format!("{name}.toml")),
        format!(
            "[image]\nsource = \"rootfs:{}\"\n[exec]\nboot = true\n[network]\nmode = \"private\"\n",
            rootfs.display()
        ),
    )
    .unwrap();
    lab.names.push(name.clone());
    let mut verified = Verified::default();
    lab.ok(&["start", &name]);
    lab.ok(&["stop", &name]);
    let (first, out) = timed(lab.mm(&["start", &name]));
    assert!(out.status.success(), "{out:?}");
    lab.ok(&["stop", &name]);
    eprintln!("faults: mm start of a booted machine takes {first:?} here");
    let mut timing = Timing::default();
    timing.add(first);
    let mut t = Tally::default();
    for _ in 0..kills {
        let typical = timing.typical();
        let target = rng.pick(&targets);
        let brief = target == Target::Registrar;
        // Past the start too: systemd is still booting then.
        let wait = delay(&mut rng, if brief { typical / 8 } else { typical * 3 });
        let outcome = round(
            lab.mm(&["start", &name]),
            wait,
            target,
            |cli| lab.find(target, &name, cli),
            |cli| lab.machine_phase(&name, cli),
        );
        let mut found = Vec::new();
        lab.restart(&name, &mut found);
        found.extend(lab.check(&mut verified));
        tally(&mut t, &mut timing, "start (boot)", target, outcome, found);
    }
    t.finish(TEST);
}

#[test]
fn stop_killed_at_every_step() {
    const TEST: &str = "stop_killed_at_every_step";
    if !ready(TEST) {
        return;
    }
    let targets = [Target::Cli, Target::Supervisor, Target::Pid1];
    let mut rng = Rng::new(faults_kit::seed(TEST));
    let kills = faults_kit::kills(10);
    let name = names("t", 1).remove(0);
    let lab = Lab::new(&[&name], veth_machine(), Some(Netns::new("stop")));
    let mut verified = Verified::with_sources(&[&busybox()]);
    lab.ok(&["start", &name]);
    let (first, out) = timed(lab.mm(&["stop", &name]));
    assert!(out.status.success(), "{out:?}");
    eprintln!("faults: mm stop takes {first:?} here");
    let mut timing = Timing::default();
    timing.add(first);
    let mut t = Tally::default();
    for _ in 0..kills {
        let typical = timing.typical();
        let target = rng.pick(&targets);
        // PID 1 ends as soon as it gets the stop signal; the rest is the cleanup.
        let wait = match target {
            Target::Pid1 => delay(&mut rng, Duration::from_millis(20)),
            _ => delay(&mut rng, typical * 3 / 4),
        };
        lab.ok(&["start", &name]);
        let outcome = round(
            lab.mm(&["stop", &name]),
            wait,
            target,
            |cli| lab.find(target, &name, cli),
            |cli| {
                let has = |t| lab.find(t, &name, cli).is_some();
                if has(Target::Pid1) {
                    "pid1 alive (stop signal sent)".into()
                } else if has(Target::Supervisor) {
                    "pid1 gone (cleanup)".into()
                } else {
                    "supervisor gone (cli waiting)".into()
                }
            },
        );
        let mut found = Vec::new();
        lab.restart(&name, &mut found);
        found.extend(lab.check(&mut verified));
        tally(&mut t, &mut timing, "stop", target, outcome, found);
    }
    t.finish(TEST);
}

/// Fills a machine's writable layer with `files` small files, so that rm and commit have
/// work to be killed in.
fn fill(lab: &Lab, name: &str, files: u32) {
    lab.ok(&["start", name]);
    let script = format!(
        "mkdir -p /data && i=0; while [ $i -lt {files} ]; do echo $i > /data/f$i; i=$((i+1)); done"
    );
    lab.ok(&["exec", name, "--", "sh", "-c", &script]);
    lab.ok(&["stop", name]);
}

#[test]
fn rm_killed_at_every_step() {
    const TEST: &str = "rm_killed_at_every_step";
    if !ready(TEST) {
        return;
    }
    let mut rng = Rng::new(faults_kit::seed(TEST));
    let kills = faults_kit::kills(8);
    let name = names("r", 1).remove(0);
    let lab = Lab::new(&[&name], "[exec]\ncommand = [\"sleep\", \"1000\"]\n", None);
    let mut verified = Verified::with_sources(&[&busybox()]);
    fill(&lab, &name, 3000);
    let (first, out) = timed(lab.mm(&["rm", &name]));
    assert!(out.status.success(), "{out:?}");
    eprintln!("faults: mm rm of 3000 files takes {first:?} here");
    let mut timing = Timing::default();
    timing.add(first);
    let mut t = Tally::default();
    for _ in 0..kills {
        let typical = timing.typical();
        fill(&lab, &name, 3000);
        let wait = delay(&mut rng, typical);
        let outcome = round(
            lab.mm(&["rm", &name]),
            wait,
            Target::Cli,
            |_| None,
            |_| bucket(wait, typical),
        );
        let mut found = Vec::new();
        lab.step(&["rm", &name], &mut found);
        if lab.root().join("machines").join(&name).exists() {
            found.push(format!("{name}'s state is still there after mm rm"));
        }
        lab.restart(&name, &mut found);
        found.extend(lab.check(&mut verified));
        tally(&mut t, &mut timing, "rm", Target::Cli, outcome, found);
    }
    t.finish(TEST);
}

#[test]
fn commit_killed_at_every_step() {
    const TEST: &str = "commit_killed_at_every_step";
    if !ready(TEST) {
        return;
    }
    let mut rng = Rng::new(faults_kit::seed(TEST));
    let kills = faults_kit::kills(8);
    let name = names("c", 1).remove(0);
    let tag = format!("{name}-img");
    let lab = Lab::new(&[&name], "[exec]\ncommand = [\"sleep\", \"1000\"]\n", None);
    let mut verified = Verified::with_sources(&[&busybox()]);
    fill(&lab, &name, 2000);
    let commit = ["commit", name.as_str(), "--tag", tag.as_str(), "--force"];
    let (first, out) = timed(lab.mm(&commit));
    assert!(out.status.success(), "{out:?}");
    eprintln!("faults: mm commit of 2000 files takes {first:?} here");
    let mut timing = Timing::default();
    timing.add(first);
    let store_tmp = lab.root().join("images/tmp");
    let mut t = Tally::default();
    for round_number in 0..kills {
        let typical = timing.typical();
        // A new file each round, so each commit makes a new layer.
        lab.ok(&["start", &name]);
        lab.ok(&[
            "exec",
            &name,
            "--",
            "sh",
            "-c",
            &format!("echo {round_number} > /data/round"),
        ]);
        lab.ok(&["stop", &name]);
        let wait = delay(&mut rng, typical);
        let outcome = round(
            lab.mm(&commit),
            wait,
            Target::Cli,
            |_| None,
            |_| {
                let busy = std::fs::read_dir(&store_tmp).is_ok_and(|mut d| d.next().is_some());
                if busy {
                    "installing the layer (store tmp/)".into()
                } else {
                    bucket(wait, typical)
                }
            },
        );
        let mut found = Vec::new();
        lab.step(&commit, &mut found);
        lab.step(&["image", "gc"], &mut found);
        lab.restart(&name, &mut found);
        found.extend(lab.check(&mut verified));
        tally(&mut t, &mut timing, "commit", Target::Cli, outcome, found);
    }
    t.finish(TEST);
}

/// The import loop, as root or as a test user: each round removes the image (and, with
/// `mm image gc`, its layer), imports it with a kill, imports it again and checks.
fn import_loop(test: &str, op: &str, lab: &Lab, targets: &[Target], default_kills: usize) {
    let mut rng = Rng::new(faults_kit::seed(test));
    let kills = faults_kit::kills(default_kills);
    let image = faults_kit::fixture::big_layer_image();
    let source = format!("oci:{}:latest", image.display());
    let mut verified = Verified::with_sources(&[&image]);
    // The first import warms the caches; the second, into an emptied store, is typical.
    lab.ok(&["image", "import", &source]);
    lab.ok(&["image", "rm", &source]);
    lab.ok(&["image", "gc"]);
    let (first, out) = timed(lab.mm(&["image", "import", &source]));
    assert!(out.status.success(), "{out:?}");
    eprintln!("faults: {op} of a 64 MiB layer takes {first:?} here");
    let mut timing = Timing::default();
    timing.add(first);
    let store = lab.root().join("images");
    let mut t = Tally::default();
    for _ in 0..kills {
        let typical = timing.typical();
        lab.ok(&["image", "rm", &source]);
        lab.ok(&["image", "gc"]);
        let target = rng.pick(targets);
        let wait = delay(&mut rng, typical);
        let outcome = round(
            lab.mm(&["image", "import", &source]),
            wait,
            target,
            |cli| procs::find(Target::Worker, &lab.root(), "", cli),
            |_| {
                let busy =
                    std::fs::read_dir(store.join("tmp")).is_ok_and(|mut d| d.next().is_some());
                let layers = std::fs::read_dir(store.join("layers"))
                    .map(|d| d.flatten().any(|e| e.path().is_dir()))
                    .unwrap_or(false);
                let recorded = std::fs::read_dir(store.join("images"))
                    .map(|d| d.flatten().next().is_some())
                    .unwrap_or(false);
                match (busy, layers, recorded) {
                    (_, _, true) => "image recorded".into(),
                    (true, _, _) => "unpacking the layer (tmp/)".into(),
                    (false, true, false) => "layer in, image not recorded".into(),
                    (false, false, false) => "reading the source".into(),
                }
            },
        );
        let mut found = Vec::new();
        lab.step(&["image", "import", &source], &mut found);
        found.extend(lab.check(&mut verified));
        tally(&mut t, &mut timing, op, target, outcome, found);
    }
    t.finish(test);
}

#[test]
fn import_as_root_killed_at_every_step() {
    const TEST: &str = "import_as_root_killed_at_every_step";
    if !ready(TEST) {
        return;
    }
    let lab = Lab::new(&[], "", None);
    import_loop(TEST, "import (root)", &lab, &[Target::Cli], 6);
}

#[test]
fn import_rootless_killed_at_every_step() {
    const TEST: &str = "import_rootless_killed_at_every_step";
    if !ready(TEST) {
        return;
    }
    let lab = Lab::rootless(test_user("mm-test", Some(300_000)));
    import_loop(
        TEST,
        "import (rootless)",
        &lab,
        &[Target::Cli, Target::Worker],
        6,
    );
}

/// The checker itself: each kind of leftover a kill could make, planted by hand, is found.
#[test]
fn the_checker_finds_what_a_kill_could_leave() {
    const TEST: &str = "the_checker_finds_what_a_kill_could_leave";
    if !ready(TEST) {
        return;
    }
    let name = names("k", 1).remove(0);
    let lab = Lab::new(&[&name], veth_machine(), Some(Netns::new("check")));
    lab.ok(&["start", &name]);
    lab.ok(&["stop", &name]);
    let clean = lab.check(&mut Verified::with_sources(&[&busybox()]));
    assert!(clean.is_empty(), "a clean lab: {clean:?}");

    let store = lab.root().join("images");
    std::fs::create_dir(store.join("tmp/0123.77")).unwrap();
    std::fs::write(store.join("images/.tmpAbCdE"), "half").unwrap();
    let stale = lab
        .root()
        .join(format!("run/{name}/.state.json.99999999.AbC123.tmp"));
    std::fs::write(&stale, "half").unwrap();
    let lock = std::fs::File::create(store.join("locks/planted.lock")).unwrap();
    // SAFETY: flock on a file this test owns.
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0
    );
    // A layer whose file lost its last byte.
    let layers = store.join("layers");
    let layer = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("busybox's layer");
    let file = layer.join("bin/busybox");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60").env("MM_ROOT", lab.root());
    let sleeper = KillOnDrop(sleeper.spawn().unwrap());
    let mounted = lab.root().join("run/planted-mount");
    std::fs::create_dir_all(&mounted).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "planted", mounted.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let _unmount = OnDrop(|| {
        let _ = Command::new("umount").arg(&mounted).status();
    });
    let ns = &lab.netns.as_ref().unwrap().name;
    let status = Command::new("ip")
        .args(["-n", ns, "link", "add", "ve-planted", "type", "veth"])
        .args(["peer", "name", "ve-planted1"])
        .status()
        .unwrap();
    assert!(status.success());
    let scope = format!("machine.slice/mm-{name}.scope");
    let cgroup = cgroup_dirs(&scope).remove(0);
    std::fs::create_dir_all(&cgroup).unwrap();
    let _rmdir = OnDrop(|| {
        let _ = std::fs::remove_dir(&cgroup);
    });

    let found = lab.check(&mut Verified::with_sources(&[&busybox()]));
    let text = found.join("\n");
    eprintln!("faults: the checker found, as it should:\n{text}");
    for expected in [
        "a temporary entry is left in the store",
        "a temporary file is left",
        ".state.json.99999999.AbC123.tmp",
        "a lock is held",
        "is not its blob's: bin/busybox differs",
        &format!("a process is left: {}", sleeper.0.id()),
        "a mount is left",
        "a network link is left: ve-planted",
        "a cgroup directory is left",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    drop(lock);
}

/// What the start loop found: a supervisor killed while it replaced state.json left its
/// temporary file in the machine's runtime directory, for good. The next start (or any
/// command that reconciles) removes such files once their writer is gone; a live
/// writer's stays.
#[test]
fn a_killed_writers_temporary_file_goes_at_the_next_start() {
    const TEST: &str = "a_killed_writers_temporary_file_goes_at_the_next_start";
    if !ready(TEST) {
        return;
    }
    let name = names("w", 1).remove(0);
    let lab = Lab::new(&[&name], "[exec]\ncommand = [\"sleep\", \"1000\"]\n", None);
    lab.ok(&["start", &name]);
    lab.ok(&["stop", &name]);
    let dir = lab.root().join("run").join(&name);
    let stale = dir.join(".state.json.99999999.AbC123.tmp");
    let live = dir.join(format!(".state.json.{}.XyZ789.tmp", std::process::id()));
    std::fs::write(&stale, "half").unwrap();
    std::fs::write(&live, "half").unwrap();
    lab.ok(&["start", &name]);
    lab.ok(&["stop", &name]);
    assert!(!stale.exists(), "{} is left", stale.display());
    assert!(live.exists(), "a live writer's file stays");
    std::fs::remove_file(&live).unwrap();
}
