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
