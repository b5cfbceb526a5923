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

#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} ({options}) on {}: {source}", target.display())]
pub struct CgroupFsError {
    fstype: &'static str,
    options: String,
    target: PathBuf,
    source: io::Error,
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

fn mount_fs(
    fstype: &'static str,
    target: &Path,
    flags: MsFlags,
    options: &str,
) -> Result<(), CgroupFsError> {
    std::fs::create_dir_all(target).map_err(|source| CgroupFsError {
        fstype,
        options: options.to_owned(),
        target: target.to_owned(),
        source,
    })?;
    mount(Some(fstype), target, Some(fstype), flags, Some(options)).map_err(|e| CgroupFsError {
        fstype,
        options: options.to_owned(),
        target: target.to_owned(),
        source: e.into(),
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
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_fs("tmpfs", &base, flags, "mode=755")?;
    for h in hierarchies(&mountinfo) {
        if h.dir.is_empty() || h.dir.contains('/') {
            continue;
        }
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
    .map_err(|e| CgroupFsError {
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
