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
