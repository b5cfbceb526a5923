//! Every mount inside the new root, in order, before `pivot_root`.

use std::path::{Path, PathBuf};

use super::{CgroupFs, CgroupHierarchy, Mount};
use crate::definition::{BindSource, Definition, Diagnostic};
use crate::host::{CgroupMode, Host};

/// The mounts, in order: the kernel's file systems, /dev, what is hidden or read-only, the
/// network's (the host's resolver with the host's network; `network` with one of its own),
/// then the keep-id user's home, then the definition's binds.
pub(super) fn mounts(
    def: &Definition,
    host: &Host,
    network: Vec<Mount>,
    home: Option<Mount>,
) -> Result<Vec<Mount>, Diagnostic> {
    let private_net = def.network.private();
    let mut all = kernel_fs(def, host, private_net)?;
    all.extend(dev());
    all.extend(scratch(host.is_root()));
    all.extend(hidden());
    if !private_net {
        all.push(host_bind(
            "/etc/resolv.conf",
            "/etc/resolv.conf",
            true,
            false,
        ));
    }
    all.extend(network);
    all.extend(home);
    all.extend(binds(def, host));
    Ok(all)
}

fn fs(fstype: &str, target: &str, options: &str) -> Mount {
    Mount::Fs {
        fstype: fstype.to_owned(),
        target: target.to_owned(),
        options: options.split(',').map(str::to_owned).collect(),
        source: None,
    }
}

fn host_bind(source: &str, target: &str, readonly: bool, recursive: bool) -> Mount {
    Mount::Bind {
        source: PathBuf::from(source),
        target: target.to_owned(),
        readonly,
        recursive,
    }
}

/// /proc, /sys and the cgroup tree.
fn kernel_fs(def: &Definition, host: &Host, private_net: bool) -> Result<Vec<Mount>, Diagnostic> {
    Ok(vec![
        fs("proc", "/proc", "nosuid,nodev,noexec"),
        // sysfs may only be mounted by the owner of the network namespace.
        if private_net {
            fs("sysfs", "/sys", "ro,nosuid,nodev,noexec")
        } else {
            host_bind("/sys", "/sys", true, true)
        },
        cgroup_tree(def, host)?,
    ])
}

/// The machine's /sys/fs/cgroup, laid out as systemd-nspawn lays it out so that a booted
/// systemd finds what it expects: the host's hierarchies directly under /sys/fs/cgroup,
/// with their options. Only the trees a booted init manages are writable, and only then.
fn cgroup_tree(def: &Definition, host: &Host) -> Result<Mount, Diagnostic> {
    host_cgroup_tree(host, def.exec.boot).ok_or_else(|| {
        def.file
            .error(format!(
                "the host's cgroups are {}, and no cgroup hierarchy is mounted under \
                 /sys/fs/cgroup to show the machine on its /sys/fs/cgroup",
                host.cgroup.mode
            ))
            .help("mount the host's cgroup file systems (cgroup2 on /sys/fs/cgroup)")
    })
}

/// The host's hierarchies as a machine's /sys/fs/cgroup shows them; `managed`: the trees a
/// booted init manages are writable. `None`: the host has none under /sys/fs/cgroup.
pub fn host_cgroup_tree(host: &Host, managed: bool) -> Option<Mount> {
    let facts = &host.cgroup;
    let v2 = |dir: String| CgroupHierarchy {
        dir,
        fstype: CgroupFs::Cgroup2,
        options: Vec::new(),
        writable: managed,
    };
    let hierarchies: Vec<CgroupHierarchy> = if facts.mode == CgroupMode::V2 {
        vec![v2(String::new())]
    } else {
        let unified = facts.unified.iter().filter_map(|p| top_dir(p)).map(v2);
        let v1 = facts.v1.iter().filter_map(|h| {
            let systemd = h.options.iter().any(|o| o == "name=systemd");
            Some(CgroupHierarchy {
                dir: top_dir(&h.path)?,
                fstype: CgroupFs::Cgroup,
                options: h.options.clone(),
                writable: managed && systemd,
            })
        });
        unified.chain(v1).collect()
    };
    (!hierarchies.is_empty()).then_some(Mount::CgroupTree {
        mode: facts.mode,
        hierarchies,
    })
}

/// The name of a hierarchy mounted directly under /sys/fs/cgroup (others are not shown).
fn top_dir(path: &Path) -> Option<String> {
    let name = path.strip_prefix("/sys/fs/cgroup").ok()?.to_str()?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

/// A small /dev: the host's harmless nodes, the console, a devpts of its own and the
/// usual links.
fn dev() -> Vec<Mount> {
    let mut all = vec![fs("tmpfs", "/dev", "nosuid,mode=755,size=4m")];
    for node in DEV_NODES {
        let path = format!("/dev/{node}");
        all.push(host_bind(&path, &path, false, false));
    }
    all.push(Mount::Console {
        target: "/dev/console".to_owned(),
    });
    all.push(fs(
        "devpts",
        "/dev/pts",
        "nosuid,noexec,newinstance,ptmxmode=0666,mode=620,gid=5",
    ));
    all.extend(dev_links());
    all
}

/// The host's device nodes a machine's (or an OCI container's) /dev gets, bound from the
/// host: a user namespace cannot make device nodes.
pub const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The usual links of a /dev: `ptmx` into its devpts, `fd` and the standard streams.
pub fn dev_links() -> Vec<Mount> {
    [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ]
    .into_iter()
    .map(|(target, points_to)| Mount::Symlink {
        target: target.to_owned(),
        points_to: points_to.to_owned(),
    })
    .collect()
}

/// The tmpfs and mqueue file systems a machine writes to. As root, the tmpfs are made by
/// host root (see [`Mount::HostTmpfs`]), as systemd-nspawn `-U` makes them, so that
/// `machinectl copy-to` can write into /tmp, /run and /dev/shm.
fn scratch(as_root: bool) -> Vec<Mount> {
    let tmpfs = |target: &str, options: &str| {
        if as_root {
            Mount::HostTmpfs {
                target: target.to_owned(),
                options: options.split(',').map(str::to_owned).collect(),
            }
        } else {
            fs("tmpfs", target, options)
        }
    };
    vec![
        tmpfs("/dev/shm", "nosuid,nodev,mode=1777"),
        fs("mqueue", "/dev/mqueue", "nosuid,nodev,noexec"),
        tmpfs("/run", "nosuid,nodev,mode=755"),
        tmpfs("/tmp", "nosuid,nodev,mode=1777"),
    ]
}

/// What of /proc and /sys a machine must not see or change.
fn hidden() -> Vec<Mount> {
    let files = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ];
    let dirs = ["/proc/acpi", "/proc/scsi", "/sys/firmware"];
    let read_only = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
    let masks = |paths: &[&str], directory: bool| -> Vec<Mount> {
        paths
            .iter()
            .map(|p| Mount::Mask {
                target: (*p).to_owned(),
                directory,
            })
            .collect()
    };
    let mut all = masks(&files, false);
    all.extend(masks(&dirs, true));
    all.extend(read_only.iter().map(|p| Mount::ReadOnly {
        target: (*p).to_owned(),
    }));
    all
}

/// The definition's binds, `~/` sources in the user's home.
fn binds(def: &Definition, host: &Host) -> Vec<Mount> {
    def.storage
        .binds
        .iter()
        .map(|bind| {
            let bind = &bind.value;
            let source = match &bind.source {
                BindSource::Path(path) => path.clone(),
                BindSource::Home(rest) => host.home.join(rest),
            };
            Mount::Bind {
                source,
                target: bind.target.clone(),
                readonly: bind.readonly,
                recursive: true,
            }
        })
        .collect()
}
