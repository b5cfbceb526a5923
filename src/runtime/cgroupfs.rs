//! The cgroup tree a machine sees at /sys/fs/cgroup, exactly as the plan lays it out
//! (`Mount::CgroupTree`: the host's hierarchies, found when the host was probed).
//!
//! PID 1 mounts it in its own cgroup namespace, before `pivot_root`, so every hierarchy
//! shows the machine's own cgroup as its root:
//! - v2: the one `cgroup2` tree on /sys/fs/cgroup.
//! - hybrid and v1: a tmpfs on /sys/fs/cgroup, each hierarchy of the plan below it (with
//!   the host's options), then the tmpfs made read-only.
//!
//! Each hierarchy is writable or read-only as the plan says.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::host::CgroupMode;
use crate::plan::CgroupHierarchy;

#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} ({options}) on {}: {source}", target.display())]
pub struct CgroupFsError {
    fstype: &'static str,
    options: String,
    target: PathBuf,
    source: io::Error,
}

fn mount_fs(
    fstype: &'static str,
    target: &Path,
    flags: MsFlags,
    options: &str,
) -> Result<(), CgroupFsError> {
    let failed = |source: io::Error| CgroupFsError {
        fstype,
        options: options.to_owned(),
        target: target.to_owned(),
        source,
    };
    std::fs::create_dir_all(target).map_err(failed)?;
    mount(Some(fstype), target, Some(fstype), flags, Some(options)).map_err(|e| failed(e.into()))
}

/// Mounts the tree under `root`/sys/fs/cgroup (`root`: the new root, before `pivot_root`).
pub fn mount_tree(
    root: &Path,
    mode: CgroupMode,
    hierarchies: &[CgroupHierarchy],
) -> Result<(), CgroupFsError> {
    let base = root.join("sys/fs/cgroup");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = flags | MsFlags::MS_RDONLY;
    let below_tmpfs = mode != CgroupMode::V2;
    if below_tmpfs {
        mount_fs("tmpfs", &base, flags, "mode=755")?;
    }
    for h in hierarchies {
        let how = if h.writable { flags } else { ro };
        let target = if h.dir.is_empty() {
            base.clone()
        } else {
            base.join(&h.dir)
        };
        mount_fs(h.fstype.name(), &target, how, &h.options.join(","))?;
    }
    if !below_tmpfs {
        return Ok(());
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
