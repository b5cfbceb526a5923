//! The machine's user namespace, made before anything else so that the supervisor can
//! id-map the image's layers through it and the spawner can join it.
//!
//! A short-lived holder process unshares a user namespace and says so ([`FromHolder`],
//! one JSON line); the supervisor writes its maps (directly as root, through
//! newuidmap/newgidmap rootless), keeps a descriptor of the namespace and lets the holder go.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};
use serde::{Deserialize, Serialize};

use super::launch::{Step, StepFailure, WithStep};
use crate::idmap::{IdKind, IdMapEntry, MapError, write_map};
use crate::plan::{IdMapping, Ids, MapWriter};

/// From the holder to the supervisor: whether it has its own user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FromHolder {
    Unshared,
    /// `unshare(CLONE_NEWUSER)` failed with this errno.
    Refused {
        errno: i32,
    },
}

pub fn create(ids: &Ids) -> Result<OwnedFd, StepFailure> {
    let entries = |mapping: &IdMapping| match mapping {
        IdMapping::Map { entries } => Ok(entries.clone()),
        IdMapping::Allocate { .. } => Err(StepFailure::other(
            Step::MapIdsUnallocated,
            "the plan has no id block yet (it is allocated before the supervisor starts)",
        )),
    };
    let (uids, gids) = (entries(&ids.uid)?, entries(&ids.gid)?);
    if let MapWriter::Joined { path } = &ids.writer {
        return join(path, &uids, &gids);
    }
    let (ready_r, ready_w) = nix::unistd::pipe().step(|| Step::MakePipe)?;
    let (done_r, done_w) = nix::unistd::pipe().step(|| Step::MakePipe)?;
    // SAFETY: the supervisor is single-threaded; the child only unshares and waits.
    let holder = match unsafe { fork() }.step(|| Step::ForkHolder)? {
        ForkResult::Child => {
            drop((ready_r, done_w));
            hold(File::from(ready_w), File::from(done_r))
        }
        ForkResult::Parent { child } => child,
    };
    drop((ready_w, done_r));
    let result = (|| {
        unshared(File::from(ready_r))?;
        let pid = holder.as_raw() as u32;
        let tool = ids.writer == MapWriter::Newidmap;
        for (kind, entries) in [(IdKind::Uid, &uids), (IdKind::Gid, &gids)] {
            // In a zone, the supervisor is in the zone's user namespace, whose ids are these.
            let entries = match ids.writer {
                MapWriter::Zone => identity(entries),
                MapWriter::Direct | MapWriter::Newidmap | MapWriter::Joined { .. } => {
                    entries.clone()
                }
            };
            write_map(pid, kind, &entries, tool).map_err(|e| map_failed(kind, &e))?;
        }
        let path = format!("/proc/{pid}/ns/user");
        File::open(&path).map(OwnedFd::from).step(|| Step::Open {
            path: path.clone().into(),
        })
    })();
    drop(done_w);
    let _ = waitpid(holder, None);
    result
}

/// The existing user namespace at `path`, once a child that joined it has read its maps
/// and they are `uids` and `gids`: never the supervisor's own (the host's, as root).
fn join(
    path: &std::path::Path,
    uids: &[IdMapEntry],
    gids: &[IdMapEntry],
) -> Result<OwnedFd, StepFailure> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let step = || Step::JoinExisting {
        namespace: "user".to_owned(),
        path: path.to_path_buf(),
    };
    // Not a terminal to take as the controlling one, whatever the path names.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .step(step)?;
    let theirs = file.metadata().step(step)?;
    let ours = std::fs::metadata("/proc/self/ns/user").step(step)?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Err(StepFailure::other(
            step(),
            "it is mm's own user namespace: a container's is never its runtime's",
        ));
    }
    let (maps_r, maps_w) = nix::unistd::pipe().step(|| Step::MakePipe)?;
    // SAFETY: the supervisor is single-threaded; the child only joins, reads and writes.
    let reader = match unsafe { fork() }.step(|| Step::ForkHolder)? {
        ForkResult::Child => {
            drop(maps_r);
            let said = super::sys::setns(file.as_fd(), rustix::thread::LinkNameSpaceType::User)
                .map_err(|e| format!("setns: {e}"))
                .and_then(|()| {
                    let read = |name: &str| {
                        std::fs::read_to_string(format!("/proc/self/{name}"))
                            .map_err(|e| format!("/proc/self/{name}: {e}"))
                    };
                    Ok((read("uid_map")?, read("gid_map")?))
                });
            let _ = File::from(maps_w)
                .write_all(serde_json::to_string(&said).unwrap_or_default().as_bytes());
            // SAFETY: leaving a forked child without running exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(maps_w);
    let mut text = String::new();
    let read = File::from(maps_r).read_to_string(&mut text);
    let _ = waitpid(reader, None);
    read.step(step)?;
    let (uid_map, gid_map) = serde_json::from_str::<Result<(String, String), String>>(&text)
        .map_err(|e| StepFailure::other(step(), format!("its maps were not read: {e}")))?
        .map_err(|why| StepFailure::other(step(), why))?;
    for (kind, given, text) in [("uid", uids, uid_map), ("gid", gids, gid_map)] {
        let found = crate::idmap::parse_map(&text);
        if found != given {
            return Err(StepFailure::other(
                step(),
                format!(
                    "its {kind} map is {}, not the config's {}",
                    shown(&found),
                    shown(given)
                ),
            ));
        }
    }
    Ok(OwnedFd::from(file))
}

/// A map as `inside:outside:count` entries.
fn shown(entries: &[IdMapEntry]) -> String {
    let each: Vec<String> = entries
        .iter()
        .map(|e| format!("{}:{}:{}", e.inside, e.outside, e.count))
        .collect();
    if each.is_empty() {
        "empty".to_owned()
    } else {
        each.join(",")
    }
}

/// The same ids inside as in the namespace above.
fn identity(entries: &[IdMapEntry]) -> Vec<IdMapEntry> {
    entries
        .iter()
        .map(|e| IdMapEntry {
            outside: e.inside,
            ..*e
        })
        .collect()
}

/// In the holder: unshare, say how it went, wait for the supervisor to be done.
fn hold(ready: File, done: File) -> ! {
    let said = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
        Ok(()) => FromHolder::Unshared,
        Err(e) => FromHolder::Refused { errno: e as i32 },
    };
    if let Ok(mut line) = serde_json::to_vec(&said) {
        line.push(b'\n');
        let _ = (&ready).write_all(&line);
    }
    let _ = (&done).read(&mut [0u8]);
    // SAFETY: leaving a forked child without running exit handlers.
    unsafe { libc::_exit(0) }
}

/// The holder's word, as a step that failed when it has no namespace.
fn unshared(ready: File) -> Result<(), StepFailure> {
    let mut line = String::new();
    let _ = BufReader::new(ready).read_line(&mut line);
    match serde_json::from_str::<FromHolder>(&line) {
        Ok(FromHolder::Unshared) => Ok(()),
        Ok(FromHolder::Refused { errno }) => Err(StepFailure::errno(
            Step::UnshareUserNamespace,
            errno,
            "the kernel refused (user namespaces may be disabled or limited: see \
             /proc/sys/user/max_user_namespaces; a chrooted process may not make one)",
        )),
        Err(_) if line.is_empty() => Err(StepFailure::other(
            Step::UnshareUserNamespace,
            "the holder process ended without a word",
        )),
        Err(e) => Err(StepFailure::other(
            Step::UnshareUserNamespace,
            format!("the holder's answer `{}`: {e}", line.trim()),
        )),
    }
}

fn map_failed(kind: IdKind, e: &MapError) -> StepFailure {
    let step = Step::MapIds { kind };
    match e.errno() {
        // The io::Error's text already ends with the errno.
        Some(errno) => StepFailure {
            step,
            errno: Some(errno),
            message: e.to_string(),
        },
        None => StepFailure::other(step, e.to_string()),
    }
}
