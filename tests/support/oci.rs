//! OCI bundles for the `mm oci` tests: images/busybox unpacked by umoci, config.json
//! edited in place, and `mm oci` run with the container's streams on files.

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use super::{busybox, run};

/// A bundle of images/busybox at `bundle` (`umoci unpack`: rootfs/ and config.json), its
/// process `args`, `terminal` off.
pub fn busybox_bundle(bundle: &Path, args: serde_json::Value) {
    let image = format!("{}:latest", busybox().display());
    let (out, _, stderr) = run({
        let mut c = Command::new("umoci");
        c.args(["unpack", "--image", &image]).arg(bundle);
        c
    });
    assert!(out.status.success(), "umoci unpack: {stderr}");
    edit_config(bundle, |config| {
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args;
    });
}

/// Reads the bundle's config.json, lets `edit` change it, and writes it back.
pub fn edit_config(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Runs `command` (an `mm oci …`) with its standard output appended to `out` and its
/// standard error on `out.err` (files: they are the container's streams, which would keep
/// a pipe open): how it ended, and what it said on its standard error.
pub fn oci_on_files(mut command: Command, out: &Path) -> (ExitStatus, String) {
    let stdout = File::options().create(true).append(true).open(out).unwrap();
    let err_path = out.with_extension("err");
    let stderr = File::create(&err_path).unwrap();
    let status = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap();
    (
        status,
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}
