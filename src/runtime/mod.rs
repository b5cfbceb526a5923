//! Executing a plan: the supervisor, the machine's PID 1, mm's init, and entering a
//! running machine. See docs/architecture.md ("Launch") for the stages.

mod account;
pub mod bind;
pub mod caller;
pub mod cgroup;
mod cgroupfs;
mod child;
mod console;
pub mod enter;
mod exec;
mod freezer;
pub mod hooks;
mod init;
pub mod launch;
mod network;
pub mod procs;
pub mod profile;
pub mod pty;
mod registrar;
pub mod rootfs;
pub mod seccomp;
mod security;
pub mod socket;
pub mod state;
pub mod stdio;
pub mod step;
pub mod supervisor;
mod sys;
pub mod terminal;
mod userns;
pub mod zone;

use std::io;
use std::path::{Path, PathBuf};

pub use launch::{Console, Launch, StepFailure};

use crate::exit::ExitCode;

/// `mm __zone-release` (see [`zone`]): a machine's network released inside its rootless zone.
pub fn zone_release_main() -> ! {
    zone::release_main(network::release)
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("machine {name} is already running (see `mm status {name}`)")]
    AlreadyRunning { name: String },
    #[error("machine {name} is not running")]
    NotRunning { name: String },
    #[error("starting the machine failed: {}: {}", .0.step, .0.message)]
    Step(#[from] StepFailure),
    /// `mm exec`/`mm shell`: a step of entering a running machine failed (the machine
    /// itself still runs: one that stopped meanwhile is `NotRunning`).
    #[error("entering machine {name} failed: {}: {}", .failure.step, .failure.message)]
    Enter { name: String, failure: StepFailure },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The supervisor's control socket, by which `mm stop` reaches it.
    #[error("cannot make the supervisor's control socket {}: {source}", path.display())]
    Control { path: PathBuf, source: io::Error },
    /// `mm rm`: a machine's file or directory that would not go (a directory still holds
    /// what mm did not put there).
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error("the supervisor of {name} ended without starting it ({status})")]
    SupervisorEnded { name: String, status: String },
    /// `mm stop`: the machine stopped, but neither its supervisor nor `mm stop` could
    /// record that (its state's file system is full, say).
    #[error("{name} stopped, but that could not be recorded in {}: {source}", path.display())]
    StopNotRecorded {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    /// `mm stop`: the supervisor said no, or answered nothing while it still runs.
    #[error("the supervisor of {name} did not take the stop request: {why}")]
    StopRefused { name: String, why: String },
    /// A plan that does not say yet what runs (its image was not in the store when it
    /// was compiled): `mm run` and `mm start` import the image and compile again first,
    /// so only a plan made some other way is refused here.
    #[error(
        "{}: the plan does not say what runs yet: its image {image} is not in the store \
         (mm run and mm start import it, then compile again)",
        definition.display()
    )]
    Unresolved { definition: PathBuf, image: String },
    /// An error a detached supervisor reported (not a launch step's: those are `Step`).
    #[error(transparent)]
    Supervisor(#[from] launch::SupervisorFailure),
}

impl RuntimeError {
    /// This error as a detached supervisor tells `mm start` of it.
    pub fn to_started(&self) -> launch::Started {
        use launch::{FailureKind, Started, SupervisorFailure};
        let (kind, path, errno) = match self {
            Self::AlreadyRunning { .. } => return Started::AlreadyRunning,
            Self::Step(failure) | Self::Enter { failure, .. } => {
                return Started::StepFailed(failure.clone());
            }
            Self::Io { path, source }
            | Self::Control { path, source }
            | Self::Remove { path, source }
            | Self::StopNotRecorded { path, source, .. } => {
                (FailureKind::File, Some(path.clone()), source.raw_os_error())
            }
            Self::Cgroup(e) => (FailureKind::Cgroup, Some(e.path().to_owned()), e.errno()),
            Self::Unresolved { definition, .. } => {
                (FailureKind::Unresolved, Some(definition.clone()), None)
            }
            Self::Supervisor(failure) => return Started::Failed(failure.clone()),
            Self::NotRunning { .. } | Self::SupervisorEnded { .. } | Self::StopRefused { .. } => {
                (FailureKind::System, None, None)
            }
        };
        Started::Failed(SupervisorFailure {
            kind,
            path,
            errno,
            message: self.to_string(),
        })
    }

    pub fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::AlreadyRunning { .. } => ExitCode::Busy,
            Self::NotRunning { .. } => ExitCode::NotFound,
            Self::Io { .. }
            | Self::Remove { .. }
            | Self::Control { .. }
            | Self::StopNotRecorded { .. } => ExitCode::Io,
            Self::Step(f) | Self::Enter { failure: f, .. } => match f.exec_failed() {
                Some(true) => ExitCode::CommandNotFound,
                Some(false) => ExitCode::CannotExecute,
                None => ExitCode::System,
            },
            Self::Cgroup(_) | Self::SupervisorEnded { .. } | Self::StopRefused { .. } => {
                ExitCode::System
            }
            Self::Unresolved { .. } => ExitCode::System,
            Self::Supervisor(failure) => match failure.kind {
                launch::FailureKind::File => ExitCode::Io,
                launch::FailureKind::Cgroup
                | launch::FailureKind::Unresolved
                | launch::FailureKind::System => ExitCode::System,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detached supervisor's error reaches `mm start` with its kind, path and errno, and
    /// gives the exit code the supervisor's own error would have.
    #[test]
    fn a_supervisor_error_crosses_to_mm_start_typed() {
        let local = RuntimeError::io(
            Path::new("/run/mm/web/console.log"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        let line = serde_json::to_string(&local.to_started()).unwrap();
        let launch::Started::Failed(failure) = serde_json::from_str(&line).unwrap() else {
            panic!("{line}");
        };
        assert_eq!(failure.kind, launch::FailureKind::File);
        assert_eq!(failure.errno, Some(libc::EACCES));
        assert_eq!(
            failure.path.as_deref(),
            Some(Path::new("/run/mm/web/console.log"))
        );
        let remote = RuntimeError::Supervisor(failure);
        assert_eq!(remote.exit_code(), local.exit_code());
        assert_eq!(remote.to_string(), local.to_string());
    }
}
