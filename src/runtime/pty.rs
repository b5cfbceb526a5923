//! Pseudo-terminals: the console of a machine, and the terminal of `mm exec` and
//! `mm shell` (relayed by `stdio.rs`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::pty::Winsize;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg};
use nix::unistd::Pid;

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

/// Puts a terminal in raw mode for as long as it lives.
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: termios::Termios,
}

impl<'a> RawMode<'a> {
    /// `None` when `fd` is not a terminal.
    pub fn enter(fd: BorrowedFd<'a>) -> Option<Self> {
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

/// The signals `mm exec` and `mm shell` pass on to their command, as a host shell's
/// command would get them: an interrupt, a hang-up, a termination request, the user's.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Window size changes and the [`FORWARDED`] signals, as a descriptor to poll: they are
/// blocked for as long as this lives, and arrive through a signalfd instead.
pub struct Signals {
    signals: SignalFd,
    old: SigSet,
}

impl Signals {
    pub fn new() -> io::Result<Self> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGWINCH);
        for signal in FORWARDED {
            set.add(signal);
        }
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))?;
        match SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
            Ok(signals) => Ok(Self { signals, old }),
            Err(e) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                Err(e.into())
            }
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.signals.as_fd()
    }

    /// After the descriptor was readable: gives `master` (if any) the window size of
    /// `ours` on SIGWINCH, and sends every other signal that came to `child`.
    pub fn follow(&self, ours: BorrowedFd<'_>, master: Option<BorrowedFd<'_>>, child: Pid) {
        let mut resized = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGWINCH) => resized = true,
                Ok(signal) => {
                    let _ = nix::sys::signal::kill(child, signal);
                }
                Err(_) => {}
            }
        }
        if resized
            && let Some(master) = master
            && let Some(size) = window_size(ours)
        {
            set_window_size(master, &size);
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}
