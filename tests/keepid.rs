//! `[users] keep_id`: the host user inside a machine, as root (keep_id names the harness's
//! test user) and rootless (the test user itself), on a real Debian 12 with sudo and bash
//! (images/debian, scripts/build-debian-image): its ids, groups, name, home and shell; sudo
//! without a password; files in binds owned by it outside; the image's root files still
//! root's; the machine home across stop/start; `home = "host"` and `home = PATH`; and a
//! hostile image whose /etc/passwd is a symlink. Needs root; skips with the reason.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// The Debian 12 image of the `dev` example (scripts/build-debian-image), with sudo and
/// bash.
fn debian_tar() -> PathBuf {
    debian_image().unwrap_or_else(|why| panic!("the Debian image: {why}"))
}

/// A Debian keep-id machine's definition: `users` is the rest of its [users] table.
fn debian(tar: &Path, bind: &Path, users: &str) -> String {
    format!(
        "[image]\nsource = \"oci:{}:12\"\n[exec]\ncommand = [\"sleep\", \"infinity\"]\n\
         [storage]\npersistent = false\nbinds = [{{ source = \"{}\", target = \"/proj\" }}]\n\
         [network]\nmode = \"host\"\n[users]\n{users}\n",
        tar.display(),
        bind.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    let machines = dir.join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(machines.join(format!("{name}.toml")), text).unwrap();
}

/// What `mm` (as root or as the test user) prints for ARGS, which must succeed.
fn ok(command: Command) -> String {
    let (out, stdout, stderr) = run(command);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    stdout
}

/// The checks both modes share, on a started keep-id machine `name` whose /proj is
/// `proj` on the host; `mm` runs mm as the machine's owner.
fn the_user_is_the_host_user(mm: &dyn Fn(&[&str]) -> Command, name: &str, proj: &Path) {
    let account = nix::unistd::User::from_name("mm-test").unwrap().unwrap();
    let (uid, gid) = (account.uid.as_raw(), account.gid.as_raw());
    let inside = |script: &str| ok(mm(&["exec", name, "--", "sh", "-c", script]));
    let ids = inside("id -u; id -g; id -un; id -G; echo $HOME; echo $USER $LOGNAME; echo $SHELL");
    let lines: Vec<&str> = ids.lines().collect();
    assert_eq!(lines[0], uid.to_string(), "{ids}");
    assert_eq!(lines[1], gid.to_string(), "{ids}");
    assert_eq!(lines[2], "mm-test", "{ids}");
    assert_eq!(
        lines[3],
        gid.to_string(),
        "the harness's user is in `users` only: {ids}"
    );
    assert_eq!(lines[4], "/home/mm-test", "{ids}");
    assert_eq!(lines[5], "mm-test mm-test", "{ids}");
    assert_eq!(
        lines[6], "/bin/sh",
        "the host's login shell, which the image has: {ids}"
    );
    // sudo: a setuid binary owned by inside 0, /etc/sudoers owned by 0, a mapped 0.
    assert_eq!(inside("sudo -n id -u 2>/dev/null").trim(), "0");
    let owners = inside("stat -c '%u:%g %a' /usr/bin/sudo /etc /etc/sudoers /bin/bash");
    let owners: Vec<&str> = owners.lines().collect();
    assert_eq!(owners[0], "0:0 4755", "{owners:?}");
    assert!(
        owners[1..].iter().all(|l| l.starts_with("0:0 ")),
        "{owners:?}"
    );
    assert_eq!(
        inside("stat -c %U /etc/passwd /usr").trim(),
        "root\nroot",
        "the image's files are root's inside, not the user's"
    );
    // A file the user makes in a bind is the user's outside.
    inside("echo hi > /proj/made-inside");
    let meta = std::fs::metadata(proj.join("made-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    // Root on request; `mm shell -c` as the user with its shell.
    assert_eq!(
        ok(mm(&["exec", name, "--user", "root", "--", "id", "-u"])).trim(),
        "0"
    );
    assert_eq!(
        ok(mm(&["shell", name, "-c", "echo $0 $HOME; pwd; id -un"])),
        "/bin/sh /home/mm-test\n/home/mm-test\nmm-test\n"
    );
    // The machine home: seeded from /etc/skel, the user's, kept across stop and start
    // although the machine itself is not persistent.
    assert_eq!(
        inside("stat -c %U ~ ~/.bashrc; echo kept > ~/note").trim(),
        "mm-test\nmm-test"
    );
    ok(mm(&["stop", name]));
    ok(mm(&["start", name]));
    assert_eq!(inside("cat ~/note; id -un").trim(), "kept\nmm-test");
    assert_eq!(
        inside(
            "grep -c '^mm-test:' /etc/passwd; sudo -n cat /etc/sudoers.d/mm-mm-test 2>/dev/null"
        )
        .trim(),
        "1\nmm-test ALL=(ALL:ALL) NOPASSWD: ALL",
        "written again at start, once"
    );
}

#[test]
fn as_root_keep_id_maps_a_named_user_and_its_homes() {
    if !is_root() {
        return skip(
            "as_root_keep_id_maps_a_named_user_and_its_homes",
            "root machines and the test user need root",
        );
    }
    let user = test_user("mm-test", Some(300_000));
    let tar = debian_tar();
    let m = Machines::new();
    let dir = m.dir.path();
    let proj = dir.join("proj");
    let elsewhere = dir.join("elsewhere");
    for d in [&proj, &elsewhere] {
        user.give(d);
    }
    std::fs::write(elsewhere.join("from-path"), "").unwrap();
    write(
        dir,
        "kid-dev",
        &debian(&tar, &proj, "keep_id = \"mm-test\""),
    );
    write(
        dir,
        "onhost",
        &debian(&tar, &proj, "keep_id = \"mm-test\"\nhome = \"host\""),
    );
    write(
        dir,
        "onpath",
        &debian(
            &tar,
            &proj,
            "keep_id = \"mm-test\"\nhome = \"../elsewhere\"",
        ),
    );
    let mm = |args: &[&str]| support::mm(dir, args);
    let _stop = OnDrop(|| {
        for name in ["kid-dev", "onhost", "onpath"] {
            let _ = mm(&["stop", name, "--timeout", "1"]).output();
        }
    });
    let plan = ok(mm(&["plan", "kid-dev"]));
    assert!(plan.contains("User `mm-test` inside"), "{plan}");
    ok(mm(&["start", "kid-dev"]));
    the_user_is_the_host_user(&mm, "kid-dev", &proj);

    // home = "host": the user's own home on the host, bound.
    let marker = format!("mm-keepid-test-{}", std::process::id());
    let in_home = user.home.join(&marker);
    std::fs::write(&in_home, "").unwrap();
    let _gone = OnDrop(|| {
        let _ = std::fs::remove_file(&in_home);
    });
    ok(mm(&["start", "onhost"]));
    let listed = ok(mm(&["exec", "onhost", "--", "ls", "/home/mm-test"]));
    assert!(listed.lines().any(|l| l == marker), "{listed}");
    // home = PATH: a directory relative to the definition's.
    ok(mm(&["start", "onpath"]));
    let listed = ok(mm(&["exec", "onpath", "--", "sh", "-c", "ls $HOME"]));
    assert_eq!(listed, "from-path\n");
    // `mm rm` takes the machine home with it.
    ok(mm(&["stop", "kid-dev"]));
    let home = dir.join("state/machines/kid-dev/home");
    assert!(home.join("note").exists(), "{}", home.display());
    ok(mm(&["rm", "kid-dev"]));
    assert!(!home.exists());
}

#[test]
fn rootless_keep_id_is_you_without_a_chown_copy() {
    if !is_root() {
        return skip(
            "rootless_keep_id_is_you_without_a_chown_copy",
            "creating the test user needs root",
        );
    }
    let user = test_user("mm-test", Some(300_000));
    let tar = debian_tar();
    let dir = shared_tempdir();
    let proj = dir.path().join("proj");
    user.give(&proj);
    write(
        dir.path(),
        "kid-dev",
        &debian(&tar, &proj, "keep_id = true"),
    );
    user.give(dir.path());
    let state = dir.path().join("state");
    let mm = |args: &[&str]| {
        let mut command = user.mm(dir.path(), args);
        command.env("MM_ROOT", &state);
        command
    };
    let _stop = OnDrop(|| {
        let _ = mm(&["stop", "kid-dev", "--timeout", "1"]).output();
    });
    let plan = ok(mm(&["plan", "kid-dev"]));
    assert!(
        plan.contains(&format!("store layout keep-id-{}-", user.uid)),
        "{plan}"
    );
    ok(mm(&["start", "kid-dev"]));
    // The layers are in the keep-id layout only: one unpack, straight from the blob.
    let store = state.join("images");
    let layouts: Vec<String> = std::fs::read_dir(store.join("layouts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(layouts.len(), 1, "{layouts:?}");
    assert_eq!(
        std::fs::read_dir(store.join("layers")).unwrap().count(),
        0,
        "no default layout was unpacked"
    );
    the_user_is_the_host_user(&mm, "kid-dev", &proj);
}

#[test]
fn a_symlinked_etc_passwd_never_makes_mm_write_outside_the_machine() {
    if !is_root() {
        return skip(
            "a_symlinked_etc_passwd_never_makes_mm_write_outside_the_machine",
            "root machines need root",
        );
    }
    if !default_image_built() {
        panic!("images/busybox is missing: run scripts/build-busybox-image (scripts/setup does)");
    }
    settle_test_users();
    let _ = test_user("mm-test", Some(300_000));
    let m = Machines::new();
    let dir = m.dir.path();
    let watched = ["/etc/passwd", "/etc/shadow", "/etc/group"];
    let before: Vec<Option<Vec<u8>>> = watched.iter().map(|p| std::fs::read(p).ok()).collect();
    let cases = [
        ("toshadow", "/etc/shadow"),
        ("climbing", "../../../../etc/passwd"),
        ("viaproc", "/proc/self/fd/3"),
    ];
    let busybox = format!("oci:{}:latest", busybox().display());
    for (name, target) in cases {
        let rootfs = dir.join(format!("{name}-rootfs"));
        ok(support::mm(
            dir,
            &["image", "extract", &busybox, rootfs.to_str().unwrap()],
        ));
        let etc = rootfs.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("shadow"), "root:*:1::::::\n").unwrap();
        let _ = std::fs::remove_file(etc.join("passwd"));
        std::os::unix::fs::symlink(target, etc.join("passwd")).unwrap();
        // A sudoers.d that climbs out of the root, too: it lands in the machine's /bin.
        std::os::unix::fs::symlink("../../../../../bin", etc.join("sudoers.d")).unwrap();
        write(
            dir,
            name,
            &format!(
                "[image]\nsource = \"rootfs:{}\"\n[exec]\ncommand = [\"sleep\", \"1000\"]\n\
                 [storage]\npersistent = false\n[network]\nmode = \"host\"\n\
                 [users]\nkeep_id = \"mm-test\"\n",
                rootfs.display()
            ),
        );
    }
    let mm = |args: &[&str]| support::mm(dir, args);
    let _stop = OnDrop(|| {
        for (name, _) in cases {
            let _ = mm(&["stop", name, "--timeout", "1"]).output();
        }
    });
    for (name, target) in cases {
        ok(mm(&["start", name]));
        let inside = ok(mm(&[
            "exec",
            name,
            "--user",
            "root",
            "--",
            "sh",
            "-c",
            "cat /etc/passwd; echo --; cat /etc/shadow; echo --; cat /etc/sudoers.d/mm-mm-test",
        ]));
        let parts: Vec<&str> = inside.split("--\n").collect();
        assert_eq!(
            parts[0], "root:x:0:0:root:/root:/bin/sh\nmm-test:*:1001:100::/home/mm-test:/bin/sh\n",
            "{name} ({target}): the symlink is replaced by a file of mm's, with a root"
        );
        assert_eq!(
            parts[1], "root:*:1::::::\n",
            "{name}: the shadow file is untouched"
        );
        assert!(parts[2].starts_with("mm-test ALL="), "{name}: {inside}");
        let rootfs = dir.join(format!("{name}-rootfs/etc/passwd"));
        assert!(
            rootfs.symlink_metadata().unwrap().file_type().is_symlink(),
            "the image itself is not changed (the overlay's upper layer is)"
        );
    }
    let after: Vec<Option<Vec<u8>>> = watched.iter().map(|p| std::fs::read(p).ok()).collect();
    assert!(before == after, "the host's {watched:?} changed");
    assert!(!Path::new("/bin/mm-mm-test").exists());
}
