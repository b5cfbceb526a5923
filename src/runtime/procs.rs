//! A running machine's processes, for `mm ps` and `mm kill --all`.
//!
//! They are found through the machine's cgroup where it has one (with the cgroups a booted
//! init makes below it), else through its PID namespace (every process of the host whose
//! `/proc/PID/ns/pid` is PID 1's). A process of the cgroup counts when it is in PID 1's
//! PID namespace or one below it: `mm exec`'s relay joins the cgroup but stays in the
//! host's PID namespace, and is not the machine's. Each process is held by a pidfd opened
//! before it was looked at, so a pid that ends and is reused meanwhile is never signalled.
//!
//! Nothing of the machine is trusted: its /etc/passwd (for user names) is opened inside
//! its root (`openat2` with `RESOLVE_IN_ROOT`), must be a regular file, and is read up to
//! a bound.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::Serialize;

use super::RuntimeError;
use super::cgroup::MachineCgroup;
use super::launch::Launch;

/// The most of a machine's /etc/passwd that is read.
const PASSWD_LIMIT: u64 = 4 << 20;

/// One process of a machine, as the host and the machine see it.
#[derive(Debug, Serialize)]
pub struct Process {
    /// Its pid on the host.
    pub host_pid: i32,
    /// Its pid in the machine (1 for PID 1).
    pub pid: i32,
    /// Its parent's pid in the machine; `None` for PID 1 and for what `mm exec` started
    /// (their parents are outside the machine).
    pub ppid: Option<i32>,
    /// Its effective uid as the machine sees it; `None` for a host uid the machine's user
    /// namespace does not map.
    pub uid: Option<u32>,
    /// That uid's name in the machine's /etc/passwd.
    pub user: Option<String>,
    /// Its command line; for a process without one (a zombie), `[its name]`, as ps shows it.
    pub argv: Vec<String>,
    /// Its depth in the tree of the machine's processes (0: PID 1, and what `mm exec`
    /// started); the list is in tree order.
    pub depth: usize,
    #[serde(skip)]
    pidfd: OwnedFd,
}

/// What `/proc/PID/status` says that matters here.
struct Status {
    name: String,
    /// The host pid of the parent.
    ppid: i32,
    /// The effective uid, on the host.
    euid: u32,
    /// Its pid in each PID namespace, the host's first.
    nspid: Vec<i32>,
}

fn read_status(pid: i32) -> io::Result<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key}")))
    };
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    let ids = |key: &str| -> io::Result<Vec<i64>> {
        field(key)?.split_whitespace().map(number).collect()
    };
    let euid = ids("Uid")?.get(1).copied().unwrap_or(-1);
    Ok(Status {
        name: field("Name")?.to_owned(),
        ppid: number(field("PPid")?)? as i32,
        euid: u32::try_from(euid).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        nspid: ids("NSpid")?.into_iter().map(|p| p as i32).collect(),
    })
}

/// The command line of `pid`; `None` when it has none (a kernel thread, a zombie).
fn argv(pid: i32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv: Vec<String> = bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!argv.is_empty()).then_some(argv)
}

fn pid_namespace(pid: i32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
}

/// Every pid of the host (for a machine without a cgroup of its own).
fn host_pids() -> io::Result<Vec<i32>> {
    Ok(std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// A user namespace's uid map as the host sees it: (inside, host, count).
fn uid_map(leader: i32) -> io::Result<Vec<(u32, u32, u32)>> {
    let text = std::fs::read_to_string(format!("/proc/{leader}/uid_map"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut n = l.split_whitespace().map(|w| w.parse::<u32>().ok());
            Some((n.next()??, n.next()??, n.next()??))
        })
        .collect())
}

fn inside(map: &[(u32, u32, u32)], host: u32) -> Option<u32> {
    map.iter().find_map(|&(inside, outside, count)| {
        let offset = host.checked_sub(outside)?;
        (offset < count).then(|| inside + offset)
    })
}

/// The names of the machine's /etc/passwd by uid; empty when it has none that can be read
/// safely (a machine may have no /etc/passwd: its processes are then shown by uid).
fn machine_users(leader: i32) -> BTreeMap<u32, String> {
    let read = || -> io::Result<String> {
        let root = rustix::fs::open(
            format!("/proc/{leader}/root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let fd = rustix::fs::openat2(
            &root,
            "etc/passwd",
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mut text = String::new();
        file.take(PASSWD_LIMIT).read_to_string(&mut text)?;
        Ok(text)
    };
    read().map(|text| parse_passwd(&text)).unwrap_or_default()
}

fn parse_passwd(text: &str) -> BTreeMap<u32, String> {
    let mut users = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        if let (Some(name), Some(_), Some(Ok(uid))) =
            (fields.next(), fields.next(), fields.next().map(str::parse))
        {
            // The first entry for a uid wins, as getpwuid(3) finds it.
            users.entry(uid).or_insert_with(|| name.to_owned());
        }
    }
    users
}

/// The processes of machine `name` (PID 1 is `leader` on the host), in tree order.
pub fn list(name: &str, leader: i32, launch: &Launch) -> Result<Vec<Process>, RuntimeError> {
    // PID 1 gone: the machine is stopping, its supervisor has not recorded it yet.
    let proc = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => RuntimeError::NotRunning {
            name: name.to_owned(),
        },
        _ => RuntimeError::io(Path::new(&format!("/proc/{leader}")), e),
    };
    let namespace = pid_namespace(leader).map_err(proc)?;
    let levels = read_status(leader).map_err(proc)?.nspid.len();
    let cgroup = MachineCgroup::from_plan(&launch.plan.cgroup);
    let candidates = match &cgroup {
        Some(cgroup) => cgroup.all_pids()?,
        None => host_pids().map_err(|e| RuntimeError::io(Path::new("/proc"), e))?,
    };
    let map = uid_map(leader).map_err(proc)?;
    let users = machine_users(leader);
    let mut found = Vec::new();
    for host_pid in candidates {
        let Some(pid) = rustix::process::Pid::from_raw(host_pid) else {
            continue;
        };
        // Gone meanwhile, or (rootless) not the caller's to look at: not the machine's.
        let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        else {
            continue;
        };
        // The command line before the status: a process seen after its execve(2) was
        // seen with the credentials it exec'd with (set before it), never those of the
        // fork that became it.
        let argv = argv(host_pid);
        let Ok(status) = read_status(host_pid) else {
            continue;
        };
        let argv = argv.unwrap_or_else(|| vec![format!("[{}]", status.name)]);
        let same = pid_namespace(host_pid).is_ok_and(|ns| ns == namespace);
        let below = cgroup.is_some() && status.nspid.len() > levels;
        if !(same || below) {
            continue;
        }
        let uid = inside(&map, status.euid);
        found.push((status, host_pid, pidfd, uid, argv));
    }
    let machine_pid: BTreeMap<i32, i32> = found
        .iter()
        .map(|(s, host, ..)| (*host, s.nspid[levels - 1]))
        .collect();
    let mut processes: Vec<Process> = found
        .into_iter()
        .map(|(status, host_pid, pidfd, uid, argv)| Process {
            host_pid,
            pid: status.nspid[levels - 1],
            ppid: machine_pid.get(&status.ppid).copied(),
            uid,
            user: uid.and_then(|u| users.get(&u).cloned()),
            argv,
            depth: 0,
            pidfd,
        })
        .collect();
    processes.sort_by_key(|p| p.pid);
    Ok(tree_order(processes))
}

/// Parents before their children, each child right below its parent, siblings by pid.
fn tree_order(processes: Vec<Process>) -> Vec<Process> {
    let pids: BTreeSet<i32> = processes.iter().map(|p| p.pid).collect();
    let mut children: BTreeMap<Option<i32>, Vec<Process>> = BTreeMap::new();
    for p in processes {
        let parent = p.ppid.filter(|pp| pids.contains(pp) && *pp != p.pid);
        children.entry(parent).or_default().push(p);
    }
    let mut ordered = Vec::new();
    let mut stack: Vec<(Process, usize)> = children
        .remove(&None)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .map(|p| (p, 0))
        .collect();
    while let Some((mut p, depth)) = stack.pop() {
        p.depth = depth;
        if let Some(kids) = children.remove(&Some(p.pid)) {
            stack.extend(kids.into_iter().rev().map(|k| (k, depth + 1)));
        }
        ordered.push(p);
    }
    // A cycle of parents (impossible, but the machine's pids are not ours to trust)
    // leaves processes unreached: they come last, at depth 0.
    ordered.extend(children.into_values().flatten());
    ordered
}

/// Sends signal `number` to each of `processes` (by their pidfds), in reverse tree order:
/// children before their parents, so that a parent the signal ends (PID 1 among them:
/// the kernel then kills the rest with SIGKILL) cannot take a child with it before the
/// child got the signal. Those that ended meanwhile are passed over. The number signalled.
pub fn signal(processes: &[Process], number: i32) -> Result<usize, RuntimeError> {
    let mut sent = 0;
    for p in processes.iter().rev() {
        // SAFETY: pidfd_send_signal with a pidfd we own, a signal number, no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                p.pidfd.as_raw_fd(),
                number,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            sent += 1;
            continue;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            let path = format!("/proc/{}", p.host_pid);
            return Err(RuntimeError::io(Path::new(&path), e));
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_uids_map_into_the_machine_and_names_come_from_its_passwd() {
        let map = [(0, 100_000, 65536)];
        assert_eq!(inside(&map, 100_000), Some(0));
        assert_eq!(inside(&map, 165_535), Some(65535));
        assert_eq!(inside(&map, 165_536), None);
        assert_eq!(inside(&map, 0), None);
        let users =
            parse_passwd("root:x:0:0::/root:/bin/sh\nbad\ntoor:x:0:0:::\napp:x:1000:1::/:\n");
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
        assert_eq!(users.get(&1000).map(String::as_str), Some("app"));
        assert_eq!(users.len(), 2);
    }

    fn process(pid: i32, ppid: Option<i32>) -> Process {
        Process {
            host_pid: pid + 1000,
            pid,
            ppid,
            uid: Some(0),
            user: None,
            argv: vec![],
            depth: 0,
            pidfd: File::open("/dev/null").unwrap().into(),
        }
    }

    #[test]
    fn the_tree_puts_children_below_their_parents() {
        let list = vec![
            process(1, None),
            process(2, Some(1)),
            process(3, Some(2)),
            process(4, Some(1)),
            process(7, None),
            process(8, Some(8)),
        ];
        let ordered: Vec<(i32, usize)> =
            tree_order(list).iter().map(|p| (p.pid, p.depth)).collect();
        assert_eq!(ordered, [(1, 0), (2, 1), (3, 2), (4, 1), (7, 0), (8, 0)]);
    }
}
