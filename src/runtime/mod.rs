//! Executing a plan: the supervisor, the machine's PID 1, mm's init, and entering a
//! running machine. See docs/architecture.md ("Launch") for the stages.

pub mod cgroup;
mod cgroupfs;
mod child;
mod console;
pub mod enter;
mod exec;
mod init;
pub mod launch;
pub mod pty;
mod registrar;
pub mod rootfs;
pub mod seccomp;
mod security;
pub mod state;
pub mod stdio;
pub mod step;
pub mod supervisor;
mod sys;
mod userns;

use std::io;
use std::path::{Path, PathBuf};

pub use launch::{Console, Launch, StepFailure};

use crate::exit::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("machine {name} is already running (see `mm status {name}`)")]
    AlreadyRunning { name: String },
    #[error("machine {name} is not running")]
    NotRunning { name: String },
    #[error("starting the machine failed: {}: {}", .0.step, .0.message)]
    Step(#[from] StepFailure),
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
    /// An error a detached supervisor reported, with its exit code.
    #[error("{message}")]
    Remote { message: String, code: i32 },
}

impl RuntimeError {
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
            Self::Io { .. } | Self::Remove { .. } | Self::Control { .. } => ExitCode::Io,
            Self::Step(f) => match f.exec_failed() {
                Some(true) => ExitCode::CommandNotFound,
                Some(false) => ExitCode::CannotExecute,
                None => ExitCode::System,
            },
            Self::Cgroup(_) | Self::SupervisorEnded { .. } | Self::StopRefused { .. } => {
                ExitCode::System
            }
            Self::Unresolved { .. } => ExitCode::System,
            Self::Remote { code, .. } => ExitCode::from_code(u8::try_from(*code).unwrap_or(1)),
        }
    }
}
