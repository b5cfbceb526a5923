//! Bundles with a seccomp profile (`linux.seccomp`), run by `mm oci` on images/busybox:
//! a profile that makes `mkdir` fail with EPERM (loaded early, before the capabilities
//! are dropped), an allow list under `defaultAction: SCMP_ACT_ERRNO` (loaded late, with
//! `noNewPrivileges`), a rule on an argument (`personality(PER_LINUX32)` denied,
//! `personality(PER_LINUX)` allowed), and podman's own /usr/share/containers/seccomp.json
//! taken whole; the cache of compiled programs (a second create compiles nothing, a
//! damaged entry is compiled again); and the same as an ordinary user.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// A bundle of images/busybox in `dir/NAME`, its process `sh -c SCRIPT`, `terminal` off.
fn bundle(dir: &Path, name: &str, script: &str, seccomp: serde_json::Value) -> PathBuf {
    let bundle = dir.join(name);
    busybox_bundle(&bundle, serde_json::json!(["sh", "-c", script]));
    edit_config(&bundle, |config| config["linux"]["seccomp"] = seccomp);
    bundle
}

/// Runs `command` (an `mm oci …`) with its streams, the container's, on `out` and
/// `out.err`: its exit code, and what it said on its standard error.
fn oci_run(command: Command, out: &Path) -> (Option<i32>, String) {
    let (status, err) = oci_on_files(command, out);
    (status.code(), err)
}

/// `mm oci --root DIR/state --log DIR/log --debug ARGS`, its cache under `DIR/mm` (MM_ROOT).
fn oci(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(MM);
    command
        .env("MM_ROOT", dir.join("mm"))
        .arg("oci")
        .arg("--root")
        .arg(dir.join("state"))
        .arg("--log")
        .arg(dir.join("log"))
        .arg("--debug")
        .args(args);
    command
}

/// `mm oci run` of `bundle` as `id`: the container's exit status and what it wrote.
fn run_bundle(dir: &Path, bundle: &Path, id: &str) -> (Option<i32>, String) {
    let out = dir.join(format!("{id}.out"));
    let (code, err) = oci_run(
        oci(dir, &["run", "--bundle", bundle.to_str().unwrap(), id]),
        &out,
    );
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    println!("{id}: exit {code:?}, said {said:?}, mm said {err:?}");
    (code, said + &err)
}

/// A profile allowing everything but `names`, which fail with EPERM.
fn deny(names: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    })
}

/// podman's /usr/share/containers/seccomp.json as podman writes it into a config.json
/// for x86_64 and a process with `caps`: the architectures of its `archMap`, the rules
/// whose `includes` hold and whose `excludes` do not.
fn podman_profile(caps: &[&str], without: &[&str]) -> serde_json::Value {
    let text = std::fs::read_to_string("/usr/share/containers/seccomp.json")
        .expect("podman's seccomp.json (scripts/setup installs podman)");
    let source: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut arches = Vec::new();
    for map in source["archMap"].as_array().unwrap() {
        if map["architecture"] == "SCMP_ARCH_X86_64" {
            arches.push(map["architecture"].clone());
            arches.extend(map["subArchitectures"].as_array().unwrap().iter().cloned());
        }
    }
    let holds = |cond: &serde_json::Value| {
        let arch_ok = cond["arches"]
            .as_array()
            .is_none_or(|a| a.is_empty() || a.iter().any(|x| x == "amd64"));
        let caps_ok = cond["caps"]
            .as_array()
            .is_none_or(|c| c.iter().all(|x| caps.iter().any(|k| x == k)));
        arch_ok && caps_ok
    };
    let excluded = |cond: &serde_json::Value| {
        cond["arches"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "amd64"))
            || cond["caps"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| caps.iter().any(|k| x == k)))
    };
    let mut syscalls = Vec::new();
    for call in source["syscalls"].as_array().unwrap() {
        if !holds(&call["includes"]) || excluded(&call["excludes"]) {
            continue;
        }
        let names: Vec<&serde_json::Value> = call["names"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| !without.iter().any(|w| *n == w))
            .collect();
        let mut rule = serde_json::json!({"names": names, "action": call["action"]});
        for key in ["args", "errnoRet"] {
            if !call[key].is_null() {
                rule[key] = call[key].clone();
            }
        }
        syscalls.push(rule);
    }
    serde_json::json!({
        "defaultAction": source["defaultAction"],
        "defaultErrnoRet": source["defaultErrnoRet"],
        "architectures": arches,
        "syscalls": syscalls,
    })
}

/// runc's default capabilities, which umoci's config gives.
const CAPS: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

#[test]
fn seccomp_profiles_filter_a_containers_calls_as_root() {
    if !ready("seccomp_profiles_filter_a_containers_calls_as_root") {
        return;
    }
    let dir = shared_tempdir();
    let d = dir.path();
    let mkdir =
        "echo before; mkdir /tmp/x && echo made || echo refused; grep Seccomp: /proc/self/status";

    // Loaded early (noNewPrivileges off): before mm drops the capabilities.
    let b = bundle(d, "deny-mkdir", mkdir, deny(&["mkdir", "mkdirat"]));
    edit_config(&b, |c| c["process"]["noNewPrivileges"] = false.into());
    let (code, said) = run_bundle(d, &b, "deny-mkdir");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("before"), "echo works: {said}");
    assert!(said.contains("Operation not permitted"), "{said}");
    assert!(said.contains("refused") && !said.contains("made"), "{said}");
    assert!(said.contains("Seccomp:\t2"), "in filter mode: {said}");

    // An allow list (podman's, without mkdir) under an ERRNO default (ENOSYS), loaded
    // late (noNewPrivileges on): mkdir fails with ENOSYS.
    let b = bundle(
        d,
        "allow-list",
        mkdir,
        podman_profile(CAPS, &["mkdir", "mkdirat"]),
    );
    let (code, said) = run_bundle(d, &b, "allow-list");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("before"), "{said}");
    assert!(said.contains("Function not implemented"), "{said}");
    assert!(said.contains("refused"), "{said}");

    // A rule on an argument: personality(PER_LINUX32 = 8) fails, personality(0) works;
    // loaded with flags of seccomp(2).
    let b = bundle(
        d,
        "personality",
        "linux64 true && echo linux64 works; linux32 true && echo linux32 works || echo linux32 refused",
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]
        }),
    );
    let (code, said) = run_bundle(d, &b, "personality");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("linux64 works"), "{said}");
    assert!(said.contains("linux32 refused"), "{said}");
    assert!(!said.contains("linux32 works"), "{said}");

    // podman's profile whole: it compiles and the container runs (mkdir allowed).
    let profile = podman_profile(CAPS, &[]);
    let rules = profile["syscalls"].as_array().unwrap().len();
    let b = bundle(d, "podman", mkdir, profile);
    let (code, said) = run_bundle(d, &b, "podman");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("made"), "{said}");
    let (out, plan, stderr) = run({
        let mut c = oci(
            d,
            &["plan", "--bundle", b.to_str().unwrap(), "--id", "podman"],
        );
        c.stdin(Stdio::null());
        c
    });
    assert!(out.status.success(), "{stderr}");
    let line = plan
        .lines()
        .find(|l| l.contains("Security: seccomp filter profile sha256:"))
        .unwrap_or_else(|| panic!("{plan}"));
    println!("podman's profile ({rules} entries): {}", line.trim());
    assert!(line.contains("default SCMP_ACT_ERRNO(38)"), "{line}");
    // podman's profile allows setns, then denies it without CAP_SYS_ADMIN: libseccomp
    // keeps the first, and the plan says so.
    let kept = plan
        .lines()
        .find(|l| l.contains("seccomp kept the first action"))
        .unwrap_or_else(|| panic!("{plan}"));
    println!("{}", kept.trim());
    assert!(kept.contains("setns SCMP_ACT_ERRNO(1)"), "{kept}");
    let skipped = plan.lines().find(|l| l.contains("seccomp skipped"));
    println!("skipped: {skipped:?}");
    let log = std::fs::read_to_string(d.join("log")).unwrap();
    assert_eq!(
        log.matches("seccomp: compiled").count(),
        4,
        "four profiles, each compiled once: {log}"
    );
    if let Some(skipped) = skipped {
        assert!(
            log.contains("warning: seccomp: skipped"),
            "{skipped}: {log}"
        );
    }
}

#[test]
fn a_compiled_profile_is_cached_and_a_damaged_entry_compiled_again() {
    if !ready("a_compiled_profile_is_cached_and_a_damaged_entry_compiled_again") {
        return;
    }
    let dir = shared_tempdir();
    let d = dir.path();
    let b = bundle(
        d,
        "b",
        "mkdir /tmp/x || echo refused",
        deny(&["mkdir", "mkdirat"]),
    );
    let log = || std::fs::read_to_string(d.join("log")).unwrap_or_default();
    let entry = || -> PathBuf {
        let cache = d.join("mm/cache/seccomp");
        let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
            .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "bpf"))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].clone()
    };

    let (code, said) = run_bundle(d, &b, "first");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("refused"), "{said}");
    let path = entry();
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    println!("cache entry {name}");
    assert!(
        name.contains(std::env::consts::ARCH) && name.contains(".libseccomp-"),
        "{name}"
    );
    let before = std::fs::metadata(&path).unwrap();
    assert_eq!(log().matches("seccomp: compiled").count(), 1, "{}", log());

    let (code, said) = run_bundle(d, &b, "second");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("refused"), "{said}");
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (after.ino(), after.mtime(), after.mtime_nsec()),
        (before.ino(), before.mtime(), before.mtime_nsec()),
        "the entry was not written again"
    );
    assert_eq!(log().matches("seccomp: compiled").count(), 1, "{}", log());
    assert_eq!(log().matches("seccomp: cached").count(), 1, "{}", log());

    // A damaged entry (a flipped byte, then cut short) is compiled again and replaced.
    for damage in ["flipped", "cut"] {
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            "flipped" => {
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
            }
            _ => bytes.truncate(bytes.len() - 3),
        }
        std::fs::write(&path, &bytes).unwrap();
        let (code, said) = run_bundle(d, &b, &format!("after-{damage}"));
        assert_eq!(code, Some(0), "{said}");
        assert!(said.contains("refused"), "{damage}: {said}");
        let again = std::fs::metadata(&path).unwrap();
        assert_ne!(again.ino(), before.ino(), "{damage}: replaced");
        assert_eq!(again.len(), before.len(), "{damage}: whole again");
    }
    let log = log();
    println!("{log}");
    assert_eq!(log.matches("cache entry was damaged").count(), 2, "{log}");
    assert!(log.contains("does not match its hash"), "{log}");
}

#[test]
fn an_ordinary_users_container_gets_its_profile() {
    if !is_root() {
        return skip(
            "an_ordinary_users_container_gets_its_profile",
            "creating users needs root",
        );
    }
    assert!(default_image_built(), "images/busybox is missing");
    let user = test_user("mm-test", Some(300_000));
    let dir = shared_tempdir();
    let d = dir.path();
    let b = bundle(
        d,
        "b",
        "echo before; mkdir /tmp/x && echo made || echo refused",
        deny(&["mkdir", "mkdirat"]),
    );
    edit_config(&b, |config| {
        config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        for mount in config["mounts"].as_array_mut().unwrap() {
            if let Some(options) = mount.get_mut("options").and_then(|o| o.as_array_mut()) {
                options.retain(|o| o != "gid=5");
            }
        }
    });
    let out = d.join("out");
    std::fs::write(&out, "").unwrap();
    let (chowned, _, stderr) = run({
        let mut c = Command::new("chown");
        c.args(["-R", &format!("{}:users", user.name)]).arg(d);
        c
    });
    assert!(chowned.status.success(), "{stderr}");
    let cache = d.join("xdg-cache");
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
        .arg(shared_binary())
        .args(["oci", "--root"])
        .arg(d.join("state"))
        .arg("--log")
        .arg(d.join("log"))
        .args([
            "--debug",
            "run",
            "--bundle",
            b.to_str().unwrap(),
            "rootless",
        ])
        .env_clear()
        .env("HOME", &user.home)
        .env("XDG_CACHE_HOME", &cache)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    let (code, err) = oci_run(command, &out);
    let said = std::fs::read_to_string(&out).unwrap();
    println!("rootless: exit {code:?}, said {said:?}, mm said {err:?}");
    assert_eq!(code, Some(0), "{said}{err}");
    assert!(
        said.contains("before") && said.contains("refused"),
        "{said}"
    );
    let entries: Vec<_> = std::fs::read_dir(cache.join("mm/seccomp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    println!("rootless cache: {entries:?}");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let meta = std::fs::metadata(&entries[0]).unwrap();
    assert_eq!(meta.uid(), user.uid, "the user's own cache");
    let log = std::fs::read_to_string(d.join("log")).unwrap();
    assert!(log.contains("seccomp: compiled"), "{log}");
}
