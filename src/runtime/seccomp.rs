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

use serde::{Deserialize, Serialize};

use crate::plan::seccomp::Flag;

mod compiled {
    include!(concat!(env!("OUT_DIR"), "/seccomp_default.rs"));
}

/// The most instructions the kernel takes in one program (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

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

/// A compiled BPF program (a bundle's profile, from runtime/profile.rs), checked to be
/// whole instructions and within the kernel's bound. It travels to PID 1 in the
/// [`Launch`](super::launch::Launch), as base64 of its bytes (native-endian
/// `struct sock_filter`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    bytes: Vec<u8>,
    /// The flags of `seccomp(2)` it is loaded with.
    flags: Vec<Flag>,
}

/// Why bytes are not a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadProgram {
    #[error("{0} bytes are not whole BPF instructions (8 bytes each)")]
    Partial(usize),
    #[error("an empty BPF program")]
    Empty,
    #[error("{0} BPF instructions, more than the kernel's {MAX_INSTRUCTIONS}")]
    TooLong(usize),
}

impl Program {
    /// Checks `bytes` (an exported program, or a cache file's content).
    pub fn new(bytes: Vec<u8>, flags: Vec<Flag>) -> Result<Self, BadProgram> {
        if bytes.is_empty() {
            return Err(BadProgram::Empty);
        }
        if !bytes.len().is_multiple_of(8) {
            return Err(BadProgram::Partial(bytes.len()));
        }
        if bytes.len() / 8 > MAX_INSTRUCTIONS {
            return Err(BadProgram::TooLong(bytes.len() / 8));
        }
        Ok(Self { bytes, flags })
    }

    pub fn instructions(&self) -> usize {
        self.bytes.len() / 8
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn sock_filters(&self) -> Vec<libc::sock_filter> {
        self.bytes
            .chunks_exact(8)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect()
    }

    fn flag_bits(&self) -> libc::c_ulong {
        self.flags
            .iter()
            .map(|f| match f {
                Flag::Tsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
                Flag::Log => libc::SECCOMP_FILTER_FLAG_LOG,
                Flag::SpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            })
            .fold(0, |a, b| a | b)
    }
}

#[derive(Serialize, Deserialize)]
struct ProgramForm {
    bpf: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    flags: Vec<Flag>,
}

impl Serialize for Program {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        ProgramForm {
            bpf: base64::engine::general_purpose::STANDARD.encode(&self.bytes),
            flags: self.flags.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Program {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let form = ProgramForm::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&form.bpf)
            .map_err(serde::de::Error::custom)?;
        Program::new(bytes, form.flags).map_err(serde::de::Error::custom)
    }
}

/// Loads `filter` for this process and its future children. Needs `no_new_privs` or
/// `CAP_SYS_ADMIN` in the current user namespace. Allocates nothing.
pub fn install(filter: Filter) -> io::Result<()> {
    load(filter.program(), 0)
}

/// Loads a compiled profile, as [`install`] does.
pub fn install_program(program: &Program) -> io::Result<()> {
    load(&program.sock_filters(), program.flag_bits())
}

fn load(program: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at a well-formed BPF program the kernel copies.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
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

    /// A compiled program crosses to PID 1 (and into the supervisor's state, for `mm exec`)
    /// in the launch's JSON: it comes back the same, and bytes that are not a program are
    /// refused there too.
    #[test]
    fn a_program_survives_the_launch_json_and_bad_ones_are_refused() {
        let bytes: Vec<u8> = (0..64).collect();
        let program = Program::new(bytes.clone(), vec![Flag::Log]).unwrap();
        let json = serde_json::to_string(&program).unwrap();
        let back: Program = serde_json::from_str(&json).unwrap();
        assert_eq!(back, program);
        assert_eq!(back.flag_bits(), libc::SECCOMP_FILTER_FLAG_LOG);
        assert_eq!(back.instructions(), 8);
        for bad in [
            r#"{"bpf":"AAAA"}"#,
            r#"{"bpf":""}"#,
            r#"{"bpf":"not base64!"}"#,
        ] {
            assert!(serde_json::from_str::<Program>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Program::new(vec![0; 8 * (MAX_INSTRUCTIONS + 1)], vec![]),
            Err(BadProgram::TooLong(MAX_INSTRUCTIONS + 1))
        );
    }
}
