//! Root's machines for the runtime tests: definitions on the busybox image and mm's state
//! in a temporary tree, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::*;

/// A directory with machine definitions and mm's state, whose machines are stopped when
/// it is dropped.
pub struct Machines {
    pub dir: tempfile::TempDir,
    pub names: Vec<String>,
}

impl Machines {
    pub fn new() -> Self {
        Self {
            dir: shared_tempdir(),
            names: Vec::new(),
        }
    }

    /// Writes machines/NAME.toml: the busybox image, then `body`.
    pub fn define(&mut self, name: &str, body: &str) -> &mut Self {
        self.define_with_image(name, &busybox(), body)
    }

    pub fn define_with_image(&mut self, name: &str, image: &Path, body: &str) -> &mut Self {
        let machines = self.dir.path().join("machines");
        std::fs::create_dir_all(&machines).unwrap();
        let text = format!(
            "[image]\nsource = \"oci:{}:latest\"\n{body}\n",
            image.display()
        );
        std::fs::write(machines.join(format!("{name}.toml")), text).unwrap();
        self.names.push(name.to_owned());
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        mm(self.dir.path(), args)
    }

    pub fn mm(&self, args: &[&str]) -> (Output, String, String) {
        run(self.command(args))
    }

    /// `mm ARGS`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let (out, stdout, stderr) = self.mm(args);
        assert!(
            out.status.success(),
            "mm {args:?}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        stdout
    }

    pub fn status(&self, name: &str) -> serde_json::Value {
        let (_, stdout, _) = self.mm(&["status", name, "--json"]);
        serde_json::from_str(&stdout).unwrap()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.command(&["stop", name, "--timeout", "1"]).output();
        }
    }
}

pub fn busybox() -> PathBuf {
    repo().join("images/busybox")
}

pub fn ready(test: &str) -> bool {
    if !is_root() {
        skip(test, "booting machines as root needs root");
        return false;
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run scripts/build-busybox-image (scripts/setup does)"
    );
    true
}

/// Waits (up to 10 s) until `done` holds.
pub fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
