//! The command line as a user meets it: listings with --json, help, completions, man pages.

mod support;

use std::path::Path;

use support::*;

#[test]
fn list_shows_valid_and_invalid_definitions_and_which_files_win() {
    let dir = shared_tempdir();
    copy_examples(dir.path());
    std::fs::write(dir.path().join("machines/broken.toml"), "[image\n").unwrap();
    let later = dir.path().join("later");
    std::fs::create_dir(&later).unwrap();
    std::fs::write(
        later.join("web.toml"),
        "[image]\nsource = 'docker://busybox'\n",
    )
    .unwrap();
    let search = std::env::join_paths([dir.path().join("machines"), later.clone()]).unwrap();

    let mut command = mm(dir.path(), &["list", "--json"]);
    command.env("MM_PATH", &search);
    let (out, stdout, stderr) = run(command);
    assert!(out.status.success(), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let mut expected = example_names();
    expected.push("broken".to_owned());
    expected.sort();
    assert_eq!(names, expected);
    let broken = &listed[names.iter().position(|n| *n == "broken").unwrap()];
    assert_eq!(broken["state"], "invalid");
    assert!(
        broken["problem"].as_str().unwrap().contains("TOML syntax"),
        "{broken}"
    );
    let web = &listed[names.iter().position(|n| *n == "web").unwrap()];
    assert_eq!(web["state"], "stopped");
    assert_eq!(web["status"]["state"], "stopped");
    assert_eq!(web["description"], "busybox httpd on port 8080");
    assert!(web["image"].as_str().unwrap().starts_with("oci:/"));
    assert_eq!(
        web["shadowed"][0],
        later.join("web.toml").display().to_string()
    );

    let mut command = mm(dir.path(), &["list"]);
    command.env("MM_PATH", &search);
    let (_, text, _) = run(command);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("broken") && l.contains("invalid")),
        "{text}"
    );
}

#[test]
fn an_empty_search_path_says_where_it_looked() {
    let dir = shared_tempdir();
    let (out, stdout, _) = run(mm(dir.path(), &["list"]));
    assert!(out.status.success());
    assert!(
        stdout.contains("No machines defined. Looked in"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&dir.path().join("machines").display().to_string()),
        "{stdout}"
    );
}

#[test]
fn validate_all_reports_every_file_and_fails_if_one_is_bad() {
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let (out, stdout, stderr) = run(mm(dir.path(), &["validate"]));
    // Examples with [resources] are refused where limits are (machined.rs: `mm plan web`).
    let examples = example_names();
    let refused = limits_refused_here();
    let valid = examples
        .iter()
        .filter(|name| refused.is_none() || !example_has_limits(name))
        .count();
    if valid == examples.len() {
        assert!(out.status.success(), "{stdout}{stderr}");
    } else {
        assert_eq!(out.status.code(), Some(69), "{refused:?}: {stdout}{stderr}");
    }
    assert_eq!(stdout.matches(": valid").count(), valid, "{stdout}");

    std::fs::write(
        dir.path().join("machines/zz.toml"),
        "[image]\nsource = 'ocii:x'\n",
    )
    .unwrap();
    let (out, stdout, stderr) = run(mm(dir.path(), &["validate", "--json"]));
    // The exit code is the first failure's: a refused example sorts before zz.toml.
    let first_failure = if valid == examples.len() { 65 } else { 69 };
    assert_eq!(out.status.code(), Some(first_failure), "{stderr}");
    let results: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), examples.len() + 1, "every file is reported");
    let bad = results
        .iter()
        .find(|r| r["file"].as_str().unwrap().ends_with("/zz.toml"))
        .unwrap();
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["diagnostics"][0]["key"], "image.source");
    assert_eq!(bad["diagnostics"][0]["line"], 2);
    assert_eq!(bad["diagnostics"][0]["help"][0], "did you mean `oci:`?");
}

#[test]
fn help_completions_and_man_pages_come_from_one_definition() {
    let (out, stdout, _) = run(mm_bare(&["--help"]));
    assert!(out.status.success());
    for verb in ["validate", "plan", "list", "host", "completions"] {
        assert!(stdout.contains(verb), "--help lists {verb}: {stdout}");
    }
    let (out, bash, _) = run(mm_bare(&["completions", "bash"]));
    assert!(out.status.success());
    assert!(
        bash.contains("_mm()") && bash.contains("validate"),
        "{bash}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(mm_bare(&["man", dir.path().to_str().unwrap()]));
    assert!(out.status.success(), "{stderr}");
    let page = std::fs::read_to_string(dir.path().join("mm-plan.1")).unwrap();
    assert!(page.contains(".TH mm-plan 1"), "{page}");
    assert!(page.contains("host\\-file"), "{page}");

    let (out, _, stderr) = run(mm_bare(&["frobnicate"]));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}

/// An OCI layout `dir/app` whose image `app:t` (no layers) has a config naming an
/// entrypoint, a command, an environment, a user and a working directory.
fn image_with_config(dir: &Path) -> Result<String, String> {
    let layout = dir.join("app");
    let image = format!("{}:t", layout.display());
    let steps: [Vec<&str>; 3] = [
        vec!["init", "--layout", layout.to_str().unwrap()],
        vec!["new", "--image", &image],
        vec![
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/bin/serve",
            "--config.cmd",
            "--port",
            "--config.cmd",
            "80",
            "--config.env",
            "FROM_IMAGE=1",
            "--config.user",
            "1000:1000",
            "--config.workingdir",
            "/data",
        ],
    ];
    for args in steps {
        let status = std::process::Command::new("umoci")
            .args(&args)
            .status()
            .map_err(|e| format!("umoci: {e} (apt-get install umoci)"))?;
        assert!(status.success(), "umoci {args:?}");
    }
    Ok(format!("oci:{image}"))
}

/// `mm plan --json` says what will run: before the import, that the image's part is not
/// known yet; after it, the argv, environment, user and working directory resolved from
/// the image's config under the definition's, with the stop signal and the host's cgroup
/// hierarchies; and `mm plan` shows them.
#[test]
fn plan_shows_the_command_that_will_run_once_the_image_is_stored() {
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    let source = match image_with_config(dir.path()) {
        Ok(source) => source,
        Err(why) => {
            return skip(
                "plan_shows_the_command_that_will_run_once_the_image_is_stored",
                &why,
            );
        }
    };
    std::fs::write(
        machines.join("app.toml"),
        format!("[image]\nsource = \"{source}\"\n\n[exec]\nenv = {{ LANG = \"C\" }}\n"),
    )
    .unwrap();
    let plan = || {
        let (out, stdout, stderr) = run(mm(dir.path(), &["plan", "app", "--json"]));
        assert!(out.status.success(), "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let before = plan();
    let command = &before["plan"]["process"]["command"];
    assert_eq!(command["state"], "unresolved", "{command:#}");
    assert_eq!(command["argv"], serde_json::Value::Null, "{command:#}");

    let (out, _, stderr) = run(mm(dir.path(), &["image", "import", &source]));
    assert!(out.status.success(), "{stderr}");
    let after = plan();
    let command = &after["plan"]["process"]["command"];
    assert_eq!(command["state"], "resolved", "{command:#}");
    assert_eq!(
        command["argv"],
        serde_json::json!(["/bin/serve", "--port", "80"])
    );
    let env: Vec<&str> = command["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(env[..2], ["FROM_IMAGE=1", "LANG=C"], "{env:?}");
    assert!(
        env.iter().any(|v| v.starts_with("container_uuid=")),
        "{env:?}"
    );
    assert_eq!(command["user"], "1000:1000");
    assert_eq!(command["workdir"], "/data");
    assert_eq!(after["plan"]["stop"]["signal"], "SIGTERM");
    let tree = after["plan"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "cgroup-tree")
        .cloned()
        .unwrap();
    assert!(
        !tree["hierarchies"].as_array().unwrap().is_empty(),
        "{tree:#}"
    );
    assert_ne!(before["plan_hash"], after["plan_hash"]);

    let (out, text, stderr) = run(mm(dir.path(), &["plan", "app"]));
    assert!(out.status.success(), "{stderr}");
    assert!(
        text.contains("PID 1: mm's init, running /bin/serve --port 80\n"),
        "{text}"
    );
    assert!(text.contains("as 1000:1000 in /data"), "{text}");
    assert!(
        text.contains("environment: FROM_IMAGE=1 LANG=C PATH="),
        "{text}"
    );
}
