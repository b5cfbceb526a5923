//! A machine's (an OCI container's) cgroup freezer, for `mm oci pause` and `resume`:
//! v1's `freezer.state` where a freezer hierarchy holds the cgroup (hybrid and v1 hosts),
//! else v2's `cgroup.freeze`; each change waits for the kernel to say it is done.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cgroup::{CgroupError, MachineCgroup, read, write};

impl MachineCgroup {
    /// The freezer of the cgroup: v1's `freezer.state` where a freezer hierarchy holds it
    /// (hybrid and v1 hosts), else v2's `cgroup.freeze`.
    fn freezer(&self) -> Result<Freezer, CgroupError> {
        if let Some(dir) = self
            .dirs()
            .iter()
            .find(|d| d.join("freezer.state").exists())
        {
            return Ok(Freezer::V1(dir.join("freezer.state")));
        }
        if let Some(dir) = self
            .dirs()
            .iter()
            .find(|d| d.join("cgroup.freeze").exists())
        {
            return Ok(Freezer::V2(dir.clone()));
        }
        Err(CgroupError::NoFreezer {
            dir: self.dirs().first().cloned().unwrap_or_default(),
        })
    }

    /// Freezes (`true`) or thaws every process of the cgroup, and waits (up to 5 s) until
    /// the kernel says it is done: v1's `FROZEN` (past `FREEZING`), v2's `frozen 1`.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let freezer = self.freezer()?;
        match &freezer {
            Freezer::V1(file) => write(file, if frozen { "FROZEN" } else { "THAWED" })?,
            Freezer::V2(dir) => write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?,
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.frozen_by(&freezer)? != frozen {
            if Instant::now() > deadline {
                return Err(CgroupError::NotApplied {
                    file: freezer.file(),
                    wanted: if frozen { "frozen" } else { "thawed" }.to_owned(),
                    got: read(&freezer.file())?,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Whether the cgroup is frozen (all its processes stopped by the freezer).
    pub fn frozen(&self) -> Result<bool, CgroupError> {
        self.frozen_by(&self.freezer()?)
    }

    fn frozen_by(&self, freezer: &Freezer) -> Result<bool, CgroupError> {
        Ok(match freezer {
            Freezer::V1(file) => read(file)? == "FROZEN",
            Freezer::V2(dir) => read(&dir.join("cgroup.events"))?
                .lines()
                .any(|l| l == "frozen 1"),
        })
    }
}

/// Where a cgroup's freezer is.
enum Freezer {
    /// v1: the cgroup's `freezer.state`.
    V1(PathBuf),
    /// v2: the cgroup's directory (`cgroup.freeze`, `cgroup.events`).
    V2(PathBuf),
}

impl Freezer {
    fn file(&self) -> PathBuf {
        match self {
            Self::V1(file) => file.clone(),
            Self::V2(dir) => dir.join("cgroup.events"),
        }
    }
}
