//! Many callers at once (issue 16, point 3): 20 processes run mixed `start`, `stop`,
//! `exec`, `status`, `rm`, `image gc` and `image import` on one machine and one image for
//! a bounded time, as root and as a test user. Every command either succeeds or says in a
//! sentence why not; none panics, hangs, dies of a signal or prints a bare file error; and
//! afterwards the image and the machine still work and nothing of the machine is left.
//!
//! Seeded: the seed is printed; `MM_CONCURRENCY_SEED=N` replays one, and
//! `MM_CONCURRENCY_SECS=N` runs longer than the default 20 s.
//! Needs root (machines as root, test users); skips with the reason otherwise.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// How many callers run at once.
const CALLERS: u64 = 20;
/// A command that takes longer than this hangs.
const HANG: Duration = Duration::from_secs(90);

/// splitmix64: a small seeded generator, so that a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("MM_CONCURRENCY_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("MM_CONCURRENCY_SEED={text} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn duration() -> Duration {
    match std::env::var("MM_CONCURRENCY_SECS") {
        Ok(text) => Duration::from_secs(
            text.parse()
                .unwrap_or_else(|_| panic!("MM_CONCURRENCY_SECS={text} is not a number")),
        ),
        Err(_) => Duration::from_secs(20),
    }
}

/// The operations the callers mix, with how often each is picked (out of the sum).
const OPERATIONS: &[(&str, u64)] = &[
    ("start", 4),
    ("stop", 3),
    ("exec", 4),
    ("status", 3),
    ("rm", 2),
    ("image gc", 1),
    ("image import", 1),
];

fn pick(rng: &mut Rng) -> &'static str {
    let total: u64 = OPERATIONS.iter().map(|(_, w)| w).sum();
    let mut n = rng.below(total);
    for (name, weight) in OPERATIONS {
        if n < *weight {
            return name;
        }
        n -= weight;
    }
    unreachable!("the weights add up to the total")
}

/// mm's arguments for an operation on machine `name` and image `source`.
fn arguments<'a>(operation: &str, name: &'a str, source: &'a str) -> Vec<&'a str> {
    match operation {
        "start" => vec!["start", name, "--no-systemd"],
        "stop" => vec!["stop", name, "--timeout", "2"],
        "exec" => vec!["exec", name, "--", "true"],
        "status" => vec!["status", name],
        "rm" => vec!["rm", name],
        "image gc" => vec!["image", "gc"],
        "image import" => vec!["image", "import", source],
        other => unreachable!("no operation {other}"),
    }
}

/// How one command ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    /// Failed with a sentence: the first line of what it said, numbers and paths cut.
    Said(String),
    // The bad ones.
    Panicked,
    Silent,
    RawFileError,
    Signalled,
    Hung,
}

impl Outcome {
    fn bad(&self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Said(_))
    }
}

/// The phrases of strerror(3) that mm's messages may end with.
const STRERRORS: &[&str] = &[
    "No such file or directory",
    "Directory not empty",
    "Device or resource busy",
    "File exists",
    "Permission denied",
    "Invalid argument",
    "Resource temporarily unavailable",
    "No such process",
    "Not a directory",
    "Operation not permitted",
];

/// Whether an error message says only which file and which errno, and nothing of what mm
/// was doing: "upper: Directory not empty", "/run/x: No such file or directory (os error 2)".
/// A file error that is the result of a lost race ("No such file or directory" while
/// another caller removed the machine) counts too: the lock should have prevented it.
fn raw_file_error(message: &str) -> bool {
    if message.contains("No such file or directory") {
        return true;
    }
    let mut rest = message.to_owned();
    for phrase in STRERRORS {
        rest = rest.replace(phrase, "");
    }
    let words = rest
        .split_whitespace()
        .filter(|w| !w.contains('/') && !w.starts_with("(os") && !w.starts_with("error"))
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    rest.len() < message.len() && words < 3
}

/// The shape of a message for counting: digits and paths replaced.
fn shape(line: &str) -> String {
    line.split_whitespace()
        .map(|w| {
            if w.contains('/') {
                "PATH"
            } else if w.chars().any(|c| c.is_ascii_digit()) {
                "N"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn classify(operation: &str, code: Option<i32>, stdout: &str, stderr: &str, hung: bool) -> Outcome {
    if hung {
        return Outcome::Hung;
    }
    if stderr.contains("panicked") {
        return Outcome::Panicked;
    }
    match code {
        Some(0) => Outcome::Ok,
        // `mm status` of a stopped machine says so on standard output and exits 3, as
        // `systemctl status` does.
        Some(3) if operation == "status" && stdout.contains(": stopped") => Outcome::Ok,
        None => Outcome::Signalled,
        Some(_) if stderr.trim().is_empty() => Outcome::Silent,
        Some(_) => {
            let errors: Vec<&str> = stderr
                .lines()
                .filter_map(|l| l.strip_prefix("error: "))
                .collect();
            let first = errors
                .first()
                .copied()
                .unwrap_or_else(|| stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or(""));
            if errors.iter().any(|e| raw_file_error(e)) || raw_file_error(first) {
                Outcome::RawFileError
            } else {
                Outcome::Said(shape(first))
            }
        }
    }
}

/// Runs `command`, killing it after [`HANG`]: its exit code, standard output and error,
/// and whether it hung.
fn run_bounded(mut command: Command) -> (Option<i32>, String, String, bool) {
    use std::io::Read;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mm starts");
    let reader = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr is piped")));
    let start = Instant::now();
    let (status, hung) = loop {
        if let Some(status) = child.try_wait().expect("waiting for mm") {
            break (status, false);
        }
        if start.elapsed() > HANG {
            // What every process was doing, for the report: the hung one and its machine's.
            let table = Command::new("ps")
                .args(["-eo", "pid,ppid,stat,wchan:32,args"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let mine: Vec<&str> = table
                .lines()
                .filter(|l| l.contains("mm") || l.contains("PID"))
                .collect();
            eprintln!("a command hung; the processes then:\n{}", mine.join("\n"));
            let _ = child.kill();
            break (child.wait().expect("reaping mm"), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    (status.code(), stdout, stderr, hung)
}

/// One caller's run: commands until the deadline.
type Record = (String, Outcome, String);

/// Who runs mm and with which state: root in `dir`, or a test user.
struct Caller {
    dir: PathBuf,
    user: Option<TestUser>,
    runtime: PathBuf,
    data: PathBuf,
}

impl Caller {
    fn command(&self, args: &[&str]) -> Command {
        match &self.user {
            None => mm(&self.dir, args),
            Some(user) => {
                let mut command = user.mm(&self.dir, args);
                command
                    .env("XDG_RUNTIME_DIR", &self.runtime)
                    .env("XDG_DATA_HOME", &self.data);
                command
            }
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let (out, stdout, stderr) = run(self.command(args));
        assert!(out.status.success(), "mm {args:?}: {stdout}{stderr}");
        stdout
    }
}

/// Processes still alive that belong to this test's state: their command line or
/// environment names `dir`.
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || name == me {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(entry.path().join(file)) else {
                continue;
            };
            if bytes.windows(needle.len()).any(|w| w == needle) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(format!(
                    "{name}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
                break;
            }
        }
    }
    found
}

fn many_callers_at_once(test: &str, user: Option<TestUser>, name: &'static str) {
    let seed = seed();
    let secs = duration();
    eprintln!(
        "{test}: seed {seed} (MM_CONCURRENCY_SEED={seed} replays it), {CALLERS} callers for {} s",
        secs.as_secs()
    );
    let dir = shared_tempdir();
    let image = dir.path().join("images/busybox");
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    let status = Command::new("cp")
        .args(["-a", "--no-preserve=ownership"])
        .arg(busybox())
        .arg(&image)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying images/busybox");
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir.path().join("images"))
        .status();
    let source = format!("oci:{}:latest", image.display());
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    set_mode(&machines, 0o755);
    std::fs::write(
        machines.join(format!("{name}.toml")),
        format!("[image]\nsource = \"{source}\"\n[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n"),
    )
    .unwrap();
    let caller = Arc::new(Caller {
        dir: dir.path().to_owned(),
        runtime: dir.path().join("runtime"),
        data: dir.path().join("data"),
        user,
    });
    if let Some(user) = &caller.user {
        for path in [&caller.runtime, &caller.data] {
            user.give(path);
            set_mode(path, 0o700);
        }
    }
    let _cleanup = {
        let caller = Arc::clone(&caller);
        OnDrop(move || {
            let _ = caller
                .command(&["stop", name, "--timeout", "1"])
                .stdin(Stdio::null())
                .output();
            let _ = caller.command(&["rm", name]).stdin(Stdio::null()).output();
        })
    };
    caller.ok(&["image", "import", &source]);

    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let deadline = Instant::now() + secs;
    let threads: Vec<_> = (0..CALLERS)
        .map(|n| {
            let caller = Arc::clone(&caller);
            let records = Arc::clone(&records);
            let source = source.clone();
            let mut rng = Rng(seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F));
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let operation = pick(&mut rng);
                    let args = arguments(operation, name, &source);
                    let (code, stdout, stderr, hung) = run_bounded(caller.command(&args));
                    let outcome = classify(operation, code, &stdout, &stderr, hung);
                    let said = format!("exit {code:?}: {}", stderr.trim());
                    records
                        .lock()
                        .expect("no caller panicked holding the records")
                        .push((operation.to_owned(), outcome, said));
                    // A little jitter, so that the callers do not march in step.
                    std::thread::sleep(Duration::from_millis(rng.below(20)));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a caller thread ran to its end");
    }
    let records = std::mem::take(&mut *records.lock().unwrap());

    // The counts, per command and outcome.
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (operation, outcome, _) in &records {
        let label = match outcome {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Said(shape) => format!("failed: {shape}"),
            bad => format!("BAD {bad:?}"),
        };
        *counts.entry((operation.clone(), label)).or_default() += 1;
    }
    eprintln!("{test}: {} commands", records.len());
    for ((operation, label), count) in &counts {
        eprintln!("  {count:5}  {operation:13} {label}");
    }
    let bad: Vec<&Record> = records.iter().filter(|(_, o, _)| o.bad()).collect();
    for (operation, outcome, said) in &bad {
        eprintln!("BAD {operation} {outcome:?}: {said}");
    }

    // Afterwards: the machine stops, starts, runs a command and stops again, the image
    // imports again, and nothing of the machine is left.
    let (out, stdout, stderr) = run(caller.command(&["stop", name, "--timeout", "2"]));
    assert!(
        out.status.success() || stderr.contains("not running"),
        "the final stop: {stdout}{stderr}"
    );
    caller.ok(&["image", "import", &source]);
    caller.ok(&["start", name, "--no-systemd"]);
    caller.ok(&["exec", name, "--", "true"]);
    caller.ok(&["stop", name, "--timeout", "2"]);
    caller.ok(&["rm", name]);
    let mounts = mounts_anywhere(&dir.path().display().to_string());
    let processes = processes_naming(dir.path());
    let cgroups: Vec<PathBuf> = if caller.user.is_none() {
        cgroup_dirs(&format!("machine.slice/mm-{name}.scope"))
            .into_iter()
            .filter(|d| d.exists())
            .collect()
    } else {
        Vec::new()
    };
    // The bad ones go into the panic message too: CI shows the end of a long output.
    assert!(
        bad.is_empty(),
        "{} of {} commands failed badly (seed {seed}):\n{}",
        bad.len(),
        records.len(),
        bad.iter()
            .take(5)
            .map(|(operation, outcome, said)| format!("{operation} {outcome:?}: {said}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    assert!(processes.is_empty(), "processes left: {processes:#?}");
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    // The mixture really ran: every operation ran, and the machine really started.
    for (operation, _) in OPERATIONS {
        assert!(
            records.iter().any(|(o, _, _)| o == operation),
            "{operation} never ran"
        );
    }
    assert!(
        records
            .iter()
            .any(|(o, outcome, _)| o == "start" && *outcome == Outcome::Ok),
        "no start succeeded"
    );
}

#[test]
fn twenty_callers_at_once_as_root() {
    let test = "twenty_callers_at_once_as_root";
    if !ready(test) {
        return;
    }
    many_callers_at_once(test, None, "concur-root");
}

#[test]
fn twenty_callers_at_once_rootless() {
    let test = "twenty_callers_at_once_rootless";
    if !ready(test) {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    many_callers_at_once(test, Some(user), "concur-user");
}

#[test]
fn a_bare_file_error_is_told_from_a_sentence() {
    assert!(raw_file_error("upper: Directory not empty"));
    assert!(raw_file_error(
        "/run/mm/x/ids.json: No such file or directory (os error 2)"
    ));
    assert!(!raw_file_error(
        "cannot remove `web`: it is running (stop it first)"
    ));
    assert!(!raw_file_error(
        "cannot lock machine web: another mm holds it: Resource temporarily unavailable"
    ));
}
