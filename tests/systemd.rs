//! systemd integration against real components: systemd-machined on a real system bus
//! (started by the harness when it is not running), the unit files checked by
//! `systemd-analyze verify`, and a real systemd user manager that runs `mm@NAME.service`
//! for an ordinary user, as it would in a login session.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Machines defined in a temporary directory, stopped when dropped.
struct Machines {
    dir: tempfile::TempDir,
    names: Vec<String>,
}

impl Machines {
    fn new() -> Self {
        let dir = shared_tempdir();
        std::fs::create_dir_all(dir.path().join("machines")).unwrap();
        Self {
            dir,
            names: Vec::new(),
        }
    }

    /// A busybox machine that prints a line, then sleeps.
    fn define(&mut self, name: &str) {
        let text = format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \
             \"echo hello from {name}; exec sleep 1000\"]\n",
            repo().join("images/busybox").display()
        );
        std::fs::write(self.dir.path().join(format!("machines/{name}.toml")), text).unwrap();
        self.names.push(name.to_owned());
    }

    fn mm(&self, args: &[&str]) -> (Output, String, String) {
        run(mm(self.dir.path(), args))
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let (out, stdout, stderr) = self.mm(args);
        assert!(out.status.success(), "mm {args:?}: {stdout}{stderr}");
        (stdout, stderr)
    }

    fn status(&self, name: &str) -> serde_json::Value {
        let (_, stdout, _) = self.mm(&["status", name, "--json"]);
        serde_json::from_str(&stdout).unwrap()
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = mm(self.dir.path(), &["stop", name, "--timeout", "1"]).output();
        }
    }
}

fn ready(test: &str) -> bool {
    if !is_root() {
        skip(test, "registering with systemd-machined needs root");
        return false;
    }
    if let Err(why) = system_bus_with_machined() {
        skip(test, &why);
        return false;
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run ./scripts/setup first"
    );
    true
}

fn busctl(args: &[&str]) -> Output {
    Command::new("busctl")
        .arg("--system")
        .args(args)
        .output()
        .expect("busctl runs")
}

/// machined's object for `name`, if it has one.
fn machined_object(name: &str) -> Option<String> {
    let out = busctl(&[
        "call",
        "org.freedesktop.machine1",
        "/org/freedesktop/machine1",
        "org.freedesktop.machine1.Manager",
        "GetMachine",
        "s",
        name,
    ]);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("No machine"), "GetMachine {name}: {stderr}");
        return None;
    }
    // `o "/org/freedesktop/machine1/machine/NAME"`
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(stdout.split('"').nth(1).unwrap().to_owned())
}

/// One property of a machine as busctl prints it, such as `u 4242` or `s "mm"`.
fn machine_property(object: &str, property: &str) -> String {
    let out = busctl(&[
        "get-property",
        "org.freedesktop.machine1",
        object,
        "org.freedesktop.machine1.Machine",
        property,
    ]);
    assert!(out.status.success(), "{property}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// machinectl insists on a systemd-booted host (`/run/systemd/system`): it gets one in a
/// private mount namespace, never on the host.
fn machinectl(args: &[&str]) -> String {
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec machinectl {}",
        args.join(" ")
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_started_machine_is_registered_with_machined_until_it_stops() {
    let test = "a_started_machine_is_registered_with_machined_until_it_stops";
    if !ready(test) {
        return;
    }
    let mut machines = Machines::new();
    machines.define("sd-registered");
    let (_, stderr) = machines.ok(&["start", "sd-registered"]);
    assert!(!stderr.contains("not registered"), "{stderr}");
    let status = machines.status("sd-registered");
    let leader = status["leader"].as_i64().unwrap();

    let object = machined_object("sd-registered").expect("machined has the machine");
    assert_eq!(machine_property(&object, "Leader"), format!("u {leader}"));
    assert_eq!(machine_property(&object, "Class"), "s \"container\"");
    assert_eq!(machine_property(&object, "Service"), "s \"mm\"");
    let root = machines.dir.path().join("state/run/sd-registered/root");
    assert_eq!(
        machine_property(&object, "RootDirectory"),
        format!("s \"{}\"", root.display())
    );
    // machined derived the unit from the leader's cgroup.
    assert_eq!(
        machine_property(&object, "Unit"),
        "s \"mm-sd-registered.scope\""
    );
    // The id is stable: the plan's.
    let (plan, _) = machines.ok(&["plan", "sd-registered", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let id = plan["plan"]["registration"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bytes: Vec<String> = (0..16)
        .map(|i| {
            u8::from_str_radix(&id[2 * i..2 * i + 2], 16)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        machine_property(&object, "Id"),
        format!("ay 16 {}", bytes.join(" "))
    );

    let list = machinectl(&["list", "--no-legend"]);
    let line = list
        .lines()
        .find(|l| l.starts_with("sd-registered "))
        .unwrap_or_else(|| panic!("machinectl list: {list}"));
    assert!(
        line.contains("container") && line.contains(" mm "),
        "{line}"
    );
    let shown = machinectl(&["status", "sd-registered", "--no-pager"]);
    assert!(shown.contains(&format!("Leader: {leader}")), "{shown}");
    assert!(shown.contains("Service: mm; class container"), "{shown}");

    machines.ok(&["stop", "sd-registered"]);
    assert_eq!(machined_object("sd-registered"), None);
    assert!(!machinectl(&["list", "--no-legend"]).contains("sd-registered "));
}

#[test]
fn a_killed_supervisor_is_unregistered_by_the_next_command() {
    let test = "a_killed_supervisor_is_unregistered_by_the_next_command";
    if !ready(test) {
        return;
    }
    let mut machines = Machines::new();
    machines.define("sd-killed");
    machines.ok(&["start", "sd-killed"]);
    let supervisor = machines.status("sd-killed")["supervisor"].as_i64().unwrap();
    assert!(machined_object("sd-killed").is_some());
    let killed = Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The supervisor is gone; its registration stays until an mm command looks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{supervisor}")).exists() {
        assert!(Instant::now() < deadline, "the supervisor outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (out, stdout, _) = machines.mm(&["list"]);
    assert!(out.status.success());
    assert!(stdout.contains("sd-killed"), "{stdout}");
    assert_eq!(machined_object("sd-killed"), None, "mm list reconciled");
    let status = machines.status("sd-killed");
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["crashed"], true, "{status}");
    // And it starts again, registered anew.
    machines.ok(&["start", "sd-killed"]);
    assert!(machined_object("sd-killed").is_some());
}

#[test]
fn without_machined_a_machine_runs_and_says_once_that_it_is_not_registered() {
    let test = "without_machined_a_machine_runs_and_says_once_that_it_is_not_registered";
    if !ready(test) {
        return;
    }
    let mut machines = Machines::new();
    machines.define("sd-nobus");
    let mut start = mm(machines.dir.path(), &["start", "sd-nobus"]);
    start.env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}/no-bus", machines.dir.path().display()),
    );
    let (out, stdout, stderr) = run(start);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stderr
            .matches("is not registered with systemd-machined")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("not reachable"), "{stderr}");
    assert_eq!(machined_object("sd-nobus"), None);
    assert_eq!(machines.status("sd-nobus")["state"], "running");
    let (_, stderr) = machines.ok(&["stop", "sd-nobus"]);
    assert!(stderr.is_empty(), "stop says nothing more: {stderr}");
}

#[test]
fn mm_logs_shows_what_a_started_machine_wrote() {
    let test = "mm_logs_shows_what_a_started_machine_wrote";
    if !is_root() {
        return skip(
            test,
            "starting machines here needs root (see tests/rootless.rs)",
        );
    }
    let mut machines = Machines::new();
    machines.define("sd-logs");
    let (out, _, stderr) = machines.mm(&["logs", "sd-logs"]);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(stderr.contains("no console log"), "{stderr}");
    machines.ok(&["start", "sd-logs"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (logs, _) = machines.ok(&["logs", "sd-logs", "-n", "1"]);
        // The console is a terminal: its lines end in CR LF.
        if logs.trim_end() == "hello from sd-logs" {
            break;
        }
        assert!(Instant::now() < deadline, "mm logs: {logs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // --follow ends when the machine stops: stopped once it has shown the line (so it
    // really follows by then), it must end by itself.
    let mut follow = KillOnDrop(
        mm(machines.dir.path(), &["logs", "sd-logs", "--follow"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (lines, shown) = std::sync::mpsc::channel();
    let stdout = follow.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match shown.recv_timeout(left) {
            Ok(line) if line.trim_end() == "hello from sd-logs" => break,
            Ok(_) => {}
            Err(e) => panic!("mm logs --follow did not show the machine's line: {e}"),
        }
    }
    machines.ok(&["stop", "sd-logs"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while follow.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "mm logs --follow outlived the machine"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = follow.0.wait().unwrap();
    let output = reader.join().unwrap();
    assert!(status.success());
    assert!(output.contains("hello from sd-logs"));
}

/// `units/mm@.service` (system) or `units/user/mm@.service`, with ExecStart pointing at
/// `mm`, written into `dir`.
fn unit_with_binary(unit: &str, dir: &Path, mm: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(unit)).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/mm "), "{unit}: {text}");
    let path = dir.join("mm@.service");
    std::fs::write(
        &path,
        text.replace("/usr/bin/mm ", &format!("{} ", mm.display())),
    )
    .unwrap();
    path
}

#[test]
fn the_units_verify_cleanly() {
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        return skip(
            "the_units_verify_cleanly",
            "systemd-analyze is not installed (package systemd)",
        );
    }
    for (unit, scope) in [
        ("units/mm@.service", "--system"),
        ("units/user/mm@.service", "--user"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        unit_with_binary(unit, dir.path(), Path::new(MM));
        let out = Command::new("systemd-analyze")
            .args([scope, "verify", "--man=no", "mm@web.service"])
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.is_empty(), "{unit}: {said}");
    }
}

/// A real `systemd --user` for a test user, as a login session would have it, stopped
/// when dropped. It runs in a private mount namespace that says "booted with systemd"
/// (/run/systemd/system) and in cgroups of its own, which are removed afterwards.
struct UserManager {
    child: Child,
    runtime: tempfile::TempDir,
    cgroups: Vec<PathBuf>,
}

impl UserManager {
    fn start(user: &TestUser) -> Result<Self, String> {
        for tool in ["/lib/systemd/systemd", "/usr/bin/dbus-daemon"] {
            if !Path::new(tool).exists() {
                return Err(format!("{tool} is not installed"));
            }
        }
        if !Path::new("/usr/lib/systemd/user/dbus.socket").exists() {
            return Err("the user bus needs the package dbus-user-session".to_owned());
        }
        let runtime = shared_tempdir();
        set_mode(runtime.path(), 0o700);
        user.give(runtime.path());
        let unit = format!(
            "user.slice/user-{uid}.slice/user@{uid}.service",
            uid = user.uid
        );
        let mut cgroups = Vec::new();
        for tree in [
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let is_cgroup = Path::new(tree).join("cgroup.procs").exists();
            if is_cgroup && !cgroups.iter().any(|c: &PathBuf| c.starts_with(tree)) {
                let dir = Path::new(tree).join(&unit);
                user.give(&dir);
                cgroups.push(dir);
            }
        }
        let join: String = cgroups
            .iter()
            .map(|c| format!("echo $$ > {}/cgroup.procs; ", c.display()))
            .collect();
        let script = format!(
            "{join}mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && \
             exec setpriv --reuid {name} --regid users --init-groups -- \
             env -i HOME={home} USER={name} XDG_RUNTIME_DIR={runtime} \
             /lib/systemd/systemd --user",
            name = user.name,
            home = user.home.display(),
            runtime = runtime.path().display(),
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let manager = Self {
            child,
            runtime,
            cgroups,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !manager.runtime.path().join("bus").exists()
            || !manager.runtime.path().join("systemd/private").exists()
        {
            if Instant::now() > deadline {
                return Err("systemd --user did not come up in 20 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(manager)
    }

    /// `PROGRAM ARGS` as the user, in its session's environment.
    fn command(&self, user: &TestUser, program: &Path, args: &[&str]) -> Command {
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
            .arg(program)
            .args(args)
            .current_dir("/")
            .env_clear()
            .env("HOME", &user.home)
            .env("USER", user.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}/bus", self.runtime.path().display()),
            );
        command
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SIGTERM: the manager stops its units, then exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for cgroup in &self.cgroups {
            remove_cgroup_tree(cgroup);
        }
    }
}

/// Removes a cgroup and its children, deepest first, and its now empty parents.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
    for parent in dir.ancestors().skip(1).take(2) {
        let _ = std::fs::remove_dir(parent);
    }
}

#[test]
fn a_users_machine_runs_as_a_unit_of_the_users_systemd_manager() {
    let test = "a_users_machine_runs_as_a_unit_of_the_users_systemd_manager";
    if !is_root() {
        return skip(test, "creating users and their service manager needs root");
    }
    assert!(
        default_image_built(),
        "images/busybox is missing: run ./scripts/setup first"
    );
    let user = test_user("mm-unit");
    // Its own state, as a fresh login would have it.
    for dir in [".config", ".local/share/mm"] {
        let _ = std::fs::remove_dir_all(user.home.join(dir));
    }
    let images = shared_tempdir();
    copy_examples(images.path());
    let machines = user.home.join(".config/mm/machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("uweb.toml"),
        format!(
            "[image]\nsource = \"oci:{}/images/busybox:latest\"\n[exec]\n\
             command = [\"/bin/sh\", \"-c\", \"echo hello from uweb; exec sleep 1000\"]\n",
            images.path().display()
        ),
    )
    .unwrap();
    let units = user.home.join(".config/systemd/user");
    std::fs::create_dir_all(&units).unwrap();
    let mm = shared_binary();
    unit_with_binary("units/user/mm@.service", &units, mm);
    user.give(&user.home.join(".config"));

    let manager = match UserManager::start(&user) {
        Ok(manager) => manager,
        Err(why) => return skip(test, &why),
    };
    let as_user = |program: &Path, args: &[&str]| run(manager.command(&user, program, args));
    let mm_ok = |args: &[&str]| {
        let (out, stdout, stderr) = as_user(mm, args);
        assert!(out.status.success(), "mm {args:?}: {stdout}{stderr}");
        (stdout, stderr)
    };
    let systemctl = |args: &[&str]| {
        let mut all = vec!["--user"];
        all.extend_from_slice(args);
        as_user(Path::new("/usr/bin/systemctl"), &all).1
    };

    let (stdout, stderr) = mm_ok(&["start", "uweb"]);
    assert!(stdout.contains("started as mm@uweb.service"), "{stdout}");
    // machined (252) takes root's machines only: said once, plainly.
    assert_eq!(
        stderr
            .matches("not registered with systemd-machined")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        systemctl(&["is-active", "mm@uweb.service"]).trim(),
        "active"
    );
    let main_pid = systemctl(&["show", "--property=MainPID", "--value", "mm@uweb.service"]);
    let (status, _) = mm_ok(&["status", "uweb", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["unit"], "mm@uweb.service", "{status}");
    assert_eq!(
        status["supervisor"].to_string(),
        main_pid.trim(),
        "the unit's main process is mm's supervisor"
    );
    // The machine is in the unit's cgroup.
    let leader = status["leader"].as_i64().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{leader}/cgroup")).unwrap();
    assert!(cgroup.contains("/mm@uweb.service"), "{cgroup}");
    let (inside, _) = mm_ok(&["exec", "uweb", "--", "id", "-u"]);
    assert_eq!(inside.trim(), "0");
    let (out, _, _) = as_user(mm, &["start", "uweb"]);
    assert_eq!(out.status.code(), Some(75), "a second start is refused");

    let (stdout, _) = mm_ok(&["stop", "uweb"]);
    assert!(stdout.contains("stopped (mm@uweb.service)"), "{stdout}");
    assert_eq!(
        systemctl(&["is-active", "mm@uweb.service"]).trim(),
        "inactive"
    );
    let (out, _, _) = as_user(mm, &["status", "uweb"]);
    assert_eq!(out.status.code(), Some(3));

    let link = units.join("default.target.wants/mm@uweb.service");
    let (stdout, _) = mm_ok(&["enable", "uweb"]);
    assert!(stdout.contains("Created symlink"), "{stdout}");
    assert!(link.is_symlink(), "{}", link.display());
    assert_eq!(
        systemctl(&["is-enabled", "mm@uweb.service"]).trim(),
        "enabled"
    );
    mm_ok(&["disable", "uweb", "--now"]);
    assert!(!link.is_symlink());

    // --no-systemd: mm's supervisor detaches by itself, as on a host without systemd.
    let (stdout, _) = mm_ok(&["start", "uweb", "--no-systemd"]);
    assert!(!stdout.contains("mm@uweb.service"), "{stdout}");
    assert_eq!(
        systemctl(&["is-active", "mm@uweb.service"]).trim(),
        "inactive"
    );
    mm_ok(&["stop", "uweb"]);
}

#[test]
fn without_a_service_manager_the_systemd_verbs_say_why() {
    let test = "without_a_service_manager_the_systemd_verbs_say_why";
    if Path::new("/run/systemd/system").exists() {
        return skip(test, "systemd runs this host");
    }
    if !is_root() {
        return skip(test, "an ordinary user may have a systemd user manager");
    }
    let mut machines = Machines::new();
    machines.define("sd-plain");
    for verb in ["enable", "disable"] {
        let (out, _, stderr) = machines.mm(&[verb, "sd-plain"]);
        assert_eq!(out.status.code(), Some(69), "mm {verb}: {stderr}");
        assert!(stderr.contains("needs systemd"), "mm {verb}: {stderr}");
    }
    let (out, _, stderr) = machines.mm(&["run", "--keep-unit", "sd-plain"]);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("not running as a systemd service"),
        "{stderr}"
    );
}
