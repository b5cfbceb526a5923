//! The image store against the fixture builders in tests/fixtures/images: a four-layer
//! image made by umoci (umoci's unpack is the reference), hostile layers that try to reach
//! outside, and corrupt copies of a valid layout.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use support::*;

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/images")
}

/// What makes a tree what it is (see tests/fixtures/images/listing.sh), as text.
fn listing(root: &Path) -> String {
    let output = Command::new(fixtures().join("listing.sh"))
        .arg(root)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A listing without its top directory's line.
fn below_top(listing: &str) -> String {
    listing
        .lines()
        .filter(|l| !l.starts_with(". d "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The listing of a tree `mm image extract` wrote, below its top directory: that one is
/// private (0700) by design, where umoci's rootfs keeps the image's mode (umoci makes its
/// bundle directory private instead).
fn extracted(root: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{} is not private", root.display());
    below_top(&listing(root))
}

/// make-layered.sh's output, built once per run; `None` (with the reason) when not root.
fn layered() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !is_root() {
                return None;
            }
            let dir = shared_tempdir();
            let (out, stdout, stderr) = run({
                let mut c = Command::new(fixtures().join("make-layered.sh"));
                c.arg(dir.path());
                c
            });
            assert!(out.status.success(), "make-layered.sh: {stdout}{stderr}");
            Some(dir)
        })
        .as_ref()
        .map(|d| d.path())
}

fn extract(state: &Path, source: &str, to: &Path) -> (std::process::Output, String) {
    let (out, _, stderr) = run(mm(
        state,
        &["image", "extract", source, to.to_str().unwrap()],
    ));
    (out, stderr)
}

#[test]
fn every_source_kind_of_the_layered_image_extracts_to_umocis_tree() {
    let Some(fx) = layered() else {
        return skip(
            "every_source_kind_of_the_layered_image",
            "make-layered.sh needs root (owners, setuid, capabilities)",
        );
    };
    let expected = below_top(&listing(&fx.join("layered.expected")));
    let mut sources = vec![
        format!("oci:{}/layered:latest", fx.display()),
        format!(
            "oci-archive:{}/layered.oci-archive.tar:latest",
            fx.display()
        ),
        format!("tar:{}/layered.rootfs.tar", fx.display()),
    ];
    if fx.join("layered.docker-archive.tar").exists() {
        sources.push(format!(
            "docker-archive:{}/layered.docker-archive.tar",
            fx.display()
        ));
    }
    let state = shared_tempdir();
    for (i, source) in sources.iter().enumerate() {
        let to = state.path().join(format!("x{i}"));
        let (out, stderr) = extract(state.path(), source, &to);
        assert!(out.status.success(), "{source}: {stderr}");
        assert_eq!(
            extracted(&to),
            expected,
            "{source} differs from umoci unpack"
        );
    }
    let base = state.path().join("base");
    let (out, stderr) = extract(
        state.path(),
        &format!("oci:{}/layered:base", fx.display()),
        &base,
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        extracted(&base),
        below_top(&listing(&fx.join("layered-base.expected"))),
        "the tag, not the first manifest, decides"
    );
}

#[test]
fn stored_layers_hold_overlay_whiteouts_and_opaque_directories() {
    let Some(fx) = layered() else {
        return skip(
            "stored_layers_hold_overlay_whiteouts",
            "make-layered.sh needs root",
        );
    };
    let state = shared_tempdir();
    let source = format!("oci:{}/layered:latest", fx.display());
    let (out, stdout, stderr) = run(mm(state.path(), &["image", "import", &source]));
    assert!(out.status.success(), "{stderr}");
    let listed = run(mm(state.path(), &["image", "list", "--json"])).1;
    assert!(listed.contains("\"layers\": 4"), "{listed}{stdout}");
    let record = std::fs::read_dir(state.path().join("state/images/images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    let layer = |i: usize| {
        let diff_id = record["layers"][i]["diff_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_owned();
        state.path().join("state/images/layers").join(diff_id)
    };
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let whiteout = std::fs::symlink_metadata(layer(1).join("doomed/file")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "`.wh.file` is a 0/0 character device"
    );
    let opaque = Command::new("getfattr")
        .args(["-n", "trusted.overlay.opaque", "--only-values"])
        .arg(layer(2).join("opaque"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&opaque.stdout),
        "y",
        "layer 3 marks opaque/ opaque"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(layer(1).with_extension("json")).unwrap())
            .unwrap();
    assert!(
        info["stats"]["ignored_whiteouts"].as_u64().unwrap() >= 1,
        "whiteouts under swap/dir-to-file are ignored: {info}"
    );
}

#[test]
fn rootless_import_shifts_every_owner_into_the_users_range() {
    let Some(fx) = layered() else {
        return skip(
            "rootless_import_shifts_every_owner",
            "make-layered.sh needs root",
        );
    };
    let user = test_user("mm-test", Some(300_000));
    let start = user.subuid_start();
    let dir = shared_tempdir();
    let state = dir.path().join("state");
    user.give(&state);
    let mut command = user.mm(
        dir.path(),
        &[
            "image",
            "import",
            &format!("oci:{}/layered:latest", fx.display()),
        ],
    );
    command.env("MM_ROOT", &state);
    let (out, stdout, stderr) = run(command);
    assert!(out.status.success(), "{stdout}{stderr}");
    // Layer 1 holds owners/: 1000:1000 and 65534:65534 inside.
    let layers: Vec<PathBuf> = std::fs::read_dir(state.join("images/layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    let owners = layers
        .iter()
        .map(|l| l.join("owners"))
        .find(|p| p.is_dir())
        .expect("a layer with owners/");
    use std::os::unix::fs::MetadataExt;
    let ids: Vec<(u32, u32)> = std::fs::read_dir(&owners)
        .unwrap()
        .map(|e| std::fs::symlink_metadata(e.unwrap().path()).unwrap())
        .map(|m| (m.uid(), m.gid()))
        .collect();
    assert!(
        ids.contains(&(start + 999, start + 999)),
        "1000:1000 inside is start+999 outside: {ids:?}"
    );
    assert!(
        ids.iter().any(|(u, _)| *u == start + 65533),
        "65534 inside is start+65533 outside: {ids:?}"
    );
    assert!(
        ids.iter().all(|(u, g)| *u >= start && *g >= start),
        "nothing is left owned by a host id: {ids:?}"
    );
}

#[test]
fn hostile_layers_change_nothing_outside() {
    hostile_layers(None);
}

#[test]
fn hostile_layers_change_nothing_outside_rootless() {
    if !is_root() {
        return skip(
            "hostile_layers_change_nothing_outside_rootless",
            "creating users needs root",
        );
    }
    hostile_layers(Some(test_user("mm-test", Some(300_000))));
}

/// Imports and extracts every hostile layout, as root or as `user` (who then owns the
/// victim, so that an escape would have had the rights to do damage).
fn hostile_layers(user: Option<TestUser>) {
    let dir = shared_tempdir();
    let out_dir = dir.path().join("hostile");
    let victim = dir.path().join("victim");
    let state = dir.path().join("state");
    let (out, stdout, stderr) = run({
        let mut c = Command::new("python3");
        c.arg(fixtures().join("make-hostile.py"))
            .arg(&out_dir)
            .arg(&victim);
        c
    });
    assert!(out.status.success(), "make-hostile.py: {stdout}{stderr}");
    let extracts = dir.path().join("extracts");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&extracts).unwrap();
    if let Some(user) = &user {
        for path in [&victim, &state, &extracts] {
            user.give(path);
        }
    }
    let mm_as = |args: &[&str]| {
        let mut command = match &user {
            Some(user) => user.mm(dir.path(), args),
            None => mm(dir.path(), args),
        };
        command.env("MM_ROOT", &state);
        run(command)
    };
    let victim_now = || {
        let output = Command::new("python3")
            .arg(fixtures().join("make-hostile.py"))
            .arg("--list-victim")
            .arg(&victim)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let before = victim_now();
    // Test users are made by other tests of this binary, in parallel: all of them exist
    // once this returns, so /etc/passwd changes after this only if mm changed it.
    settle_test_users();
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let mut layouts: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("index.json").is_file())
        .collect();
    layouts.sort();
    assert!(
        layouts.len() > 20,
        "the builder made its cases: {layouts:?}"
    );
    for (i, layout) in layouts.iter().enumerate() {
        let source = format!("oci:{}:latest", layout.display());
        let name = layout.file_name().unwrap().to_string_lossy().into_owned();
        let (out, _, stderr) = mm_as(&["image", "import", &source]);
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(65),
            "{name}: refused (65) or contained (0), not {code:?}: {stderr}"
        );
        if code == Some(65) {
            assert!(
                stderr.contains("layer"),
                "{name}: the refusal names the layer: {stderr}"
            );
        }
        let to = extracts.join(format!("{i}"));
        let (out, _, stderr) = mm_as(&["image", "extract", &source, to.to_str().unwrap()]);
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(65),
            "{name}: extract {code:?}: {stderr}"
        );
        assert_eq!(victim_now(), before, "{name} changed something outside");
        assert!(!Path::new("/etc/evil").exists(), "{name} wrote /etc/evil");
        assert_eq!(
            std::fs::read("/etc/passwd").unwrap(),
            passwd,
            "{name} touched /etc/passwd"
        );
        if name.starts_with("whiteout-under-symlink") && out.status.success() {
            assert!(
                to.join("modes/keep").exists(),
                "{name}: a whiteout under a symlink is not applied through it"
            );
            assert!(
                to.join("opq-target/keep").exists(),
                "{name}: nor an opaque marker"
            );
        }
    }
    let tmp = std::fs::read_dir(state.join("images/tmp")).unwrap().count();
    assert_eq!(tmp, 0, "refused layers leave nothing in tmp/");
}

#[test]
fn corrupt_images_are_refused_naming_the_digests_and_leave_the_store_empty() {
    assert!(
        default_image_built(),
        "images/busybox is missing: run ./scripts/setup first"
    );
    let dir = shared_tempdir();
    let out_dir = dir.path().join("corrupt");
    let (out, stdout, stderr) = run({
        let mut c = Command::new("python3");
        c.arg(fixtures().join("make-corrupt.py"))
            .arg(repo().join("images/busybox"))
            .arg(&out_dir);
        c
    });
    assert!(out.status.success(), "make-corrupt.py: {stdout}{stderr}");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("expected.json")).unwrap())
            .unwrap();
    let variants = expected.as_object().unwrap();
    assert!(variants.len() >= 9);
    for (name, want) in variants {
        let source = want["source"].as_str().unwrap();
        let (out, _, stderr) = run(mm(dir.path(), &["image", "import", source]));
        assert!(!out.status.success(), "{name} was accepted");
        for needle in want["must_mention"].as_array().unwrap() {
            let needle = needle.as_str().unwrap();
            assert!(
                stderr.contains(needle),
                "{name}: the error must mention {needle}: {stderr}"
            );
        }
        let to = dir.path().join(format!("x-{name}"));
        let (out, stderr) = extract(dir.path(), source, &to);
        assert!(!out.status.success(), "{name} was extracted: {stderr}");
        assert!(!to.exists(), "{name}: a failed extract leaves nothing");
    }
    let store = dir.path().join("state/images");
    let layers = std::fs::read_dir(store.join("layers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(layers, 0, "no corrupt layer entered the store");
    let images = std::fs::read_dir(store.join("images"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(images, 0);
    let tmp = std::fs::read_dir(store.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(tmp, 0);
}
