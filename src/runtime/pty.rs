//! Pseudo-terminals: the console of a machine, and the terminal of `mm shell`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::Winsize;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    // SAFETY: Winsize is plain data; TIOCGWINSZ fills it.
    let mut size: Winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on a descriptor we borrow.
    (unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0).then_some(size)
}

fn set_window_size(fd: BorrowedFd<'_>, size: &Winsize) {
    // SAFETY: TIOCSWINSZ reads the Winsize we own.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size) };
}

/// A new pseudo-terminal, with the window size of `like` when that is a terminal. The
/// master is close-on-exec; the slave is meant to be inherited.
pub fn open(like: Option<BorrowedFd<'_>>) -> io::Result<Pty> {
    let size = like.and_then(window_size);
    let pair = nix::pty::openpty(size.as_ref(), None)?;
    nix::fcntl::fcntl(
        &pair.master,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(Pty {
        master: pair.master,
        slave: pair.slave,
    })
}

/// In a child before `exec`: a new session whose controlling terminal is `slave`, which
/// becomes standard input, output and error.
pub fn attach_as_controlling(slave: &OwnedFd) -> io::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY on a terminal we hold.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    super::sys::dup_onto_standard_streams(slave.as_fd())
}

/// Puts a terminal in raw mode for as long as it lives.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: termios::Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Option<Self> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Relays our terminal and `master` until the other side hangs up: standard input goes
/// in (raw, so Ctrl-C travels as a byte, as on a real terminal), output comes out, and
/// window size changes follow. Our terminal is restored whatever happens.
pub fn relay(master: OwnedFd) -> io::Result<()> {
    // SAFETY: the standard descriptors stay open for the life of the process.
    let (input, output) = unsafe {
        (
            BorrowedFd::borrow_raw(libc::STDIN_FILENO),
            BorrowedFd::borrow_raw(libc::STDOUT_FILENO),
        )
    };
    let _raw = RawMode::enter(input);
    relay_fds(master, input, output)
}

/// [`relay`] between any two descriptors.
pub fn relay_fds(master: OwnedFd, input: BorrowedFd<'_>, output: BorrowedFd<'_>) -> io::Result<()> {
    let mut winch = SigSet::empty();
    winch.add(Signal::SIGWINCH);
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&winch),
        Some(&mut old),
    )?;
    let result = (|| {
        let signals = SignalFd::with_flags(&winch, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        let mut master = File::from(master);
        let mut out = File::from(output.try_clone_to_owned()?);
        let mut inp = File::from(input.try_clone_to_owned()?);
        let mut input_open = true;
        let mut buf = [0u8; 8192];
        loop {
            let mut fds = vec![
                PollFd::new(master.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            if input_open {
                fds.push(PollFd::new(inp.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let ready = |fd: &PollFd<'_>| {
                fd.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            let (from_master, from_signal) = (ready(&fds[0]), ready(&fds[1]));
            let from_input = fds.get(2).is_some_and(ready);
            drop(fds);
            if from_signal {
                while let Ok(Some(_)) = signals.read_signal() {}
                if let Some(size) = window_size(input) {
                    set_window_size(master.as_fd(), &size);
                }
            }
            if from_master {
                match master.read(&mut buf) {
                    // EIO: every holder of the slave side is gone.
                    Ok(0) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                    Ok(n) => {
                        out.write_all(&buf[..n])?;
                        out.flush()?;
                    }
                }
            }
            if from_input {
                match inp.read(&mut buf) {
                    Ok(0) => {
                        // End of input: the terminal's EOF character, as a user's ^D.
                        input_open = false;
                        let _ = master.write_all(&[4]);
                    }
                    Ok(n) => master.write_all(&buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => input_open = false,
                }
            }
        }
    })();
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old),
        None,
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_shell_on_a_pty_sees_its_size_and_input_and_its_output_comes_back() {
        let pty = open(None).unwrap();
        let size = Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        set_window_size(pty.master.as_fd(), &size);
        let slave = pty.slave.try_clone().unwrap();
        let mut command = std::process::Command::new("/bin/sh");
        // SAFETY: attach_as_controlling only makes system calls.
        unsafe {
            command.pre_exec(move || attach_as_controlling(&slave));
        }
        let mut child = command.spawn().unwrap();
        // The closure holds a copy of the slave: drop it, or the master never hangs up.
        drop(command);
        drop(pty.slave);
        let (input_r, input_w) = nix::unistd::pipe().unwrap();
        File::from(input_w)
            .write_all(b"stty size; echo he''llo; exit 3\n")
            .unwrap();
        let output = tempfile::tempfile().unwrap();
        relay_fds(pty.master, input_r.as_fd(), output.as_fd()).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        let mut text = String::new();
        let mut output = output;
        std::io::Seek::rewind(&mut output).unwrap();
        output.read_to_string(&mut text).unwrap();
        assert!(text.contains("33 101"), "{text}");
        assert!(text.contains("hello"), "{text}");
    }
}
