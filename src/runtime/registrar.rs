//! Registering a machine with systemd-machined from a short-lived child of the supervisor.
//!
//! zbus starts threads (an executor and a reactor) that would stay in the supervisor for
//! the machine's whole life. A forked child makes the connection instead, while the
//! spawner builds the machine; it waits for PID 1's pid on a pipe, registers it, answers
//! on another pipe and exits. The supervisor stays single-threaded.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use crate::plan::Machined;
use crate::systemd::machined::Machines;

pub struct Registrar {
    pid: Pid,
    leader: Option<File>,
    answer: File,
}

impl Registrar {
    /// Forks the child, which connects to the system bus at once.
    pub fn spawn(machine: &Machined) -> std::io::Result<Self> {
        let (leader_r, leader_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (answer_r, answer_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the supervisor is single-threaded; the child only connects, registers
        // and leaves with _exit.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop((leader_w, answer_r));
                let answer = child(machine, File::from(leader_r));
                let _ = File::from(answer_w).write_all(answer.as_bytes());
                // SAFETY: leave without running the parent's exit handlers.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => Ok(Self {
                pid: child,
                leader: Some(File::from(leader_w)),
                answer: File::from(answer_r),
            }),
        }
    }

    /// Hands PID 1's pid to the child; its answer: registered, or why not.
    pub fn register(mut self, leader: Pid) -> Result<(), String> {
        if let Some(mut pipe) = self.leader.take() {
            pipe.write_all(format!("{}\n", leader.as_raw()).as_bytes())
                .map_err(|e| format!("the registering process is gone: {e}"))?;
        }
        let mut answer = String::new();
        let _ = self.answer.read_to_string(&mut answer);
        match answer.strip_prefix("ok") {
            Some("") => Ok(()),
            _ if answer.is_empty() => Err("the registering process ended without a word".into()),
            _ => Err(answer),
        }
    }
}

impl Drop for Registrar {
    /// Without a pid (the machine did not start), the child exits: it is reaped here.
    fn drop(&mut self) {
        drop(self.leader.take());
        let _ = waitpid(self.pid, None);
    }
}

/// In the child: connect, wait for the leader, register. `ok` or the error.
///
/// The pid is read up to its newline, not to the end of the pipe: the machine's processes
/// are forked later and hold copies of the pipe's other end.
fn child(machine: &Machined, leader: File) -> String {
    let connected = Machines::connect();
    let mut text = String::new();
    if BufReader::new(leader).read_line(&mut text).is_err() || !text.ends_with('\n') {
        return String::new();
    }
    let Ok(pid) = text.trim().parse::<u32>() else {
        return format!("bad leader pid `{text}`");
    };
    match connected.and_then(|m| m.register(machine, pid)) {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}
