//! A bundle's `config.json` + the Host facts → mm's [`Plan`], the same data a TOML
//! definition compiles into, executed by the same runtime. Pure: reads nothing.
//!
//! What mm cannot honour is a [`FieldError`] at its JSON path; every error is collected,
//! so a config with three problems shows three.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::fields::FieldError;
use super::spec::{self, Spec};
use crate::definition::{CpuWeight, ImageSource, Resources, capability};
use crate::host::Host;
use crate::idmap::IdMapEntry;
use crate::plan::{
    Cgroup, Command, DeviceKind, DeviceRule, Exec, IdMapping, Ids, Image, Join, Layers, LimitWrite,
    MapWriter, Mount, Namespace, Network, Pid1, Plan, Process, Registration, Rlimit, RootFs,
    Security, Stop, Sysctl, Terminal, Upper,
};

/// How the caller drives mm (runc's global flags that change the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--root`: the container's state lives in `ROOT/ID`.
    pub state_root: PathBuf,
    /// `--systemd-cgroup`: `linux.cgroupsPath` is `SLICE:PREFIX:NAME`.
    pub systemd_cgroup: bool,
}

/// The resource limits of `setrlimit(2)` a config may set.
const RLIMITS: &[&str] = &[
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

struct Errors(Vec<FieldError>);

impl Errors {
    fn at(&mut self, path: impl Into<String>, why: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            why: why.into(),
        });
    }
}

/// Compiles the container `id`'s `config` (from the bundle at `bundle`, an absolute path)
/// for `host`.
pub fn compile(
    config: &Spec,
    bundle: &Path,
    id: &super::ContainerId,
    host: &Host,
    options: &Options,
) -> Result<Plan, Vec<FieldError>> {
    let mut errors = Errors(Vec::new());
    if !config.oci_version.starts_with("1.") {
        errors.at(
            "ociVersion",
            format!("`{}`: mm reads runtime-spec 1.x", config.oci_version),
        );
    }
    let linux = config.linux.clone().unwrap_or_default();
    let (namespaces, joins) = namespaces(&linux, host, &mut errors);
    let runtime_dir = options.state_root.join(id.as_str());
    let ids = ids(&linux, host, &mut errors);
    let cgroup = cgroup(&linux, id, host, options, &mut errors);
    let root = root(config, bundle, &mut errors);
    let mounts = mounts(
        config,
        &linux,
        &namespaces,
        &joins,
        bundle,
        host,
        &mut errors,
    );
    let (process, mut security) = process(config, id, &namespaces, &mut errors);
    let sysctls = sysctls(&linux, &namespaces, &mut errors);
    if process.terminal.is_some() && !has_devpts(&mounts) {
        errors.at(
            "process.terminal",
            "mm opens a terminal in the container's own devpts: the config needs a `devpts` \
             mount on /dev/pts",
        );
    }
    if let Some(seccomp) = &linux.seccomp {
        security.seccomp = match super::seccomp::profile(seccomp, &mut errors.0) {
            Some(profile) => crate::plan::Seccomp::Profile(Box::new(profile)),
            None => crate::plan::Seccomp::None,
        };
    }
    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    let private_net = namespaces.contains(&Namespace::Net);
    let joined_net = joins.iter().any(|j| j.namespace == Namespace::Net);
    let Some((rootfs, upper)) = root else {
        return Err(errors.0);
    };
    Ok(Plan {
        machine: crate::plan::Machine {
            name: id.name().clone(),
            description: Some(format!("OCI bundle {}", bundle.display())),
            definition: bundle.join("config.json"),
            runtime_dir: runtime_dir.clone(),
            state_dir: runtime_dir.clone(),
        },
        image: Image {
            source: ImageSource::Rootfs {
                path: rootfs.clone(),
            },
            pinned: None,
            layers: Layers::Directory { path: rootfs },
            layout: crate::image::Layout::Default,
        },
        ids,
        namespaces,
        joins,
        sysctls,
        cgroup,
        root: RootFs {
            mount_point: runtime_dir.join("root"),
            upper,
            idmapped_lowers: false,
            options: Vec::new(),
        },
        mounts,
        network: if private_net {
            Network::Private
        } else if joined_net {
            Network::Joined
        } else {
            Network::Host
        },
        registration: Registration::Skip {
            why: "an OCI container is its engine's to register".to_owned(),
        },
        security,
        process,
        stop: Stop {
            signal: crate::signal::Signal::TERM,
            timeout_secs: 10,
        },
        desktop: Vec::new(),
        keep_id: None,
    })
}

/// The plan's namespaces: the ones made new and the ones joined by path. mm always makes
/// a user, mount and PID namespace, and a UTS one unless one is joined (so that the
/// container's hostname is its own); IPC, network and cgroup ones when asked. Network, IPC
/// and UTS namespaces may be joined (a pod's, or one an engine set up, as podman sets up
/// its network namespaces).
fn namespaces(
    linux: &spec::Linux,
    host: &Host,
    errors: &mut Errors,
) -> (Vec<Namespace>, Vec<Join>) {
    let mut asked = Vec::new();
    let mut joins = Vec::new();
    // Listed with a path that is refused: not also reported missing.
    let mut refused = Vec::new();
    for (i, ns) in linux.namespaces.iter().enumerate() {
        let at = format!("linux.namespaces[{i}]");
        let kind = match ns.kind.as_str() {
            "user" => Namespace::User,
            "mount" => Namespace::Mount,
            "pid" => Namespace::Pid,
            "uts" => Namespace::Uts,
            "ipc" => Namespace::Ipc,
            "network" => Namespace::Net,
            "cgroup" => Namespace::Cgroup,
            "time" => {
                errors.at(
                    format!("{at}.type"),
                    "a time namespace is not supported by mm yet",
                );
                continue;
            }
            other => {
                errors.at(
                    format!("{at}.type"),
                    format!("`{other}` is not a namespace type of the runtime-spec"),
                );
                continue;
            }
        };
        if asked.contains(&kind) || joins.iter().any(|j: &Join| j.namespace == kind) {
            errors.at(
                format!("{at}.type"),
                format!("`{}` is listed twice", ns.kind),
            );
        }
        let why = match &ns.path {
            None => {
                asked.push(kind);
                continue;
            }
            Some(_) if !host.is_root() => {
                "joining an existing namespace needs root: setns(2) needs CAP_SYS_ADMIN over \
                 the namespace and in the caller's own user namespace, which an ordinary \
                 user's mm has in neither"
                    .to_owned()
            }
            Some(path) => match kind {
                Namespace::Net | Namespace::Ipc | Namespace::Uts if absolute(path) => {
                    joins.push(Join {
                        namespace: kind,
                        path: PathBuf::from(path),
                    });
                    continue;
                }
                Namespace::Net | Namespace::Ipc | Namespace::Uts => {
                    format!("`{path}` is not an absolute path without `..`")
                }
                _ => format!(
                    "joining an existing {} namespace is not supported by mm (only network, \
                     ipc and uts ones: mm's PID 1 makes its own user, mount and PID \
                     namespaces, and a cgroup one when asked)",
                    ns.kind
                ),
            },
        };
        errors.at(format!("{at}.path"), why);
        refused.push(kind);
    }
    let joined = |kind| joins.iter().any(|j: &Join| j.namespace == kind);
    for (kind, name) in [
        (Namespace::Mount, "mount"),
        (Namespace::Pid, "pid"),
        (Namespace::Uts, "uts"),
    ] {
        if !asked.contains(&kind) && !joined(kind) && !refused.contains(&kind) {
            errors.at(
                "linux.namespaces",
                format!(
                    "mm always gives a container its own {name} namespace: add {{\"type\": \"{name}\"}}"
                ),
            );
        }
    }
    if !host.is_root() && !asked.contains(&Namespace::User) {
        errors.at(
            "linux.namespaces",
            "an ordinary user's container needs a user namespace: add {\"type\": \"user\"}",
        );
    }
    // In the order mm's machines have them.
    let mut all = vec![Namespace::User];
    all.extend(
        [
            Namespace::Mount,
            Namespace::Pid,
            Namespace::Uts,
            Namespace::Ipc,
            Namespace::Net,
            Namespace::Cgroup,
        ]
        .into_iter()
        .filter(|n| asked.contains(n)),
    );
    (all, joins)
}

/// The user namespace's maps: the config's; rootless without any, mm's (root inside is
/// the user, the rest from the subordinate ranges); root without a user namespace, the
/// identity of every id, so that the container's ids are the host's.
fn ids(linux: &spec::Linux, host: &Host, errors: &mut Errors) -> Ids {
    let entries = |maps: &[spec::IdMapping]| -> Vec<IdMapEntry> {
        maps.iter()
            .map(|m| IdMapEntry {
                inside: m.container_id,
                outside: m.host_id,
                count: m.size,
            })
            .collect()
    };
    let asked_user = linux.namespaces.iter().any(|n| n.kind == "user");
    let writer = if host.is_root() {
        MapWriter::Direct
    } else {
        MapWriter::Newidmap
    };
    let (uid, gid) = match (asked_user, linux.uid_mappings.is_empty()) {
        (true, false) => {
            if linux.gid_mappings.is_empty() {
                errors.at("linux.gidMappings", "uidMappings need gidMappings too");
            }
            (entries(&linux.uid_mappings), entries(&linux.gid_mappings))
        }
        (true, true) if host.is_root() => {
            errors.at(
                "linux.uidMappings",
                "a user namespace needs its maps when mm runs as root",
            );
            (Vec::new(), Vec::new())
        }
        (true, true) => (
            crate::idmap::rootless_map(host.uid, &host.subuid),
            crate::idmap::rootless_map(host.gid, &host.subgid),
        ),
        (false, _) => {
            for (field, maps) in [
                ("linux.uidMappings", &linux.uid_mappings),
                ("linux.gidMappings", &linux.gid_mappings),
            ] {
                if !maps.is_empty() {
                    errors.at(field, "maps without a user namespace in linux.namespaces");
                }
            }
            let all = vec![IdMapEntry {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }];
            (all.clone(), all)
        }
    };
    Ids {
        writer,
        uid: IdMapping::Map { entries: uid },
        gid: IdMapping::Map { entries: gid },
        block: None,
    }
}

fn cgroup(
    linux: &spec::Linux,
    id: &super::ContainerId,
    host: &Host,
    options: &Options,
    errors: &mut Errors,
) -> Cgroup {
    let limits = resources(linux, errors);
    let rules = linux
        .resources
        .as_ref()
        .map(|res| device_rules(res, errors))
        .unwrap_or_default();
    let placed = match &linux.cgroups_path {
        None => crate::plan::placement(&format!("oci-{id}"), host),
        Some(_) if !host.is_root() => {
            errors.at(
                "linux.cgroupsPath",
                "an ordinary user's container is placed by mm (in its delegated subtree)",
            );
            return Cgroup::Inherit { why: String::new() };
        }
        Some(path) => match cgroups_path(path, options.systemd_cgroup) {
            Ok(path) => Ok((path.clone(), crate::plan::hierarchy_dirs(&path, host))),
            Err(why) => {
                errors.at("linux.cgroupsPath", why);
                return Cgroup::Inherit { why: String::new() };
            }
        },
    };
    match placed {
        Ok((path, dirs)) => {
            match crate::plan::limit_writes(&limits, host.cgroup.mode, &dirs, host) {
                Ok(mut limits) => {
                    limits.extend(device_writes(&rules, &dirs, host, errors));
                    Cgroup::Create {
                        mode: host.cgroup.mode,
                        path,
                        dirs,
                        limits,
                    }
                }
                Err(why) => {
                    errors.at("linux.resources", why);
                    Cgroup::Inherit { why: String::new() }
                }
            }
        }
        Err(_) if !only_own_nodes(&rules) => {
            errors.at(
                "linux.resources.devices",
                "device rules that allow more than the nodes mm binds into /dev need a device \
                 controller, and the container has no cgroup of its own",
            );
            Cgroup::Inherit { why: String::new() }
        }
        Err(why) if limits.any() => {
            errors.at(
                "linux.resources",
                format!("resource limits need a cgroup of the container's own, and {why}"),
            );
            Cgroup::Inherit { why: String::new() }
        }
        Err(why) => Cgroup::Inherit { why },
    }
}

/// The device rules as cgroup v1's `devices.deny` and `devices.allow` writes, in order.
/// On cgroup v2 the device controller is an eBPF program, which mm does not load: rules
/// that allow no more than mm's own nodes are what a container has anyway, others are
/// refused.
fn device_writes(
    rules: &[DeviceRule],
    dirs: &[PathBuf],
    host: &Host,
    errors: &mut Errors,
) -> Vec<LimitWrite> {
    if rules.is_empty() {
        return Vec::new();
    }
    let hierarchy = host
        .cgroup
        .v1_hierarchy("devices")
        .filter(|_| host.cgroup.mode != crate::host::CgroupMode::V2)
        .and_then(|h| dirs.iter().find(|d| d.starts_with(&h.path)));
    let Some(dir) = hierarchy else {
        if !only_own_nodes(rules) {
            errors.at(
                "linux.resources.devices",
                "device rules that allow more than the nodes mm binds into /dev need cgroup \
                 v1's device controller (on cgroup v2 it is an eBPF program, which mm does \
                 not load)",
            );
        }
        return Vec::new();
    };
    // The nodes mm binds into /dev work whatever the rules say, as runc allows its own.
    let own = OWN_NODES.iter().map(|(major, minor)| DeviceRule {
        allow: true,
        kind: DeviceKind::Char,
        major: Some(*major),
        minor: *minor,
        access: "rwm".to_owned(),
    });
    rules
        .iter()
        .cloned()
        .chain(own)
        .map(|rule| LimitWrite {
            file: dir.join(if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            }),
            value: rule.to_string(),
        })
        .collect()
}

/// `linux.cgroupsPath` as a path below each hierarchy's root: `/a/b` (cgroupfs), or with
/// `--systemd-cgroup` `SLICE:PREFIX:NAME`, the unit-shaped `SLICE/PREFIX-NAME.scope`.
fn cgroups_path(path: &str, systemd: bool) -> Result<String, String> {
    let relative = if systemd {
        let parts: Vec<&str> = path.split(':').collect();
        let [slice, prefix, name] = parts.as_slice() else {
            return Err(format!(
                "`{path}`: with --systemd-cgroup, mm reads SLICE:PREFIX:NAME"
            ));
        };
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        format!("{slice}/{prefix}-{name}.scope")
    } else {
        path.trim_start_matches('/').to_owned()
    };
    let bad = relative.is_empty()
        || relative
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(format!("`{path}` is not a cgroup path mm can use"));
    }
    Ok(relative)
}

/// `linux.sysctl`: only the parameters of a namespace the container has of its own (runc's
/// list), which PID 1 may write as its user namespace's root; any other would change the
/// host's kernel, or a joined namespace's, which the container does not own.
fn sysctls(linux: &spec::Linux, own: &[Namespace], errors: &mut Errors) -> Vec<Sysctl> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let mut all = Vec::new();
    for (key, value) in &linux.sysctl {
        let at = format!("linux.sysctl.{key}");
        let well_formed = !key.is_empty()
            && key.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !well_formed {
            errors.at(at, format!("`{key}` is not the name of a kernel parameter"));
            continue;
        }
        let namespace = if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            Some((Namespace::Ipc, "ipc"))
        } else if key.starts_with("net.") {
            Some((Namespace::Net, "network"))
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            Some((Namespace::Uts, "uts"))
        } else {
            None
        };
        match namespace {
            None => errors.at(
                at,
                "is not a parameter of a namespace the container can have of its own: it \
                 would change the host's kernel",
            ),
            Some((kind, name)) if !own.contains(&kind) => errors.at(
                at,
                format!(
                    "needs a {name} namespace of the container's own (the host's or a joined \
                     one is not the container's to change)"
                ),
            ),
            Some(_) if value.contains('\n') => errors.at(at, "the value holds a newline"),
            Some(_) => all.push(Sysctl {
                key: key.clone(),
                value: value.clone(),
            }),
        }
    }
    all
}

/// The device nodes mm binds into a container's /dev tmpfs (and its console and pty
/// nodes), as `(major, minor)`; `None`: every minor. A rule that allows only these asks
/// for nothing a container of mm's does not have anyway.
const OWN_NODES: &[(u32, Option<u32>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
];

/// `linux.resources.devices`, checked: each rule in the device controller's own words.
fn device_rules(res: &spec::Resources, errors: &mut Errors) -> Vec<DeviceRule> {
    let mut rules = Vec::new();
    for (i, rule) in res.devices.iter().enumerate() {
        let at = format!("linux.resources.devices[{i}]");
        let kind = match rule.kind.as_deref().unwrap_or("a") {
            "a" => DeviceKind::All,
            "c" => DeviceKind::Char,
            "b" => DeviceKind::Block,
            other => {
                errors.at(
                    format!("{at}.type"),
                    format!("`{other}` is not a device type (a, c or b)"),
                );
                continue;
            }
        };
        let number = |n: Option<i64>, key: &str, errors: &mut Errors| match n {
            None | Some(-1) => None,
            Some(n) => u32::try_from(n).ok().or_else(|| {
                errors.at(format!("{at}.{key}"), format!("{n} is not a device number"));
                None
            }),
        };
        let major = number(rule.major, "major", errors);
        let minor = number(rule.minor, "minor", errors);
        let access = rule.access.clone().unwrap_or_else(|| "rwm".to_owned());
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            errors.at(
                format!("{at}.access"),
                format!("`{access}` is not an access of r, w and m"),
            );
            continue;
        }
        rules.push(DeviceRule {
            allow: rule.allow,
            kind,
            major,
            minor,
            access,
        });
    }
    rules
}

/// Whether `rules` deny every device but nodes mm gives a container anyway: what a
/// container of mm's has without a device controller (a user namespace may not make
/// device nodes, so it opens only nodes bound into it).
fn only_own_nodes(rules: &[DeviceRule]) -> bool {
    let Some((first, rest)) = rules.split_first() else {
        return true;
    };
    let deny_all = !first.allow
        && first.kind == DeviceKind::All
        && first.major.is_none()
        && first.minor.is_none();
    deny_all
        && rest.iter().all(|rule| {
            !rule.allow
                || (rule.kind == DeviceKind::Char
                    && OWN_NODES.iter().any(|(major, minor)| {
                        rule.major == Some(*major) && (minor.is_none() || rule.minor == *minor)
                    }))
        })
}

/// `mm oci update --resources`: a runtime-spec `linux.resources` object as mm's limits,
/// checked as config.json's is.
pub fn update_resources(resources: &spec::Resources) -> Result<Resources, Vec<FieldError>> {
    let linux = spec::Linux {
        resources: Some(resources.clone()),
        ..Default::default()
    };
    let mut errors = Errors(Vec::new());
    if !resources.devices.is_empty() {
        errors.at(
            "devices",
            "mm oci update does not change device rules (they are set at create)",
        );
    }
    let limits = self::resources(&linux, &mut errors);
    if errors.0.is_empty() {
        Ok(limits)
    } else {
        Err(errors.0)
    }
}

/// `linux.resources` as mm's limits (the device rules are `device_rules`').
fn resources(linux: &spec::Linux, errors: &mut Errors) -> Resources {
    let mut limits = Resources::default();
    let Some(res) = &linux.resources else {
        return limits;
    };
    if let Some(memory) = res.memory.as_ref().and_then(|m| m.limit) {
        match u64::try_from(memory) {
            Ok(bytes) if bytes > 0 => limits.memory = Some(bytes),
            _ if memory == -1 => {}
            _ => errors.at(
                "linux.resources.memory.limit",
                format!("{memory} is not a number of bytes"),
            ),
        }
    }
    if let Some(cpu) = &res.cpu {
        if cpu.period.is_some_and(|p| p != 100_000) {
            errors.at(
                "linux.resources.cpu.period",
                "mm's CFS period is 100000 (100 ms); other periods are not supported by mm yet",
            );
        }
        match cpu.shares {
            // 0: not set, as runc reads it.
            None | Some(0) => {}
            Some(shares) if (2..=262_144).contains(&shares) => {
                limits.cpu_weight = Some(CpuWeight::Shares(shares));
            }
            Some(shares) => errors.at(
                "linux.resources.cpu.shares",
                format!("{shares}: cpu.shares go from 2 to 262144"),
            ),
        }
        match cpu.quota {
            None | Some(-1) => {}
            Some(quota) if quota > 0 && quota % 100 == 0 => {
                limits.cpus_milli = u32::try_from(quota / 100).ok();
            }
            Some(quota) => errors.at(
                "linux.resources.cpu.quota",
                format!("{quota}: mm takes quotas in steps of 100 µs (a thousandth of a CPU)"),
            ),
        }
    }
    // 0 and -1: no limit, as runc reads them.
    if let Some(pids) = res.pids.as_ref().and_then(|p| p.limit) {
        limits.pids = u64::try_from(pids).ok().filter(|n| *n > 0);
    }
    limits
}

/// The bundle's root directory (absolute) and how it is used.
fn root(config: &Spec, bundle: &Path, errors: &mut Errors) -> Option<(PathBuf, Upper)> {
    let Some(root) = &config.root else {
        errors.at("root", "a bundle needs its root (root.path)");
        return None;
    };
    let path = Path::new(&root.path);
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        errors.at("root.path", "`..` is not allowed in root.path");
        return None;
    }
    Some((
        bundle.join(path),
        Upper::InPlace {
            readonly: root.readonly,
        },
    ))
}

fn absolute(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|c| c == "..")
}

/// The options mm passes to `mount(2)` of a file system (the flags `ms_flags` knows, and
/// the file system's own `key=value` data).
const FS_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "nosuid",
    "nodev",
    "noexec",
    "relatime",
    "strictatime",
    "noatime",
    "nodiratime",
    "sync",
    "dirsync",
    "newinstance",
];

fn mounts(
    config: &Spec,
    linux: &spec::Linux,
    own: &[Namespace],
    joins: &[Join],
    bundle: &Path,
    host: &Host,
    errors: &mut Errors,
) -> Vec<Mount> {
    let mut all = Vec::new();
    let mut dev_tmpfs = false;
    for (i, m) in config.mounts.iter().enumerate() {
        let at = format!("mounts[{i}]");
        if !absolute(&m.destination) {
            errors.at(
                format!("{at}.destination"),
                format!("`{}` is not an absolute path without `..`", m.destination),
            );
            continue;
        }
        let target = m.destination.clone();
        let bind = m.options.iter().any(|o| o == "bind" || o == "rbind");
        let kind = m.kind.as_deref().unwrap_or(if bind { "bind" } else { "" });
        match kind {
            "bind" | "none" if bind || kind == "bind" => {
                let Some(source) = &m.source else {
                    errors.at(format!("{at}.source"), "a bind mount needs its source");
                    continue;
                };
                let mut readonly = false;
                let (mut nosuid, mut nodev, mut noexec) = (false, false, false);
                for (j, o) in m.options.iter().enumerate() {
                    match o.as_str() {
                        "ro" => readonly = true,
                        "nosuid" => nosuid = true,
                        "nodev" => nodev = true,
                        "noexec" => noexec = true,
                        "rw" | "bind" | "rbind" | "private" | "rprivate" => {}
                        other => errors.at(
                            format!("{at}.options[{j}]"),
                            format!("`{other}` on a bind mount is not supported by mm yet"),
                        ),
                    }
                }
                all.push(Mount::Bind {
                    source: bundle.join(source),
                    target: target.clone(),
                    readonly,
                    recursive: m.options.iter().any(|o| o == "rbind"),
                });
                if nosuid || nodev || noexec {
                    all.push(Mount::Restrict {
                        target,
                        nosuid,
                        nodev,
                        noexec,
                    });
                }
            }
            "cgroup" | "cgroup2" => {
                if target != "/sys/fs/cgroup" {
                    errors.at(
                        format!("{at}.destination"),
                        "mm mounts the cgroup tree on /sys/fs/cgroup only",
                    );
                    continue;
                }
                // Without a cgroup namespace of its own, a user namespace may not mount
                // cgroup file systems: the host's tree is bound, read-only, as runc binds it.
                if !linux.namespaces.iter().any(|n| n.kind == "cgroup") {
                    all.push(Mount::Bind {
                        source: PathBuf::from("/sys/fs/cgroup"),
                        target,
                        readonly: true,
                        recursive: true,
                    });
                    continue;
                }
                match crate::plan::host_cgroup_tree(host, false) {
                    Some(tree) => all.push(tree),
                    None => errors.at(
                        at.clone(),
                        "the host has no cgroup hierarchy under /sys/fs/cgroup",
                    ),
                }
            }
            // sysfs may only be mounted by the owner of the network namespace, and mqueue
            // by the owner of the IPC one; mm's user namespace owns only those it made.
            // Of a joined one, host root makes it in the spawner; of the host's own network
            // namespace, the host's /sys is bound, as runc binds it.
            "sysfs" | "mqueue"
                if host.is_root()
                    && joins.iter().any(|j| {
                        j.namespace
                            == if kind == "sysfs" {
                                Namespace::Net
                            } else {
                                Namespace::Ipc
                            }
                    }) =>
            {
                let mut options = Vec::new();
                for (j, o) in m.options.iter().enumerate() {
                    match o.as_str() {
                        "ro" | "nosuid" | "nodev" | "noexec" | "noatime" | "strictatime"
                        | "nodiratime" => options.push(o.clone()),
                        "rw" | "relatime" => {}
                        other => errors.at(
                            format!("{at}.options[{j}]"),
                            format!(
                                "`{other}` is not supported by mm on the {kind} of a joined namespace"
                            ),
                        ),
                    }
                }
                all.push(Mount::HostFs {
                    fstype: kind.to_owned(),
                    target,
                    options,
                });
            }
            "sysfs" if !own.contains(&Namespace::Net) => {
                let readonly = m.options.iter().any(|o| o == "ro");
                all.push(Mount::Bind {
                    source: PathBuf::from("/sys"),
                    target: target.clone(),
                    readonly,
                    recursive: true,
                });
                let has = |flag: &str| m.options.iter().any(|o| o == flag);
                if has("nosuid") || has("nodev") || has("noexec") {
                    all.push(Mount::Restrict {
                        target,
                        nosuid: has("nosuid"),
                        nodev: has("nodev"),
                        noexec: has("noexec"),
                    });
                }
            }
            "mqueue" if !own.contains(&Namespace::Ipc) => errors.at(
                format!("{at}.type"),
                "an mqueue mount needs an ipc namespace that the container has of its own or \
                 joins (mm's user namespace may mount only the message queues of one it made)",
            ),
            "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" => {
                let mut options = Vec::new();
                for (j, o) in m.options.iter().enumerate() {
                    if FS_FLAGS.contains(&o.as_str()) || o.contains('=') {
                        if o != "rw" {
                            options.push(o.clone());
                        }
                    } else {
                        errors.at(
                            format!("{at}.options[{j}]"),
                            format!("`{o}` is not supported by mm on a {kind} mount"),
                        );
                    }
                }
                dev_tmpfs |= kind == "tmpfs" && target == "/dev";
                all.push(Mount::Fs {
                    fstype: kind.to_owned(),
                    target,
                    options,
                });
            }
            other => errors.at(
                format!("{at}.type"),
                format!("`{other}` mounts are not supported by mm yet"),
            ),
        }
    }
    if dev_tmpfs {
        // The runtime-spec's default devices are these nodes.
        for node in crate::plan::DEV_NODES {
            let path = format!("/dev/{node}");
            all.push(Mount::Bind {
                source: PathBuf::from(&path),
                target: path,
                readonly: false,
                recursive: false,
            });
        }
        all.extend(crate::plan::dev_links());
    }
    for (field, paths, masked) in [
        ("linux.maskedPaths", &linux.masked_paths, true),
        ("linux.readonlyPaths", &linux.readonly_paths, false),
    ] {
        for (i, path) in paths.iter().enumerate() {
            if !absolute(path) {
                errors.at(
                    format!("{field}[{i}]"),
                    format!("`{path}` is not an absolute path without `..`"),
                );
                continue;
            }
            let target = path.clone();
            all.push(if masked {
                Mount::MaskPath { target }
            } else {
                Mount::ReadOnly { target }
            });
        }
    }
    all
}

/// The container's process and how it is locked down.
fn process(
    config: &Spec,
    id: &super::ContainerId,
    namespaces: &[Namespace],
    errors: &mut Errors,
) -> (Process, Security) {
    let empty = spec::Process {
        terminal: false,
        console_size: None,
        user: spec::User {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            umask: None,
        },
        args: Vec::new(),
        env: Vec::new(),
        cwd: "/".to_owned(),
        capabilities: None,
        rlimits: Vec::new(),
        no_new_privileges: false,
    };
    let p = match &config.process {
        Some(p) => p,
        None => {
            errors.at("process", "mm runs a container's process: it needs one");
            &empty
        }
    };
    let terminal = terminal(p, errors);
    if config.process.is_some() && p.args.is_empty() {
        errors.at("process.args", "the process needs at least its program");
    }
    if !p.cwd.starts_with('/') {
        errors.at(
            "process.cwd",
            format!("`{}` is not an absolute path", p.cwd),
        );
    }
    if p.user.umask.is_some_and(|m| m > 0o777) {
        errors.at("process.user.umask", "a umask is at most 0777 (511)");
    }
    let mut rlimits = Vec::new();
    for (i, limit) in p.rlimits.iter().enumerate() {
        if !RLIMITS.contains(&limit.kind.as_str()) {
            errors.at(
                format!("process.rlimits[{i}].type"),
                format!("`{}` is not a resource limit of Linux", limit.kind),
            );
        } else if limit.soft > limit.hard {
            errors.at(
                format!("process.rlimits[{i}].soft"),
                "the soft limit is above the hard one",
            );
        }
        rlimits.push(Rlimit {
            resource: limit.kind.clone(),
            soft: limit.soft,
            hard: limit.hard,
        });
    }
    let hostname = match &config.hostname {
        Some(name) if !namespaces.contains(&Namespace::Uts) => {
            errors.at(
                "hostname",
                "a hostname needs a uts namespace of the container's own",
            );
            name.clone()
        }
        Some(name) => name.clone(),
        None => id.name().to_string(),
    };
    let security = security(p, errors);
    let process = Process {
        pid1: Pid1::Direct,
        hostname,
        command: Command::Resolved(Exec {
            argv: p.args.clone(),
            env: p.env.clone(),
            user: format!("{}:{}", p.user.uid, p.user.gid),
            workdir: p.cwd.clone(),
        }),
        rlimits,
        waits_for_start: true,
        groups: p.user.additional_gids.clone(),
        umask: p.user.umask,
        reparented: true,
        terminal,
    };
    (process, security)
}

/// `process.terminal` and `consoleSize`: the terminal PID 1 opens in the container's own
/// devpts (whether the config mounts one is checked with the mounts).
fn terminal(p: &spec::Process, errors: &mut Errors) -> Option<Terminal> {
    let size = p.console_size.map(|size| {
        let fit = |n: u32, field: &str, errors: &mut Errors| {
            u16::try_from(n).unwrap_or_else(|_| {
                errors.at(
                    format!("process.consoleSize.{field}"),
                    format!("{n} is more than a terminal has (at most 65535)"),
                );
                u16::MAX
            })
        };
        (
            fit(size.height, "height", errors),
            fit(size.width, "width", errors),
        )
    });
    if !p.terminal && size.is_some() {
        errors.at(
            "process.consoleSize",
            "a console size needs a terminal (`process.terminal: true`)",
        );
    }
    p.terminal.then_some(Terminal { size })
}

/// A terminal is opened in the container's own devpts: the config must mount one on
/// `/dev/pts` (a pseudo-terminal of the host's devpts is not given to a container).
fn has_devpts(mounts: &[Mount]) -> bool {
    mounts.iter().any(|m| {
        matches!(m, Mount::Fs { fstype, target, .. } if fstype == "devpts" && target == "/dev/pts")
    })
}

/// A process to run in a running container (`mm oci exec`), from its runtime-spec
/// `process` object: checked as config.json's process is (the same errors at the same
/// JSON paths), compiled into the plan's process and lock-down.
pub fn exec_process(
    p: &spec::Process,
    id: &super::ContainerId,
) -> Result<(Process, Security), Vec<FieldError>> {
    let config = Spec {
        oci_version: "1.0.0".to_owned(),
        process: Some(p.clone()),
        root: None,
        hostname: None,
        mounts: Vec::new(),
        annotations: Default::default(),
        linux: None,
    };
    let mut errors = Errors(Vec::new());
    let compiled = process(&config, id, &[Namespace::Uts], &mut errors);
    if errors.0.is_empty() {
        Ok(compiled)
    } else {
        Err(errors.0)
    }
}

/// The capability sets. PID 1 executes as root with exactly its bounding set effective
/// and permitted (no file capabilities), or as another user with none: a config that
/// asks otherwise is refused.
fn security(p: &spec::Process, errors: &mut Errors) -> Security {
    let caps = p.capabilities.clone().unwrap_or_default();
    let names = |field: &str, list: &[String], errors: &mut Errors| -> Vec<String> {
        let mut set = BTreeSet::new();
        for (i, name) in list.iter().enumerate() {
            match capability::canonical(name) {
                Some(c) => {
                    set.insert(c.to_owned());
                }
                None => errors.at(
                    format!("process.capabilities.{field}[{i}]"),
                    format!("`{name}` is not a capability"),
                ),
            }
        }
        set.into_iter().collect()
    };
    let bounding = names("bounding", &caps.bounding, errors);
    let root = p.user.uid == 0;
    let mut sets = Vec::new();
    for (field, list) in [
        ("effective", &caps.effective),
        ("permitted", &caps.permitted),
        ("inheritable", &caps.inheritable),
        ("ambient", &caps.ambient),
    ] {
        let set = list
            .as_deref()
            .map(|l| names(field, l, errors))
            .unwrap_or_default();
        let subset = set.iter().all(|c| bounding.contains(c));
        let fine = match field {
            "effective" | "permitted" if root => list.is_none() || set == bounding,
            "effective" | "permitted" => set.is_empty(),
            "ambient" if !root => set.is_empty(),
            _ => subset,
        };
        if !fine {
            let why = if root {
                "as root, mm gives the process its bounding set as effective and permitted \
                 sets, and takes inheritable and ambient capabilities from inside it only"
            } else {
                "mm gives a process that is not root no capabilities (effective, permitted \
                 and ambient sets must be empty)"
            };
            errors.at(format!("process.capabilities.{field}"), why);
        }
        sets.push(set);
    }
    let ambient = sets.pop().unwrap_or_default();
    let inheritable = sets.pop().unwrap_or_default();
    Security {
        capabilities: bounding,
        seccomp: crate::plan::Seccomp::None,
        no_new_privileges: p.no_new_privileges,
        inheritable,
        ambient,
    }
}
