//! Running a command inside a running machine (`mm exec`, `mm shell`, `mm oci exec`):
//! join its cgroup and namespaces, take its root, fork, and run the command locked down
//! as PID 1's programs are. The calling process must be single-threaded (it joins a user
//! namespace).
//!
//! `mm oci exec` gives an [`OciProcess`]: exactly its command, environment, ids,
//! directory, limits and lock-down (the container's plan with the caller's changes,
//! checked as config.json's process is), none of the caller's; its streams as they are,
//! relayed, or a terminal whose master goes to a console socket; and with `detach`, the
//! command is left running, re-parented to the caller's subreaper when mm exits.

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
    /// `mm oci exec`: the process exactly (then `argv`, `user` and `login` are unused).
    pub oci: Option<OciProcess>,
}

/// An OCI process to run in a container (`mm oci exec`).
pub struct OciProcess {
    /// Its command, environment, `UID:GID` and working directory.
    pub exec: crate::plan::Exec,
    /// Its supplementary groups, exactly.
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
    /// Set on mm itself before it joins the container (with its privilege, as the
    /// supervisor sets PID 1's): the command inherits them.
    pub rlimits: Vec<crate::plan::Rlimit>,
    /// Set on mm itself as the rlimits are.
    pub oom_score_adj: Option<i32>,
    pub security: crate::plan::Security,
    /// The container's compiled seccomp program (its launch's), for `security.seccomp`.
    pub seccomp: Option<super::seccomp::Program>,
    pub streams: OciStreams,
    /// Leave it running: [`Outcome::Detached`] at once.
    pub detach: bool,
    /// Descriptors 3 to 3+N-1 of the caller's reach the command (runc's `--preserve-fds`).
    pub preserve_fds: u32,
    /// Where the command's host pid goes (`--pid-file`): the directory, opened before mm
    /// entered the container, and the file's name in it (written atomically).
    pub pid_file: Option<(OwnedFd, String)>,
}

/// The standard streams of an OCI process.
pub enum OciStreams {
    /// The caller's, as they are (none is a terminal: that is checked).
    Inherit,
    /// Relayed as `mm exec`'s are; `terminal`: on a pseudo-terminal of the container's.
    Relay { terminal: bool },
    /// A new pseudo-terminal of the container's devpts, with this window size; its master
    /// goes over the connected console socket, and no copy stays with mm.
    ConsoleSocket {
        socket: OwnedFd,
        size: Option<(u16, u16)>,
    },
}

/// How the command ended, or that it was left running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its exit status (128 + the signal that killed it).
    Exited(i32),
    /// Left running (`detach`): its pid on the host.
    Detached(i32),
}

impl Outcome {
    /// The status to exit with: the command's, or 0 for one left running.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Detached(_) => 0,
        }
    }
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

/// Runs the command in the machine and returns its exit status (or, detached, its pid).
pub fn run(name: &str, paths: &Paths, command: &Command<'_>) -> Result<Outcome, RuntimeError> {
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
        Ok(Outcome::Exited(code)) if stopped_under(code) => {
            eprintln!("mm: machine {name} stopped while the command ran");
            Ok(Outcome::Exited(code))
        }
        Ok(outcome) => Ok(outcome),
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

fn enter(leader: i32, launch: &Launch, command: &Command<'_>) -> Result<Outcome, StepFailure> {
    let proc = format!("/proc/{leader}");
    // With mm's own privilege, before it joins the container's user namespace.
    let pid = std::process::id() as i32;
    for limit in command.oci.iter().flat_map(|oci| &oci.rlimits) {
        security::set_rlimit(pid, limit)?;
    }
    if let Some(adj) = command.oci.as_ref().and_then(|oci| oci.oom_score_adj) {
        security::set_oom_score_adj(pid, adj)?;
    }
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
    // The namespaces PID 1 joined (a pod's) are their creator's, not the container's user
    // namespace's: joined first, with mm's own privilege, as the spawner joined them.
    let joined = |name: &str| {
        let kind = match name {
            "net" => crate::plan::Namespace::Net,
            "ipc" => crate::plan::Namespace::Ipc,
            "uts" => crate::plan::Namespace::Uts,
            "pid" => crate::plan::Namespace::Pid,
            _ => return false,
        };
        launch.plan.joins(kind)
    };
    joins.sort_by_key(|(_, _, name)| !joined(name));
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
    let io = match command.oci.as_ref().map(|oci| &oci.streams) {
        None => Io::Relay(Streams::open(interactive).step(|| Step::OpenStreams)?),
        Some(OciStreams::Relay { terminal }) => {
            Io::Relay(Streams::open(*terminal).step(|| Step::OpenStreams)?)
        }
        Some(OciStreams::Inherit) => Io::Inherit,
        Some(OciStreams::ConsoleSocket { socket, size }) => {
            // In the container's root: its devpts. The master leaves mm here.
            let terminal = super::terminal::open(*size).step(|| Step::OpenTerminal)?;
            super::terminal::send(socket.as_fd(), terminal.master.as_fd(), &terminal.name)
                .step(|| Step::OpenTerminal)?;
            Io::Terminal(terminal.slave)
        }
    };
    let keep = command.oci.as_ref().map_or(0, |oci| oci.preserve_fds);
    let detach = command.oci.as_ref().is_some_and(|oci| oci.detach);
    // Detached, the command's failure comes back on a pipe that its exec closes: mm
    // returns once the command runs (in the container's cgroup) or with why it does not.
    let executed = if detach {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| Step::MakePipe)?)
    } else {
        None
    };
    // SAFETY: single-threaded (see the module comment); the child sets itself up and execs.
    match unsafe { fork() }.step(|| Step::Fork { argv: vec![] })? {
        ForkResult::Child => {
            let failure = match super::cgroup::join(&cgroup_procs) {
                Err(e) => StepFailure::io(Step::EnterCgroup, &e),
                Ok(()) => match io.attach(keep) {
                    Ok(()) => match &command.oci {
                        Some(oci) => oci_in_machine(oci),
                        None => in_machine(launch, command, io.has_terminal(), start_in),
                    },
                    Err(e) => StepFailure::io(Step::AttachStreams, &e),
                },
            };
            match executed {
                Some((_, w)) => {
                    if let Ok(line) = serde_json::to_vec(&failure) {
                        let _ = std::io::Write::write_all(&mut File::from(w), &line);
                    }
                }
                None => eprintln!("mm: {}: {}", failure.step, failure.message),
            }
            // SAFETY: leaving a forked child without running exit handlers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            if let Some((r, w)) = executed {
                drop(w);
                let mut said = Vec::new();
                std::io::Read::read_to_end(&mut File::from(r), &mut said)
                    .step(|| Step::WaitCommand)?;
                if !said.is_empty() {
                    let _ = waitpid(child, None);
                    return Err(serde_json::from_slice(&said).unwrap_or_else(|_| {
                        StepFailure::other(Step::WaitCommand, String::from_utf8_lossy(&said))
                    }));
                }
            }
            if let Some((dir, name)) = command.oci.as_ref().and_then(|o| o.pid_file.as_ref())
                && let Err(e) = write_pid(dir.as_fd(), name, child.as_raw())
            {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                return Err(StepFailure::io(
                    Step::WritePidFile { name: name.clone() },
                    &e,
                ));
            }
            if detach {
                return Ok(Outcome::Detached(child.as_raw()));
            }
            if let Io::Relay(streams) = io {
                streams.relay(child).step(|| Step::Relay)?;
            } else {
                drop(io);
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(Outcome::Exited(code)),
                    Ok(WaitStatus::Signaled(_, signal, _)) => {
                        return Ok(Outcome::Exited(128 + signal as i32));
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e).step(|| Step::WaitCommand),
                }
            }
        }
    }
}

/// Writes `pid` to `name` in `dir`, atomically (a temporary file renamed over it): the
/// caller may read it as soon as it exists.
fn write_pid(dir: std::os::fd::BorrowedFd<'_>, name: &str, pid: i32) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let temp = format!(".{name}.{}", std::process::id());
    let fd = rustix::fs::openat(
        dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_bits_truncate(0o644),
    )?;
    let mut file = File::from(fd);
    std::io::Write::write_all(&mut file, pid.to_string().as_bytes())?;
    drop(file);
    rustix::fs::renameat(dir, temp.as_str(), dir, name)?;
    Ok(())
}

/// The command's standard streams, as made in the machine's root.
enum Io {
    Relay(Streams),
    Inherit,
    /// The slave of a terminal whose master went to a console socket.
    Terminal(OwnedFd),
}

impl Io {
    fn has_terminal(&self) -> bool {
        match self {
            Self::Relay(streams) => streams.has_terminal(),
            Self::Inherit => false,
            Self::Terminal(_) => true,
        }
    }

    /// In the forked child: a session of its own, its streams; descriptors 3 to 3+keep-1
    /// stay open, the rest of ours close on exec.
    fn attach(&self, keep: u32) -> std::io::Result<()> {
        match self {
            Self::Relay(streams) => streams.attach()?,
            Self::Inherit => {
                nix::unistd::setsid()?;
            }
            Self::Terminal(slave) => {
                nix::unistd::setsid()?;
                sys::controlling_terminal(slave.as_fd())?;
                sys::dup_onto_standard_streams(slave.as_fd())?;
            }
        }
        // Streams::attach marked everything from 3 up: the kept ones are cleared again.
        for fd in 3..3 + keep as i32 {
            // SAFETY: F_SETFD on a descriptor number; a closed one fails harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        }
        sys::close_on_exec_from(3 + keep)
    }
}

/// In the forked child, inside the container, an OCI process: returns only on failure.
fn oci_in_machine(oci: &OciProcess) -> StepFailure {
    let ready = (|| {
        let user = security::numeric_user(&oci.exec.user, &oci.groups)?;
        if let Some(mask) = oci.umask {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        }
        security::lock_down(&oci.security, oci.seccomp.as_ref())?;
        security::become_user(&user)?;
        security::raise_ambient(&oci.security)?;
        std::env::set_current_dir(&oci.exec.workdir).step(|| Step::Chdir {
            path: oci.exec.workdir.clone(),
        })?;
        security::load_late(&oci.security, oci.seccomp.as_ref())
    })();
    match ready {
        Ok(()) => exec::exec(&oci.exec.argv, &oci.exec.env),
        Err(failure) => failure,
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
