//! Host facts: everything mm needs to know about the system, probed once, up front.
//!
//! The plan compiler takes a [`Host`] as a plain value and never looks at the system
//! itself, so tests compile plans for fixed root and rootless hosts.

pub mod account;
mod bus;
mod cgroup;
mod desktop;
mod dirs;
mod network;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use account::{HostAccount, HostGroup};
pub use bus::{BusFacts, MACHINED, Probe};
pub use cgroup::{CgroupFacts, CgroupMode, V1Hierarchy};
pub use desktop::{DesktopFacts, DeviceNode, Gpu, Nvidia, Places, Probed, X11, local_display};
pub use dirs::{Dirs, ENV_PATH, ENV_ROOT, home, root_not_a_dir};
pub use network::{NetworkFacts, Pools, Resolvers, Route, Uplink, uplink};

use crate::idmap::{IdRange, parse_subid};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The effective user mm runs as.
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: PathBuf,
    /// The user's ranges in /etc/subuid and /etc/subgid.
    pub subuid: Vec<IdRange>,
    pub subgid: Vec<IdRange>,
    pub cgroup: CgroupFacts,
    pub dirs: Dirs,
    pub bus: BusFacts,
    /// Whether systemd runs as PID 1 (it has /run/systemd/system, as sd_booted(3) checks).
    pub systemd_pid1: bool,
    /// The cgroup of the systemd unit mm runs as, when told to stay in it
    /// (`mm run --keep-unit`, as `mm@.service` does): the machine's cgroup goes below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_cgroup: Option<String>,
    /// Its IPv4 routes, uplink and name servers (for machines with a network of their own).
    #[serde(default)]
    pub network: NetworkFacts,
    /// The caller's desktop sockets and the host's GPU devices, for `[desktop]`.
    #[serde(default)]
    pub desktop: DesktopFacts,
    /// The OCI name of this machine's architecture (`amd64`, `arm64`, …), to pick images.
    pub arch: String,
    /// Things noticed while probing that the user may want to know.
    pub notes: Vec<String>,
}

impl Host {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Probes the running system. Never fails: what cannot be read is noted and left empty.
    pub fn probe() -> Self {
        Self::probe_with(BusFacts::probe)
    }

    /// As [`Host::probe`], without the buses (see [`BusFacts::not_probed`]).
    pub fn probe_without_buses(why: &str) -> Self {
        Self::probe_with(|| BusFacts::not_probed(why))
    }

    fn probe_with(bus: impl FnOnce() -> BusFacts) -> Self {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let mut notes = Vec::new();
        let account = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        let user = account
            .as_ref()
            .map_or_else(|| uid.to_string(), |a| a.name.clone());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .or_else(|| account.as_ref().map(|a| a.dir.clone()))
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut subids = |file: &str| {
            // Bytes, not UTF-8: one line of another encoding must not hide the others
            // (shadow's tools skip only that line).
            let text = match std::fs::read(file) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    notes.push(format!("cannot read {file}: {e}"));
                    String::new()
                }
            };
            let (ranges, problems) = parse_subid(&text, &user, uid);
            notes.extend(problems.into_iter().map(|p| format!("{file}: {p}")));
            ranges
        };
        let subuid = subids("/etc/subuid");
        let subgid = subids("/etc/subgid");
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let dirs = Dirs::from_env(uid, &home, &cwd, |k| std::env::var_os(k));
        let desktop = DesktopFacts::probe(&|k| std::env::var_os(k), &home, &Places::system());
        Self {
            uid,
            gid,
            user,
            home,
            subuid,
            subgid,
            cgroup: CgroupFacts::probe(uid),
            dirs,
            bus: bus(),
            systemd_pid1: std::path::Path::new("/run/systemd/system").is_dir(),
            unit_cgroup: None,
            network: NetworkFacts::probe(),
            desktop,
            arch: oci_arch(std::env::consts::ARCH).to_owned(),
            notes,
        }
    }
}

/// Rust's architecture names as OCI image platforms spell them.
pub fn oci_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        other => other,
    }
}
