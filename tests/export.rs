//! `mm export`/`mm unexport` (launchers run from a real host shell), `mm commit` (added,
//! changed and deleted files; the deletion a whiteout) and `mm image export` read back by
//! skopeo, podman and mm itself, as root and as an ordinary user.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

const SLEEPER: &str = "[exec]\ncommand = [\"sleep\", \"infinity\"]\n";

/// Runs `script` in a host `sh -c` with `input` on its standard input: stdout, exit code.
fn host_sh(script: &str, input: &str) -> (String, Option<i32>) {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

#[test]
fn a_launcher_passes_arguments_stdin_and_exit_codes_and_starts_its_machine() {
    let test = "a_launcher_passes_arguments_stdin_and_exit_codes_and_starts_its_machine";
    if !ready(test) {
        return;
    }
    let mut machines = Machines::new();
    machines.define("launch", SLEEPER);
    let bin = machines.dir.path().join("bin");
    let bin_dir = bin.to_str().unwrap();
    machines.ok(&[
        "export",
        "launch",
        "--bin",
        "/bin/sh",
        "--name",
        "msh",
        "--bin-dir",
        bin_dir,
    ]);
    let launcher = bin.join("msh");
    // Stopped: the launcher starts the machine first.
    assert_eq!(machines.status("launch")["state"], "stopped");
    let script = format!(
        "{} -c 'printf \"[%s]\" \"$@\"; cat; exit 7' zero 'a b' '' -- \"it's\" '\"q\"'",
        launcher.display()
    );
    let (out, code) = host_sh(&script, "from stdin\n");
    assert_eq!(out, "[a b][][--][it's][\"q\"]from stdin\n");
    assert_eq!(code, Some(7));
    assert_eq!(machines.status("launch")["state"], "running");
    let (_, code) = host_sh(&format!("{} -c 'kill -TERM $$'", launcher.display()), "");
    assert_eq!(code, Some(128 + 15));

    let listed: serde_json::Value =
        serde_json::from_str(&machines.ok(&["export", "--list", "launch", "--json"])).unwrap();
    assert_eq!(listed[0]["kind"], "bin");
    assert_eq!(listed[0]["name"], "msh");
    assert_eq!(listed[0]["program"], "/bin/sh");
    assert_eq!(listed[0]["launcher"], launcher.to_str().unwrap());
    machines.ok(&["unexport", "launch", "--bin", "msh"]);
    assert!(!launcher.exists());
    let listed = machines.ok(&["export", "--list", "launch", "--json"]);
    assert_eq!(listed.trim(), "[]");
}

#[test]
fn unexport_and_export_leave_files_mm_did_not_write_alone() {
    let test = "unexport_and_export_leave_files_mm_did_not_write_alone";
    if !ready(test) {
        return;
    }
    let mut machines = Machines::new();
    machines.define("foreign", SLEEPER);
    let bin = machines.dir.path().join("bin");
    let bin_dir = bin.to_str().unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("ls"), "#!/bin/sh\necho mine\n").unwrap();
    // An existing file is an error without --force.
    let (out, _, stderr) = machines.mm(&[
        "export",
        "foreign",
        "--bin",
        "/bin/ls",
        "--bin-dir",
        bin_dir,
    ]);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("exists; `--force` replaces it"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(bin.join("ls")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );
    machines.ok(&[
        "export",
        "foreign",
        "--bin",
        "/bin/ls",
        "--bin-dir",
        bin_dir,
        "--force",
    ]);
    // Someone replaces mm's launcher: unexport refuses to remove it.
    std::fs::write(bin.join("ls"), "#!/bin/sh\necho mine again\n").unwrap();
    let (out, _, stderr) = machines.mm(&["unexport", "foreign", "--all"]);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("was not written by mm export"), "{stderr}");
    assert!(bin.join("ls").exists());
    let (out, _, stderr) = machines.mm(&["unexport", "foreign", "--bin", "cat"]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
}

#[test]
fn an_app_is_exported_from_its_desktop_entry_read_inside_the_machine() {
    let test = "an_app_is_exported_from_its_desktop_entry_read_inside_the_machine";
    if !ready(test) {
        return;
    }
    let mut machines = Machines::new();
    machines.define("apps", SLEEPER);
    machines.ok(&["start", "apps", "--no-systemd"]);
    let entry = "[Desktop Entry]\nType=Application\nName=Echo\nExec=/bin/echo \"hello there\" %U\n\
                 TryExec=/bin/false\nIcon=/usr/share/x.png\n";
    let hostile = "[Desktop Entry]\nType=Application\nName=Evil\nExec=sh -c `touch /tmp/pwned`\n";
    machines.ok(&[
        "exec",
        "apps",
        "--",
        "sh",
        "-c",
        &format!(
            "mkdir -p /usr/share/applications && printf '%s' '{entry}' > /usr/share/applications/echo.desktop && printf '%s' '{hostile}' > /usr/share/applications/evil.desktop"
        ),
    ]);
    let dir = machines.dir.path();
    let (bin, apps) = (dir.join("bin"), dir.join("apps"));
    let args = |app: &'static str| {
        vec![
            "export".to_owned(),
            "apps".to_owned(),
            "--app".to_owned(),
            app.to_owned(),
            "--bin-dir".to_owned(),
            bin.display().to_string(),
            "--apps-dir".to_owned(),
            apps.display().to_string(),
        ]
    };
    let echo: Vec<String> = args("echo");
    machines.ok(&echo.iter().map(String::as_str).collect::<Vec<_>>());
    let desktop = std::fs::read_to_string(apps.join("mm-apps-echo.desktop")).unwrap();
    let launcher = bin.join("mm-apps-echo");
    assert!(
        desktop.contains(&format!("Exec={} %U\n", launcher.display())),
        "{desktop}"
    );
    assert!(desktop.contains("Name=Echo (apps)\n"), "{desktop}");
    assert!(
        !desktop.contains("TryExec") && !desktop.contains("Icon"),
        "{desktop}"
    );
    let (out, code) = host_sh(&format!("{} file.txt", launcher.display()), "");
    assert_eq!((out.as_str(), code), ("hello there file.txt\n", Some(0)));

    let evil: Vec<String> = args("evil");
    let (out, _, stderr) = machines.mm(&evil.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("outside quotes"), "{stderr}");
    assert!(!bin.join("mm-apps-evil").exists());

    machines.ok(&["unexport", "apps", "--app", "echo"]);
    assert!(!launcher.exists() && !apps.join("mm-apps-echo.desktop").exists());
}

/// Adds, changes and deletes a file in `NAME`, stops it and commits it as mm:TAG; then
/// checks a machine started from mm:TAG, and exports it.
fn commit_and_check(
    mm: &dyn Fn(&[&str]) -> Command,
    machines_dir: &Path,
    out_dir: &Path,
    who: &str,
) {
    let ok = |args: &[&str]| {
        let (out, stdout, stderr) = run(mm(args));
        assert!(out.status.success(), "{who}: mm {args:?}: {stdout}{stderr}");
        stdout
    };
    std::fs::write(
        machines_dir.join("base.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n{SLEEPER}",
            busybox().display()
        ),
    )
    .unwrap();
    std::fs::write(
        machines_dir.join("child.toml"),
        format!("[image]\nsource = \"mm:kept\"\n{SLEEPER}"),
    )
    .unwrap();
    ok(&["start", "base", "--no-systemd"]);
    ok(&[
        "exec",
        "base",
        "--",
        "sh",
        "-c",
        "echo added > /added; chown 33:44 /added; echo changed > /etc/hostname; rm /bin/vi",
    ]);
    let (out, _, stderr) = run(mm(&["commit", "base", "--tag", "kept"]));
    assert_eq!(out.status.code(), Some(2), "{who}: {stderr}");
    assert!(
        stderr.contains("it is running; stop it first"),
        "{who}: {stderr}"
    );
    ok(&["stop", "base"]);
    let committed = ok(&["commit", "base", "--tag", "kept"]);
    assert!(committed.contains("1 whiteouts"), "{who}: {committed}");
    let (out, _, stderr) = run(mm(&["commit", "base", "--tag", "kept"]));
    assert_eq!(out.status.code(), Some(2), "{who}: {stderr}");

    ok(&["start", "child", "--no-systemd"]);
    let seen = ok(&[
        "exec",
        "child",
        "--",
        "sh",
        "-c",
        "cat /added /etc/hostname; stat -c '%u:%g' /added; test -e /bin/vi && echo vi is there; true",
    ]);
    assert_eq!(seen, "added\nchanged\n33:44\n", "{who}");
    ok(&["stop", "child"]);

    let images: serde_json::Value =
        serde_json::from_str(&ok(&["image", "list", "--json"])).unwrap();
    let kept = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "mm:kept")
        .unwrap();
    assert_eq!(kept["layers"], 2);

    let archive = out_dir.join("kept.tar");
    let target = format!("oci-archive:{}", archive.display());
    ok(&["image", "export", "mm:kept", &target]);
    let inspected = Command::new("skopeo")
        .args(["inspect", &target])
        .output()
        .unwrap();
    assert!(
        inspected.status.success(),
        "{who}: skopeo: {}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    let exported_layers = inspected["Layers"].clone();
    assert_eq!(exported_layers.as_array().unwrap().len(), 2);
    // Back into mm: the same layers.
    ok(&["image", "import", &target]);
    let images: serde_json::Value =
        serde_json::from_str(&ok(&["image", "list", "--json"])).unwrap();
    let back = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().starts_with("oci-archive:"))
        .unwrap();
    let exported = ok(&[
        "image",
        "export",
        back["name"].as_str().unwrap(),
        &format!("oci:{}:again", out_dir.join("layout").display()),
    ]);
    assert!(exported.contains("2 layers"), "{who}: {exported}");
    let again = Command::new("skopeo")
        .args([
            "inspect",
            &format!("oci:{}:again", out_dir.join("layout").display()),
        ])
        .output()
        .unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["Layers"], exported_layers, "{who}");
    ok(&["rm", "base"]);
    ok(&["rm", "child"]);
}

#[test]
fn a_committed_machine_is_an_image_that_skopeo_podman_and_mm_read_as_root() {
    let test = "a_committed_machine_is_an_image_that_skopeo_podman_and_mm_read_as_root";
    if !ready(test) {
        return;
    }
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    let mm = |args: &[&str]| support::mm(dir.path(), args);
    let _stop = OnDrop(|| {
        for name in ["base", "child"] {
            let _ = support::mm(dir.path(), &["stop", name, "--timeout", "1"]).output();
        }
    });
    commit_and_check(&mm, &machines, dir.path(), "root");
    // podman, as root, in a store of its own.
    let podman_root = dir.path().join("podman");
    let loaded = Command::new("podman")
        .arg("--root")
        .arg(podman_root.join("root"))
        .arg("--runroot")
        .arg(podman_root.join("run"))
        .args(["--storage-driver", "vfs", "load", "-i"])
        .arg(dir.path().join("kept.tar"))
        .output()
        .expect("podman is installed (scripts/setup)");
    assert!(
        loaded.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("Loaded image"));
}

#[test]
fn a_rootless_user_commits_and_exports_with_its_own_ids() {
    let test = "a_rootless_user_commits_and_exports_with_its_own_ids";
    if !is_root() {
        return skip(test, "creating users needs root");
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run scripts/build-busybox-image"
    );
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let (machines, state, runtime) = (
        dir.path().join("machines"),
        dir.path().join("state"),
        dir.path().join("runtime"),
    );
    for path in [&machines, &state, &runtime, &dir.path().to_path_buf()] {
        user.give(path);
    }
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command
            .env("MM_ROOT", &state)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        command
    };
    let _stop = OnDrop(|| {
        for name in ["base", "child"] {
            let _ = mm(&["stop", name, "--timeout", "1"]).output();
        }
    });
    // The chown to 33:44 inside lands on the user's subordinate ids on disk, and comes back
    // as 33:44 in the committed layer (the machine started from it sees it so).
    // Rootless podman is not tried: it needs the harness user's own podman configuration.
    commit_and_check(&mm, &machines, dir.path(), "rootless");
}
