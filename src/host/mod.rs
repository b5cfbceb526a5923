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

use crate::idmap::{IdMapEntry, IdRange, parse_map, parse_subid};

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
    /// Whether the kernel enforces AppArmor (`/sys/module/apparmor/parameters/enabled` is
    /// `Y`), so that an OCI process's `apparmorProfile` can be honoured.
    #[serde(default)]
    pub apparmor: bool,
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
    /// The user namespace mm runs in, when it is not the host's own (rootless podman runs
    /// its OCI runtime as uid 0 of such a namespace). `uid` is then that namespace's, and
    /// uid 0 there is not the host's root: see [`Host::is_root`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<UserNamespace>,
    /// The OCI name of this machine's architecture (`amd64`, `arm64`, …), to pick images.
    pub arch: String,
    /// Things noticed while probing that the user may want to know.
    pub notes: Vec<String>,
}

/// The maps of the user namespace mm runs in, as its parent sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    pub uid_map: Vec<IdMapEntry>,
    pub gid_map: Vec<IdMapEntry>,
}

impl UserNamespace {
    /// The namespace of this process, or `None` in the host's initial one (whose maps are
    /// every id onto itself).
    pub fn probe() -> std::io::Result<Option<Self>> {
        let read = |file: &str| std::fs::read_to_string(file).map(|t| parse_map(&t));
        let uid_map = read("/proc/self/uid_map")?;
        let initial = uid_map
            == [IdMapEntry {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }];
        Ok((!initial).then_some(Self {
            uid_map,
            gid_map: read("/proc/self/gid_map")?,
        }))
    }
}

/// Whether this process is the host's root (uid 0 in the host's own user namespace), as
/// [`Host::is_root`] says of a probed host.
pub fn host_root() -> bool {
    nix::unistd::geteuid().is_root() && matches!(UserNamespace::probe(), Ok(None))
}

/// The uid as the host's initial user namespace knows it, which chooses mm's directories:
/// in rootless podman's namespace, uid 0 is the user.
pub fn owner_uid(uid: u32, ns: Option<&UserNamespace>) -> u32 {
    ns.and_then(|ns| crate::idmap::outside_of(&ns.uid_map, uid))
        .unwrap_or(uid)
}

impl Host {
    /// The host's root: uid 0 in the host's own user namespace. Not uid 0 of another user
    /// namespace, which has no rights over the host's cgroups, `/run` or system bus.
    pub fn is_root(&self) -> bool {
        self.uid == 0 && self.user_namespace.is_none()
    }

    /// uid 0 of the user namespace mm runs in, the host's or another: the one that may
    /// join namespaces that namespace owns and write its children's id maps.
    pub fn has_namespace_root(&self) -> bool {
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
        let user_namespace = UserNamespace::probe().unwrap_or_else(|e| {
            notes.push(format!("cannot read /proc/self/uid_map: {e}"));
            None
        });
        // Directories are chosen for the user mm is on the host.
        let owner = owner_uid(uid, user_namespace.as_ref());
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
        let dirs = Dirs::from_env(owner, &home, &cwd, |k| std::env::var_os(k));
        let desktop = DesktopFacts::probe(&|k| std::env::var_os(k), &home, &Places::system());
        Self {
            uid,
            gid,
            user,
            home,
            subuid,
            subgid,
            cgroup: CgroupFacts::probe(uid, uid == 0 && user_namespace.is_none()),
            dirs,
            bus: bus(),
            systemd_pid1: std::path::Path::new("/run/systemd/system").is_dir(),
            apparmor: apparmor_enabled(),
            unit_cgroup: None,
            network: NetworkFacts::probe(),
            desktop,
            user_namespace,
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

/// Whether the kernel enforces AppArmor, as runc and youki ask it.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'))
}
