//! Errors of running machines that used to pass in silence: a supervisor that does not
//! answer `mm stop`, a working directory that went away under `mm exec`, and what `mm rm`
//! could not remove. Real machines as root, each test with its own MM_ROOT; skips with the
//! reason elsewhere.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const SYSTEM: i32 = 71;
const IO: i32 = 74;

/// A tree with one machine definition, stopped when dropped.
struct Machine {
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Machine {
    /// machines/NAME.toml: the busybox image, then `body`; or `None` (having said why)
    /// where machines cannot boot here.
    fn define(test: &str, name: &'static str, body: &str) -> Option<Self> {
        if !is_root() {
            skip(test, "booting machines as root needs root");
            return None;
        }
        assert!(
            default_image_built(),
            "images/busybox is missing: run scripts/build-busybox-image (scripts/setup does)"
        );
        let dir = shared_tempdir();
        std::fs::create_dir(dir.path().join("machines")).unwrap();
        let text = format!(
            "[image]\nsource = \"oci:{}:latest\"\n{body}\n",
            repo().join("images/busybox").display()
        );
        std::fs::write(dir.path().join(format!("machines/{name}.toml")), text).unwrap();
        Some(Self { dir, name })
    }

    fn command(&self, args: &[&str]) -> Command {
        mm(self.dir.path(), args)
    }

    /// `mm ARGS`: exit code, standard output and error.
    fn mm(&self, args: &[&str]) -> (i32, String, String) {
        let (out, stdout, stderr) = run(self.command(args));
        (out.status.code().unwrap_or(-1), stdout, stderr)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.mm(args);
        assert_eq!(code, 0, "mm {args:?}:\n{stdout}\n{stderr}");
        stdout
    }

    fn status(&self) -> serde_json::Value {
        let (_, stdout, _) = self.mm(&["status", self.name, "--json"]);
        serde_json::from_str(&stdout).unwrap()
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self
            .command(&["stop", self.name, "--timeout", "1"])
            .output();
    }
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

/// A supervisor that does not answer (stopped with SIGSTOP) is an error of `mm stop`
/// within seconds, and the machine is not reported stopped; it stops once it can answer.
#[test]
fn stop_says_when_the_supervisor_does_not_answer() {
    let Some(m) = Machine::define(
        "stop_says_when_the_supervisor_does_not_answer",
        "stuck",
        "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]",
    ) else {
        return;
    };
    m.ok(&["start", "--no-systemd", "stuck"]);
    let supervisor = m.status()["supervisor"].as_i64().expect("running") as i32;
    // It listens once the machine runs; stopped before that, it would have no socket.
    let control = m.state().join("state/run/stuck/control");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !control.exists() {
        assert!(Instant::now() < deadline, "no {}", control.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(supervisor, nix::sys::signal::Signal::SIGSTOP);
    let mut stop = m.command(&["stop", "stuck"]);
    let child = stop
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let hung = Instant::now() >= deadline;
    if hung {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let out = child.wait_with_output().unwrap();
    let still = m.status();
    signal(supervisor, nix::sys::signal::Signal::SIGCONT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !hung,
        "mm stop waited 20 s for a supervisor that does not answer"
    );
    assert_eq!(out.status.code(), Some(SYSTEM), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "error: the supervisor of stuck did not take the stop request: it did not answer \
             within 5 s (it may still stop the machine when it can)"
        ),
        "{stderr}"
    );
    assert!(!stdout.contains("stopped"), "{stdout}");
    assert_eq!(still["state"], "running", "{still}");
    // Running again, it takes the request that waited for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while m.status()["state"] != "stopped" {
        assert!(Instant::now() < deadline, "still {}", m.status());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `mm exec` in a machine whose working directory is gone fails naming it, rather than
/// running the command in `/`.
#[test]
fn exec_in_a_working_directory_that_is_gone_names_it() {
    let Some(m) = Machine::define(
        "exec_in_a_working_directory_that_is_gone_names_it",
        "moved",
        "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\nworkdir = \"/srv\"",
    ) else {
        return;
    };
    m.ok(&["start", "--no-systemd", "moved"]);
    assert_eq!(m.ok(&["exec", "moved", "--", "pwd"]), "/srv\n");
    m.ok(&[
        "exec",
        "moved",
        "--",
        "sh",
        "-c",
        "cd / && mv /srv /srv.gone",
    ]);
    let (code, stdout, stderr) = m.mm(&["exec", "moved", "--", "pwd"]);
    assert_eq!(code, 127, "{stdout}{stderr}");
    assert!(
        stderr.contains("mm: chdir /srv: No such file or directory"),
        "{stderr}"
    );
    assert_eq!(stdout, "", "nothing ran");
}

/// `mm rm` removes what mm made and stops at what it did not, naming it (74), instead of
/// saying "removed".
#[test]
fn rm_names_what_it_could_not_remove() {
    let Some(m) = Machine::define(
        "rm_names_what_it_could_not_remove",
        "kept",
        "[exec]\ncommand = [\"/bin/true\"]\n[storage]\npersistent = true",
    ) else {
        return;
    };
    m.ok(&["run", "kept"]);
    let dir = m.state().join("state/machines/kept");
    assert!(dir.join("upper").is_dir(), "a writable layer was made");
    std::fs::write(dir.join("notes.txt"), "mine\n").unwrap();
    let (code, stdout, stderr) = m.mm(&["rm", "kept"]);
    assert_eq!(code, IO, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("error: cannot remove {}: ", dir.display())),
        "{stderr}"
    );
    assert!(!stdout.contains("removed"), "{stdout}");
    assert!(!dir.join("upper").exists(), "what mm made is gone");
    assert!(dir.join("notes.txt").exists(), "what it did not make stays");
    std::fs::remove_file(dir.join("notes.txt")).unwrap();
    assert!(m.ok(&["rm", "kept"]).contains("kept removed"));
    assert!(!dir.exists());
}

/// `mm kill --signal RTMIN+3` reaches the command (through mm's init), as any signal does,
/// rather than being sent as signal 0 (which only checks that PID 1 exists).
#[test]
fn kill_sends_real_time_signals_too() {
    // The shell traps it by number; it ends with 7 when the signal arrives.
    let number = libc::SIGRTMIN() + 3;
    let body = format!(
        "[exec]\ncommand = [\"/bin/sh\", \"-c\", \"trap 'exit 7' {number}; touch /tmp/ready; while :; do sleep 0.1; done\"]"
    );
    let Some(m) = Machine::define("kill_sends_real_time_signals_too", "rt", &body) else {
        return;
    };
    m.ok(&["start", "--no-systemd", "rt"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.mm(&["exec", "rt", "--", "test", "-e", "/tmp/ready"]).0 != 0 {
        assert!(Instant::now() < deadline, "the trap is never set");
        std::thread::sleep(Duration::from_millis(50));
    }
    m.ok(&["kill", "rt", "--signal", "RTMIN+3"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.status()["state"] != "stopped" {
        assert!(Instant::now() < deadline, "still {}", m.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(m.status()["exit_status"], 7, "{}", m.status());
}

/// A supervisor that cannot open its control socket fails the start (naming the socket),
/// and takes the machine down, instead of leaving one that `mm stop` cannot reach.
#[test]
fn a_start_without_a_control_socket_fails_and_leaves_nothing_running() {
    let Some(m) = Machine::define(
        "a_start_without_a_control_socket_fails_and_leaves_nothing_running",
        "deaf",
        "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]",
    ) else {
        return;
    };
    // A directory where the socket goes, with something in it: neither removed nor bound.
    let control = m.state().join("state/run/deaf/control");
    std::fs::create_dir_all(control.join("in-the-way")).unwrap();
    let (code, stdout, stderr) = m.mm(&["start", "--no-systemd", "deaf"]);
    assert_eq!(code, IO, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot make the supervisor's control socket {}: ",
            control.display()
        )),
        "{stderr}"
    );
    let status = m.status();
    assert_eq!(status["state"], "stopped", "{status}");
    let (code, _, stderr) = m.mm(&["stop", "deaf"]);
    assert_eq!(code, 66, "nothing to stop: {stderr}");
}

/// A started machine whose console log cannot be opened fails to start (naming the log),
/// rather than running with its output thrown away.
#[test]
fn a_start_without_its_console_log_fails() {
    let Some(m) = Machine::define(
        "a_start_without_its_console_log_fails",
        "mute",
        "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]",
    ) else {
        return;
    };
    let log = m.state().join("state/run/mute/console.log");
    std::fs::create_dir_all(&log).unwrap();
    let (code, stdout, stderr) = m.mm(&["start", "--no-systemd", "mute"]);
    assert_eq!(code, IO, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("error: {}: Is a directory", log.display())),
        "{stderr}"
    );
    assert_eq!(m.status()["state"], "stopped", "{}", m.status());
}

/// The user-namespace holder's own errno reaches the user: a process in a chroot may not
/// make a user namespace (EPERM), which mm used to put down to disabled namespaces.
#[test]
fn a_holder_refused_its_user_namespace_says_the_step_and_errno() {
    let Some(m) = Machine::define(
        "a_holder_refused_its_user_namespace_says_the_step_and_errno",
        "chrooted",
        "[exec]\ncommand = [\"/bin/true\"]",
    ) else {
        return;
    };
    // The same tree, but through a bind mount: the kernel sees a chroot.
    let root = m.dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --rbind / \"$0\" && exec chroot \"$0\" \"$@\"")
        .arg(&root)
        .arg(MM)
        .args(["start", "--no-systemd", "chrooted"])
        .env("MM_PATH", m.dir.path().join("machines"))
        .env("MM_ROOT", m.dir.path().join("state"));
    let (out, stdout, stderr) = run(command);
    assert_eq!(out.status.code(), Some(SYSTEM), "{stdout}{stderr}");
    assert!(
        stderr.contains("starting the machine failed: unshare a user namespace: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("Operation not permitted (os error 1)"),
        "{stderr}"
    );
    assert_eq!(m.status()["state"], "stopped", "nothing is left running");
}
