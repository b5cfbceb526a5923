//! System calls in the shape mm uses them: thin safe functions returning `io::Result`,
//! over rustix and nix where they have the call, and over `libc::syscall` only for what
//! neither wraps: `mount_setattr` (read-only and id-mapped mounts), a stackless `clone`
//! (fork-like, with namespace flags and `CLONE_PARENT`), `close_range` and the loopback
//! interface's flags (until netlink does it).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path contains a NUL byte"))
}

/// `clone(flags | SIGCHLD)` without a new stack: like `fork`, the child returns 0 and goes
/// on with a copy of the caller's memory. Returns the child's pid in the parent. (nix's
/// `clone` wants a stack and a callback; `fork` takes no flags.)
///
/// # Safety
/// As `fork`: the caller must be single-threaded (it is: the supervisor), and the child may
/// only rely on state it owns.
pub unsafe fn clone_fork(flags: libc::c_ulong) -> io::Result<libc::pid_t> {
    // SAFETY: with a null stack the kernel copies the caller's stack, as fork does; the
    // argument order is that of x86_64 and aarch64 (flags, stack, parent_tid, child_tid, tls).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    check(ret).map(|pid| pid as libc::pid_t)
}

/// Joins the namespace `fd` refers to, which must be of the `kind` given.
pub fn setns(fd: BorrowedFd<'_>, kind: rustix::thread::LinkNameSpaceType) -> io::Result<()> {
    Ok(rustix::thread::move_into_link_name_space(fd, Some(kind))?)
}

/// A detached copy of the mount at `path` (and below it, with `recursive`), relative to
/// `dir` (the working directory when `None`; the mount of `dir` itself for an empty path).
pub fn open_tree(dir: Option<BorrowedFd<'_>>, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    if path.as_os_str().is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    let dir = dir.unwrap_or(rustix::fs::CWD);
    Ok(rustix::mount::open_tree(dir, path, flags)?)
}

/// A detached mount of one file, `name`, holding `content`, on a small tmpfs of its own
/// (which lives as long as the file's mount does).
pub fn file_tree(name: &str, content: &[u8]) -> io::Result<OwnedFd> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
    use std::os::fd::AsFd as _;
    let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_set_string(fs.as_fd(), "size", "64k")?;
    rustix::mount::fsconfig_set_string(fs.as_fd(), "mode", "0755")?;
    rustix::mount::fsconfig_create(fs.as_fd())?;
    let flags = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let tmpfs = rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, flags)?;
    let file = rustix::fs::openat(
        &tmpfs,
        name,
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    )?;
    std::io::Write::write_all(&mut std::fs::File::from(file), content)?;
    open_tree(Some(tmpfs.as_fd()), Path::new(name), false)
}

/// A new, detached mount of `fstype` (no source, no data) in the caller's namespaces, with
/// the `MOUNT_ATTR_*` `attributes`.
pub fn new_fs(fstype: &str, attributes: u64) -> io::Result<OwnedFd> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
    use std::os::fd::AsFd as _;
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_create(fs.as_fd())?;
    let attributes = MountAttrFlags::from_bits_retain(attributes as u32);
    Ok(rustix::mount::fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        attributes,
    )?)
}

fn mount_setattr(mount: BorrowedFd<'_>, attr: &MountAttr, recursive: bool) -> io::Result<()> {
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `attr` is a live, correctly laid out `struct mount_attr`, and its size is
    // passed with it; the path is an empty C string.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Sets attributes (such as [`MOUNT_ATTR_RDONLY`]) on a detached or attached mount.
pub fn set_attributes(mount: BorrowedFd<'_>, set: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(mount, &attr, recursive)
}

/// Makes a detached mount show its files' owners through `userns`'s id map.
pub fn idmap(mount: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    mount_setattr(mount, &attr, false)
}

/// Attaches the detached mount `mount` on the directory or file `target` (an `O_PATH` fd).
pub fn move_mount_to_fd(mount: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    Ok(rustix::mount::move_mount(mount, "", target, "", flags)?)
}

/// Attaches the detached mount `mount` at `path`.
pub fn move_mount_to_path(mount: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
    Ok(rustix::mount::move_mount(
        mount,
        "",
        rustix::fs::CWD,
        path,
        flags,
    )?)
}

/// Makes `fd` this process's standard input, output and error.
pub fn dup_onto_standard_streams(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::dup2_stdin(fd)?;
    nix::unistd::dup2_stdout(fd)?;
    nix::unistd::dup2_stderr(fd)?;
    Ok(())
}

/// Makes `fd` the controlling terminal of this process (a session leader without one).
pub fn controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::process::ioctl_tiocsctty(fd)?)
}

/// Marks every descriptor from `first` up close-on-exec (`close_range`, which neither
/// rustix nor nix wraps).
pub fn close_on_exec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets descriptor flags.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(done).map(drop)
}

/// Asks the kernel to send `signal` to this process when its parent exits.
pub fn parent_death_signal(signal: rustix::process::Signal) -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(Some(
        signal,
    ))?)
}

/// Names this process's main thread (what `ps` and `top` show), 15 bytes at most.
pub fn set_name(name: &str) {
    let short: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    if let Ok(name) = CString::new(short) {
        // Only cosmetic: a process that cannot be named still works.
        let _ = rustix::thread::set_name(&name);
    }
}

/// Makes this process's next exec run under the AppArmor profile `name`, writing its
/// `exec` attribute (`/proc/self/attr/apparmor/exec`; before Linux 5.8 only the shared
/// `/proc/self/attr/exec` exists). Only through the proc file system on /proc, and
/// nothing below it may lead off it (`RESOLVE_NO_XDEV`): the root may be an image's
/// without a proc of its own, and in `exec` the container's processes may have mounted
/// over its proc. Non-blocking, so that a FIFO in its place fails rather than hangs.
pub fn apparmor_exec_profile(name: &str) -> io::Result<()> {
    let proc = rustix::fs::open(
        "/proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    if rustix::fs::fstatfs(&proc)?.f_type != libc::PROC_SUPER_MAGIC {
        return Err(io::Error::other(
            "/proc is not a proc file system (the container has no proc of its own there)",
        ));
    }
    let open = |below: &'static str| {
        rustix::fs::openat2(
            &proc,
            below,
            OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::NO_XDEV | ResolveFlags::NO_MAGICLINKS,
        )
        .map(|file| (file, below))
    };
    let (file, below) = match open("self/attr/apparmor/exec") {
        Err(rustix::io::Errno::NOENT) => open("self/attr/exec"),
        other => other,
    }
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("/proc/self/attr: {e}")))?;
    rustix::io::write(&file, format!("exec {name}").as_bytes())
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("/proc/{below}: {e}")))?;
    Ok(())
}

pub fn no_new_privs() -> io::Result<()> {
    Ok(rustix::thread::set_no_new_privs(true)?)
}

/// Makes this process the reaper of its orphaned descendants.
pub fn child_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) }.into())?;
    // SAFETY: the union member the previous call filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }.into()).map(drop)
}

/// Drops this process's resident copies of clean file pages: program text and read-only
/// data, its own and its libraries'. A supervisor or init that has finished starting a
/// machine keeps little of its code busy, yet every page it touched while starting stays
/// counted in its RSS. Only mappings that are read-only, private and wholly unmodified
/// (no anonymous, copied-on-write pages: not the relocated RELRO data) are dropped, so
/// their pages come back from the file, unchanged, if they are needed again.
pub fn release_clean_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(range) = fields.first().and_then(|f| f.split_once('-'))
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(range.0, 16),
                usize::from_str_radix(range.1, 16),
            )
        {
            let read_only = matches!(fields.get(1), Some(&"r-xp") | Some(&"r--p"));
            let file = fields.get(5).is_some_and(|p| p.starts_with('/'));
            candidate = (read_only && file).then_some((start, end));
        } else if fields.first() == Some(&"Anonymous:")
            && let Some((start, end)) = candidate.take()
            && fields.get(1) == Some(&"0")
        {
            // SAFETY: a private, read-only file mapping none of whose pages was copied:
            // dropping its pages loses nothing (they are read again from the file).
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}
