//! Images and registries as podman and skopeo users have them (docs/ecosystem.md): images
//! without /etc/passwd, the names podman and skopeo write (`oci-archive:FILE:REF`,
//! multi-image `docker-archive:`), logins in auth.json and credential helpers, and
//! registries.conf (insecure, mirrors, blocked, short names). Every test has its own
//! MM_ROOT, its own registries on loopback ports and its own registries.conf and auth file
//! (`$CONTAINERS_REGISTRIES_CONF`, `$REGISTRY_AUTH_FILE`, HOME), so none reads /etc's.
//! Needs root (users, machines); skips with the reason.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// Runs a peer tool, which must succeed.
fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `FROM scratch` image made with umoci: one static busybox at /busybox, no /etc at all,
/// and a config that names no user. Its OCI layout, `DIR/scratch:latest`.
fn scratch_image(dir: &Path) -> PathBuf {
    let layout = dir.join("scratch");
    let image = format!("{}:latest", layout.display());
    tool(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    tool("umoci", &["new", "--image", &image]);
    tool(
        "umoci",
        &["insert", "--image", &image, "/bin/busybox", "/busybox"],
    );
    tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.cmd",
            "/busybox",
            "--config.cmd",
            "sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            "/busybox id -u; /busybox id -g; /busybox test -e /etc/passwd || echo no-passwd",
        ],
    );
    set_tree_readable(dir);
    layout
}

/// Makes a tree readable (and its directories searchable) by every user.
fn set_tree_readable(dir: &Path) {
    tool("chmod", &["-R", "a+rX", &dir.display().to_string()]);
}

#[test]
fn an_image_without_passwd_runs_as_0_0_and_a_named_user_says_which_file_is_missing() {
    let test = "an_image_without_passwd_runs_as_0_0_and_a_named_user_says_which_file_is_missing";
    if !ready(test) {
        return;
    }
    let images = shared_tempdir();
    let layout = scratch_image(images.path());

    // Root.
    let mut m = Machines::new();
    m.define_with_image("bare", &layout, "");
    m.define_with_image("named", &layout, "[exec]\nuser = \"www\"\n");
    let out = m.ok(&["run", "bare"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0", "0", "no-passwd"],
        "{out}"
    );
    let (out, stdout, stderr) = m.mm(&["run", "named"]);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "user `www` cannot be found: the machine has no /etc/passwd (a numeric UID[:GID] needs none)"
        ),
        "{stderr}"
    );

    // An ordinary user, with its own runtime and data directories.
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    std::fs::write(
        machines.join("bare.toml"),
        format!("[image]\nsource = \"oci:{}:latest\"\n", layout.display()),
    )
    .unwrap();
    let (runtime, data) = (dir.path().join("runtime"), dir.path().join("data"));
    for path in [&runtime, &data] {
        std::fs::create_dir(path).unwrap();
        user.give(path);
    }
    let mut command = user.mm(dir.path(), &["run", "bare"]);
    command
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_DATA_HOME", &data);
    let (out, stdout, stderr) = run(command);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["0", "0", "no-passwd"],
        "{stdout}{stderr}"
    );
    let mut rm = user.mm(dir.path(), &["rm", "bare"]);
    rm.env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_DATA_HOME", &data);
    let _ = run(rm);
}
