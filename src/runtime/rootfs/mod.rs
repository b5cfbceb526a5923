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
//!
//! Every system call goes through a [`Mounter`] (`mounter.rs`): the kernel, or the
//! recorder of `record.rs`, which gives a plan's exact sequence without root
//! ([`sequence`]; tests/plan_snapshots.rs snapshots it for every example).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::launch::{Step, StepFailure, WithStep};
use crate::plan::{Layers, Mount, Plan, Propagation, PropagationKind, Upper};

mod mounter;
mod record;

pub use mounter::{At, Kernel, Kind, Mounter};
pub use record::Recorder;

/// Lower directories, top first, as overlayfs wants them.
fn lower_dirs(plan: &Plan) -> Result<Vec<PathBuf>, StepFailure> {
    match &plan.image.layers {
        Layers::Stored { layers, .. } => Ok(layers.iter().rev().map(|l| l.dir.clone()).collect()),
        Layers::Directory { path } => Ok(vec![path.clone()]),
        Layers::Unresolved => Err(StepFailure::other(
            Step::FindLayers,
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
        Upper::ReadOnly | Upper::InPlace { .. } => {
            let tmpfs = runtime.join("volatile");
            (tmpfs.join("upper"), tmpfs.join("work"), Some(tmpfs))
        }
    }
}

fn os(s: &str) -> Option<&OsStr> {
    Some(OsStr::new(s))
}

/// Mounts a tmpfs on `at` (a host path, made if missing) with `options`.
fn tmpfs(m: &mut dyn Mounter, at: &Path, flags: MsFlags, options: &str) -> Result<(), StepFailure> {
    m.make_dir(at).step(|| Step::Create { path: at.into() })?;
    m.mount(os("tmpfs"), At::Path(at), Some("tmpfs"), flags, os(options))
        .step(|| Step::MountTmpfs { target: at.into() })
}

/// Mounts the volatile tmpfs (if any) and makes the upper and work dirs, owned by `owner`.
fn prepare_upper(
    m: &mut dyn Mounter,
    plan: &Plan,
    owner: Option<u32>,
) -> Result<(PathBuf, PathBuf), StepFailure> {
    let (upper, work, volatile) = upper_and_work(plan);
    if let Some(volatile) = volatile {
        tmpfs(
            m,
            &volatile,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0700",
        )?;
    }
    for dir in [&upper, &work] {
        m.make_dir(dir)
            .step(|| Step::Create { path: dir.clone() })?;
        if let Some(id) = owner {
            m.chown(dir, id).step(|| Step::Chown {
                path: dir.clone(),
                id,
            })?;
        }
    }
    m.chmod(&upper, 0o755).step(|| Step::Chmod {
        path: upper.clone(),
    })?;
    Ok((upper, work))
}

fn mount_overlay(
    m: &mut dyn Mounter,
    plan: &Plan,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), StepFailure> {
    let target = &plan.root.mount_point;
    m.make_dir(target).step(|| Step::Create {
        path: target.into(),
    })?;
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
    m.mount(
        os("overlay"),
        At::Path(target),
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_os_str()),
    )
    .step(|| Step::MountOverlay {
        target: target.into(),
        layers: lowers.len(),
        upper: upper.into(),
    })
}

/// Root's side, in the supervisor's own mount namespace: every layer id-mapped through
/// `userns` under RUNTIME/layers, the overlay on the plan's mount point, and the stage.
pub fn mount_as_root(
    m: &mut dyn Mounter,
    plan: &Plan,
    userns: BorrowedFd<'_>,
    root_id: u32,
) -> Result<(), StepFailure> {
    m.mount(
        None,
        At::Path(Path::new("/")),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .step(|| Step::PrivateMounts)?;
    let layers = plan.machine.runtime_dir.join("layers");
    tmpfs(m, &layers, MsFlags::MS_NOSUID, "mode=0700,size=64k")?;
    let mut lowers = Vec::new();
    for (i, dir) in lower_dirs(plan)?.iter().enumerate() {
        let tree = m
            .clone_tree(At::Path(dir), false)
            .step(|| Step::CloneMount { path: dir.clone() })?;
        if plan.root.idmapped_lowers {
            m.idmap(tree.as_fd(), userns).step(|| Step::IdMapMount {
                path: dir.clone(),
                from: root_id,
            })?;
        }
        let at = layers.join(i.to_string());
        m.make_dir(&at).step(|| Step::Create { path: at.clone() })?;
        m.attach(tree.as_fd(), At::Path(&at))
            .step(|| Step::Attach {
                source: dir.clone(),
                target: at.clone(),
            })?;
        lowers.push(at);
    }
    let (upper, work) = prepare_upper(m, plan, Some(root_id))?;
    mount_overlay(m, plan, &lowers, &upper, &work)?;
    stage(m, plan, root_id)
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
fn stage(m: &mut dyn Mounter, plan: &Plan, root_id: u32) -> Result<(), StepFailure> {
    let stage = stage_dir(plan);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let options = format!("mode=0700,uid={root_id},gid={root_id},size=64k");
    tmpfs(m, &stage, flags, &options)?;
    // The overlay's mount point is a directory; a bind's source is looked at.
    let mut attach = |source: &Path, name: &Path, readonly: bool, recursive: bool, dir: bool| {
        let at = stage.join(name);
        let tree = m
            .clone_tree(At::Path(source), recursive)
            .step(|| Step::CloneMount {
                path: source.into(),
            })?;
        if readonly {
            m.make_readonly(tree.as_fd(), recursive)
                .step(|| Step::MakeReadOnly {
                    path: source.into(),
                })?;
        }
        if dir || m.is_dir(source) {
            m.make_dir(&at)
        } else {
            m.make_file(&at)
        }
        .step(|| Step::Create { path: at.clone() })?;
        m.attach(tree.as_fd(), At::Path(&at))
            .step(|| Step::StageMount {
                source: source.into(),
                target: at.clone(),
            })
    };
    attach(
        &plan.root.mount_point,
        Path::new(STAGED_ROOT),
        false,
        true,
        true,
    )?;
    for (index, mount) in plan.mounts.iter().enumerate() {
        if let Mount::Bind {
            source,
            readonly,
            recursive,
            ..
        } = mount
        {
            attach(source, &staged_source(index), *readonly, *recursive, false)?;
        }
    }
    for (index, mount) in plan.mounts.iter().enumerate() {
        if let Mount::HostTmpfs { options, .. } = mount {
            let (flags, data) = ms_flags(options);
            let owned = format!("{data},uid={root_id},gid={root_id}");
            tmpfs(m, &stage.join(staged_source(index)), flags, &owned)?;
        }
    }
    Ok(())
}

/// The rootless side, in PID 1's user and mount namespaces: the layers as they are.
pub fn mount_rootless(m: &mut dyn Mounter, plan: &Plan) -> Result<(), StepFailure> {
    let lowers = lower_dirs(plan)?;
    if let (Upper::InPlace { .. }, [dir]) = (&plan.root.upper, lowers.as_slice()) {
        return bind_in_place(m, plan, dir);
    }
    let (upper, work) = prepare_upper(m, plan, None)?;
    mount_overlay(m, plan, &lowers, &upper, &work)
}

/// An OCI bundle's root: its directory bound (with what is mounted below it) on the
/// plan's mount point, no overlay.
fn bind_in_place(m: &mut dyn Mounter, plan: &Plan, dir: &Path) -> Result<(), StepFailure> {
    let target = &plan.root.mount_point;
    m.make_dir(target).step(|| Step::Create {
        path: target.into(),
    })?;
    let tree = m
        .clone_tree(At::Path(dir), true)
        .step(|| Step::CloneMount { path: dir.into() })?;
    m.attach(tree.as_fd(), At::Path(target))
        .step(|| Step::Attach {
            source: dir.into(),
            target: target.clone(),
        })
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
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            "rw" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Binds a detached clone of `source` onto `target`.
fn bind(
    m: &mut dyn Mounter,
    source: At<'_>,
    target: &OwnedFd,
    readonly: bool,
    recursive: bool,
) -> io::Result<()> {
    let tree = m.clone_tree(source, recursive)?;
    if readonly {
        m.make_readonly(tree.as_fd(), recursive)?;
    }
    m.attach(tree.as_fd(), At::Fd(target.as_fd()))
}

/// `target` resolved inside the root, made as `kind` when missing.
fn mount_point(
    m: &mut dyn Mounter,
    root: BorrowedFd<'_>,
    target: &str,
    kind: Kind,
) -> Result<OwnedFd, StepFailure> {
    m.open_in_root(root, target, Some(kind))
        .step(|| Step::CreateMountPoint {
            target: target.to_owned(),
        })?
        .ok_or_else(|| {
            StepFailure::other(
                Step::Create {
                    path: target.into(),
                },
                "missing",
            )
        })
}

/// One mount of the plan, inside the root (opened as `root`). A bind's source is
/// `source` itself, or the staged copy of it when given. `console` is the
/// pseudo-terminal's path, when the machine has one.
fn apply(
    m: &mut dyn Mounter,
    root: BorrowedFd<'_>,
    mount: &Mount,
    staged: Option<PathBuf>,
    console: Option<&Path>,
    made: Option<BorrowedFd<'_>>,
) -> Result<(), StepFailure> {
    match mount {
        Mount::HostFs { fstype, target, .. } => {
            let step = || Step::Attach {
                source: PathBuf::from(fstype),
                target: PathBuf::from(target),
            };
            let Some(made) = made else {
                return Err(StepFailure::other(
                    step(),
                    "the spawner made no such file system",
                ));
            };
            let at = mount_point(m, root, target, Kind::Dir)?;
            m.attach(made, At::Fd(at.as_fd())).step(step)
        }
        Mount::Fs {
            fstype,
            target,
            options,
            source,
        } => {
            let at = mount_point(m, root, target, Kind::Dir)?;
            let (flags, data) = ms_flags(options);
            m.mount(
                os(source.as_deref().unwrap_or(fstype)),
                At::Fd(at.as_fd()),
                Some(fstype.as_str()),
                flags,
                os(&data),
            )
            .step(|| Step::Mount {
                fstype: fstype.to_string(),
                target: target.to_string(),
                options: options.clone(),
            })
        }
        Mount::HostTmpfs { target, .. } => {
            // The supervisor mounted it in the stage; without a stage there is none.
            let Some(from) = staged.as_deref() else {
                return Err(StepFailure::other(
                    Step::Bind {
                        source: PathBuf::from("tmpfs"),
                        target: target.to_string(),
                    },
                    "a tmpfs made by host root needs the stage (mm runs as root)",
                ));
            };
            let at = mount_point(m, root, target, Kind::Dir)?;
            bind(m, At::Path(from), &at, false, false).step(|| Step::Bind {
                source: from.to_owned(),
                target: target.to_string(),
            })
        }
        Mount::Bind {
            source,
            target,
            readonly,
            recursive,
        } => {
            let from = staged.as_deref().unwrap_or(source);
            let kind = if m.is_dir(from) {
                Kind::Dir
            } else {
                Kind::File
            };
            let at = mount_point(m, root, target, kind)?;
            bind(m, At::Path(from), &at, *readonly, *recursive).step(|| Step::Bind {
                source: source.clone(),
                target: target.to_string(),
            })
        }
        Mount::Mask { target, directory } => mask(m, root, target, Some(*directory)),
        Mount::MaskPath { target } => mask(m, root, target, None),
        Mount::Restrict {
            target,
            nosuid,
            nodev,
            noexec,
        } => {
            let step = || Step::Restrict {
                target: target.clone(),
            };
            let at = m.open_in_root(root, target, None).step(step)?;
            let at = at.ok_or_else(|| StepFailure::other(step(), "it is missing"))?;
            let attributes = [
                (*nosuid, super::sys::MOUNT_ATTR_NOSUID),
                (*nodev, super::sys::MOUNT_ATTR_NODEV),
                (*noexec, super::sys::MOUNT_ATTR_NOEXEC),
            ]
            .into_iter()
            .filter_map(|(on, flag)| on.then_some(flag))
            .fold(0, |all, flag| all | flag);
            m.set_attributes(at.as_fd(), attributes).step(step)
        }
        Mount::Propagate {
            target,
            propagation,
        } => {
            let step = || Step::Propagate {
                target: target.clone(),
                propagation: *propagation,
            };
            let at = m.open_in_root(root, target, None).step(step)?;
            let at = at.ok_or_else(|| StepFailure::other(step(), "it is missing"))?;
            m.mount(
                None,
                At::Fd(at.as_fd()),
                None,
                propagation_flags(*propagation),
                None,
            )
            .step(step)
        }
        Mount::ReadOnly { target } => {
            let Some(at) = m.open_in_root(root, target, None).step(|| Step::Open {
                path: target.into(),
            })?
            else {
                return Ok(());
            };
            bind(m, At::Fd(at.as_fd()), &at, true, true).step(|| Step::RemountReadOnly {
                path: target.into(),
            })
        }
        Mount::Console { target } => {
            let Some(pty) = console else { return Ok(()) };
            let at = mount_point(m, root, target, Kind::File)?;
            bind(m, At::Path(pty), &at, false, false).step(|| Step::BindConsole {
                pty: pty.into(),
                target: target.to_string(),
            })
        }
        Mount::CgroupTree { mode, hierarchies } => m
            .cgroup_tree(root, *mode, hierarchies)
            .step(|| Step::CgroupTree),
        Mount::Symlink { target, points_to } => symlink(m, root, target, points_to),
        Mount::File { target, content } => {
            let at = mount_point(m, root, target, Kind::File)?;
            let name = Path::new(target)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file");
            let step = || Step::WriteFile {
                target: target.clone(),
            };
            let tree = m.file_tree(name, content.as_bytes()).step(step)?;
            m.make_readonly(tree.as_fd(), false).step(step)?;
            m.attach(tree.as_fd(), At::Fd(at.as_fd())).step(step)
        }
    }
}

/// Hides `target` (if the image has it) behind an empty read-only tmpfs (a directory) or
/// `/dev/null` (a file); `directory` `None`: whichever `target` is.
fn mask(
    m: &mut dyn Mounter,
    root: BorrowedFd<'_>,
    target: &str,
    directory: Option<bool>,
) -> Result<(), StepFailure> {
    let Some(at) = m.open_in_root(root, target, None).step(|| Step::Open {
        path: target.into(),
    })?
    else {
        return Ok(());
    };
    let directory = match directory {
        Some(directory) => directory,
        None => rustix::fs::fstat(&at)
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
            .map_err(io::Error::from)
            .step(|| Step::Open {
                path: target.into(),
            })?,
    };
    if directory {
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        m.mount(
            os("tmpfs"),
            At::Fd(at.as_fd()),
            Some("tmpfs"),
            flags,
            os("size=0,mode=0555"),
        )
        .step(|| Step::MaskTmpfs {
            target: target.to_owned(),
        })
    } else {
        bind(m, At::Path(Path::new("/dev/null")), &at, false, false).step(|| Step::MaskNull {
            target: target.to_owned(),
        })
    }
}

/// The symlink `target` (inside the root) to `points_to`, its directory made if missing.
fn symlink(
    m: &mut dyn Mounter,
    root: BorrowedFd<'_>,
    target: &str,
    points_to: &str,
) -> Result<(), StepFailure> {
    let path = Path::new(target.trim_start_matches('/'));
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = mount_point(m, root, &format!("/{}", parent.display()), Kind::Dir)?;
    m.symlink(dir.as_fd(), name, points_to).step(|| Step::Link {
        target: target.to_owned(),
        points_to: points_to.to_owned(),
    })
}

/// PID 1's part: the plan's mounts into the root, then `pivot_root` into it and a
/// read-only root if asked. As root, the working directory is the stage (see the module's
/// comment); rootless, the host's paths are the user's own and PID 1 uses them.
/// The plan's [`Mount::HostFs`] file systems, made as host root in the namespaces the
/// spawner joined, before it enters the machine's user namespace: each with its index in
/// the plan's mounts, for [`enter`] to attach.
pub fn make_host_fs(
    m: &mut dyn Mounter,
    plan: &Plan,
) -> Result<Vec<(usize, OwnedFd)>, StepFailure> {
    let mut made = Vec::new();
    for (index, mount) in plan.mounts.iter().enumerate() {
        let Mount::HostFs {
            fstype,
            target,
            options,
        } = mount
        else {
            continue;
        };
        let mut attributes = 0;
        for option in options {
            attributes |= match option.as_str() {
                "ro" => super::sys::MOUNT_ATTR_RDONLY,
                "nosuid" => super::sys::MOUNT_ATTR_NOSUID,
                "nodev" => super::sys::MOUNT_ATTR_NODEV,
                "noexec" => super::sys::MOUNT_ATTR_NOEXEC,
                "noatime" => super::sys::MOUNT_ATTR_NOATIME,
                "strictatime" => super::sys::MOUNT_ATTR_STRICTATIME,
                "nodiratime" => super::sys::MOUNT_ATTR_NODIRATIME,
                _ => 0,
            };
        }
        let fd = m.new_fs(fstype, attributes).step(|| Step::Mount {
            fstype: fstype.clone(),
            target: target.clone(),
            options: options.clone(),
        })?;
        made.push((index, fd));
    }
    Ok(made)
}

/// PID 1 enters its root: the plan's mounts inside it (`made`: what
/// [`make_host_fs`] made), then `before_pivot` (an OCI bundle's createContainer hooks),
/// then `pivot_root`.
pub fn enter(
    m: &mut dyn Mounter,
    plan: &Plan,
    console: Option<&Path>,
    made: &[(usize, OwnedFd)],
    before_pivot: &mut dyn FnMut() -> Result<(), StepFailure>,
) -> Result<(), StepFailure> {
    let staged = plan.root.idmapped_lowers;
    let at = if staged {
        Path::new(STAGED_ROOT)
    } else {
        plan.root.mount_point.as_path()
    };
    let shown = plan.root.mount_point.clone();
    // The supervisor's overlay came into this namespace locked (it was made by a more
    // privileged one), and pivot_root refuses a locked mount: bind it onto itself first.
    m.mount(
        Some(at.as_os_str()),
        At::Path(at),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .step(|| Step::BindRoot {
        root: shown.clone(),
    })?;
    // From here on the root is reached through its descriptor, never by its host path.
    let root = m.open_dir(at).step(|| Step::OpenRoot {
        root: shown.clone(),
    })?;
    for (index, mount) in plan.mounts.iter().enumerate() {
        let source = staged.then(|| staged_source(index));
        let fd = made
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, fd)| fd.as_fd());
        apply(m, root.as_fd(), mount, source, console, fd)?;
    }
    if matches!(
        plan.root.upper,
        Upper::ReadOnly | Upper::InPlace { readonly: true }
    ) {
        m.mount(
            None,
            At::Fd(root.as_fd()),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )
        .step(|| Step::RemountReadOnly {
            path: shown.clone(),
        })?;
    }
    before_pivot()?;
    m.pivot(root.as_fd()).step(|| Step::PivotRoot {
        root: shown.clone(),
    })?;
    // Not before: pivot_root refuses a shared root.
    if let Some(propagation) = plan.root.propagation {
        let root = Path::new("/");
        m.mount(
            None,
            At::Path(root),
            None,
            propagation_flags(propagation),
            None,
        )
        .step(|| Step::Propagate {
            target: "/".to_owned(),
            propagation,
        })?;
    }
    Ok(())
}

/// The mount(2) flags that give a mount `propagation`.
fn propagation_flags(propagation: Propagation) -> MsFlags {
    let kind = match propagation.kind {
        PropagationKind::Shared => MsFlags::MS_SHARED,
        PropagationKind::Slave => MsFlags::MS_SLAVE,
        PropagationKind::Private => MsFlags::MS_PRIVATE,
        PropagationKind::Unbindable => MsFlags::MS_UNBINDABLE,
    };
    if propagation.recursive {
        kind | MsFlags::MS_REC
    } else {
        kind
    }
}

/// The exact sequence of calls that set up `plan`'s root, as the recorder writes them:
/// the supervisor's part (root only) and then PID 1's, with a console at `/dev/pts/0`
/// when the plan has one.
pub fn sequence(plan: &Plan) -> Result<Vec<String>, StepFailure> {
    let mut recorder = Recorder::default();
    let console = Path::new("/dev/pts/0");
    if plan.root.idmapped_lowers {
        let userns = recorder
            .fd("the machine's user namespace")
            .step(|| Step::Open {
                path: "/dev/null".into(),
            })?;
        recorder.say_section("the supervisor, real root, in its own mount namespace");
        mount_as_root(&mut recorder, plan, userns.as_fd(), 589_824)?;
        recorder.say_section("PID 1, in the stage, in the machine's namespaces");
    }
    let made = if plan
        .mounts
        .iter()
        .any(|m| matches!(m, Mount::HostFs { .. }))
    {
        recorder.say_section(if plan.joins(crate::plan::Namespace::Pid) {
            "PID 1, cloned into the joined PID namespace, still host root in the joined namespaces"
        } else {
            "the spawner, host root, in the namespaces it joined"
        });
        make_host_fs(&mut recorder, plan)?
    } else {
        Vec::new()
    };
    if !plan.root.idmapped_lowers {
        recorder.say_section("PID 1, in the machine's namespaces");
        mount_rootless(&mut recorder, plan)?;
    }
    enter(&mut recorder, plan, Some(console), &made, &mut || Ok(()))?;
    Ok(recorder.lines().to_vec())
}
