//! The machine's user namespace, made before anything else so that the supervisor can
//! id-map the image's layers through it and the spawner can join it.
//!
//! A short-lived holder process unshares a user namespace; the supervisor writes its
//! maps (directly as root, through newuidmap/newgidmap rootless), keeps a descriptor of
//! the namespace and lets the holder go.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};

use super::launch::{Step, StepFailure};
use crate::idmap::{IdKind, write_map};
use crate::plan::{IdMapping, Ids, MapWriter};

pub fn create(ids: &Ids) -> Result<OwnedFd, StepFailure> {
    let entries = |mapping: &IdMapping| match mapping {
        IdMapping::Map { entries } => Ok(entries.clone()),
        IdMapping::Allocate { .. } => Err(StepFailure::other(
            "map the machine's ids",
            "the plan has no id block yet (it is allocated before the supervisor starts)",
        )),
    };
    let (uids, gids) = (entries(&ids.uid)?, entries(&ids.gid)?);
    let (ready_r, ready_w) = nix::unistd::pipe().step(|| "make a pipe".to_owned())?;
    let (done_r, done_w) = nix::unistd::pipe().step(|| "make a pipe".to_owned())?;
    // SAFETY: the supervisor is single-threaded; the child only unshares and waits.
    let holder = match unsafe { fork() }.step(|| "fork the user namespace holder".to_owned())? {
        ForkResult::Child => {
            drop((ready_r, done_w));
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = File::from(ready_w).write_all(&[u8::from(ok)]);
            let _ = File::from(done_r).read(&mut [0u8]);
            // SAFETY: leaving a forked child without running exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((ready_w, done_r));
    let result = (|| {
        let mut ok = [0u8];
        let unshared = File::from(ready_r).read(&mut ok).is_ok_and(|n| n == 1) && ok[0] == 1;
        if !unshared {
            return Err(StepFailure::other(
                "unshare a user namespace",
                "the kernel refused (are user namespaces disabled? see /proc/sys/user/max_user_namespaces)",
            ));
        }
        let pid = holder.as_raw() as u32;
        let tool = ids.writer == MapWriter::Newidmap;
        write_map(pid, IdKind::Uid, &uids, tool)
            .map_err(|e| StepFailure::other("map the machine's uids", e))?;
        write_map(pid, IdKind::Gid, &gids, tool)
            .map_err(|e| StepFailure::other("map the machine's gids", e))?;
        let path = format!("/proc/{pid}/ns/user");
        File::open(&path)
            .map(OwnedFd::from)
            .step(|| format!("open {path}"))
    })();
    drop(done_w);
    let _ = waitpid(holder, None);
    result
}
