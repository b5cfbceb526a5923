//! The cgroup tree a machine sees at /sys/fs/cgroup, laid out as systemd-nspawn lays it
//! out, so that a booted systemd finds what it expects.
//!
//! PID 1 mounts it in its own cgroup namespace, before `pivot_root`, so every hierarchy
//! shows the machine's own cgroup as its root:
//! - v2: `cgroup2` on /sys/fs/cgroup.
//! - hybrid: a tmpfs on /sys/fs/cgroup, one `cgroup` mount per v1 hierarchy of the host
//!   (with the host's options), `name=systemd` on /sys/fs/cgroup/systemd and `cgroup2` on
//!   /sys/fs/cgroup/unified; then the tmpfs is made read-only.
//! - v1: as hybrid, without the unified tree.
//!
//! Only the trees a booted init manages (`name=systemd`, the unified one) are writable,
//! and only when the plan says so; the controllers' hierarchies are always read-only.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::host::CgroupMode;

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum CgroupFsError {
    #[error("mount {fstype} ({options}) on {}: {source}", target.display())]
    Mount {
        fstype: &'static str,
        options: String,
        target: PathBuf,
        source: io::Error,
    },
    #[error("cannot read {MOUNTINFO} to find the host's cgroup hierarchies: {0}")]
    Mountinfo(io::Error),
    #[error(
        "the host's cgroups are {0}, but {MOUNTINFO} shows no cgroup hierarchy under /sys/fs/cgroup"
    )]
    NoHierarchy(CgroupMode),
}

/// A cgroup hierarchy mounted on the host: where, and its superblock options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    dir: String,
    options: String,
    v2: bool,
}

/// The host's cgroup mounts under /sys/fs/cgroup, from mountinfo's text.
fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let mut right = right.split_whitespace();
            let fstype = right.next()?;
            let options = right.nth(1)?;
            let dir = point
                .strip_prefix("/sys/fs/cgroup")?
                .trim_start_matches('/');
            let keep: Vec<&str> = options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro"))
                .collect();
            match fstype {
                "cgroup" => Some(Hierarchy {
                    dir: dir.to_owned(),
                    options: keep.join(","),
                    v2: false,
                }),
                "cgroup2" => Some(Hierarchy {
                    dir: dir.to_owned(),
                    options: String::new(),
                    v2: true,
                }),
                _ => None,
            }
        })
        .collect()
}

/// The hierarchies directly under /sys/fs/cgroup on a v1 or hybrid host, from mountinfo as
/// read; an unreadable mountinfo, or one without them, is an error, not an empty tree.
fn host_hierarchies(
    mountinfo: io::Result<String>,
    mode: CgroupMode,
) -> Result<Vec<Hierarchy>, CgroupFsError> {
    let found: Vec<Hierarchy> = hierarchies(&mountinfo.map_err(CgroupFsError::Mountinfo)?)
        .into_iter()
        .filter(|h| !h.dir.is_empty() && !h.dir.contains('/'))
        .collect();
    if found.is_empty() {
        return Err(CgroupFsError::NoHierarchy(mode));
    }
    Ok(found)
}

fn mount_fs(
    fstype: &'static str,
    target: &Path,
    flags: MsFlags,
    options: &str,
) -> Result<(), CgroupFsError> {
    std::fs::create_dir_all(target).map_err(|source| CgroupFsError::Mount {
        fstype,
        options: options.to_owned(),
        target: target.to_owned(),
        source,
    })?;
    mount(Some(fstype), target, Some(fstype), flags, Some(options)).map_err(|e| {
        CgroupFsError::Mount {
            fstype,
            options: options.to_owned(),
            target: target.to_owned(),
            source: e.into(),
        }
    })
}

/// Mounts the tree under `root`/sys/fs/cgroup (`root`: the new root, before `pivot_root`).
pub fn mount_tree(root: &Path, mode: CgroupMode, writable: bool) -> Result<(), CgroupFsError> {
    let base = root.join("sys/fs/cgroup");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = flags | MsFlags::MS_RDONLY;
    let managed = if writable { flags } else { ro };
    if mode == CgroupMode::V2 {
        return mount_fs("cgroup2", &base, managed, "");
    }
    let hierarchies = host_hierarchies(std::fs::read_to_string(MOUNTINFO), mode)?;
    mount_fs("tmpfs", &base, flags, "mode=755")?;
    for h in hierarchies {
        let target = base.join(&h.dir);
        if h.v2 {
            mount_fs("cgroup2", &target, managed, "")?;
        } else if h.options.contains("name=systemd") {
            mount_fs("cgroup", &target, managed, &h.options)?;
        } else {
            mount_fs("cgroup", &target, ro, &h.options)?;
        }
    }
    mount(
        None::<&str>,
        &base,
        None::<&str>,
        ro | MsFlags::MS_REMOUNT,
        Some("mode=755"),
    )
    .map_err(|e| CgroupFsError::Mount {
        fstype: "tmpfs",
        options: "remount,ro".to_owned(),
        target: base.clone(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_or_empty_mountinfo_is_an_error() {
        let unreadable = host_hierarchies(
            Err(io::Error::from_raw_os_error(libc::EACCES)),
            CgroupMode::Hybrid,
        );
        let message = unreadable.unwrap_err().to_string();
        assert!(
            message.starts_with("cannot read /proc/self/mountinfo to find the host's cgroup"),
            "{message}"
        );
        let none = host_hierarchies(
            Ok("40 23 0:40 / /proc rw - proc proc rw\n".into()),
            CgroupMode::V1,
        );
        let message = none.unwrap_err().to_string();
        assert!(
            message.contains("shows no cgroup hierarchy under /sys/fs/cgroup"),
            "{message}"
        );
    }

    #[test]
    fn hierarchies_come_from_mountinfo_with_their_options() {
        let text = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
40 23 0:40 / /proc rw - proc proc rw";
        let found = hierarchies(text);
        assert_eq!(found.len(), 3);
        assert_eq!(
            found[0],
            Hierarchy {
                dir: "unified".into(),
                options: String::new(),
                v2: true
            }
        );
        assert_eq!(found[1].options, "xattr,name=systemd");
        assert_eq!(found[2].dir, "cpu,cpuacct");
        assert_eq!(found[2].options, "cpu,cpuacct");
    }
}
