//! Registering a machine with systemd-machined from a short-lived child of the supervisor.
//!
//! zbus starts threads (an executor and a reactor) that would stay in the supervisor for
//! the machine's whole life. A forked child makes the connection instead, while the
//! spawner builds the machine; it waits for PID 1's pid on a pipe, registers it, answers
//! on another pipe ([`FromRegistrar`], one JSON line) and exits. The supervisor stays
//! single-threaded.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};

use super::launch::{Step, StepFailure, WithStep};
use crate::plan::Machined;
use crate::systemd::SystemdError;
use crate::systemd::machined::Machines;

/// From the registrar to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FromRegistrar {
    Registered,
    Failed(StepFailure),
}

pub struct Registrar {
    pid: Pid,
    leader: Option<File>,
    answer: File,
}

impl Registrar {
    /// Forks the child, which connects to the system bus at once.
    pub fn spawn(machine: &Machined) -> Result<Self, StepFailure> {
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| Step::MakePipe);
        let (leader_r, leader_w) = pipe()?;
        let (answer_r, answer_w) = pipe()?;
        // SAFETY: the supervisor is single-threaded; the child only connects, registers
        // and leaves with _exit.
        match unsafe { fork() }.step(|| Step::ForkRegistrar)? {
            ForkResult::Child => {
                drop((leader_w, answer_r));
                let answer = child(machine, File::from(leader_r));
                if let Ok(mut line) = serde_json::to_vec(&answer) {
                    line.push(b'\n');
                    let _ = File::from(answer_w).write_all(&line);
                }
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

    /// Hands PID 1's pid and the host's side of its network (interface indexes) to the
    /// child; its answer: registered, or the step that failed.
    pub fn register(mut self, leader: Pid, interfaces: &[u32]) -> Result<(), StepFailure> {
        if let Some(mut pipe) = self.leader.take() {
            let mut line = leader.as_raw().to_string();
            for index in interfaces {
                line.push_str(&format!(" {index}"));
            }
            line.push('\n');
            pipe.write_all(line.as_bytes()).step(|| Step::ReadLeader)?;
        }
        let mut answer = String::new();
        let _ = self.answer.read_to_string(&mut answer);
        match serde_json::from_str::<FromRegistrar>(&answer) {
            Ok(FromRegistrar::Registered) => Ok(()),
            Ok(FromRegistrar::Failed(failure)) => Err(failure),
            Err(_) if answer.is_empty() => Err(StepFailure::other(
                Step::ConnectBus,
                "the registering process ended without a word",
            )),
            Err(e) => Err(StepFailure::other(
                Step::ConnectBus,
                format!("the registering process answered `{}`: {e}", answer.trim()),
            )),
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

/// In the child: connect, wait for the leader, register.
///
/// The pid is read up to its newline, not to the end of the pipe: the machine's processes
/// are forked later and hold copies of the pipe's other end.
fn child(machine: &Machined, leader: File) -> FromRegistrar {
    let connected = Machines::connect();
    let mut text = String::new();
    if let Err(e) = BufReader::new(leader).read_line(&mut text) {
        return FromRegistrar::Failed(StepFailure::io(Step::ReadLeader, &e));
    }
    let numbers: Option<Vec<u32>> = text
        .strip_suffix('\n')
        .map(|line| line.split(' ').map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let Some((pid, interfaces)) = numbers.as_ref().and_then(|n| n.split_first()) else {
        return FromRegistrar::Failed(StepFailure::other(
            Step::ReadLeader,
            format!("bad leader pid `{}`", text.trim()),
        ));
    };
    let failed = |step: Step, e: SystemdError| {
        FromRegistrar::Failed(match e.errno() {
            Some(errno) if e.from_socket() => StepFailure {
                step,
                errno: Some(errno),
                message: e.detail(),
            },
            Some(errno) => StepFailure::errno(step, errno, e.detail()),
            None => StepFailure::other(step, e.detail()),
        })
    };
    let machines = match connected {
        Ok(machines) => machines,
        Err(e) => return failed(Step::ConnectBus, e),
    };
    match machines.register(machine, *pid, interfaces) {
        Ok(()) => FromRegistrar::Registered,
        Err(e) => failed(
            Step::Register {
                machine: machine.name.to_string(),
            },
            e,
        ),
    }
}
