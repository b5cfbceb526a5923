//! `mm oci`, runc's command line, on real bundles: a busybox bundle made by `umoci
//! unpack` from images/busybox, created, started, signalled and deleted as root, with
//! each state checked (`mm oci state`), the process's own view (its output, ids,
//! capabilities, limits) and, after delete, nothing left: no state directory, no cgroup,
//! no mount in any namespace. Also a refused field named by its JSON path, `delete
//! --force` of a created container, and the same lifecycle as an ordinary user.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// A bundle of images/busybox in `dir/bundle`, its process `args`, `terminal` off.
fn bundle(dir: &Path, args: &[&str]) -> PathBuf {
    let bundle = dir.join("bundle");
    busybox_bundle(&bundle, args.into());
    bundle
}

/// `mm oci --root ROOT ARGS` with the container's streams on files (they are the
/// container's, which would keep a pipe open).
fn oci(root: &Path, args: &[&str], out: &Path) -> (bool, String) {
    let mut command = Command::new(MM);
    command.arg("oci").arg("--root").arg(root).args(args);
    oci_run(command, out)
}

fn oci_run(command: Command, out: &Path) -> (bool, String) {
    let (status, err) = oci_on_files(command, out);
    (status.success(), err)
}

/// `mm oci create` of `bundle` as `id` is refused, saying `why`, and leaves nothing.
fn refused(root: &Path, bundle: &Path, id: &str, out: &Path, why: &str) {
    let (ok, err) = oci(
        root,
        &["create", "--bundle", bundle.to_str().unwrap(), id],
        out,
    );
    assert!(!ok, "create {id} was taken");
    assert!(err.contains(why), "{err}");
    assert!(!root.join(id).exists(), "create {id} left its state");
}

/// `mm oci state ID` as JSON (its standard output is ours here: it runs no container).
fn state(root: &Path, id: &str) -> serde_json::Value {
    let (out, stdout, stderr) = run(mm_bare(&[
        "oci",
        "--root",
        root.to_str().unwrap(),
        "state",
        id,
    ]));
    assert!(out.status.success(), "state {id}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// This test process as conmon and containerd's shim are: a subreaper, so that a
/// container's process, re-parented when `mm oci create` exits, becomes its child.
fn be_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

/// Waits for the container's process as its subreaper does: how it ended.
fn reap(pid: i64) -> nix::sys::wait::WaitStatus {
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None)
        .unwrap_or_else(|e| panic!("waitpid {pid}: {e} (the process is not ours)"));
    assert!(!alive(pid));
    status
}

fn killed(pid: i64) {
    let status = reap(pid);
    println!("the container's process, reaped by its subreaper: {status:?}");
    assert!(
        matches!(
            status,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "{status:?}"
    );
}

fn cmdline(pid: i64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn a_bundle_goes_through_create_start_kill_delete_as_root() {
    if !ready("a_bundle_goes_through_create_start_kill_delete_as_root") {
        return;
    }
    be_subreaper();
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "echo ids $(id -u):$(id -g) in $(pwd) on $(hostname); grep CapEff /proc/self/status; ulimit -n; grep ' /shared ' /proc/self/mountinfo; echo oom $(cat /proc/self/oom_score_adj); exec sleep 1000",
        ],
    );
    // A bind with runc's options: read-only, nosuid and noexec.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    edit_config(&bundle, |config| {
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/shared", "type": "bind", "source": shared,
                "options": ["rbind", "ro", "nosuid", "noexec", "rprivate"]
            }));
        // Kubelet gives each container one.
        config["process"]["oomScoreAdj"] = 321.into();
    });
    let root = dir.path().join("state");
    let out = dir.path().join("container.out");
    let pid_file = dir.path().join("pid");
    let id = "mm-oci-test-1";
    let _cleanup = OnDrop(|| {
        let _ = run(mm_bare(&[
            "oci",
            "--root",
            root.to_str().unwrap(),
            "delete",
            "--force",
            id,
        ]));
    });

    let (ok, err) = oci(
        &root,
        &[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ],
        &out,
    );
    assert!(ok, "create: {err}");
    let created = state(&root, id);
    println!("created: {created}");
    assert_eq!(created["status"], "created");
    assert_eq!(created["ociVersion"], "1.2.0");
    assert_eq!(created["bundle"], bundle.to_str().unwrap());
    assert_eq!(
        created["annotations"]["org.opencontainers.image.os"], "linux",
        "the bundle's annotations"
    );
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(created["pid"], pid);
    assert!(alive(pid));
    // Not executed yet: it is mm, waiting.
    assert!(cmdline(pid).contains("__supervise"), "{}", cmdline(pid));
    let cgroups = cgroup_dirs(&format!("machine.slice/mm-oci-{id}.scope"));
    assert!(
        cgroups.iter().any(|d| d.exists()),
        "its cgroup: {cgroups:?}"
    );
    let state_dir = root.join(id);
    assert!(state_dir.is_dir());
    // Starting twice: the second is refused, as it is not created any more.
    let (ok, err) = oci(&root, &["start", id], &out);
    assert!(ok, "start: {err}");
    let (ok, err) = oci(&root, &["start", id], &out);
    assert!(!ok && err.contains("is running"), "a second start: {err}");
    assert_eq!(state(&root, id)["status"], "running");
    eventually("the container wrote its line", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("oom "))
    });
    let said = std::fs::read_to_string(&out).unwrap();
    println!("the container said: {said}");
    assert!(said.contains("ids 0:0 in / on umoci-default"), "{said}");
    // runc's default set: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
    assert!(said.contains("CapEff:\t0000000020000420"), "{said}");
    assert!(said.lines().any(|l| l == "1024"), "RLIMIT_NOFILE: {said}");
    assert!(said.contains("oom 321"), "oomScoreAdj: {said}");
    let bind = said
        .lines()
        .find(|l| l.contains(" /shared "))
        .unwrap_or_default();
    for flag in ["ro", "nosuid", "noexec"] {
        assert!(bind.split([' ', ',']).any(|w| w == flag), "{flag}: {bind}");
    }
    assert!(cmdline(pid).starts_with("sleep 1000"), "{}", cmdline(pid));

    let (ok, err) = oci(&root, &["delete", id], &out);
    assert!(
        !ok && err.contains("is running"),
        "delete of a running one: {err}"
    );
    let (ok, err) = oci(&root, &["kill", id, "KILL"], &out);
    assert!(ok, "kill: {err}");
    eventually("the container is stopped", || {
        state(&root, id)["status"] == "stopped"
    });
    assert_eq!(state(&root, id)["pid"], 0);
    let (ok, err) = oci(&root, &["delete", id], &out);
    assert!(ok, "delete: {err}");
    assert!(!state_dir.exists(), "its state directory is gone");
    assert!(
        cgroups.iter().all(|d| !d.exists()),
        "its cgroup is gone: {cgroups:?}"
    );
    let left = mounts_anywhere(state_dir.to_str().unwrap());
    assert!(left.is_empty(), "mounts left: {left:?}");
    killed(pid);
    // The bundle is as it was: delete never touches it.
    assert!(bundle.join("rootfs/bin/busybox").exists());
    let (out_, _, stderr) = run(mm_bare(&[
        "oci",
        "--root",
        root.to_str().unwrap(),
        "state",
        id,
    ]));
    assert_eq!(
        out_.status.code(),
        Some(66),
        "state of a deleted one: {stderr}"
    );
}

#[test]
fn a_refused_field_is_named_and_nothing_is_left() {
    if !ready("a_refused_field_is_named_and_nothing_is_left") {
        return;
    }
    let dir = shared_tempdir();
    let bundle = bundle(dir.path(), &["true"]);
    edit_config(&bundle, |config| {
        config["linux"]["seccomp"] =
            serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent"});
        config["process"]["cwdd"] = "/".into();
    });
    let root = dir.path().join("state");
    let out = dir.path().join("out");
    let log = dir.path().join("log.json");
    let mut command = Command::new(MM);
    command
        .arg("oci")
        .args(["--root", root.to_str().unwrap()])
        .args(["--log", log.to_str().unwrap(), "--log-format", "json"])
        .args(["create", "--bundle", bundle.to_str().unwrap(), "refused"]);
    let (ok, err) = oci_run(command, &out);
    println!("{err}");
    assert!(!ok);
    assert!(
        err.contains("linux.seccomp.listenerPath: is not supported by mm"),
        "{err}"
    );
    assert!(
        err.contains("process.cwdd: is not a runtime-spec field (did you mean `cwd`?)"),
        "{err}"
    );
    assert!(!root.join("refused").exists(), "no state directory");
    // conmon and containerd read the reason from the log, as runc's JSON lines.
    let line = std::fs::read_to_string(&log).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(entry["level"], "error");
    assert!(entry["msg"].as_str().unwrap().contains("linux.seccomp"));
    // An oomScoreAdj below the caller's takes CAP_SYS_RESOURCE, which root lacks on some
    // hosts (this VM's): then the create fails saying so, and leaves nothing.
    edit_config(&bundle, |config| {
        config["linux"].as_object_mut().unwrap().remove("seccomp");
        let process = config["process"].as_object_mut().unwrap();
        process.remove("cwdd");
        process.insert("oomScoreAdj".to_owned(), (-321).into());
        process.insert("args".to_owned(), serde_json::json!(["true"]));
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap();
    // CAP_SYS_RESOURCE is capability 24.
    let has_sys_resource = effective & (1 << 24) != 0;
    let (ok, err) = oci(
        &root,
        &["create", "--bundle", bundle.to_str().unwrap(), "lowered"],
        &out,
    );
    println!("oomScoreAdj -321, CAP_SYS_RESOURCE {has_sys_resource}: {err}");
    if has_sys_resource {
        assert!(ok, "{err}");
        let pid = state(&root, "lowered")["pid"].as_i64().unwrap();
        let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
        assert_eq!(adj.trim(), "-321");
        let (ok, err) = oci(&root, &["delete", "--force", "lowered"], &out);
        assert!(ok, "{err}");
    } else {
        assert!(!ok);
        assert!(
            err.contains("set oom_score_adj to -321") && err.contains("CAP_SYS_RESOURCE"),
            "{err}"
        );
        assert!(!root.join("lowered").exists(), "no state directory");
    }
}

#[test]
fn delete_force_removes_a_created_container() {
    if !ready("delete_force_removes_a_created_container") {
        return;
    }
    be_subreaper();
    let dir = shared_tempdir();
    let bundle = bundle(dir.path(), &["true"]);
    let root = dir.path().join("state");
    let out = dir.path().join("out");
    let id = "mm-oci-test-force";
    let (ok, err) = oci(
        &root,
        &["create", "--bundle", bundle.to_str().unwrap(), id],
        &out,
    );
    assert!(ok, "create: {err}");
    let pid = state(&root, id)["pid"].as_i64().unwrap();
    let (ok, err) = oci(&root, &["delete", "--force", id], &out);
    assert!(ok, "delete --force: {err}");
    killed(pid);
    assert!(!root.join(id).exists());
    let cgroups = cgroup_dirs(&format!("machine.slice/mm-oci-{id}.scope"));
    assert!(cgroups.iter().all(|d| !d.exists()), "{cgroups:?}");
    // `true` never ran: nothing was written.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
}

#[test]
fn an_ordinary_user_runs_a_bundle_through_mm_runc() {
    if !is_root() {
        return skip(
            "an_ordinary_user_runs_a_bundle_through_mm_runc",
            "creating users needs root",
        );
    }
    assert!(default_image_built(), "images/busybox is missing");
    // Its `killed(pid)` reaps the container's process: only a subreaper can (this test
    // passed only when another one in the same process had made it one first).
    be_subreaper();
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &["sh", "-c", "echo inside as $(id -u); exec sleep 1000"],
    );
    let out = dir.path().join("out");
    std::fs::write(&out, "").unwrap();
    // mm's rootless map makes root inside the user: its files are the user's.
    let (chowned, _, stderr) = run({
        let mut c = Command::new("chown");
        c.args(["-R", &format!("{}:users", user.name)])
            .arg(dir.path());
        c
    });
    assert!(chowned.status.success(), "{stderr}");
    edit_config(&bundle, rootless_config);
    // As runc is called by podman: global flags first, under the name mm-runc.
    let runc = dir.path().join("mm-runc");
    std::os::unix::fs::symlink(shared_binary(), &runc).unwrap();
    let root = dir.path().join("state");
    let as_user = |args: &[&str]| {
        // As TestUser::mm runs mm, but through the symlink.
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                user.name,
                "--regid",
                "users",
                "--init-groups",
                "--",
            ])
            .arg(&runc)
            .args(["--root", root.to_str().unwrap()])
            .args(args)
            .env_clear()
            .env("HOME", &user.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        command
    };
    let id = "mm-oci-rootless";
    let (ok, err) = oci_run(
        as_user(&["create", "--bundle", bundle.to_str().unwrap(), id]),
        &out,
    );
    assert!(ok, "create: {err}");
    let (o, stdout, stderr) = run(as_user(&["state", id]));
    assert!(o.status.success(), "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(created["status"], "created");
    let pid = created["pid"].as_i64().unwrap();
    // On the host, the process is the user.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains(&user.uid.to_string()), "{uid_line}");
    let (ok, err) = oci_run(as_user(&["start", id]), &out);
    assert!(ok, "start: {err}");
    eventually("the container wrote its line", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("inside as 0"))
    });
    // exec as the user, into the user's container.
    let (o, stdout, stderr) = run(as_user(&["exec", id, "sh", "-c", "echo exec as $(id -u)"]));
    assert!(o.status.success(), "exec: {stderr}");
    assert_eq!(stdout, "exec as 0\n");
    // Without a cgroup of its own, no freezer: said so.
    let (ok, err) = oci_run(as_user(&["pause", id]), &out);
    println!("rootless pause: {err}");
    assert!(!ok && err.contains("cgroup"), "{err}");
    // A terminal as the user: the master of a pty of the container's devpts, on the
    // user's socket.
    let socket_path = dir.path().join("exec.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    std::os::unix::fs::chown(&socket_path, Some(user.uid), None).unwrap();
    let tty_pid = dir.path().join("tty.pid");
    let (ok, err) = oci_run(
        as_user(&[
            "exec",
            "--tty",
            "--detach",
            "--console-socket",
            socket_path.to_str().unwrap(),
            "--pid-file",
            tty_pid.to_str().unwrap(),
            id,
            "sh",
            "-c",
            "tty; echo as $(id -u)",
        ]),
        &out,
    );
    assert!(ok, "exec --tty as the user: {err}");
    let (stream, _) = listener.accept().unwrap();
    let (master, _) = mm::runtime::terminal::receive(std::os::fd::AsFd::as_fd(&stream)).unwrap();
    // Kept open until the process is reaped: closing the master hangs its terminal up,
    // and a shell that has printed but not yet exited would die of SIGHUP.
    let mut master = File::from(master);
    let seen = read_until_line(&mut master, "as 0");
    println!("rootless exec --tty: {seen:?}");
    assert!(seen.contains("/dev/pts/0\r\nas 0"), "{seen:?}");
    // Re-parented to us, its subreaper, which reaps it: a zombie of the container's PID
    // namespace that nobody reaps would keep its PID 1 from ending.
    let exec_pid: i64 = std::fs::read_to_string(&tty_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = reap(exec_pid);
    drop(master);
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    let (ok, err) = oci_run(as_user(&["delete", "--force", id]), &out);
    assert!(ok, "delete --force: {err}");
    assert!(!root.join(id).exists());
    killed(pid);
    println!(
        "rootless: created, started, said {:?}, deleted",
        std::fs::read_to_string(&out).unwrap().trim()
    );
}

/// podman drives mm as its runtime, through conmon: `podman --runtime DIR/mm-runc run
/// --rm`, with a store of its own in a temporary directory. conmon is the subreaper that
/// waits for the container's process, so the exit status it reports is the process's.
/// podman's default seccomp profile is taken (compiled by mm into the cache under the
/// run's MM_ROOT); the network is a namespace the test made, which podman has mm join by
/// path (`--network ns:PATH`: podman's default bridge would change the host's network);
/// this VM's root lacks CAP_SYS_RESOURCE, so the run asks for limits within the host's
/// (docs/oci.md).
#[test]
fn podman_runs_a_container_with_mm_as_its_runtime() {
    if !is_root() {
        return skip(
            "podman_runs_a_container_with_mm_as_its_runtime",
            "podman's root store and cgroups need root",
        );
    }
    for tool in ["podman", "conmon"] {
        let found = ["/usr/bin", "/usr/libexec/podman", "/usr/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        assert!(
            found,
            "{tool} is missing: scripts/setup installs podman (with conmon)"
        );
    }
    assert!(default_image_built(), "images/busybox is missing");
    let dir = shared_tempdir();
    let runc = dir.path().join("mm-runc");
    // conmon does not pass podman's environment on: the runtime is a script that gives
    // mm an MM_ROOT of the test's, where its seccomp cache goes.
    std::fs::write(
        &runc,
        format!(
            "#!/bin/sh\nMM_ROOT={} exec {MM} oci \"$@\"\n",
            dir.path().join("mm").display()
        ),
    )
    .unwrap();
    set_mode(&runc, 0o755);
    let netns = format!("mm-podman-{}", std::process::id());
    let (out, _, stderr) = run({
        let mut c = Command::new("ip");
        c.args(["netns", "add", &netns]);
        c
    });
    assert!(out.status.success(), "ip netns add: {stderr}");
    let _netns = OnDrop(|| {
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    });
    let network = format!("ns:/run/netns/{netns}");
    let conf = dir.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(dir.path().join("storage"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["--storage-driver", "vfs", "--runtime"])
            .arg(&runc)
            .args(args);
        c
    };
    let image = format!("oci:{}:latest", busybox().display());
    let (out, _, stderr) = run(podman(&["pull", "-q", &image]));
    assert!(out.status.success(), "podman pull: {stderr}");
    let cid = dir.path().join("cid");
    let (out, stdout, stderr) = run(podman(&[
        "run",
        "--rm",
        "--cidfile",
        cid.to_str().unwrap(),
        "--network",
        &network,
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &image,
        "sh",
        "-c",
        "echo hello from $(hostname) as $(id -u); exit 3",
    ]));
    println!("podman run: {:?}, said {stdout:?}", out.status.code());
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("hello from"), "{stdout}{stderr}");
    assert!(stdout.contains("as 0"), "{stdout}");
    // --rm deleted it: mm's state for the container is gone.
    let id = std::fs::read_to_string(&cid).unwrap();
    assert!(!Path::new("/run/mm-oci").join(id.trim()).exists());

    let opts = [
        "--network",
        &network,
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let ok = |args: &[&str]| {
        let (out, stdout, stderr) = run(podman(args));
        assert!(out.status.success(), "podman {args:?}: {stdout}{stderr}");
        stdout
    };
    // -t without a terminal of ours: conmon makes the console socket, mm sends the master.
    let mut args = vec!["run", "--rm", "-t"];
    args.extend_from_slice(&opts);
    args.extend_from_slice(&[&image, "sh", "-c", "tty; exit 5"]);
    let (out, stdout, stderr) = run(podman(&args));
    println!("podman run -t: {:?}, said {stdout:?}", out.status.code());
    assert_eq!(out.status.code(), Some(5), "{stdout}{stderr}");
    assert!(stdout.contains("/dev/pts/0"), "{stdout}");

    let name = "mm-podman-exec";
    let _cleanup = OnDrop(|| {
        let _ = run(podman(&["rm", "-f", name]));
    });
    // --memory: podman asks for twice as much memory and swap together.
    let mut args = vec!["run", "-d", "--name", name, "--memory", "64m"];
    args.extend_from_slice(&opts);
    args.extend_from_slice(&[&image, "sh", "-c", "echo started; exec sleep 1000"]);
    ok(&args);
    let full_id = ok(&["inspect", "--format", "{{.Id}}", name]);
    let memory_dir = std::fs::read_dir("/sys/fs/cgroup/memory")
        .unwrap()
        .flatten()
        .map(|parent| parent.path().join(format!("libpod-{}", full_id.trim())))
        .find(|dir| dir.is_dir());
    if let Some(dir) = memory_dir {
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_eq!(read("memory.limit_in_bytes"), "67108864");
        assert_eq!(read("memory.memsw.limit_in_bytes"), "134217728");
    } else {
        // Only a v2 host, whose memory controller is in the unified hierarchy, has none.
        assert!(
            !Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists(),
            "the container's v1 memory cgroup (libpod-{}) is missing",
            full_id.trim()
        );
        println!("a v2 host: the container's memory limits not read back");
    }
    let said = ok(&["exec", name, "echo", "hi"]);
    assert_eq!(said, "hi\n", "podman exec");
    let (out, _, stderr) = run(podman(&["exec", name, "sh", "-c", "exit 4"]));
    assert_eq!(out.status.code(), Some(4), "podman exec's status: {stderr}");
    let said = ok(&["exec", "-t", name, "tty"]);
    assert!(said.starts_with("/dev/pts/"), "podman exec -t: {said:?}");
    // Another container in its PID namespace (`--pid container:`, a pod's shared one).
    let pid_of = format!("container:{name}");
    let mut args = vec!["run", "--rm", "--pid", &pid_of];
    args.extend_from_slice(&opts);
    args.extend_from_slice(&[&image, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"]);
    let said = ok(&args);
    assert!(
        said.starts_with("sleep 1000"),
        "podman run --pid container: {said:?}"
    );
    // And in another's user namespace (`--userns container:`): podman gives its path and
    // its maps, which mm checks.
    let mapped = "mm-podman-userns";
    let _mapped = OnDrop(|| {
        let _ = run(podman(&["rm", "-f", mapped]));
    });
    let mut args = vec!["run", "-d", "--name", mapped];
    args.extend_from_slice(&["--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"]);
    args.extend_from_slice(&opts);
    args.extend_from_slice(&[&image, "sleep", "1000"]);
    ok(&args);
    let userns_of = format!("container:{mapped}");
    let mut args = vec!["run", "--rm", "--userns", &userns_of];
    args.extend_from_slice(&opts);
    args.extend_from_slice(&[&image, "cat", "/proc/self/uid_map"]);
    let said = ok(&args);
    let map: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(
        map,
        ["0", "200000", "65536"],
        "podman run --userns container:"
    );
    ok(&["rm", "-f", "-t", "0", mapped]);
    ok(&["pause", name]);
    let status = ok(&["inspect", "--format", "{{.State.Status}}", name]);
    assert_eq!(status.trim(), "paused");
    ok(&["unpause", name]);
    let ps = ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains(&format!("{name} Up")), "podman ps: {ps}");
    let top = ok(&["top", name]);
    println!("podman top:\n{top}");
    assert!(top.contains("sleep 1000"), "{top}");
    let logs = ok(&["logs", name]);
    assert!(logs.contains("started"), "podman logs: {logs}");
    // PID 1 has no handler for SIGTERM, which the kernel drops: podman kills it after 1 s.
    ok(&["stop", "-t", "1", name]);
    let status = ok(&["inspect", "--format", "{{.State.Status}}", name]);
    assert_eq!(status.trim(), "exited");
    ok(&["rm", name]);
    println!(
        "podman: run -t, exec (output, status, -t), run --pid container:, pause, unpause, ps, top, logs, stop, rm"
    );
    // podman's default profile was compiled (and cached) by mm, once.
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("mm/cache/seccomp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    println!("seccomp cache: {cached:?}");
    assert_eq!(
        cached.len(),
        1,
        "podman's profile, compiled once: {cached:?}"
    );
}

/// An ordinary user's podman drives mm (`podman --runtime DIR/mm-runc`), as podman does
/// rootless: conmon and mm run as uid 0 of podman's own user namespace, which mm must take
/// for an ordinary user's (state under `$XDG_RUNTIME_DIR/mm-oci`, the seccomp cache in the
/// user's home, no cgroup of the host's) while it still makes and joins namespaces as that
/// namespace's root. The container is in podman's network namespace (slirp4netns's
/// `tap0`; nothing is sent), with podman's `net.ipv4.ping_group_range` written there;
/// `--userns keep-id` makes the user the user inside; run -d, exec (output, status, -t),
/// ps, logs, stop and rm work, and nothing of mm's is left.
#[test]
fn an_ordinary_users_podman_runs_containers_with_mm_runc() {
    let test = "an_ordinary_users_podman_runs_containers_with_mm_runc";
    if !is_root() {
        return skip(test, "creating users needs root");
    }
    for tool in ["podman", "conmon", "slirp4netns"] {
        let found = ["/usr/bin", "/usr/libexec/podman"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        assert!(found, "{tool} is missing: scripts/setup installs podman");
    }
    assert!(default_image_built(), "images/busybox is missing");
    let user = test_user("mm-podman", Some(500_000));
    let dir = shared_tempdir();
    // Everything podman and mm write is under the user's own 0700 directories here.
    let own = dir.path().join("own");
    let xdg = own.join("xdg");
    for d in [&own, &xdg] {
        std::fs::create_dir(d).unwrap();
    }
    let runc = own.join("mm-runc");
    std::os::unix::fs::symlink(shared_binary(), &runc).unwrap();
    // CONTAINERS_CONF replaces podman's own file, whose default_sysctls this repeats.
    let conf = own.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_sysctls = [\"net.ipv4.ping_group_range=0 0\"]\n\
         [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    let (out, _, stderr) = run({
        let mut c = Command::new("chown");
        c.args(["-R", &format!("{}:users", user.name)]).arg(&own);
        c
    });
    assert!(out.status.success(), "{stderr}");
    set_mode(&own, 0o755);
    set_mode(&xdg, 0o700);
    // podman's pause process holds its user namespace after the last container: ended here.
    let _pause = OnDrop(|| {
        if let Ok(pid) = std::fs::read_to_string(xdg.join("libpod/tmp/pause.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    let podman = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", user.name, "--regid", "users", "--init-groups"])
            .args(["--", "podman", "--root"])
            .arg(own.join("storage"))
            .arg("--runroot")
            .arg(own.join("run"))
            .args(["--storage-driver", "vfs", "--runtime"])
            .arg(&runc)
            .args(args)
            .current_dir(&own)
            .env_clear()
            .env("HOME", &user.home)
            .env("XDG_RUNTIME_DIR", &xdg)
            .env("CONTAINERS_CONF", &conf)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        c
    };
    let ok = |args: &[&str]| {
        let (out, stdout, stderr) = run(podman(args));
        assert!(out.status.success(), "podman {args:?}: {stdout}{stderr}");
        stdout
    };
    let image = format!("oci:{}:latest", busybox().display());
    ok(&["pull", "-q", &image]);
    let (out, stdout, stderr) = run(podman(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "echo as $(id -u); cat /proc/self/uid_map /proc/sys/net/ipv4/ping_group_range; \
         ls /sys/class/net; exit 3",
    ]));
    println!("podman run: {:?}, said {stdout:?}", out.status.code());
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("as 0\n"), "{stdout}");
    // The identity of podman's namespace's ids: 0 (the user) and its 65536 subordinate ids.
    let map: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| w.len() == 3)
        .collect();
    assert_eq!(
        map,
        [vec!["0", "0", "1"], vec!["1", "1", "65536"]],
        "{stdout}"
    );
    assert!(stdout.contains("0\t0\n"), "ping_group_range: {stdout}");
    assert!(stdout.contains("tap0\n"), "podman's network: {stdout}");

    let said = ok(&["run", "--rm", "--userns", "keep-id", &image, "id", "-u"]);
    assert_eq!(said.trim(), user.uid.to_string(), "--userns keep-id");

    let name = "mm-podman-rootless";
    let _cleanup = OnDrop(|| {
        let _ = run(podman(&["rm", "-f", name]));
    });
    ok(&[
        "run",
        "-d",
        "--name",
        name,
        &image,
        "sh",
        "-c",
        "echo started; exec sleep 1000",
    ]);
    let state = xdg.join("mm-oci");
    let kept: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
    assert_eq!(
        kept.len(),
        1,
        "mm's state for the container under {state:?}"
    );
    assert_eq!(ok(&["exec", name, "echo", "hi"]), "hi\n", "podman exec");
    let (out, _, stderr) = run(podman(&["exec", name, "sh", "-c", "exit 4"]));
    assert_eq!(out.status.code(), Some(4), "podman exec's status: {stderr}");
    let said = ok(&["exec", "-t", name, "tty"]);
    assert!(said.starts_with("/dev/pts/"), "podman exec -t: {said:?}");
    // Another container in its PID namespace (`--pid container:`, a pod's shared one).
    let pid_of = format!("container:{name}");
    let said = ok(&[
        "run",
        "--rm",
        "--pid",
        &pid_of,
        &image,
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline",
    ]);
    assert!(
        said.starts_with("sleep 1000"),
        "podman run --pid container: {said:?}"
    );
    let ps = ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains(&format!("{name} Up")), "podman ps: {ps}");
    assert!(ok(&["logs", name]).contains("started"), "podman logs");
    ok(&["stop", "-t", "1", name]);
    ok(&["rm", name]);
    let left: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
    assert!(left.is_empty(), "mm's state left: {left:?}");
    let cache = user.home.join(".cache/mm/seccomp");
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert!(cached >= 1, "podman's profile cached under {cache:?}");
    println!(
        "rootless podman: run, keep-id, run -d, exec (output, status, -t), run --pid container:, ps, logs, stop, rm"
    );
}

/// The device of the file behind a descriptor of `pid` (`/proc/PID/fd/N`), or of a path.
fn device(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().dev()
}

/// Reads the terminal's master until a line `want` shows (or the terminal ends); all read.
fn read_until_line(master: &mut File, want: &str) -> String {
    use std::io::Read;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.split("\r\n").any(|l| l == want) {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    seen
}

/// `process.terminal` with `--console-socket`, as conmon drives it: the test's own socket
/// gets the terminal's master (one descriptor, its name `/dev/pts/N`); `echo hi` typed
/// into it is answered `hi`; the process's descriptors are all of the container's own
/// devpts (none of the host's); `exit 7` through the terminal is its exit status. And
/// runc's two refusals: a terminal without a socket, a socket without a terminal.
#[test]
fn a_terminal_goes_to_the_console_socket() {
    if !ready("a_terminal_goes_to_the_console_socket") {
        return;
    }
    be_subreaper();
    let dir = shared_tempdir();
    let bundle = bundle(dir.path(), &["sh"]);
    let root = dir.path().join("state");
    let out = dir.path().join("out");
    let socket_path = dir.path().join("console.sock");
    let id = "mm-oci-terminal";
    let _cleanup = OnDrop(|| {
        let _ = run(mm_bare(&[
            "oci",
            "--root",
            root.to_str().unwrap(),
            "delete",
            "--force",
            id,
        ]));
    });
    let create = |args: &[&str]| {
        let mut all = vec!["create", "--bundle", bundle.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push(id);
        oci(&root, &all, &out)
    };
    // A socket without a terminal.
    let (ok, err) = create(&["--console-socket", socket_path.to_str().unwrap()]);
    assert!(!ok && err.contains("process.terminal is false"), "{err}");
    edit_config(&bundle, |config| {
        config["process"]["terminal"] = true.into();
        config["process"]["consoleSize"] = serde_json::json!({"height": 33, "width": 99});
    });
    // A terminal without a socket.
    let (ok, err) = create(&[]);
    assert!(!ok && err.contains("--console-socket"), "{err}");
    assert!(!root.join(id).exists());

    let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let (ok, err) = create(&["--console-socket", socket_path.to_str().unwrap()]);
    assert!(ok, "create: {err}");
    let (stream, _) = listener.accept().unwrap();
    let (master, name) = mm::runtime::terminal::receive(std::os::fd::AsFd::as_fd(&stream)).unwrap();
    println!("the console socket got a descriptor named {name:?}");
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let pid = state(&root, id)["pid"].as_i64().unwrap();
    // The process's descriptors: its standard streams on the container's devpts, and
    // nothing of the host's devpts at all.
    let theirs = device(&format!("/proc/{pid}/root/dev/pts/ptmx"));
    let hosts = device("/dev/pts/ptmx");
    assert_ne!(theirs, hosts, "the container has a devpts of its own");
    let mut fds = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let path = entry.unwrap().path();
        let dev = device(path.to_str().unwrap());
        assert_ne!(dev, hosts, "{} is on the host's devpts", path.display());
        fds += 1;
    }
    for fd in 0..3 {
        assert_eq!(device(&format!("/proc/{pid}/fd/{fd}")), theirs, "fd {fd}");
    }
    println!("{fds} descriptors, none of the host's devpts; 0-2 on the container's");
    let (ok, err) = oci(&root, &["start", id], &out);
    assert!(ok, "start: {err}");
    let mut master = File::from(master);
    use std::io::Write;
    master.write_all(b"stty size; echo hi\n").unwrap();
    let seen = read_until_line(&mut master, "hi");
    println!("through the terminal: {seen:?}");
    assert!(seen.split("\r\n").any(|l| l == "hi"), "{seen:?}");
    assert!(
        seen.split("\r\n").any(|l| l == "33 99"),
        "consoleSize: {seen:?}"
    );
    master.write_all(b"exit 7\n").unwrap();
    let status = reap(pid);
    println!("after `exit 7`: {status:?}");
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 7)),
        "{status:?}"
    );
}

/// `mm oci --root ROOT exec ARGS`: its status and what it printed (its streams are
/// pipes, which the process gets as they are).
fn exec(root: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["oci", "--root", root.to_str().unwrap(), "exec"];
    all.extend_from_slice(args);
    let (out, stdout, stderr) = run(mm_bare(&all));
    (out.status.code(), stdout, stderr)
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat, after the command's parentheses).
fn parent_of(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

/// `mm oci exec` as conmon and containerd's shim call it: in a created container and in a
/// running one; its exit status and output; runc's `--env`, `--cwd`, `--user`, `--cap`;
/// `--process` with a runtime-spec process (and a refused field named by its JSON path);
/// `--detach --pid-file`: the process is left running, the caller's (its subreaper's)
/// child, in the container's cgroup; `--tty --console-socket`: the master goes to the
/// socket, and the process's terminal is of the container's devpts.
#[test]
fn exec_runs_a_process_in_the_container() {
    if !ready("exec_runs_a_process_in_the_container") {
        return;
    }
    be_subreaper();
    let dir = shared_tempdir();
    let bundle = bundle(dir.path(), &["sleep", "1000"]);
    // The container's oomScoreAdj is also its exec'd processes', as runc gives it.
    edit_config(&bundle, |config| {
        config["process"]["oomScoreAdj"] = 222.into();
    });
    let root = dir.path().join("state");
    let out = dir.path().join("out");
    let id = "mm-oci-exec";
    let _cleanup = OnDrop(|| {
        let _ = run(mm_bare(&[
            "oci",
            "--root",
            root.to_str().unwrap(),
            "delete",
            "--force",
            id,
        ]));
    });
    let (ok, err) = oci(
        &root,
        &["create", "--bundle", bundle.to_str().unwrap(), id],
        &out,
    );
    assert!(ok, "create: {err}");
    let pid1 = state(&root, id)["pid"].as_i64().unwrap();
    let (code, stdout, stderr) = exec(
        &root,
        &[
            id,
            "sh",
            "-c",
            "echo created on $(hostname) oom $(cat /proc/self/oom_score_adj); exit 3",
        ],
    );
    println!("exec in a created container: {code:?} {stdout:?}");
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(stdout, "created on umoci-default oom 222\n");
    let (ok, err) = oci(&root, &["start", id], &out);
    assert!(ok, "start: {err}");

    let (code, stdout, stderr) = exec(
        &root,
        &[
            "--env",
            "FOO=bar",
            "--cwd",
            "/tmp",
            "--user",
            "1000:1000",
            id,
            "sh",
            "-c",
            "echo $FOO in $(pwd) as $(id -u):$(id -g); grep CapEff /proc/self/status",
        ],
    );
    println!("exec with runc's options: {code:?} {stdout:?}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("bar in /tmp as 1000:1000"), "{stdout}");
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{stdout}");
    // As root, the container's set, and --cap NET_RAW (bit 13) on top.
    let (code, stdout, stderr) = exec(
        &root,
        &[
            "--cap",
            "CAP_NET_RAW",
            id,
            "grep",
            "CapEff",
            "/proc/self/status",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "CapEff:\t0000000020002420\n", "--cap");

    let process = dir.path().join("process.json");
    std::fs::write(
        &process,
        serde_json::to_vec(&serde_json::json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "echo from the process file, $X; exit 4"],
            "env": ["PATH=/bin:/usr/bin", "X=y"],
            "cwd": "/",
            "noNewPrivileges": true
        }))
        .unwrap(),
    )
    .unwrap();
    let (code, stdout, stderr) = exec(&root, &["--process", process.to_str().unwrap(), id]);
    println!("exec --process: {code:?} {stdout:?}");
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(stdout, "from the process file, y\n");
    // A field mm does not take, by its path; a value it cannot honour, by its path.
    std::fs::write(
        &process,
        r#"{"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/", "scheduler": {"policy": "SCHED_BATCH"}}"#,
    )
    .unwrap();
    let (code, _, stderr) = exec(&root, &["--process", process.to_str().unwrap(), id]);
    println!("a refused field: {stderr}");
    assert_eq!(code, Some(65));
    assert!(
        stderr.contains("process.scheduler: is not supported by mm"),
        "{stderr}"
    );

    std::fs::write(
        &process,
        r#"{"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "tmp", "oomScoreAdj": 1001}"#,
    )
    .unwrap();
    let (code, _, stderr) = exec(&root, &["--process", process.to_str().unwrap(), id]);
    assert_eq!(code, Some(65));
    assert!(
        stderr.contains("process.cwd: `tmp` is not an absolute path"),
        "{stderr}"
    );
    assert!(
        stderr.contains("process.oomScoreAdj: an oom_score_adj goes from -1000 to 1000"),
        "{stderr}"
    );

    // Detached: left running as our child (we are the subreaper), in the container.
    let pid_file = dir.path().join("exec.pid");
    let (ok, err) = oci(
        &root,
        &[
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
            "sleep",
            "999",
        ],
        &out,
    );
    assert!(ok, "exec --detach: {err}");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // mm's fork executes it a moment after its pid is written.
    eventually("the detached process executes", || {
        cmdline(pid).starts_with("sleep 999")
    });
    assert_eq!(
        parent_of(pid),
        std::process::id() as i64,
        "re-parented to its subreaper"
    );
    let ns = |pid: i64| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(ns(pid), ns(pid1), "in the container's PID namespace");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup.contains(&format!("mm-oci-{id}.scope")), "{cgroup}");
    println!("detached: pid {pid}, parent us, in the container's namespaces and cgroup");
    // SAFETY: a signal to the process we are the parent of.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    killed(pid);

    // A terminal, whose master goes to the console socket.
    let socket_path = dir.path().join("exec.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let pid_file = dir.path().join("tty.pid");
    let (ok, err) = oci(
        &root,
        &[
            "exec",
            "--tty",
            "--detach",
            "--console-socket",
            socket_path.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
            "sh",
        ],
        &out,
    );
    assert!(ok, "exec --tty: {err}");
    let (stream, _) = listener.accept().unwrap();
    let (master, name) = mm::runtime::terminal::receive(std::os::fd::AsFd::as_fd(&stream)).unwrap();
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let theirs = device(&format!("/proc/{pid1}/root/dev/pts/ptmx"));
    for fd in 0..3 {
        assert_eq!(device(&format!("/proc/{pid}/fd/{fd}")), theirs, "fd {fd}");
    }
    let mut master = File::from(master);
    use std::io::Write;
    master.write_all(b"tty; echo hi; exit 6\n").unwrap();
    let seen = read_until_line(&mut master, "hi");
    println!("exec --tty, {name}: {seen:?}");
    assert!(
        seen.split("\r\n").any(|l| l == name),
        "its tty is {name}: {seen:?}"
    );
    let status = reap(pid);
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 6)),
        "{status:?}"
    );
}

/// `ps`, `pause`, `resume` and `update` on a running container whose process counts in a
/// loop into /tmp/n (the bundle's rootfs/tmp/n on the host): `ps --format json` lists
/// its pids (the process and one `exec --detach`ed); `pause` freezes the cgroup (the
/// freezer says so, the state is `paused`, /tmp/n does not grow between two reads
/// with other commands run in between, and exec is refused); `resume` thaws it (the
/// file grows again); `update` changes the memory and pids limits, and refuses what
/// mm's cgroup layer does not set, by its JSON path.
#[test]
fn ps_pause_resume_and_update() {
    if !ready("ps_pause_resume_and_update") {
        return;
    }
    be_subreaper();
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i >> /tmp/n; done",
        ],
    );
    let root = dir.path().join("state");
    let out = dir.path().join("out");
    let id = "mm-oci-freeze";
    let _cleanup = OnDrop(|| {
        let _ = run(mm_bare(&[
            "oci",
            "--root",
            root.to_str().unwrap(),
            "delete",
            "--force",
            id,
        ]));
    });
    let oci_ok = |args: &[&str]| {
        let (ok, err) = oci(&root, args, &out);
        assert!(ok, "{args:?}: {err}");
    };
    oci_ok(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    oci_ok(&["start", id]);
    let pid1 = state(&root, id)["pid"].as_i64().unwrap();
    let pid_file = dir.path().join("exec.pid");
    oci_ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        id,
        "sleep",
        "999",
    ]);
    let exec_pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mm_root = root.to_str().unwrap();
    let (o, stdout, stderr) = run(mm_bare(&[
        "oci", "--root", mm_root, "ps", "--format", "json", id,
    ]));
    assert!(o.status.success(), "{stderr}");
    let pids: Vec<i64> = serde_json::from_str(&stdout).unwrap();
    println!("ps --format json: {pids:?}");
    assert!(pids.contains(&pid1) && pids.contains(&exec_pid), "{pids:?}");
    let (o, table, stderr) = run(mm_bare(&["oci", "--root", mm_root, "ps", id]));
    assert!(o.status.success(), "{stderr}");
    println!("ps:\n{table}");
    assert!(table.starts_with("UID"), "{table}");
    assert!(table.contains("sleep 999"), "{table}");
    assert_eq!(table.lines().count(), 3, "a header and two processes");

    let count = bundle.join("rootfs/tmp/n");
    let size = || std::fs::metadata(&count).map_or(0, |m| m.len());
    eventually("the loop counts", || size() > 0);
    oci_ok(&["pause", id]);
    assert_eq!(state(&root, id)["status"], "paused");
    let scope = format!("machine.slice/mm-oci-{id}.scope");
    let freezer = cgroup_limit_file(&scope, "freezer", "freezer.state", "cgroup.freeze");
    let frozen = std::fs::read_to_string(&freezer).unwrap();
    assert!(
        matches!(frozen.trim(), "FROZEN" | "1"),
        "{}: {frozen}",
        freezer.display()
    );
    let before = size();
    let (code, _, stderr) = exec(&root, &[id, "true"]);
    assert_eq!(code, Some(75), "exec in a paused container: {stderr}");
    let (ok, err) = oci(&root, &["pause", id], &out);
    assert!(!ok && err.contains("is paused"), "{err}");
    let after = size();
    println!("paused: /tmp/n has {before} bytes, then {after}");
    assert_eq!(before, after, "a frozen loop does not count");
    oci_ok(&["resume", id]);
    assert_eq!(state(&root, id)["status"], "running");
    eventually("the loop counts again", || size() > after);
    let (ok, err) = oci(&root, &["resume", id], &out);
    assert!(!ok && err.contains("is running"), "{err}");

    oci_ok(&["update", "--memory", "104857600", "--pids-limit", "64", id]);
    let memory = cgroup_limit_file(&scope, "memory", "memory.limit_in_bytes", "memory.max");
    let pids_max = cgroup_limit_file(&scope, "pids", "pids.max", "pids.max");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_owned();
    println!(
        "updated: memory {}, pids {}",
        read(&memory),
        read(&pids_max)
    );
    assert_eq!(read(&memory), "104857600");
    assert_eq!(read(&pids_max), "64");
    // Memory and swap together (podman's --memory gives twice the memory): v1 limits the
    // sum, v2 the swap alone.
    oci_ok(&[
        "update",
        "--memory",
        "104857600",
        "--memory-swap",
        "209715200",
        id,
    ]);
    let swap = cgroup_limit_file(
        &scope,
        "memory",
        "memory.memsw.limit_in_bytes",
        "memory.swap.max",
    );
    println!("updated: {} {}", swap.display(), read(&swap));
    let expected = if swap.ends_with("memory.swap.max") {
        "104857600"
    } else {
        "209715200"
    };
    assert_eq!(read(&swap), expected);
    let (ok, err) = oci(
        &root,
        &[
            "update",
            "--memory",
            "104857600",
            "--memory-swap",
            "1000",
            id,
        ],
        &out,
    );
    assert!(!ok && err.contains("linux.resources.memory.swap: 1000 is memory and swap together, and below the memory limit (104857600)"), "{err}");
    let resources = dir.path().join("resources.json");
    std::fs::write(
        &resources,
        r#"{"pids": {"limit": 32}, "blockIO": {"weight": 10}}"#,
    )
    .unwrap();
    let (ok, err) = oci(
        &root,
        &["update", "--resources", resources.to_str().unwrap(), id],
        &out,
    );
    assert!(!ok && err.contains("linux.resources.blockIO"), "{err}");
    assert_eq!(
        read(&pids_max),
        "64",
        "nothing of a refused update is written"
    );
    std::fs::write(&resources, r#"{"pids": {"limit": 32}}"#).unwrap();
    oci_ok(&["update", "--resources", resources.to_str().unwrap(), id]);
    assert_eq!(read(&pids_max), "32");
    // The CPUs and memory nodes it may use (podman's --cpuset-cpus and --cpuset-mems).
    std::fs::write(&resources, r#"{"cpu": {"cpus": "0", "mems": "0"}}"#).unwrap();
    oci_ok(&["update", "--resources", resources.to_str().unwrap(), id]);
    let cpus = cgroup_limit_file(&scope, "cpuset", "cpuset.cpus", "cpuset.cpus");
    let mems = cgroup_limit_file(&scope, "cpuset", "cpuset.mems", "cpuset.mems");
    assert_eq!((read(&cpus), read(&mems)), ("0".to_owned(), "0".to_owned()));
    std::fs::write(&resources, r#"{"cpu": {"cpus": "0-x"}}"#).unwrap();
    let (ok, err) = oci(
        &root,
        &["update", "--resources", resources.to_str().unwrap(), id],
        &out,
    );
    assert!(
        !ok && err.contains("linux.resources.cpu.cpus: `0-x` is not a list of numbers and ranges"),
        "{err}"
    );

    // The exec'd process ends, and its subreaper reaps it (an unreaped zombie of the PID
    // namespace would keep PID 1 from ending).
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(exec_pid as i32, libc::SIGKILL) };
    killed(exec_pid);
    // A paused container is deleted too: thawed, then killed.
    oci_ok(&["pause", id]);
    oci_ok(&["delete", "--force", id]);
    killed(pid1);
}

/// `mm oci run` of a bundle with `process.terminal`: from a terminal (script(1)'s), mm
/// relays it (the process's terminal is of the container's devpts, at the caller's window
/// size) and exits with the process's status; from no terminal, it refuses, saying why.
#[test]
fn run_relays_a_terminal_from_a_terminal() {
    if !ready("run_relays_a_terminal_from_a_terminal") {
        return;
    }
    let dir = shared_tempdir();
    let bundle = bundle(dir.path(), &["sh", "-c", "tty; stty size; exit 3"]);
    edit_config(&bundle, |config| {
        config["process"]["terminal"] = true.into();
    });
    let root = dir.path().join("state");
    let mm_root = root.to_str().unwrap();
    let mut command = mm_bare(&["oci", "--root", mm_root, "run", "--bundle"]);
    command.arg(&bundle).arg("mm-oci-run-tty");
    let (out, _, stderr) = run(command);
    println!("without a terminal: {stderr}");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("not a terminal"), "{stderr}");
    let line = format!(
        "stty rows 21 cols 77; {MM} oci --root {mm_root} run --bundle {} mm-oci-run-tty",
        bundle.display()
    );
    let (out, stdout, stderr) = run({
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"]);
        c
    });
    println!(
        "from script(1)'s terminal: {:?} {stdout:?}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("/dev/pts/0"), "{stdout}");
    assert!(
        stdout.contains("21 77"),
        "the caller's window size: {stdout}"
    );
    assert!(!root.join("mm-oci-run-tty").exists(), "deleted");
}

/// What `process.terminal` and `consoleSize` compile into (`mm oci plan`), and what is
/// refused by its JSON path: a terminal without a devpts of the container's own, a size
/// without a terminal, a size no terminal has.
#[test]
fn a_terminal_is_planned_or_refused_by_its_path() {
    if !ready("a_terminal_is_planned_or_refused_by_its_path") {
        return;
    }
    let dir = shared_tempdir();
    let bundle = bundle(dir.path(), &["sh"]);
    let plan = |bundle: &Path| {
        let mut command = mm_bare(&["oci", "plan", "--bundle"]);
        command.arg(bundle);
        let (out, stdout, stderr) = run(command);
        (out.status.code(), stdout, stderr)
    };
    edit_config(&bundle, |config| {
        config["process"]["consoleSize"] = serde_json::json!({"height": 70000, "width": 80});
    });
    let (code, _, stderr) = plan(&bundle);
    println!("{stderr}");
    assert_eq!(code, Some(65));
    assert!(
        stderr.contains("process.consoleSize.height: 70000 is more than a terminal has"),
        "{stderr}"
    );
    assert!(
        stderr.contains("process.consoleSize: a console size needs a terminal"),
        "{stderr}"
    );
    edit_config(&bundle, |config| {
        config["process"]["terminal"] = true.into();
        config["process"]["consoleSize"] = serde_json::json!({"height": 33, "width": 99});
    });
    let (code, stdout, stderr) = plan(&bundle);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("on a new terminal of the machine's devpts (33 rows, 99 columns)"),
        "{stdout}"
    );
    edit_config(&bundle, |config| {
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["type"] != "devpts");
    });
    let (code, _, stderr) = plan(&bundle);
    println!("{stderr}");
    assert_eq!(code, Some(65));
    assert!(
        stderr.contains("process.terminal: mm opens a terminal in the container's own devpts"),
        "{stderr}"
    );
}

/// `linux.namespaces[].path`: a container joins a network namespace the test made (with a
/// veth pair in it) and the UTS and IPC namespaces of a process with a hostname of its
/// own, as a pod's containers join its sandbox's. It sees that namespace's links, on
/// /proc/net and on a sysfs of that namespace (made by host root, which owns it), that
/// hostname, and an mqueue of the joined IPC namespace.
#[test]
fn a_container_joins_namespaces_by_path() {
    let test = "a_container_joins_namespaces_by_path";
    if !ready(test) {
        return;
    }
    let netns = format!("mm-join-{}", std::process::id());
    let ip = |args: &[&str]| {
        let (out, _, stderr) = run({
            let mut c = Command::new("ip");
            c.args(args);
            c
        });
        assert!(out.status.success(), "ip {args:?}: {stderr}");
    };
    ip(&["netns", "add", &netns]);
    let _netns = OnDrop(|| {
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    });
    ip(&[
        "-n", &netns, "link", "add", "mmjoin0", "type", "veth", "peer", "name", "mmjoin1",
    ]);
    // UTS and IPC namespaces held by a sleeping process, with its own hostname.
    let mut holder = Command::new("unshare")
        .args([
            "--uts",
            "--ipc",
            "sh",
            "-c",
            "hostname mm-joined-uts && exec sleep 300",
        ])
        .spawn()
        .unwrap();
    let holder_pid = holder.id();
    let _holder = OnDrop(move || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let uts = format!("/proc/{holder_pid}/ns/uts");
    let ipc = format!("/proc/{holder_pid}/ns/ipc");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_link(&uts).ok() == std::fs::read_link("/proc/self/ns/uts").ok()
        || !cmdline(i64::from(holder_pid)).starts_with("sleep")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "unshare --uts did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "cat /proc/net/dev; echo hostname $(hostname); echo netns $(stat -L -c %i /proc/self/ns/net); echo ipcns $(stat -L -c %i /proc/self/ns/ipc); echo forward $(cat /proc/sys/net/ipv4/ip_forward) shmmax $(cat /proc/sys/kernel/shmmax); grep ' /dev/mqueue ' /proc/self/mountinfo; ls /sys/class/net",
        ],
    );
    let netns_path = format!("/run/netns/{netns}");
    let host_shmmax = std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    edit_config(&bundle, |config| {
        config.as_object_mut().unwrap().remove("hostname");
        // Written by the spawner in the namespaces joined, not by PID 1.
        config["linux"]["sysctl"] =
            serde_json::json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"});
        for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
            match ns["type"].as_str() {
                Some("network") => ns["path"] = netns_path.clone().into(),
                Some("uts") => ns["path"] = uts.clone().into(),
                Some("ipc") => ns["path"] = ipc.clone().into(),
                _ => {}
            }
        }
    });
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    let (ok, err) = oci(
        &root,
        &["run", "--bundle", bundle.to_str().unwrap(), "joiner"],
        &out,
    );
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    println!("the container said:\n{said}{err}");
    assert!(ok, "mm oci run: {err}");
    assert!(
        said.contains("mmjoin0:") && said.contains("mmjoin1:"),
        "{said}"
    );
    assert!(said.contains("hostname mm-joined-uts"), "{said}");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&netns_path).unwrap());
    assert!(said.contains(&format!("netns {inode}")), "{said}");
    let ipc_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&ipc).unwrap());
    assert!(said.contains(&format!("ipcns {ipc_inode}")), "{said}");
    assert!(said.contains("forward 1 shmmax 123456789"), "{said}");
    let (_, forward, _) = run({
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &netns,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ]);
        c
    });
    assert_eq!(forward.trim(), "1", "the joined namespace's ip_forward");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(),
        host_shmmax,
        "the host's shmmax changed"
    );
    // The joined namespace's mqueue and sysfs (its links, not the host's).
    assert!(said.contains(" - mqueue "), "{said}");
    let links: Vec<&str> = said
        .lines()
        .skip_while(|l| !l.contains(" - mqueue "))
        .skip(1)
        .collect();
    assert_eq!(links, ["lo", "mmjoin0", "mmjoin1"], "{said}");
    let _ = holder.kill();
    let _ = holder.wait();
    // A parameter of a joined namespace that is mm's own (the host's) is not written.
    let range = "/proc/sys/net/ipv4/ping_group_range";
    let host_range = std::fs::read_to_string(range).unwrap();
    let _range = OnDrop(|| {
        let _ = std::fs::write(range, &host_range);
    });
    let other = if host_range.trim() == "0\t0" {
        "1 0"
    } else {
        "0 0"
    };
    edit_config(&bundle, |config| {
        for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
            match ns["type"].as_str() {
                Some("network") => ns["path"] = "/proc/self/ns/net".into(),
                Some("uts") | Some("ipc") => {
                    ns.as_object_mut().unwrap().remove("path");
                }
                _ => {}
            }
        }
        config["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ping_group_range": other});
    });
    let (ok, err) = oci(
        &root,
        &["run", "--bundle", bundle.to_str().unwrap(), "joiner-host"],
        &out,
    );
    println!("joining the host's own network namespace with a parameter: {err}");
    assert!(!ok, "mm oci run wrote a parameter of the host's namespace");
    assert!(
        err.contains("mm's own network namespace, the host's"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(range).unwrap(), host_range);
    // A mount namespace cannot be joined: refused with its path.
    edit_config(&bundle, |config| {
        config["linux"].as_object_mut().unwrap().remove("sysctl");
        for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "mount" {
                ns["path"] = "/proc/1/ns/mnt".into();
            }
        }
    });
    refused(
        &root,
        &bundle,
        "joiner2",
        &out,
        "path: joining an existing mount namespace",
    );
}

/// A pod's `shareProcessNamespace`, in a pod with a user namespace (`hostUsers: false`): a
/// member joins its sandbox's PID and user namespaces by path. It sees the sandbox's
/// processes (its PID 1 is the sandbox's), has a proc of that namespace (which its own user
/// namespace could not mount), is in the sandbox's user namespace with its maps, `exec`
/// joins both, and what the member leaves behind when its process ends is killed with its
/// cgroup, not handed to the sandbox's PID 1. A user namespace whose maps are not the
/// config's, or mm's own, is refused.
#[test]
fn a_member_joins_its_sandboxs_pid_and_user_namespaces() {
    let test = "a_member_joins_its_sandboxs_pid_and_user_namespaces";
    if !ready(test) {
        return;
    }
    be_subreaper();
    let maps =
        |host_id: u32| serde_json::json!([{"containerID": 0, "hostID": host_id, "size": 65536}]);
    let with_user = |config: &mut serde_json::Value, path: Option<&str>, host_id: u32| {
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|ns| ns["type"] != "user");
        namespaces.push(match path {
            Some(path) => serde_json::json!({"type": "user", "path": path}),
            None => serde_json::json!({"type": "user"}),
        });
        config["linux"]["uidMappings"] = maps(host_id);
        config["linux"]["gidMappings"] = maps(host_id);
    };
    let sandbox_dir = shared_tempdir();
    let sandbox = bundle(sandbox_dir.path(), &["sleep", "1000"]);
    // The container's root (uid 300000 on the host) reaches its rootfs through it.
    set_mode(&sandbox, 0o755);
    edit_config(&sandbox, |config| with_user(config, None, 300_000));
    let root = sandbox_dir.path().join("root");
    let out = sandbox_dir.path().join("out");
    let (ok, err) = oci(
        &root,
        &[
            "run",
            "--detach",
            "--bundle",
            sandbox.to_str().unwrap(),
            "pod-sandbox",
        ],
        &out,
    );
    assert!(ok, "the sandbox: {err}");
    let sandbox_pid = state(&root, "pod-sandbox")["pid"].as_i64().unwrap();
    let _sandbox = OnDrop(|| {
        let _ = oci(&root, &["delete", "--force", "pod-sandbox"], &out);
    });
    let pidns = format!("/proc/{sandbox_pid}/ns/pid");
    let userns = format!("/proc/{sandbox_pid}/ns/user");
    let inode = |path: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
    let member_dir = shared_tempdir();
    let member = bundle(
        member_dir.path(),
        &[
            "sh",
            "-c",
            "sleep 777 & echo pidns $(stat -L -c %i /proc/self/ns/pid); \
             echo userns $(stat -L -c %i /proc/self/ns/user) $(cat /proc/self/uid_map); \
             echo one $(tr '\\0' ' ' < /proc/1/cmdline); echo self $$; \
             grep ' /proc ' /proc/self/mountinfo; sleep 1000",
        ],
    );
    set_mode(&member, 0o755);
    edit_config(&member, |config| {
        for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "pid" {
                ns["path"] = pidns.clone().into();
            }
        }
        with_user(config, Some(&userns), 300_000);
    });
    let member_out = member_dir.path().join("out");
    let (ok, err) = oci(
        &root,
        &[
            "run",
            "--detach",
            "--bundle",
            member.to_str().unwrap(),
            "pod-member",
        ],
        &member_out,
    );
    assert!(ok, "the member: {err}");
    let member_pid = state(&root, "pod-member")["pid"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let said = loop {
        let said = std::fs::read_to_string(&member_out).unwrap_or_default();
        if said.contains(" /proc ") || std::time::Instant::now() > deadline {
            break said;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    println!("the member said:\n{said}");
    assert!(said.contains(&format!("pidns {}", inode(&pidns))), "{said}");
    assert!(
        said.contains(&format!("userns {} 0 300000 65536", inode(&userns))),
        "{said}"
    );
    assert!(said.contains("one sleep 1000"), "{said}");
    assert!(!said.contains("self 1\n"), "{said}");
    assert!(said.contains(" - proc "), "{said}");
    // exec joins the shared namespace: the sandbox's PID 1 is its PID 1 too.
    let exec_out = member_dir.path().join("exec-out");
    let (ok, _) = oci(
        &root,
        &[
            "exec",
            "pod-member",
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline",
        ],
        &exec_out,
    );
    assert!(
        ok,
        "exec: {}",
        std::fs::read_to_string(exec_out.with_extension("err")).unwrap_or_default()
    );
    let execd = std::fs::read_to_string(&exec_out).unwrap_or_default();
    assert!(execd.starts_with("sleep 1000"), "exec saw {execd}");
    // The member's process ends: its `sleep 777` goes with its cgroup.
    let left = |pid: i64| {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
            .filter(|p| cmdline(*p).starts_with("sleep 777"))
            .filter(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/pid")).ok()
                    == std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
            })
            .count()
    };
    assert_eq!(
        left(sandbox_pid),
        1,
        "the member's child is not in the sandbox's namespace"
    );
    let (ok, err) = oci(&root, &["kill", "pod-member", "KILL"], &member_out);
    assert!(ok, "kill: {err}");
    killed(member_pid);
    let (ok, err) = oci(&root, &["delete", "pod-member"], &member_out);
    assert!(ok, "delete: {err}");
    assert_eq!(
        left(sandbox_pid),
        0,
        "the member's child outlived it in the sandbox's namespace"
    );
    assert!(alive(sandbox_pid), "the sandbox went with its member");
    // A user namespace whose maps are not the config's is refused, naming both.
    edit_config(&member, |config| with_user(config, Some(&userns), 400_000));
    refused(
        &root,
        &member,
        "pod-member2",
        &member_out,
        "its uid map is 0:300000:65536, not the config's 0:400000:65536",
    );
    // So is mm's own (the host's): a container's user namespace is never its runtime's.
    edit_config(&member, |config| {
        with_user(config, Some("/proc/self/ns/user"), 0);
        config["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 0, "size": 4294967295u32}]);
        config["linux"]["gidMappings"] = config["linux"]["uidMappings"].clone();
    });
    refused(
        &root,
        &member,
        "pod-member3",
        &member_out,
        "it is mm's own user namespace",
    );
    let (ok, err) = oci(&root, &["kill", "pod-sandbox", "KILL"], &out);
    assert!(ok, "kill: {err}");
    killed(sandbox_pid);
}

/// `linux.sysctl`: parameters of the container's own network and IPC namespaces are
/// written by its PID 1 in its own /proc, and the host's stay as they were; one that is
/// not namespaced is refused by its path, with nothing created.
#[test]
fn sysctls_of_the_containers_own_namespaces_are_set() {
    let test = "sysctls_of_the_containers_own_namespaces_are_set";
    if !ready(test) {
        return;
    }
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "echo forward $(cat /proc/sys/net/ipv4/ip_forward) shmmax $(cat /proc/sys/kernel/shmmax)",
        ],
    );
    let host_shmmax = std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    assert_ne!(host_shmmax.trim(), "123456789");
    edit_config(&bundle, |config| {
        config["linux"]["sysctl"] =
            serde_json::json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"});
    });
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    let (ok, err) = oci(
        &root,
        &["run", "--bundle", bundle.to_str().unwrap(), "sysctl1"],
        &out,
    );
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    println!("the container said: {said}{err}");
    assert!(ok, "mm oci run: {err}");
    assert!(said.contains("forward 1 shmmax 123456789"), "{said}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(),
        host_shmmax,
        "the host's shmmax changed"
    );
    edit_config(&bundle, |config| {
        config["linux"]["sysctl"] = serde_json::json!({"kernel.panic": "1"});
    });
    refused(
        &root,
        &bundle,
        "sysctl2",
        &out,
        "linux.sysctl.kernel.panic: is not a parameter of a namespace",
    );
}

#[test]
fn devices_are_the_hosts_nodes_bound_and_checked() {
    let test = "devices_are_the_hosts_nodes_bound_and_checked";
    if !ready(test) {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        return skip(test, "the host has no /dev/fuse (no fuse module)");
    }
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "stat -c '%F %t:%T' /dev/fuse; (: < /dev/fuse) 2>/dev/null && echo opened || echo refused",
        ],
    );
    let fuse = serde_json::json!({"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
        "fileMode": 0o600, "uid": 0, "gid": 0});
    let allow = serde_json::json!({"allow": true, "type": "c", "major": 10, "minor": 229,
        "access": "rwm"});
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    let run_with = |id: &str, rules: serde_json::Value| {
        edit_config(&bundle, |config| {
            config["linux"]["devices"] = serde_json::json!([fuse]);
            config["linux"]["resources"]["devices"] = rules;
        });
        let _ = std::fs::remove_file(&out);
        let (ok, err) = oci(
            &root,
            &["run", "--bundle", bundle.to_str().unwrap(), id],
            &out,
        );
        let said = std::fs::read_to_string(&out).unwrap_or_default();
        println!("{id}: the container said: {said}{err}");
        assert!(ok, "mm oci run: {err}");
        said
    };
    // Podman's shape: deny all, then allow the device. A device node, usable. (mm
    // applies device rules through cgroup v1's devices controller only: on a v2 host a
    // rule allowing more than mm's own nodes is refused, so there are none.)
    let v1_devices = Path::new("/sys/fs/cgroup/devices/devices.allow").exists();
    let deny = serde_json::json!({"allow": false, "access": "rwm"});
    let rules = if v1_devices {
        serde_json::json!([deny, allow])
    } else {
        serde_json::json!([])
    };
    let said = run_with("dev1", rules);
    assert!(said.contains("character special file a:e5"), "{said}");
    assert!(said.contains("opened"), "{said}");
    // Without the allow rule the device controller refuses it.
    if v1_devices {
        let said = run_with("dev2", serde_json::json!([deny]));
        assert!(said.contains("character special file a:e5"), "{said}");
        assert!(said.contains("refused"), "{said}");
    }

    // A node the host does not have at that path, or a FIFO: refused by their paths.
    edit_config(&bundle, |config| {
        config["linux"]["devices"] = serde_json::json!([{"path": "/dev/fuse", "type": "c",
            "major": 10, "minor": 1}]);
    });
    refused(
        &root,
        &bundle,
        "dev3",
        &out,
        "linux.devices[0]: /dev/fuse: the host's node there is the character device 10:229, \
         not the character device 10:1 asked for",
    );
    edit_config(&bundle, |config| {
        config["linux"]["devices"] = serde_json::json!([{"path": "/dev/p", "type": "p"}]);
    });
    refused(
        &root,
        &bundle,
        "dev4",
        &out,
        "linux.devices[0].type: a FIFO in linux.devices is not supported by mm yet",
    );
}

/// `hooks`: createRuntime (and prestart) run from `create` once the process waits,
/// poststart from `start`, poststop from `delete`, each with the container's state on its
/// standard input; a createRuntime hook that fails fails the create with nothing left; the
/// hooks inside the container's namespaces are refused by their path.
#[test]
fn hooks_run_at_their_points_of_the_lifecycle() {
    let test = "hooks_run_at_their_points_of_the_lifecycle";
    if !ready(test) {
        return;
    }
    be_subreaper();
    let dir = shared_tempdir();
    let bundle = bundle(dir.path(), &["sleep", "1000"]);
    let record = |name: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}/{name}.json", dir.path().display())],
            "env": ["PATH=/usr/bin:/bin"],
            "timeout": 10
        })
    };
    // The hooks of the container's namespaces also say which mount namespace they ran in;
    // createContainer's path is the host's, startContainer's the container's (its rootfs
    // is written in place: /started.json is the bundle's rootfs/started.json).
    let in_container = |to: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {to}.json; readlink /proc/self/ns/mnt > {to}.mnt")],
            "env": ["PATH=/usr/bin:/bin"],
        })
    };
    let made = format!("{}/createContainer", dir.path().display());
    // createRuntime binds a directory into the container's root through its mount
    // namespace, at the root's path in the runtime's file system, as GPU hooks do: only
    // before pivot_root is that path the container's root. It also says whether
    // createContainer had run yet.
    let given = dir.path().join("given");
    std::fs::create_dir(&given).unwrap();
    std::fs::write(given.join("marker"), "from createRuntime").unwrap();
    std::fs::create_dir(bundle.join("rootfs/hooked-in")).unwrap();
    let d = dir.path().display();
    let create_runtime = serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!(
            "s=$(cat); printf %s \"$s\" > {d}/createRuntime.json; \
             if test -e {d}/createContainer.json; then echo after; else echo before; fi \
               > {d}/createRuntime.order; \
             pid=$(printf %s \"$s\" | sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); \
             nsenter -t \"$pid\" -m mount --bind {d}/given {}/rootfs/hooked-in",
            bundle.display()
        )],
        "env": ["PATH=/usr/bin:/bin:/usr/sbin:/sbin"],
        "timeout": 10
    });
    edit_config(&bundle, |config| {
        config["hooks"] = serde_json::json!({
            "prestart": [record("prestart")],
            "createRuntime": [create_runtime],
            "createContainer": [in_container(&made)],
            "startContainer": [in_container("/started")],
            "poststart": [record("poststart")],
            "poststop": [record("poststop")],
        });
    });
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    let bundle_arg = bundle.to_str().unwrap();
    let (ok, err) = oci(&root, &["create", "--bundle", bundle_arg, "hooked"], &out);
    assert!(ok, "create: {err}");
    // A failed check must not leave the container running for the next run.
    let _hooked = OnDrop(|| {
        let _ = oci(&root, &["delete", "--force", "hooked"], &out);
    });
    let seen = |name: &str| -> serde_json::Value {
        let path = dir.path().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("the {name} hook wrote nothing: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
    };
    let created = seen("createRuntime");
    println!("createRuntime got {created}");
    assert_eq!(created["id"], "hooked");
    assert_eq!(created["status"], "creating");
    let pid = created["pid"].as_i64().unwrap();
    assert!(pid > 0 && alive(pid));
    assert_eq!(seen("prestart")["status"], "creating");
    let order = std::fs::read_to_string(dir.path().join("createRuntime.order")).unwrap();
    assert_eq!(
        order.trim(),
        "before",
        "createRuntime ran after createContainer"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/root/hooked-in/marker")).unwrap(),
        "from createRuntime",
        "createRuntime's bind is not in the container's root"
    );
    let mnt = |path: PathBuf| std::fs::read_to_string(path).unwrap().trim().to_owned();
    let container_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let container_mnt = container_mnt.to_str().unwrap();
    let made = seen("createContainer");
    assert_eq!(
        (&made["status"], &made["pid"]),
        (&"creating".into(), &pid.into())
    );
    assert_eq!(made["bundle"], bundle_arg);
    assert_eq!(mnt(dir.path().join("createContainer.mnt")), container_mnt);
    assert!(!dir.path().join("poststart.json").exists());
    let started = bundle.join("rootfs/started.json");
    assert!(!started.exists(), "startContainer ran before start");
    let (ok, err) = oci(&root, &["start", "hooked"], &out);
    assert!(ok, "start: {err}");
    assert_eq!(seen("poststart")["status"], "running");
    // PID 1 ran it before its command: it is there once the command runs (`start`
    // returns once the process may go on, not once it has executed its command).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cmdline(pid).starts_with("sleep 1000") {
        assert!(std::time::Instant::now() < deadline, "{}", cmdline(pid));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let text = std::fs::read_to_string(&started).unwrap();
    let given: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&given["id"], &given["pid"]),
        (&"hooked".into(), &pid.into())
    );
    assert_eq!(mnt(bundle.join("rootfs/started.mnt")), container_mnt);
    let (ok, err) = oci(&root, &["kill", "hooked", "KILL"], &out);
    assert!(ok, "kill: {err}");
    killed(pid);
    assert!(!dir.path().join("poststop.json").exists());
    let (ok, err) = oci(&root, &["delete", "hooked"], &out);
    assert!(ok, "delete: {err}");
    let stopped = seen("poststop");
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["id"], "hooked");

    // A createRuntime hook that fails: the create fails, saying which, and leaves nothing.
    edit_config(&bundle, |config| {
        config["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/false"}]});
    });
    refused(
        &root,
        &bundle,
        "hooked2",
        &out,
        "the createRuntime hook /bin/false",
    );
    // So does a createContainer hook that fails.
    edit_config(&bundle, |config| {
        config["hooks"] = serde_json::json!({"createContainer": [{"path": "/bin/false"}]});
    });
    refused(
        &root,
        &bundle,
        "hooked3",
        &out,
        "run the createContainer hook /bin/false",
    );
    // A startContainer hook that fails ends the process before its command, saying why.
    edit_config(&bundle, |config| {
        config["hooks"] = serde_json::json!({"startContainer": [{"path": "/bin/false"}]});
    });
    let (ok, err) = oci(&root, &["create", "--bundle", bundle_arg, "hooked4"], &out);
    assert!(ok, "create: {err}");
    let pid = state(&root, "hooked4")["pid"].as_i64().unwrap();
    let (ok, err) = oci(&root, &["start", "hooked4"], &out);
    assert!(ok, "start: {err}");
    let status = reap(pid);
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 127)),
        "{status:?}"
    );
    let said = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert!(
        said.contains("run the startContainer hook /bin/false"),
        "{said}"
    );
    assert_eq!(state(&root, "hooked4")["status"], "stopped");
    let (ok, err) = oci(&root, &["delete", "hooked4"], &out);
    assert!(ok, "delete: {err}");
}

/// A bind's propagation and `linux.rootfsPropagation`, as root and as an ordinary user.
/// Kubernetes' `mountPropagation: HostToContainer` is an `rslave` bind; podman gives
/// every volume `rprivate`. A file system the host mounts below a bind's source after
/// `create` reaches the container through the `rslave` bind, not through the `rprivate`
/// one, and the root is what `rootfsPropagation` asks.
#[test]
fn mount_propagation_follows_the_config() {
    let test = "mount_propagation_follows_the_config";
    if !ready(test) {
        return;
    }
    propagation_story(None);
    propagation_story(Some(test_user("mm-test", Some(300_000))));
}

fn propagation_story(user: Option<TestUser>) {
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "echo follows $(ls /follows/sub); echo kept $(ls /kept/sub); \
             echo root $(awk '$5 == \"/\"' /proc/self/mountinfo)",
        ],
    );
    // The host's side: a shared mount of this test's own.
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    let sh = |script: &str| {
        let (o, _, stderr) = run({
            let mut c = Command::new("sh");
            c.args(["-ec", script]);
            c
        });
        assert!(o.status.success(), "{script}: {stderr}");
    };
    let at = source.to_str().unwrap().to_owned();
    sh(&format!(
        "mount -t tmpfs -o mode=0755 mm-test {at}; mount --make-shared {at}; mkdir {at}/sub"
    ));
    let _unmount = OnDrop(|| {
        let _ = Command::new("umount").args(["-R", &at]).status();
    });
    edit_config(&bundle, |config| {
        let mounts = config["mounts"].as_array_mut().unwrap();
        for (destination, propagation) in [("/follows", "rslave"), ("/kept", "rprivate")] {
            mounts.push(serde_json::json!({
                "destination": destination, "type": "bind", "source": source,
                "options": ["rbind", propagation]
            }));
        }
        config["linux"]["rootfsPropagation"] = "shared".into();
        if user.is_some() {
            rootless_config(config);
        }
    });
    let root = dir.path().join("state");
    let out = dir.path().join("out");
    std::fs::write(&out, "").unwrap();
    if let Some(user) = &user {
        user.give(dir.path());
    }
    let mode = if user.is_some() { "rootless" } else { "root" };
    let id = format!("mm-oci-propagation-{mode}");
    let oci_as = |args: &[&str]| {
        let mut command = match &user {
            Some(user) => {
                let mut c = user.mm(dir.path(), &["oci"]);
                c.env("MM_PATH", dir.path());
                c
            }
            None => {
                let mut c = Command::new(MM);
                c.arg("oci");
                c
            }
        };
        command.arg("--root").arg(&root).args(args);
        oci_run(command, &out)
    };
    let _cleanup = OnDrop(|| {
        let _ = oci_as(&["delete", "--force", &id]);
    });
    let (ok, err) = oci_as(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(ok, "{mode}: create: {err}");
    // After the container's mounts are made.
    sh(&format!(
        "mount -t tmpfs mm-test-sub {at}/sub; touch {at}/sub/flag"
    ));
    let (ok, err) = oci_as(&["start", &id]);
    assert!(ok, "{mode}: start: {err}");
    eventually("the container wrote its lines", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("root "))
    });
    let said = std::fs::read_to_string(&out).unwrap();
    println!("{mode}: the container said: {said}");
    assert!(said.lines().any(|l| l == "follows flag"), "{mode}: {said}");
    assert!(said.lines().any(|l| l == "kept"), "{mode}: {said}");
    let root_line = said.lines().find(|l| l.starts_with("root ")).unwrap();
    assert!(root_line.contains(" shared:"), "{mode}: {root_line}");
}

/// What an ordinary user's bundle needs beside a root one: a user namespace, and no
/// `gid=5` on devpts (not mapped when the user's map starts at 0).
fn rootless_config(config: &mut serde_json::Value) {
    let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.push(serde_json::json!({"type": "user"}));
    for mount in config["mounts"].as_array_mut().unwrap() {
        if let Some(options) = mount.get_mut("options").and_then(|o| o.as_array_mut()) {
            options.retain(|o| o != "gid=5");
        }
    }
}

/// `process.apparmorProfile`, which podman and containerd write into every config on a
/// host that enforces AppArmor. There, the container's process and what `exec` runs in it
/// are confined by it; on a host without AppArmor (this VM's kernel has none), the create
/// is refused by its path and leaves nothing, and so is an `exec --apparmor`.
#[test]
fn an_apparmor_profile_confines_the_process_or_is_refused() {
    let test = "an_apparmor_profile_confines_the_process_or_is_refused";
    if !ready(test) {
        return;
    }
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'));
    let dir = shared_tempdir();
    let bundle = bundle(
        dir.path(),
        &[
            "sh",
            "-c",
            "echo confined $(cat /proc/self/attr/current); exec sleep 1000",
        ],
    );
    let root = dir.path().join("state");
    let out = dir.path().join("out");
    let _cleanup = OnDrop(|| {
        for id in ["aa1", "aa2"] {
            let _ = oci(&root, &["delete", "--force", id], &dir.path().join("gone"));
        }
    });
    if !enabled {
        println!("{test}: this host's kernel does not enforce AppArmor: checking the refusals");
        edit_config(&bundle, |config| {
            config["process"]["apparmorProfile"] = "containers-default-0.50.1".into();
        });
        refused(
            &root,
            &bundle,
            "aa1",
            &out,
            "process.apparmorProfile: `containers-default-0.50.1`: AppArmor is not enabled on this host",
        );
        edit_config(&bundle, |config| {
            config["process"]
                .as_object_mut()
                .unwrap()
                .remove("apparmorProfile");
        });
        let (ok, err) = oci(
            &root,
            &[
                "run",
                "--detach",
                "--bundle",
                bundle.to_str().unwrap(),
                "aa2",
            ],
            &out,
        );
        assert!(ok, "run: {err}");
        let (code, _, stderr) = exec(
            &root,
            &["--apparmor", "containers-default-0.50.1", "aa2", "true"],
        );
        assert_ne!(code, Some(0), "exec --apparmor was taken");
        assert!(
            stderr.contains("process.apparmorProfile")
                && stderr.contains("AppArmor is not enabled"),
            "{stderr}"
        );
        return;
    }
    // A profile the host has loaded.
    let loaded =
        std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap_or_default();
    let Some(profile) = loaded.lines().find_map(|l| l.strip_suffix(" (enforce)")) else {
        return skip(
            test,
            "AppArmor is enabled but no profile is loaded in enforce mode",
        );
    };
    edit_config(&bundle, |config| {
        config["process"]["apparmorProfile"] = profile.into();
    });
    let (ok, err) = oci(
        &root,
        &[
            "run",
            "--detach",
            "--bundle",
            bundle.to_str().unwrap(),
            "aa2",
        ],
        &out,
    );
    assert!(ok, "run: {err}");
    eventually("the container wrote its line", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("confined "))
    });
    let said = std::fs::read_to_string(&out).unwrap();
    assert!(said.contains(&format!("confined {profile} ")), "{said}");
    let (code, stdout, stderr) = exec(&root, &["aa2", "cat", "/proc/self/attr/current"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with(profile), "exec: {stdout}");
}
