//! The machine's console, as the supervisor relays it: to the user's terminal (`mm run`
//! from a terminal, which is put in raw mode meanwhile) or to the machine's console log
//! (`mm start`).
//!
//! On a terminal, every key goes to the machine (Ctrl-C too), and systemd-nspawn's escape
//! ends the session: `^]` three times within a second. As nspawn, the supervisor then
//! kills the machine (the `^]`s have gone to the machine's console like any other key).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use super::pty::RawMode;

/// `^]` (Ctrl-]), nspawn's escape key.
const ESCAPE: u8 = 0x1d;
/// How many escape keys in a row end the session, and within what time.
const ESCAPE_COUNT: u32 = 3;
const ESCAPE_WITHIN: Duration = Duration::from_secs(1);

/// What the startup banner says of the escape (the supervisor prints it on a terminal).
pub const ESCAPE_HINT: &str = "Press ^] three times within 1s to kill the machine.";

/// Counts escape keys typed in a row.
#[derive(Debug, Default)]
struct Escape {
    count: u32,
    first: Option<Instant>,
}

impl Escape {
    /// Takes what was typed; true once the escape is complete.
    fn typed(&mut self, keys: &[u8], now: Instant) -> bool {
        for key in keys {
            if *key != ESCAPE {
                *self = Self::default();
                continue;
            }
            match self.first {
                Some(first) if now.duration_since(first) <= ESCAPE_WITHIN => self.count += 1,
                _ => {
                    self.first = Some(now);
                    self.count = 1;
                }
            }
            if self.count >= ESCAPE_COUNT {
                return true;
            }
        }
        false
    }
}

/// The log of a started machine stops growing at this size; the machine is not blocked.
const LOG_LIMIT: u64 = 8 << 20;

pub struct Relay {
    master: File,
    /// Our terminal, raw for as long as the relay lives (`None`: detached, or no terminal).
    _raw: Option<RawMode<'static>>,
    log: Option<File>,
    logged: u64,
    stdin_open: bool,
    /// On a terminal: the escape keys typed so far.
    escape: Option<Escape>,
    escaped: bool,
}

impl Relay {
    /// `log`: where a detached machine's output goes (opened by the supervisor, which fails
    /// the start when it cannot).
    pub fn new(master: OwnedFd, detached: bool, log: Option<File>) -> Self {
        // SAFETY: standard input stays open for the life of the process.
        let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
        let raw = (!detached).then(|| RawMode::enter(stdin)).flatten();
        Self {
            master: File::from(master),
            escape: raw.is_some().then(Escape::default),
            _raw: raw,
            log,
            logged: 0,
            stdin_open: !detached,
            escaped: false,
        }
    }

    /// Whether the user typed the escape (`^]` three times within a second).
    pub fn escaped(&self) -> bool {
        self.escaped
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
                        if let Some(escape) = &mut self.escape
                            && escape.typed(&buf[..n], Instant::now())
                        {
                            self.escaped = true;
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_escapes_within_a_second_and_in_a_row_end_the_session() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut e = Escape::default();
        assert!(!e.typed(&[ESCAPE, ESCAPE], at(0)));
        assert!(e.typed(&[ESCAPE], at(900)));
        // Another key between them starts the count again.
        let mut e = Escape::default();
        assert!(!e.typed(&[ESCAPE, ESCAPE, b'x', ESCAPE], at(0)));
        assert!(!e.typed(&[ESCAPE], at(10)));
        assert!(e.typed(&[ESCAPE], at(20)));
        // Too slow: the third comes more than a second after the first.
        let mut e = Escape::default();
        assert!(!e.typed(&[ESCAPE], at(0)));
        assert!(!e.typed(&[ESCAPE], at(600)));
        assert!(!e.typed(&[ESCAPE], at(1200)));
        assert!(!e.typed(&[ESCAPE], at(1300)));
        assert!(e.typed(&[ESCAPE], at(1400)));
        assert!(Escape::default().typed(&[ESCAPE; 3], at(0)));
    }
}
