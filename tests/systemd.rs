//! systemd integration against real components: systemd-machined on a real system bus
//! (started by the harness when it is not running), `mm logs`, and the systemd verbs
//! without a service manager. The unit files are tested in tests/units.rs.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
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

    /// A busybox machine of the given body.
    fn define_body(&mut self, name: &str, body: &str) {
        let text = format!(
            "[image]\nsource = \"oci:{}:latest\"\n{body}\n",
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
    String::from_utf8_lossy(&machinectl_output(args).stdout).into_owned()
}

/// `machinectl ARGS` as [`machinectl`] runs it, with its status and both outputs.
fn machinectl_output(args: &[&str]) -> Output {
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec machinectl {}",
        args.join(" ")
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare runs")
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

/// A bus of the test's own on which machined is activatable, but whose policy refuses
/// every message to it: the registrar's step and errno (EACCES) reach the user.
#[test]
fn a_registration_the_bus_refuses_says_the_step_and_errno() {
    let test = "a_registration_the_bus_refuses_says_the_step_and_errno";
    if !is_root() {
        return skip(test, "registering with systemd-machined needs root");
    }
    if !Path::new("/usr/bin/dbus-daemon").exists() {
        return skip(test, "no /usr/bin/dbus-daemon (Debian's dbus package)");
    }
    let mut machines = Machines::new();
    machines.define("sd-refused");
    let dir = machines.dir.path().to_owned();
    let services = dir.join("services");
    std::fs::create_dir(&services).unwrap();
    std::fs::write(
        services.join("org.freedesktop.machine1.service"),
        "[D-BUS Service]\nName=org.freedesktop.machine1\nExec=/bin/false\n",
    )
    .unwrap();
    let socket = dir.join("bus");
    let config = dir.join("bus.conf");
    std::fs::write(
        &config,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n\
             <type>session</type>\n<listen>unix:path={}</listen>\n<auth>EXTERNAL</auth>\n\
             <servicedir>{}</servicedir>\n<policy context=\"default\">\n\
             <allow send_destination=\"*\"/>\n<allow eavesdrop=\"true\"/>\n<allow own=\"*\"/>\n\
             <deny send_destination=\"org.freedesktop.machine1\"/>\n</policy>\n</busconfig>\n",
            socket.display(),
            services.display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new("/usr/bin/dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .arg("--nofork")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon runs");
    let _daemon = OnDrop(move || {
        let _ = daemon.kill();
        let _ = daemon.wait();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the test's bus did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut start = mm(&dir, &["start", "--no-systemd", "sd-refused"]);
    start.env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}", socket.display()),
    );
    let (out, stdout, stderr) = run(start);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "sd-refused is not registered with systemd-machined: \
             register sd-refused with systemd-machined: "
        ),
        "{stderr}"
    );
    assert!(stderr.contains("AccessDenied"), "{stderr}");
    assert!(
        stderr.contains("Permission denied (os error 13)"),
        "{stderr}"
    );
    assert_eq!(machines.status("sd-refused")["state"], "running");
}

/// Waits (up to 30 s) until `done` holds.
fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn machinectl_reboot_restarts_a_booted_machine_and_copy_to_reaches_its_tmp() {
    let test = "machinectl_reboot_restarts_a_booted_machine_and_copy_to_reaches_its_tmp";
    if !ready(test) {
        return;
    }
    let mut machines = Machines::new();
    let shared = machines.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    set_mode(&shared, 0o777);
    let inittab = machines.dir.path().join("inittab");
    // machinectl reboot sends SIGINT to the leader: busybox init's ctrlaltdel.
    std::fs::write(
        &inittab,
        "::sysinit:/bin/sh -c 'echo boot >> /shared/boots'\n\
         ::ctrlaltdel:/bin/reboot\n",
    )
    .unwrap();
    machines.define_body(
        "sd-reboot",
        &format!(
            "[exec]\nboot = true\n[storage]\n\
             binds = [{{ source = \"{}\", target = \"/shared\" }}, \
             {{ source = \"{}\", target = \"/etc/inittab\", readonly = true }}]",
            shared.display(),
            inittab.display()
        ),
    );
    let boots = || std::fs::read_to_string(shared.join("boots")).unwrap_or_default();
    machines.ok(&["start", "sd-reboot"]);
    until("the first boot", || boots() == "boot\n");
    let first = machines.status("sd-reboot")["leader"].as_i64().unwrap();
    let object = machined_object("sd-reboot").expect("machined has the machine");
    assert_eq!(machine_property(&object, "Leader"), format!("u {first}"));

    let out = machinectl_output(&["reboot", "sd-reboot"]);
    assert!(out.status.success(), "machinectl reboot: {out:?}");
    until("the second boot", || boots() == "boot\nboot\n");
    // The supervisor records the new PID 1 a moment after it started booting.
    until("the status names the new PID 1", || {
        machines.status("sd-reboot")["leader"].as_i64() != Some(first)
    });
    let second = machines.status("sd-reboot")["leader"].as_i64().unwrap();
    assert_ne!(second, first);
    // Registered again, with the new leader.
    until("machined has the new leader", || {
        machined_object("sd-reboot")
            .is_some_and(|o| machine_property(&o, "Leader") == format!("u {second}"))
    });

    // machined's CopyTo, as host root through /proc/LEADER/root, into the machine's tmpfs.
    let file = machines.dir.path().join("copied");
    std::fs::write(&file, "copied in\n").unwrap();
    for dir in ["/tmp", "/run", "/dev/shm"] {
        let to = format!("{dir}/copied");
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &format!(
                    "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && \
                     exec machinectl copy-to sd-reboot {} {to}",
                    file.display()
                ),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "machinectl copy-to {to}: {out:?}");
        let (inside, _) = machines.ok(&["exec", "sd-reboot", "cat", &to]);
        assert_eq!(inside, "copied in\n");
    }
    machines.ok(&["stop", "sd-reboot", "--timeout", "1"]);
    assert_eq!(machined_object("sd-reboot"), None);
}
