//! What the supervisor is given and what travels between the launch stages.
//!
//! The CLI hands a resolved plan (its command, user, environment and working directory
//! compiled from the definition and the stored image) to the supervisor as a [`Launch`]. The machine's
//! child stages send [`Report`]s back over a pipe, one JSON line each.

use std::io::{Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::{Command, Exec, Pid1, Plan};

pub use super::step::{Step, StepFailure, WithStep};

/// A resolved plan and how the supervisor is attached: everything a supervisor needs,
/// and nothing it must decide.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub plan: Plan,
    /// PID 1's program and arguments (the init with `boot`, else the command mm's init
    /// runs): the plan's resolved command, as are `env`, `user` and `workdir`.
    pub argv: Vec<String>,
    /// `KEY=VALUE`, the image's first, then the definition's.
    pub env: Vec<String>,
    /// `root`, a name from the image's `/etc/passwd`, or `UID[:GID]`.
    pub user: String,
    pub workdir: String,
    /// Whether PID 1 is the image's init (it gets the stop signal itself).
    pub boot: bool,
    pub console: Console,
    /// The systemd unit the supervisor runs as (`mm run --keep-unit` in `mm@NAME.service`).
    #[serde(default)]
    pub unit: Option<String>,
    /// The compiled program of the plan's seccomp profile (`Seccomp::Profile`), made at
    /// `mm oci create` before the supervisor starts (runtime/profile.rs): PID 1 loads it
    /// from memory, and so does each `mm exec` into the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<super::seccomp::Program>,
    /// The caller's console socket (`mm oci create --console-socket`), for a plan whose
    /// PID 1 has a terminal (`process.terminal`): it receives the terminal's master side.
    #[serde(default)]
    pub console_socket: Option<std::path::PathBuf>,
}

/// Where the machine's standard input and output go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Console {
    /// The supervisor's own standard streams, as they are (`mm run` from a pipe or a file).
    Pipe,
    /// A new pseudo-terminal, bound on `/dev/console`: relayed to the user's terminal
    /// (`mm run` from a terminal) or to the machine's log (`mm start`).
    Pty,
}

impl Launch {
    /// The launch of a plan whose command is resolved; it copies what the plan says.
    pub fn new(plan: Plan, console: Console) -> Result<Self, super::RuntimeError> {
        let Command::Resolved(exec) = &plan.process.command else {
            return Err(super::RuntimeError::Unresolved {
                definition: plan.machine.definition.clone(),
                image: plan.image.source.to_string(),
            });
        };
        let Exec {
            argv,
            env,
            user,
            workdir,
        } = exec.clone();
        Ok(Self {
            boot: plan.process.pid1 == Pid1::Boot,
            plan,
            argv,
            env,
            user,
            workdir,
            console,
            unit: None,
            seccomp: None,
            console_socket: None,
        })
    }
}

/// From the machine's child stages to the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Report {
    /// The machine's PID 1 exists, with this pid on the host.
    Leader {
        pid: i32,
    },
    /// PID 1 has made the container's mounts and waits before pivot_root for the plan's
    /// `createRuntime` hooks (`ContainerHooks::create_runtime`), which the supervisor runs.
    RootReady,
    /// PID 1 is set up and waits for `mm oci start` (`waits_for_start`): the launch is
    /// done, and later reports are not read.
    Waiting,
    Failed(StepFailure),
}

impl Report {
    /// Sends the report as one JSON line; a failure to send means the supervisor is gone,
    /// and nothing can be done about it.
    pub fn send(&self, to: &mut std::fs::File) {
        use std::io::Write;
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            let _ = to.write_all(&line);
        }
    }
}

/// From a detached supervisor to the `mm start` that spawned it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Started {
    Running {
        leader: i32,
        supervisor: u32,
        /// Said once to the user: why the machine is not registered with machined.
        notice: Option<String>,
    },
    AlreadyRunning,
    /// A launch step failed: the step and its errno, as the stage saw them.
    StepFailed(StepFailure),
    /// Another of the supervisor's errors: what kind, the file it concerns, its errno.
    Failed(SupervisorFailure),
}

/// What kind of error a supervisor met outside the launch steps; the exit code follows
/// from it on the `mm start` side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// One of the machine's files (its state, lock, log or control socket).
    File,
    /// Its cgroup: made, limited, read back, emptied or removed.
    Cgroup,
    /// A plan that does not say yet what runs.
    Unresolved,
    /// Anything else the supervisor could not do.
    System,
}

/// A supervisor's error, as it crosses to `mm start`: its kind, the path and errno it
/// concerns when it has them, and the message the supervisor would print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct SupervisorFailure {
    pub kind: FailureKind,
    pub path: Option<std::path::PathBuf>,
    pub errno: Option<i32>,
    pub message: String,
}

/// How the supervisor is told which descriptor holds its launch: `--launch-fd=N`.
pub const LAUNCH_FD_ARG: &str = "--launch-fd=";

pub const LOCK_FD_ARG: &str = "--lock-fd=";

/// `mm __supervise [--detach] --launch-fd=N` with the launch, as JSON, on descriptor N.
/// The file must live until the command has been spawned, so it is returned with it.
pub fn supervisor_command(
    launch: &Launch,
    detach: bool,
    lock: Option<&std::fs::File>,
) -> Result<(std::process::Command, std::fs::File), super::RuntimeError> {
    let io = |e| super::RuntimeError::io(Path::new("the launch file"), e);
    let mut file = tempfile::tempfile().map_err(io)?;
    let json = serde_json::to_vec(launch).map_err(|e| io(e.into()))?;
    file.write_all(&json).map_err(io)?;
    file.rewind().map_err(io)?;
    let exe = std::env::current_exe()
        .map_err(|e| super::RuntimeError::io(Path::new("/proc/self/exe"), e))?;
    let mut command = std::process::Command::new(exe);
    command.arg("__supervise");
    if detach {
        command.arg("--detach");
    }
    // The launch stays on its own descriptor, named on the command line: `mm run` executes
    // the supervisor in place, from a process whose other threads (the bus probe's) own
    // descriptors, so nothing may be moved over one of them (a dup2 onto 3 once did).
    let fd = file.as_raw_fd();
    command.arg(format!("{LAUNCH_FD_ARG}{fd}"));
    // The machine's lock, when the caller took it before preparing anything, goes to the
    // supervisor as it is: no other mm finds the machine unlocked in between. Without
    // one, the supervisor takes the lock itself.
    let lock_fd = lock.map(|l| l.as_raw_fd());
    if let Some(lock_fd) = lock_fd {
        command.arg(format!("{}{lock_fd}", LOCK_FD_ARG));
    }
    // SAFETY: fcntl is async-signal-safe, and only clears close-on-exec on our own files.
    unsafe {
        command.pre_exec(move || {
            for keep in std::iter::once(fd).chain(lock_fd) {
                if libc::fcntl(keep, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok((command, file))
}
