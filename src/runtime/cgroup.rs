//! The machine's cgroup: made, limited, joined, killed and removed as the plan says.
//!
//! Plain file operations on the cgroup file systems: the plan already names every
//! directory and limit file for the host's layout (v2, hybrid or v1), and cgroups-rs would
//! write controllers into ancestors it does not own and ignore the errors.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::{Cgroup, LimitWrite};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot create the cgroup {}: {source}", dir.display())]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot write {value} to {}: {source}", file.display())]
    Write {
        file: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("{} did not take {wanted}: it reads {got}", file.display())]
    NotApplied {
        file: PathBuf,
        wanted: String,
        got: String,
    },
    #[error("cannot read {}: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },
    #[error("the cgroup {} still has processes ({}): is a machine of this name running under another supervisor or state root (MM_ROOT)?", dir.display(), list(pids))]
    Busy { dir: PathBuf, pids: Vec<i32> },
    #[error("cannot remove the cgroup {}: {source}", dir.display())]
    Remove { dir: PathBuf, source: io::Error },
    #[error("processes of the cgroup {} survived SIGKILL: {}", dir.display(), list(pids))]
    Unkillable { dir: PathBuf, pids: Vec<i32> },
    /// Neither a v1 `freezer` hierarchy nor a v2 tree holds the cgroup.
    #[error("the cgroup {} has no freezer (no v1 freezer hierarchy, no cgroup.freeze)", dir.display())]
    NoFreezer { dir: PathBuf },
}

impl CgroupError {
    /// The cgroup directory or file it concerns.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Create { dir, .. }
            | Self::Busy { dir, .. }
            | Self::Remove { dir, .. }
            | Self::Unkillable { dir, .. }
            | Self::NoFreezer { dir } => dir,
            Self::Write { file, .. } | Self::NotApplied { file, .. } | Self::Read { file, .. } => {
                file
            }
        }
    }

    /// The errno, when a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Create { source, .. }
            | Self::Write { source, .. }
            | Self::Read { source, .. }
            | Self::Remove { source, .. } => source.raw_os_error(),
            Self::NotApplied { .. }
            | Self::Busy { .. }
            | Self::Unkillable { .. }
            | Self::NoFreezer { .. } => None,
        }
    }
}

/// Process ids as a sentence shows them: `12, 13, 14`.
fn list(pids: &[i32]) -> String {
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    pids.join(", ")
}

/// The directories of a machine's cgroup, one per hierarchy.
#[derive(Debug)]
pub struct MachineCgroup {
    dirs: Vec<PathBuf>,
}

/// What `mm status` shows of the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
}

/// Moves the calling process into the cgroup whose `cgroup.procs` files `procs` are
/// ([`MachineCgroup::open_procs`]): `0` names the writer, in whatever PID namespace.
pub fn join(procs: &[std::fs::File]) -> io::Result<()> {
    use std::io::Write;
    for mut file in procs {
        file.write_all(b"0")?;
    }
    Ok(())
}

pub(super) fn write(file: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(file, value).map_err(|source| CgroupError::Write {
        file: file.to_owned(),
        value: value.to_owned(),
        source,
    })
}

pub(super) fn read(file: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(file)
        .map(|s| s.trim().to_owned())
        .map_err(|source| CgroupError::Read {
            file: file.to_owned(),
            source,
        })
}

fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(read(&dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Whether what a limit file reads back is what was written, allowing the kernel's
/// rounding (memory limits go down to a page).
fn applied(wanted: &str, got: &str) -> bool {
    if wanted == got {
        return true;
    }
    match (wanted.parse::<u64>(), got.parse::<u64>()) {
        (Ok(w), Ok(g)) => g <= w && w - g < 65536,
        _ => {
            // cpu.max "50000 100000" and the like: compare word by word.
            wanted.split_whitespace().eq(got.split_whitespace())
        }
    }
}

/// Writes each limit and reads it back (where the file reads back what was written), so
/// that a limit the kernel did not take is an error, not a silent difference.
fn write_limits(limits: &[LimitWrite]) -> Result<(), CgroupError> {
    for limit in limits {
        write(&limit.file, &limit.value)?;
        if !limit.reads_back() {
            continue;
        }
        let got = read(&limit.file)?;
        if !applied(&limit.value, &got) {
            return Err(CgroupError::NotApplied {
                file: limit.file.clone(),
                wanted: limit.value.clone(),
                got,
            });
        }
    }
    Ok(())
}

/// cgroup v1's cpuset needs cpus and mems before a task may join: copy the parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = dir.join(file);
        if !mine.exists() || !read(&mine)?.is_empty() {
            continue;
        }
        if read(&parent.join(file))?.is_empty() {
            inherit_cpuset(parent)?;
        }
        let value = read(&parent.join(file))?;
        write(&mine, &value)?;
    }
    Ok(())
}

/// cgroup v2: the controllers the limits need, enabled in every ancestor's
/// `cgroup.subtree_control` below `root` (the hierarchy's root, or the delegated subtree).
fn enable_controllers(dir: &Path, limits: &[LimitWrite], root: &Path) -> Result<(), CgroupError> {
    let mut wanted: Vec<&str> = limits
        .iter()
        .filter(|l| l.file.starts_with(dir))
        .filter_map(|l| l.file.file_name()?.to_str()?.split('.').next())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut chain: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(root))
        .collect();
    chain.reverse();
    for parent in chain {
        let control = parent.join("cgroup.subtree_control");
        let enabled = read(&control)?;
        for controller in &wanted {
            if !enabled.split_whitespace().any(|c| c == *controller) {
                write(&control, &format!("+{controller}"))?;
            }
        }
    }
    Ok(())
}

impl MachineCgroup {
    /// Makes the cgroup and writes its limits; `None` when the plan leaves the machine in
    /// its caller's cgroup. On any error, what was made is removed.
    pub fn create(plan: &Cgroup) -> Result<Option<MachineCgroup>, CgroupError> {
        let Cgroup::Create { dirs, limits, .. } = plan else {
            return Ok(None);
        };
        // Processes in it, or in a cgroup below it, are another supervisor's: leave them be.
        let pids = MachineCgroup { dirs: dirs.clone() }.all_pids()?;
        if !pids.is_empty() {
            let dir = dirs
                .iter()
                .find(|d| d.exists())
                .cloned()
                .unwrap_or_default();
            return Err(CgroupError::Busy { dir, pids });
        }
        let mut made = MachineCgroup { dirs: Vec::new() };
        let result = (|| {
            for dir in dirs {
                if !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
                        dir: dir.clone(),
                        source,
                    })?;
                }
                made.dirs.push(dir.clone());
                inherit_cpuset(dir)?;
            }
            for dir in dirs.iter().filter(|d| is_v2(d)) {
                let root = v2_root(dir);
                enable_controllers(dir, limits, &root)?;
            }
            write_limits(limits)
        })();
        match result {
            Ok(()) => Ok(Some(made)),
            Err(e) => {
                let _ = made.remove();
                Err(e)
            }
        }
    }

    /// The cgroup a plan names, to join or clean up (nothing is created).
    pub fn from_plan(plan: &Cgroup) -> Option<MachineCgroup> {
        match plan {
            Cgroup::Create { dirs, .. } => Some(MachineCgroup { dirs: dirs.clone() }),
            Cgroup::Inherit { .. } => None,
        }
    }

    /// Moves process `pid` into the cgroup, in every hierarchy.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The cgroup's `cgroup.procs` in every hierarchy, opened for writing, for a process
    /// that joins it later with [`join`] (after it has left the host's namespaces: the
    /// kernel checks a migration against the credentials and cgroup namespace of whoever
    /// opened the file).
    pub fn open_procs(&self) -> Result<Vec<std::fs::File>, CgroupError> {
        self.dirs
            .iter()
            .map(|dir| {
                let file = dir.join("cgroup.procs");
                std::fs::File::options()
                    .write(true)
                    .open(&file)
                    .map_err(|source| CgroupError::Write {
                        file,
                        value: "a process".to_owned(),
                        source,
                    })
            })
            .collect()
    }

    /// Every process in the machine's cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for dir in self.dirs.iter().filter(|d| d.exists()) {
            all.extend(procs(dir)?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Every process in the machine's cgroup and in the cgroups below it (a booted init's).
    pub fn all_pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut dirs = Vec::new();
        for dir in self.dirs.iter().filter(|d| d.exists()) {
            below(dir, &mut dirs);
        }
        let mut all = Vec::new();
        for dir in &dirs {
            match procs(dir) {
                Ok(pids) => all.extend(pids),
                // A cgroup the machine's init removed meanwhile.
                Err(CgroupError::Read { source, .. })
                    if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Whether the cgroup (and those below it) holds no process, or none after waiting up to
    /// `within` for those that are ending. One that cannot be read counts as held.
    pub fn empties_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.all_pids() {
                Ok(pids) if pids.is_empty() => return true,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => return false,
            }
        }
    }

    /// SIGKILLs every process in the cgroup and waits (up to 5 s) until none is left.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.dirs.iter().filter(|d| d.join("cgroup.kill").exists()) {
            write(&dir.join("cgroup.kill"), "1")?;
        }
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Unkillable {
                    dir: self.dirs.first().cloned().unwrap_or_default(),
                    pids,
                });
            }
            for pid in pids {
                // SAFETY: kill with a pid and a signal number.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the cgroup's directories, with the cgroups a booted init made below them
    /// (its parents, such as machine.slice, stay).
    pub fn remove(self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut first_error = None;
        let mut all = Vec::new();
        for dir in &self.dirs {
            below(dir, &mut all);
        }
        for dir in all.iter().rev() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // Processes that just died may still be leaving.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(source) => {
                        first_error.get_or_insert(CgroupError::Remove {
                            dir: dir.clone(),
                            source,
                        });
                        break;
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Hands the trees a booted init manages (the `name=systemd` hierarchy and any v2
    /// tree) to the machine's root, `owner` on the host, as systemd-nspawn does: the
    /// directories and their files, so that it can make cgroups below its own.
    pub fn delegate(&self, owner: u32) -> Result<(), CgroupError> {
        let managed = |dir: &Path| is_v2(dir) || dir.starts_with("/sys/fs/cgroup/systemd");
        for dir in self.dirs.iter().filter(|d| managed(d)) {
            let chown = |path: &Path| {
                std::os::unix::fs::chown(path, Some(owner), Some(owner)).map_err(|source| {
                    CgroupError::Write {
                        file: path.to_owned(),
                        value: format!("owner {owner}"),
                        source,
                    }
                })
            };
            chown(dir)?;
            let entries = std::fs::read_dir(dir).map_err(|source| CgroupError::Read {
                file: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                chown(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes `limits` (files of this cgroup's directories) and reads each back, as
    /// [`MachineCgroup::create`] does: `mm oci update`.
    pub fn apply(&self, limits: &[LimitWrite]) -> Result<(), CgroupError> {
        for dir in self.dirs.iter().filter(|d| is_v2(d)) {
            enable_controllers(dir, limits, &v2_root(dir))?;
        }
        write_limits(limits)
    }

    /// The cgroup's directory in each hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Memory in use and the number of processes, where the host's files say.
    pub fn usage(&self) -> Usage {
        let number = |file: PathBuf| read(&file).ok().and_then(|s| s.parse().ok());
        let mut usage = Usage::default();
        for dir in &self.dirs {
            usage.memory_bytes = usage
                .memory_bytes
                .or_else(|| number(dir.join("memory.current")))
                .or_else(|| number(dir.join("memory.usage_in_bytes")));
            usage.pids = usage.pids.or_else(|| number(dir.join("pids.current")));
        }
        usage
    }
}

/// `dir` and every cgroup below it, parents before children.
fn below(dir: &Path, all: &mut Vec<PathBuf>) {
    all.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                below(&entry.path(), all);
            }
        }
    }
}

/// Whether `dir` is in a cgroup2 file system (v2, or hybrid's unified tree).
fn is_v2(dir: &Path) -> bool {
    v2_root(dir) != Path::new("/")
}

/// The root below which mm may enable controllers in a v2 tree: the mount point of the
/// cgroup2 file system that holds `dir` (found from the ancestors' `cgroup.controllers`).
fn v2_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .skip(1)
        .filter(|a| a.join("cgroup.controllers").exists())
        .last()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_lists_read_as_text() {
        let busy = CgroupError::Busy {
            dir: PathBuf::from("/sys/fs/cgroup/machine.slice/mm-web.scope"),
            pids: vec![12, 13],
        };
        assert_eq!(
            busy.to_string(),
            "the cgroup /sys/fs/cgroup/machine.slice/mm-web.scope still has processes (12, 13): \
             is a machine of this name running under another supervisor or state root (MM_ROOT)?"
        );
        let left = CgroupError::Unkillable {
            dir: PathBuf::from("/c"),
            pids: vec![7],
        };
        assert_eq!(
            left.to_string(),
            "processes of the cgroup /c survived SIGKILL: 7"
        );
    }

    #[test]
    fn read_back_values_allow_page_rounding_only() {
        assert!(applied("67108864", "67108864"));
        assert!(applied("67108865", "67108864"));
        assert!(!applied("67108864", "9223372036854771712"));
        assert!(applied("50000 100000", "50000 100000"));
        assert!(applied("max", "max"));
        assert!(!applied("64", "max"));
    }

    fn root_with_memory() -> bool {
        let ok = nix::unistd::geteuid().is_root()
            && Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
        if !ok {
            eprintln!(
                "SKIP cgroup tests: they need root and a v1 memory hierarchy (this host has neither)"
            );
        }
        ok
    }

    #[test]
    fn a_cgroup_is_made_limited_joined_killed_and_removed() {
        if !root_with_memory() {
            return;
        }
        let name = format!("machine.slice/mm-unit-test-{}.scope", std::process::id());
        let dirs: Vec<PathBuf> = ["memory", "pids", "cpuset"]
            .iter()
            .map(|h| Path::new("/sys/fs/cgroup").join(h).join(&name))
            .collect();
        let plan = Cgroup::Create {
            mode: crate::host::CgroupMode::Hybrid,
            path: name.clone(),
            dirs: dirs.clone(),
            limits: vec![
                LimitWrite {
                    file: dirs[0].join("memory.limit_in_bytes"),
                    value: "33554432".to_owned(),
                },
                LimitWrite {
                    file: dirs[1].join("pids.max"),
                    value: "8".to_owned(),
                },
            ],
        };
        let cgroup = MachineCgroup::create(&plan).unwrap().unwrap();
        assert_eq!(read(&dirs[1].join("pids.max")).unwrap(), "8");
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        cgroup.add(child.id() as i32).unwrap();
        assert!(cgroup.pids().unwrap().contains(&(child.id() as i32)));
        assert!(matches!(
            MachineCgroup::create(&plan),
            Err(CgroupError::Busy { .. })
        ));
        cgroup.kill_all().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        cgroup.remove().unwrap();
        assert!(dirs.iter().all(|d| !d.exists()));
    }
}
