//! The CLI under hostile arguments and environments: `MM_ROOT` naming a file or an
//! unwritable directory, `HOME` and `XDG_RUNTIME_DIR` unset or wrong for an ordinary user,
//! a malformed `/etc/subuid` (bind-mounted over the real one in a private mount namespace,
//! so no other process sees it), a definition that is a FIFO or a 1 GB sparse file, and
//! machine names with unicode, path separators or `..`. Each either works or gives a clear
//! error naming the thing and a non-zero exit; never a panic, never a hang (each command
//! runs under a deadline and is killed, failing the test, if it passes it).

mod support;

use std::io::{Read, Seek};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Far more than any of these commands takes; only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` (standard input empty, output to files, so a supervisor that keeps
/// them open cannot make this wait) and kills it if it is still running at the deadline.
fn bounded(what: &str, mut command: Command) -> Outcome {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: hung, killed after {} s", DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |file: &mut std::fs::File| {
        let mut s = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut s).unwrap();
        s
    };
    Outcome {
        code: status.code(),
        stdout: text(&mut out),
        stderr: text(&mut err),
    }
}

/// Counts what the cases found, for the summary line.
#[derive(Default)]
struct Tally {
    refused: usize,
    worked: usize,
}

impl Tally {
    /// The command must fail with an exit code (not a signal), an `error:` sentence on
    /// standard error that contains `names`, and no panic.
    fn refused(&mut self, what: &str, command: Command, names: &str) -> Outcome {
        let o = bounded(what, command);
        assert!(!o.stderr.contains("panicked"), "{what}: {}", o.stderr);
        assert!(
            matches!(o.code, Some(c) if c != 0),
            "{what}: exit {:?}, expected a failure\n{}{}",
            o.code,
            o.stdout,
            o.stderr
        );
        assert!(
            o.stderr.starts_with("error: ") && o.stderr.contains(names),
            "{what}: stderr does not name {names:?}:\n{}",
            o.stderr
        );
        eprintln!(
            "refused ({:?}) {what}: {}",
            o.code,
            o.stderr.lines().next().unwrap_or_default()
        );
        self.refused += 1;
        o
    }

    /// The command must succeed, without a panic.
    fn worked(&mut self, what: &str, command: Command) -> Outcome {
        let o = bounded(what, command);
        assert!(!o.stderr.contains("panicked"), "{what}: {}", o.stderr);
        assert_eq!(o.code, Some(0), "{what}:\n{}{}", o.stdout, o.stderr);
        eprintln!("worked {what}");
        self.worked += 1;
        o
    }
}

/// `dir/machines/web.toml` on the busybox image, running `sleep`.
fn define_web(dir: &Path) {
    let machines = dir.join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("web.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
            busybox().display()
        ),
    )
    .unwrap();
    set_mode(&machines, 0o755);
}

fn image() -> String {
    format!("oci:{}:latest", busybox().display())
}

#[test]
fn mm_root_naming_a_file_is_refused_by_every_command() {
    let dir = shared_tempdir();
    define_web(dir.path());
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let mut tally = Tally::default();
    let image = image();
    let names = format!("MM_ROOT={} is not a directory", file.display());
    for args in [
        &["list"][..],
        &["status", "web"],
        &["start", "web"],
        &["stop", "web"],
        &["rm", "web"],
        &["validate", "web"],
        &["image", "import", &image],
        &["image", "check"],
        &["image", "gc"],
    ] {
        let mut command = mm(dir.path(), args);
        command.env("MM_ROOT", &file);
        let o = tally.refused(
            &format!("MM_ROOT=FILE mm {}", args.join(" ")),
            command,
            &names,
        );
        assert_eq!(o.code, Some(2));
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"", "mm wrote into the file");
    eprintln!("MM_ROOT=FILE: {} commands refused", tally.refused);
}

#[test]
fn a_definition_that_is_a_fifo_or_a_1_gb_file_is_refused_without_reading_it() {
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    let fifo = machines.join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let big = machines.join("big.toml");
    // Sparse: 1 GiB that takes no space; reading it all would take seconds and 1 GiB.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    std::fs::create_dir(machines.join("dir.toml")).unwrap();
    let mut tally = Tally::default();
    let fifo_s = fifo.display().to_string();
    let big_s = big.display().to_string();
    for (name, path, why) in [
        ("fifo", &fifo_s, "is a FIFO, not a regular file"),
        (
            "big",
            &big_s,
            "is 1073741824 bytes, more than a definition may be",
        ),
        (
            "dir",
            &machines.join("dir.toml").display().to_string(),
            "is a directory, not a regular file",
        ),
    ] {
        for args in [
            vec!["validate", path.as_str()],
            vec!["validate", name],
            vec!["plan", name],
            vec!["start", name],
        ] {
            let o = tally.refused(
                &format!("mm {} ({name})", args.join(" ")),
                mm(dir.path(), &args),
                why,
            );
            assert_eq!(o.code, Some(65), "{}", o.stderr);
        }
    }
    // `mm list` lists each, with the reason, and exits 0 (the others may be fine).
    let o = tally.worked("mm list", mm(dir.path(), &["list"]));
    for why in ["is a FIFO", "is 1073741824 bytes", "is a directory"] {
        assert!(o.stdout.contains(why), "{}", o.stdout);
    }
    eprintln!(
        "FIFO, 1 GiB, directory definitions: {} commands refused, {} worked",
        tally.refused, tally.worked
    );
}

#[test]
fn machine_names_with_unicode_separators_or_dot_dot_are_refused() {
    let dir = shared_tempdir();
    define_web(dir.path());
    let long = "x".repeat(300);
    // Each error names the argument, and says it is not a name or not a file (`start`
    // and `plan` take a path too; `status` and the others only names).
    let names: [&str; 10] = [
        "w\u{e9}b",
        "web\u{202e}",
        "..",
        ".",
        "",
        "-",
        &long,
        "a/b",
        "../web",
        "/etc/passwd/..",
    ];
    let mut tally = Tally::default();
    for name in names {
        let mut commands: Vec<(String, Command)> =
            ["start", "status", "stop", "rm", "plan", "logs"]
                .iter()
                .map(|verb| (format!("mm {verb} {name:?}"), mm(dir.path(), &[verb, name])))
                .collect();
        commands.push((
            format!("mm exec {name:?} /bin/true"),
            mm(dir.path(), &["exec", name, "/bin/true"]),
        ));
        for (what, command) in commands {
            // Control and bidirectional characters are shown escaped (`\u{202e}`).
            let shown = name.escape_debug().to_string();
            let o = tally.refused(&what, command, &shown);
            assert!(!o.stderr.contains('\u{202e}'), "{what}: {}", o.stderr);
            assert!(
                o.stderr.contains("is not a machine name") || o.stderr.contains("does not exist"),
                "{what}: {}",
                o.stderr
            );
        }
    }
    eprintln!(
        "hostile names: {} names x 7 verbs, {} refused",
        names.len(),
        tally.refused
    );
}

#[test]
fn an_ordinary_user_with_an_unwritable_mm_root_or_no_home_gets_clear_errors() {
    if !ready("an_ordinary_user_with_an_unwritable_mm_root_or_no_home_gets_clear_errors") {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    define_web(dir.path());
    let image = image();
    let mut tally = Tally::default();

    // MM_ROOT a directory the user cannot write (root's, 0755).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    set_mode(&locked, 0o755);
    let as_user = |root: &Path, args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("MM_ROOT", root);
        command
    };
    // A start takes the machine's lock (under run/) before it imports anything.
    for (args, first) in [
        (&["start", "web"][..], "run/web"),
        (&["image", "import", &image], "images"),
    ] {
        tally.refused(
            &format!("unwritable MM_ROOT: mm {}", args.join(" ")),
            as_user(&locked, args),
            &format!("{}/{first}: Permission denied", locked.display()),
        );
    }
    // Reading needs nothing there.
    tally.worked("unwritable MM_ROOT: mm list", as_user(&locked, &["list"]));
    tally.worked(
        "unwritable MM_ROOT: mm image check",
        as_user(&locked, &["image", "check"]),
    );

    // HOME and XDG_RUNTIME_DIR unset (user.mm sets no XDG_RUNTIME_DIR): mm finds the home
    // in the account and keeps runtime state in its own directory; a whole life works.
    let state = dir.path().join("state");
    user.give(&state);
    let no_home = |args: &[&str]| {
        let mut command = as_user(&state, args);
        command.env_remove("HOME").env_remove("XDG_RUNTIME_DIR");
        command
    };
    let o = tally.worked("no HOME: mm host --json", no_home(&["host", "--json"]));
    let facts: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(facts["home"], user.home.display().to_string());
    for args in [
        &["plan", "web"][..],
        &["start", "web"],
        &["status", "web"],
        &["exec", "web", "/bin/true"],
        &["stop", "web"],
        &["rm", "web"],
    ] {
        tally.worked(
            &format!("no HOME, no XDG_RUNTIME_DIR: mm {}", args.join(" ")),
            no_home(args),
        );
    }
    // HOME naming a directory that is not there, and no MM_ROOT: the store's path under it
    // is named.
    let mut command = user.mm(dir.path(), &["image", "import", &image]);
    command.env("HOME", "/nonexistent-home");
    tally.refused(
        "HOME=/nonexistent-home: mm image import",
        command,
        "/nonexistent-home/.local/share/mm/images",
    );
    eprintln!(
        "rootless environments: {} refused, {} worked",
        tally.refused, tally.worked
    );
}

#[test]
fn a_malformed_subuid_file_is_reported_by_line_and_never_panics() {
    if !ready("a_malformed_subuid_file_is_reported_by_line_and_never_panics") {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    define_web(dir.path());
    let state = dir.path().join("state");
    user.give(&state);
    // Every line broken in another way; one with bytes that are not UTF-8.
    let fake = dir.path().join("subid");
    std::fs::write(
        &fake,
        b"mm-test:abc:65536\nmm-test:100000\n\xff\xfe:1:2\nmm-test:4294967295:10\nmm-test:1:0\n",
    )
    .unwrap();
    set_mode(&fake, 0o644);
    // A private mount namespace (unshare's default propagation is private): the bind
    // mounts are seen by this command and its children only.
    let in_namespace = |args: &[&str]| {
        let mut inner = user.mm(dir.path(), args);
        inner.env("MM_ROOT", &state);
        let mut line = format!(
            "mount --bind {0} /etc/subuid && mount --bind {0} /etc/subgid && exec",
            fake.display()
        );
        line.push(' ');
        line.push_str(&shell_words(&inner));
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--", "sh", "-c", &line])
            .current_dir(dir.path());
        command
    };
    let mut tally = Tally::default();
    let o = tally.worked("bad /etc/subuid: mm host", in_namespace(&["host"]));
    for line in 1..=5 {
        assert!(
            o.stdout.contains(&format!(
                "/etc/subuid: line {line} is not `USER:START:COUNT`"
            )) || line == 3,
            "line {line}:\n{}",
            o.stdout
        );
    }
    assert!(
        !o.stdout.contains("stream did not contain valid UTF-8"),
        "{}",
        o.stdout
    );
    let o = tally.refused(
        "bad /etc/subuid: mm start web",
        in_namespace(&["start", "web"]),
        "has no subordinate id range in /etc/subuid",
    );
    assert_eq!(o.code, Some(69));
    assert!(
        o.stderr
            .contains("/etc/subuid: line 1 is not `USER:START:COUNT`: mm-test:abc:65536"),
        "{}",
        o.stderr
    );
    tally.refused(
        "bad /etc/subuid: mm image import",
        in_namespace(&["image", "import", &image()]),
        "no subordinate id range in /etc/subuid",
    );
    // The real file is untouched.
    assert!(
        !std::fs::read("/etc/subuid")
            .unwrap()
            .starts_with(b"mm-test:abc")
    );
    eprintln!(
        "malformed /etc/subuid: {} refused, {} worked",
        tally.refused, tally.worked
    );
}

/// `command` as one shell line for `exec`: `env -i`, its environment, then the program and
/// its arguments, each single-quoted (its working directory is the caller's).
fn shell_words(command: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let mut words = vec!["env".to_owned(), "-i".to_owned()];
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            words.push(quote(
                format!("{}={}", key.to_string_lossy(), value.to_string_lossy()).as_ref(),
            ));
        }
    }
    words.push(quote(command.get_program()));
    words.extend(command.get_args().map(quote));
    words.join(" ")
}
