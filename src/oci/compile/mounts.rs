//! `mounts`: each mount of the config as plan data, with the file systems a joined
//! namespace's owner must make (`Mount::HostFs`) and the host's /dev nodes.

use std::path::{Path, PathBuf};

use super::Errors;
use super::absolute;
use crate::host::Host;
use crate::oci::spec::{self, Spec};
use crate::plan::{Join, Mount, Namespace, Propagation};

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

pub(super) fn mounts(
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
                let mut propagations = Vec::new();
                for (j, o) in m.options.iter().enumerate() {
                    match o.as_str() {
                        "ro" => readonly = true,
                        "nosuid" => nosuid = true,
                        "nodev" => nodev = true,
                        "noexec" => noexec = true,
                        "rw" | "bind" | "rbind" => {}
                        other => match Propagation::parse(other) {
                            Some(p) => propagations.push(p),
                            None => errors.at(
                                format!("{at}.options[{j}]"),
                                format!("`{other}` on a bind mount is not supported by mm yet"),
                            ),
                        },
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
                        target: target.clone(),
                        nosuid,
                        nodev,
                        noexec,
                    });
                }
                all.extend(propagate(&target, propagations));
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
            // sysfs may only be mounted by the owner of the network namespace, mqueue by
            // the owner of the IPC one and proc by the owner of the PID one; mm's user
            // namespace owns only those it made. Of a joined one, host root makes it inside
            // it; of the host's own network namespace, the host's /sys is bound, as runc
            // binds it.
            "sysfs" | "mqueue" | "proc" if of_joined(kind, joins) => {
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
                let mut propagations = Vec::new();
                for (j, o) in m.options.iter().enumerate() {
                    if FS_FLAGS.contains(&o.as_str()) || o.contains('=') {
                        if o != "rw" {
                            options.push(o.clone());
                        }
                    } else if let Some(p) = Propagation::parse(o) {
                        propagations.push(p);
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
                    target: target.clone(),
                    options,
                    source: m.source.clone().filter(|s| s != kind),
                });
                all.extend(propagate(&target, propagations));
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
    // After /dev: the host's nodes, bound (oci/devices.rs); one of the default nodes
    // above only once.
    for node in crate::oci::devices::nodes(&linux.devices, &mut errors.0) {
        let default = crate::plan::DEV_NODES
            .iter()
            .any(|n| node.path == format!("/dev/{n}"));
        if dev_tmpfs && default {
            continue;
        }
        all.push(Mount::Bind {
            source: PathBuf::from(&node.path),
            target: node.path,
            readonly: false,
            recursive: false,
        });
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

/// The mounts that give the mount on `target` each propagation asked, in order (as runc
/// applies them).
fn propagate(target: &str, propagations: Vec<Propagation>) -> impl Iterator<Item = Mount> + '_ {
    propagations
        .into_iter()
        .map(|propagation| Mount::Propagate {
            target: target.to_owned(),
            propagation,
        })
}

/// Whether `fstype` is sysfs or mqueue of a namespace the container joins (network, IPC).
fn of_joined(fstype: &str, joins: &[Join]) -> bool {
    let owner = match fstype {
        "sysfs" => Namespace::Net,
        "mqueue" => Namespace::Ipc,
        "proc" => Namespace::Pid,
        _ => return false,
    };
    joins.iter().any(|j| j.namespace == owner)
}
