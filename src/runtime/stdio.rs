//! The standard streams of a command run in a running machine (`mm exec`, `mm shell`).
//!
//! A machine never gets a descriptor of the caller's terminal: with one, a program in the
//! machine could push input into the caller's shell (`TIOCSTI`), read it, or change it
//! (the class of runc's CVE-2016-9962). So each standard stream is replaced before the
//! command runs:
//! - when standard output or error is a terminal (or for a login shell), by the slave of a
//!   pseudo-terminal from the machine's own devpts: the command's output terminal, with
//!   our window size, relayed; standard input goes through it too when it is a terminal
//!   (ours then in raw mode, so that ^C travels as a byte to the machine's terminal);
//! - every other stream by a pipe, relayed. Standard input that is not a terminal is a
//!   pipe even for a login shell (as ssh without `-t`): its end is the pipe's end, which
//!   every program sees. Through the terminal it would be a ^D, and a ^D typed ahead is
//!   lost when a line editor takes the terminal out of canonical mode (the line
//!   discipline turns it into a NUL byte, which busybox's and bash's editors ignore):
//!   `mm shell NAME < /dev/null` waited for ever.
//!
//! The relay ends once the command has exited and what it wrote is passed on.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use super::pty::{self, Pty, RawMode};
use super::sys;

/// Where one of the command's standard streams goes.
enum Stream {
    /// The pseudo-terminal's slave.
    Terminal,
    /// A pipe: the machine's end and ours.
    Pipe { theirs: OwnedFd, ours: OwnedFd },
}

/// The command's three standard streams, made in the machine (for its `/dev/ptmx`).
pub struct Streams {
    pty: Option<Pty>,
    /// Standard input, output and error.
    streams: [Stream; 3],
}

/// Our standard input, output and error.
fn standard() -> [BorrowedFd<'static>; 3] {
    // SAFETY: the standard descriptors stay open for the life of the process.
    [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
}

fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Whether our standard input is a terminal (then `mm run` relays the keys typed on it).
pub fn stdin_is_terminal() -> bool {
    is_terminal(standard()[0])
}

/// Whether any of our standard streams is a terminal: then a machine's console must be
/// a pseudo-terminal of its own (`mm run`), never ours passed on.
pub fn any_terminal() -> bool {
    standard().into_iter().any(is_terminal)
}

fn pipe(ours_reads: bool) -> io::Result<Stream> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (theirs, ours) = if ours_reads {
        (write, read)
    } else {
        (read, write)
    };
    Ok(Stream::Pipe { theirs, ours })
}

impl Streams {
    /// Opens the streams for the command; `login`: output and error on a pseudo-terminal,
    /// as a login shell wants, whatever ours are, and input too when ours is a terminal.
    /// Call it inside the machine's root.
    pub fn open(login: bool) -> io::Result<Self> {
        Self::open_for(standard(), login)
    }

    /// [`Streams::open`] for the streams `ours` (input, output, error).
    fn open_for(ours: [BorrowedFd<'_>; 3], login: bool) -> io::Result<Self> {
        let [input, output, error] = ours;
        let terminal = [
            is_terminal(input),
            login || is_terminal(output),
            login || is_terminal(error),
        ];
        let pty = if terminal[1] || terminal[2] {
            Some(pty::open(ours.into_iter().find(|fd| is_terminal(*fd)))?)
        } else {
            None
        };
        let stream = |i: usize, ours_reads: bool| {
            if pty.is_some() && terminal[i] {
                Ok(Stream::Terminal)
            } else {
                pipe(ours_reads)
            }
        };
        let streams = [stream(0, false)?, stream(1, true)?, stream(2, true)?];
        Ok(Self { pty, streams })
    }

    /// Whether the command gets a terminal (and so wants `TERM`).
    pub fn has_terminal(&self) -> bool {
        self.pty.is_some()
    }

    /// In the forked child, before `exec`: a session of its own (with the pseudo-terminal,
    /// if any, as its controlling terminal); the machine's ends become standard input,
    /// output and error. Every other descriptor of ours is close-on-exec.
    ///
    /// The new session holds with pipes too: a process group reaches across PID
    /// namespaces, so in the caller's group `kill(0, SIGKILL)` from inside the machine
    /// would kill mm and every host process of the caller's job.
    pub fn attach(&self) -> io::Result<()> {
        nix::unistd::setsid()?;
        if let Some(pty) = &self.pty {
            sys::controlling_terminal(pty.slave.as_fd())?;
        }
        let [input, output, error] = &self.streams;
        nix::unistd::dup2_stdin(self.machine_end(input)?)?;
        nix::unistd::dup2_stdout(self.machine_end(output)?)?;
        nix::unistd::dup2_stderr(self.machine_end(error)?)?;
        // What the caller left open (its pipes, its files) and our own copies of the
        // machine's ends must not reach the command.
        sys::close_on_exec_from(3)
    }

    /// The machine's end of one of the streams.
    fn machine_end<'a>(&'a self, stream: &'a Stream) -> io::Result<BorrowedFd<'a>> {
        match (stream, &self.pty) {
            (Stream::Pipe { theirs, .. }, _) => Ok(theirs.as_fd()),
            (Stream::Terminal, Some(pty)) => Ok(pty.slave.as_fd()),
            (Stream::Terminal, None) => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }

    /// In the parent: relays our standard streams and the command's until `child` has
    /// exited and its output is passed on.
    pub fn relay(self, child: Pid) -> io::Result<()> {
        self.relay_for(child, standard())
    }

    /// [`Streams::relay`] with the streams `ours` (input, output, error).
    fn relay_for(self, child: Pid, ours: [BorrowedFd<'_>; 3]) -> io::Result<()> {
        let Self { pty, streams } = self;
        let [input, output, error] = streams;
        let [our_in, our_out, our_err] = ours;
        let mut sources = Vec::new();
        let mut raw = None;
        let mut to_machine = None;
        let mut master = None;
        if let Some(Pty { master: m, slave }) = pty {
            drop(slave);
            let m = File::from(m);
            let out = if matches!(output, Stream::Terminal) {
                our_out
            } else {
                our_err
            };
            sources.push(Source::new(m.try_clone()?, out)?);
            if matches!(input, Stream::Terminal) {
                raw = RawMode::enter(our_in);
                to_machine = Some(Sink::Terminal(m.try_clone()?));
            }
            master = Some(m);
        }
        if let Stream::Pipe { ours, .. } = input {
            to_machine = Some(Sink::Pipe(File::from(ours)));
        }
        for (stream, out) in [(output, our_out), (error, our_err)] {
            if let Stream::Pipe { ours, .. } = stream {
                sources.push(Source::new(File::from(ours), out)?);
            }
        }
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(child.as_raw()).ok_or(io::ErrorKind::InvalidInput)?,
            rustix::process::PidfdFlags::empty(),
        )?;
        // Blocked only now, in the parent: the command was forked with our mask.
        let signals = pty::Signals::new()?;
        let result = pump(
            &mut sources,
            to_machine,
            our_in,
            pidfd.as_fd(),
            Forward {
                signals: &signals,
                master: master.as_ref(),
                child,
            },
        );
        drop(raw);
        result
    }
}

/// Where our standard input goes.
enum Sink {
    /// The pseudo-terminal's master: at our end of input, the terminal's EOF (^D).
    Terminal(File),
    /// The command's input pipe: closed at our end of input.
    Pipe(File),
}

/// One of the command's outputs, and where it goes.
struct Source {
    from: File,
    to: File,
}

impl Source {
    fn new(from: File, to: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            from,
            to: File::from(to.try_clone_to_owned()?),
        })
    }

    /// Moves one read's worth; false once there is nothing more to move (its end, a
    /// hung-up terminal, or ours no longer taking it).
    fn move_once(&mut self, buf: &mut [u8]) -> bool {
        match self.from.read(buf) {
            Ok(0) => false,
            Ok(n) => self
                .to
                .write_all(&buf[..n])
                .and_then(|()| self.to.flush())
                .is_ok(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            // EIO: every holder of the terminal's slave is gone.
            Err(_) => false,
        }
    }
}

fn readable(fd: &PollFd<'_>) -> bool {
    fd.revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
}

/// Whether `fd` has something to read now.
fn ready_now(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) && readable(&fds[0])
}

/// Moves one read of our standard input to the machine; at its end, or when the command
/// no longer takes it, the sink goes.
fn forward_input(input: &mut File, to_machine: &mut Option<Sink>, buf: &mut [u8]) {
    match input.read(buf) {
        Ok(0) | Err(_) => match to_machine.take() {
            // End of input: the terminal's EOF character, as a user's ^D.
            Some(Sink::Terminal(mut m)) => {
                let _ = m.write_all(&[4]);
            }
            Some(Sink::Pipe(p)) => drop(p),
            None => {}
        },
        Ok(n) => {
            let sent = match to_machine {
                Some(Sink::Terminal(f) | Sink::Pipe(f)) => f.write_all(&buf[..n]),
                None => Ok(()),
            };
            if sent.is_err() {
                // The command no longer reads its input.
                *to_machine = None;
            }
        }
    }
}

/// Signals for the command: a window size for its terminal, the others to it.
struct Forward<'a> {
    signals: &'a pty::Signals,
    master: Option<&'a File>,
    child: Pid,
}

/// The relay's loop: until the command has exited (then what it wrote is passed on).
fn pump(
    sources: &mut Vec<Source>,
    mut to_machine: Option<Sink>,
    our_in: BorrowedFd<'_>,
    exited: BorrowedFd<'_>,
    forward: Forward<'_>,
) -> io::Result<()> {
    let mut buf = [0u8; 16384];
    let mut input = File::from(our_in.try_clone_to_owned()?);
    loop {
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|s| PollFd::new(s.from.as_fd(), PollFlags::POLLIN))
            .collect();
        let n_sources = fds.len();
        fds.push(PollFd::new(exited, PollFlags::POLLIN));
        fds.push(PollFd::new(forward.signals.fd(), PollFlags::POLLIN));
        let input_at = to_machine.is_some().then(|| {
            fds.push(PollFd::new(input.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds.iter().map(readable).collect();
        drop(fds);
        if ready[n_sources + 1] {
            let master = forward.master.map(|m| m.as_fd());
            forward.signals.follow(our_in, master, forward.child);
        }
        if let Some(at) = input_at
            && ready[at]
        {
            forward_input(&mut input, &mut to_machine, &mut buf);
        }
        let mut i = 0;
        sources.retain_mut(|s| {
            let keep = !ready[i] || s.move_once(&mut buf);
            i += 1;
            keep
        });
        if ready[n_sources] {
            // The command has exited: pass on what it left, then end (a process it left
            // behind may hold its output open for ever).
            for s in sources.iter_mut() {
                while ready_now(s.from.as_fd()) && s.move_once(&mut buf) {}
            }
            return Ok(());
        }
        if sources.is_empty() && to_machine.is_none() {
            // Nothing left to move: wait for the exit alone, passing signals on.
            loop {
                let mut fds = [
                    PollFd::new(exited, PollFlags::POLLIN),
                    PollFd::new(forward.signals.fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                    Ok(_) => {}
                }
                let (exit, signal) = (readable(&fds[0]), readable(&fds[1]));
                if signal {
                    forward.signals.follow(our_in, None, forward.child);
                }
                if exit {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;
    use std::os::fd::AsRawFd;

    /// Forks `sh -c SCRIPT` on `streams`, relays it with `ours`; its exit code.
    fn run(streams: Streams, script: &str, ours: [BorrowedFd<'_>; 3]) -> i32 {
        let sh = c"/bin/sh";
        let args = [sh, c"-c", &std::ffi::CString::new(script).unwrap()];
        // SAFETY: the child only makes system calls, then execs.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                if streams.attach().is_ok() {
                    let _ = nix::unistd::execv(sh, &args);
                }
                // SAFETY: leaving a forked child without running exit handlers.
                unsafe { libc::_exit(127) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                streams.relay_for(child, ours).unwrap();
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    fn text(mut file: File) -> String {
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn without_a_terminal_the_command_gets_pipes_and_its_streams_stay_apart() {
        let (input_r, input_w) = nix::unistd::pipe().unwrap();
        File::from(input_w).write_all(b"from stdin\n").unwrap();
        let (out, err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let ours = [input_r.as_fd(), out.as_fd(), err.as_fd()];
        let streams = Streams::open_for(ours, false).unwrap();
        assert!(!streams.has_terminal());
        let script = "for fd in 0 1 2; do [ -p /proc/self/fd/$fd ] || exit 9; done; \
                      read line; echo \"out: $line\"; echo err >&2; exit 4";
        assert_eq!(run(streams, script, ours), 4);
        assert_eq!(text(out), "out: from stdin\n");
        assert_eq!(text(err), "err\n");
    }

    #[test]
    fn a_login_shell_gets_a_terminal_with_the_size_and_input_relayed() {
        let (input_r, input_w) = nix::unistd::pipe().unwrap();
        File::from(input_w)
            .write_all(
                b"stty size </dev/tty; readlink /proc/self/fd/1; [ -p /proc/self/fd/0 ] && \
                  echo input is a pipe; echo he''llo; exit 3\n",
            )
            .unwrap();
        let (out, err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let ours = [input_r.as_fd(), out.as_fd(), err.as_fd()];
        let streams = Streams::open_for(ours, true).unwrap();
        assert!(streams.has_terminal());
        if let Some(pty) = &streams.pty {
            let size = nix::pty::Winsize {
                ws_row: 33,
                ws_col: 101,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads the Winsize we own.
            unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        }
        assert_eq!(run(streams, "exec /bin/sh -i", ours), 3);
        let text = text(out);
        assert!(text.contains("33 101"), "{text}");
        assert!(text.contains("/dev/pts/"), "{text}");
        assert!(text.contains("input is a pipe"), "{text}");
        assert!(text.contains("hello"), "{text}");
    }

    #[test]
    fn a_login_shell_whose_input_is_empty_reads_its_end_and_exits() {
        // As `mm shell NAME < /dev/null`: an interactive shell that waits for a line.
        let (input_r, input_w) = nix::unistd::pipe().unwrap();
        drop(input_w);
        let (out, err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let ours = [input_r.as_fd(), out.as_fd(), err.as_fd()];
        let streams = Streams::open_for(ours, true).unwrap();
        let script = "read line; echo \"read: $? [$line]\"; exec /bin/sh -i";
        assert_eq!(run(streams, script, ours), 0);
        assert!(text(out).contains("read: 1 []"));
    }
}
