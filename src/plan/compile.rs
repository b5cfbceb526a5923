//! Definition + Host → Plan. Pure: reads nothing, writes nothing, decides everything.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{
    Cgroup, IdMapping, Ids, Image, Layers, LimitWrite, Machine, Machined, MapWriter, Namespace,
    Network, Plan, Registration, RootFs, Security, StoredLayer, Upper, machine_id,
};
use crate::definition::{
    CapabilityDrop, Definition, Diagnostic, Diagnostics, ImageSource, MemoryAndSwap, Resources,
    capability,
};
use crate::host::{CgroupMode, Host};
use crate::image::{ImageRecord, Store};

use super::desktop::{desktop, device_rules};
use super::ids::ids;
use super::keepid::{home_mount, keep_id};
use super::known::{Known, Rejected, ids_taken, no_command};
use super::mounts::mounts;
use super::network::{address_taken, network};
use super::process::{process, stop};

/// The CFS period mm uses for `cpus`: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// Compiles `def` for `host`, given what mm already holds for the machine. Errors point at
/// the definition's line: where it contradicts what mm holds (an image with no command and
/// none in [exec], ids another machine has), or where the host cannot do what it asks (no
/// subordinate ids, no delegated cgroup for limits, …).
pub fn compile(def: &Definition, host: &Host, known: Known<'_>) -> Result<Plan, Rejected> {
    let layout = match &def.keep_id {
        // Rootless, the layers' owners are laid out for the keep-id map (see Layout).
        Some(_) if !host.is_root() => crate::image::Layout::KeepId {
            uid: host.uid,
            gid: host.gid,
        },
        _ => crate::image::Layout::Default,
    };
    let image = image(def, host, known.image, layout);
    let invalid: Vec<Diagnostic> = [
        no_command(def, &image, known.image),
        ids_taken(def, host, known.taken),
        address_taken(def, host, known.addresses),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !invalid.is_empty() {
        return Err(Rejected::Invalid(Diagnostics(invalid)));
    }
    let mut problems = Vec::new();
    let private_net = def.network.private();
    let name = def.name.as_str();
    let runtime_dir = host.dirs.runtime.join(name);
    let state_dir = host.dirs.machines.join(name);
    let keep = keep_id(def, host, known.account, &state_dir).unwrap_or_else(|d| {
        problems.push(d);
        None
    });
    let ids = ids(def, host, known.ids, keep.as_ref()).unwrap_or_else(|d| {
        problems.push(d);
        Ids {
            writer: MapWriter::Direct,
            uid: IdMapping::Map { entries: vec![] },
            gid: IdMapping::Map { entries: vec![] },
            block: None,
        }
    });
    let mut cgroup = cgroup(def, host).unwrap_or_else(|d| {
        problems.push(d);
        Cgroup::Inherit { why: String::new() }
    });
    let (network, network_mounts) = network(def, host, known.addresses).unwrap_or_else(|d| {
        problems.push(d);
        (Network::Private, Vec::new())
    });
    let home = keep.as_ref().map(home_mount);
    let mut mounts = mounts(def, host, network_mounts, home).unwrap_or_else(|d| {
        problems.push(d);
        Vec::new()
    });
    let desktop = desktop(def, host).unwrap_or_else(|d| {
        problems.extend(d);
        super::desktop::Compiled::default()
    });
    if !problems.is_empty() {
        return Err(Rejected::HostCannot(Diagnostics(problems)));
    }
    mounts.extend(desktop.mounts);
    device_rules(&mut cgroup, &desktop.devices, host);
    let root = root_fs(def, host, &runtime_dir, &state_dir);
    let process = process(def, &image, known.image, desktop.env);
    Ok(Plan {
        machine: Machine {
            name: def.name.clone(),
            description: def.description.clone(),
            definition: std::path::absolute(def.file.path())
                .unwrap_or_else(|_| def.file.path().to_owned()),
            runtime_dir,
            state_dir,
        },
        image,
        ids,
        namespaces: namespaces(private_net),
        joins: Vec::new(),
        sysctls: Vec::new(),
        cgroup,
        mounts,
        root,
        network,
        registration: registration(def, host),
        security: security(def, private_net),
        process,
        stop: stop(def),
        desktop: desktop.desktop,
        keep_id: keep,
    })
}

fn image(
    def: &Definition,
    host: &Host,
    stored: Option<&ImageRecord>,
    layout: crate::image::Layout,
) -> Image {
    let source = def.image.source.value.clone();
    let pin = def.image.digest.as_ref();
    let layers = match (&source, stored) {
        (ImageSource::Rootfs { path }, _) => Layers::Directory { path: path.clone() },
        // A stored image that the pin refuses is imported again at start, and refused there.
        (_, Some(record)) if pin.is_none_or(|pin| *pin == record.manifest) => {
            let store = Store::new(&host.dirs.store);
            Layers::Stored {
                manifest: record.manifest.clone(),
                layers: record
                    .layers
                    .iter()
                    .map(|l| StoredLayer {
                        diff_id: l.diff_id.clone(),
                        dir: store.layer_dir_in(layout, &l.diff_id),
                    })
                    .collect(),
            }
        }
        _ => Layers::Unresolved,
    };
    Image {
        source,
        pinned: def.image.digest.clone(),
        layers,
        layout,
    }
}

fn namespaces(private_net: bool) -> Vec<Namespace> {
    let mut all = vec![
        Namespace::User,
        Namespace::Mount,
        Namespace::Pid,
        Namespace::Uts,
        Namespace::Ipc,
    ];
    if private_net {
        all.push(Namespace::Net);
    }
    all.push(Namespace::Cgroup);
    all
}

fn cgroup(def: &Definition, host: &Host) -> Result<Cgroup, Diagnostic> {
    let limits = &def.resources.value;
    let at = |message: String| {
        def.file
            .error_at(&def.resources.span, message)
            .key("resources")
    };
    match placement(def.name.as_str(), host) {
        Ok((path, dirs)) => Ok(Cgroup::Create {
            mode: host.cgroup.mode,
            limits: limit_writes(limits, host.cgroup.mode, &dirs, host).map_err(at)?,
            path,
            dirs,
        }),
        Err(why) if limits.any() => Err(at(format!(
            "resource limits need a cgroup of the machine's own, and {why}"
        ))
        .help("on a cgroup v2 host, run mm inside a systemd user session (it delegates a subtree)")
        .help("or run the machine as root, or remove [resources]")),
        Err(why) => Ok(Cgroup::Inherit { why }),
    }
}

/// Where the machine's cgroup goes: its unit-shaped path and the directory to make in each
/// hierarchy; or why it cannot have one.
///
/// Under `mm run --keep-unit` it is the unit's `payload` sub-cgroup (as with
/// `systemd-nspawn --keep-unit`), so that machined and systemd see it as the unit's;
/// otherwise `machine.slice/mm-NAME.scope` (root) or `mm-NAME.scope` in the user's
/// delegated subtree.
pub fn placement(name: &str, host: &Host) -> Result<(String, Vec<PathBuf>), String> {
    let facts = &host.cgroup;
    let in_unit = host
        .unit_cgroup
        .as_deref()
        .map(|unit| format!("{}/payload", unit.trim_matches('/')));
    let leaf = format!("mm-{name}.scope");
    if host.is_root() {
        let path = in_unit.unwrap_or_else(|| format!("machine.slice/{leaf}"));
        let dirs = hierarchy_dirs(&path, host);
        return if dirs.is_empty() {
            Err("this host has no cgroup file system mounted".to_owned())
        } else {
            Ok((path, dirs))
        };
    }
    let (CgroupMode::V2, Some(tree)) = (facts.mode, &facts.unified) else {
        return Err(format!(
            "this host's cgroups are {}: only cgroup v2 can be delegated to ordinary users",
            facts.mode
        ));
    };
    let dir = match (&in_unit, &facts.delegated) {
        (Some(path), Some(delegated)) if tree.join(path).starts_with(delegated) => tree.join(path),
        (None, Some(delegated)) => delegated.join(&leaf),
        (Some(_), _) => {
            return Err(format!(
                "the unit's cgroup {} is not delegated to user `{}` (Delegate=yes)",
                host.unit_cgroup.as_deref().unwrap_or_default(),
                host.user
            ));
        }
        (None, None) => {
            return Err(format!(
                "no cgroup subtree is delegated to user `{}`",
                host.user
            ));
        }
    };
    let path = dir.strip_prefix(tree).unwrap_or(&dir).display().to_string();
    Ok((path, vec![dir]))
}

/// Root: the directory of the cgroup `path` (relative) in each of the host's hierarchies.
pub fn hierarchy_dirs(path: &str, host: &Host) -> Vec<PathBuf> {
    let facts = &host.cgroup;
    let hierarchies = facts.v1.iter().map(|h| &h.path).chain(&facts.unified);
    hierarchies.map(|h| h.join(path)).collect()
}

/// The files to write for each limit, in the hierarchy that carries its controller.
pub fn limit_writes(
    limits: &Resources,
    mode: CgroupMode,
    dirs: &[PathBuf],
    host: &Host,
) -> Result<Vec<LimitWrite>, String> {
    let facts = &host.cgroup;
    let mut writes = Vec::new();
    let mut write = |controller: &str, files: &[(&str, String)]| -> Result<(), String> {
        if !facts.controllers.iter().any(|c| c == controller) {
            return Err(format!(
                "the `{controller}` cgroup controller is not available here"
            ));
        }
        let dir = match mode {
            CgroupMode::V2 => dirs.first(),
            _ => facts
                .v1_hierarchy(controller)
                .and_then(|h| dirs.iter().find(|d| d.starts_with(&h.path))),
        };
        let dir =
            dir.ok_or_else(|| format!("no hierarchy carries the `{controller}` controller"))?;
        for (file, value) in files {
            writes.push(LimitWrite {
                file: dir.join(file),
                value: value.clone(),
            });
        }
        Ok(())
    };
    let v2 = mode == CgroupMode::V2;
    if let Some(bytes) = limits.memory {
        write(
            "memory",
            &[(
                if v2 {
                    "memory.max"
                } else {
                    "memory.limit_in_bytes"
                },
                bytes.to_string(),
            )],
        )?;
    }
    // After the memory limit: cgroup v1 keeps memory and swap at or above it.
    if let Some(total) = limits.memory_and_swap {
        let (file, value) = match (total, v2) {
            (MemoryAndSwap::Unlimited, true) => ("memory.swap.max", "max".to_owned()),
            (MemoryAndSwap::Unlimited, false) => ("memory.memsw.limit_in_bytes", "-1".to_owned()),
            // v2 limits the swap alone.
            (MemoryAndSwap::Bytes(total), true) => (
                "memory.swap.max",
                total.saturating_sub(limits.memory.unwrap_or(0)).to_string(),
            ),
            (MemoryAndSwap::Bytes(total), false) => {
                ("memory.memsw.limit_in_bytes", total.to_string())
            }
        };
        write("memory", &[(file, value)])?;
    }
    if let Some(milli) = limits.cpus_milli {
        let quota = u64::from(milli) * CPU_PERIOD_US / 1000;
        if v2 {
            write("cpu", &[("cpu.max", format!("{quota} {CPU_PERIOD_US}"))])?;
        } else {
            write(
                "cpu",
                &[
                    ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            )?;
        }
    }
    if let Some(pids) = limits.pids {
        write("pids", &[("pids.max", pids.to_string())])?;
    }
    for (file, list) in [
        ("cpuset.cpus", &limits.cpuset_cpus),
        ("cpuset.mems", &limits.cpuset_mems),
    ] {
        if let Some(list) = list {
            write("cpuset", &[(file, list.clone())])?;
        }
    }
    for (size, bytes) in &limits.hugepages {
        let file = if v2 {
            format!("hugetlb.{size}.max")
        } else {
            format!("hugetlb.{size}.limit_in_bytes")
        };
        write("hugetlb", &[(&file, bytes.to_string())])?;
    }
    if let Some(weight) = limits.cpu_weight {
        if v2 {
            write("cpu", &[("cpu.weight", weight.v2_weight().to_string())])?;
        } else {
            write("cpu", &[("cpu.shares", weight.v1_shares().to_string())])?;
        }
    }
    Ok(writes)
}

fn root_fs(
    def: &Definition,
    host: &Host,
    runtime_dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> RootFs {
    let upper = if def.security.read_only {
        Upper::ReadOnly
    } else if def.storage.persistent {
        Upper::Persistent {
            upper: state_dir.join("upper"),
            work: state_dir.join("work"),
        }
    } else {
        Upper::Volatile {
            tmpfs: runtime_dir.join("volatile"),
        }
    };
    RootFs {
        mount_point: runtime_dir.join("root"),
        upper,
        idmapped_lowers: host.is_root(),
        options: if host.is_root() {
            vec![]
        } else {
            vec!["userxattr".to_owned()]
        },
        propagation: None,
    }
}

fn registration(def: &Definition, host: &Host) -> Registration {
    let why = if !host.is_root() {
        "systemd-machined accepts registrations from root only".to_owned()
    } else if !host.bus.machined.available {
        format!(
            "systemd-machined is not reachable ({})",
            host.bus.machined.detail
        )
    } else {
        return Registration::Machined(Machined {
            name: def.name.clone(),
            id: machine_id(def.name.as_str()),
            class: "container".to_owned(),
            service: "mm".to_owned(),
            root_directory: host.dirs.runtime.join(def.name.as_str()).join("root"),
        });
    };
    Registration::Skip { why }
}

fn security(def: &Definition, private_net: bool) -> Security {
    let sec = &def.security;
    let mut caps: BTreeSet<&'static str> = match &sec.drop_capabilities {
        CapabilityDrop::All => BTreeSet::new(),
        CapabilityDrop::Some(drop) => {
            let mut base: BTreeSet<&'static str> = capability::DEFAULT.iter().copied().collect();
            if private_net {
                base.insert("CAP_NET_ADMIN");
            }
            base.difference(drop).copied().collect()
        }
    };
    caps.extend(sec.add_capabilities.iter().copied());
    Security {
        capabilities: caps.into_iter().map(str::to_owned).collect(),
        seccomp: super::Seccomp::MmDefault,
        no_new_privileges: sec.no_new_privileges,
        inheritable: Vec::new(),
        ambient: Vec::new(),
        apparmor_profile: None,
    }
}
