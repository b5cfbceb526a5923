//! The image store against real images and real peers: umoci makes the layouts and is the
//! reference for extraction; imports run as root and as an ordinary user.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

/// Every entry below `dir` with its kind, mode, owners, size and link. `dir` itself is
/// left out: an extracted tree's top directory is private (0700) by design, where a
/// stored layer or umoci's rootfs keeps the image's mode.
fn tree(dir: &Path) -> String {
    find_listing(dir, "%p %y %m %U %G %s %l\n", true)
}

fn busybox() -> String {
    assert!(
        default_image_built(),
        "images/busybox is missing: run ./scripts/setup first"
    );
    format!("oci:{}/images/busybox:latest", repo().display())
}

#[test]
fn import_verifies_lists_and_shares_layers() {
    if !is_root() {
        return skip(
            "import_verifies_lists_and_shares_layers",
            "the root store test runs as root",
        );
    }
    let dir = shared_tempdir();
    let (out, stdout, stderr) = run(mm(dir.path(), &["image", "import", &busybox()]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("sha256:"), "{stdout}");
    assert!(stderr.contains("verified and unpacked"), "{stderr}");

    let (_, _, again) = run(mm(dir.path(), &["image", "import", &busybox()]));
    assert!(again.contains("already in the store"), "{again}");

    let (out, stdout, _) = run(mm(dir.path(), &["image", "list", "--json"]));
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["layers"], 1);
    assert!(listed[0]["size"].as_u64().unwrap() > 1_000_000);

    let layers = dir.path().join("state/images/layers");
    let layer = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    assert!(layer.join("bin/busybox").is_file());
    let tmp = std::fs::read_dir(dir.path().join("state/images/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "nothing is left in tmp/");
}

#[test]
fn extract_gives_the_tree_umoci_unpack_gives() {
    if !is_root() {
        return skip(
            "extract_gives_the_tree_umoci_unpack_gives",
            "owners differ rootless; the root comparison runs as root",
        );
    }
    let dir = shared_tempdir();
    let ours = dir.path().join("ours");
    let (out, _, stderr) = run(mm(
        dir.path(),
        &["image", "extract", &busybox(), ours.to_str().unwrap()],
    ));
    assert!(out.status.success(), "{stderr}");
    let bundle = dir.path().join("bundle");
    let layout = format!("{}/images/busybox:latest", repo().display());
    let status = Command::new("umoci")
        .args(["unpack", "--image", &layout])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(tree(&ours), tree(&bundle.join("rootfs")));
    let mode = std::fs::metadata(&ours).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "an extracted tree is private");

    let (out, _, stderr) = run(mm(
        dir.path(),
        &["image", "extract", &busybox(), ours.to_str().unwrap()],
    ));
    assert_eq!(
        out.status.code(),
        Some(74),
        "an existing directory is refused: {stderr}"
    );
}

#[test]
fn two_imports_at_once_unpack_each_layer_once() {
    if !is_root() {
        return skip(
            "two_imports_at_once_unpack_each_layer_once",
            "the root store test runs as root",
        );
    }
    let dir = shared_tempdir();
    let store = dir.path().join("state/images");
    // mm makes the store (and its lock directory) as it makes it: import, then forget.
    for args in [
        &["image", "import", &busybox()][..],
        &["image", "rm", &busybox()],
        &["image", "gc"],
    ] {
        let (out, _, stderr) = run(mm(dir.path(), args));
        assert!(out.status.success(), "mm {args:?}: {stderr}");
    }
    // Holding every layer's lock makes both imports wait for it, so that the two really
    // overlap: one unpacks once the lock is free, the other waits and then shares it.
    let held: Vec<(std::fs::File, u64)> = busybox_diff_ids()
        .iter()
        .map(|hex| {
            let path = store.join(format!("locks/{hex}.lock"));
            let file = std::fs::File::create(&path).unwrap();
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let inode = std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap());
            (file, inode)
        })
        .collect();
    let inodes: Vec<u64> = held.iter().map(|(_, inode)| *inode).collect();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let mut command = mm(dir.path(), &["image", "import", &busybox()]);
            KillOnDrop(
                command
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let start = std::time::Instant::now();
    while lock_waiters(&inodes) < 2 {
        assert!(
            start.elapsed().as_secs() < 30,
            "the two imports never both waited for the layer lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_dir(store.join("layers")).unwrap().count(),
        0,
        "nothing is unpacked while the lock is held"
    );
    drop(held);
    let outputs: Vec<_> = children
        .into_iter()
        .map(|mut c| {
            let mut stderr = Vec::new();
            std::io::Read::read_to_end(&mut c.0.stderr.take().unwrap(), &mut stderr).unwrap();
            let status = c.0.wait().unwrap();
            std::process::Output {
                status,
                stdout: Vec::new(),
                stderr,
            }
        })
        .collect();
    assert!(outputs.iter().all(|o| o.status.success()));
    let stderr: String = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(
        stderr.matches("verified and unpacked").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("already in the store").count(),
        1,
        "{stderr}"
    );
}

/// The DiffIDs (hex) of images/busybox's layers, from its config.
fn busybox_diff_ids() -> Vec<String> {
    layout_diff_ids(&repo().join("images/busybox"))
}

/// How many processes wait (blocked, `->` in /proc/locks) for a lock on one of `inodes`.
fn lock_waiters(inodes: &[u64]) -> usize {
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|l| l.contains("->"))
        .filter(|l| {
            l.split_whitespace().any(|field| {
                let parts: Vec<&str> = field.split(':').collect();
                parts.len() == 3 && parts[2].parse().is_ok_and(|i: u64| inodes.contains(&i))
            })
        })
        .count()
}

#[test]
fn a_stored_image_shows_its_layers_in_the_plan() {
    if !is_root() {
        return skip(
            "a_stored_image_shows_its_layers_in_the_plan",
            "the root store test runs as root",
        );
    }
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let before = run(mm(dir.path(), &["plan", "web", "--json"])).1;
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["plan"]["image"]["layers"]["state"], "unresolved");

    let source = format!("oci:{}/images/busybox:latest", dir.path().display());
    let (out, _, stderr) = run(mm(dir.path(), &["image", "import", &source]));
    assert!(out.status.success(), "{stderr}");
    let after = run(mm(dir.path(), &["plan", "web", "--json"])).1;
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    let layers = &after["plan"]["image"]["layers"];
    assert_eq!(layers["state"], "stored", "{layers}");
    let layer_dir = layers["layers"][0]["dir"].as_str().unwrap();
    assert!(Path::new(layer_dir).join("bin/busybox").is_file());
    let listed = run(mm(dir.path(), &["image", "list", "--json"])).1;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed[0]["machines"],
        serde_json::json!(["backend", "frontend", "sandbox", "web"]),
        "the machines defined on it (dev is on images/debian)"
    );
}

#[test]
fn an_ordinary_user_imports_with_owners_shifted_into_its_range() {
    if !is_root() {
        return skip(
            "an_ordinary_user_imports_with_owners_shifted_into_its_range",
            "creating users needs root",
        );
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let state = dir.path().join("state");
    user.give(&state);
    let source = format!("oci:{}/images/busybox:latest", dir.path().display());
    let as_user = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("MM_ROOT", &state);
        run(command)
    };
    let (out, stdout, stderr) = as_user(&["image", "import", &source]);
    assert!(out.status.success(), "{stdout}{stderr}");

    let layers = state.join("images/layers");
    let layer = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let owner =
        |p: &Path| std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(p).unwrap());
    assert_eq!(
        owner(&layer.join("bin/busybox")),
        user.uid,
        "root inside is the user outside"
    );
    assert_eq!(owner(&layer), user.uid);

    let (out, stdout, _) = as_user(&["image", "list", "--json"]);
    assert!(out.status.success());
    assert!(stdout.contains("busybox"), "{stdout}");
    let (out, _, stderr) = as_user(&["image", "rm", &source]);
    assert!(out.status.success(), "{stderr}");
    let (out, stdout, stderr) = as_user(&["image", "gc"]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(&layers).unwrap().count(),
        0,
        "gc removed the shifted layer through the worker"
    );
}

#[test]
fn a_registry_pull_is_verified_and_skips_layers_the_store_has() {
    let registry = match LocalRegistry::start() {
        Ok(registry) => registry,
        Err(why) => {
            return skip(
                "a_registry_pull_is_verified_and_skips_layers_the_store_has",
                &why,
            );
        }
    };
    let source = registry.push(&busybox(), "mm/busybox:latest");
    let dir = shared_tempdir();
    let (out, stdout, stderr) = run(mm(
        dir.path(),
        &["image", "pull", &source, "--tls-verify=false"],
    ));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("downloaded and verified"), "{stderr}");
    let manifest = stdout.split_whitespace().next().unwrap().to_owned();

    let (out, _, again) = run(mm(
        dir.path(),
        &["image", "pull", &source, "--tls-verify=false"],
    ));
    assert!(out.status.success());
    assert!(
        !again.contains("download"),
        "a stored layer is not downloaded again: {again}"
    );

    let (out, _, stderr) = run(mm(dir.path(), &["image", "pull", &source]));
    assert_eq!(
        out.status.code(),
        Some(69),
        "HTTPS to a plain-HTTP registry fails: {stderr}"
    );
    assert!(stderr.contains("--tls-verify=false"), "{stderr}");

    let missing = format!("docker://{}/mm/nothing:latest", registry.address);
    let (out, _, stderr) = run(mm(
        dir.path(),
        &["image", "pull", &missing, "--tls-verify=false"],
    ));
    assert_eq!(out.status.code(), Some(66), "{stderr}");

    let wrong = format!("sha256:{}", "0".repeat(64));
    let (out, _, stderr) = run(mm(
        dir.path(),
        &[
            "image",
            "pull",
            &source,
            "--tls-verify=false",
            "--digest",
            &wrong,
        ],
    ));
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(&manifest) && stderr.contains(&wrong),
        "the pin error names both: {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/images/tmp"))
            .unwrap()
            .count(),
        0,
        "no scratch left"
    );
}

/// An OCI layout with one large layer (a copy of /usr/include, ~130 MB, from build-essential),
/// built with umoci, once per run.
fn large_layout() -> std::path::PathBuf {
    static LAYOUT: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    let (_, path) = LAYOUT.get_or_init(|| {
        let dir = shared_tempdir();
        let layout = dir.path().join("large");
        let bundle = dir.path().join("bundle");
        let umoci = |args: &[&str]| {
            let status = Command::new("umoci").args(args).status().unwrap();
            assert!(status.success(), "umoci {args:?}");
        };
        let image = format!("{}:latest", layout.display());
        umoci(&["init", "--layout", layout.to_str().unwrap()]);
        umoci(&["new", "--image", &image]);
        umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
        let status = Command::new("cp")
            .args(["-a", "/usr/include"])
            .arg(bundle.join("rootfs/include"))
            .status()
            .unwrap();
        assert!(status.success());
        umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
        (dir, layout)
    });
    path.clone()
}

#[test]
fn an_import_killed_midway_leaves_nothing_trusted_and_the_next_one_finishes() {
    if !is_root() {
        return skip(
            "an_import_killed_midway",
            "the root store test runs as root",
        );
    }
    let source = format!("oci:{}:latest", large_layout().display());
    let dir = shared_tempdir();
    let tmp = dir.path().join("state/images/tmp");
    let layers = dir.path().join("state/images/layers");
    let mut child = mm(dir.path(), &["image", "import", &source])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until unpacking has begun (a layer directory in tmp/ holds something), then kill.
    let begun = || {
        std::fs::read_dir(&tmp)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .is_some_and(|e| {
                std::fs::read_dir(e.path()).is_ok_and(|mut inner| inner.next().is_some())
            })
    };
    let start = std::time::Instant::now();
    while !begun() {
        assert!(
            start.elapsed().as_secs() < 30,
            "the import never started unpacking"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        1,
        "the killed import left its work in tmp/"
    );
    let trusted = std::fs::read_dir(&layers).map(|d| d.count()).unwrap_or(0);
    assert_eq!(trusted, 0, "nothing half-made is in layers/");
    let (out, _, stderr) = run(mm(dir.path(), &["image", "list", "--json"]));
    assert!(out.status.success());
    assert_eq!(
        run(mm(dir.path(), &["image", "list", "--json"])).1.trim(),
        "[]",
        "{stderr}"
    );

    let (out, _, stderr) = run(mm(dir.path(), &["image", "import", &source]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the next import removed the leftovers"
    );
    let extracted = dir.path().join("extracted");
    let (out, _, stderr) = run(mm(
        dir.path(),
        &["image", "extract", &source, extracted.to_str().unwrap()],
    ));
    assert!(out.status.success(), "{stderr}");
    let layer = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    assert_eq!(
        tree(&layer),
        tree(&extracted),
        "the finished layer is whole"
    );
}

#[test]
fn zstd_layers_and_multi_platform_indexes_import() {
    if !is_root() {
        return skip(
            "zstd_layers_and_multi_platform_indexes_import",
            "the root store test runs as root",
        );
    }
    let dir = shared_tempdir();
    // skopeo recompresses the default image's layer with zstd.
    let zstd = dir.path().join("zstd");
    let status = Command::new("skopeo")
        .args(["copy", "-q", "--dest-compress-format", "zstd", &busybox()])
        .arg(format!("oci:{}:latest", zstd.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(zstd.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blob = |digest: &str| {
        zstd.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let extracted = dir.path().join("x-zstd");
    let (out, _, stderr) = run(mm(
        dir.path(),
        &[
            "image",
            "extract",
            &format!("oci:{}:latest", zstd.display()),
            extracted.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{stderr}");
    assert!(extracted.join("bin/busybox").is_file());

    // A multi-platform index in front of that manifest: linux/arm64 (absent blob) and this
    // host's platform; mm must pick the host's and never touch the other.
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let size = std::fs::metadata(blob(&manifest_digest)).unwrap().len();
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "e".repeat(64)), "size": 1234,
             "platform": {"architecture": other_arch, "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": size,
             "platform": {"architecture": host_arch, "os": "linux"}},
        ],
    });
    let nested = serde_json::to_vec(&nested).unwrap();
    let nested_digest = format!("sha256:{}", sha256_hex(&nested));
    std::fs::write(blob(&nested_digest), &nested).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nested_digest, "size": nested.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "multi"}}],
    });
    std::fs::write(zstd.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let (out, stdout, stderr) = run(mm(
        dir.path(),
        &["image", "import", &format!("oci:{}:multi", zstd.display())],
    ));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with(&manifest_digest),
        "the host's manifest was chosen: {stdout}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    let output = {
        let mut child = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        child.wait_with_output().unwrap()
    };
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
