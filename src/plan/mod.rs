//! The boot plan: a pure, printable, hashable description of everything `mm start` will do.
//!
//! [`compile`] builds a [`Plan`] from a [`crate::definition::Definition`] and a
//! [`crate::host::Host`]; it reads nothing from the system, so the same inputs give the
//! same plan, byte for byte. The launcher walks the plan and decides nothing itself.

mod compile;
mod desktop;
mod ids;
mod keepid;
mod known;
mod mounts;
mod network;
mod process;
mod render;
pub mod seccomp;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use compile::{compile, hierarchy_dirs, limit_writes, placement};
pub use desktop::INSIDE as DESKTOP_INSIDE;
pub use known::{Known, Rejected};
pub use mounts::{DEV_NODES, dev_links, host_cgroup_tree};
pub use network::{KnownAddresses, link_name, unallocated, wanted, zone_hosts};
pub use seccomp::Seccomp;

use crate::definition::{Digest, ImageSource, MachineName};
use crate::host::{CgroupMode, HostGroup};
use crate::idmap::{IdMapEntry, IdRange};
pub use crate::image::Layout;
use crate::network::addr::{Ipv4Net, PortForward};

/// The version of the JSON schema of `mm plan --json`; it changes when a field changes
/// meaning or goes away (new fields may appear within a version).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub machine: Machine,
    pub image: Image,
    pub ids: Ids,
    /// The namespaces PID 1 gets new.
    pub namespaces: Vec<Namespace>,
    /// Existing namespaces PID 1 joins instead (an OCI bundle's `linux.namespaces[].path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<Join>,
    /// Kernel parameters of the machine's own namespaces, written by PID 1 (an OCI
    /// bundle's `linux.sysctl`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<Sysctl>,
    pub cgroup: Cgroup,
    pub root: RootFs,
    /// Inside the new root, in order, before `pivot_root`.
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub registration: Registration,
    pub security: Security,
    pub process: Process,
    pub stop: Stop,
    /// `[desktop]`'s passthroughs, each with the variables it sets (in `process`'s
    /// environment too) and what the user should know; their binds are in `mounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub desktop: Vec<Desktop>,
    /// `[users] keep_id`: the host user the machine gets, written into it at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_id: Option<KeepId>,
}

/// One passthrough of `[desktop]`, as compiled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desktop {
    pub passthrough: crate::definition::desktop::Passthrough,
    /// `KEY=VALUE`, also passed by `mm exec` and `mm shell`.
    pub env: Vec<String>,
    pub notes: Vec<String>,
}

/// The keep-id user: mm writes its `/etc/passwd` and `/etc/group` entries and a sudoers
/// drop-in into the machine at every start (idempotently, as the machine's root, inside
/// its root), and seeds a machine home from `/etc/skel` while it is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepId {
    pub name: String,
    /// The same inside as on the host.
    pub uid: u32,
    pub gid: u32,
    /// The host's name of the primary group, given to it when the image has no group of
    /// that gid.
    pub group: String,
    /// Supplementary groups the map carries: joined by name where the image has the
    /// group, else created with the host's gid.
    pub groups: Vec<HostGroup>,
    /// The user's other host groups, not mapped, so not inside.
    pub left_out: Vec<LeftOut>,
    /// The home's path inside: the host's home path.
    pub home: String,
    pub home_from: HomeFrom,
    /// Login shells, by preference: the first the image has is the user's.
    pub shells: Vec<String>,
    /// The sudoers drop-in that lets the user run anything as root without a password.
    pub sudoers: String,
}

/// A host group the machine does not get, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub name: String,
    pub gid: u32,
    pub why: String,
}

/// Where the keep-id user's home comes from (it is a bind in the plan's mounts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HomeFrom {
    /// The machine's own, kept in its state directory across restarts (a non-persistent
    /// machine's too), removed by `mm rm`; seeded from the image's /etc/skel while empty.
    Machine { dir: PathBuf },
    /// The user's home on the host.
    Host { dir: PathBuf },
    /// A host directory.
    Path { dir: PathBuf },
}

impl HomeFrom {
    /// The host directory bound on the home.
    pub fn dir(&self) -> &std::path::Path {
        match self {
            Self::Machine { dir } | Self::Host { dir } | Self::Path { dir } => dir,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub name: MachineName,
    pub description: Option<String>,
    pub definition: PathBuf,
    /// Locks, the supervisor's socket and the running state.
    pub runtime_dir: PathBuf,
    /// The writable layer and what else the machine keeps across restarts.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub source: ImageSource,
    /// A manifest digest the image must match.
    pub pinned: Option<Digest>,
    pub layers: Layers,
    /// How the store lays out the layers' owners: rootless keep-id machines have a
    /// layout of their own (see docs/devenv.md); otherwise the default one.
    #[serde(default, skip_serializing_if = "Layout::is_default")]
    pub layout: Layout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Layers {
    /// Not in the store yet: fetched, verified and unpacked before the machine starts.
    Unresolved,
    /// In the store: the manifest imported, and its layers, bottom first.
    Stored {
        manifest: Digest,
        layers: Vec<StoredLayer>,
    },
    /// The source is a directory, used as the only lower layer as it is.
    Directory { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLayer {
    pub diff_id: Digest,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ids {
    /// Who writes the maps: the supervisor directly (root) or newuidmap/newgidmap.
    pub writer: MapWriter,
    pub uid: IdMapping,
    pub gid: IdMapping,
    /// Root keep-id: the machine's block, which the maps carve the user's ids out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<IdRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapWriter {
    Direct,
    Newidmap,
    /// Rootless, in a zone: the machine's user namespace is a child of the zone's (which
    /// newuidmap mapped as `uid`/`gid` say); mm writes it as the identity of the zone's ids
    /// from inside the zone's namespace.
    Zone,
    /// An OCI bundle's existing user namespace at `path` (`linux.namespaces[].path`, a
    /// pod's or another container's): nobody writes its maps; the supervisor joins it and
    /// checks that its maps are `uid` and `gid`, which the config must give with the path
    /// (podman and containerd do).
    Joined {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum IdMapping {
    /// A block allocated from `pool` at first start, under a lock, and kept for the machine.
    Allocate {
        pool: IdRange,
        count: u32,
    },
    Map {
        entries: Vec<IdMapEntry>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    User,
    Mount,
    Pid,
    Uts,
    Ipc,
    Net,
    Cgroup,
}

/// An existing namespace PID 1 joins, by the path of its file (`/run/netns/NAME`,
/// `/proc/PID/ns/net`). The spawner joins it while it is still in the host's user namespace,
/// before it enters the machine's, so the namespace stays owned by its creator: the machine
/// uses it and cannot administer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    pub namespace: Namespace,
    pub path: PathBuf,
}

/// One kernel parameter, by its dotted name (`net.ipv4.ip_forward`): `value` written to
/// `/proc/sys/net/ipv4/ip_forward` by a process in the namespace it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
    /// `None`: a parameter of a namespace of the machine's own, which PID 1 writes as that
    /// namespace's root. `Some(kind)`: of the namespace of that kind the plan joins, which
    /// the machine's user namespace does not own: the spawner writes it once it has joined
    /// it, with the privilege of the namespace's owner, and never in the spawner's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<Namespace>,
}

impl Sysctl {
    /// The file under /proc/sys.
    pub fn file(&self) -> String {
        format!("/proc/sys/{}", self.key.replace('.', "/"))
    }
}

impl Plan {
    /// Whether PID 1 joins an existing namespace of this kind.
    pub fn joins(&self, namespace: Namespace) -> bool {
        self.joins.iter().any(|j| j.namespace == namespace)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cgroup {
    Create {
        mode: CgroupMode,
        /// The unit-shaped path machined expects, such as `machine.slice/mm-web.scope`.
        path: String,
        /// The directory made in each hierarchy, removed when the machine stops.
        dirs: Vec<PathBuf>,
        /// Limit files written after the directories exist, in order.
        limits: Vec<LimitWrite>,
    },
    /// The machine stays in the cgroup of the user's session.
    Inherit { why: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitWrite {
    pub file: PathBuf,
    pub value: String,
}

impl LimitWrite {
    /// Whether the file reads back what was written (cgroup v1's `devices.allow` and
    /// `devices.deny` are write-only: `devices.list` shows their sum).
    pub fn reads_back(&self) -> bool {
        !matches!(
            self.file.file_name().and_then(|n| n.to_str()),
            Some("devices.allow" | "devices.deny")
        )
    }
}

/// A rule of the device controller (an OCI bundle's `linux.resources.devices[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// `None`: any.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Of `r`, `w` and `m`.
    pub access: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    All,
    Char,
    Block,
}

/// The rule as cgroup v1's device files take it: `c 1:3 rwm`, `a *:* rwm`.
impl std::fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DeviceKind::All => "a",
            DeviceKind::Char => "c",
            DeviceKind::Block => "b",
        };
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        write!(
            f,
            "{kind} {}:{} {}",
            number(self.major),
            number(self.minor),
            self.access
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Where the root is assembled before `pivot_root`: the overlay's mount point under
    /// the runtime directory, or an OCI bundle's root path itself (bound onto itself in
    /// PID 1's mount namespace, [`Upper::InPlace`]).
    pub mount_point: PathBuf,
    pub upper: Upper,
    /// Root: store layers are shared unshifted and seen through id-mapped mounts.
    pub idmapped_lowers: bool,
    /// Extra overlay options (`userxattr` when rootless).
    pub options: Vec<String>,
    /// The root's propagation, set after `pivot_root` (OCI's `linux.rootfsPropagation`);
    /// without it the root stays a slave of the host's mounts, as every mount does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

/// A mount's propagation type (mount_namespaces(7)): of that mount alone, or with
/// `recursive` of every mount below it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    pub kind: PropagationKind,
    pub recursive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PropagationKind {
    Shared,
    Slave,
    Private,
    Unbindable,
}

impl PropagationKind {
    const ALL: [Self; 4] = [Self::Shared, Self::Slave, Self::Private, Self::Unbindable];

    /// mount(8)'s and the runtime-spec's name.
    fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Slave => "slave",
            Self::Private => "private",
            Self::Unbindable => "unbindable",
        }
    }
}

impl Propagation {
    /// `shared`, `rshared`, `slave`, `rslave`, `private`, `rprivate`, `unbindable`,
    /// `runbindable`: mount(8)'s and the runtime-spec's names.
    pub fn parse(name: &str) -> Option<Self> {
        let (recursive, kind) = match name.strip_prefix('r') {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let kind = PropagationKind::ALL
            .into_iter()
            .find(|k| k.name() == kind)?;
        Some(Self { kind, recursive })
    }
}

impl std::fmt::Display for Propagation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = if self.recursive { "r" } else { "" };
        write!(f, "{r}{}", self.kind.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Upper {
    /// Kept across restarts.
    Persistent { upper: PathBuf, work: PathBuf },
    /// On a tmpfs, gone when the machine stops.
    Volatile { tmpfs: PathBuf },
    /// No writable layer: the root is mounted read-only.
    ReadOnly,
    /// No overlay: the one lower directory ([`Layers::Directory`], an OCI bundle's
    /// `rootfs`) is bound as the root and written in place, read-only when asked.
    InPlace { readonly: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mount {
    /// A file system of its own.
    Fs {
        fstype: String,
        target: String,
        options: Vec<String>,
        /// What `/proc/self/mountinfo` shows as its source (an OCI mount's `source`, `shm`
        /// for /dev/shm); else its type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// A tmpfs the supervisor mounts as host root, owned by the machine's root (`uid=`,
    /// `gid=` of its first mapped id), then bound into the machine: its super block
    /// belongs to the host's user namespace, so host root can create files in it (what
    /// machined's CopyTo does through `/proc/PID/root`), as in systemd-nspawn `-U`. Only
    /// as root; rootless machines mount their tmpfs in their own user namespace.
    HostTmpfs {
        target: String,
        options: Vec<String>,
    },
    /// A file system of a namespace the container did not make and its user namespace
    /// does not own (the sysfs of a joined network namespace, the mqueue of a joined IPC
    /// one, the proc of a joined PID one), which only that namespace's owner may mount:
    /// made as host root, inside those namespaces, as a detached mount (by the spawner, or
    /// with a joined PID namespace by PID 1 before it enters its user namespace, the
    /// namespace being only a child's), and attached by PID 1.
    HostFs {
        fstype: String,
        target: String,
        /// `ro`, `nosuid`, `nodev`, `noexec`, `relatime`, `noatime`, `strictatime`,
        /// `nodiratime`.
        options: Vec<String>,
    },
    /// A host path made visible inside.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
        recursive: bool,
    },
    /// A path hidden behind /dev/null (files) or an empty read-only tmpfs (directories).
    Mask {
        target: String,
        directory: bool,
    },
    /// A path hidden behind /dev/null or an empty read-only tmpfs, whichever its kind is
    /// when it is mounted (OCI's `linux.maskedPaths`, which name paths under /proc and
    /// /sys that only exist once those are mounted); nothing when it is missing.
    MaskPath {
        target: String,
    },
    /// A path remounted read-only.
    ReadOnly {
        target: String,
    },
    /// The mount on `target` (a bind made just before) and those below it made nosuid,
    /// nodev or noexec (an OCI bind mount's options).
    Restrict {
        target: String,
        nosuid: bool,
        nodev: bool,
        noexec: bool,
    },
    /// The mount on `target` (made just before), or with a recursive propagation it and
    /// those below it, given that propagation type (an OCI mount's `rslave`, `private`...).
    Propagate {
        target: String,
        propagation: Propagation,
    },
    /// The machine's console: a pseudo-terminal allocated at start.
    Console {
        target: String,
    },
    /// The cgroup tree as the machine sees it on /sys/fs/cgroup, in its own cgroup
    /// namespace. v2: the one hierarchy on /sys/fs/cgroup itself; v1 and hybrid: a tmpfs,
    /// each of the host's hierarchies below it, then the tmpfs made read-only.
    CgroupTree {
        mode: CgroupMode,
        hierarchies: Vec<CgroupHierarchy>,
    },
    Symlink {
        target: String,
        points_to: String,
    },
    /// A read-only file of the given content (on a small tmpfs of its own).
    File {
        target: String,
        content: String,
    },
}

/// One cgroup hierarchy of the host, mounted again in the machine's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupHierarchy {
    /// Below /sys/fs/cgroup, as on the host (`systemd`, `cpu,cpuacct`, `unified`); empty
    /// for a v2 host's one tree.
    pub dir: String,
    pub fstype: CgroupFs,
    /// The host's super options (`xattr,name=systemd`, `cpu,cpuacct`), without `rw`/`ro`.
    pub options: Vec<String>,
    /// Only the trees a booted init manages (`name=systemd`, the v2 one) can be writable.
    pub writable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupFs {
    Cgroup,
    Cgroup2,
}

impl CgroupFs {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::Cgroup2 => "cgroup2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Network {
    Host,
    /// A network namespace with only loopback, brought up.
    Private,
    /// An existing network namespace, joined (see [`Plan::joins`]): set up by whoever made
    /// it; mm configures nothing in it.
    Joined,
    /// A network namespace with loopback and a veth pair to the host: alone, or with its
    /// host side in a zone's bridge; NAT to the world and the port forwards (root).
    Link(Link),
    /// Rootless: a network namespace whose tap device a user-mode helper (slirp4netns)
    /// serves, with NAT to the world and the port forwards.
    UserMode(UserMode),
}

/// A rootless machine's network, through a helper process the supervisor owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMode {
    pub helper: String,
    pub interface: String,
    pub mtu: u32,
    /// The machine's address, with its subnet; the helper's gateway and name server.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub forwards: Vec<PortForward>,
}

impl Network {
    /// Whether the machine has a network namespace of mm's making (one it brings up).
    pub fn private(&self) -> bool {
        !matches!(self, Self::Host | Self::Joined)
    }

    /// The ordinary user's zone the machine is in, if it is in one.
    pub fn rootless_zone(&self) -> Option<&RootlessZone> {
        match self {
            Self::Link(link) => link.rootless_zone(),
            Self::Host | Self::Private | Self::Joined | Self::UserMode(_) => None,
        }
    }
}

impl Link {
    /// The ordinary user's zone this link is in, whose namespaces the supervisor works in.
    pub fn rootless_zone(&self) -> Option<&RootlessZone> {
        self.zone.as_ref()?.rootless.as_ref()
    }
}

/// A machine's veth pair, its address and what the host forwards to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The host's end: `ve-NAME`, or `vb-NAME` in a zone's bridge.
    pub host_side: String,
    /// The machine's end.
    pub machine_side: String,
    pub zone: Option<Zone>,
    /// Of the pair (and the bridge): the definition's, else the host's uplink's.
    pub mtu: u32,
    pub address: Address,
    pub forwards: Vec<PortForward>,
}

/// A bridge shared by the machines of one zone; made with the first, removed with the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub name: String,
    pub bridge: String,
    /// The zone's machines by name, kept up to date as they come and go, on /etc/hosts.
    pub hosts: PathBuf,
    /// An ordinary user's zone: its bridge lives in namespaces of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootless: Option<RootlessZone>,
}

/// An ordinary user's zone. No process of an ordinary user holds CAP_NET_ADMIN over two
/// sibling user namespaces, so the zone's machines share one: mm's zone keeper holds a user
/// namespace (the user's id maps) with a network namespace where the bridge is, reaching
/// the world through slirp4netns; each machine's user namespace is a child of it, and its
/// supervisor works from inside the zone's namespaces as root does on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootlessZone {
    /// The keeper's record and slirp4netns's API socket: `RUNTIME/.zones/ZONE`.
    pub dir: PathBuf,
    /// The helper between the zone and the world.
    pub helper: String,
    /// Of the helper's tap device, the zone's bridge and veths.
    pub mtu: u32,
    /// The zone's address on the helper's network, where forwarded host ports arrive.
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Address {
    /// Not recorded yet: allocated (and recorded) when the machine starts; `wanted` is the
    /// definition's static address.
    Allocate { wanted: Option<Ipv4Net> },
    /// The machine's address with its link's subnet, and the host's side (the gateway).
    Assigned { address: Ipv4Net, gateway: Ipv4Addr },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Registration {
    Machined(Machined),
    Skip { why: String },
}

/// What is registered with systemd-machined (`RegisterMachineWithNetwork`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machined {
    pub name: MachineName,
    /// A stable 128-bit id, derived from the machine's name, in hex.
    pub id: String,
    pub class: String,
    pub service: String,
    pub root_directory: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Security {
    /// The capability bounding set of PID 1.
    pub capabilities: Vec<String>,
    /// The seccomp filter: `none`, `mm-default` (see docs/security.md) or a bundle's profile.
    pub seccomp: Seccomp,
    pub no_new_privileges: bool,
    /// The inheritable set PID 1 keeps (empty: cleared), by name; OCI's
    /// `process.capabilities.inheritable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inheritable: Vec<String>,
    /// The ambient set PID 1 raises before it executes its command (empty: cleared);
    /// OCI's `process.capabilities.ambient`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ambient: Vec<String>,
    /// The AppArmor profile the command executes under (OCI's `process.apparmorProfile`),
    /// set for its exec (`/proc/self/attr/apparmor/exec`) as the lock-down begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid1: Pid1,
    pub hostname: String,
    /// What PID 1 (the init with `boot`, else the command mm's init runs) executes.
    pub command: Command,
    /// Resource limits the supervisor sets on PID 1 (`prlimit`, with its own privilege)
    /// while PID 1 waits for its start (`waits_for_start`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// PID 1 waits, set up and locked down, before it executes its command, until the
    /// supervisor is asked to let it go on (`mm oci start`: OCI's `created` state).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waits_for_start: bool,
    /// [`Pid1::Direct`]: the supplementary groups, exactly (the user is `UID:GID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
    /// PID 1 is the child of the process that started the supervisor (`mm oci create`),
    /// not of the supervisor, and has no death signal: when that process exits, PID 1 is
    /// re-parented to its subreaper (conmon, containerd's shim), which waits for it and
    /// gets its exit status, as runc's init is. The supervisor watches it through a pidfd.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reparented: bool,
    /// The file mode creation mask PID 1 sets before it executes (else the inherited one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// PID 1's `/proc/PID/oom_score_adj` (-1000 to 1000), written by the supervisor while
    /// PID 1 waits (OCI's `process.oomScoreAdj`); else the inherited one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// [`Pid1::Direct`]: its standard streams and controlling terminal are a new
    /// pseudo-terminal of the machine's own devpts, whose master side goes to the caller
    /// (`mm oci create --console-socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<Terminal>,
    /// [`Pid1::Direct`]: an OCI bundle's hooks of the launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<ContainerHooks>,
}

/// An OCI bundle's hooks that run during the launch, one after another, each with the
/// container's state (runtime-spec JSON) on its standard input, once PID 1 has made the
/// container's mounts and before it pivots into its root: `prestart` and `createRuntime`
/// by the supervisor, in the runtime's namespaces (an OCI plan's supervisor never leaves
/// its caller's: its root is not staged, its network not a rootless zone's), while PID 1
/// waits for them; then `createContainer` by PID 1, in the container's namespaces (its
/// path is in the runtime's file system). `startContainer` runs once `mm oci start` lets
/// the process go on, before its command, as its user (its path is in the container's).
/// One that fails ends the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHooks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_runtime: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_container: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_container: Vec<Hook>,
    pub state: HookState,
}

/// A program an OCI bundle's hooks run (`hooks.*[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    /// Its whole argv, `args[0]` included (empty: the path alone).
    #[serde(default)]
    pub args: Vec<String>,
    /// Its whole environment (`KEY=VALUE`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Killed after this many seconds.
    #[serde(default)]
    pub timeout: Option<u32>,
}

/// The runtime-spec state a hook is given, but for what PID 1 adds when it runs it: the
/// status and its pid on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState {
    pub oci_version: String,
    pub id: String,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A pseudo-terminal PID 1 opens in the machine's `/dev/ptmx` (its own devpts instance,
/// so that no descriptor of a host terminal enters the machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    /// Its window size, rows and columns (OCI's `process.consoleSize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<(u16, u16)>,
}

/// One `setrlimit(2)`, by the resource's name (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pid1 {
    /// The image's own init, such as systemd: it gets the stop signal itself.
    Boot,
    /// mm's small init, reaping and forwarding signals to the command.
    MmInit,
    /// The command itself, as its user, in its working directory (an OCI container's
    /// process): no init between, as the runtime-spec has it.
    Direct,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Command {
    /// Everything that will run: the definition's, else the image config's, else mm's
    /// defaults.
    Resolved(Exec),
    /// The image is not in the store yet, so what its config adds (its entrypoint and
    /// command, environment, user, working directory) is not known: `mm run` and
    /// `mm start` compile again once it is imported. `None`: the image config's.
    Unresolved {
        argv: Option<Vec<String>>,
        /// Set over the image's environment.
        env: BTreeMap<String, String>,
        user: Option<String>,
        workdir: Option<String>,
    },
}

/// A command as it is executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub argv: Vec<String>,
    /// `KEY=VALUE`: the image's first (leaving out what the definition sets), then the
    /// definition's and mm's.
    pub env: Vec<String>,
    /// `root`, a name from the image's `/etc/passwd`, or `UID[:GID]`.
    pub user: String,
    pub workdir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// Sent to PID 1 first.
    pub signal: crate::signal::Signal,
    /// Then, after this many seconds, every process in the machine is killed.
    pub timeout_secs: u32,
}

/// A stable 128-bit id for a machine: the first half of sha256("mm machine NAME"), shaped as
/// a version 4 UUID so that tools that check the form accept it.
pub fn machine_id(name: &str) -> String {
    let digest = Sha256::digest(format!("mm machine {name}").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plan with its hash, as `mm plan --json` prints it.
#[derive(Debug, Serialize)]
pub struct Hashed<'p> {
    pub schema: u32,
    pub plan_hash: String,
    pub plan: &'p Plan,
}

impl Plan {
    /// The sha256 of the plan's canonical JSON: equal plans, equal hashes.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a plan always serializes");
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    pub fn hashed(&self) -> Hashed<'_> {
        Hashed {
            schema: SCHEMA,
            plan_hash: self.hash(),
            plan: self,
        }
    }

    /// The plan as readable, numbered text.
    pub fn render(&self) -> String {
        render::render(self)
    }
}
