//! Test harness: runs the built `mm` with its state in a temporary tree, as root or as a
//! test user, and brings up the real system bus and systemd-machined when a test needs them.
#![allow(dead_code)]

mod host;
mod machines;
mod oci;
#[allow(unused_imports)]
pub use host::*;
#[allow(unused_imports)]
pub use machines::*;
#[allow(unused_imports)]
pub use oci::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const MM: &str = env!("CARGO_BIN_EXE_mm");

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints why a test does not run here; tests call it and return.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

/// A temporary directory every user can read, for definitions and MM_ROOT.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mm-test-")
        .tempdir()
        .unwrap();
    set_mode(dir.path(), 0o755);
    dir
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `mm ARGS` with MM_PATH and MM_ROOT inside `dir`, so the host's state is never touched.
pub fn mm(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(MM);
    command
        .args(args)
        .env("MM_PATH", dir.join("machines"))
        .env("MM_ROOT", dir.join("state"));
    command
}

/// `mm ARGS` with nothing else set: for commands that touch no state.
pub fn mm_bare(args: &[&str]) -> Command {
    let mut command = Command::new(MM);
    command.args(args);
    command
}

/// Runs a command and returns its output, with stdout and stderr as text.
pub fn run(mut command: Command) -> (Output, String, String) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("the command runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// Starts every command at once (standard input empty, output captured), then waits for
/// them all: their outputs, in order.
pub fn run_together(commands: impl IntoIterator<Item = Command>) -> Vec<Output> {
    let children: Vec<_> = commands
        .into_iter()
        .map(|mut command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the command starts")
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().expect("the command ends"))
        .collect()
}

/// A child process killed (and reaped) when dropped, so that a failing test leaves none.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs its closure when dropped: clean-up that happens however a test ends.
pub struct OnDrop<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A local user for rootless tests (root only), as the table [`TEST_USERS`] describes it.
pub struct TestUser {
    pub name: &'static str,
    pub uid: u32,
    pub home: PathBuf,
}

/// Every user the tests create, with its subordinate id range: `Some(start)` gives it one
/// (useradd's own, or 65536 ids from `start`); `None` takes away any it has. Names start
/// with `mm-` so that `scripts/clean-test-state` finds them. A new test user goes here.
pub const TEST_USERS: &[(&str, Option<u32>)] = &[
    ("mm-test", Some(300_000)),
    ("mm-nosubid", None),
    ("mm-unit", Some(400_000)),
    ("mm-podman", Some(500_000)),
];

/// Creates every user of [`TEST_USERS`], once per test binary, before any test uses one.
///
/// Creating a user rewrites /etc/passwd, /etc/group, /etc/shadow, /etc/subuid and
/// /etc/subgid. Tests in one binary run in parallel, so a test that compares those files
/// before and after (to prove that mm wrote nothing there) would see a user made by another
/// test meanwhile, on the first run on a machine only. Making them all here, in one
/// `OnceLock` that every caller waits for, means that after this returns nothing in the
/// test binaries writes those files again: such a test calls this before it takes its
/// snapshot, and the comparison then sees only what mm did. (Comparing only the lines a
/// hostile layer could touch would still race with useradd rewriting the whole file.)
/// As an ordinary user it does nothing: no test can create users then.
pub fn settle_test_users() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if is_root() {
            for (name, subids) in TEST_USERS {
                create_test_user(name, *subids);
            }
        }
    });
}

/// One of [`TEST_USERS`], with the subordinate ids the table gives it (`subids` says which,
/// and must agree), made (with all the others) on first use. Root only.
pub fn test_user(name: &'static str, subids: Option<u32>) -> TestUser {
    assert!(is_root(), "only root creates test users");
    assert!(
        TEST_USERS.contains(&(name, subids)),
        "({name:?}, {subids:?}) is not in support::TEST_USERS: add it there"
    );
    settle_test_users();
    let user = nix::unistd::User::from_name(name).unwrap().unwrap();
    TestUser {
        name,
        uid: user.uid.as_raw(),
        home: user.dir,
    }
}

fn create_test_user(name: &str, subids: Option<u32>) {
    if nix::unistd::User::from_name(name).unwrap().is_none() {
        let status = Command::new("useradd")
            .args([
                "--create-home",
                "--shell",
                "/bin/sh",
                "--no-user-group",
                "--gid",
                "users",
                name,
            ])
            .status()
            .unwrap();
        // Another test binary may have created it meanwhile (exit 9: already exists).
        assert!(
            status.success() || status.code() == Some(9),
            "useradd {name}: {status}"
        );
    }
    let subid_text = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let has_range = subid_text
        .lines()
        .any(|l| l.starts_with(&format!("{name}:")));
    match subids {
        Some(start) if !has_range => {
            let range = format!("{start}-{}", start + 65535);
            let status = Command::new("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, name])
                .status()
                .unwrap();
            assert!(status.success(), "usermod {name}");
        }
        None if has_range => {
            let status = Command::new("usermod")
                .args([
                    "--del-subuids",
                    "0-4294967294",
                    "--del-subgids",
                    "0-4294967294",
                    name,
                ])
                .status()
                .unwrap();
            assert!(status.success(), "usermod --del-subuids {name}");
        }
        _ => {}
    }
}

impl TestUser {
    /// Makes `path` (if missing) and everything in it this user's, as `chown -R`.
    pub fn give(&self, path: &Path) {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("chown")
            .args(["-R", self.name])
            .arg(path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "chown -R {} {}",
            self.name,
            path.display()
        );
    }

    /// Where this user's first range in /etc/subuid starts.
    pub fn subuid_start(&self) -> u32 {
        let text = std::fs::read_to_string("/etc/subuid").unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}:", self.name)))
            .expect("the user has a range");
        line.split(':').nth(1).unwrap().parse().unwrap()
    }

    /// `mm ARGS` as this user, with a clean login-like environment and mm's state in `dir`.
    pub fn mm(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                self.name,
                "--regid",
                "users",
                "--init-groups",
                "--",
            ])
            .arg(MM)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("MM_PATH", dir.join("machines"));
        command
    }
}

/// A copy of the built binary that any user may run, wherever the checkout is (a clone
/// under /root is not reachable by the test users).
pub fn shared_binary() -> &'static Path {
    static COPY: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = COPY.get_or_init(|| {
        let dir = shared_tempdir();
        let path = dir.path().join("mm");
        std::fs::copy(MM, &path).unwrap();
        set_mode(&path, 0o755);
        (dir, path)
    });
    path
}

/// Makes sure a system bus and systemd-machined are running, starting the real daemons
/// (`dbus-daemon --system`, /lib/systemd/systemd-machined) when they are not. Root only.
pub fn system_bus_with_machined() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY.get_or_init(start_bus_and_machined).clone()
}

const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
const MACHINED: &str = "/lib/systemd/systemd-machined";

fn start_bus_and_machined() -> Result<(), String> {
    if !is_root() {
        return Err("starting the system bus and machined needs root".into());
    }
    for tool in ["/usr/bin/dbus-daemon", MACHINED] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} is not installed (packages dbus and systemd-container)"
            ));
        }
    }
    if !bus_answers() {
        std::fs::create_dir_all("/run/dbus").map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(SYSTEM_BUS);
        let _ = std::fs::remove_file("/run/dbus/pid");
        let status = Command::new("dbus-daemon")
            .args(["--system", "--fork"])
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("dbus-daemon --system failed: {status}"));
        }
        wait_for("the system bus", bus_answers)?;
    }
    if !machined_answers() {
        Command::new(MACHINED)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{MACHINED}: {e}"))?;
        wait_for("systemd-machined", machined_answers)?;
    }
    Ok(())
}

fn bus_answers() -> bool {
    busctl(&["status"]).is_some()
}

fn machined_answers() -> bool {
    busctl(&["status", "org.freedesktop.machine1"]).is_some()
}

fn busctl(args: &[&str]) -> Option<String> {
    let output = Command::new("busctl")
        .arg("--system")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn wait_for(what: &str, ready: fn() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not come up within 10 s"))
}

/// Copies the example definitions into `dir/machines` and the default image into
/// `dir/images`, where every user can read them, keeping their relative paths.
pub fn copy_examples(dir: &Path) {
    let machines = dir.join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    set_mode(&machines, 0o755);
    for entry in std::fs::read_dir(repo().join("machines")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, machines.join(path.file_name().unwrap())).unwrap();
    }
    if default_image_built() {
        // The `dev` example's image: `mm validate` of every example needs it.
        if let Err(why) = debian_image() {
            panic!("{why}");
        }
        let status = Command::new("cp")
            .args(["-a", "--no-preserve=ownership"])
            .arg(repo().join("images"))
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "copying images/");
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.join("images"))
            .status()
            .unwrap();
    }
}

/// The example definitions in the repository's machines/, by name, sorted.
pub fn example_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("machines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether the example `name` asks for resource limits (a `[resources]` table).
pub fn example_has_limits(name: &str) -> bool {
    let text = std::fs::read_to_string(repo().join(format!("machines/{name}.toml"))).unwrap();
    text.lines().any(|l| l.trim() == "[resources]")
}

/// Why a definition with `[resources]` is refused for the user running the tests, or
/// `None` when it is not: root may always limit a machine; an ordinary user only with a
/// delegated cgroup v2 subtree (as `mm host --json` found it). `mm plan web` and `mm
/// validate` of the examples then succeed or fail together (exit 69).
pub fn limits_refused_here() -> Option<String> {
    if is_root() {
        return None;
    }
    let (out, stdout, stderr) = run(mm_bare(&["host", "--json"]));
    assert!(out.status.success(), "mm host --json: {stderr}");
    let facts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    facts["cgroup"]["delegated"]
        .is_null()
        .then(|| "no cgroup subtree is delegated to this user".to_owned())
}

/// The default image must exist for validation of the examples: `scripts/setup` builds it.
pub fn default_image_built() -> bool {
    repo().join("images/busybox/index.json").exists()
}

/// The Debian 12 image of the `dev` example, `images/debian` (tag `12`), built by
/// `scripts/build-debian-image` (mmdebstrap, from Debian's mirror, about a minute) when it
/// is missing, once per test binary, as `scripts/test` does before the tests.
/// `Err` says why it cannot be had: mmdebstrap is not installed, or the build failed.
pub fn debian_image() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let layout = repo().join("images/debian");
            if layout.join("index.json").exists() {
                return Ok(layout);
            }
            if !debian_image_buildable() {
                return Err(format!(
                    "{} is missing and mmdebstrap is not installed (Debian package mmdebstrap; \
                     ./scripts/setup installs it and builds the image)",
                    layout.display()
                ));
            }
            eprintln!("building {} (scripts/build-debian-image)", layout.display());
            let status = Command::new(repo().join("scripts/build-debian-image"))
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("scripts/build-debian-image: {e}"))?;
            if !status.success() {
                return Err(format!("scripts/build-debian-image failed: {status}"));
            }
            Ok(layout)
        })
        .clone()
}

/// Whether `scripts/build-debian-image` can run here: mmdebstrap is installed.
pub fn debian_image_buildable() -> bool {
    Path::new("/usr/bin/mmdebstrap").exists()
}

/// A real registry (Debian's `docker-registry`) on a loopback port, stopped when dropped.
pub struct LocalRegistry {
    child: std::process::Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts one, or says why it cannot (the package is missing, or it never came up).
    pub fn start() -> Result<Self, String> {
        Self::start_with(None)
    }

    /// One that asks for a login (`htpasswd -B` from apache2-utils: `user`, `password`).
    pub fn start_with_login(user: &str, password: &str) -> Result<Self, String> {
        if !Path::new("/usr/bin/htpasswd").exists() {
            return Err("htpasswd is not installed (Debian package apache2-utils)".into());
        }
        Self::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Result<Self, String> {
        if !Path::new("/usr/bin/docker-registry").exists() {
            return Err("docker-registry is not installed (Debian package docker-registry)".into());
        }
        // The port is free when chosen, but another process (another test's) may take it
        // before the registry binds it: the registry then exits, and it starts again on
        // another port.
        let mut why = String::new();
        for _ in 0..5 {
            match Self::start_on_a_free_port(login)? {
                Ok(registry) => return Ok(registry),
                Err(exited) => why = exited,
            }
        }
        Err(format!("docker-registry did not start, 5 times: {why}"))
    }

    /// The registry, listening; or (inner `Err`) how it exited before it listened.
    fn start_on_a_free_port(login: Option<(&str, &str)>) -> Result<Result<Self, String>, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let auth = match login {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "htpasswd: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).map_err(|e| e.to_string())?;
                format!(
                    "auth:\n  htpasswd:\n    realm: mm-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        // A free port: bind port 0, note it, release it for the registry.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut registry = Self {
            child,
            address,
            _dir: dir,
        };
        let start = Instant::now();
        while !registry.answers() {
            if let Some(status) = registry.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(Err(format!("it exited ({status}) on {}", registry.address)));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("docker-registry did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Ok(registry))
    }

    /// Whether the registry answers on its address: its API's header, not merely something
    /// listening there.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(&self.address) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = String::new();
        stream
            .write_all(b"GET /v2/ HTTP/1.0\r\n\r\n")
            .and_then(|()| stream.read_to_string(&mut reply))
            .is_ok()
            && reply
                .to_ascii_lowercase()
                .contains("docker-distribution-api-version")
    }

    /// Copies an OCI layout image into the registry with skopeo.
    pub fn push(&self, from: &str, to_repo: &str) -> String {
        self.push_as(from, to_repo, None)
    }

    /// Copies an image into the registry with skopeo, logged in as `user:password` if given.
    pub fn push_as(&self, from: &str, to_repo: &str, creds: Option<&str>) -> String {
        let target = format!("docker://{}/{to_repo}", self.address);
        let mut command = Command::new("skopeo");
        command.args(["copy", "-q", "--dest-tls-verify=false"]);
        if let Some(creds) = creds {
            command.args(["--dest-creds", creds]);
        }
        let status = command.args([from, &target]).status().expect("skopeo runs");
        assert!(status.success(), "skopeo copy {from} {target}");
        target
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hex diff_ids of the first image of an OCI layout (index → manifest → config).
pub fn layout_diff_ids(layout: &Path) -> Vec<String> {
    let json = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let config = json(manifest["config"]["digest"].as_str().unwrap());
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d.as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// `find . -printf FORMAT` in `dir`, one line per entry, sorted; `dir` itself (`.`) is
/// left out when `without_top`.
pub fn find_listing(dir: &Path, format: &str, without_top: bool) -> String {
    let output = Command::new("find")
        .arg(".")
        .args(["-printf", format])
        .current_dir(dir)
        .output()
        .unwrap();
    let mut lines: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !(without_top && l.starts_with(". ")))
        .collect();
    lines.sort();
    lines.join("\n")
}
