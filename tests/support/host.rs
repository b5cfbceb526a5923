//! What the host really has, read by the tests themselves (not through mm): its cgroup
//! hierarchies and the mount tables of every mount namespace.

use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy: v1 with its controllers (and `name=` options), or v2.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub path: PathBuf,
    pub v2: bool,
    pub controllers: Vec<String>,
}

/// Every cgroup hierarchy mounted in the test's own namespace (the host's), from
/// /proc/self/mountinfo: on v2 one, on hybrid the v1 ones and `unified`, on v1 the v1 ones.
pub fn cgroup_hierarchies() -> Vec<Hierarchy> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let v2 = match after.next()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let options = after.nth(1).unwrap_or_default();
            let controllers = if v2 {
                std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            } else {
                options
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(str::to_owned)
                    .collect()
            };
            Some(Hierarchy {
                path: PathBuf::from(mount_point),
                v2,
                controllers,
            })
        })
        .collect()
}

/// The cgroup `relative` (such as `machine.slice/mm-web.scope`) in every hierarchy.
pub fn cgroup_dirs(relative: &str) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = cgroup_hierarchies()
        .iter()
        .map(|h| h.path.join(relative))
        .collect();
    assert!(!dirs.is_empty(), "this host has no cgroup file system");
    dirs
}

/// The file of `controller` for the cgroup `relative`, where this host keeps it: in the v1
/// hierarchy that carries the controller (`v1_file`), else in the v2 tree (`v2_file`).
pub fn cgroup_limit_file(
    relative: &str,
    controller: &str,
    v1_file: &str,
    v2_file: &str,
) -> PathBuf {
    let all = cgroup_hierarchies();
    let has = |h: &&Hierarchy| h.controllers.iter().any(|c| c == controller);
    if let Some(v1) = all.iter().filter(|h| !h.v2).find(has) {
        return v1.path.join(relative).join(v1_file);
    }
    let v2 = all
        .iter()
        .filter(|h| h.v2)
        .find(has)
        .unwrap_or_else(|| panic!("no cgroup hierarchy here has the {controller} controller"));
    v2.path.join(relative).join(v2_file)
}

/// The lines of /proc/PID/mountinfo (PID's mount namespace) that mention `needle`.
pub fn mounts_of(pid: i64, needle: &str) -> Vec<String> {
    let path = format!("/proc/{pid}/mountinfo");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The mounts that mention `needle` in any mount namespace on the host (each namespace is
/// read through one of its processes), as `PID: line`.
pub fn mounts_anywhere(needle: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        // A process may end while we look: what it had is gone with it.
        let Ok(namespace) = std::fs::read_link(entry.path().join("ns/mnt")) else {
            continue;
        };
        if !seen.insert(namespace) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("mountinfo")) else {
            continue;
        };
        found.extend(
            text.lines()
                .filter(|l| l.contains(needle))
                .map(|l| format!("{pid}: {l}")),
        );
    }
    found
}
