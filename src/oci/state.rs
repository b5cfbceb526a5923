//! A container's record under the runtime's root (`ROOT/ID/oci.json`, beside the
//! supervisor's lock, `state.json` and control socket) and its runtime-spec status.
//!
//! The status follows from the record and the supervisor's lock: no record yet is
//! `creating`; a supervisor holding the lock is `created` until `mm oci start` let the
//! process go on, then `running` (`paused` while `mm oci pause` has frozen it); a free
//! lock, or a process that has ended, is `stopped`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::OciError;
use crate::runtime::state::Paths;

/// The runtime-spec version mm's state documents follow.
pub const OCI_VERSION: &str = "1.2.0";

/// What `mm oci create` recorded, and whether `mm oci start` has started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    /// The container's process on the host.
    pub pid: i32,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub created: u64,
    pub started: bool,
    /// Frozen by `mm oci pause` (its cgroup's freezer), until `mm oci resume`.
    #[serde(default)]
    pub paused: bool,
    /// The hooks the lifecycle's commands run after `create`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub hooks: super::hooks::Hooks,
}

fn is_default(hooks: &super::hooks::Hooks) -> bool {
    *hooks == super::hooks::Hooks::default()
}

/// The runtime-spec's statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    /// Frozen (`mm oci pause`), as runc reports it.
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        })
    }
}

/// The runtime-spec's state document, as `mm oci state` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    /// The process's pid on the host while it exists (0 once stopped, as runc has it).
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// A container's files, under the runtime's root.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub dir: PathBuf,
    pub paths: Paths,
}

impl Container {
    pub fn new(root: &Path, id: &str) -> Result<Self, OciError> {
        let name = super::ContainerId::new(id)?;
        let dir = root.join(name.as_str());
        Ok(Self {
            id: id.to_owned(),
            paths: Paths::new(&dir),
            dir,
        })
    }

    pub fn record_path(&self) -> PathBuf {
        self.dir.join("oci.json")
    }

    pub fn read(&self) -> Result<Option<Record>, OciError> {
        let path = self.record_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| OciError::Json { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OciError::io(&path, e)),
        }
    }

    pub fn write(&self, record: &Record) -> Result<(), OciError> {
        let path = self.record_path();
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| OciError::io(&path, e.into()))?;
        crate::state::write_atomically(&path, &bytes).map_err(|e| OciError::io(&path, e))
    }

    /// Whether the container's supervisor runs (holds its lock).
    pub fn supervised(&self) -> Result<bool, OciError> {
        crate::runtime::state::supervised(&self.paths)
            .map_err(|e| OciError::io(&self.paths.lock(), e))
    }

    /// The record and the status it gives; `NotFound` when there is no such container.
    pub fn status(&self) -> Result<(Option<Record>, Status), OciError> {
        if !self.dir.is_dir() {
            return Err(OciError::NotFound {
                id: self.id.clone(),
            });
        }
        let record = self.read()?;
        let alive = self.supervised()?;
        let status = match (&record, alive) {
            (None, true) => Status::Creating,
            // A create that failed or was killed before it recorded anything.
            (None, false) => Status::Stopped,
            // Ended (and reaped by its subreaper, or a zombie) while the supervisor tears
            // down: stopped, as runc says as soon as the process is gone.
            (Some(r), true) if !crate::state::alive_since(r.pid, r.created) => Status::Stopped,
            (Some(r), true) if r.paused => Status::Paused,
            (Some(r), true) if r.started => Status::Running,
            (Some(_), true) => Status::Created,
            (Some(_), false) => Status::Stopped,
        };
        Ok((record, status))
    }

    pub fn state(&self) -> Result<State, OciError> {
        let (record, status) = self.status()?;
        let record = record.unwrap_or_else(|| Record {
            id: self.id.clone(),
            bundle: PathBuf::new(),
            pid: 0,
            annotations: BTreeMap::new(),
            created: 0,
            started: false,
            paused: false,
            hooks: Default::default(),
        });
        Ok(State {
            oci_version: OCI_VERSION.to_owned(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                record.pid
            },
            bundle: record.bundle,
            annotations: record.annotations,
        })
    }
}

/// Now as RFC 3339 in UTC (`2026-12-02T03:04:05Z`), for log lines.
pub fn rfc3339_now() -> String {
    rfc3339(crate::runtime::state::now())
}

/// Seconds since the epoch as RFC 3339 in UTC.
pub fn rfc3339(secs: u64) -> String {
    crate::image::commit::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_180_645), "2026-12-02T03:04:05Z");
    }
}
