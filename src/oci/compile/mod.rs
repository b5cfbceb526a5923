//! A bundle's `config.json` + the Host facts → mm's [`Plan`], the same data a TOML
//! definition compiles into, executed by the same runtime. Pure: reads nothing.
//!
//! What mm cannot honour is a [`FieldError`] at its JSON path; every error is collected,
//! so a config with three problems shows three.

mod cgroup;
mod mounts;
mod process;

use std::path::{Path, PathBuf};

use crate::definition::ImageSource;
use crate::host::Host;
use crate::idmap::IdMapEntry;
use crate::oci::fields::FieldError;
use crate::oci::spec::{self, Spec};
use crate::plan::{
    IdMapping, Ids, Image, Join, Layers, MapWriter, Namespace, Network, Plan, Propagation,
    Registration, RootFs, Stop, Sysctl, Upper,
};

pub use cgroup::update_resources;
pub use process::exec_process;

/// How the caller drives mm (runc's global flags that change the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--root`: the container's state lives in `ROOT/ID`.
    pub state_root: PathBuf,
    /// `--systemd-cgroup`: `linux.cgroupsPath` is `SLICE:PREFIX:NAME`.
    pub systemd_cgroup: bool,
}

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
    id: &crate::oci::ContainerId,
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
    let (namespaces, mut joins) = namespaces(&linux, host, &mut errors);
    // A joined user namespace is the supervisor's to join, not the spawner's: the ids'.
    let user = joins
        .iter()
        .position(|j| j.namespace == Namespace::User)
        .map(|i| joins.remove(i).path);
    let runtime_dir = options.state_root.join(id.as_str());
    let ids = ids(&linux, host, user, &mut errors);
    let cgroup = cgroup::cgroup(&linux, id, host, options, &mut errors);
    let root = root(config, bundle, &mut errors);
    let root_propagation = linux.rootfs_propagation.as_deref().and_then(|name| {
        let propagation = Propagation::parse(name);
        if propagation.is_none() {
            errors.at(
                "linux.rootfsPropagation",
                format!(
                    "`{name}` is none of shared, slave, private, unbindable and their \
                     recursive forms (rshared...)"
                ),
            );
        }
        propagation
    });
    let mounts = mounts::mounts(
        config,
        &linux,
        &namespaces,
        &joins,
        bundle,
        host,
        &mut errors,
    );
    let (mut process, mut security) =
        process::process(config, id, &namespaces, host.apparmor, &mut errors);
    let sysctls = sysctls(&linux, &namespaces, &joins, &mut errors);
    // Those of the launch are the plan's, the others the lifecycle's commands': all
    // checked here with the rest.
    let hooks = super::hooks::hooks(config.hooks.as_ref(), &mut errors.0);
    if !hooks.create_runtime.is_empty()
        || !hooks.create_container.is_empty()
        || !hooks.start_container.is_empty()
    {
        process.hooks = Some(crate::plan::ContainerHooks {
            create_runtime: hooks.create_runtime,
            create_container: hooks.create_container,
            start_container: hooks.start_container,
            state: crate::plan::HookState {
                oci_version: super::state::OCI_VERSION.to_owned(),
                id: id.as_str().to_owned(),
                bundle: bundle.to_path_buf(),
                annotations: config.annotations.clone(),
            },
        });
    }
    if process.terminal.is_some() && !process::has_devpts(&mounts) {
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
            layers: Layers::Directory {
                path: rootfs.clone(),
            },
            layout: crate::image::Layout::Default,
        },
        ids,
        namespaces,
        joins,
        sysctls,
        cgroup,
        root: RootFs {
            // Bound onto itself in PID 1's mount namespace, as runc binds it: until
            // pivot_root the bundle's root path is the container's root, where the
            // createRuntime and createContainer hooks find it.
            mount_point: rootfs,
            upper,
            idmapped_lowers: false,
            options: Vec::new(),
            propagation: root_propagation,
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
            Some(_) if !host.has_namespace_root() => {
                "joining an existing namespace needs root: setns(2) needs CAP_SYS_ADMIN over \
                 the namespace and in the caller's own user namespace, which an ordinary \
                 user's mm has in neither"
                    .to_owned()
            }
            Some(path) => match kind {
                Namespace::Net
                | Namespace::Ipc
                | Namespace::Uts
                | Namespace::Pid
                | Namespace::User
                    if absolute(path) =>
                {
                    joins.push(Join {
                        namespace: kind,
                        path: PathBuf::from(path),
                    });
                    continue;
                }
                Namespace::Net
                | Namespace::Ipc
                | Namespace::Uts
                | Namespace::Pid
                | Namespace::User => {
                    format!("`{path}` is not an absolute path without `..`")
                }
                _ => format!(
                    "joining an existing {} namespace is not supported by mm (only network, \
                     ipc, uts, pid and user ones: mm's PID 1 makes its own mount namespace, \
                     and a cgroup one when asked)",
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
    if !host.has_namespace_root() && !asked.contains(&Namespace::User) {
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
/// identity of every id, so that the container's ids are the host's (in another user
/// namespace, of every id that one has).
fn ids(linux: &spec::Linux, host: &Host, joined: Option<PathBuf>, errors: &mut Errors) -> Ids {
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
    let writer = match joined {
        Some(path) => MapWriter::Joined { path },
        None if host.has_namespace_root() => MapWriter::Direct,
        None => MapWriter::Newidmap,
    };
    let (uid, gid) = match (asked_user, linux.uid_mappings.is_empty()) {
        (true, false) => {
            if linux.gid_mappings.is_empty() {
                errors.at("linux.gidMappings", "uidMappings need gidMappings too");
            }
            (entries(&linux.uid_mappings), entries(&linux.gid_mappings))
        }
        (true, true) if host.has_namespace_root() => {
            errors.at(
                "linux.uidMappings",
                if matches!(writer, MapWriter::Joined { .. }) {
                    "a user namespace joined by path needs its maps too: mm checks them \
                     against the namespace's (podman and containerd give them)"
                } else {
                    "a user namespace needs its maps when mm runs as root"
                },
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
            // In another user namespace (rootless podman's), only the ids it has.
            match &host.user_namespace {
                None => {
                    let all = vec![IdMapEntry {
                        inside: 0,
                        outside: 0,
                        count: u32::MAX,
                    }];
                    (all.clone(), all)
                }
                Some(ns) => (
                    crate::idmap::identity_of(&ns.uid_map),
                    crate::idmap::identity_of(&ns.gid_map),
                ),
            }
        }
    };
    Ids {
        writer,
        uid: IdMapping::Map { entries: uid },
        gid: IdMapping::Map { entries: gid },
        block: None,
    }
}

/// `linux.sysctl`: only the parameters of a namespace the container has of its own (runc's
/// list), which PID 1 may write as its user namespace's root, or of one it joins (rootless
/// podman sets `net.ipv4.ping_group_range` in the network namespace it made), which the
/// spawner writes there; any other would change the host's kernel.
fn sysctls(
    linux: &spec::Linux,
    own: &[Namespace],
    joins: &[Join],
    errors: &mut Errors,
) -> Vec<Sysctl> {
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
            Some(_) if value.contains('\n') => errors.at(at, "the value holds a newline"),
            Some((kind, _)) if own.contains(&kind) => all.push(Sysctl {
                key: key.clone(),
                value: value.clone(),
                joined: None,
            }),
            Some((kind, _)) if joins.iter().any(|j| j.namespace == kind) => all.push(Sysctl {
                key: key.clone(),
                value: value.clone(),
                joined: Some(kind),
            }),
            Some((_, name)) => errors.at(
                at,
                format!(
                    "needs the container's own {name} namespace or a joined one (the host's \
                     is not the container's to change)"
                ),
            ),
        }
    }
    all
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
