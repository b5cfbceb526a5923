//! The calls the root's mounts are made of, behind [`Mounter`]: [`Kernel`] makes them;
//! `record.rs`'s recorder writes them down, so the exact sequence for a plan can be
//! reviewed and snapshotted without root.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::super::sys;
use crate::host::CgroupMode;
use crate::plan::CgroupHierarchy;

/// What is at a path inside the root, to make a mount point of the right kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Dir,
    File,
}

/// A mount target or source: a host path, or a descriptor of what was opened before.
#[derive(Clone, Copy)]
pub enum At<'a> {
    Path(&'a Path),
    Fd(BorrowedFd<'a>),
}

/// The system calls of the root's setup, in the words the setup uses.
pub trait Mounter {
    /// `mount(2)` of `fstype` (or a bind or remount, by `flags`) on `target`.
    fn mount(
        &mut self,
        source: Option<&OsStr>,
        target: At<'_>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> io::Result<()>;
    /// Makes a directory and its parents (a host path).
    fn make_dir(&mut self, path: &Path) -> io::Result<()>;
    /// Makes an empty file (a host path), which must not exist.
    fn make_file(&mut self, path: &Path) -> io::Result<()>;
    /// `chown` to `id:id`.
    fn chown(&mut self, path: &Path, id: u32) -> io::Result<()>;
    /// `chmod`.
    fn chmod(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    /// Whether `path` is a directory.
    fn is_dir(&mut self, path: &Path) -> bool;
    /// A detached copy (`open_tree`) of the mount at `from`, with its submounts if
    /// `recursive`.
    fn clone_tree(&mut self, from: At<'_>, recursive: bool) -> io::Result<OwnedFd>;
    /// A detached mount of one file `name` holding `content`, on a tmpfs of its own.
    fn file_tree(&mut self, name: &str, content: &[u8]) -> io::Result<OwnedFd>;
    /// A new, detached mount of `fstype` in the caller's namespaces, with `MOUNT_ATTR_*`
    /// `attributes` (`fsopen`, `fsmount`).
    fn new_fs(&mut self, fstype: &str, attributes: u64) -> io::Result<OwnedFd>;
    /// Makes a detached mount read-only.
    fn make_readonly(&mut self, tree: BorrowedFd<'_>, recursive: bool) -> io::Result<()>;
    /// Sets `MOUNT_ATTR_*` attributes on a mount (and those below it).
    fn set_attributes(&mut self, mount: BorrowedFd<'_>, attributes: u64) -> io::Result<()>;
    /// Shows a detached mount's owners through `userns`'s id map.
    fn idmap(&mut self, tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()>;
    /// Attaches a detached mount on `to`.
    fn attach(&mut self, tree: BorrowedFd<'_>, to: At<'_>) -> io::Result<()>;
    /// Opens a directory (the new root, say) as an `O_PATH` descriptor.
    fn open_dir(&mut self, path: &Path) -> io::Result<OwnedFd>;
    /// Opens `target` (absolute, inside `root`), resolved inside the root; `create` makes
    /// it and its parents when missing. `None`: missing, and not to be made.
    fn open_in_root(
        &mut self,
        root: BorrowedFd<'_>,
        target: &str,
        create: Option<Kind>,
    ) -> io::Result<Option<OwnedFd>>;
    /// Makes the symlink `name` in the directory `dir` (an `O_PATH` descriptor); an
    /// existing entry of that name is left as it is.
    fn symlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr, points_to: &str) -> io::Result<()>;
    /// The cgroup tree a booted machine sees, on `root`/sys/fs/cgroup.
    fn cgroup_tree(
        &mut self,
        root: BorrowedFd<'_>,
        mode: CgroupMode,
        hierarchies: &[CgroupHierarchy],
    ) -> io::Result<()>;
    /// `pivot_root` into `root`, then the old root detached: nothing of the host stays.
    fn pivot(&mut self, root: BorrowedFd<'_>) -> io::Result<()>;
}

/// The path that reaches what `fd` refers to, without walking any directory above it.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn path_of(at: At<'_>) -> PathBuf {
    match at {
        At::Path(path) => path.to_owned(),
        At::Fd(fd) => fd_path(fd),
    }
}

/// The real system calls.
pub struct Kernel;

impl Mounter for Kernel {
    fn mount(
        &mut self,
        source: Option<&OsStr>,
        target: At<'_>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> io::Result<()> {
        Ok(nix::mount::mount(
            source,
            &path_of(target),
            fstype,
            flags,
            data,
        )?)
    }

    fn make_dir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn make_file(&mut self, path: &Path) -> io::Result<()> {
        std::fs::File::create_new(path).map(drop)
    }

    fn chown(&mut self, path: &Path, id: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(id), Some(id))
    }

    fn chmod(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        path.is_dir()
    }

    fn clone_tree(&mut self, from: At<'_>, recursive: bool) -> io::Result<OwnedFd> {
        match from {
            At::Path(path) => sys::open_tree(None, path, recursive),
            At::Fd(fd) => sys::open_tree(Some(fd), Path::new(""), recursive),
        }
    }

    fn file_tree(&mut self, name: &str, content: &[u8]) -> io::Result<OwnedFd> {
        sys::file_tree(name, content)
    }

    fn new_fs(&mut self, fstype: &str, attributes: u64) -> io::Result<OwnedFd> {
        sys::new_fs(fstype, attributes)
    }

    fn make_readonly(&mut self, tree: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
        sys::set_attributes(tree, sys::MOUNT_ATTR_RDONLY, recursive)
    }

    fn set_attributes(&mut self, mount: BorrowedFd<'_>, attributes: u64) -> io::Result<()> {
        sys::set_attributes(mount, attributes, true)
    }

    fn idmap(&mut self, tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
        sys::idmap(tree, userns)
    }

    fn attach(&mut self, tree: BorrowedFd<'_>, to: At<'_>) -> io::Result<()> {
        match to {
            At::Path(path) => sys::move_mount_to_path(tree, path),
            At::Fd(fd) => sys::move_mount_to_fd(tree, fd),
        }
    }

    fn open_dir(&mut self, path: &Path) -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    fn open_in_root(
        &mut self,
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
        let parent = self
            .open_in_root(root, &format!("/{}", parent.display()), Some(Kind::Dir))?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let dir = real_dir(parent.as_fd())?;
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

    fn symlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr, points_to: &str) -> io::Result<()> {
        match rustix::fs::symlinkat(points_to, &real_dir(dir)?, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn cgroup_tree(
        &mut self,
        root: BorrowedFd<'_>,
        mode: CgroupMode,
        hierarchies: &[CgroupHierarchy],
    ) -> io::Result<()> {
        super::super::cgroupfs::mount_tree(&fd_path(root), mode, hierarchies)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn pivot(&mut self, root: BorrowedFd<'_>) -> io::Result<()> {
        // Stack the old root on the new one, then detach it.
        nix::unistd::fchdir(root)?;
        nix::unistd::pivot_root(".", ".")?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH)?;
        std::env::set_current_dir("/")
    }
}

/// A directory opened for real (not `O_PATH`), to create inside it.
fn real_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        ".",
        OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )?)
}
