//! mm's state (MM_ROOT) on a small tmpfs the test mounts (and unmounts when done): an
//! import that does not fit, a machine that fills its writable layer until ENOSPC, and
//! state files written on a full disk. Each must fail with an error naming what could not
//! be written, leave no temporary file behind, keep the store verifiable (`mm image check`
//! exits 0) and the other state intact, and work again once there is space. As root, and
//! as an ordinary user on a tmpfs root mounts for it.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// A tmpfs of `size` mounted on a fresh directory (owned by `uid` when given), unmounted
/// when dropped.
struct SmallFs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallFs {
    fn new(size: &str, owner: Option<u32>) -> Self {
        let dir = shared_tempdir();
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount).unwrap();
        let mut options = format!("size={size},mode=0755");
        if let Some(uid) = owner {
            options.push_str(&format!(",uid={uid},gid=100"));
        }
        nix::mount::mount(
            Some("tmpfs"),
            &mount,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap();
        Self { _dir: dir, mount }
    }

    /// Writes `filler` until the file system has no space left; its size.
    fn fill(&self) -> u64 {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a; 64 << 10];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        written
    }

    fn unfill(&self) {
        std::fs::remove_file(self.mount.join("filler")).unwrap();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every file under `dir` whose name says it is a temporary (`write_atomically`'s
/// `.NAME.PID.N.tmp`, `tempfile`'s `.tmp…`, the store's `tmp/` entries).
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let in_store_tmp = dir.ends_with("images/tmp");
            let atomic = name.starts_with('.') && name.ends_with(".tmp");
            if atomic || name.starts_with(".tmp") || in_store_tmp {
                found.push(path.clone());
            }
            // Not into machines' layers: what a machine writes is its own.
            if entry.file_type().unwrap().is_dir() && name != "upper" && name != "layers" {
                stack.push(path);
            }
        }
    }
    found
}

/// How the tests run mm: as root or as the test user, MM_ROOT on the small fs.
struct Caller<'a> {
    defs: &'a Path,
    root: PathBuf,
    user: Option<TestUser>,
}

impl Caller<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = match &self.user {
            None => mm(self.defs, args),
            Some(user) => user.mm(self.defs, args),
        };
        command.env("MM_ROOT", &self.root);
        command
    }

    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let (out, stdout, stderr) = run(self.command(args));
        assert!(!stderr.contains("panicked"), "mm {args:?}: {stderr}");
        (out.status.code(), stdout, stderr)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, Some(0), "mm {args:?}:\n{stdout}{stderr}");
        stdout
    }

    /// `mm image check` exits 0 with `layers` layers verified.
    fn store_verifies(&self, layers: usize) {
        let out = self.ok(&["image", "check"]);
        assert!(
            out.contains(&format!("OK: {layers} layers")),
            "expected {layers} verified layers:\n{out}"
        );
    }
}

/// A machine `filler` on busybox, running `sleep`, in `dir/machines`; and a rootfs tarball
/// that is larger than the small file system.
fn setup(dir: &Path) -> PathBuf {
    let machines = dir.join("machines");
    std::fs::create_dir_all(&machines).unwrap();
    std::fs::write(
        machines.join("filler.toml"),
        format!(
            "[image]\nsource = \"oci:{}:latest\"\n[exec]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
            busybox().display()
        ),
    )
    .unwrap();
    set_mode(&machines, 0o755);
    let big = dir.join("big.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&big).unwrap());
    let data: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, "big.bin", data.as_slice())
        .unwrap();
    tar.finish().unwrap();
    set_mode(&big, 0o644);
    big
}

fn story(test: &str, as_user: Option<TestUser>) {
    let dir = shared_tempdir();
    let big = setup(dir.path());
    let fs = SmallFs::new("8m", as_user.as_ref().map(|u| u.uid));
    let caller = Caller {
        defs: dir.path(),
        root: fs.mount.join("mm"),
        user: as_user,
    };
    let store = caller.root.join("images");
    let busybox = format!("oci:{}:latest", busybox().display());
    caller.ok(&["image", "import", &busybox]);
    caller.store_verifies(1);

    // 1. An import that does not fit: the store is named, nothing half-made is left, the
    //    image already there still verifies.
    let (code, _, stderr) = caller.run(&["image", "import", &format!("tar:{}", big.display())]);
    assert_eq!(code, Some(74), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "could not write into the image store at {}",
            store.display()
        )) && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(temporaries(&caller.root), Vec::<PathBuf>::new());
    caller.store_verifies(1);
    let listed = caller.ok(&["image", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    eprintln!(
        "{test}: import of a 12 MiB layer into an 8 MiB store refused: {}",
        stderr.trim()
    );

    // 2. The machine fills its writable layer: its own command fails; mm's commands work.
    caller.ok(&["start", "filler"]);
    let (code, _, stderr) = caller.run(&[
        "exec",
        "filler",
        "/bin/dd",
        "if=/dev/zero",
        "of=/fill",
        "bs=65536",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let status = caller.ok(&["status", "filler"]);
    assert!(status.starts_with("filler: running"), "{status}");
    let list = caller.ok(&["list"]);
    assert!(list.contains("running"), "{list}");
    caller.store_verifies(1);
    // The machine frees its space; everything works again.
    caller.ok(&["exec", "filler", "/bin/rm", "/fill"]);
    caller.ok(&["exec", "filler", "/bin/true"]);
    eprintln!(
        "{test}: a machine filled its writable layer: dd failed alone; status, list, check worked"
    );

    // 3. State files on a full disk: stop cannot record, says which file, leaves no
    //    temporary and the old record whole.
    let filled = fs.fill();
    let state = caller.root.join("run/filler/state.json");
    let (code, _, stderr) = caller.run(&["stop", "filler"]);
    assert_eq!(code, Some(74), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "filler stopped, but that could not be recorded in {}: No space left on device",
            state.display()
        )),
        "{stderr}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(
        record.get("Running").is_some() || record["state"] == "running",
        "{record}"
    );
    assert_eq!(temporaries(&caller.root), Vec::<PathBuf>::new());
    // `mm status` still tells: stopped, with why its record is behind.
    let (code, stdout, stderr) = caller.run(&["status", "filler"]);
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(stdout.starts_with("filler: stopped"), "{stdout}");
    assert!(
        stderr.contains(&format!("{}: No space left on device", state.display())),
        "{stderr}"
    );
    // A start on the full disk: refused, naming the file.
    let (code, _, stderr) = caller.run(&["start", "filler"]);
    assert_eq!(code, Some(74), "{stderr}");
    assert!(
        stderr.contains(caller.root.to_str().unwrap())
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(temporaries(&caller.root), Vec::<PathBuf>::new());
    caller.store_verifies(1);
    eprintln!(
        "{test}: {filled} bytes filled the disk; stop and start refused, naming the file: {}",
        stderr.trim()
    );

    // Space again: the machine is stopped, and starts and stops.
    fs.unfill();
    let (code, stdout, _) = caller.run(&["status", "filler"]);
    assert_eq!(code, Some(3), "{stdout}");
    caller.ok(&["start", "filler"]);
    caller.ok(&["stop", "filler"]);
    caller.ok(&["rm", "filler"]);
    caller.store_verifies(1);
    eprintln!("{test}: with space again: status, start, stop, rm and check worked");
}

#[test]
fn full_disks_give_errors_naming_the_file_and_leave_the_store_whole_as_root() {
    if !ready("full_disks_give_errors_naming_the_file_and_leave_the_store_whole_as_root") {
        return;
    }
    story("root", None);
}

#[test]
fn full_disks_give_errors_naming_the_file_and_leave_the_store_whole_rootless() {
    if !ready("full_disks_give_errors_naming_the_file_and_leave_the_store_whole_rootless") {
        return;
    }
    story("rootless", Some(test_user("mm-test", Some(300_000))));
}
