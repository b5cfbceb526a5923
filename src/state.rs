//! On-disk state, written so that a crash never leaves half of anything: atomic
//! replacement of files, and exclusive locks held for as long as a handle lives.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How the temporary files of [`write_atomically`] end: `.NAME.PID.RANDOM.tmp`, the pid
/// being the writer's, so that [`remove_stale_temporaries`] can tell a killed writer's.
const TEMPORARY_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `path` through a temporary file in the same directory, synced, then
/// renamed over it: readers see the old content or the new, never a part. On any error
/// the temporary is removed and the old file is as it was; the error is the kernel's
/// alone (the caller names `path`; the temporary's name would only confuse). A writer
/// killed before the rename leaves its temporary file (`.NAME.PID.N.tmp`), which
/// [`remove_stale_temporaries`] removes once the writer is gone.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?;
    // `.NAME.PID.N.tmp`: made with O_EXCL, never followed, private until renamed.
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(
            ".{}.{}.{}{TEMPORARY_SUFFIX}",
            name.to_string_lossy(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_data())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The writer's pid in the name of a temporary file of [`write_atomically`].
fn temporary_writer(name: &str) -> Option<i32> {
    let inner = name.strip_prefix('.')?.strip_suffix(TEMPORARY_SUFFIX)?;
    let mut parts = inner.rsplit('.');
    let _random = parts.next()?;
    parts.next()?.parse().ok().filter(|pid| *pid > 0)
}

/// Whether a process `pid` runs (in this process's PID namespace). A zombie does not: a
/// writer killed with SIGKILL stays one until its parent reaps it, which may be never
/// soon (a detached supervisor's parent is the host's PID 1).
pub fn alive(pid: i32) -> bool {
    let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    };
    exists && !zombie(pid)
}

/// Whether `pid` runs and is a process that started no later than `since` (seconds since
/// the epoch): a process recorded then, not one that got its pid afterwards (pids wrap
/// around quickly on a busy host: 32768 of them by default). A second of slack, as both
/// times are whole seconds.
pub fn alive_since(pid: i32, since: u64) -> bool {
    alive(pid) && started_at(pid).is_some_and(|started| started <= since + 1)
}

/// When `pid` started, in seconds since the epoch: the boot time of /proc/stat plus its
/// start in clock ticks (/proc/PID/stat's 22nd field).
fn started_at(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields from the 3rd (state) on: the start time is the 22nd, the 20th of these.
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf with a valid name.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(boot + ticks / hz.max(1))
}

/// Whether /proc says `pid` is a zombie (or dead): the state after the command's `)`.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X"))
    })
}

/// Removes the temporary files that writers killed inside [`write_atomically`] left in
/// `dir`: those whose writer (the pid in the name) no longer runs. A live writer's file
/// is left to it. Returns how many went; a missing `dir` has none.
pub fn remove_stale_temporaries(dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = temporary_writer(&name.to_string_lossy()) else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            // Another cleaner was first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Makes `path` (and any missing parents) and leaves it mode 0700, also when it was
/// already there with a wider mode: for directories that hold a machine's or an image's
/// files as they are, setuid programs included, which no other user may reach.
pub fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// An exclusive `flock` on `path` (created if missing), held until the file is dropped.
/// With `wait`, waits for the holder; else fails at once (`WouldBlock`).
pub fn lock(path: &Path, wait: bool) -> io::Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let operation = if wait {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    rustix::fs::flock(&file, operation)?;
    Ok(file)
}

/// A JSON record that each machine may keep in its directory under MACHINES
/// (`MACHINES/NAME/FILE`: its id block, its address), changed under `MACHINES/LOCK`.
pub struct MachineRecords {
    machines: PathBuf,
    file: &'static str,
    lock: &'static str,
}

/// Why a machine's record could not be read or written.
#[derive(Debug)]
pub enum RecordError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The file is there, but not a record.
    Corrupt {
        path: PathBuf,
        why: String,
    },
}

fn record_io(path: &Path) -> impl FnOnce(io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_owned(),
        source,
    }
}

impl MachineRecords {
    pub fn new(machines: impl Into<PathBuf>, file: &'static str, lock: &'static str) -> Self {
        Self {
            machines: machines.into(),
            file,
            lock,
        }
    }

    fn path(&self, machine: &str) -> PathBuf {
        self.machines.join(machine).join(self.file)
    }

    /// The lock that changes take, made (with MACHINES) when missing.
    pub fn lock(&self) -> Result<File, RecordError> {
        std::fs::create_dir_all(&self.machines).map_err(record_io(&self.machines))?;
        let path = self.machines.join(self.lock);
        lock(&path, true).map_err(record_io(&path))
    }

    /// `machine`'s record, if it has one.
    pub fn read<T: DeserializeOwned>(&self, machine: &str) -> Result<Option<T>, RecordError> {
        let path = self.path(machine);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| RecordError::Corrupt {
                        path,
                        why: e.to_string(),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RecordError::Io { path, source }),
        }
    }

    /// Every other machine's record, by machine name, in name order.
    pub fn others<T: DeserializeOwned>(
        &self,
        machine: &str,
    ) -> Result<Vec<(String, T)>, RecordError> {
        let mut all = Vec::new();
        let entries = match std::fs::read_dir(&self.machines) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(all),
            Err(e) => return Err(record_io(&self.machines)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(record_io(&self.machines))?;
            // Directories only: the lock files sit beside them.
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != machine
                && entry
                    .file_type()
                    .map_err(record_io(&self.machines))?
                    .is_dir()
                && let Some(record) = self.read(&name)?
            {
                all.push((name, record));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Replaces `machine`'s record (atomically), making its directory when missing.
    pub fn write<T: Serialize>(&self, machine: &str, record: &T) -> Result<(), RecordError> {
        let path = self.path(machine);
        let dir = path.parent().unwrap_or(&self.machines);
        std::fs::create_dir_all(dir).map_err(record_io(dir))?;
        remove_stale_temporaries(dir).map_err(record_io(dir))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| record_io(&path)(e.into()))?;
        write_atomically(&path, &bytes).map_err(record_io(&path))
    }

    /// Removes `machine`'s record; none is fine.
    pub fn remove(&self, machine: &str) -> Result<(), RecordError> {
        let path = self.path(machine);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(RecordError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }
}

/// A JSON file read and parsed; `None` when there is none (a parse error is an
/// `InvalidData` error).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process alive now started no later than now, and later than a time before it.
    #[test]
    fn alive_since_tells_a_process_from_a_later_one_with_its_pid() {
        let me = std::process::id() as i32;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(alive_since(me, now));
        assert!(!alive_since(me, 1_000_000));
        assert!(!alive_since(i32::MAX, now));
    }

    #[test]
    fn locks_exclude_and_writes_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = lock(&path, false).unwrap();
        assert_eq!(
            lock(&path, false).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(held);
        assert!(lock(&path, false).is_ok());
        let file = dir.path().join("f");
        write_atomically(&file, b"one").unwrap();
        write_atomically(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file is left"
        );
    }

    /// A write that fails (here the rename: the target is a non-empty directory) leaves
    /// the target as it was and no temporary, and the error is the kernel's alone.
    #[test]
    fn a_failed_write_leaves_no_temporary_and_names_none() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("kept"), b"").unwrap();
        let e = write_atomically(&target, b"new").unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e:?}");
        assert!(!e.to_string().contains(".tmp"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["state.json"]);
        // The directory it could not make a temporary in is the kernel's error, too.
        let e = write_atomically(&dir.path().join("missing/state.json"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e:?}");
        assert!(!e.to_string().contains(".tmp"), "{e}");
    }

    #[test]
    fn a_killed_writers_temporary_goes_and_a_live_ones_stays() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: no process has this pid.
        let dead = dir.path().join(".state.json.99999999.AbC123.tmp");
        let live = dir
            .path()
            .join(format!(".state.json.{}.XyZ789.tmp", std::process::id()));
        let other = dir.path().join(".tmpAbCdEf");
        for path in [&dead, &live, &other] {
            std::fs::write(path, "half").unwrap();
        }
        assert_eq!(temporary_writer(".state.json.42.AbC123.tmp"), Some(42));
        assert_eq!(temporary_writer("state.json"), None);
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.exists(), "a live writer's file stays");
        assert!(other.exists(), "a file of another kind stays");
        assert_eq!(
            remove_stale_temporaries(&dir.path().join("none")).unwrap(),
            0
        );
    }

    #[test]
    fn a_zombie_writer_is_gone() {
        // A child that exited and is not reaped yet: a zombie.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !zombie(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(pid), "a zombie writer is gone");
        assert!(alive(std::process::id() as i32));
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!(".state.json.{pid}.AbC123.tmp"));
        std::fs::write(&stale, "half").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        drop(child);
    }
}
