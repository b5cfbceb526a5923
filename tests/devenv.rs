//! A developer environment on the Debian image (`images/debian`, the `dev` example's): apt
//! inside a persistent machine, as root and as an ordinary user, installing a package from
//! a local apt repository the test builds (bound read-only at /repo; the machine has
//! loopback only, so Debian's mirror is never asked), and the package still installed after
//! a stop and a start. Needs root (root's machines; the test user); builds the image when
//! it is missing (scripts/build-debian-image) and skips only where mmdebstrap is absent.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use support::*;

const PACKAGE: &str = "mm-devenv-probe";
const PROBE: &str = "usr/share/mm-devenv-probe/installed";
const PROBE_TEXT: &str = "installed from the local repository";

/// apt inside, with the local repository as its only source: the image's sources.list
/// (Debian's mirror) is replaced by /dev/null for both commands.
const APT_INSTALL: &str = "echo 'deb [trusted=yes] file:/repo ./' >/etc/apt/sources.list.d/local.list \
    && apt-get -q -o Dir::Etc::SourceList=/dev/null update \
    && DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dir::Etc::SourceList=/dev/null install mm-devenv-probe";

/// Whether the test can run here; says why not when it cannot.
fn ready_for_debian(test: &str) -> bool {
    if !is_root() {
        skip(test, "root's machines and the test user need root");
        return false;
    }
    if !repo().join("images/debian/index.json").exists() && !debian_image_buildable() {
        skip(
            test,
            "images/debian is not built and mmdebstrap is not installed to build it",
        );
        return false;
    }
    if let Err(why) = debian_image() {
        panic!("{why}");
    }
    true
}

/// `dir/images/debian` (a copy every user can read), `dir/repo` (the apt repository:
/// one package, its Packages index) and `dir/machines/devenv.toml`.
fn tree(dir: &Path) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let status = Command::new("cp")
        .args(["-a", "--no-preserve=ownership"])
        .arg(repo().join("images/debian"))
        .arg(&images)
        .status()
        .unwrap();
    assert!(status.success(), "copying images/debian");
    local_repository(&dir.join("repo"));
    let machines = dir.join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("devenv.toml"),
        "[image]\nsource = \"oci:../images/debian:12\"\n\
         [exec]\ncommand = [\"/usr/bin/sleep\", \"infinity\"]\n\
         [storage]\npersistent = true\n\
         binds = [{ source = \"../repo\", target = \"/repo\", readonly = true }]\n\
         [network]\nmode = \"private\"\n",
    )
    .unwrap();
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A flat apt repository in `dir`: the package built with `dpkg-deb`, indexed by
/// `dpkg-scanpackages` (dpkg-dev, which scripts/setup installs).
fn local_repository(dir: &Path) {
    let build = tempfile::tempdir().unwrap();
    let root = build.path().join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {PACKAGE}\nVersion: 1.0\nArchitecture: all\n\
             Maintainer: mm tests <mm-tests@localhost>\n\
             Description: a file for mm's tests/devenv.rs\n"
        ),
    )
    .unwrap();
    let probe = root.join(PROBE);
    std::fs::create_dir_all(probe.parent().unwrap()).unwrap();
    std::fs::write(&probe, format!("{PROBE_TEXT}\n")).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let deb = dir.join(format!("{PACKAGE}_1.0_all.deb"));
    let (out, _, stderr) = run({
        let mut c = Command::new("dpkg-deb");
        c.args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb);
        c
    });
    assert!(out.status.success(), "dpkg-deb --build: {stderr}");
    assert!(
        Path::new("/usr/bin/dpkg-scanpackages").exists(),
        "dpkg-scanpackages is missing: install dpkg-dev (./scripts/setup does)"
    );
    let (out, packages, stderr) = run({
        let mut c = Command::new("dpkg-scanpackages");
        c.args([".", "/dev/null"]).current_dir(dir);
        c
    });
    assert!(out.status.success(), "dpkg-scanpackages: {stderr}");
    assert!(
        packages.contains(&format!("Package: {PACKAGE}")),
        "{packages}"
    );
    std::fs::write(dir.join("Packages"), packages).unwrap();
}

/// The checks both modes make, with `mm` running mm as root or as the test user:
/// apt installs the package from /repo, its file is inside and (in the upper layer) owned
/// outside by the id root inside maps to, and a stop and a start keep it installed.
fn installs_and_keeps(mm: &dyn Fn(&[&str]) -> Command) {
    let ok = |args: &[&str]| {
        let (out, stdout, stderr) = run(mm(args));
        assert!(
            out.status.success(),
            "mm {args:?}: {:?}\n{stdout}{stderr}",
            out.status
        );
        stdout
    };
    ok(&["start", "devenv"]);
    let (out, stdout, stderr) = run(mm(&["exec", "devenv", "--", "sh", "-c", APT_INSTALL]));
    assert!(out.status.success(), "apt inside: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Setting up {PACKAGE} (1.0)")),
        "{stdout}{stderr}"
    );
    // apt fetched as its sandbox user `_apt` (setgroups, setuid inside the machine).
    assert!(!stderr.contains("unsandboxed"), "{stderr}");
    let installed = |when: &str| {
        let text = ok(&["exec", "devenv", "--", "cat", &format!("/{PROBE}")]);
        assert_eq!(text.trim(), PROBE_TEXT, "{when}");
        let status = ok(&[
            "exec",
            "devenv",
            "--",
            "dpkg-query",
            "-W",
            "-f",
            "${Status}",
            PACKAGE,
        ]);
        assert_eq!(status, "install ok installed", "{when}");
    };
    installed("after apt-get install");

    // Written by root inside: owned outside by the id root maps to.
    let map = ok(&["exec", "devenv", "--", "cat", "/proc/self/uid_map"]);
    let root_outside: u32 = map
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("uid_map: {map:?}"));
    let plan: serde_json::Value = serde_json::from_str(&ok(&["plan", "devenv", "--json"])).unwrap();
    let upper = plan["plan"]["root"]["upper"]["upper"]
        .as_str()
        .unwrap_or_else(|| panic!("no persistent upper in {plan}"));
    let on_host = std::fs::metadata(Path::new(upper).join(PROBE)).unwrap();
    assert_eq!(on_host.uid(), root_outside);

    ok(&["stop", "devenv"]);
    ok(&["start", "devenv"]);
    installed("after a stop and a start");
    ok(&["stop", "devenv"]);
}

#[test]
fn root_installs_a_package_with_apt_that_stays_across_restarts() {
    let test = "root_installs_a_package_with_apt_that_stays_across_restarts";
    if !ready_for_debian(test) {
        return;
    }
    let mut machines = Machines::new();
    tree(machines.dir.path());
    machines.names.push("devenv".to_owned());
    let dir = machines.dir.path().to_owned();
    installs_and_keeps(&|args| mm(&dir, args));
}

#[test]
fn an_ordinary_user_installs_a_package_with_apt_that_stays_across_restarts() {
    let test = "an_ordinary_user_installs_a_package_with_apt_that_stays_across_restarts";
    if !ready_for_debian(test) {
        return;
    }
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    tree(dir.path());
    // Its runtime and data (image store, machines) here, not in the user's home.
    let runtime = dir.path().join("runtime");
    let data = dir.path().join("data");
    for path in [&runtime, &data] {
        std::fs::create_dir(path).unwrap();
        user.give(path);
    }
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", &data);
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "devenv", "--timeout", "1"]).output();
        let _ = mm(&["rm", "devenv"]).output();
    });
    installs_and_keeps(&mm);
    // Root inside is the user outside.
    let upper = data.join("mm/machines/devenv/upper").join(PROBE);
    assert_eq!(std::fs::metadata(upper).unwrap().uid(), user.uid);
}
