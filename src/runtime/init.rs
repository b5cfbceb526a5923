//! mm's init: PID 1 of a machine that does not boot its own. It starts the command as the
//! machine's user, forwards the signals it gets to it, reaps every orphan, and exits with
//! the command's status (128 + the signal when a signal ended it, as shells report it).

use std::fs::File;
use std::os::fd::AsFd;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::exec::exec;
use super::launch::{Launch, Report, Step, StepFailure, WithStep};
use super::security;

/// Never returns: exits with the command's status, or reports why it could not start it.
pub fn run(launch: &Launch, mut report: File) -> ! {
    match start(launch, &mut report) {
        Ok(command) => {
            // The report pipe closes when the command's exec succeeds (its copy is
            // close-on-exec): the supervisor reads that as "started".
            drop(report);
            supervise(command)
        }
        Err(failure) => {
            Report::Failed(failure).send(&mut report);
            exit(127)
        }
    }
}

fn start(launch: &Launch, report: &mut File) -> Result<Pid, StepFailure> {
    let user = security::machine_user(&launch.user)?;
    let all = SigSet::all();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old)).step(|| Step::BlockSignals)?;
    // SAFETY: single-threaded; the child only sets itself up and execs.
    match unsafe { fork() }.step(|| Step::Fork {
        argv: launch.argv.clone(),
    })? {
        ForkResult::Child => {
            let failure = command(launch, &user, &old);
            Report::Failed(failure).send(report);
            // SAFETY: leaving a forked child without running exit handlers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

fn command(launch: &Launch, user: &security::User, mask: &SigSet) -> StepFailure {
    // Its own session, with the console (if stdin is one) as its controlling terminal.
    if let Err(e) = nix::unistd::setsid() {
        return StepFailure::io(Step::StartSession, &e.into());
    }
    if nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
        && let Err(e) = super::sys::controlling_terminal(std::io::stdin().as_fd())
    {
        return StepFailure::io(Step::ControllingTerminal, &e);
    }
    if let Err(failure) = security::become_user(user) {
        return failure;
    }
    if let Err(e) = std::env::set_current_dir(&launch.workdir) {
        return StepFailure::io(
            Step::Chdir {
                path: launch.workdir.clone(),
            },
            &e,
        );
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None) {
        return StepFailure::io(Step::RestoreSignalMask, &e.into());
    }
    exec(&launch.argv, &launch.env)
}

fn supervise(command: Pid) -> ! {
    super::sys::set_name("mm-init");
    super::sys::release_clean_file_pages();
    let all = SigSet::all();
    loop {
        // By number: real-time signals (SIGRTMIN+3, …) have no nix `Signal`, and are
        // forwarded all the same.
        let mut signal: libc::c_int = 0;
        // SAFETY: a valid signal set and out pointer.
        if unsafe { libc::sigwait(all.as_ref(), &mut signal) } != 0 {
            continue;
        }
        if signal != libc::SIGCHLD {
            // SAFETY: kill with a pid and a signal number; the command may be gone.
            unsafe { libc::kill(command.as_raw(), signal) };
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => exit(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command => {
                    exit(128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: PID 1 ends the machine; the kernel kills whatever is left in it.
    unsafe { libc::_exit(code) }
}
