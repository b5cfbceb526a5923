//! Machine definitions: the TOML file a user writes, parsed, validated and typed.
//!
//! `parse` turns text into serde structs with spans; `validate` checks each concern and
//! builds a [`Definition`], collecting every problem as a located [`Diagnostic`].
//! `discovery` finds definition files by name on the search path.

pub mod capability;
pub mod desktop;
pub mod diagnostic;
pub mod discovery;
pub mod name;
mod parse;
mod raw;
pub mod source;
pub mod units;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Diagnostics, SourceFile};
pub use name::MachineName;
pub use source::{Digest, ImageSource};

use crate::network::addr::{Ipv4Net, PortForward};

/// A validated machine definition. Every value here has been checked; spans are kept where
/// a later stage (host checks, compilation) may still need to point at the line.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: MachineName,
    pub file: SourceFile,
    pub description: Option<String>,
    pub image: Image,
    pub exec: Exec,
    pub storage: Storage,
    pub users: Located<UserRange>,
    /// `[users] keep_id`: your own user inside, and its home.
    pub keep_id: Option<Located<KeepId>>,
    pub network: Network,
    pub resources: Located<Resources>,
    pub security: Security,
    /// `[desktop]`: the passthroughs turned on, in [`desktop::Passthrough::ALL`]'s order.
    pub desktop: Vec<Located<desktop::Passthrough>>,
}

/// A value with the byte span it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub source: Located<ImageSource>,
    /// Refuse any manifest but this one.
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Run the image's own init (systemd) as PID 1.
    pub boot: bool,
    /// Empty: the image config's entrypoint and command.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `None`: the image config's user, or root.
    pub user: Option<String>,
    /// `None`: the image config's working directory, or `/`.
    pub workdir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub persistent: bool,
    pub binds: Vec<Located<Bind>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: BindSource,
    /// Absolute, normalised path inside the machine.
    pub target: String,
    pub readonly: bool,
}

/// A bind source. `~/…` is kept as written: the home directory is a host fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSource {
    Path(PathBuf),
    Home(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRange {
    /// Root: a block allocated from mm's pool. Rootless: the user's subordinate range.
    Auto,
    Explicit {
        base: u32,
        size: u32,
    },
}

/// `[users] keep_id` and `home`: a host user, with the same ids, name, groups, home path
/// and shell inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepId {
    pub who: KeepWho,
    pub home: Home,
    /// Where `home` was written, if it was.
    pub home_span: std::ops::Range<usize>,
}

/// Which host user `keep_id` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepWho {
    /// `true`: the user mm runs as (rootless).
    Me,
    /// `"NAME"`: a named host user (as root; rootless, only yourself).
    Named(String),
}

/// `[users] home`: where the keep-id user's home comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// The machine's own persistent home, seeded from the image's /etc/skel.
    Machine,
    /// The user's home on the host, bound.
    Host,
    /// A host directory, bound (`~/` kept as written: the home is a host fact).
    Path(BindSource),
}

/// The machine's network: `[network]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub mode: NetworkMode,
    /// The machine's address, with its link's subnet; `None`: mm allocates one.
    pub address: Option<Located<Ipv4Net>>,
    pub ports: Vec<Located<PortForward>>,
    /// `None`: the MTU of the host's uplink (its default route's device).
    pub mtu: Option<u32>,
}

impl Network {
    /// Whether the machine has a network namespace of its own.
    pub fn private(&self) -> bool {
        self.mode != NetworkMode::Host
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Share the host's network namespace.
    Host,
    /// A network namespace of its own, with only loopback.
    Private,
    /// A veth pair: `ve-NAME` on the host, `host0` inside, with NAT to the world.
    Veth,
    /// A veth pair whose host side joins the zone's bridge `vz-ZONE`: the zone's machines
    /// reach each other, and the world through NAT.
    Zone(ZoneName),
}

/// A zone's name: lower-case letters, digits and `-`, short enough that `vz-NAME` is an
/// interface name (15 bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneName(String);

impl ZoneName {
    pub const MAX: usize = 12;

    pub fn new(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= Self::MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "`{name}` is not a zone name: 1 to {} lower-case letters, digits and `-`, \
                 not starting with `-` (the bridge is named vz-NAME)",
                Self::MAX
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Limits; spans point at each key for host-dependent errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory: Option<u64>,
    /// Thousandths of a CPU.
    pub cpus_milli: Option<u32>,
    pub pids: Option<u64>,
    /// The CPU time the machine gets beside others when the CPUs are busy.
    pub cpu_weight: Option<CpuWeight>,
    /// Memory and swap together (OCI's `linux.resources.memory.swap`, cgroup v1's
    /// `memory.memsw.limit_in_bytes`), with `memory` set.
    pub memory_and_swap: Option<MemoryAndSwap>,
    /// Bytes of huge pages the machine may use, by page size as the kernel names it in
    /// the hugetlb controller's files (`2MB`, `1GB`; OCI's `linux.resources.hugepageLimits`).
    pub hugepages: Vec<(String, u64)>,
    /// The CPUs and memory nodes the machine may use, as cpuset lists (`0-3,6`; OCI's
    /// `linux.resources.cpu.cpus` and `mems`).
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

/// A limit of memory and swap together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAndSwap {
    Unlimited,
    /// At least the memory limit; what is above it is the swap the machine may use.
    Bytes(u64),
}

impl Resources {
    pub fn any(&self) -> bool {
        self.memory.is_some()
            || self.cpus_milli.is_some()
            || self.pids.is_some()
            || self.cpu_weight.is_some()
            || self.memory_and_swap.is_some()
            || !self.hugepages.is_empty()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some()
    }
}

/// A relative CPU weight, in the scale it was given in; each cgroup version gets it in its
/// own file, converted only when the scales differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuWeight {
    /// systemd's `CPUWeight=` scale, cgroup v2's `cpu.weight`: 1 to 10000, 100 by default
    /// (`[resources] cpu_weight`).
    Weight(u16),
    /// cgroup v1's `cpu.shares`: 2 to 262144, 1024 by default (OCI's
    /// `linux.resources.cpu.shares`).
    Shares(u64),
}

impl CpuWeight {
    /// The value of cgroup v2's `cpu.weight`; shares convert as runc and crun convert them.
    pub fn v2_weight(self) -> u64 {
        match self {
            Self::Weight(w) => u64::from(w),
            Self::Shares(s) => 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142,
        }
    }

    /// The value of cgroup v1's `cpu.shares`; a weight converts as systemd converts it.
    pub fn v1_shares(self) -> u64 {
        match self {
            Self::Weight(w) => (u64::from(w) * 1024 / 100).clamp(2, 262_144),
            Self::Shares(s) => s,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub add_capabilities: BTreeSet<&'static str>,
    pub drop_capabilities: CapabilityDrop,
    pub no_new_privileges: bool,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilityDrop {
    All,
    Some(BTreeSet<&'static str>),
}

impl Default for CapabilityDrop {
    fn default() -> Self {
        Self::Some(BTreeSet::new())
    }
}

/// Why a definition could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A FIFO, a directory, a device: never opened for reading, so never waited on.
    #[error("{} is {kind}, not a regular file; a definition is a TOML file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "{} is {size} bytes, more than a definition may be ({limit} bytes); it was not read",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

/// The most bytes of a definition mm reads (a definition is a few kilobytes at most).
pub const SIZE_LIMIT: u64 = 1 << 20;

/// What a file that is not a regular one is, as errors name it.
fn kind_of(file_type: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        Some("not a file")
    }
}

/// Reads a definition's text: a regular file (a FIFO or device is refused before it is
/// opened, and opened non-blocking in case it was swapped in meanwhile) of at most
/// [`SIZE_LIMIT`] bytes (refused from its size, before anything is read).
fn read_text(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let check = |meta: &std::fs::Metadata| {
        if let Some(kind) = kind_of(meta.file_type()) {
            return Err(LoadError::NotAFile {
                path: path.to_owned(),
                kind,
            });
        }
        if meta.len() > SIZE_LIMIT {
            return Err(LoadError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
                limit: SIZE_LIMIT,
            });
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(read)?)?;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read)?;
    check(&file.metadata().map_err(read)?)?;
    let mut text = String::new();
    file.take(SIZE_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > SIZE_LIMIT {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: text.len() as u64,
            limit: SIZE_LIMIT,
        });
    }
    Ok(text)
}

impl Definition {
    /// Reads, parses and validates the definition at `path`. The machine is named after the
    /// file's stem; relative paths inside are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = read_text(path)?;
        Self::from_text(path, &text).map_err(LoadError::Invalid)
    }

    /// Parses and validates `text` as if read from `path` (which is not read).
    pub fn from_text(path: &Path, text: &str) -> Result<Self, Diagnostics> {
        let file = SourceFile::new(path, text);
        let raw = parse::parse(&file)?;
        validate::validate(file, raw)
    }

    /// The directory relative paths in this definition are taken from.
    pub fn base_dir(&self) -> PathBuf {
        base_dir(self.file.path())
    }
}

/// The absolute directory of a definition file.
pub fn base_dir(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    absolute
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/"))
}
