//! mm's unit files against real systemd: checked by `systemd-analyze verify`, and run by a
//! real systemd user manager that starts `mm@NAME.service` for an ordinary user, as it
//! would in a login session.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

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
    let user = test_user("mm-unit", Some(400_000));
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
    // No journal here: a drop-in sends the units' standard error to a file, which a failed
    // step shows (the unit file itself stays as shipped).
    let unit_stderr = user.home.join("mm-units.stderr");
    let _ = std::fs::remove_file(&unit_stderr);
    let dropin = units.join("mm@.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("test-stderr.conf"),
        format!(
            "[Service]\nStandardError=append:{}\n",
            unit_stderr.display()
        ),
    )
    .unwrap();
    user.give(&user.home.join(".config"));

    let manager = match UserManager::start(&user) {
        Ok(manager) => manager,
        Err(why) => return skip(test, &why),
    };
    let as_user = |program: &Path, args: &[&str]| run(manager.command(&user, program, args));
    let mm_ok = |args: &[&str]| {
        let (out, stdout, stderr) = as_user(mm, args);
        if !out.status.success() {
            let status = as_user(
                Path::new("/usr/bin/systemctl"),
                &["--user", "status", "--no-pager", "mm@uweb.service"],
            )
            .1;
            let units = std::fs::read_to_string(&unit_stderr).unwrap_or_default();
            panic!("mm {args:?}: {stdout}{stderr}\n{status}\nthe units' stderr:\n{units}");
        }
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
