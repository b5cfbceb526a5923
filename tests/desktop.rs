//! `[desktop]` passthroughs: real clients inside a machine against real servers on the host
//! (Xvfb + xdpyinfo, weston headless + wayland-info, pulseaudio + pactl, ssh-agent +
//! ssh-add), as root and as the harness's rootless user; a key
//! turned off leaves nothing inside; GPU and NVIDIA at plan level on fixture hosts, and the
//! clear error on this host, which has neither.
//!
//! The session bus is tested at plan level only: dbus-daemon's EXTERNAL check compares the
//! uid a client claims (its uid inside) with its socket's (outside), which differ unless the
//! machine's users are the host's (keep_id).
//!
//! The servers run as the host user the machine's root is: the test user rootless (root
//! inside is that user), and, as root, the machine's own first id (root's machines never
//! share the host's ids; a machine whose users are the host's is what `keep_id` gives).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const ALL_ON: &str = "[desktop]\nwayland = true\nx11 = true\npulseaudio = true\nssh_agent = true\n";

/// The Debian 12 image of the `dev` example (scripts/build-debian-image), which has the
/// clients: x11-utils, wayland-utils, pulseaudio-utils, openssh-client, dbus.
fn client_image() -> PathBuf {
    debian_image().unwrap_or_else(|why| panic!("the Debian image: {why}"))
}

fn definition(image: &Path, desktop: &str) -> String {
    format!(
        "[image]\nsource = \"oci:{}:12\"\n[exec]\ncommand = [\"sleep\", \"infinity\"]\n{desktop}",
        image.display()
    )
}

fn tools_missing() -> Option<String> {
    for tool in ["Xvfb", "weston", "pulseaudio", "ssh-agent", "mmdebstrap"] {
        let found = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .any(|d| d.join(tool).exists());
        if !found {
            return Some(format!(
                "{tool} is not installed (scripts/setup installs it)"
            ));
        }
    }
    None
}

/// The servers of one session, as host user `uid`, in a directory of their own; killed
/// when dropped.
struct Session {
    dir: tempfile::TempDir,
    /// XDG_RUNTIME_DIR, the user's, 0700.
    run: PathBuf,
    children: Vec<KillOnDrop>,
    display: u32,
    /// What the caller's environment says about them, for `mm start`.
    env: Vec<(String, String)>,
    /// Of the key in the agent, as `ssh-keygen -l` prints it.
    fingerprint: String,
}

fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--", program]);
    command
}

fn wait_for_socket(path: &Path, child: &mut KillOnDrop) {
    use std::os::unix::fs::FileTypeExt;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the server for {} exited: {status}", path.display());
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within 20 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free X display number: no socket and no lock file for it, and never one another
/// test of this file was given (two tests at once had both found the same one free, and
/// one's client then met the other's server).
fn free_display() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(200);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(n < 400, "a free X display");
        if !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            return n;
        }
    }
}

/// An Xauthority file with one wildcard (FamilyWild) MIT-MAGIC-COOKIE-1 for `display`.
fn xauthority(path: &Path, display: u32) {
    let mut cookie = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut cookie,
    )
    .unwrap();
    let mut bytes = vec![0xff, 0xff];
    for field in [
        &b""[..],
        display.to_string().as_bytes(),
        b"MIT-MAGIC-COOKIE-1",
        &cookie,
    ] {
        bytes.extend((field.len() as u16).to_be_bytes());
        bytes.extend(field);
    }
    std::fs::write(path, bytes).unwrap();
}

impl Session {
    fn start(uid: u32, gid: u32) -> Self {
        let dir = shared_tempdir();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown(dir.path(), uid, gid);
        chown(&run, uid, gid);
        let mut children = Vec::new();
        let home = dir.path().to_owned();
        let spawn = |command: &mut Command| {
            KillOnDrop(
                command
                    .env_clear()
                    .env("HOME", &home)
                    .env("XDG_RUNTIME_DIR", &run)
                    .env("PATH", "/usr/bin:/bin")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        };
        // X11: Xvfb on a free display, with a cookie.
        std::fs::create_dir_all("/tmp/.X11-unix").unwrap();
        std::fs::set_permissions("/tmp/.X11-unix", std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let display = free_display();
        let auth = dir.path().join("Xauthority");
        xauthority(&auth, display);
        chown(&auth, uid, gid);
        let mut x = spawn(
            as_user(uid, gid, "Xvfb")
                .arg(format!(":{display}"))
                .args(["-nolisten", "tcp", "-auth"])
                .arg(&auth),
        );
        wait_for_socket(Path::new(&format!("/tmp/.X11-unix/X{display}")), &mut x);
        children.push(x);
        // Wayland: weston, headless.
        let mut weston = spawn(as_user(uid, gid, "weston").args([
            "--backend=headless-backend.so",
            "--socket=wayland-mm",
            "--idle-time=0",
        ]));
        wait_for_socket(&run.join("wayland-mm"), &mut weston);
        children.push(weston);
        // PulseAudio, with its native socket where clients look.
        let native = run.join("pulse/native");
        let mut pulse = spawn(as_user(uid, gid, "pulseaudio").args([
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disable-shm",
            "--load=module-null-sink",
            &format!(
                "--load=module-native-protocol-unix socket={}",
                native.display()
            ),
        ]));
        wait_for_socket(&native, &mut pulse);
        children.push(pulse);
        // ssh-agent, holding a key made here.
        let agent = run.join("agent.sock");
        let mut ssh = spawn(
            as_user(uid, gid, "ssh-agent")
                .arg("-D")
                .arg("-a")
                .arg(&agent),
        );
        wait_for_socket(&agent, &mut ssh);
        children.push(ssh);
        let key = dir.path().join("id_ed25519");
        // Made and added by root, whom the agent also serves (the user has no account).
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(added.success());
        let listed = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&key)
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
        let text = |p: &Path| p.display().to_string();
        let env = vec![
            ("XDG_RUNTIME_DIR".to_owned(), text(&run)),
            ("WAYLAND_DISPLAY".to_owned(), "wayland-mm".to_owned()),
            ("DISPLAY".to_owned(), format!(":{display}")),
            ("XAUTHORITY".to_owned(), text(&auth)),
            ("SSH_AUTH_SOCK".to_owned(), text(&agent)),
        ];
        Self {
            dir,
            run,
            children,
            display,
            env,
            fingerprint,
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// Each client inside reaches its server: what each printed, checked.
fn clients_reach_their_servers(session: &Session, exec: &dyn Fn(&[&str]) -> (bool, String)) {
    let (ok, out) = exec(&["xdpyinfo"]);
    assert!(ok, "xdpyinfo: {out}");
    assert!(
        out.contains(&format!("name of display:    :{}", session.display)),
        "{out}"
    );
    let (ok, out) = exec(&["wayland-info"]);
    assert!(ok && out.contains("wl_compositor"), "wayland-info: {out}");
    let (ok, out) = exec(&["pactl", "info"]);
    assert!(
        ok && out.contains("Server Name: pulseaudio"),
        "pactl info: {out}"
    );
    let (ok, out) = exec(&["ssh-add", "-l"]);
    assert!(
        ok && out.contains(&session.fingerprint),
        "ssh-add -l: {out}"
    );
    let (ok, out) = exec(&["sh", "-c", "ls /run/host/desktop; env | sort"]);
    assert!(ok, "{out}");
    for line in [
        "WAYLAND_DISPLAY=/run/host/desktop/wayland",
        "PULSE_SERVER=unix:/run/host/desktop/pulse-native",
        "SSH_AUTH_SOCK=/run/host/desktop/ssh-agent",
        "XAUTHORITY=/run/host/desktop/Xauthority",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l == format!("DISPLAY=:{}", session.display)),
        "{out}"
    );
}

#[test]
fn real_clients_reach_the_hosts_servers_as_root() {
    let test = "real_clients_reach_the_hosts_servers_as_root";
    if !is_root() {
        return skip(test, "booting root's machines needs root");
    }
    if let Some(why) = tools_missing() {
        panic!("{test}: {why}");
    }
    let image = client_image();
    let mut m = Machines::new();
    let machines = m.dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(machines.join("desk.toml"), definition(&image, "")).unwrap();
    m.names.push("desk".to_owned());
    // The machine's first id outside, recorded at its first start and kept.
    m.ok(&["start", "desk"]);
    let map = m.ok(&["exec", "desk", "--", "cat", "/proc/self/uid_map"]);
    let base: u32 = map.split_whitespace().nth(1).unwrap().parse().unwrap();
    m.ok(&["stop", "desk"]);
    let session = Session::start(base, base);
    std::fs::write(machines.join("desk.toml"), definition(&image, ALL_ON)).unwrap();
    let mut start = m.command(&["start", "desk"]);
    start.envs(session.env.iter().map(|(k, v)| (k, v)));
    let (out, stdout, stderr) = run(start);
    assert!(out.status.success(), "{stdout}{stderr}");
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "desk", "--"];
        all.extend(args);
        let (out, stdout, stderr) = m.mm(&all);
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    clients_reach_their_servers(&session, &exec);

    // The same machine with the keys off: nothing of the session inside, whatever the
    // caller's environment says.
    m.ok(&["stop", "desk"]);
    std::fs::write(machines.join("desk.toml"), definition(&image, "")).unwrap();
    let mut start = m.command(&["start", "desk"]);
    start.envs(session.env.iter().map(|(k, v)| (k, v)));
    let (out, stdout, stderr) = run(start);
    assert!(out.status.success(), "{stdout}{stderr}");
    let script = format!(
        "test -e /run/host/desktop && echo desktop; test -e /tmp/.X11-unix/X{} && echo x11; \
         env | grep -E '^(WAYLAND_DISPLAY|DISPLAY|XAUTHORITY|SSH_AUTH_SOCK|PULSE_SERVER|DBUS_SESSION_BUS_ADDRESS)='; true",
        session.display
    );
    let mut exec = m.command(&["exec", "desk", "--", "sh", "-c", &script]);
    exec.envs(session.env.iter().map(|(k, v)| (k, v)));
    let (out, stdout, stderr) = run(exec);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "", "with [desktop] off");
    drop(session.children);
    let _ = &session.run;
    let _ = &session.dir;
}

#[test]
fn real_clients_reach_the_hosts_servers_rootless() {
    let test = "real_clients_reach_the_hosts_servers_rootless";
    if !is_root() {
        return skip(test, "creating the test user needs root");
    }
    if let Some(why) = tools_missing() {
        panic!("{test}: {why}");
    }
    let image = client_image();
    let user = test_user("mm-test", Some(300_000));
    let gid = nix::unistd::Group::from_name("users")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let session = Session::start(user.uid, gid);
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    std::fs::write(machines.join("desk.toml"), definition(&image, ALL_ON)).unwrap();
    let data = dir.path().join("data");
    user.give(&data);
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command
            .env("XDG_DATA_HOME", &data)
            .envs(session.env.iter().map(|(k, v)| (k, v)));
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "desk", "--timeout", "1"]).output();
        let _ = mm(&["rm", "desk"]).output();
    });
    let (out, stdout, stderr) = run(mm(&["start", "desk"]));
    assert!(out.status.success(), "{stdout}{stderr}");
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "desk", "--"];
        all.extend(args);
        let (out, stdout, stderr) = run(mm(&all));
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    clients_reach_their_servers(&session, &exec);
}

#[test]
fn pipewire_answers_a_client_inside_rootless() {
    let test = "pipewire_answers_a_client_inside_rootless";
    if !is_root() {
        return skip(test, "creating the test user needs root");
    }
    if !std::path::Path::new("/usr/bin/pipewire").exists() {
        panic!(
            "{test}: pipewire is not installed (Debian package pipewire; scripts/setup installs it)"
        );
    }
    let image = client_image();
    let user = test_user("mm-test", Some(300_000));
    let gid = nix::unistd::Group::from_name("users")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    std::fs::write(
        machines.join("pw.toml"),
        definition(&image, "[desktop]\npipewire = true\n"),
    )
    .unwrap();
    user.give(dir.path());
    // The user's runtime directory, where pipewire makes its socket pipewire-0.
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    set_mode(&runtime, 0o700);
    user.give(&runtime);
    let mut server = as_user(user.uid, gid, "pipewire")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("XDG_RUNTIME_DIR", &runtime)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = OnDrop(|| {
        let _ = server.kill();
        let _ = server.wait();
    });
    eventually("pipewire listens", || runtime.join("pipewire-0").exists());
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("XDG_RUNTIME_DIR", &runtime);
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "pw", "--timeout", "1"]).output();
        let _ = mm(&["rm", "pw"]).output();
    });
    let (out, stdout, stderr) = run(mm(&["start", "pw"]));
    assert!(out.status.success(), "{stdout}{stderr}");
    let (out, stdout, stderr) = run(mm(&["exec", "pw", "--", "pw-cli", "info", "0"]));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("PipeWire:Interface:Core"),
        "{stdout}{stderr}"
    );
}

#[test]
fn the_session_bus_answers_a_keep_id_user_inside_rootless() {
    let test = "the_session_bus_answers_a_keep_id_user_inside_rootless";
    if !is_root() {
        return skip(test, "creating the test user needs root");
    }
    let image = client_image();
    let user = test_user("mm-test", Some(300_000));
    let gid = nix::unistd::Group::from_name("users")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    // dbus-daemon's EXTERNAL check compares the client's uid with the socket owner's: the
    // same uid inside as outside (keep_id) is what makes it pass.
    std::fs::write(
        machines.join("bus.toml"),
        definition(
            &image,
            "[users]\nkeep_id = true\n[desktop]\nsession_bus = true\n",
        ),
    )
    .unwrap();
    let bus_dir = dir.path().join("bus");
    user.give(dir.path());
    std::fs::create_dir(&bus_dir).unwrap();
    user.give(&bus_dir);
    let address = format!("unix:path={}", bus_dir.join("socket").display());
    let mut daemon = as_user(user.uid, gid, "dbus-daemon")
        .args([
            "--session",
            "--nofork",
            "--nopidfile",
            &format!("--address={address}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = OnDrop(|| {
        let _ = daemon.kill();
        let _ = daemon.wait();
    });
    eventually("the session bus listens", || {
        bus_dir.join("socket").exists()
    });
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("DBUS_SESSION_BUS_ADDRESS", &address);
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "bus", "--timeout", "1"]).output();
        let _ = mm(&["rm", "bus"]).output();
    });
    let (out, stdout, stderr) = run(mm(&["start", "bus"]));
    assert!(out.status.success(), "{stdout}{stderr}");
    let (out, stdout, stderr) = run(mm(&[
        "exec",
        "bus",
        "--",
        "dbus-send",
        "--session",
        "--print-reply",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.ListNames",
    ]));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("\"org.freedesktop.DBus\""), "{stdout}");
}

// ---- plan level -----------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    repo().join(format!("tests/fixtures/hosts/{name}.json"))
}

/// `mm plan NAME --json` of `body` on the busybox image, against a fixture host (or this
/// one): exit code, the plan (or null) and standard error.
fn plan(body: &str, host: Option<&str>) -> (Option<i32>, serde_json::Value, String) {
    let dir = shared_tempdir();
    let machines = dir.path().join("machines");
    std::fs::create_dir(&machines).unwrap();
    let text = format!(
        "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"sleep\", \"1\"]\n{body}",
        repo().join("images/busybox").display()
    );
    std::fs::write(machines.join("desk.toml"), text).unwrap();
    let path = machines.join("desk.toml").display().to_string();
    let mut args = vec!["plan", path.as_str(), "--json"];
    let file;
    if let Some(host) = host {
        file = fixture(host).display().to_string();
        args.extend(["--host-file", &file]);
    }
    let mut command = mm(dir.path(), &args);
    for var in [
        "WAYLAND_DISPLAY",
        "DISPLAY",
        "XAUTHORITY",
        "SSH_AUTH_SOCK",
        "DBUS_SESSION_BUS_ADDRESS",
        "PULSE_SERVER",
    ] {
        command.env_remove(var);
    }
    let (out, stdout, stderr) = run(command);
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, stderr)
}

fn binds(plan: &serde_json::Value) -> Vec<(String, String, bool)> {
    plan["plan"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "bind")
        .map(|m| {
            (
                m["source"].as_str().unwrap().to_owned(),
                m["target"].as_str().unwrap().to_owned(),
                m["readonly"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn env(plan: &serde_json::Value) -> Vec<String> {
    let command = &plan["plan"]["process"]["command"];
    match command["env"].as_array() {
        Some(list) => list
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect(),
        None => command["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect(),
    }
}

#[test]
fn a_gpu_and_nvidia_host_gives_its_nodes_libraries_and_device_rules() {
    assert!(default_image_built(), "images/busybox: run scripts/setup");
    let (code, plan, stderr) = plan(
        "[desktop]\ngpu = true\nnvidia = true\n",
        Some("root-hybrid"),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let binds = binds(&plan);
    for node in [
        "/dev/dri/renderD128",
        "/dev/nvidia0",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
    ] {
        assert!(
            binds.contains(&(node.to_owned(), node.to_owned(), false)),
            "{node}: {binds:?}"
        );
    }
    let lib = "/usr/lib/x86_64-linux-gnu/libcuda.so.1".to_owned();
    assert!(binds.contains(&(lib.clone(), lib, true)), "{binds:?}");
    let limits: Vec<String> = plan["plan"]["cgroup"]["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["file"].as_str().unwrap(),
                l["value"].as_str().unwrap()
            )
        })
        .collect();
    let rule = "/sys/fs/cgroup/devices/machine.slice/mm-desk.scope/devices.allow";
    for value in ["c 226:128 rw", "c 195:0 rw", "c 195:255 rw", "c 510:0 rw"] {
        assert!(
            limits.contains(&format!("{rule} {value}")),
            "{value}: {limits:?}"
        );
    }
    let notes = plan["plan"]["desktop"].to_string();
    assert!(notes.contains("group `render` (gid 105)"), "{notes}");
    assert!(notes.contains("no CDI spec"), "{notes}");
}

#[test]
fn a_cdi_spec_is_the_source_of_nvidias_nodes_files_and_variables() {
    assert!(default_image_built(), "images/busybox: run scripts/setup");
    let (code, plan, stderr) = plan("[desktop]\nnvidia = true\n", Some("rootless-v2-delegated"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(env(&plan).contains(&"NVIDIA_VISIBLE_DEVICES=void".to_owned()));
    let lib = "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05".to_owned();
    assert!(binds(&plan).contains(&(lib.clone(), lib, true)));
    let notes = plan["plan"]["desktop"].to_string();
    assert!(notes.contains("/etc/cdi/nvidia.json"), "{notes}");
    assert!(notes.contains("hook is not run"), "{notes}");
    // Rootless on cgroup v2: no device files to write.
    let limits = plan["plan"]["cgroup"]["limits"].to_string();
    assert!(!limits.contains("devices"), "{limits}");
}

#[test]
fn the_sockets_go_under_run_host_desktop_with_their_variables() {
    assert!(default_image_built(), "images/busybox: run scripts/setup");
    let body = "[desktop]\nwayland = true\nx11 = true\npipewire = true\npulseaudio = true\nssh_agent = true\nsession_bus = true\n";
    let (code, plan, stderr) = plan(body, Some("rootless-v2-delegated"));
    assert_eq!(code, Some(0), "{stderr}");
    let binds = binds(&plan);
    for (source, target, readonly) in [
        (
            "/run/user/1000/wayland-0",
            "/run/host/desktop/wayland",
            false,
        ),
        ("/tmp/.X11-unix/X0", "/tmp/.X11-unix/X0", false),
        (
            "/run/user/1000/.mutter-Xwaylandauth.ABC123",
            "/run/host/desktop/Xauthority",
            true,
        ),
        (
            "/run/user/1000/pipewire-0",
            "/run/host/desktop/pipewire-0",
            false,
        ),
        (
            "/run/user/1000/pulse/native",
            "/run/host/desktop/pulse-native",
            false,
        ),
        (
            "/run/user/1000/ssh-agent.socket",
            "/run/host/desktop/ssh-agent",
            false,
        ),
        ("/run/user/1000/bus", "/run/host/desktop/bus", false),
    ] {
        let bind = (source.to_owned(), target.to_owned(), readonly);
        assert!(binds.contains(&bind), "{bind:?} in {binds:?}");
    }
    let env = env(&plan);
    for kv in [
        "WAYLAND_DISPLAY=/run/host/desktop/wayland",
        "DISPLAY=:0",
        "XAUTHORITY=/run/host/desktop/Xauthority",
        "PIPEWIRE_REMOTE=/run/host/desktop/pipewire-0",
        "PULSE_SERVER=unix:/run/host/desktop/pulse-native",
        "SSH_AUTH_SOCK=/run/host/desktop/ssh-agent",
        "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/host/desktop/bus",
    ] {
        assert!(env.contains(&kv.to_owned()), "{kv} in {env:?}");
    }
}

#[test]
fn with_the_keys_off_the_plan_has_none_of_it() {
    assert!(default_image_built(), "images/busybox: run scripts/setup");
    let (code, off, stderr) = plan(
        "[desktop]
wayland = false
",
        Some("rootless-v2-delegated"),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        binds(&off)
            .iter()
            .all(|(s, _, _)| !s.starts_with("/run/user"))
    );
    assert!(
        env(&off)
            .iter()
            .all(|kv| !kv.starts_with("WAYLAND_DISPLAY="))
    );
    assert!(off["plan"].get("desktop").is_none());
}

#[test]
fn what_the_host_lacks_is_refused_at_its_key_naming_what_is_missing() {
    assert!(default_image_built(), "images/busybox: run scripts/setup");
    let body = "[desktop]\nwayland = true\nsession_bus = true\ngpu = true\nnvidia = true\n";
    let (code, _, stderr) = plan(body, Some("rootless-hybrid"));
    assert_eq!(code, Some(69), "{stderr}");
    for (key, line, why) in [
        ("desktop.wayland", 6, "WAYLAND_DISPLAY is not set"),
        ("desktop.session_bus", 7, "names no unix:path= socket"),
        ("desktop.gpu", 8, "/dev/dri has no render node"),
        ("desktop.nvidia", 9, "no nvidiactl"),
    ] {
        assert!(
            stderr.contains(&format!("error: {key}: ")),
            "{key}: {stderr}"
        );
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert!(
            stderr.contains(&format!("desk.toml:{line}:")),
            "{line}: {stderr}"
        );
    }
}

#[test]
fn this_host_has_no_gpu_and_says_so() {
    assert!(default_image_built(), "images/busybox: run scripts/setup");
    if Path::new("/dev/dri").exists() || Path::new("/dev/nvidiactl").exists() {
        return skip("this_host_has_no_gpu_and_says_so", "this host has a GPU");
    }
    let (code, _, stderr) = plan(
        "[desktop]\ngpu = true\nnvidia = true\nwayland = true\n",
        None,
    );
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains("error: desktop.gpu: /dev/dri has no render node (renderD*)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: desktop.nvidia: /dev has no nvidiactl"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: desktop.wayland: WAYLAND_DISPLAY is not set"),
        "{stderr}"
    );
}
