//! `mm bind NAME SRC DST`: a host path bound into a running machine, as `machinectl bind`
//! does for nspawn machines without a user namespace.
//!
//! A forked child (single-threaded, so it may change namespaces) does it with system
//! calls on what was prepared before the fork. As root, the host side copies SRC's mount
//! first (`open_tree(OPEN_TREE_CLONE)`, recursive). Rootless, the child joins the
//! machine's user namespace, makes a mount namespace of its own there (where it holds
//! `CAP_SYS_ADMIN`) and copies SRC in it. Then it makes the copy read-only if asked,
//! joins the machine's mount namespace (which makes the machine's root its own root),
//! resolves DST there with `openat2` (`RESOLVE_IN_ROOT`, no magic links), so no symlink
//! of the machine reaches the host, and attaches the copy with `move_mount`. It reports
//! the step that failed and its errno over a pipe.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

/// What `mm bind` could not do.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {} on {target} in machine {name}: {step}: {source}", source_path.display())]
pub struct BindError {
    pub name: String,
    pub source_path: PathBuf,
    pub target: String,
    /// What failed, in words (`join the machine's mount namespace`).
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

/// The child's steps, in order, as it reports them.
const STEPS: [&str; 8] = [
    "join the machine's user namespace",
    "make a mount namespace in the machine's user namespace",
    "copy the source's mount (open_tree)",
    "make the copy read-only",
    "join the machine's mount namespace",
    "open the machine's root",
    "find the target in the machine (it must exist)",
    "attach the copy (the kernel refuses a mount from the host's namespaces here)",
];

/// Binds the host path `source` on `target` (a path inside the machine, which must
/// exist) in the running machine whose PID 1 is `leader` on the host; read-only when
/// asked.
pub fn bind(
    name: &str,
    leader: i32,
    source: &Path,
    target: &str,
    readonly: bool,
) -> Result<(), BindError> {
    let fail = |step: &'static str, e: io::Error| BindError {
        name: name.to_owned(),
        source_path: source.to_owned(),
        target: target.to_owned(),
        step,
        source: e,
    };
    let ns = |kind: &str| {
        let path = format!("/proc/{leader}/ns/{kind}");
        File::open(&path).map(OwnedFd::from)
    };
    let mnt = ns("mnt").map_err(|e| fail("open the machine's mount namespace", e))?;
    let user = if nix::unistd::geteuid().is_root() {
        None
    } else {
        Some(ns("user").map_err(|e| fail("open the machine's user namespace", e))?)
    };
    // Root copies the source here; rootless, the child does, once it holds capabilities
    // (in a mount namespace of the machine's user namespace).
    let tree = match user {
        Some(_) => None,
        None => Some(
            super::sys::open_tree(None, source, true)
                .map_err(|e| fail("copy the source's mount (open_tree)", e))?,
        ),
    };
    let source_c = CString::new(source.as_os_str().as_encoded_bytes()).map_err(|e| {
        fail(
            "name the source",
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    let relative = target.trim_start_matches('/');
    let target_c = CString::new(if relative.is_empty() { "." } else { relative }).map_err(|e| {
        fail(
            "name the target",
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    let root_c = c"/";
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| fail("make a pipe", e.into()))?;
    // SAFETY: the child makes only system calls on descriptors and strings made above,
    // then _exit()s: nothing it does needs another thread or the allocator.
    match unsafe { fork() }.map_err(|e| fail("fork the binding process", e.into()))? {
        ForkResult::Child => {
            let (step, errno) = attach(&Prepared {
                user: user.as_ref().map(AsRawFd::as_raw_fd),
                mnt: mnt.as_raw_fd(),
                root: root_c.as_ptr(),
                source: source_c.as_ptr(),
                target: target_c.as_ptr(),
                tree: tree.as_ref().map(AsRawFd::as_raw_fd),
                readonly,
            });
            let mut message = [0u8; 8];
            message[..4].copy_from_slice(&step.to_ne_bytes());
            message[4..].copy_from_slice(&errno.to_ne_bytes());
            // SAFETY: write and _exit on this process's own pipe.
            unsafe {
                libc::write(report_w.as_raw_fd(), message.as_ptr().cast(), message.len());
                libc::_exit(i32::from(step != 0));
            }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            let mut answer = Vec::new();
            let read = File::from(report_r).read_to_end(&mut answer);
            let _ = waitpid(child, None);
            read.map_err(|e| fail("read the binding process's answer", e))?;
            let (step, errno) = match answer.as_slice() {
                [s0, s1, s2, s3, e0, e1, e2, e3] => (
                    i32::from_ne_bytes([*s0, *s1, *s2, *s3]),
                    i32::from_ne_bytes([*e0, *e1, *e2, *e3]),
                ),
                _ => {
                    return Err(fail(
                        "hear from the binding process",
                        io::Error::other("it ended without an answer"),
                    ));
                }
            };
            match usize::try_from(step).ok().and_then(|s| s.checked_sub(1)) {
                None => Ok(()),
                Some(i) => Err(fail(
                    STEPS.get(i).copied().unwrap_or("bind"),
                    io::Error::from_raw_os_error(errno),
                )),
            }
        }
    }
}

/// What the child works on, all made before the fork.
struct Prepared {
    /// The machine's user namespace, to join first (rootless only).
    user: Option<libc::c_int>,
    mnt: libc::c_int,
    root: *const libc::c_char,
    source: *const libc::c_char,
    target: *const libc::c_char,
    /// The source's copy, when made before the fork (as root).
    tree: Option<libc::c_int>,
    readonly: bool,
}

/// The child's part: raw system calls only. Returns the failed step (0: none, else its
/// place in [`STEPS`] plus one) and errno.
fn attach(p: &Prepared) -> (i32, i32) {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: system calls on valid descriptors and NUL-terminated strings that outlive
    // them; `how` and `attr` are correctly laid out kernel structures passed with their
    // sizes.
    unsafe {
        let tree = match (p.user, p.tree) {
            (_, Some(tree)) => tree,
            (Some(user), None) => {
                if libc::setns(user, libc::CLONE_NEWUSER) != 0 {
                    return (1, errno());
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return (2, errno());
                }
                let flags = libc::OPEN_TREE_CLONE
                    | libc::O_CLOEXEC as libc::c_uint
                    | libc::AT_RECURSIVE as libc::c_uint;
                let tree = libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.source, flags);
                if tree < 0 {
                    return (3, errno());
                }
                tree as libc::c_int
            }
            (None, None) => return (3, libc::EINVAL),
        };
        if p.readonly {
            let mut attr: libc::mount_attr = std::mem::zeroed();
            attr.attr_set = libc::MOUNT_ATTR_RDONLY;
            if libc::syscall(
                libc::SYS_mount_setattr,
                tree,
                c"".as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            ) != 0
            {
                return (4, errno());
            }
        }
        if libc::setns(p.mnt, libc::CLONE_NEWNS) != 0 {
            return (5, errno());
        }
        let root_fd = libc::open(p.root, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if root_fd < 0 {
            return (6, errno());
        }
        let mut how: libc::open_how = std::mem::zeroed();
        how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let at = libc::syscall(
            libc::SYS_openat2,
            root_fd,
            p.target,
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        );
        if at < 0 {
            return (7, errno());
        }
        let flags = 0x0000_0004 | 0x0000_0040; // MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
        if libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            at as libc::c_int,
            c"".as_ptr(),
            flags as libc::c_uint,
        ) != 0
        {
            return (8, errno());
        }
    }
    (0, 0)
}
