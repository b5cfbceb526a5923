//! mm's default seccomp filter, `mm-default`: compiled to BPF by `build.rs` (with
//! libseccomp, at build time) and loaded as it is, so starting a machine compiles nothing.
//!
//! It allows every call but those that act on the whole host, which no user namespace
//! confines (kernel modules, kexec, swap, the clock, the kernel log, I/O ports, the
//! keyring, `open_by_handle_at`, `bpf`, `perf_event_open`, …): they fail with EPERM, for
//! the native ABI and the compat ones (i386 and x32 on x86_64). `mount`, `unshare`,
//! `reboot` and friends stay allowed: the user namespace confines them, and a booted
//! systemd needs them. The list is in `build.rs` and docs/security.md.

use std::io;

mod compiled {
    include!(concat!(env!("OUT_DIR"), "/seccomp_default.rs"));
}

/// The filters a plan may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Default,
}

impl Filter {
    pub fn by_name(name: &str) -> Option<Filter> {
        (name == "mm-default").then_some(Filter::Default)
    }

    fn program(self) -> &'static [libc::sock_filter] {
        match self {
            Filter::Default => &compiled::DEFAULT,
        }
    }

    pub fn instructions(self) -> usize {
        self.program().len()
    }
}

/// Loads `filter` for this process and its future children. Needs `no_new_privs` or
/// `CAP_SYS_ADMIN` in the current user namespace. Allocates nothing.
pub fn install(filter: Filter) -> io::Result<()> {
    let program = filter.program();
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at a static, well-formed BPF program the kernel copies.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a child that loads the filter and tries calls; the child's exit status is a
    /// bit set of the checks that failed.
    #[test]
    fn host_wide_calls_fail_with_eperm_and_the_rest_work() {
        // SAFETY: the child makes raw system calls only, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut failed = 0;
            // SAFETY: prctl and raw syscalls with harmless arguments; nothing here allocates.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || install(Filter::Default).is_err()
                {
                    libc::_exit(100);
                }
                let eperm =
                    |ret: libc::c_long| ret == -1 && *libc::__errno_location() == libc::EPERM;
                if !eperm(libc::syscall(libc::SYS_init_module, 0usize, 0usize, 0usize)) {
                    failed |= 1;
                }
                if !eperm(libc::syscall(
                    libc::SYS_kexec_load,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )) {
                    failed |= 2;
                }
                if !eperm(libc::syscall(libc::SYS_swapoff, c"/nonexistent".as_ptr())) {
                    failed |= 4;
                }
                if !eperm(libc::syscall(libc::SYS_syslog, 3, 0usize, 0)) {
                    failed |= 8;
                }
                if libc::syscall(libc::SYS_getpid) <= 0 || libc::syscall(libc::SYS_unshare, 0) != 0
                {
                    failed |= 16;
                }
                libc::_exit(failed);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "failed checks (bits): {}",
            libc::WEXITSTATUS(status)
        );
        assert!(Filter::Default.instructions() > 40);
    }
}
