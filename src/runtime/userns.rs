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
                MapWriter::Direct | MapWriter::Newidmap => entries.clone(),
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
