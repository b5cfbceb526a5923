//! Running a command inside a running machine (`mm exec`, `mm shell`): join its cgroup
//! and namespaces, take its root, fork, and run the command locked down as PID 1's
//! programs are. The calling process must be single-threaded (it joins a user namespace).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use rustix::thread::LinkNameSpaceType;

use super::caller::Caller;
use super::cgroup::MachineCgroup;
use super::launch::{Launch, Step, StepFailure, WithStep};
use super::state::{self, Paths};
use super::stdio::Streams;
use super::{RuntimeError, exec, security, sys};

/// What to run and how.
pub struct Command<'a> {
    pub argv: Vec<String>,
    /// `None`: the machine's keep-id user if it has one, else its own user.
    pub user: Option<&'a str>,
    /// A login shell on a new pseudo-terminal (`mm shell`): the user's shell from
    /// /etc/passwd runs with `-l`, or with `-c ARGV[0]` when `argv` is not empty.
    /// Otherwise the command gets a terminal only where ours are terminals (see
    /// `stdio.rs`).
    pub login: bool,
    /// The caller's terminal and locale variables and working directory.
    pub caller: Caller,
}

/// The namespaces to join, user first (it owns the others).
const NAMESPACES: [(&str, LinkNameSpaceType); 7] = [
    ("user", LinkNameSpaceType::User),
    ("mnt", LinkNameSpaceType::Mount),
    ("pid", LinkNameSpaceType::ProcessID),
    ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
    ("ipc", LinkNameSpaceType::InterProcessCommunication),
    ("net", LinkNameSpaceType::Network),
    ("cgroup", LinkNameSpaceType::ControlGroup),
];

/// Runs the command in the machine and returns its exit status.
pub fn run(name: &str, paths: &Paths, command: &Command<'_>) -> Result<i32, RuntimeError> {
    let (leader, launch) = state::running(paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e))?
        .ok_or_else(|| RuntimeError::NotRunning {
            name: name.to_owned(),
        })?;
    // Held by a pidfd from before mm enters: once in the machine's root, neither the host's
    // /proc nor the machine's runtime files are in reach to ask whether PID 1 still runs.
    let pidfd = rustix::process::Pid::from_raw(leader).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    let Some(pidfd) = pidfd else {
        return Err(RuntimeError::NotRunning {
            name: name.to_owned(),
        });
    };
    // A pidfd turns readable when its process has exited (a zombie, not yet reaped, too).
    let gone = || exited(&pidfd, None);
    // The end of a PID namespace kills its processes with SIGKILL while its PID 1 is still
    // exiting (it becomes a zombie only once they are gone): a command killed so waits
    // for PID 1 a moment before it is taken for a kill of its own.
    let stopped_under = |code: i32| {
        code == 128 + libc::SIGKILL && exited(&pidfd, Some(std::time::Duration::from_secs(2)))
            || code > 128 && gone()
    };
    match enter(leader, &launch, command) {
        // The machine stopped under the command: say so, beside the status it ended with.
        Ok(code) if stopped_under(code) => {
            eprintln!("mm: machine {name} stopped while the command ran");
            Ok(code)
        }
        Ok(code) => Ok(code),
        // Its namespaces went while mm joined them: PID 1 ended, or is ending (an exiting
        // process loses its namespaces before it becomes a zombie).
        Err(failure) if gone() || leaving(leader, &failure) => Err(RuntimeError::NotRunning {
            name: name.to_owned(),
        }),
        Err(failure) => Err(RuntimeError::Enter {
            name: name.to_owned(),
            failure,
        }),
    }
}

/// Whether `failure` is PID 1's namespaces or root vanishing under mm: they go only when
/// it exits.
fn leaving(leader: i32, failure: &StepFailure) -> bool {
    let proc = format!("/proc/{leader}/");
    matches!(&failure.step, Step::Open { path } if path.starts_with(&proc))
        && matches!(failure.errno, Some(libc::ENOENT | libc::ESRCH))
}

/// Whether the process of `pidfd` has exited, or does within `wait`.
fn exited(pidfd: &OwnedFd, wait: Option<std::time::Duration>) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let wait = wait.unwrap_or_default();
    let timeout = rustix::time::Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    poll(&mut fds, Some(&timeout)).is_ok_and(|n| n > 0)
}

fn enter(leader: i32, launch: &Launch, command: &Command<'_>) -> Result<i32, StepFailure> {
    let proc = format!("/proc/{leader}");
    let mut joins: Vec<(OwnedFd, LinkNameSpaceType, &str)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("{proc}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        // Joining a namespace one is already in is refused for user namespaces.
        if std::fs::read_link(&theirs).ok() == std::fs::read_link(&ours).ok() {
            continue;
        }
        let fd = File::open(&theirs).map(OwnedFd::from).step(|| Step::Open {
            path: theirs.clone().into(),
        })?;
        joins.push((fd, flag, name));
    }
    let root_path = std::path::PathBuf::from(format!("{proc}/root"));
    let root = File::open(&root_path).step(|| Step::Open { path: root_path })?;
    // Only the command joins the machine's cgroup, never mm itself: the supervisor kills
    // what is left in it when PID 1 ends, and mm must live to say that the machine stopped.
    let cgroup_procs = match MachineCgroup::from_plan(&launch.plan.cgroup) {
        Some(cgroup) => cgroup
            .open_procs()
            .map_err(|e| StepFailure::other(Step::EnterCgroup, e.to_string()))?,
        None => Vec::new(),
    };
    for (fd, flag, name) in &joins {
        sys::setns(fd.as_fd(), *flag).step(|| Step::JoinNamespace {
            name: (*name).to_owned(),
        })?;
        if *flag == LinkNameSpaceType::User {
            let zero = nix::unistd::Gid::from_raw(0);
            nix::unistd::setresgid(zero, zero, zero).step(|| Step::BecomeRootGid)?;
            let zero = nix::unistd::Uid::from_raw(0);
            nix::unistd::setresuid(zero, zero, zero).step(|| Step::BecomeRootUid)?;
        }
    }
    // Where the caller is, as the machine sees it (the plan's binds are host paths).
    let start_in = command.caller.inside_dir(&launch.plan.mounts);
    nix::unistd::fchdir(&root).step(|| Step::EnterRoot)?;
    nix::unistd::chroot(".").step(|| Step::EnterRoot)?;
    // Never the caller's terminal: a pty from the machine's own /dev/ptmx, or pipes.
    // `mm shell -c LINE` is a command: a terminal only where ours are terminals.
    let interactive = command.login && command.argv.is_empty();
    let streams = Streams::open(interactive).step(|| Step::OpenStreams)?;
    // SAFETY: single-threaded (see the module comment); the child sets itself up and execs.
    match unsafe { fork() }.step(|| Step::Fork { argv: vec![] })? {
        ForkResult::Child => {
            let failure = match super::cgroup::join(&cgroup_procs) {
                Err(e) => StepFailure::io(Step::EnterCgroup, &e),
                Ok(()) => match streams.attach() {
                    Ok(()) => in_machine(launch, command, streams.has_terminal(), start_in),
                    Err(e) => StepFailure::io(Step::AttachStreams, &e),
                },
            };
            eprintln!("mm: {}: {}", failure.step, failure.message);
            // SAFETY: leaving a forked child without running exit handlers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            streams.relay(child).step(|| Step::Relay)?;
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e).step(|| Step::WaitCommand),
                }
            }
        }
    }
}

/// In the forked child, inside the machine: returns only on failure.
fn in_machine(
    launch: &Launch,
    command: &Command<'_>,
    terminal: bool,
    start_in: Option<String>,
) -> StepFailure {
    let keep = launch.plan.keep_id.as_ref().map(|k| k.name.as_str());
    let own = if command.login { "root" } else { &launch.user };
    let spec = command.user.or(keep).unwrap_or(own);
    let user = match security::machine_user(spec) {
        Ok(user) => user,
        Err(failure) => return failure,
    };
    if let Err(failure) = security::lock_down(&launch.plan.security, launch.seccomp.as_ref()) {
        return failure;
    }
    if let Err(failure) = security::become_user(&user) {
        return failure;
    }
    let mut env = launch.env.clone();
    // The caller's terminal and locale, over the machine's, as a host shell passes them.
    let key = |kv: &String| kv.split('=').next().unwrap_or_default().to_owned();
    let theirs: Vec<String> = command.caller.env.iter().map(key).collect();
    env.retain(|kv| !theirs.contains(&key(kv)));
    env.extend(command.caller.env.iter().cloned());
    if terminal && !theirs.iter().any(|k| k == "TERM") {
        // A relayed terminal with no TERM of the caller's: what podman exec -t says.
        env.push("TERM=xterm-256color".to_owned());
    }
    let mut argv = command.argv.clone();
    let mut workdir = launch.workdir.as_str();
    let account = user.account.as_ref();
    let home = account.map_or("/", |a| a.home.as_str());
    let shell = account
        .map(|a| a.shell.as_str())
        .filter(|s| Path::new(s).exists())
        .unwrap_or("/bin/sh");
    // A login, or any command of the keep-id user, gets the user's variables.
    let as_keep_id = keep.is_some_and(|k| account.is_some_and(|a| a.name == k));
    if command.login || as_keep_id {
        env.retain(|kv| {
            !["HOME=", "SHELL=", "USER=", "LOGNAME="]
                .iter()
                .any(|k| kv.starts_with(k))
        });
        env.push(format!("HOME={home}"));
        env.push(format!("SHELL={shell}"));
        if let Some(a) = account {
            env.push(format!("USER={}", a.name));
            env.push(format!("LOGNAME={}", a.name));
        }
    }
    if command.login {
        argv = match command.argv.first() {
            Some(line) => vec![shell.to_owned(), "-c".to_owned(), line.clone()],
            None => vec![shell.to_owned(), "-l".to_owned()],
        };
        workdir = home;
    }
    if let Some(dir) = start_in {
        match std::env::set_current_dir(&dir) {
            Ok(()) => return exec_late(launch, &argv, &env),
            Err(e) => {
                eprintln!("mm: cannot start in {dir}, where you are ({e}); starting in {workdir}")
            }
        }
    }
    if let Err(e) = std::env::set_current_dir(workdir) {
        // A login without its home starts in `/`, as login(1) does, and says so.
        if !command.login || std::env::set_current_dir("/").is_err() {
            return StepFailure::io(
                Step::Chdir {
                    path: workdir.to_owned(),
                },
                &e,
            );
        }
        eprintln!("mm: the home directory {workdir} is not there ({e}); starting in /");
    }
    exec_late(launch, &argv, &env)
}

/// Executes the command, with the machine's profile loaded first when it is loaded late
/// (`no_new_privileges`), as PID 1 loads it.
fn exec_late(launch: &Launch, argv: &[String], env: &[String]) -> StepFailure {
    match security::load_late(&launch.plan.security, launch.seccomp.as_ref()) {
        Ok(()) => exec::exec(argv, env),
        Err(failure) => failure,
    }
}
