//! The machine's root: the overlay of the image's layers and its writable layer, the
//! plan's mounts inside it, and `pivot_root` into it.
//!
//! As root, the supervisor mounts the overlay (it may read the store's `trusted.overlay.*`
//! xattrs), with each layer seen through an id-mapped mount so that the store stays
//! shared and unshifted. Rootless, the machine's PID 1 mounts it inside its user namespace
//! with `userxattr`. Everything else happens in PID 1, in the machine's mount namespace:
//! each target is resolved inside the new root (`openat2` with `RESOLVE_IN_ROOT`), so no
//! symlink in an image can aim a mount at the host.
//!
//! As root, PID 1 runs as the machine's ids, which need not be able to walk the host's
//! path to the overlay or to a bind's source (a `0700` parent such as `/root`). So the
//! supervisor, still real root, *stages* them: a tmpfs at `RUNTIME/NAME/stage`, owned by
//! the machine's root, holding the overlay at `root` and each bind's source at its index
//! in the plan's mounts. The spawner makes the stage its working directory before it
//! gives up root; `unshare(CLONE_NEWNS)` carries the working directory into the new mount
//! namespace, and PID 1 reaches everything by names relative to it.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::launch::{Step, StepFailure};
use super::sys;
use crate::plan::{Layers, Mount, Plan, Upper};

/// Lower directories, top first, as overlayfs wants them.
fn lower_dirs(plan: &Plan) -> Result<Vec<PathBuf>, StepFailure> {
    match &plan.image.layers {
        Layers::Stored { layers, .. } => Ok(layers.iter().rev().map(|l| l.dir.clone()).collect()),
        Layers::Directory { path } => Ok(vec![path.clone()]),
        Layers::Unresolved => Err(StepFailure::other(
            "find the image's layers",
            "the image is not in the store",
        )),
    }
}

/// Where the writable layer lives; a volatile or read-only machine gets a tmpfs.
fn upper_and_work(plan: &Plan) -> (PathBuf, PathBuf, Option<PathBuf>) {
    let runtime = &plan.machine.runtime_dir;
    match &plan.root.upper {
        Upper::Persistent { upper, work } => (upper.clone(), work.clone(), None),
        Upper::Volatile { tmpfs } => (tmpfs.join("upper"), tmpfs.join("work"), Some(tmpfs.clone())),
        Upper::ReadOnly => {
            let tmpfs = runtime.join("volatile");
            (tmpfs.join("upper"), tmpfs.join("work"), Some(tmpfs))
        }
    }
}

/// Mounts the volatile tmpfs (if any) and makes the upper and work dirs, owned by `owner`.
fn prepare_upper(plan: &Plan, owner: Option<u32>) -> Result<(PathBuf, PathBuf), StepFailure> {
    let (upper, work, tmpfs) = upper_and_work(plan);
    if let Some(tmpfs) = tmpfs {
        std::fs::create_dir_all(&tmpfs).step(|| format!("create {}", tmpfs.display()))?;
        mount(
            Some("tmpfs"),
            &tmpfs,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700"),
        )
        .step(|| format!("mount tmpfs on {} (the volatile layer)", tmpfs.display()))?;
    }
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir).step(|| format!("create {}", dir.display()))?;
        if let Some(id) = owner {
            chown(dir, Some(id), Some(id)).step(|| format!("chown {} to {id}", dir.display()))?;
        }
    }
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))
        .step(|| format!("chmod {}", upper.display()))?;
    Ok((upper, work))
}

fn mount_overlay(
    plan: &Plan,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), StepFailure> {
    let target = &plan.root.mount_point;
    std::fs::create_dir_all(target).step(|| format!("create {}", target.display()))?;
    let mut data = OsString::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(":");
        }
        data.push(l);
    }
    data.push(",upperdir=");
    data.push(upper);
    data.push(",workdir=");
    data.push(work);
    for option in &plan.root.options {
        data.push(",");
        data.push(option);
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_os_str()),
    )
    .step(|| {
        format!(
            "mount overlay on {} ({} layers, upper {})",
            target.display(),
            lowers.len(),
            upper.display()
        )
    })
}

/// Root's side, in the supervisor's own mount namespace: every layer id-mapped through
/// `userns` under RUNTIME/layers, and the overlay on the plan's mount point.
pub fn mount_as_root(plan: &Plan, userns: BorrowedFd<'_>, root_id: u32) -> Result<(), StepFailure> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .step(|| "make the supervisor's mounts private".to_owned())?;
    let layers = plan.machine.runtime_dir.join("layers");
    std::fs::create_dir_all(&layers).step(|| format!("create {}", layers.display()))?;
    mount(
        Some("tmpfs"),
        &layers,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0700,size=64k"),
    )
    .step(|| format!("mount tmpfs on {}", layers.display()))?;
    let mut lowers = Vec::new();
    for (i, dir) in lower_dirs(plan)?.iter().enumerate() {
        let tree = sys::open_tree(None, dir, false)
            .step(|| format!("clone the mount of {}", dir.display()))?;
        if plan.root.idmapped_lowers {
            sys::idmap(tree.as_fd(), userns).step(|| {
                format!(
                    "id-map {} to the machine's ids from {root_id}",
                    dir.display()
                )
            })?;
        }
        let at = layers.join(i.to_string());
        std::fs::create_dir(&at).step(|| format!("create {}", at.display()))?;
        sys::move_mount_to_path(tree.as_fd(), &at)
            .step(|| format!("attach {} on {}", dir.display(), at.display()))?;
        lowers.push(at);
    }
    let (upper, work) = prepare_upper(plan, Some(root_id))?;
    mount_overlay(plan, &lowers, &upper, &work)?;
    stage(plan, root_id)
}

/// The directory the supervisor stages the overlay and the binds' sources in (root only).
pub fn stage_dir(plan: &Plan) -> PathBuf {
    plan.machine.runtime_dir.join("stage")
}

/// The staged name of the overlay, relative to the stage.
const STAGED_ROOT: &str = "root";

/// The staged name of the source of `plan.mounts[index]`, relative to the stage.
fn staged_source(index: usize) -> PathBuf {
    PathBuf::from(index.to_string())
}

/// Root's side: the overlay and every bind's source, attached in the stage (a tmpfs that
/// only the machine's root and host root may enter) while the supervisor is real root.
fn stage(plan: &Plan, root_id: u32) -> Result<(), StepFailure> {
    let stage = stage_dir(plan);
    std::fs::create_dir_all(&stage).step(|| format!("create {}", stage.display()))?;
    mount(
        Some("tmpfs"),
        &stage,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=0700,uid={root_id},gid={root_id},size=64k").as_str()),
    )
    .step(|| format!("mount tmpfs on {}", stage.display()))?;
    let attach = |source: &Path, name: &Path, readonly: bool, recursive: bool| {
        let at = stage.join(name);
        let tree = sys::open_tree(None, source, recursive)
            .step(|| format!("clone the mount of {}", source.display()))?;
        if readonly {
            sys::set_attributes(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, recursive)
                .step(|| format!("make {} read-only", source.display()))?;
        }
        if source.is_dir() {
            std::fs::create_dir(&at)
        } else {
            File::create_new(&at).map(drop)
        }
        .step(|| format!("create {}", at.display()))?;
        sys::move_mount_to_path(tree.as_fd(), &at)
            .step(|| format!("stage {} on {}", source.display(), at.display()))
    };
    attach(&plan.root.mount_point, Path::new(STAGED_ROOT), false, true)?;
    for (index, m) in plan.mounts.iter().enumerate() {
        if let Mount::Bind {
            source,
            readonly,
            recursive,
            ..
        } = m
        {
            attach(source, &staged_source(index), *readonly, *recursive)?;
        }
    }
    Ok(())
}

/// The rootless side, in PID 1's user and mount namespaces: the layers as they are.
pub fn mount_rootless(plan: &Plan) -> Result<(), StepFailure> {
    let lowers = lower_dirs(plan)?;
    let (upper, work) = prepare_upper(plan, None)?;
    mount_overlay(plan, &lowers, &upper, &work)
}

/// What is at a path inside the root, to make a mount point of the right kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Opens `target` (absolute, inside `root`) as an `O_PATH` fd, resolved inside the root;
/// `create` makes it (and its parents) when missing.
fn open_in_root(
    root: BorrowedFd<'_>,
    target: &str,
    create: Option<Kind>,
) -> io::Result<Option<OwnedFd>> {
    let relative = match target.trim_start_matches('/') {
        "" => ".",
        relative => relative,
    };
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    match rustix::fs::openat2(root, relative, flags, Mode::empty(), how) {
        Ok(fd) => return Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) if create.is_some() => {}
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let path = Path::new(relative);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let parent = open_in_root(root, &format!("/{}", parent.display()), Some(Kind::Dir))?
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    // The parent must be opened for real (not O_PATH) to create inside it.
    let dir = rustix::fs::openat(
        &parent,
        ".",
        OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )?;
    match create {
        Some(Kind::Dir) => match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        },
        _ => {
            rustix::fs::openat(
                &dir,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
        }
    }
    Ok(Some(rustix::fs::openat2(
        root,
        relative,
        flags,
        Mode::empty(),
        how,
    )?))
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn ms_flags(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Binds a detached clone of `source` (a host path) onto `target`.
fn bind(source: &Path, target: &OwnedFd, readonly: bool, recursive: bool) -> io::Result<()> {
    let tree = sys::open_tree(None, source, recursive)?;
    if readonly {
        sys::set_attributes(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, recursive)?;
    }
    sys::move_mount_to_fd(tree.as_fd(), target.as_fd())
}

/// One mount of the plan, inside the root at `root_path` (opened as `root`). A bind's
/// source is `source` itself, or the staged copy of it when given. `console` is the
/// pseudo-terminal's path, when the machine has one.
fn apply(
    root: BorrowedFd<'_>,
    root_path: &Path,
    m: &Mount,
    staged: Option<PathBuf>,
    console: Option<&Path>,
) -> Result<(), StepFailure> {
    match m {
        Mount::Fs {
            fstype,
            target,
            options,
        } => {
            let at = open_in_root(root, target, Some(Kind::Dir))
                .step(|| format!("create the mount point {target}"))?
                .ok_or_else(|| StepFailure::other(format!("create {target}"), "missing"))?;
            let (flags, data) = ms_flags(options);
            mount(
                Some(fstype.as_str()),
                &fd_path(&at),
                Some(fstype.as_str()),
                flags,
                Some(data.as_str()),
            )
            .step(|| format!("mount {fstype} on {target} ({})", options.join(",")))
        }
        Mount::Bind {
            source,
            target,
            readonly,
            recursive,
        } => {
            let from = staged.as_deref().unwrap_or(source);
            let kind = if from.is_dir() { Kind::Dir } else { Kind::File };
            let at = open_in_root(root, target, Some(kind))
                .step(|| format!("create the mount point {target}"))?
                .ok_or_else(|| StepFailure::other(format!("create {target}"), "missing"))?;
            bind(from, &at, *readonly, *recursive)
                .step(|| format!("bind {} on {target}", source.display()))
        }
        Mount::Mask { target, directory } => {
            let Some(at) = open_in_root(root, target, None).step(|| format!("open {target}"))?
            else {
                return Ok(());
            };
            if *directory {
                mount(
                    Some("tmpfs"),
                    &fd_path(&at),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=0,mode=0555"),
                )
                .step(|| format!("mask {target} with an empty tmpfs"))
            } else {
                bind(Path::new("/dev/null"), &at, false, false)
                    .step(|| format!("mask {target} with /dev/null"))
            }
        }
        Mount::ReadOnly { target } => {
            let Some(at) = open_in_root(root, target, None).step(|| format!("open {target}"))?
            else {
                return Ok(());
            };
            let tree = sys::open_tree(Some(at.as_fd()), Path::new(""), true)
                .step(|| format!("clone the mount of {target}"))?;
            sys::set_attributes(tree.as_fd(), sys::MOUNT_ATTR_RDONLY, true)
                .step(|| format!("make {target} read-only"))?;
            sys::move_mount_to_fd(tree.as_fd(), at.as_fd())
                .step(|| format!("remount {target} read-only"))
        }
        Mount::Console { target } => {
            let Some(pty) = console else { return Ok(()) };
            let at = open_in_root(root, target, Some(Kind::File))
                .step(|| format!("create {target}"))?
                .ok_or_else(|| StepFailure::other(format!("create {target}"), "missing"))?;
            bind(pty, &at, false, false)
                .step(|| format!("bind the console {} on {target}", pty.display()))
        }
        Mount::CgroupTree { mode, writable } => {
            super::cgroupfs::mount_tree(root_path, *mode, *writable).map_err(|e| {
                StepFailure::other("mount the cgroup tree on /sys/fs/cgroup", e.to_string())
            })
        }
        Mount::Symlink { target, points_to } => {
            let path = Path::new(target.trim_start_matches('/'));
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Ok(());
            };
            let dir = open_in_root(root, &format!("/{}", parent.display()), Some(Kind::Dir))
                .step(|| format!("open the directory of {target}"))?
                .ok_or_else(|| StepFailure::other(format!("open {target}"), "missing"))?;
            let dir = rustix::fs::openat(
                &dir,
                ".",
                OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
                Mode::empty(),
            )
            .map_err(io::Error::from)
            .step(|| format!("open the directory of {target}"))?;
            match rustix::fs::symlinkat(points_to.as_str(), &dir, name) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(e) => Err(io::Error::from(e)).step(|| format!("link {target} to {points_to}")),
            }
        }
    }
}

/// PID 1's part: the plan's mounts into the root, then `pivot_root` into it and a
/// read-only root if asked. As root, the working directory is the stage (see the module's
/// comment); rootless, the host's paths are the user's own and PID 1 uses them.
pub fn enter(plan: &Plan, console: Option<&Path>) -> Result<(), StepFailure> {
    let staged = plan.root.idmapped_lowers;
    let at = if staged {
        Path::new(STAGED_ROOT)
    } else {
        plan.root.mount_point.as_path()
    };
    let shown = plan.root.mount_point.display();
    // The supervisor's overlay came into this namespace locked (it was made by a more
    // privileged one), and pivot_root refuses a locked mount: bind it onto itself first.
    mount(
        Some(at),
        at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .step(|| format!("bind {shown} onto itself"))?;
    let root = rustix::fs::open(
        at,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .step(|| format!("open the new root {shown}"))?;
    // From here on the root is reached through its descriptor, never by its host path.
    let root_path = fd_path(&root);
    for (index, m) in plan.mounts.iter().enumerate() {
        let source = staged.then(|| staged_source(index));
        apply(root.as_fd(), &root_path, m, source, console)?;
    }
    if matches!(plan.root.upper, Upper::ReadOnly) {
        mount(
            None::<&str>,
            &root_path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .step(|| format!("remount {shown} read-only"))?;
    }
    pivot(&root, &plan.root.mount_point)
}

fn pivot(root: &OwnedFd, shown: &Path) -> Result<(), StepFailure> {
    // Stack the old root on the new one, then detach it: nothing of the host stays visible.
    nix::unistd::fchdir(root).step(|| format!("chdir {}", shown.display()))?;
    nix::unistd::pivot_root(".", ".").step(|| format!("pivot_root into {}", shown.display()))?;
    umount2(".", MntFlags::MNT_DETACH).step(|| "detach the host's root".to_owned())?;
    std::env::set_current_dir("/").step(|| "chdir /".to_owned())
}
