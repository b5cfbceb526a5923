//! Bad definitions as `mm validate` and `mm plan` report them: the exit code, and a
//! diagnostic on standard error that points at the file, line and column with a caret;
//! also definitions that contradict what mm holds (an image without a command, ids another
//! machine has), bad flag values, and `mm list` of a state it cannot read. Every command
//! runs with MM_PATH and MM_ROOT inside a temporary directory.

mod support;

use std::path::{Path, PathBuf};

use support::{mm, run, shared_tempdir};

const INVALID: i32 = 65;
const NOT_FOUND: i32 = 66;
const USAGE: i32 = 2;

/// A bad file and where its first diagnostic must point.
struct Case {
    file: &'static str,
    text: &'static str,
    key: &'static str,
    line: usize,
    column: usize,
    /// How many characters the caret underlines.
    width: usize,
}

const CASES: &[Case] = &[
    Case {
        file: "typo.toml",
        text: "[image]\nsource = \"docker://busybox\"\n[exec]\ncomand = [\"/bin/sh\"]\n",
        key: "exec.comand",
        line: 4,
        column: 1,
        width: 6,
    },
    Case {
        file: "boot.toml",
        text: "[image]\nsource = \"docker://busybox\"\n[exec]\nboot = \"yes\"\n",
        key: "exec.boot",
        line: 4,
        column: 8,
        width: 5,
    },
    Case {
        file: "target.toml",
        text: "[image]\nsource = \"docker://busybox\"\n\n[[storage.binds]]\nsource = \"/srv\"\ntarget = \"srv/../etc\"\n",
        key: "storage.binds[0].target",
        line: 6,
        column: 10,
        width: 12,
    },
    Case {
        file: "transport.toml",
        text: "# A typo in the transport.\n[image]\nsource = \"ocii:./images/busybox:latest\"\n",
        key: "image.source",
        line: 3,
        column: 10,
        width: 30,
    },
    Case {
        file: "caps.toml",
        text: "[image]\nsource = \"docker://busybox\"\n[security]\nadd_capabilities = [\"NET_ADMINN\"]\n",
        key: "security.add_capabilities",
        line: 4,
        column: 21,
        width: 12,
    },
];

/// A temporary tree with an empty `machines/` (MM_PATH) and `state/` (MM_ROOT).
fn tree() -> tempfile::TempDir {
    let dir = shared_tempdir();
    std::fs::create_dir(dir.path().join("machines")).unwrap();
    dir
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join("machines").join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn code(output: &std::process::Output) -> i32 {
    output.status.code().expect("mm exits, not killed")
}

#[test]
fn validate_points_at_the_offending_text() {
    let dir = tree();
    for case in CASES {
        let path = write(dir.path(), case.file, case.text);
        let file = path.display().to_string();
        let (out, stdout, stderr) = run(mm(dir.path(), &["validate", &file]));
        let context = format!("{}\nstdout:\n{stdout}\nstderr:\n{stderr}", case.file);
        assert_eq!(code(&out), INVALID, "{context}");
        assert!(
            stderr.contains(&format!("error: {}: ", case.key)),
            "{context}"
        );
        let arrow = format!("--> {file}:{}:{}", case.line, case.column);
        assert!(stderr.contains(&arrow), "no {arrow:?} in {context}");
        let offending = case.text.lines().nth(case.line - 1).unwrap();
        let quoted = format!("{} | {offending}\n", case.line);
        assert!(stderr.contains(&quoted), "no {quoted:?} in {context}");
        let pad = " ".repeat(case.line.to_string().len());
        let caret = format!(
            "{pad} | {}{}",
            " ".repeat(case.column - 1),
            "^".repeat(case.width)
        );
        assert!(
            stderr.lines().any(|l| l == caret),
            "no {caret:?} in {context}"
        );
    }
}

#[test]
fn validate_reports_every_bad_file_given() {
    let dir = tree();
    let files: Vec<String> = CASES
        .iter()
        .map(|c| write(dir.path(), c.file, c.text).display().to_string())
        .collect();
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let (out, _, stderr) = run(mm(dir.path(), &args));
    assert_eq!(code(&out), INVALID, "{stderr}");
    for file in &files {
        assert!(stderr.contains(&format!("--> {file}:")), "{file}: {stderr}");
    }
}

#[test]
fn validate_syntax_errors_exit_65_with_a_caret() {
    let dir = tree();
    let path = write(
        dir.path(),
        "unterminated.toml",
        "[image]\nsource = \"docker://busybox\n",
    );
    let file = path.display().to_string();
    let (out, _, stderr) = run(mm(dir.path(), &["validate", &file]));
    assert_eq!(code(&out), INVALID, "{stderr}");
    assert!(stderr.contains("TOML syntax"), "{stderr}");
    assert!(stderr.contains(&format!("--> {file}:2:")), "{stderr}");
    assert!(
        stderr.contains("2 | source = \"docker://busybox\n"),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.trim_end().ends_with('^')),
        "{stderr}"
    );
}

#[test]
fn validate_json_gives_the_same_locations() {
    let dir = tree();
    let case = &CASES[0];
    let path = write(dir.path(), case.file, case.text);
    let file = path.display().to_string();
    let (out, stdout, stderr) = run(mm(dir.path(), &["validate", "--json", &file]));
    assert_eq!(code(&out), INVALID, "{stderr}");
    let results: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let result = &results[0];
    assert_eq!(result["valid"], false, "{stdout}");
    let first = &result["diagnostics"][0];
    assert_eq!(first["key"], case.key, "{stdout}");
    assert_eq!(first["line"], case.line, "{stdout}");
    assert_eq!(first["column"], case.column, "{stdout}");
    assert_eq!(first["file"], file.as_str(), "{stdout}");
}

#[test]
fn validate_a_missing_image_directory_exits_65() {
    let dir = tree();
    let path = write(
        dir.path(),
        "nope.toml",
        "[image]\nsource = \"oci:./nope:latest\"\n",
    );
    let file = path.display().to_string();
    let (out, _, stderr) = run(mm(dir.path(), &["validate", &file]));
    assert_eq!(code(&out), INVALID, "{stderr}");
    assert!(stderr.contains("image.source"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    let missing = dir.path().join("machines/nope");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "names the resolved path {}: {stderr}",
        missing.display()
    );
    assert!(stderr.contains(&format!("--> {file}:2:10")), "{stderr}");
}

#[test]
fn validate_a_file_that_does_not_exist_exits_66() {
    let dir = tree();
    let file = dir.path().join("machines/absent.toml");
    let (out, _, stderr) = run(mm(dir.path(), &["validate", &file.display().to_string()]));
    assert_eq!(code(&out), NOT_FOUND, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn plan_an_unknown_machine_exits_66() {
    let dir = tree();
    let (out, _, stderr) = run(mm(dir.path(), &["plan", "no-such-machine"]));
    assert_eq!(code(&out), NOT_FOUND, "{stderr}");
    assert!(
        stderr.contains("no machine named `no-such-machine`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&dir.path().join("machines").display().to_string()),
        "says where it looked: {stderr}"
    );
}

#[test]
fn plan_an_invalid_machine_name_exits_2() {
    let dir = tree();
    let (out, _, stderr) = run(mm(dir.path(), &["plan", "bad_name"]));
    assert_eq!(code(&out), USAGE, "{stderr}");
    assert!(
        stderr.contains("`bad_name` is not a machine name"),
        "{stderr}"
    );
}

#[test]
fn plan_by_name_reports_the_definitions_errors() {
    let dir = tree();
    let case = &CASES[1];
    write(dir.path(), "broken.toml", case.text);
    let (out, _, stderr) = run(mm(dir.path(), &["plan", "broken"]));
    assert_eq!(code(&out), INVALID, "{stderr}");
    let file = dir.path().join("machines/broken.toml");
    let arrow = format!("--> {}:{}:{}", file.display(), case.line, case.column);
    assert!(stderr.contains(&arrow), "{stderr}");
}

/// An OCI layout `dir/bare` whose image `bare:t` has no layers and a config that names no
/// command (umoci's empty image), or why it cannot be made here.
fn image_without_command(dir: &Path) -> Result<String, String> {
    let layout = dir.join("bare");
    for args in [vec!["init", "--layout"], vec!["new", "--image"]] {
        let target = if args[0] == "init" {
            layout.display().to_string()
        } else {
            format!("{}:t", layout.display())
        };
        let status = std::process::Command::new("umoci")
            .args(&args)
            .arg(&target)
            .status()
            .map_err(|e| format!("umoci: {e} (apt-get install umoci)"))?;
        assert!(status.success(), "umoci {args:?} {target}");
    }
    Ok(format!("oci:{}:t", layout.display()))
}

const NO_COMMAND: &str =
    "names no command (its config has no Entrypoint or Cmd), and [exec] sets none";

/// An image whose config names no command, for a definition without one: a located error
/// on the definition (65) as soon as the image is in the store, from `mm plan` and from
/// `mm start` before any id is allocated or a writable layer made.
#[test]
fn no_command_anywhere_is_a_located_definition_error() {
    let dir = tree();
    let source = match image_without_command(dir.path()) {
        Ok(source) => source,
        Err(why) => {
            return support::skip("no_command_anywhere_is_a_located_definition_error", &why);
        }
    };
    let path = write(
        dir.path(),
        "bare.toml",
        &format!("[image]\nsource = \"{source}\"\n\n[storage]\npersistent = true\n"),
    );
    let arrow = format!("--> {}:2:10", path.display());
    let (out, _, stderr) = run(mm(dir.path(), &["image", "import", &source]));
    assert_eq!(code(&out), 0, "{stderr}");
    for verb in ["plan", "validate", "start"] {
        let (out, _, stderr) = run(mm(dir.path(), &[verb, "bare"]));
        assert_eq!(code(&out), INVALID, "mm {verb}: {stderr}");
        assert!(
            stderr.contains("error: exec.command: "),
            "mm {verb}: {stderr}"
        );
        assert!(stderr.contains(NO_COMMAND), "mm {verb}: {stderr}");
        assert!(stderr.contains(&arrow), "mm {verb}: {stderr}");
    }
    let state = dir.path().join("state/machines/bare");
    assert!(
        !state.exists(),
        "nothing made for the machine: {}",
        state.display()
    );
}

/// The same when the image is not in the store yet: `mm start` imports it (only then is
/// its config known), and stops there, before ids or a writable layer.
#[test]
fn no_command_is_found_right_after_the_import() {
    let dir = tree();
    let source = match image_without_command(dir.path()) {
        Ok(source) => source,
        Err(why) => return support::skip("no_command_is_found_right_after_the_import", &why),
    };
    let path = write(
        dir.path(),
        "bare.toml",
        &format!("[image]\nsource = \"{source}\"\n\n[storage]\npersistent = true\n"),
    );
    let (out, stdout, _) = run(mm(dir.path(), &["plan", "bare"]));
    assert_eq!(code(&out), 0, "not knowable before the import:\n{stdout}");
    let (out, _, stderr) = run(mm(dir.path(), &["start", "--no-systemd", "bare"]));
    assert_eq!(code(&out), INVALID, "{stderr}");
    assert!(stderr.contains(NO_COMMAND), "{stderr}");
    assert!(
        stderr.contains(&format!("--> {}:2:10", path.display())),
        "{stderr}"
    );
    let (_, listed, _) = run(mm(dir.path(), &["image", "list"]));
    assert!(listed.contains(&source), "the image was imported: {listed}");
    let state = dir.path().join("state/machines/bare");
    assert!(
        !state.exists(),
        "nothing made for the machine: {}",
        state.display()
    );
}

/// Root: an explicit `users.range` that overlaps another machine's recorded ids is the
/// definition's error, at that line (65), from `mm plan` and `mm start` alike.
#[test]
fn a_range_another_machine_holds_points_at_users_range() {
    if !support::is_root() {
        return support::skip(
            "a_range_another_machine_holds_points_at_users_range",
            "only root machines have recorded id blocks",
        );
    }
    let dir = tree();
    let source = match image_without_command(dir.path()) {
        Ok(source) => source,
        Err(why) => {
            return support::skip("a_range_another_machine_holds_points_at_users_range", &why);
        }
    };
    // What `mm start one` records for `range = { base = 600000, size = 65536 }`.
    let record = dir.path().join("state/machines/one");
    std::fs::create_dir_all(&record).unwrap();
    std::fs::write(record.join("ids.json"), r#"{"start":600000,"count":65536}"#).unwrap();
    let path = write(
        dir.path(),
        "two.toml",
        &format!(
            "[image]\nsource = \"{source}\"\n[exec]\ncommand = [\"/bin/true\"]\n\n[users]\nrange = {{ base = 650000, size = 65536 }}\n"
        ),
    );
    for verb in ["plan", "start"] {
        let (out, _, stderr) = run(mm(dir.path(), &[verb, "two"]));
        assert_eq!(code(&out), INVALID, "mm {verb}: {stderr}");
        assert!(
            stderr.contains(
                "error: users.range: 650000-715535 (65536 ids) overlaps machine `one`'s ids, \
                 600000-665535 (65536 ids)\n"
            ),
            "mm {verb}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("--> {}:7:9", path.display())),
            "mm {verb}: {stderr}"
        );
    }
    assert!(!dir.path().join("state/machines/two").exists());
}

/// A flag's bad value is clap's usage error (2), naming the flag and saying what is wanted.
#[test]
fn bad_flag_values_name_the_flag() {
    let dir = tree();
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["kill", "web", "--signal", "TREM"],
            "for '--signal <SIGNAL>'",
            "`TREM` is not a signal name or number",
        ),
        (
            &["kill", "web", "-s", "RTMIN+99"],
            "for '--signal <SIGNAL>'",
            "`RTMIN+99` is not a signal name or number",
        ),
        (
            &[
                "image",
                "import",
                "oci:./nope:latest",
                "--digest",
                "sha256:abc",
            ],
            "for '--digest <DIGEST>'",
            "`sha256:abc` is not a sha256 digest",
        ),
    ];
    for (args, flag, why) in cases {
        let (out, _, stderr) = run(mm(dir.path(), args));
        assert_eq!(code(&out), USAGE, "mm {args:?}: {stderr}");
        assert!(stderr.contains(flag), "mm {args:?}: {stderr}");
        assert!(stderr.contains(why), "mm {args:?}: {stderr}");
        assert!(!stderr.contains("image source"), "mm {args:?}: {stderr}");
    }
}

/// `mm list`: a valid definition whose runtime state cannot be read is `unknown`, with the
/// reason, not `invalid`.
#[test]
fn list_says_why_a_state_is_unknown() {
    let dir = tree();
    write(
        dir.path(),
        "web.toml",
        "[image]\nsource = \"docker://busybox\"\n[exec]\ncommand = [\"/bin/true\"]\n",
    );
    let run_dir = dir.path().join("state/run/web");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("state.json"), "garbage\n").unwrap();
    let (out, stdout, stderr) = run(mm(dir.path(), &["list", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed[0]["state"], "unknown", "{stdout}");
    let problem = listed[0]["problem"].as_str().unwrap_or_default();
    assert!(
        problem.starts_with(&format!("{}: ", run_dir.join("state.json").display())),
        "{stdout}"
    );
    let (_, stdout, _) = run(mm(dir.path(), &["list"]));
    assert!(stdout.contains("web   unknown    "), "{stdout}");
}
