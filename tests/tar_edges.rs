//! Tar edge cases that real archives hit (`tests/fixtures/images/make-edges.py`): each case
//! imported into the store and extracted, as root and, where it matters, as an ordinary
//! user; where overlayfs is the judge, a real overlay mount of the stored layers.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use support::*;

/// The edge layouts, built once per test binary.
fn edges() -> &'static Path {
    static BUILT: OnceLock<tempfile::TempDir> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = shared_tempdir();
            let (out, stdout, stderr) = run({
                let mut c = Command::new("python3");
                c.arg(repo().join("tests/fixtures/images/make-edges.py"))
                    .arg(dir.path());
                c
            });
            assert!(out.status.success(), "make-edges.py: {stdout}{stderr}");
            dir
        })
        .path()
}

fn source(case: &str) -> String {
    format!("oci:{}/{case}:latest", edges().display())
}

/// A fresh MM_ROOT (and a place to extract to), owned by `user` when there is one.
struct Run {
    dir: tempfile::TempDir,
    user: Option<TestUser>,
}

impl Run {
    fn new(user: Option<TestUser>) -> Self {
        let dir = shared_tempdir();
        for sub in ["state", "out"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            if let Some(user) = &user {
                user.give(&dir.path().join(sub));
            }
        }
        Self { dir, user }
    }

    fn rootless() -> Option<Self> {
        if !is_root() {
            return None;
        }
        Some(Self::new(Some(test_user("mm-test", Some(300_000)))))
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn mm(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = match &self.user {
            Some(user) => user.mm(self.dir.path(), args),
            None => mm(self.dir.path(), args),
        };
        command.env("MM_ROOT", self.state());
        let (out, stdout, stderr) = run(command);
        (out.status.success(), stdout, stderr)
    }

    fn import(&self, case: &str) -> (bool, String, String) {
        self.mm(&["image", "import", &source(case)])
    }

    /// Extracts into `out/CASE`, returns its path and how it went.
    fn extract(&self, case: &str) -> (PathBuf, bool, String, String) {
        let to = self.dir.path().join("out").join(case);
        let (ok, stdout, stderr) = self.mm(&["image", "extract", &source(case), path(&to)]);
        (to, ok, stdout, stderr)
    }

    /// The stored layer directories of a case, lowest first.
    fn layers(&self, case: &str) -> Vec<PathBuf> {
        diff_ids(case)
            .iter()
            .map(|d| self.state().join("images/layers").join(d))
            .collect()
    }

    fn stored_layers(&self) -> usize {
        std::fs::read_dir(self.state().join("images/layers"))
            .map(|dir| dir.filter(|e| e.as_ref().unwrap().path().is_dir()).count())
            .unwrap_or(0)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The hex diff_ids of a case's image.
fn diff_ids(case: &str) -> Vec<String> {
    layout_diff_ids(&edges().join(case))
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("getxattr {name} on {}: {e}", path.display()),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Names, types and link targets of a tree, sorted (what overlayfs and extract must agree on).
fn shape(dir: &Path) -> String {
    find_listing(dir, "%p %y %l\n", false)
}

/// A read-only overlay of `layers` (lowest first) at a temporary mount point, unmounted
/// when dropped.
struct Overlay {
    at: tempfile::TempDir,
}

impl Overlay {
    fn mount(layers: &[PathBuf], opts: &str) -> Self {
        let at = shared_tempdir();
        let lower: Vec<&str> = layers.iter().rev().map(|p| path(p)).collect();
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={}{opts}", lower.join(":")))
            .arg(at.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount overlay of {lower:?}");
        Self { at }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.at.path()).status();
    }
}

// ------------------------------------------------------------------------- PAX sizes

#[test]
fn a_pax_size_record_overrides_the_ustar_size() {
    if !is_root() {
        return skip("a_pax_size_record_overrides_the_ustar_size", "runs as root");
    }
    let run = Run::new(None);
    let (ok, _, stderr) = run.import("pax-size");
    assert!(ok, "{stderr}");
    let layer = &run.layers("pax-size")[0];
    assert_eq!(read(&layer.join("file")), "hello world");
    assert_eq!(read(&layer.join("after")), "after\n");
    let (to, ok, _, stderr) = run.extract("pax-size");
    assert!(ok, "{stderr}");
    assert_eq!(read(&to.join("file")), "hello world");
    assert_eq!(read(&to.join("after")), "after\n");
}

#[test]
fn a_layer_that_ends_inside_an_entry_is_refused() {
    if !is_root() {
        return skip(
            "a_layer_that_ends_inside_an_entry_is_refused",
            "runs as root",
        );
    }
    for case in ["pax-truncated", "truncated"] {
        let run = Run::new(None);
        let (ok, _, stderr) = run.import(case);
        assert!(!ok, "{case}: the import must fail");
        assert!(
            stderr.contains("entry `file`") && stderr.contains("ends inside"),
            "{case}: {stderr}"
        );
        assert_eq!(run.stored_layers(), 0, "{case}: nothing enters the store");
        let (to, ok, _, stderr) = run.extract(case);
        assert!(!ok, "{case}: the extract must fail");
        assert!(stderr.contains("ends inside"), "{case}: {stderr}");
        assert!(!to.exists(), "{case}: nothing is left at {}", to.display());
    }
}

// ------------------------------------------------------------ symlinks to nowhere yet

#[test]
fn entries_below_a_dangling_symlink_create_its_target_inside_the_root() {
    if !is_root() {
        return skip("entries_below_a_dangling_symlink", "runs as root");
    }
    let run = Run::new(None);
    let (ok, _, stderr) = run.import("dangling-symlink");
    assert!(ok, "{stderr}");
    let layer = &run.layers("dangling-symlink")[0];
    let check = |root: &Path| {
        assert_eq!(
            std::fs::read_link(root.join("var/run")).unwrap(),
            Path::new("/run")
        );
        assert_eq!(read(&root.join("run/lock/file")), "lock\n");
        // `rel -> ../../../../made/here`: the `..` stop at the root, as RESOLVE_IN_ROOT's do.
        assert_eq!(read(&root.join("made/here/x")), "x\n");
        // `hop -> var/run/hop-target`: through a second symlink.
        assert_eq!(read(&root.join("run/hop-target/y")), "y\n");
    };
    check(layer);
    let (to, ok, _, stderr) = run.extract("dangling-symlink");
    assert!(ok, "{stderr}");
    check(&to);
    assert_eq!(read(&to.join("run/second")), "second\n");
    assert!(
        !Path::new("/made").exists() && !run.dir.path().join("made").exists(),
        "nothing is made outside the root"
    );
}

#[test]
fn a_symlink_loop_below_an_entry_is_refused() {
    if !is_root() {
        return skip("a_symlink_loop_below_an_entry_is_refused", "runs as root");
    }
    let run = Run::new(None);
    let (ok, _, stderr) = run.import("symlink-loop");
    assert!(!ok);
    assert!(
        stderr.contains("entry `loop1/x`") && stderr.contains("symbolic links"),
        "{stderr}"
    );
}

// --------------------------------------------------------------- overlay xattrs

#[test]
fn overlay_xattrs_from_the_layer_are_escaped() {
    if !is_root() {
        return skip("overlay_xattrs_from_the_layer_are_escaped", "runs as root");
    }
    let run = Run::new(None);
    let (ok, _, stderr) = run.import("overlay-xattrs");
    assert!(ok, "{stderr}");
    let layers = run.layers("overlay-xattrs");
    let upper = &layers[1];
    let opq = upper.join("opq");
    assert_eq!(xattr(&opq, "trusted.overlay.opaque"), None);
    assert_eq!(
        xattr(&opq, "trusted.overlay.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let f = upper.join("f");
    assert_eq!(xattr(&f, "trusted.overlay.redirect"), None);
    assert_eq!(
        xattr(&f, "trusted.overlay.overlay.redirect").as_deref(),
        Some(&b"/etc"[..])
    );
    assert_eq!(xattr(&f, "user.mm.plain").as_deref(), Some(&b"kept"[..]));
    // mm's own translation of `.wh..wh..opq` still marks its directory.
    assert_eq!(
        xattr(&upper.join("real-opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // What overlayfs shows: `opq` merges with the lower layer, `real-opq` does not.
    let overlay = Overlay::mount(&layers, "");
    let merged = overlay.at.path();
    assert!(merged.join("opq/lower-file").exists(), "opq is not opaque");
    assert!(merged.join("opq/upper-file").exists());
    assert!(!merged.join("real-opq/lower-file").exists(), "real-opq is");
}

#[test]
fn overlay_xattrs_from_the_layer_are_escaped_rootless() {
    let Some(run) = Run::rootless() else {
        return skip(
            "overlay_xattrs_from_the_layer_are_escaped_rootless",
            "creating users needs root",
        );
    };
    let (ok, _, stderr) = run.import("overlay-xattrs");
    assert!(ok, "{stderr}");
    let upper = &run.layers("overlay-xattrs")[1];
    let opq = upper.join("opq");
    assert_eq!(xattr(&opq, "user.overlay.opaque"), None);
    assert_eq!(
        xattr(&opq, "user.overlay.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let f = upper.join("f");
    assert_eq!(xattr(&f, "user.overlay.metacopy"), None);
    assert_eq!(
        xattr(&f, "user.overlay.overlay.metacopy").as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        xattr(&upper.join("real-opq"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

// ------------------------------------------------------------------ device numbers

#[test]
fn device_numbers_the_kernel_cannot_hold_are_refused() {
    if !is_root() {
        return skip("device_numbers_the_kernel_cannot_hold", "runs as root");
    }
    for (case, entry) in [
        ("big-major", "dev/big-major"),
        ("big-minor", "dev/big-minor"),
    ] {
        let run = Run::new(None);
        let (ok, _, stderr) = run.import(case);
        assert!(!ok, "{case}: the import must fail");
        assert!(
            stderr.contains(&format!("entry `{entry}`")) && stderr.contains("device number"),
            "{case}: {stderr}"
        );
        assert_eq!(run.stored_layers(), 0);
        let (to, ok, _, stderr) = run.extract(case);
        assert!(!ok && stderr.contains(entry), "{case}: {stderr}");
        assert!(!to.exists());
    }
}

// ------------------------------------------------------------------- PAX global headers

#[test]
fn a_global_header_creates_no_directory() {
    if !is_root() {
        return skip("a_global_header_creates_no_directory", "runs as root");
    }
    let run = Run::new(None);
    let (ok, _, stderr) = run.import("global-header-dir");
    assert!(ok, "{stderr}");
    let layer = &run.layers("global-header-dir")[0];
    assert!(layer.join("ok").is_file());
    assert!(!layer.join("gdir").exists(), "the global header made gdir/");
    let (to, ok, _, stderr) = run.extract("global-header-dir");
    assert!(ok, "{stderr}");
    assert!(!to.join("gdir").exists(), "the global header made gdir/");
}

// ------------------------------------------------------------------ rootless extract

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn rootless_extract_keeps_modes_and_says_what_it_dropped() {
    let Some(run) = Run::rootless() else {
        return skip(
            "rootless_extract_keeps_modes_and_says_what_it_dropped",
            "creating users needs root",
        );
    };
    let (to, ok, stdout, stderr) = run.extract("rootless-extract");
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("bin/capped") && stdout.contains("security.capability"),
        "the dropped capability is named: {stdout}"
    );
    assert_eq!(mode(&to.join("locked")), 0o000);
    assert_eq!(mode(&to.join("locked/sub")), 0o500);
    assert_eq!(mode(&to.join("readonly")), 0o555);
    assert_eq!(mode(&to.join("locked/sub/file")), 0o400);
    assert_eq!(read(&to.join("locked/file")), "inside a 000 directory\n");
    assert_eq!(read(&to.join("locked/later")), "from layer 2\n");
    assert_eq!(read(&to.join("locked/sub/file")), "deeper\n");
    let uid = run.user.as_ref().unwrap().uid;
    assert_eq!(
        std::fs::metadata(to.join("locked/file")).unwrap().uid(),
        uid
    );
}

#[test]
fn root_extract_keeps_the_capability() {
    if !is_root() {
        return skip("root_extract_keeps_the_capability", "runs as root");
    }
    let run = Run::new(None);
    let (to, ok, stdout, stderr) = run.extract("rootless-extract");
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("security.capability"), "{stdout}");
    assert!(xattr(&to.join("bin/capped"), "security.capability").is_some());
    assert_eq!(mode(&to.join("locked")), 0o000);
}

// -------------------------------------------------- whiteouts below a lower symlink

#[test]
fn a_whiteout_below_a_lower_symlink_gives_what_overlayfs_shows() {
    if !is_root() {
        return skip(
            "a_whiteout_below_a_lower_symlink_gives_what_overlayfs_shows",
            "overlay mounts need root",
        );
    }
    let run = Run::new(None);
    let (ok, _, stderr) = run.import("whiteout-lower-symlink");
    assert!(ok, "{stderr}");
    let overlay = Overlay::mount(&run.layers("whiteout-lower-symlink"), "");
    let (to, ok, _, stderr) = run.extract("whiteout-lower-symlink");
    assert!(ok, "{stderr}");
    assert_eq!(shape(&to), shape(overlay.at.path()));
    // The lower layer's files are not deleted through the symlink.
    assert_eq!(read(&to.join("modes/x")), "x\n");
    assert_eq!(read(&to.join("modes/keep")), "keep\n");
}
