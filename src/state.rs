//! On-disk state, written so that a crash never leaves half of anything: atomic
//! replacement of files, and exclusive locks held for as long as a handle lives.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use rustix::fs::FlockOperation;

/// Writes `bytes` to `path` through a temporary file in the same directory, synced, then
/// renamed over it: readers see the old content or the new, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
