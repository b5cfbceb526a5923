//! Holes found from outside (issue 11): setuid files of an image must not be reachable by
//! other users from anywhere mm writes them; root machines work under 0700 directories;
//! a machine never holds a descriptor of the caller's terminal.
//! Needs root (setuid fixtures owned by 0, test users); skips with the reason otherwise.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Builds tests/fixtures/images/make-setuid.sh into `dir`; the image's source name.
fn setuid_image(dir: &Path) -> String {
    let (out, stdout, stderr) = run({
        let mut c = Command::new(repo().join("tests/fixtures/images/make-setuid.sh"));
        c.arg(dir);
        c
    });
    assert!(out.status.success(), "make-setuid.sh: {stdout}{stderr}");
    format!("oci:{}/setuid:latest", dir.display())
}

/// Every file named `probe` or `copied` below `root` (walked as root).
fn probes(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file()
                && matches!(entry.file_name().to_str(), Some("probe" | "copied"))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs `path` as nobody: what it printed, if it ran at all. A shell, already nobody,
/// executes it: setpriv's own `execve` still holds root's capabilities (they go only at
/// that exec), so it would walk through 0700 directories that nobody cannot.
fn run_as_nobody(path: &Path) -> Option<String> {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$0\""])
        .arg(path)
        .output()
        .expect("setpriv runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Asserts that nobody can run any of `paths` (or that, running, it gains no id).
fn assert_nobody_gains_nothing(paths: &[PathBuf]) {
    for path in paths {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o6000,
            0o6000,
            "{} is not setuid+setgid",
            path.display()
        );
        if let Some(printed) = run_as_nobody(path) {
            assert!(
                !printed.contains("euid=") && !printed.contains("egid="),
                "nobody ran {} and got: {printed}\n{}",
                path.display(),
                modes_above(path)
            );
        }
    }
}

/// The modes of `path`'s ancestors, for a failure's message.
fn modes_above(path: &Path) -> String {
    path.ancestors()
        .skip(1)
        .map(|p| format!("{:o} {}", mode_of(p), p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Stops the machines it names when dropped, whatever the test did.
struct Running<'a> {
    dir: &'a Path,
    names: Vec<&'static str>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = mm(self.dir, &["stop", name, "--timeout", "1"]).output();
        }
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn setuid_files_of_an_image_are_out_of_reach_of_other_users_as_root() {
    if !is_root() {
        return skip(
            "setuid_files_of_an_image_are_out_of_reach_of_other_users_as_root",
            "a setuid-root fixture needs root",
        );
    }
    let dir = shared_tempdir();
    let source = setuid_image(&dir.path().join("fixture"));
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    set_mode(&state, 0o755);
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("suid.toml"),
        format!(
            "[image]\nsource = \"{source}\"\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \
             \"cp /probe /copied && chmod 6755 /copied && sleep 600\"]\n\
             [storage]\npersistent = true\n"
        ),
    )
    .unwrap();

    let (out, stdout, stderr) = run(mm(dir.path(), &["image", "import", &source]));
    assert!(out.status.success(), "{stdout}{stderr}");
    let extracted = dir.path().join("extracted");
    let (out, stdout, stderr) = run(mm(
        dir.path(),
        &["image", "extract", &source, extracted.to_str().unwrap()],
    ));
    assert!(out.status.success(), "{stdout}{stderr}");

    let _running = Running {
        dir: dir.path(),
        names: vec!["suid"],
    };
    let (out, stdout, stderr) = run(mm(dir.path(), &["start", "suid", "--no-systemd"]));
    assert!(out.status.success(), "{stdout}{stderr}");
    let copied = state.join("machines/suid/upper/copied");
    wait_for(
        "the machine copies its probe into its writable layer",
        || std::fs::metadata(&copied).is_ok_and(|m| m.permissions().mode() & 0o6000 == 0o6000),
    );

    let mut found = probes(&state);
    found.extend(probes(&extracted));
    let (_, stdout, _) = run(mm(dir.path(), &["status", "suid", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let leader = status["leader"]
        .as_i64()
        .expect("a running machine has a leader");
    found.push(PathBuf::from(format!("/proc/{leader}/root/probe")));
    found.push(state.join("run/suid/root/probe"));
    found.retain(|p| p.exists());
    // The store's layer, the extracted tree, the writable layer and PID 1's root as root
    // sees it: if one were missing, the test would prove nothing for it.
    let store_layer = found
        .iter()
        .any(|p| p.starts_with(state.join("images/layers")));
    assert!(store_layer, "no probe in the store: {found:?}");
    assert!(found.contains(&extracted.join("probe")), "{found:?}");
    assert!(found.contains(&copied), "{found:?}");
    assert!(found.iter().any(|p| p.starts_with("/proc")), "{found:?}");
    assert_nobody_gains_nothing(&found);

    for private in [
        state.join("images"),
        state.join("images/layers"),
        state.join("images/tmp"),
        state.join("machines/suid"),
        state.join("run/suid"),
        extracted.clone(),
    ] {
        assert_eq!(mode_of(&private), 0o700, "{}", private.display());
    }
}

#[test]
fn setuid_files_of_an_image_are_out_of_reach_of_other_users_rootless() {
    if !is_root() {
        return skip(
            "setuid_files_of_an_image_are_out_of_reach_of_other_users_rootless",
            "creating test users and a setuid fixture needs root",
        );
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let source = setuid_image(&dir.path().join("fixture"));
    let state = dir.path().join("state");
    user.give(&state);
    set_mode(&state, 0o755);
    let as_user = |args: &[&str]| {
        let mut c = user.mm(dir.path(), args);
        c.env("MM_ROOT", &state);
        run(c)
    };
    let (out, stdout, stderr) = as_user(&["image", "import", &source]);
    assert!(out.status.success(), "{stdout}{stderr}");
    // The extract's parent must be the user's to write in; the tree is made private there.
    let parent = dir.path().join("out");
    user.give(&parent);
    set_mode(&parent, 0o755);
    let extracted_in = parent.join("rootfs");
    let (out, stdout, stderr) =
        as_user(&["image", "extract", &source, extracted_in.to_str().unwrap()]);
    assert!(out.status.success(), "{stdout}{stderr}");

    let mut found = probes(&state);
    found.extend(probes(&parent));
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(state.join("images/layers"))),
        "no probe in the store: {found:?}"
    );
    assert!(found.contains(&extracted_in.join("probe")), "{found:?}");
    // Rootless, the probes are the user's own setuid files: nobody must not become the user.
    assert_nobody_gains_nothing(&found);
    assert_eq!(mode_of(&state.join("images")), 0o700);
    assert_eq!(mode_of(&extracted_in), 0o700);
}

#[test]
fn a_root_machine_runs_with_its_state_and_binds_under_0700_directories() {
    if !is_root() {
        return skip(
            "a_root_machine_runs_with_its_state_and_binds_under_0700_directories",
            "booting machines as root needs root",
        );
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run scripts/build-busybox-image (scripts/setup does)"
    );
    // MM_ROOT below a directory only root may enter (`mktemp -d` makes such a one).
    let private = tempfile::Builder::new()
        .prefix("mm-0700-")
        .tempdir()
        .unwrap();
    set_mode(private.path(), 0o700);
    // A bind source under /root (0700 on Debian), in a directory that is 0700 in any case.
    let under_root = tempfile::Builder::new()
        .prefix("mm-test-bind-")
        .tempdir_in("/root")
        .unwrap();
    set_mode(under_root.path(), 0o700);
    let src = under_root.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello"), "hello from /root\n").unwrap();
    std::fs::write(under_root.path().join("single"), "a single file\n").unwrap();
    let machines = private.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    std::fs::write(
        machines.join("private.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n\
             [exec]\ncommand = [\"/bin/sh\", \"-c\", \"cat /src/hello /single; touch /ro/x\"]\n\
             [storage]\npersistent = true\nbinds = [\
             {{ source = \"{src}\", target = \"/src\" }}, \
             {{ source = \"{single}\", target = \"/single\" }}, \
             {{ source = \"{src}\", target = \"/ro\", readonly = true }}]\n",
            repo().join("images/busybox").display(),
            src = src.display(),
            single = under_root.path().join("single").display(),
        ),
    )
    .unwrap();
    let (out, stdout, stderr) = run(mm(private.path(), &["run", "private"]));
    assert!(
        stdout.contains("hello from /root") && stdout.contains("a single file"),
        "{stdout}{stderr}"
    );
    // The read-only bind stays read-only (and so the command fails at its last step).
    assert!(stderr.contains("Read-only file system"), "{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!src.join("x").exists());
    // A second start finds what the first left (the writable layer) and works again.
    let (out, stdout, stderr) = run(mm(private.path(), &["run", "private"]));
    assert!(
        stdout.contains("hello from /root"),
        "{out:?} {stdout}{stderr}"
    );
}

/// Builds tests/fixtures/tiocsti into `dir`.
fn injector(dir: &Path) {
    let (out, stdout, stderr) = run({
        let mut c = Command::new(repo().join("tests/fixtures/tiocsti/make.sh"));
        c.arg(dir);
        c
    });
    assert!(out.status.success(), "tiocsti/make.sh: {stdout}{stderr}");
}

/// Bytes waiting in a terminal's input queue.
fn queued(fd: std::os::fd::BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) },
        0
    );
    n
}

/// Runs `exec` (mm running the injector) with a terminal of the test's own as its
/// controlling terminal and standard input, and as its output too unless `output_piped`:
/// what waits in that terminal for its reader (the "host shell"), what the injector
/// printed, and the terminal's (st_dev, st_rdev).
fn inject_from_a_terminal(mut exec: Command, output_piped: bool) -> (i32, String, (u64, u64)) {
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave.as_raw_fd();
    exec.stdin(std::fs::File::from(pty.slave.try_clone().unwrap()));
    if output_piped {
        exec.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    } else {
        exec.stdout(std::fs::File::from(pty.slave.try_clone().unwrap()))
            .stderr(std::fs::File::from(pty.slave.try_clone().unwrap()));
    }
    // SAFETY: setsid and ioctl only, between fork and exec.
    unsafe {
        exec.pre_exec(move || {
            nix::unistd::setsid()?;
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = exec.spawn().unwrap();
    drop(exec);
    // Read the pipes meanwhile (the injector's line, mm's notices), so neither blocks.
    let readers = [
        child.stdout.take().map(drain),
        child.stderr.take().map(drain),
    ];
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "mm exec hangs");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "mm exec: {status}");
    let waiting = queued(pty.slave.as_fd());
    let ours = std::fs::File::from(pty.slave.try_clone().unwrap())
        .metadata()
        .unwrap();
    // What mm wrote to the terminal: the master side has it.
    nix::fcntl::fcntl(
        &pty.master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut printed = Vec::new();
    let _ = std::fs::File::from(pty.master).read_to_end(&mut printed);
    for reader in readers.into_iter().flatten() {
        printed.extend(reader.join().unwrap());
    }
    (
        waiting,
        String::from_utf8_lossy(&printed).into_owned(),
        (ours.dev(), ours.rdev()),
    )
}

/// Reads `from` to its end in a thread.
fn drain(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    })
}

/// The injector's report of its standard input: (st_dev, st_rdev).
fn reported_terminal(printed: &str) -> (u64, u64) {
    let line = printed
        .lines()
        .find(|l| l.starts_with("pushed="))
        .unwrap_or_else(|| panic!("the injector did not run: {printed}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    (field("dev="), field("rdev="))
}

fn a_machine_cannot_type_into_the_callers_terminal(user: Option<&TestUser>) {
    let dir = shared_tempdir();
    let inject = dir.path().join("inject");
    injector(&inject);
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    set_mode(&machines, 0o755);
    std::fs::write(
        machines.join("typist.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n\
             [storage]\nbinds = [{{ source = \"{}\", target = \"/inject\", readonly = true }}]\n",
            dir.path().join("images/busybox").display(),
            inject.display()
        ),
    )
    .unwrap();
    std::fs::write(
        machines.join("injector.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/inject/tiocsti\"]\n\
             [storage]\nbinds = [{{ source = \"{}\", target = \"/inject\", readonly = true }}]\n",
            dir.path().join("images/busybox").display(),
            inject.display()
        ),
    )
    .unwrap();
    copy_examples(dir.path());
    let state = dir.path().join("state");
    let command = |args: &[&str]| match user {
        Some(user) => {
            let mut c = user.mm(dir.path(), args);
            c.env("MM_ROOT", &state);
            c
        }
        None => mm(dir.path(), args),
    };
    if let Some(user) = user {
        user.give(&state);
    }
    let _running = StopOnDrop(command(&["stop", "typist", "--timeout", "1"]));
    let (out, stdout, stderr) = run(command(&["start", "typist", "--no-systemd"]));
    assert!(out.status.success(), "{stdout}{stderr}");

    // mm exec with every stream on the terminal, and with only standard input on it.
    for output_piped in [false, true] {
        let exec = command(&["exec", "-u", "65534", "typist", "--", "/inject/tiocsti"]);
        let (waiting, printed, ours) = inject_from_a_terminal(exec, output_piped);
        let theirs = reported_terminal(&printed);
        assert_ne!(
            theirs, ours,
            "mm exec gave the machine the caller's terminal"
        );
        assert_eq!(
            waiting, 0,
            "mm exec: the machine typed into the caller's terminal"
        );
    }
    // mm run, whose console is the machine's standard streams: the same two ways.
    for output_piped in [false, true] {
        let run = command(&["run", "injector"]);
        let (waiting, printed, ours) = inject_from_a_terminal(run, output_piped);
        let theirs = reported_terminal(&printed);
        assert_ne!(
            theirs, ours,
            "mm run gave the machine the caller's terminal"
        );
        assert_eq!(
            waiting, 0,
            "mm run: the machine typed into the caller's terminal"
        );
    }
    if std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti").is_ok_and(|v| v.trim() == "0") {
        eprintln!("note: this kernel refuses TIOCSTI (dev.tty.legacy_tiocsti = 0)");
    }
}

/// Runs a command (mm stop, say) when dropped.
struct StopOnDrop(Command);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.output();
    }
}

#[test]
fn a_machine_cannot_type_into_the_callers_terminal_as_root() {
    if !is_root() {
        return skip(
            "a_machine_cannot_type_into_the_callers_terminal_as_root",
            "booting machines as root needs root",
        );
    }
    a_machine_cannot_type_into_the_callers_terminal(None);
}

#[test]
fn a_machine_cannot_type_into_the_callers_terminal_rootless() {
    if !is_root() {
        return skip(
            "a_machine_cannot_type_into_the_callers_terminal_rootless",
            "creating test users needs root",
        );
    }
    let user = test_user("mm-test", Some(300_000));
    a_machine_cannot_type_into_the_callers_terminal(Some(&user));
}

/// The descriptors `ls /proc/self/fd` lists in the machine, as numbers (its own directory
/// descriptor among them).
fn descriptors_in(listing: &str) -> Vec<u32> {
    let mut fds: Vec<u32> = listing
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    fds.sort();
    fds
}

#[test]
fn mm_exec_hands_the_command_its_standard_streams_and_nothing_else() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    if !is_root() {
        return skip(
            "mm_exec_hands_the_command_its_standard_streams_and_nothing_else",
            "booting machines as root needs root",
        );
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run scripts/setup"
    );
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("fds.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sleep\", \"600\"]\n",
            repo().join("images/busybox").display()
        ),
    )
    .unwrap();
    let _running = StopOnDrop(mm(dir.path(), &["stop", "fds", "--timeout", "1"]));
    let (out, stdout, stderr) = run(mm(dir.path(), &["start", "fds", "--no-systemd"]));
    assert!(out.status.success(), "{stdout}{stderr}");
    // The caller leaves a host file open on descriptor 7 (not close-on-exec), as a shell
    // or a CI runner may.
    let host_file = std::fs::File::open("/etc/hostname").unwrap();
    let raw = host_file.as_raw_fd();
    let mut exec = mm(dir.path(), &["exec", "fds", "--", "ls", "/proc/self/fd"]);
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        exec.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (out, stdout, stderr) = run(exec);
    assert!(out.status.success(), "{stdout}{stderr}");
    // 0, 1, 2, and 3: ls's own directory.
    assert_eq!(descriptors_in(&stdout), [0, 1, 2, 3], "{stdout}");
}
