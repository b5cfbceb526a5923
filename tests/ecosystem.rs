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

/// `podman ARGS` as root, in a store of its own under `dir`.
fn podman(dir: &Path, args: &[&str]) {
    let root = dir.join("podman");
    let (store, run) = (root.join("root"), root.join("run"));
    let mut all = vec![
        "--root",
        store.to_str().unwrap(),
        "--runroot",
        run.to_str().unwrap(),
        "--storage-driver",
        "vfs",
    ];
    all.extend_from_slice(args);
    tool("podman", &all);
}

#[test]
fn archives_are_named_as_podman_and_skopeo_write_them() {
    let test = "archives_are_named_as_podman_and_skopeo_write_them";
    if !ready(test) {
        return;
    }
    let dir = shared_tempdir();
    let d = dir.path();
    let scratch = scratch_image(d);
    let busybox = busybox();
    // podman writes the whole reference as the OCI ref.name, and `save -m` one
    // docker-archive with several images.
    for (layout, name) in [
        (&busybox, "localhost/clbox:latest"),
        (&scratch, "localhost/scratch:latest"),
    ] {
        let store = format!(
            "containers-storage:[vfs@{}+{}]{name}",
            d.join("podman/root").display(),
            d.join("podman/run").display()
        );
        let from = format!("oci:{}:latest", layout.display());
        tool("skopeo", &["copy", "-q", &from, &store]);
    }
    let (clbox, multi) = (d.join("clbox.tar"), d.join("multi.tar"));
    podman(
        d,
        &[
            "save",
            "-q",
            "--format",
            "oci-archive",
            "-o",
            clbox.to_str().unwrap(),
            "localhost/clbox:latest",
        ],
    );
    podman(
        d,
        &[
            "save",
            "-q",
            "-m",
            "-o",
            multi.to_str().unwrap(),
            "localhost/clbox:latest",
            "localhost/scratch:latest",
        ],
    );
    // skopeo names an oci-archive's image as it is told.
    let copied = d.join("skopeo.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:latest", busybox.display()),
            &format!("oci-archive:{}:localhost/sk:1.0", copied.display()),
        ],
    );
    set_tree_readable(d);

    let mm = |args: &[&str]| run(support::mm(d, args));
    for source in [
        format!("oci-archive:{}:localhost/clbox:latest", clbox.display()),
        format!("oci-archive:{}:localhost/sk:1.0", copied.display()),
        format!("docker-archive:{}:@0", multi.display()),
        format!(
            "docker-archive:{}:localhost/scratch:latest",
            multi.display()
        ),
    ] {
        let (out, stdout, stderr) = mm(&["image", "import", &source]);
        assert!(out.status.success(), "{source}: {stdout}{stderr}");
        assert!(stdout.contains(&source), "{stdout}");
    }
    let scratch_dir = d.join("state");
    let never_scratch = |stderr: &str| {
        assert!(
            !stderr.contains(&scratch_dir.display().to_string()),
            "errors name the user's archive, never mm's scratch directory: {stderr}"
        );
    };
    // A missing name: the user's archive, and what it has.
    let (out, _, stderr) = mm(&[
        "image",
        "import",
        &format!("oci-archive:{}:latest", clbox.display()),
    ]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} has no tag `latest`; tags here: localhost/clbox:latest",
            clbox.display()
        )),
        "{stderr}"
    );
    never_scratch(&stderr);
    let (out, _, stderr) = mm(&[
        "image",
        "import",
        &format!("docker-archive:{}:localhost/gone:1", multi.display()),
    ]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} has no tag `localhost/gone:1`; tags here: localhost/clbox:latest, localhost/scratch:latest",
            multi.display()
        )),
        "{stderr}"
    );
    never_scratch(&stderr);
    let (out, _, stderr) = mm(&[
        "image",
        "import",
        &format!("docker-archive:{}", multi.display()),
    ]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} holds several images (@0 localhost/clbox:latest, @1 localhost/scratch:latest)",
            multi.display()
        )),
        "{stderr}"
    );
    never_scratch(&stderr);
    let (out, _, stderr) = mm(&[
        "image",
        "import",
        &format!("docker-archive:{}:@2", multi.display()),
    ]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} holds 2 image(s) (@0 to @1), not @2",
            multi.display()
        )),
        "{stderr}"
    );

    // The chosen image is the one that runs.
    let mut m = Machines {
        dir,
        names: Vec::new(),
    };
    let machines = m.dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    for (name, image) in [("first", "@0"), ("second", "@1")] {
        std::fs::write(
            machines.join(format!("{name}.toml")),
            format!(
                "[image]\nsource = \"docker-archive:{}:{image}\"\n[exec]\ncommand = [\"/busybox\", \"sh\", \"-c\", \"echo scratch\"]\n",
                multi.display()
            ),
        )
        .unwrap();
        m.names.push(name.to_owned());
    }
    let (_, stdout, stderr) = m.mm(&["run", "first"]);
    assert!(
        !stdout.contains("scratch"),
        "busybox has no /busybox: {stdout}{stderr}"
    );
    assert_eq!(m.ok(&["run", "second"]).trim(), "scratch");
}
