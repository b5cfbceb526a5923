//! `mm image check`: a layer of the store changed after it was unpacked (a byte of a file,
//! a file removed) is reported by its diff_id, removed with `--repair`, and unpacked again
//! by the next import; a clean store reports OK. As root and as an ordinary user.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// The one layer directory of the busybox image in `layers` (a store's `layers/`, or a
/// layout's directory).
fn layer_dir(layers: &Path) -> (String, PathBuf) {
    let dirs: Vec<PathBuf> = std::fs::read_dir(layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let hex = dirs[0].file_name().unwrap().to_string_lossy().into_owned();
    (format!("sha256:{hex}"), dirs[0].clone())
}

/// Runs the whole story with `mm` as `as_user` makes it (root, or a test user).
fn story(test: &str, store: &Path, mm: &dyn Fn(&[&str]) -> Command) {
    let image = format!("oci:{}:latest", busybox().display());
    let (out, _, stderr) = run(mm(&["image", "import", &image]));
    assert!(out.status.success(), "{stderr}");

    let (out, stdout, stderr) = run(mm(&["image", "check"]));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("OK: 1 layers and 2 blobs checked, 0 damaged"),
        "{stdout}"
    );

    let (diff_id, dir) = layer_dir(&store.join("layers"));
    // One byte of a file changed, another file removed (as root, whoever owns them).
    let passwd = dir.join("etc/passwd");
    let mut bytes = std::fs::read(&passwd).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&passwd, bytes).unwrap();
    std::fs::remove_file(dir.join("srv/index.html")).unwrap();

    let (out, stdout, stderr) = run(mm(&["image", "check"]));
    assert_eq!(out.status.code(), Some(65), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("damaged layer {diff_id} at {}", dir.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("  etc/passwd: contents changed"),
        "{stdout}"
    );
    assert!(stdout.contains("  srv/index.html: missing"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (out, stdout, stderr) = run(mm(&["image", "check", "--repair", "--json"]));
    assert_eq!(out.status.code(), Some(65), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let damaged = report["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{stdout}");
    assert_eq!(damaged[0]["what"], "layer");
    assert_eq!(damaged[0]["digest"], diff_id.as_str());
    assert_eq!(damaged[0]["removed"], true);
    assert_eq!(damaged[0]["differences"].as_array().unwrap().len(), 2);
    assert!(!dir.exists(), "--repair left {}", dir.display());

    // Until the image is imported again, its layer is missing, and check says so.
    let (out, stdout, _) = run(mm(&["image", "check"]));
    assert_eq!(out.status.code(), Some(65), "{stdout}");
    assert!(
        stdout.contains(&format!("damaged missing layer {diff_id}")),
        "{stdout}"
    );

    let (out, _, stderr) = run(mm(&["image", "import", &image]));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("verified and unpacked"), "{stderr}");
    let (out, stdout, stderr) = run(mm(&["image", "check"]));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(std::fs::read(&passwd).unwrap().starts_with(b"root:"));
    eprintln!(
        "{test}: 1 layer changed (1 byte, 1 file removed): reported, repaired, re-imported, OK"
    );
}

#[test]
fn a_damaged_layer_is_reported_repaired_and_imported_again_as_root() {
    if !ready("a_damaged_layer_is_reported_repaired_and_imported_again_as_root") {
        return;
    }
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    story("root", &state.join("images"), &|args| mm(dir.path(), args));
}

#[test]
fn a_damaged_layer_is_reported_repaired_and_imported_again_rootless() {
    if !ready("a_damaged_layer_is_reported_repaired_and_imported_again_rootless") {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    user.give(&state);
    story("rootless", &state.join("images"), &|args| {
        let mut command = user.mm(dir.path(), args);
        command.env("MM_ROOT", &state);
        command
    });
}

/// A rootless keep-id machine's image is unpacked in its own layout
/// (`layouts/keep-id-UID-GID/`), whose owners only that layout's worker map reads back
/// as recorded: its layer verifies, a change in it is reported there, and `--repair`
/// removes it so that the next start unpacks it again.
#[test]
fn a_damaged_keep_id_layer_is_reported_and_unpacked_again_by_the_next_start() {
    if !ready("a_damaged_keep_id_layer_is_reported_and_unpacked_again_by_the_next_start") {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("kid.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n[users]\nkeep_id = true\n",
            busybox().display()
        ),
    )
    .unwrap();
    set_mode(&machines, 0o755);
    let state = dir.path().join("state");
    user.give(&state);
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("MM_ROOT", &state);
        let (out, stdout, stderr) = run(command);
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code(), stdout, stderr)
    };
    let ok = |args: &[&str]| {
        let (code, stdout, stderr) = mm(args);
        assert_eq!(code, Some(0), "mm {args:?}:\n{stdout}{stderr}");
        stdout
    };
    ok(&["start", "kid"]);
    ok(&["stop", "kid"]);
    let layouts = state.join("images/layouts");
    let layout = std::fs::read_dir(&layouts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        layout.file_name().unwrap().to_string_lossy(),
        format!("keep-id-{}-100", user.uid)
    );
    let out = ok(&["image", "check"]);
    assert!(out.contains("OK: 1 layers"), "{out}");

    let (diff_id, layer) = layer_dir(&layout);
    let passwd = layer.join("etc/passwd");
    let mut bytes = std::fs::read(&passwd).unwrap();
    bytes.extend_from_slice(b"intruder:x:0:0::/:/bin/sh\n");
    std::fs::write(&passwd, bytes).unwrap();
    let (code, stdout, _) = mm(&["image", "check", "--repair"]);
    assert_eq!(code, Some(65), "{stdout}");
    assert!(
        stdout.contains(&format!("damaged layer {diff_id} at {}", layer.display()))
            && stdout.contains("etc/passwd: contents changed"),
        "{stdout}"
    );
    assert!(!layer.exists());
    ok(&["start", "kid"]);
    ok(&["stop", "kid"]);
    let out = ok(&["image", "check"]);
    assert!(out.contains("OK: 1 layers"), "{out}");
    assert!(
        !std::fs::read_to_string(&passwd)
            .unwrap()
            .contains("intruder")
    );
    eprintln!("keep-id layout: verified, a change reported, repaired, unpacked again by mm start");
}

/// `--repair` does not pull a layer from under a running machine's overlay: it reports it,
/// says why it stays, and removes it once the machine is stopped.
#[test]
fn repair_leaves_a_running_machines_layer_until_it_stops() {
    if !ready("repair_leaves_a_running_machines_layer_until_it_stops") {
        return;
    }
    let mut machines = Machines::new();
    machines.define("ic-web", "[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n");
    machines.ok(&["start", "ic-web"]);
    let (diff_id, dir) = layer_dir(&machines.state_dir().join("images/layers"));
    std::fs::remove_file(dir.join("srv/index.html")).unwrap();

    let (out, stdout, _) = machines.mm(&["image", "check", "--repair"]);
    assert_eq!(out.status.code(), Some(65), "{stdout}");
    assert!(
        stdout.contains(&format!("damaged layer {diff_id}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("not removed: a running machine is made of it"),
        "{stdout}"
    );
    assert!(dir.exists(), "--repair removed a running machine's layer");
    assert_eq!(machines.status("ic-web")["state"], "running");

    machines.ok(&["stop", "ic-web"]);
    let (out, stdout, _) = machines.mm(&["image", "check", "--repair", "--json"]);
    assert_eq!(out.status.code(), Some(65), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["damaged"][0]["removed"], true, "{stdout}");
    assert!(!dir.exists());
    // The next start imports it again.
    machines.ok(&["start", "ic-web"]);
    assert!(dir.join("srv/index.html").exists());
    machines.ok(&["stop", "ic-web"]);
    let out = machines.ok(&["image", "check"]);
    assert!(out.contains("OK: 1 layers"), "{out}");
    eprintln!(
        "a running machine's damaged layer: kept while it ran, removed after, unpacked again by start"
    );
}
