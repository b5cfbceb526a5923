//! mm as an ordinary user: host facts, discovery under XDG directories, id maps through
//! newuidmap, and clear errors where rootless cannot do what a definition asks.
//! Needs root to create the test users; skips with the reason otherwise.

mod support;

use support::*;

#[test]
fn an_ordinary_user_sees_its_own_facts_and_directories() {
    if !is_root() {
        return skip(
            "an_ordinary_user_sees_its_own_facts_and_directories",
            "creating users needs root",
        );
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let (out, stdout, stderr) = run(user.mm(dir.path(), &["host", "--json"]));
    assert!(out.status.success(), "{stderr}");
    let facts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(facts["uid"], user.uid);
    assert_eq!(facts["user"], "mm-test");
    assert_eq!(facts["subuid"][0]["start"], user.subuid_start());
    assert_eq!(facts["subuid"][0]["count"], 65536);
    let home = user.home.display().to_string();
    assert_eq!(
        facts["dirs"]["store"],
        format!("{home}/.local/share/mm/images")
    );
    assert_eq!(
        facts["dirs"]["search"][0],
        dir.path().join("machines").display().to_string()
    );
    assert!(facts["cgroup"]["controllers"].is_array());
}

#[test]
fn a_rootless_dev_machine_maps_root_to_the_user_and_the_rest_to_its_range() {
    if !is_root() {
        return skip(
            "a_rootless_dev_machine_maps_root_to_the_user",
            "creating users needs root",
        );
    }
    if !default_image_built() {
        panic!(
            "images/busybox is missing: run ./scripts/setup (or ./scripts/build-busybox-image) first"
        );
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    copy_examples(dir.path());

    let (out, stdout, stderr) = run(user.mm(dir.path(), &["validate", "dev"]));
    assert!(out.status.success(), "{stdout}{stderr}");

    let (out, stdout, stderr) = run(user.mm(dir.path(), &["plan", "dev", "--json"]));
    assert!(out.status.success(), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids = &plan["plan"]["ids"];
    assert_eq!(ids["writer"], "newidmap");
    assert_eq!(
        ids["uid"]["entries"][0],
        serde_json::json!({"inside": 0, "outside": user.uid, "count": 1})
    );
    assert_eq!(ids["uid"]["entries"][1]["inside"], 1);
    assert_eq!(ids["uid"]["entries"][1]["count"], 65535);
    assert_eq!(plan["plan"]["registration"]["kind"], "skip");
    let home = user.home.display().to_string();
    assert_eq!(
        plan["plan"]["machine"]["state_dir"],
        format!("{home}/.local/share/mm/machines/dev")
    );
    assert_eq!(plan["plan"]["root"]["options"][0], "userxattr");
}

#[test]
fn rootless_limits_without_a_delegated_cgroup_are_refused_with_the_reason() {
    if !is_root() {
        return skip(
            "rootless_limits_without_a_delegated_cgroup",
            "creating users needs root",
        );
    }
    let user = test_user("mm-test", Some(300_000));
    let probe = run(user.mm(Path::new("/"), &["host", "--json"])).1;
    let facts: serde_json::Value = serde_json::from_str(&probe).unwrap();
    if !facts["cgroup"]["delegated"].is_null() {
        return skip(
            "rootless_limits_without_a_delegated_cgroup",
            "this host delegates a cgroup subtree to the user",
        );
    }
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let (out, _, stderr) = run(user.mm(dir.path(), &["plan", "web"]));
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("resource limits need a cgroup of the machine's own"),
        "{stderr}"
    );
    assert!(stderr.contains("web.toml:"), "{stderr}");
    assert!(stderr.contains("[resources]"), "{stderr}");
}

#[test]
fn a_user_without_subordinate_ids_is_told_how_to_get_them() {
    if !is_root() {
        return skip(
            "a_user_without_subordinate_ids",
            "creating users needs root",
        );
    }
    let user = test_user("mm-nosubid", None);
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let (out, _, stderr) = run(user.mm(dir.path(), &["plan", "dev"]));
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("has no subordinate id range in /etc/subuid"),
        "{stderr}"
    );
    assert!(stderr.contains("usermod --add-subuids"), "{stderr}");
}

use std::path::Path;

#[test]
fn a_rootless_machine_boots_maps_root_to_the_user_and_keeps_its_writes() {
    if !is_root() {
        return skip(
            "a_rootless_machine_boots_maps_root_to_the_user_and_keeps_its_writes",
            "creating users needs root",
        );
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run ./scripts/setup (or ./scripts/build-busybox-image) first"
    );
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    copy_examples(dir.path());
    // Its runtime and data (image store, machines) here, not what earlier runs left in
    // the user's home.
    let runtime = dir.path().join("runtime");
    let data = dir.path().join("data");
    for path in [&runtime, &data] {
        std::fs::create_dir(path).unwrap();
        user.give(path);
    }
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", &data);
        command
    };
    let ok = |args: &[&str]| {
        let (out, stdout, stderr) = run(mm(args));
        assert!(out.status.success(), "mm {args:?}: {stdout}{stderr}");
        stdout
    };
    // Whatever happens below, the machine does not outlive the test, nor its state the run.
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "dev", "--timeout", "1"]).output();
        let _ = mm(&["rm", "dev"]).output();
    });
    // Two starts at once: one machine, and the other start says so.
    let mut codes: Vec<Option<i32>> = run_together((0..2).map(|_| mm(&["start", "dev"])))
        .iter()
        .map(|out| out.status.code())
        .collect();
    codes.sort();
    assert_eq!(codes, [Some(0), Some(75)]);

    let inside = ok(&[
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    let lines: Vec<Vec<&str>> = inside
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0"], "{inside}");
    let (uid, start) = (user.uid.to_string(), user.subuid_start().to_string());
    assert_eq!(lines[1], ["0", uid.as_str(), "1"], "{inside}");
    assert_eq!(lines[2], ["1", start.as_str(), "65535"], "{inside}");
    ok(&["exec", "dev", "--", "sh", "-c", "echo kept > /root/note"]);
    let (out, _, _) = run(mm(&["exec", "dev", "--", "sh", "-c", "exit 42"]));
    assert_eq!(out.status.code(), Some(42));
    ok(&["stop", "dev"]);
    ok(&["start", "dev"]);
    assert_eq!(
        ok(&["exec", "dev", "--", "cat", "/root/note"]).trim(),
        "kept"
    );
    ok(&["stop", "dev"]);
    ok(&["rm", "dev"]);
}

/// The rootless unpack worker's failure keeps its step and errno: a layer's lock file in
/// the store that the user cannot write (root's, 0644) stops the worker with EACCES.
#[test]
fn a_worker_that_cannot_write_the_store_says_the_step_and_errno() {
    let test = "a_worker_that_cannot_write_the_store_says_the_step_and_errno";
    if !is_root() {
        return skip(test, "creating users needs root");
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run ./scripts/setup (or ./scripts/build-busybox-image) first"
    );
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let image = dir.path().join("busybox");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo().join("images/busybox"))
        .arg(&image)
        .status()
        .unwrap();
    assert!(copied.success());
    let data = dir.path().join("data");
    user.give(&data.join("mm/images"));
    user.give(&image);
    // The store is the user's, but the lock of each of the image's layers is root's
    // (0644): the worker, which takes it, cannot open it for writing.
    let locks = data.join("mm/images/locks");
    std::fs::create_dir(&locks).unwrap();
    user.give(&locks);
    for diff_id in diff_ids(&image) {
        let hex = diff_id.strip_prefix("sha256:").unwrap();
        let lock = locks.join(format!("{hex}.lock"));
        std::fs::write(&lock, "").unwrap();
        set_mode(&lock, 0o644);
    }
    let source = format!("oci:{}:latest", image.display());
    let mut import = user.mm(dir.path(), &["image", "import", &source]);
    import.env("XDG_DATA_HOME", &data);
    let (out, stdout, stderr) = run(import);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "the unpack worker could not install layers into {}: ",
            data.join("mm/images").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("Permission denied (os error 13)"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(74), "an I/O error: {stderr}");
}

/// The diff_ids an OCI layout's (only) image names in its config.
fn diff_ids(layout: &std::path::Path) -> Vec<String> {
    let json = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
        json(layout.join("blobs/sha256").join(hex))
    };
    let index = json(layout.join("index.json"));
    let manifest = blob(&index["manifests"][0]["digest"]);
    let config = blob(&manifest["config"]["digest"]);
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}
