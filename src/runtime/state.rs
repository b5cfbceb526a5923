//! A machine's runtime state: files under its runtime directory, and the lock that says
//! whether a supervisor is alive.
//!
//! RUNTIME/NAME/lock     held by the supervisor for as long as it lives (`flock`)
//! RUNTIME/NAME/state.json   the launch and the leader's pid, or how the machine ended
//! RUNTIME/NAME/control  the supervisor's socket (`mm stop`)
//! RUNTIME/NAME/console.log  what a started machine wrote to its console
//!
//! A machine is running exactly when its lock is held: a supervisor killed with SIGKILL
//! releases it, so `mm status` never reports a dead machine as running.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::launch::Launch;

#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(runtime_dir: &Path) -> Self {
        Self {
            dir: runtime_dir.to_owned(),
        }
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn control(&self) -> PathBuf {
        self.dir.join("control")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}

/// What state.json holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Recorded {
    Running {
        supervisor: u32,
        /// PID 1 of the machine, as the host sees it.
        leader: i32,
        /// Seconds since the epoch.
        started: u64,
        plan_hash: String,
        launch: Box<Launch>,
        /// Whether systemd-machined has the machine (with `leader`).
        #[serde(default)]
        registered: bool,
    },
    Stopped {
        /// The exit status of PID 1 (128 + N when signal N ended it); none when its
        /// supervisor was killed and a later command cleaned up after it.
        exit_status: Option<i32>,
        stopped: u64,
        /// The unit it ran as, whose journal has its output.
        #[serde(default)]
        unit: Option<String>,
    },
}

impl Recorded {
    /// The systemd unit the machine runs or ran as.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Self::Running { launch, .. } => launch.unit.as_deref(),
            Self::Stopped { unit, .. } => unit.as_deref(),
        }
    }
}

/// What `mm status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Status {
    Running {
        leader: i32,
        supervisor: u32,
        started: u64,
        plan_hash: String,
    },
    /// A supervisor holds the lock but has not written its state yet.
    Starting,
    Stopped {
        exit_status: Option<i32>,
        /// The supervisor died without cleaning up (killed); the next start will.
        crashed: bool,
    },
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn read(paths: &Paths) -> io::Result<Option<Recorded>> {
    match std::fs::read(paths.state()) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write(paths: &Paths, recorded: &Recorded) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(recorded).map_err(io::Error::other)?;
    crate::state::write_atomically(&paths.state(), &bytes)
}

/// Whether a supervisor holds the machine's lock.
pub fn supervised(paths: &Paths) -> io::Result<bool> {
    if !paths.lock().exists() {
        return Ok(false);
    }
    match crate::state::lock(&paths.lock(), false) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

pub fn status(paths: &Paths) -> io::Result<Status> {
    let alive = supervised(paths)?;
    let recorded = read(paths)?;
    Ok(match (alive, recorded) {
        (
            true,
            Some(Recorded::Running {
                leader,
                supervisor,
                started,
                plan_hash,
                ..
            }),
        ) => Status::Running {
            leader,
            supervisor,
            started,
            plan_hash,
        },
        (true, _) => Status::Starting,
        (false, Some(Recorded::Running { .. })) => Status::Stopped {
            exit_status: None,
            crashed: true,
        },
        (false, Some(Recorded::Stopped { exit_status, .. })) => Status::Stopped {
            exit_status,
            crashed: exit_status.is_none(),
        },
        (false, None) => Status::Stopped {
            exit_status: None,
            crashed: false,
        },
    })
}

/// The launch of a running machine (for `mm exec`, `mm stop`).
pub fn running(paths: &Paths) -> io::Result<Option<(i32, Launch)>> {
    if !supervised(paths)? {
        return Ok(None);
    }
    Ok(match read(paths)? {
        Some(Recorded::Running { leader, launch, .. }) => Some((leader, *launch)),
        _ => None,
    })
}
