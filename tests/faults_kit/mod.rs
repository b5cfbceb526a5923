//! The kill -9 fault loop's machinery: the seed, the rounds (start an operation, wait a
//! seeded delay, SIGKILL one of its processes), the tally per operation, process and phase,
//! and the violations the checker found.
#![allow(dead_code)]

pub mod checks;
pub mod fixture;
pub mod procs;

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use procs::Target;

/// A small seeded generator (splitmix64): the same seed gives the same delays and targets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The run's seed: `MM_FAULTS_SEED`, else from the clock; printed so a run can be replayed.
/// Each test mixes its own name in, so one seed replays every test of the file.
pub fn seed(test: &str) -> u64 {
    let base = match std::env::var("MM_FAULTS_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MM_FAULTS_SEED={text:?} is not a number")),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                % 1_000_000_000
        }
    };
    eprintln!("faults: seed {base} (replay with MM_FAULTS_SEED={base}) for {test}");
    let mut mixed = base;
    for byte in test.bytes() {
        mixed = mixed.rotate_left(5) ^ u64::from(byte);
    }
    mixed
}

/// How many kills each test injects: `MM_FAULTS_KILLS`, else `default`.
pub fn kills(default: usize) -> usize {
    match std::env::var("MM_FAULTS_KILLS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MM_FAULTS_KILLS={text:?} is not a number")),
        Err(_) => default,
    }
}

/// Kills and violations per (operation, process killed, phase).
#[derive(Default)]
pub struct Tally {
    rows: BTreeMap<(String, String, String), Row>,
    /// Every violation, with the round that found it.
    pub violations: Vec<String>,
    pub missed: usize,
    /// Findings already counted: a leftover that stays is counted the round it appears.
    seen: std::collections::HashSet<String>,
}

#[derive(Default, Clone, Copy)]
struct Row {
    kills: usize,
    violations: usize,
}

impl Tally {
    /// Records one kill and what the checker found after it.
    pub fn record(&mut self, op: &str, target: Target, phase: &str, found: Vec<String>) {
        self.row(op, target, phase, found, true);
    }

    /// Records a round whose target was gone before it could be killed, and what the
    /// checker found after it.
    pub fn miss(&mut self, op: &str, target: Target, found: Vec<String>) {
        self.missed += 1;
        self.row(op, target, "(gone before the delay)", found, false);
    }

    fn row(&mut self, op: &str, target: Target, phase: &str, found: Vec<String>, killed: bool) {
        let row = self
            .rows
            .entry((op.to_owned(), target.name().to_owned(), phase.to_owned()))
            .or_default();
        row.kills += usize::from(killed);
        let found: Vec<String> = found
            .into_iter()
            .filter(|v| self.seen.insert(v.clone()))
            .collect();
        row.violations += found.len();
        for v in found {
            let line = format!("{op}, {} killed ({phase}): {v}", target.name());
            eprintln!("faults: VIOLATION {line}");
            self.violations.push(line);
        }
    }

    pub fn kills(&self) -> usize {
        self.rows.values().map(|r| r.kills).sum()
    }

    /// The table, one row per operation, process and phase, then the totals.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16} {:<12} {:<34} {:>6} {:>10}\n",
            "operation", "killed", "phase", "kills", "violations"
        );
        for ((op, target, phase), row) in &self.rows {
            out.push_str(&format!(
                "{op:<16} {target:<12} {phase:<34} {:>6} {:>10}\n",
                row.kills, row.violations
            ));
        }
        out.push_str(&format!(
            "{:<16} {:<12} {:<34} {:>6} {:>10}\n",
            "total",
            "",
            format!("({} rounds without a kill)", self.missed),
            self.kills(),
            self.violations.len()
        ));
        out
    }

    /// Prints the table and fails with every violation, if there was one.
    pub fn finish(&self, test: &str) {
        eprintln!("faults: {test}\n{}", self.table());
        assert!(
            self.violations.is_empty(),
            "{test}: {} violations:\n{}",
            self.violations.len(),
            self.violations.join("\n")
        );
    }
}

/// What became of one round.
pub enum Round {
    /// The target was killed in this phase; the operation's own command ended so.
    Killed { phase: String, output: Output },
    /// The operation ended before its target could be killed, after `took`.
    Missed { output: Output, took: Duration },
}

/// Runs `command`, and SIGKILLs `target` as `find` sees it once it has existed for
/// `delay` (the CLI: since it was started; another process: since it was first seen, so
/// that short-lived ones are hit too); `phase` names the step the operation is in, looked
/// at just before the kill. The command is waited for (at most a minute: longer is a hang,
/// which shows in the output's status).
pub fn round(
    mut command: Command,
    delay: Duration,
    target: Target,
    find: impl Fn(u32) -> Option<u32>,
    phase: impl Fn(u32) -> String,
) -> Round {
    let started = Instant::now();
    let (child, capture) = spawn_captured(&mut command);
    let cli = child.id();
    let mut child = Some(child);
    let mut seen: Option<Instant> = None;
    let mut killed = None;
    while started.elapsed() < Duration::from_secs(60) {
        let done = child
            .as_mut()
            .and_then(|c| c.try_wait().ok())
            .flatten()
            .is_some();
        let pid = if target == Target::Cli {
            (!done).then_some(cli)
        } else {
            find(cli)
        };
        match pid {
            Some(pid) => {
                let since = *seen.get_or_insert_with(|| {
                    if target == Target::Cli {
                        started
                    } else {
                        Instant::now()
                    }
                });
                if since.elapsed() >= delay {
                    let name = phase(cli);
                    // SAFETY: kill(2) of a process found by this test's own identifiers.
                    if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                        killed = Some(name);
                        break;
                    }
                }
            }
            // It came and went before its delay, or never came: no kill this round.
            None if done => break,
            None => {}
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    let output = wait_bounded(
        child.take().expect("the child"),
        capture,
        Duration::from_secs(60),
    );
    match killed {
        Some(phase) => Round::Killed { phase, output },
        None => Round::Missed {
            output,
            took: started.elapsed(),
        },
    }
}

/// Where a child's standard output and error go: files, not pipes, so that reading them
/// never waits for a process that inherited them (a detached supervisor keeps its
/// CLI's, and one that hangs would hang the test).
pub struct Capture {
    stdout: std::fs::File,
    stderr: std::fs::File,
}

/// Spawns `command` with standard input empty and its output captured in files.
pub fn spawn_captured(command: &mut Command) -> (Child, Capture) {
    let stdout = tempfile::tempfile().expect("a temporary file");
    let stderr = tempfile::tempfile().expect("a temporary file");
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("a descriptor"))
        .stderr(stderr.try_clone().expect("a descriptor"))
        .spawn()
        .expect("the command starts");
    (child, Capture { stdout, stderr })
}

/// Waits for `child` at most `limit`, then kills it: a hang shows as a SIGKILL status.
pub fn wait_bounded(mut child: Child, capture: Capture, limit: Duration) -> Output {
    use std::io::{Read, Seek};
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("the child is reaped");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let read = |mut file: std::fs::File| {
        let mut bytes = Vec::new();
        let _ = file.rewind();
        let _ = file.read_to_end(&mut bytes);
        bytes
    };
    Output {
        status,
        stdout: read(capture.stdout),
        stderr: read(capture.stderr),
    }
}

/// Runs `command` to its end (at most a minute) with standard input empty.
pub fn run_bounded(mut command: Command) -> Output {
    let (child, capture) = spawn_captured(&mut command);
    wait_bounded(child, capture, Duration::from_secs(60))
}

/// `what: STATUS: stderr` for a command that failed, `None` when it succeeded.
pub fn failed(what: &str, output: &Output) -> Option<String> {
    (!output.status.success()).then(|| {
        format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// How long an operation takes here, from the runs that were not killed: the median,
/// over which the delays are spread (one slow run on a loaded host moves it little).
#[derive(Default)]
pub struct Timing(Vec<Duration>);

impl Timing {
    pub fn add(&mut self, took: Duration) {
        self.0.push(took);
    }

    pub fn typical(&self) -> Duration {
        let mut all = self.0.clone();
        all.sort();
        all.get(all.len() / 2)
            .copied()
            .unwrap_or(Duration::from_millis(100))
    }
}

/// How long `command` takes, for spreading the delays over an operation's steps.
pub fn timed(command: Command) -> (Duration, Output) {
    let started = Instant::now();
    let output = run_bounded(command);
    (started.elapsed(), output)
}

/// The address of the uplink in a test's network namespace.
pub const UPLINK_ADDRESS: &str = "198.18.7.1";

/// A network namespace of the test's own, with loopback and an `uplink` (a veth pair's end) carrying
/// the default route, as a host's would: veth machines are made in it, and the checker
/// reads it. Deleted when dropped.
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("mmf-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // A veth pair whose other end stays here (this kernel has no dummy links).
        ip(&[
            "-n", &name, "link", "add", "uplink", "type", "veth", "peer", "name", "outside0",
        ]);
        ip(&["-n", &name, "link", "set", "outside0", "up"]);
        ip(&["-n", &name, "link", "set", "uplink", "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{UPLINK_ADDRESS}/24"),
            "dev",
            "uplink",
        ]);
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            "198.18.7.254",
            "dev",
            "uplink",
        ]);
        Self { name }
    }

    /// `nsenter --net=… PROGRAM`: the program in this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
