//! containerd drives mm as its OCI runtime: a containerd of the test's own (its root,
//! state and socket in a temporary directory, no CRI plugin) imports images/busybox, and
//! `ctr run --runc-binary mm-runc` runs a container through containerd's runc shim
//! (`containerd-shim-runc-v2`), which calls mm-runc as it calls runc: `--root`, `--log`,
//! `--log-format json`, `create --bundle --pid-file`, `start`, `state`, `kill`, `delete`.
//! Checked: the container's output and exit status reach ctr; a pod (a member container
//! joining a sandbox container's network, IPC and UTS namespaces by path, as the CRI
//! plugin makes pods); a detached container runs, is killed and deleted, and nothing is
//! left (mm's state, cgroups, mounts).
//! Needs root (containerd's snapshots and cgroups); skips with the reason otherwise.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A containerd of this test's own.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: std::process::Child,
    /// Its namespace: the shim keeps runc state in /run/containerd/runc/NAMESPACE.
    namespace: String,
}

impl Containerd {
    fn start() -> Self {
        let dir = shared_tempdir();
        let d = dir.path();
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = d.join("containerd.sock").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd starts (scripts/setup installs it)");
        let this = Self {
            namespace: format!("mmtest{}", std::process::id()),
            dir,
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !this.socket().exists() || !this.ctr(&["version"]).0 {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 30 s: {}",
                std::fs::read_to_string(this.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        this
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// `ctr ARGS` in this containerd's namespace: whether it succeeded, and what it said.
    fn ctr(&self, args: &[&str]) -> (bool, Option<i32>, String) {
        let (out, stdout, stderr) = run({
            let mut c = Command::new("ctr");
            c.arg("--address")
                .arg(self.socket())
                .args(["--namespace", &self.namespace])
                .args(args)
                .stdin(Stdio::null());
            c
        });
        (
            out.status.success(),
            out.status.code(),
            format!("{stdout}{stderr}"),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, _, said) = self.ctr(args);
        assert!(ok, "ctr {args:?}: {said}");
        said
    }

    /// `ctr task ls`'s columns for the task `id`: its pid and status.
    fn task(&self, id: &str) -> Option<(String, String)> {
        let list = self.ok(&["task", "ls"]);
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))?;
        let mut columns = line.split_whitespace().skip(1);
        Some((columns.next()?.to_owned(), columns.next()?.to_owned()))
    }

    fn task_status(&self, id: &str) -> Option<String> {
        self.task(id).map(|(_, status)| status)
    }

    fn task_pid(&self, id: &str) -> Option<u32> {
        self.task(id).and_then(|(pid, _)| pid.parse().ok())
    }

    /// Waits (up to 30 s) until the task `id` is stopped.
    fn stopped(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.task_status(id).as_deref() != Some("STOPPED") {
            assert!(
                Instant::now() < deadline,
                "the killed task {id} did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // The namespace's parent cgroups, which the runtime makes and leaves (as runc does).
        for dir in cgroup_dirs(&self.namespace) {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
    }
}

#[test]
fn containerd_runs_containers_with_mm_as_its_runc() {
    let test = "containerd_runs_containers_with_mm_as_its_runc";
    if !ready(test) {
        return;
    }
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success(),
            "{tool} is missing: scripts/setup installs containerd"
        );
    }
    let containerd = Containerd::start();
    let d = containerd.dir.path();
    let runc = d.join("mm-runc");
    std::os::unix::fs::symlink(MM, &runc).unwrap();
    let runc = runc.to_str().unwrap();
    // images/busybox as a docker archive with a name, which `ctr image import` takes.
    let archive = d.join("busybox.tar");
    let (out, _, stderr) = run({
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q"])
            .arg(format!("oci:{}:latest", busybox().display()))
            .arg(format!(
                "docker-archive:{}:mm.test/busybox:latest",
                archive.display()
            ));
        c
    });
    assert!(out.status.success(), "skopeo copy: {stderr}");
    containerd.ok(&["image", "import", archive.to_str().unwrap()]);
    let image = "mm.test/busybox:latest";

    // In the foreground: its output and exit status reach ctr.
    let (_, code, said) = containerd.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        runc,
        image,
        "fg",
        "sh",
        "-c",
        "echo hello from $(hostname) as $(id -u); grep pids /proc/self/cgroup; exit 4",
    ]);
    println!("ctr run: exit {code:?}, said:\n{said}");
    assert_eq!(code, Some(4), "{said}");
    assert!(said.contains("hello from fg as 0"), "{said}");
    let cgroup_path = format!("{}/fg", containerd.namespace);
    assert!(said.contains(&format!(":/{cgroup_path}")), "{said}");

    // A pod: a sandbox container, and a member that joins its network, IPC and UTS
    // namespaces by path (`ctr run --with-ns`, as the CRI plugin has its pods' containers).
    containerd.ok(&[
        "run",
        "-d",
        "--runc-binary",
        runc,
        image,
        "sandbox",
        "sleep",
        "300",
    ]);
    let sandbox = containerd
        .task_pid("sandbox")
        .expect("ctr task ls shows the sandbox's pid");
    let member = containerd.ok(&[
        "run",
        "--rm",
        "--runc-binary",
        runc,
        "--with-ns",
        &format!("network:/proc/{sandbox}/ns/net"),
        "--with-ns",
        &format!("ipc:/proc/{sandbox}/ns/ipc"),
        "--with-ns",
        &format!("uts:/proc/{sandbox}/ns/uts"),
        image,
        "member",
        "sh",
        "-c",
        "echo on $(hostname) net $(stat -L -c %i /proc/self/ns/net) ipc $(stat -L -c %i /proc/self/ns/ipc)",
    ]);
    println!("the pod's member said: {member}");
    let inode = |ns: &str| {
        std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(format!("/proc/{sandbox}/ns/{ns}")).unwrap(),
        )
    };
    assert!(
        member.contains(&format!(
            "on sandbox net {} ipc {}",
            inode("net"),
            inode("ipc")
        )),
        "{member}"
    );
    containerd.ok(&["task", "kill", "-s", "KILL", "sandbox"]);
    containerd.stopped("sandbox");
    containerd.ok(&["task", "rm", "sandbox"]);
    containerd.ok(&["container", "rm", "sandbox"]);

    // Detached: it runs, is killed, and deleted with nothing left.
    containerd.ok(&[
        "run",
        "-d",
        "--runc-binary",
        runc,
        image,
        "bg",
        "sleep",
        "300",
    ]);
    assert_eq!(containerd.task_status("bg").as_deref(), Some("RUNNING"));
    let state_dir = Path::new("/run/containerd/runc")
        .join(&containerd.namespace)
        .join("bg");
    assert!(
        state_dir.join("oci.json").exists(),
        "mm's state under the shim's --root: {}",
        state_dir.display()
    );
    containerd.ok(&["task", "kill", "-s", "KILL", "bg"]);
    containerd.stopped("bg");
    containerd.ok(&["task", "rm", "bg"]);
    containerd.ok(&["container", "rm", "bg"]);
    assert!(!state_dir.exists(), "{} is left", state_dir.display());
    let bg_cgroup = format!("{}/bg", containerd.namespace);
    let cgroups: Vec<_> = cgroup_dirs(&bg_cgroup)
        .into_iter()
        .chain(cgroup_dirs(&cgroup_path))
        .filter(|d| d.exists())
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let mounts = mounts_anywhere(&format!("{}/bg", containerd.namespace));
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    println!("containerd ran mm-runc's containers in the foreground and detached");
}
