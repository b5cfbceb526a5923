//! The machine's console, as the supervisor relays it: to the user's terminal (`mm run`
//! from a terminal, which is put in raw mode meanwhile) or to the machine's console log
//! (`mm start`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{PollFd, PollFlags};

use super::pty::RawMode;

/// The log of a started machine stops growing at this size; the machine is not blocked.
const LOG_LIMIT: u64 = 8 << 20;

pub struct Relay {
    master: File,
    /// Our terminal, raw for as long as the relay lives (`None`: detached, or no terminal).
    _raw: Option<RawMode<'static>>,
    log: Option<File>,
    logged: u64,
    stdin_open: bool,
}

impl Relay {
    /// `log`: where a detached machine's output goes (opened by the supervisor, which fails
    /// the start when it cannot).
    pub fn new(master: OwnedFd, detached: bool, log: Option<File>) -> Self {
        // SAFETY: standard input stays open for the life of the process.
        let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
        Self {
            master: File::from(master),
            _raw: (!detached).then(|| RawMode::enter(stdin)).flatten(),
            log,
            logged: 0,
            stdin_open: !detached,
        }
    }

    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        fds.push(PollFd::new(self.master.as_fd(), PollFlags::POLLIN));
        if self.stdin_open {
            // SAFETY: standard input stays open for the life of the process.
            let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
    }

    /// Moves what is ready, without blocking on the machine.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 8192];
        while ready(self.master.as_fd()) {
            let Ok(n) = self.master.read(&mut buf) else {
                break;
            };
            if n == 0 {
                break;
            }
            if let Some(log) = &mut self.log {
                if self.logged < LOG_LIMIT {
                    let _ = log.write_all(&buf[..n]);
                    self.logged += n as u64;
                }
            } else {
                let mut out = std::io::stdout();
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
        }
        if self.stdin_open {
            let stdin = std::io::stdin();
            while ready(stdin.as_fd()) {
                match stdin.lock().read(&mut buf) {
                    Ok(0) | Err(_) => {
                        self.stdin_open = false;
                        break;
                    }
                    Ok(n) => {
                        let _ = self.master.write_all(&buf[..n]);
                    }
                }
            }
        }
    }
}

fn ready(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}
