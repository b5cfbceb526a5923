//! What the supervisor is given and what travels between the launch stages.
//!
//! The CLI resolves what the plan left to the image (its command, user, environment and
//! working directory) into a [`Launch`] and hands it to the supervisor. The machine's
//! child stages send [`Report`]s back over a pipe, one JSON line each.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::idmap::IdKind;
use crate::image::store::ImageRecord;
use crate::plan::{Pid1, Plan};

/// A plan made concrete: everything a supervisor needs, and nothing it must decide.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub plan: Plan,
    /// PID 1's program and arguments (the init with `boot`, else the command mm's init runs).
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
    /// Fills in what the plan left to the image's config.
    pub fn new(
        plan: Plan,
        image: Option<&ImageRecord>,
        console: Console,
    ) -> Result<Self, super::RuntimeError> {
        let config = image.map(|i| &i.config.config);
        let (argv, boot) = match &plan.process.pid1 {
            Pid1::Boot { argv } => (argv.clone(), true),
            Pid1::Command { argv } => (argv.clone(), false),
            Pid1::ImageDefault => {
                let mut argv: Vec<String> = Vec::new();
                if let Some(c) = config {
                    argv.extend(c.entrypoint.iter().flatten().cloned());
                    argv.extend(c.cmd.iter().flatten().cloned());
                }
                (argv, false)
            }
        };
        if argv.is_empty() {
            return Err(super::RuntimeError::NoCommand {
                definition: plan.machine.definition.clone(),
            });
        }
        let mut env: Vec<String> = config
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|kv| {
                let key = kv.split('=').next().unwrap_or_default();
                !plan.process.env.contains_key(key)
            })
            .collect();
        env.extend(plan.process.env.iter().map(|(k, v)| format!("{k}={v}")));
        let user = plan
            .process
            .user
            .clone()
            .or_else(|| {
                config
                    .and_then(|c| c.user.clone())
                    .filter(|u| !u.is_empty())
            })
            .unwrap_or_else(|| "root".to_owned());
        let workdir = plan
            .process
            .workdir
            .clone()
            .or_else(|| {
                config
                    .and_then(|c| c.working_dir.clone())
                    .filter(|w| !w.is_empty())
            })
            .unwrap_or_else(|| "/".to_owned());
        Ok(Self {
            plan,
            argv,
            env,
            user,
            workdir,
            boot,
            console,
            unit: None,
        })
    }
}

/// A launch step, named by what it does, with the paths and arguments its message needs.
///
/// The supervisor's own steps, the holder's and the registrar's are variants of their own;
/// the machine's stages (rootfs, init, enter) still name theirs by their text
/// ([`Step::Stage`]), which nothing matches on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum Step {
    /// `execve` of PID 1 or of a command (`argv` empty: there was none to run).
    Exec {
        argv: Vec<String>,
    },
    MakePipe,
    /// The plan still has `Allocate` where the supervisor needs the machine's id block.
    MapIdsUnallocated,
    ForkHolder,
    /// The holder's `unshare(CLONE_NEWUSER)`.
    UnshareUserNamespace,
    /// Writing the holder's uid or gid map.
    MapIds {
        kind: IdKind,
    },
    OpenUserNamespace {
        path: PathBuf,
    },
    PrivateMountNamespace,
    FindUpper {
        path: PathBuf,
    },
    OpenConsole,
    NameConsole,
    ChownConsole {
        path: PathBuf,
    },
    ForkSpawner,
    JoinCgroup,
    StartSpawner,
    ReadReport,
    StartPid1,
    /// The registrar's steps.
    ForkRegistrar,
    ConnectBus,
    ReadLeader,
    Register {
        machine: String,
    },
    /// A step of the machine's stages, by its text: `mount overlay on /run/mm/web/root`.
    Stage {
        what: String,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exec { argv } if argv.is_empty() => f.write_str("exec"),
            Self::Exec { argv } => write!(f, "exec {}", argv.join(" ")),
            Self::MakePipe => f.write_str("make a pipe"),
            Self::MapIdsUnallocated => f.write_str("map the machine's ids"),
            Self::ForkHolder => f.write_str("fork the user namespace holder"),
            Self::UnshareUserNamespace => f.write_str("unshare a user namespace"),
            Self::MapIds { kind } => write!(f, "map the machine's {}s", kind.name()),
            Self::OpenUserNamespace { path } => write!(f, "open {}", path.display()),
            Self::PrivateMountNamespace => {
                f.write_str("give the supervisor a mount namespace of its own")
            }
            Self::FindUpper { path } => write!(f, "find the writable layer {}", path.display()),
            Self::OpenConsole => f.write_str("open the console's pseudo-terminal"),
            Self::NameConsole => f.write_str("name the console"),
            Self::ChownConsole { path } => write!(
                f,
                "hand the console {} to the machine's root",
                path.display()
            ),
            Self::ForkSpawner => f.write_str("fork the spawner"),
            Self::JoinCgroup => f.write_str("put the machine in its cgroup"),
            Self::StartSpawner => f.write_str("start the spawner"),
            Self::ReadReport => f.write_str("read the machine's report"),
            Self::StartPid1 => f.write_str("start PID 1"),
            Self::ForkRegistrar => f.write_str("fork the registering process"),
            Self::ConnectBus => f.write_str("connect to the system bus"),
            Self::ReadLeader => f.write_str("read PID 1's pid from the supervisor"),
            Self::Register { machine } => write!(f, "register {machine} with systemd-machined"),
            Self::Stage { what } => f.write_str(what),
        }
    }
}

impl From<String> for Step {
    fn from(what: String) -> Self {
        Self::Stage { what }
    }
}

impl From<&str> for Step {
    fn from(what: &str) -> Self {
        Self::Stage {
            what: what.to_owned(),
        }
    }
}

/// A launch step that failed, as the stage that failed saw it: what, the errno if the
/// system gave one, and the message (an `io::Error`'s ends with `(os error N)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{step}: {message}")]
pub struct StepFailure {
    pub step: Step,
    pub errno: Option<i32>,
    pub message: String,
}

impl StepFailure {
    pub fn io(step: impl Into<Step>, e: &std::io::Error) -> Self {
        Self {
            step: step.into(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    /// A failure the system gave an errno for, described by `detail`; the message ends
    /// with the errno as an `io::Error` shows it.
    pub fn errno(step: impl Into<Step>, errno: i32, detail: impl std::fmt::Display) -> Self {
        let os = std::io::Error::from_raw_os_error(errno);
        Self {
            step: step.into(),
            errno: Some(errno),
            message: format!("{detail}: {os}"),
        }
    }

    pub fn other(step: impl Into<Step>, message: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            errno: None,
            message: message.into(),
        }
    }

    /// Whether the failure is an `execve`'s, and then whether the program was missing.
    pub fn exec_failed(&self) -> Option<bool> {
        matches!(self.step, Step::Exec { .. }).then_some(self.errno == Some(libc::ENOENT))
    }
}

/// Adds the step's name to an `io::Result`.
pub trait WithStep<T> {
    fn step<S: Into<Step>>(self, what: impl FnOnce() -> S) -> Result<T, StepFailure>;
}

impl<T> WithStep<T> for std::io::Result<T> {
    fn step<S: Into<Step>>(self, what: impl FnOnce() -> S) -> Result<T, StepFailure> {
        self.map_err(|e| StepFailure::io(what(), &e))
    }
}

impl<T> WithStep<T> for nix::Result<T> {
    fn step<S: Into<Step>>(self, what: impl FnOnce() -> S) -> Result<T, StepFailure> {
        self.map_err(|e| StepFailure::io(what(), &std::io::Error::from(e)))
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
    /// Another error of the supervisor's, as it prints it, and the exit code it maps to.
    Failed {
        error: String,
        exit_code: i32,
    },
}
