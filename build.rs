//! Compiles mm's default seccomp filter to BPF once, at build time, with libseccomp (which
//! handles every ABI of the architecture: i386 and x32 on x86_64). mm loads the result as
//! it is: nothing is compiled when a machine starts. (mm links libseccomp too, for OCI
//! bundles' own profiles: src/runtime/profile.rs.)

use std::io::{Read, Seek};
use std::path::PathBuf;

use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext, ScmpSyscall};

/// Calls that act on the whole host, which no user namespace confines, and the kernel
/// interfaces podman and systemd-nspawn keep from containers. They fail with EPERM.
/// (Keep in step with the list in src/runtime/seccomp.rs and docs/security.md.)
const DENIED: &[&str] = &[
    // kernel modules and replacing the kernel
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "kexec_load",
    "kexec_file_load",
    // the host's swap, accounting, clock and kernel log
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    // raw hardware and I/O ports
    "iopl",
    "ioperm",
    "pciconfig_read",
    "pciconfig_write",
    "pciconfig_iobase",
    // obsolete or host-wide interfaces
    "nfsservctl",
    "uselib",
    "vm86",
    "vm86old",
    "_sysctl",
    "ustat",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    // file handles that bypass path permissions, and kernel-wide observation
    "open_by_handle_at",
    "perf_event_open",
    "bpf",
    "userfaultfd",
    "fanotify_init",
    // the kernel keyring is not namespaced
    "add_key",
    "request_key",
    "keyctl",
];

fn arches() -> Vec<ScmpArch> {
    match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => vec![ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32],
        Ok("aarch64") => vec![ScmpArch::Aarch64, ScmpArch::Arm],
        _ => vec![ScmpArch::Native],
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let mut filter = ScmpFilterContext::new(ScmpAction::Allow).expect("a libseccomp filter");
    for arch in arches() {
        if !filter.is_arch_present(arch).unwrap_or(false) {
            filter
                .add_arch(arch)
                .expect("an architecture libseccomp knows");
        }
    }
    let mut denied = 0;
    for name in DENIED {
        // Not every call exists on every architecture; libseccomp skips those it cannot map.
        if let Ok(call) = ScmpSyscall::from_name(name)
            && filter
                .add_rule(ScmpAction::Errno(libc::EPERM), call)
                .is_ok()
        {
            denied += 1;
        }
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut file = tempfile_in(&out);
    filter
        .export_bpf(&mut file)
        .expect("export the filter as BPF");
    file.rewind().expect("rewind");
    let mut bpf = Vec::new();
    file.read_to_end(&mut bpf).expect("read the BPF back");
    // Each instruction is struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }, native-endian.
    let mut source = format!(
        "/// {denied} calls denied; {} instructions.\npub static DEFAULT: [libc::sock_filter; {}] = [\n",
        bpf.len() / 8,
        bpf.len() / 8
    );
    for ins in bpf.chunks_exact(8) {
        let code = u16::from_ne_bytes([ins[0], ins[1]]);
        let k = u32::from_ne_bytes([ins[4], ins[5], ins[6], ins[7]]);
        source.push_str(&format!(
            "    libc::sock_filter {{ code: {code:#06x}, jt: {}, jf: {}, k: {k:#010x} }},\n",
            ins[2], ins[3]
        ));
    }
    source.push_str("];\n");
    std::fs::write(out.join("seccomp_default.rs"), source).expect("write the filter");
}

fn tempfile_in(dir: &std::path::Path) -> std::fs::File {
    std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("seccomp_default.bpf"))
        .expect("a scratch file in OUT_DIR")
}
