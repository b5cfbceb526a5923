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
