//! `mm oci run` of a bundle whose process has a terminal (`process.terminal`), from a
//! terminal: mm is its own console socket's other end, as conmon would be, and relays
//! between the caller's terminal (in raw mode meanwhile) and the terminal's master, which
//! is of the container's own devpts; the caller's terminal never reaches the container.
//! Window size changes follow the caller's terminal (SIGWINCH).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{OciError, Options, lifecycle};

/// Creates and starts container `id` with its terminal relayed to ours, waits for it and
/// returns its exit status (the caller deletes it).
pub fn run(
    options: &Options,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
    log: &dyn Fn(&str, &str),
) -> Result<Option<i32>, OciError> {
    if !crate::runtime::stdio::stdin_is_terminal() {
        return Err(OciError::Usage(
            "process.terminal is true, and standard input is not a terminal to relay it to: \
             run it from a terminal, or create it with --console-socket"
                .to_owned(),
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("mm-oci-console.")
        .tempdir()
        .map_err(|e| OciError::io(Path::new("a temporary directory"), e))?;
    let socket = dir.path().join("console.sock");
    let listener = crate::runtime::socket::bind(&socket).map_err(|e| OciError::io(&socket, e))?;
    let pid = lifecycle::create(options, id, bundle, pid_file, Some(&socket), log)?;
    // The container's PID 1 connected and sent the master before create returned.
    let (stream, _) = listener.accept().map_err(|e| OciError::io(&socket, e))?;
    let (master, _) =
        crate::runtime::terminal::receive(stream.as_fd()).map_err(|e| OciError::io(&socket, e))?;
    drop((stream, listener, dir));
    let stdin = std::io::stdin();
    copy_window_size(stdin.as_fd(), master.as_fd());
    // Window size changes follow ours; an interrupt or termination request to mm goes to
    // the process, as a shell's job would get it.
    let signals = crate::runtime::pty::Signals::new()
        .map_err(|e| OciError::io(Path::new("a signalfd"), e))?;
    lifecycle::start(options, id)?;
    {
        let _raw = crate::runtime::pty::RawMode::enter(stdin.as_fd());
        relay(
            File::from(master),
            &signals,
            nix::unistd::Pid::from_raw(pid),
        );
    }
    drop(signals);
    lifecycle::wait(options, id)
}

fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: winsize is plain data, filled by TIOCGWINSZ and read by TIOCSWINSZ.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
    }
}

/// Our standard input to the master, the master to our standard output, until the
/// terminal hangs up (every holder of its slave side has gone: the process has ended).
fn relay(mut master: File, signals: &crate::runtime::pty::Signals, pid: nix::unistd::Pid) {
    let mut stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 8192];
    let mut input_open = true;
    loop {
        let stdin_fd = stdin.as_fd();
        let master_fd = master.as_fd();
        let mut fds = vec![
            PollFd::new(master_fd, PollFlags::POLLIN),
            PollFd::new(signals.fd(), PollFlags::POLLIN),
        ];
        if input_open {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (from_master, signalled, from_stdin) = (
            ready(&fds[0]),
            ready(&fds[1]),
            fds.get(2).is_some_and(ready),
        );
        drop(fds);
        if signalled {
            signals.follow(stdin.as_fd(), Some(master.as_fd()), pid);
        }
        if from_master {
            match master.read(&mut buf) {
                // EIO: the slave's last holder is gone.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stdout
                        .write_all(&buf[..n])
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        if from_stdin {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => input_open = false,
                Ok(n) => {
                    if master.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
