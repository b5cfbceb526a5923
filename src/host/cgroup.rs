//! The host's cgroup layout: v2, hybrid or v1, and where mm may create cgroups.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// One unified hierarchy at /sys/fs/cgroup.
    V2,
    /// v1 controller hierarchies, plus a controller-less v2 tree (systemd's "hybrid").
    Hybrid,
    /// v1 controller hierarchies only.
    V1,
    /// No cgroup file system is mounted.
    None,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V2 => "v2",
            Self::Hybrid => "hybrid",
            Self::V1 => "v1",
            Self::None => "none",
        })
    }
}

/// A mounted cgroup v1 hierarchy and the controllers bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Hierarchy {
    pub path: PathBuf,
    pub controllers: Vec<String>,
    /// Its super options without `rw`/`ro` (`xattr,name=systemd`, `cpu,cpuacct`): how a
    /// machine's cgroup namespace mounts it again.
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupFacts {
    pub mode: CgroupMode,
    /// v1 and hybrid: each controller hierarchy.
    pub v1: Vec<V1Hierarchy>,
    /// The v2 tree: /sys/fs/cgroup on v2, /sys/fs/cgroup/unified on hybrid.
    pub unified: Option<PathBuf>,
    /// This process's cgroup in the v2 tree, such as `/user.slice/user-1000.slice/…`.
    pub own: Option<String>,
    /// Rootless on v2: the subtree this user owns (systemd's `Delegate=`), if any.
    pub delegated: Option<PathBuf>,
    /// The controllers mm can use where it creates cgroups.
    pub controllers: Vec<String>,
}

/// One line of /proc/self/mountinfo that mounts a cgroup file system.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    path: PathBuf,
    version2: bool,
    options: Vec<String>,
}

/// The cgroup mounts in mountinfo text (proc(5)): mount point is field 5, and the file
/// system type and super options follow the ` - ` separator. Each hierarchy once: a
/// second mount of one (a second sysfs or cgroup mount, as nested environments and test
/// harnesses make) is left out, or takes the first's place when it is mounted over it or
/// is the one under /sys/fs/cgroup (mounting a hierarchy twice into a machine is EBUSY).
fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut once: Vec<CgroupMount> = Vec::new();
    for mount in all_cgroup_mounts(mountinfo) {
        let identity = |m: &CgroupMount| {
            let mut options: Vec<String> = m
                .options
                .iter()
                .filter(|o| !matches!(o.as_str(), "rw" | "ro"))
                .cloned()
                .collect();
            options.sort();
            (m.version2, if m.version2 { Vec::new() } else { options })
        };
        let standard = |m: &CgroupMount| m.path.starts_with("/sys/fs/cgroup");
        match once.iter_mut().find(|m| identity(m) == identity(&mount)) {
            Some(first) => {
                if first.path == mount.path || (standard(&mount) && !standard(first)) {
                    *first = mount;
                }
            }
            None => once.push(mount),
        }
    }
    once
}

fn all_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or_default();
            matches!(fstype, "cgroup" | "cgroup2").then(|| CgroupMount {
                path: PathBuf::from(unescape(mount_point)),
                version2: fstype == "cgroup2",
                options: options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Controllers named in v1 super options (leaving out flags and `name=` hierarchies).
fn v1_controllers(options: &[String]) -> Vec<String> {
    const FLAGS: &[&str] = &[
        "rw",
        "ro",
        "relatime",
        "noatime",
        "nosuid",
        "nodev",
        "noexec",
        "clone_children",
        "noprefix",
        "xattr",
    ];
    options
        .iter()
        .filter(|o| !FLAGS.contains(&o.as_str()) && !o.contains('='))
        .cloned()
        .collect()
}

/// The v2 path in /proc/self/cgroup (the `0::` line).
fn own_v2_cgroup(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

fn read_controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|text| text.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The highest ancestor of `own` (inside `unified`) that `uid` owns: the delegated subtree.
fn delegated_subtree(unified: &Path, own: &str, uid: u32) -> Option<PathBuf> {
    let mut best = None;
    let mut dir = unified.join(own.trim_start_matches('/'));
    while dir.starts_with(unified) && dir != unified {
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.uid() == uid => best = Some(dir.clone()),
            _ => break,
        }
        if !dir.pop() {
            break;
        }
    }
    best
}

impl CgroupFacts {
    /// Reads the layout from /proc/self/mountinfo and /proc/self/cgroup, for `uid` (as
    /// this process's user namespace shows owners) that is the host's root or not.
    pub fn probe(uid: u32, host_root: bool) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| own_v2_cgroup(&t));
        Self::from_mounts(&cgroup_mounts(&mountinfo), own, uid, host_root)
    }

    fn from_mounts(mounts: &[CgroupMount], own: Option<String>, uid: u32, host_root: bool) -> Self {
        let v1: Vec<V1Hierarchy> = mounts
            .iter()
            .filter(|m| !m.version2)
            .map(|m| V1Hierarchy {
                path: m.path.clone(),
                controllers: v1_controllers(&m.options),
                options: m
                    .options
                    .iter()
                    .filter(|o| !matches!(o.as_str(), "rw" | "ro"))
                    .cloned()
                    .collect(),
            })
            .collect();
        let unified = mounts.iter().find(|m| m.version2).map(|m| m.path.clone());
        let mode = match (&unified, v1.is_empty()) {
            (Some(_), true) => CgroupMode::V2,
            (Some(_), false) => CgroupMode::Hybrid,
            (None, false) => CgroupMode::V1,
            (None, true) => CgroupMode::None,
        };
        let delegated = match (&unified, &own) {
            (Some(tree), Some(own)) if !host_root && mode == CgroupMode::V2 => {
                delegated_subtree(tree, own, uid)
            }
            _ => None,
        };
        let controllers = match (mode, &delegated, &unified) {
            (CgroupMode::V2, Some(dir), _) => read_controllers(dir),
            (CgroupMode::V2, None, Some(tree)) if host_root => read_controllers(tree),
            (CgroupMode::V1 | CgroupMode::Hybrid, _, _) if host_root => {
                let mut all: Vec<String> = v1.iter().flat_map(|h| h.controllers.clone()).collect();
                all.sort();
                all.dedup();
                all
            }
            _ => Vec::new(),
        };
        Self {
            mode,
            v1,
            unified,
            own,
            delegated,
            controllers,
        }
    }

    /// The v1 hierarchy that carries `controller`.
    pub fn v1_hierarchy(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:16 - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_hosts_have_both_trees() {
        let facts = CgroupFacts::from_mounts(&cgroup_mounts(HYBRID), Some("/".into()), 0, true);
        assert_eq!(facts.mode, CgroupMode::Hybrid);
        assert_eq!(
            facts.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(facts.v1.len(), 3);
        assert!(
            facts.v1[0].controllers.is_empty(),
            "name=systemd has no controller"
        );
        assert_eq!(
            facts.v1_hierarchy("cpuacct").unwrap().path,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(facts.controllers, ["cpu", "cpuacct", "memory"]);
        assert_eq!(facts.v1[0].options, ["xattr", "name=systemd"]);
        assert_eq!(facts.v1[1].options, ["cpu", "cpuacct"]);
    }

    #[test]
    fn a_hierarchy_mounted_twice_is_taken_once() {
        let twice = format!(
            "{HYBRID}99 24 0:40 / /tmp/harness/cgroup/memory rw - cgroup cgroup rw,memory\n\
             98 24 0:41 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
        );
        let once = CgroupFacts::from_mounts(&cgroup_mounts(HYBRID), Some("/".into()), 0, true);
        let facts = CgroupFacts::from_mounts(&cgroup_mounts(&twice), Some("/".into()), 0, true);
        assert_eq!(facts.v1, once.v1);
        assert_eq!(facts.unified, once.unified);
    }

    #[test]
    fn unified_hosts_are_v2() {
        let text = "30 24 0:26 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        let facts = CgroupFacts::from_mounts(&cgroup_mounts(text), None, 1000, false);
        assert_eq!(facts.mode, CgroupMode::V2);
        assert_eq!(facts.delegated, None);
        assert_eq!(
            own_v2_cgroup("1:name=systemd:/\n0::/user.slice\n").as_deref(),
            Some("/user.slice")
        );
    }
}
