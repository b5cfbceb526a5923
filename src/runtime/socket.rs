//! Unix sockets by path, whatever the path's length: a `sockaddr_un` holds 107 bytes, and
//! a state directory under a long `--root` or `$XDG_RUNTIME_DIR` with a 64-digit container
//! id is longer. A longer path is reached through its directory, opened `O_PATH`, as
//! `/proc/self/fd/N/NAME` (short, and resolved by the kernel as the path itself).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The room in `sockaddr_un.sun_path`, less its terminating NUL.
const SUN_PATH: usize = 107;

/// Binds a listening socket at `path`.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let (short, _dir) = reachable(path)?;
    UnixListener::bind(short)
}

/// Connects to the socket at `path`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let (short, _dir) = reachable(path)?;
    UnixStream::connect(short)
}

/// `path` itself when it fits, else `/proc/self/fd/N/NAME` with the directory held open
/// (the caller keeps the descriptor until the call that uses the path is done).
fn reachable(path: &Path) -> io::Result<(PathBuf, Option<OwnedFd>)> {
    if path.as_os_str().len() <= SUN_PATH {
        return Ok((path.to_owned(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a socket's path needs a directory and a name",
        ));
    };
    let dir = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let short = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    if short.as_os_str().len() > SUN_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket's name alone is longer than a unix socket's path may be",
        ));
    }
    Ok((short, Some(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_under_a_long_path_is_bound_and_reached() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d".repeat(120));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("control");
        assert!(
            UnixListener::bind(&path).is_err(),
            "the kernel took {path:?}"
        );
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "bound elsewhere than {path:?}");
        let _client = connect(&path).unwrap();
        listener.accept().unwrap();
        // Short paths as they are.
        let short = top.path().join("s");
        let _l = bind(&short).unwrap();
        connect(&short).unwrap();
    }
}
