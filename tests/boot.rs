//! Booting a real systemd as a machine's PID 1 (`boot = true`) as root, on a Debian rootfs
//! built by tests/fixtures/debian/make-rootfs.sh. Needs root; skips with the reason.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The Debian rootfs with systemd that `tests/fixtures/debian/make-rootfs.sh` builds
/// (debootstrap from Debian's mirror, about a minute), kept between runs while
/// `dpkg --verify` finds its packages' files intact (scripts/clean-test-state removes it).
fn debian_rootfs() -> PathBuf {
    // Two tests boot it: one builds it while the other waits.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let dest = PathBuf::from("/var/tmp/mm-test-debian-bookworm");
    let status = Command::new(repo().join("tests/fixtures/debian/make-rootfs.sh"))
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success(), "make-rootfs.sh {}", dest.display());
    dest
}

#[test]
fn a_booted_systemd_reaches_running_and_stops_cleanly() {
    if !ready("a_booted_systemd_reaches_running_and_stops_cleanly") {
        return;
    }
    let rootfs = debian_rootfs();
    let mut m = Machines::new();
    let machines = m.dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("debian.toml"),
        format!(
            "[image]\nsource = \"rootfs:{}\"\n[exec]\nboot = true\n[network]\nmode = \"private\"\n",
            rootfs.display()
        ),
    )
    .unwrap();
    m.names.push("debian".to_owned());
    m.ok(&["start", "debian"]);
    // Until systemd listens on its socket, systemctl cannot ask it anything; then
    // `--wait` returns when the boot is over.
    let last = std::cell::RefCell::new(String::new());
    let booted = || {
        let (_, out, err) = m.mm(&[
            "exec",
            "debian",
            "--",
            "systemctl",
            "is-system-running",
            "--wait",
        ]);
        *last.borrow_mut() = format!("{out}{err}");
        matches!(out.trim(), "running" | "degraded")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !booted() {
        assert!(
            Instant::now() < deadline,
            "systemd did not finish booting: {}",
            last.borrow()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, failed, _) = m.mm(&[
        "exec",
        "debian",
        "--",
        "systemctl",
        "--failed",
        "--no-legend",
    ]);
    assert_eq!(last.borrow().trim(), "running", "failed units: {failed}");
    assert_eq!(
        m.ok(&["exec", "debian", "--", "cat", "/proc/1/comm"])
            .trim(),
        "systemd"
    );
    let leader = m.status("debian")["leader"].as_i64().unwrap();
    let out = m.ok(&["stop", "debian", "--timeout", "30"]);
    assert!(out.contains("status 0"), "a clean shutdown: {out}");
    assert!(!alive(leader));
    let console =
        std::fs::read_to_string(m.state_dir().join("run/debian/console.log")).unwrap_or_default();
    assert!(console.contains("Halting system"), "{console}");
}

/// The boots a busybox init logged in `shared/boots`: one line per boot, `down` per
/// shutdown.
fn boots(shared: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(shared.join("boots"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn reboot_inside_a_booted_machine_starts_it_again_and_poweroff_stops_it() {
    if !ready("reboot_inside_a_booted_machine_starts_it_again_and_poweroff_stops_it") {
        return;
    }
    let mut m = Machines::new();
    let shared = m.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // The machine's root is not host root: it may write here.
    set_mode(&shared, 0o777);
    let inittab = m.dir.path().join("inittab");
    std::fs::write(
        &inittab,
        "::sysinit:/bin/sh -c 'echo boot >> /shared/boots'\n\
         ::shutdown:/bin/sh -c 'echo down >> /shared/boots'\n",
    )
    .unwrap();
    m.define(
        "bt-reboot",
        &format!(
            "[exec]\nboot = true\n[storage]\npersistent = true\n\
             binds = [{{ source = \"{}\", target = \"/shared\" }}, \
             {{ source = \"{}\", target = \"/etc/inittab\", readonly = true }}]\n",
            shared.display(),
            inittab.display()
        ),
    );
    m.ok(&["start", "bt-reboot"]);
    eventually("the first boot", || boots(&shared) == ["boot"]);
    let first = m.status("bt-reboot")["leader"].as_i64().unwrap();
    // A file in the writable layer outlives the reboot.
    m.ok(&["exec", "bt-reboot", "touch", "/kept"]);
    // busybox's reboot signals init, which runs its shutdown and calls reboot(2).
    // The exec'd reboot may be killed as the machine goes down: only the machine counts.
    m.mm(&["exec", "bt-reboot", "reboot"]);
    eventually("the second boot", || {
        boots(&shared) == ["boot", "down", "boot"]
    });
    let status = m.status("bt-reboot");
    assert_eq!(status["state"], "running", "{status}");
    let second = status["leader"].as_i64().unwrap();
    assert_ne!(second, first, "a new PID 1");
    assert!(!alive(first));
    assert!(alive(second));
    assert_eq!(
        m.ok(&["exec", "bt-reboot", "cat", "/proc/1/comm"]).trim(),
        "init"
    );
    m.ok(&["exec", "bt-reboot", "ls", "/kept"]);
    // Power-off ends it: stopped, status 0, no third boot.
    m.mm(&["exec", "bt-reboot", "poweroff"]);
    eventually("the machine stopped", || {
        m.status("bt-reboot")["state"] == "stopped"
    });
    let after = m.status("bt-reboot");
    assert_eq!(after["exit_status"], 0, "{after}");
    assert!(!alive(second));
    assert_eq!(boots(&shared), ["boot", "down", "boot", "down"]);
}

#[test]
fn reboot_restarts_a_rootless_booted_machine() {
    let test = "reboot_restarts_a_rootless_booted_machine";
    if !is_root() {
        return skip(test, "creating users needs root");
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let shared = dir.path().join("shared");
    let runtime = dir.path().join("runtime");
    let data = dir.path().join("data");
    for path in [&runtime, &data, &shared] {
        std::fs::create_dir(path).unwrap();
        user.give(path);
    }
    set_mode(&shared, 0o777);
    let inittab = dir.path().join("inittab");
    std::fs::write(
        &inittab,
        "::sysinit:/bin/sh -c 'echo boot >> /shared/boots'\n",
    )
    .unwrap();
    set_mode(&inittab, 0o644);
    std::fs::write(
        dir.path().join("machines/bt-rreboot.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\nboot = true\n[network]\nmode = \"host\"\n\
             [storage]\nbinds = [{{ source = \"{}\", target = \"/shared\" }}, \
             {{ source = \"{}\", target = \"/etc/inittab\", readonly = true }}]\n",
            dir.path().join("images/busybox").display(),
            shared.display(),
            inittab.display()
        ),
    )
    .unwrap();
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", &data);
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "bt-rreboot", "--timeout", "1"]).output();
        let _ = mm(&["rm", "bt-rreboot"]).output();
    });
    let ok = |args: &[&str]| {
        let (out, stdout, stderr) = run(mm(args));
        assert!(out.status.success(), "mm {args:?}: {stdout}{stderr}");
        stdout
    };
    // `mm status` of a stopped machine exits 3: only its JSON counts here.
    let leader = || {
        let (_, stdout, _) = run(mm(&["status", "bt-rreboot", "--json"]));
        let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        status["leader"].as_i64()
    };
    ok(&["start", "bt-rreboot"]);
    eventually("the first boot", || boots(&shared) == ["boot"]);
    let first = leader().unwrap();
    // The exec'd reboot may be killed as the machine goes down: only the machine counts.
    let _ = run(mm(&["exec", "bt-rreboot", "reboot"]));
    eventually("the second boot", || boots(&shared) == ["boot", "boot"]);
    let second = leader().unwrap();
    assert_ne!(second, first);
    assert!(alive(second));
    let _ = run(mm(&["exec", "bt-rreboot", "poweroff"]));
    eventually("the machine stopped", || leader().is_none());
    assert_eq!(boots(&shared), ["boot", "boot"]);
}

#[test]
fn a_booted_systemd_reboots_in_place() {
    if !ready("a_booted_systemd_reboots_in_place") {
        return;
    }
    let rootfs = debian_rootfs();
    let mut m = Machines::new();
    let machines = m.dir.path().join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("debian-rb.toml"),
        format!(
            "[image]\nsource = \"rootfs:{}\"\n[exec]\nboot = true\n[network]\nmode = \"private\"\n",
            rootfs.display()
        ),
    )
    .unwrap();
    m.names.push("debian-rb".to_owned());
    m.ok(&["start", "debian-rb"]);
    let booted = || {
        let (_, out, _) = m.mm(&[
            "exec",
            "debian-rb",
            "--",
            "systemctl",
            "is-system-running",
            "--wait",
        ]);
        matches!(out.trim(), "running" | "degraded")
    };
    let wait_boot = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !booted() {
            assert!(Instant::now() < deadline, "systemd did not finish {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_boot("booting");
    let first = m.status("debian-rb")["leader"].as_i64().unwrap();
    // systemctl reboot returns before systemd is gone.
    m.mm(&["exec", "debian-rb", "--", "systemctl", "reboot"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let status = m.status("debian-rb");
        assert_ne!(
            status["state"], "stopped",
            "the reboot stopped it: {status}"
        );
        if let Some(leader) = status["leader"].as_i64().filter(|l| *l != first) {
            break leader;
        }
        assert!(Instant::now() < deadline, "no new PID 1: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!alive(first));
    wait_boot("booting again");
    assert_eq!(m.status("debian-rb")["leader"].as_i64(), Some(second));
    let out = m.ok(&["stop", "debian-rb", "--timeout", "30"]);
    assert!(out.contains("status 0"), "a clean shutdown: {out}");
    let console = std::fs::read_to_string(m.state_dir().join("run/debian-rb/console.log"))
        .unwrap_or_default();
    assert!(console.contains("Rebooting"), "{console}");
}
