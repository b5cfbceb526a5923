//! Images and registries as podman and skopeo users have them (docs/ecosystem.md): images
//! without /etc/passwd, the names podman and skopeo write (`oci-archive:FILE:REF`,
//! multi-image `docker-archive:`), skopeo's `dir:` layout, podman's store (`containers-storage:`), logins in auth.json and credential helpers, and
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

/// The manifest digest `mm image list --json` gives for the image named `name`.
fn listed_manifest(d: &Path, name: &str) -> String {
    let (out, stdout, stderr) = run(support::mm(d, &["image", "list", "--json"]));
    assert!(out.status.success(), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))["manifest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_skopeo_dir_copy_imports_as_the_oci_image_it_came_from_and_runs() {
    let test = "a_skopeo_dir_copy_imports_as_the_oci_image_it_came_from_and_runs";
    if !ready(test) {
        return;
    }
    let dir = shared_tempdir();
    let d = dir.path();
    let busybox = busybox();
    let copied = d.join("copied");
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:latest", busybox.display()),
            &format!("dir:{}", copied.display()),
        ],
    );
    set_tree_readable(d);
    let mm = |args: &[&str]| run(support::mm(d, args));
    let oci = format!("oci:{}:latest", busybox.display());
    let from_dir = format!("dir:{}", copied.display());
    for source in [&oci, &from_dir] {
        let (out, stdout, stderr) = mm(&["image", "import", source]);
        assert!(out.status.success(), "{source}: {stdout}{stderr}");
    }
    // The same manifest, so the same config and layer digests (the layer is not unpacked
    // again: the store has it by its diff_id).
    assert_eq!(listed_manifest(d, &from_dir), listed_manifest(d, &oci));

    // A directory that is not skopeo's layout says so; a blob that does not match its
    // digest is refused.
    let (out, _, stderr) = mm(&["image", "import", &format!("dir:{}", busybox.display())]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is not a skopeo dir: image", busybox.display())),
        "{stderr}"
    );
    let broken = d.join("broken");
    tool(
        "cp",
        &[
            "-r",
            &copied.display().to_string(),
            &broken.display().to_string(),
        ],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(broken.join("manifest.json")).unwrap()).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    let config_file = broken.join(config.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&config_file).unwrap();
    bytes.push(b' ');
    std::fs::write(&config_file, bytes).unwrap();
    let (out, _, stderr) = mm(&["image", "import", &format!("dir:{}", broken.display())]);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("config {config} does not match its digest")),
        "{stderr}"
    );

    // A definition whose source is the dir: copy runs.
    let mut m = Machines {
        dir,
        names: Vec::new(),
    };
    let machines = m.dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("copied.toml"),
        format!(
            "[image]\nsource = \"{from_dir}\"\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \"echo from-dir\"]\n"
        ),
    )
    .unwrap();
    m.names.push("copied".to_owned());
    assert_eq!(m.ok(&["run", "copied"]).trim(), "from-dir");
}

/// Every file of a tree with its size, mode and modification time: to see that mm wrote
/// nothing in podman's store.
fn tree_state(dir: &Path) -> String {
    let out = Command::new("find")
        .arg(dir)
        .args(["-printf", "%P %y %s %m %T@\n"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<_> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn images_in_podmans_store_are_read_from_tar_split_verified_and_never_written() {
    let test = "images_in_podmans_store_are_read_from_tar_split_verified_and_never_written";
    if !ready(test) {
        return;
    }
    let dir = shared_tempdir();
    let d = dir.path();
    let (root, runroot) = (d.join("store"), d.join("runroot"));
    let spec = format!("[overlay@{}+{}]", root.display(), runroot.display());
    let podman_store = |args: &[&str]| {
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "overlay",
        ];
        all.extend_from_slice(args);
        let out = Command::new("podman").args(&all).output().unwrap();
        assert!(
            out.status.success(),
            "podman {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:latest", busybox().display()),
            &format!("containers-storage:{spec}localhost/x:1"),
        ],
    );
    // A layer podman made: a file only root may read, a symlink, a hard link, an empty file.
    let context = d.join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Containerfile"),
        "FROM localhost/x:1\nRUN echo built-by-podman > /hello && chmod 0600 /hello && ln -s /hello /link && ln /hello /hard && touch /empty\n",
    )
    .unwrap();
    // chroot isolation: the build needs no cgroup of its own.
    let id = podman_store(&[
        "build",
        "-q",
        "--pull=never",
        "--isolation",
        "chroot",
        "-t",
        "localhost/built:1",
        context.to_str().unwrap(),
    ]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let before = tree_state(&root);

    let mm = |args: &[&str]| run(support::mm(d, args));
    // The store's image first, on a fresh store: its layer is rebuilt and verified; the
    // oci: image it was copied from then has the same layer (by diff_id) already.
    let x = format!("containers-storage:{spec}localhost/x:1");
    let (out, stdout, stderr) = mm(&["image", "import", &x]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("verified and unpacked"), "{stderr}");
    let oci = format!("oci:{}:latest", busybox().display());
    let (out, _, stderr) = mm(&["image", "import", &oci]);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("already in the store"), "{stderr}");
    assert!(!stderr.contains("verified and unpacked"), "{stderr}");
    // By id, and by a name docker-normalized.
    for source in [
        format!("containers-storage:{spec}{id}"),
        format!("containers-storage:{spec}localhost/built:1@{id}"),
    ] {
        let (out, stdout, stderr) = mm(&["image", "import", &source]);
        assert!(out.status.success(), "{source}: {stdout}{stderr}");
    }
    let (out, _, stderr) = mm(&[
        "image",
        "import",
        &format!("containers-storage:{spec}localhost/gone:1"),
    ]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no image `localhost/gone:1` in the containers-storage store {}; images there: ",
            root.display()
        )) && stderr.contains("localhost/built:1"),
        "{stderr}"
    );
    assert_eq!(before, tree_state(&root), "mm wrote in podman's store");

    // A file changed behind podman's back (same size): the rebuilt stream is refused.
    let copy = d.join("copy");
    tool(
        "cp",
        &["-a", root.to_str().unwrap(), copy.to_str().unwrap()],
    );
    let layers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("overlay-images/images.json")).unwrap())
            .unwrap();
    let top = layers
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .unwrap()["layer"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        copy.join("overlay").join(&top).join("diff/hello"),
        "built-by-someone\n",
    )
    .unwrap();
    let fresh = d.join("fresh");
    let mut import = support::mm(
        &fresh,
        &[
            "image",
            "import",
            &format!("containers-storage:[overlay@{}]{id}", copy.display()),
        ],
    );
    import.env("MM_ROOT", fresh.join("state"));
    let (out, _, stderr) = run(import);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("its uncompressed content does not match the config's diff_id"),
        "{stderr}"
    );
    // Without tar-split data, no stream: said, not guessed.
    std::fs::remove_file(copy.join(format!("overlay-layers/{top}.tar-split.gz"))).unwrap();
    let mut import = support::mm(
        &fresh,
        &[
            "image",
            "import",
            &format!("containers-storage:[overlay@{}]{id}", copy.display()),
        ],
    );
    import.env("MM_ROOT", fresh.join("state"));
    let (out, _, stderr) = run(import);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("without tar-split data the exact tar stream cannot be rebuilt"),
        "{stderr}"
    );

    // `mm run` of the image podman just built.
    let mut m = Machines {
        dir,
        names: Vec::new(),
    };
    let machines = m.dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("built.toml"),
        format!(
            "[image]\nsource = \"containers-storage:{spec}localhost/built:1\"\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \"cat /link; stat -c %a /hello; test /hard -ef /hello && echo same\"]\n"
        ),
    )
    .unwrap();
    m.names.push("built".to_owned());
    assert_eq!(m.ok(&["run", "built"]).trim(), "built-by-podman\n600\nsame");
}

#[test]
fn rootless_mm_reads_the_users_own_podman_store_and_runs_its_image() {
    let test = "rootless_mm_reads_the_users_own_podman_store_and_runs_its_image";
    if !ready(test) {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let d = dir.path();
    let image = d.join("busybox");
    tool(
        "cp",
        &["-r", busybox().to_str().unwrap(), image.to_str().unwrap()],
    );
    set_tree_readable(d);
    let machines = d.join("machines");
    std::fs::create_dir(&machines).unwrap();
    std::fs::write(
        machines.join("fromstore.toml"),
        "[image]\nsource = \"containers-storage:localhost/x:1\"\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \"echo from-podman; id -u\"]\n",
    )
    .unwrap();
    let (runtime, data) = (d.join("runtime"), d.join("data"));
    for path in [&runtime, &data] {
        std::fs::create_dir(path).unwrap();
        user.give(path);
    }
    // The user's own store, where rootless podman and skopeo keep it
    // ($XDG_DATA_HOME/containers/storage), filled by skopeo as the user.
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "mm-test",
            "--regid",
            "users",
            "--init-groups",
            "--",
        ])
        .args(["skopeo", "copy", "-q"])
        .arg(format!("oci:{}:latest", image.display()))
        .arg("containers-storage:localhost/x:1")
        .current_dir(d)
        .env_clear()
        .env("HOME", &user.home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_DATA_HOME", &data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo as mm-test: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("containers/storage").is_dir());
    let as_user = |args: &[&str]| {
        let mut command = user.mm(d, args);
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", &data);
        run(command)
    };
    let (out, stdout, stderr) = as_user(&["image", "import", "containers-storage:localhost/x:1"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("verified and unpacked"), "{stderr}");
    let (out, stdout, stderr) = as_user(&["run", "fromstore"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["from-podman", "0"],
        "{stdout}{stderr}"
    );
    let _ = as_user(&["rm", "fromstore"]);
}

/// A port nothing listens on (bound, noted, released): a mirror that is down.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

#[test]
fn registries_conf_gives_mirrors_insecure_and_blocked_registries_and_mm_run_pulls_through_it() {
    let test =
        "registries_conf_gives_mirrors_insecure_and_blocked_registries_and_mm_run_pulls_through_it";
    if !ready(test) {
        return;
    }
    let (mirror, origin) = match (LocalRegistry::start(), LocalRegistry::start()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(why), _) | (_, Err(why)) => return skip(test, &why),
    };
    let image = format!("oci:{}:latest", busybox().display());
    mirror.push(&image, "copy/busybox:latest");
    let m = Machines::new();
    let d = m.dir.path();
    let conf = d.join("registries.conf");
    // The origin holds nothing: the image comes from the second mirror, after the first
    // (down) failed. Everything is plain HTTP, allowed by `insecure`.
    std::fs::write(
        &conf,
        format!(
            r#"unqualified-search-registries = []
[[registry]]
prefix = "images.mm.test/team"
location = "{origin}/nothing"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:{dead}/down"
insecure = true
[[registry.mirror]]
location = "{mirror}/copy"
insecure = true

[[registry]]
location = "{mirror}"
insecure = true

[[registry]]
prefix = "*.blocked.mm.test"
blocked = true
"#,
            origin = origin.address,
            mirror = mirror.address,
            dead = dead_port()
        ),
    )
    .unwrap();
    let home = d.join("home");
    std::fs::create_dir(&home).unwrap();
    let mm = |args: &[&str]| {
        let mut command = m.command(args);
        command
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("HOME", &home)
            .env("REGISTRY_AUTH_FILE", d.join("no-auth.json"));
        run(command)
    };
    let machines = d.join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("mirrored.toml"),
        "[image]\nsource = \"docker://images.mm.test/team/busybox:latest\"\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \"echo pulled\"]\n",
    )
    .unwrap();
    let (out, stdout, stderr) = mm(&["run", "mirrored"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "pulled", "{stderr}");

    // `insecure` is enough for plain HTTP: no --tls-verify=false.
    let direct = format!("docker://{}/copy/busybox:latest", mirror.address);
    let (out, _, stderr) = mm(&["image", "pull", &direct]);
    assert!(out.status.success(), "{stderr}");

    // Blocked: refused before anything is sent, with the file that blocks it.
    let (out, _, stderr) = mm(&["image", "pull", "docker://quay.blocked.mm.test/a/b:1"]);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "quay.blocked.mm.test/a/b:1 is blocked by the [[registry]] with prefix `*.blocked.mm.test` in {}",
            conf.display()
        )),
        "{stderr}"
    );

    // A mirror that lacks the image, and an origin that lacks it: both are said.
    std::fs::write(
        machines.join("missing.toml"),
        "[image]\nsource = \"docker://images.mm.test/team/gone:latest\"\n[exec]\ncommand = [\"/bin/true\"]\n",
    )
    .unwrap();
    let (out, _, stderr) = mm(&["run", "missing"]);
    assert_eq!(out.status.code(), Some(66), "{:?} {stderr}", out.status);
    assert!(
        stderr.contains(&format!("{}/v2/nothing/gone", origin.address))
            && stderr.contains("mirrors tried first")
            && stderr.contains(&format!("{}/v2/copy/gone", mirror.address)),
        "{stderr}"
    );

    // A registries.conf mm cannot read is an error naming it.
    std::fs::write(&conf, "[[registry]]\nlocaton = \"x\"\n").unwrap();
    let (out, _, stderr) = mm(&["image", "pull", &direct]);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("registries.conf {}:", conf.display()))
            && stderr.contains("locaton"),
        "{stderr}"
    );
}

#[test]
fn short_names_resolve_through_aliases_and_search_registries_as_podman_does() {
    let test = "short_names_resolve_through_aliases_and_search_registries_as_podman_does";
    if !ready(test) {
        return;
    }
    let registry = match LocalRegistry::start() {
        Ok(registry) => registry,
        Err(why) => return skip(test, &why),
    };
    registry.push(
        &format!("oci:{}:latest", busybox().display()),
        "team/shortbox:latest",
    );
    let m = Machines::new();
    let d = m.dir.path();
    let conf = d.join("registries.conf");
    let dead = format!("127.0.0.1:{}", dead_port());
    let write_conf = |mode: &str| {
        std::fs::write(
            &conf,
            format!(
                r#"unqualified-search-registries = ["{dead}", "{at}"]
{mode}
[aliases]
"mm-test-alias" = "{at}/team/shortbox"

[[registry]]
location = "{dead}"
insecure = true

[[registry]]
location = "{at}"
insecure = true
"#,
                at = registry.address
            ),
        )
        .unwrap()
    };
    write_conf("short-name-mode = \"permissive\"");
    let home = d.join("home");
    std::fs::create_dir(&home).unwrap();
    let mm = |args: &[&str]| {
        let mut command = m.command(args);
        command
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("HOME", &home)
            .env("REGISTRY_AUTH_FILE", d.join("no-auth.json"));
        run(command)
    };
    let machines = d.join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("short.toml"),
        "[image]\nsource = \"team/shortbox:latest\"\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \"echo short\"]\n",
    )
    .unwrap();
    // Permissive: the first search registry (down) fails, the second has it; each try is said.
    let (out, stdout, stderr) = mm(&["run", "short"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "short", "{stderr}");
    let tried = |at: &str| {
        format!(
            "team/shortbox:latest: trying {at}/team/shortbox:latest (unqualified-search-registries in {})",
            conf.display()
        )
    };
    assert!(
        stderr.contains(&tried(&dead)) && stderr.contains(&tried(&registry.address)),
        "{stderr}"
    );
    let (out, stdout, stderr) = mm(&["image", "ls", "--json"]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("\"team/shortbox:latest\""), "{stdout}");

    // An alias is taken before any search, with the short name's tag.
    let (out, _, stderr) = mm(&["image", "pull", "mm-test-alias:latest"]);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "trying {}/team/shortbox:latest (an alias in {})",
            registry.address,
            conf.display()
        )),
        "{stderr}"
    );

    // Enforcing, podman's default: two registries to choose from, and mm does not guess.
    write_conf("");
    let (out, _, stderr) = mm(&["image", "pull", "team/other:1"]);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "short name `team/other:1`: it may be any of {dead}/team/other:1, {}/team/other:1",
            registry.address
        )) && stderr.contains("short-name-mode is enforcing (the default)"),
        "{stderr}"
    );

    // A short name that is also a directory beside the definition is refused, with both
    // spellings that would say which was meant.
    std::fs::create_dir_all(machines.join("layouts/box")).unwrap();
    std::fs::write(
        machines.join("ambiguous.toml"),
        "[image]\nsource = \"layouts/box\"\n[exec]\ncommand = [\"/bin/true\"]\n",
    )
    .unwrap();
    let (out, _, stderr) = mm(&["validate", "ambiguous"]);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("`layouts/box` is a path beside the definition")
            && stderr.contains("oci:layouts/box"),
        "{stderr}"
    );

    // An ordinary user's pull resolves the same way (its layers owned by its own ids).
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let (state, user_home) = (dir.path().join("state"), dir.path().join("home"));
    for p in [&state, &user_home] {
        std::fs::create_dir_all(p).unwrap();
        user.give(p);
    }
    set_tree_readable(d);
    let mut command = user.mm(dir.path(), &["image", "pull", "mm-test-alias:latest"]);
    command
        .env("MM_ROOT", &state)
        .env("HOME", &user_home)
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("REGISTRY_AUTH_FILE", d.join("no-auth.json"));
    let (out, _, stderr) = run(command);
    assert!(out.status.success(), "rootless: {stderr}");
    assert!(stderr.contains("(an alias in "), "rootless: {stderr}");
}

#[test]
fn logins_come_from_authfile_auth_json_and_credential_helpers_as_root_and_rootless() {
    let test = "logins_come_from_authfile_auth_json_and_credential_helpers_as_root_and_rootless";
    if !ready(test) {
        return;
    }
    let registry = match LocalRegistry::start_with_login("mm", "secret") {
        Ok(registry) => registry,
        Err(why) => return skip(test, &why),
    };
    let image = format!("oci:{}:latest", busybox().display());
    let source = registry.push_as(&image, "private/busybox:latest", Some("mm:secret"));
    let dir = shared_tempdir();
    let d = dir.path();
    let conf = d.join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.address
        ),
    )
    .unwrap();
    // "mm:secret", as podman login writes it.
    let auths = |auth: &str| {
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.address
        )
    };
    let good = d.join("good.json");
    std::fs::write(&good, auths("bW06c2VjcmV0")).unwrap();
    let wrong = d.join("wrong.json");
    // "mm:wrong"
    std::fs::write(&wrong, auths("bW06d3Jvbmc=")).unwrap();
    // docker's helper protocol: the registry on stdin, a JSON login on stdout.
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-mmtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nr=$(cat)\n[ \"$r\" = \"{}\" ] || {{ echo credentials not found in native keychain; exit 1; }}\necho '{{\"ServerURL\":\"'\"$r\"'\",\"Username\":\"mm\",\"Secret\":\"secret\"}}'\n",
            registry.address
        ),
    )
    .unwrap();
    set_mode(&helper, 0o755);
    let helped = d.join("helped.json");
    std::fs::write(
        &helped,
        format!(r#"{{"credHelpers":{{"{}":"mmtest"}}}}"#, registry.address),
    )
    .unwrap();
    set_tree_readable(d);
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let pull = |state: &str, env: &[(&str, &Path)], args: &[&str]| {
        let mut command = support::mm(d, &["image", "pull", &source]);
        command
            .args(args)
            .env("MM_ROOT", d.join(state))
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("HOME", d.join("home"))
            .env("PATH", &path)
            .env_remove("REGISTRY_AUTH_FILE");
        for (key, value) in env {
            command.env(key, value);
        }
        run(command)
    };
    let none = d.join("none.json");
    let (out, _, stderr) = pull("s0", &[("REGISTRY_AUTH_FILE", &none)], &[]);
    assert!(!out.status.success());
    assert!(stderr.contains("asks for a login"), "{stderr}");
    let (out, _, stderr) = pull("s1", &[], &["--authfile", good.to_str().unwrap()]);
    assert!(out.status.success(), "--authfile: {stderr}");
    // --authfile is the only file read: $REGISTRY_AUTH_FILE's good login does not count.
    let (out, _, stderr) = pull(
        "s2",
        &[("REGISTRY_AUTH_FILE", &good)],
        &["--authfile", wrong.to_str().unwrap()],
    );
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");
    let (out, _, stderr) = pull("s3", &[("REGISTRY_AUTH_FILE", &helped)], &[]);
    assert!(out.status.success(), "credHelpers: {stderr}");
    // ~/.docker/config.json, after an XDG_CONFIG_HOME file without an entry for it (root's
    // primary file, /run/containers/0/auth.json, is left out of this by DOCKER_CONFIG's
    // files coming last: it has no entry for a loopback registry of this test).
    let config_home = d.join("config");
    std::fs::create_dir_all(config_home.join("containers")).unwrap();
    std::fs::write(
        config_home.join("containers/auth.json"),
        r#"{"auths":{"elsewhere.example":{"auth":"bW06c2VjcmV0"}}}"#,
    )
    .unwrap();
    let docker = d.join("docker");
    std::fs::create_dir(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{}}}},"credsStore":"mmtest"}}"#,
            registry.address
        ),
    )
    .unwrap();
    let (out, _, stderr) = pull(
        "s4",
        &[
            ("XDG_CONFIG_HOME", &config_home),
            ("DOCKER_CONFIG", &docker),
        ],
        &[],
    );
    assert!(out.status.success(), "credsStore: {stderr}");

    // An ordinary user: its $XDG_RUNTIME_DIR/containers/auth.json, as rootless podman login
    // writes it.
    let user = test_user("mm-test", Some(300_000));
    let (runtime, state, home) = (d.join("runtime"), d.join("user-state"), d.join("user-home"));
    std::fs::create_dir_all(runtime.join("containers")).unwrap();
    std::fs::copy(&good, runtime.join("containers/auth.json")).unwrap();
    for p in [&runtime, &state, &home] {
        user.give(p);
    }
    let mut command = user.mm(d, &["image", "pull", &source]);
    command
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("MM_ROOT", &state)
        .env("HOME", &home)
        .env("CONTAINERS_REGISTRIES_CONF", &conf);
    let (out, _, stderr) = run(command);
    assert!(out.status.success(), "rootless: {stderr}");
}
