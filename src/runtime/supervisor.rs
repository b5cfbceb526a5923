//! The supervisor: one small process per machine (`mm __supervise`), which owns the
//! machine's lock, cgroup and mounts, starts its PID 1, relays its console, stops it on
//! request, and cleans up after it.
//!
//! It is a fresh process, started with the [`Launch`] on the descriptor `--launch-fd=N`
//! names, so that it is single-threaded (a multi-threaded process cannot enter a new user
//! namespace). Its PID 1 gets SIGKILL if the supervisor dies, which ends the whole machine
//! (its PID namespace).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};

use super::cgroup::MachineCgroup;
use super::child::{self, Inherited};
use super::launch::{Console, Launch, Report, Started, Step, StepFailure, WithStep};
use super::registrar::Registrar;
use super::state::{self, Paths, Recorded};
use super::{RuntimeError, network, rootfs, sys, userns};
use crate::plan::{IdMapping, Plan, Registration, Upper};
use crate::systemd::machined::Machines;
use crate::systemd::notify::notify;

/// What `mm stop` asks of a supervisor over its control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    Stop {
        timeout_secs: Option<u32>,
    },
    /// `mm oci start`: let PID 1, waiting set up (`waits_for_start`), execute its command.
    Start,
}

/// The supervisor's answer to a [`Request`], one JSON line.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// It sent the stop signal (or had already), and cleans up when PID 1 is gone.
    Stopping,
    /// PID 1 was let go on to execute its command.
    Started,
    /// A request it did not take, and why.
    Refused { why: String },
}

/// How a supervisor that executes itself again on a reboot hands its (locked) machine
/// lock to the new image: `--lock-fd=N`, so that no other mm command finds the machine
/// unlocked meanwhile and cleans it up.
pub use super::launch::LOCK_FD_ARG;

/// `--answer-fd=N`: a detached supervisor answers on descriptor N rather than on its
/// standard output, which stays its PID 1's (`mm oci create`: the container's streams are
/// the caller's).
pub const ANSWER_FD_ARG: &str = "--answer-fd=";

/// Where a detached supervisor tells its starter how the start went.
pub enum Answer {
    Stdout,
    Fd(File),
}

/// `mm __supervise [--detach] --launch-fd=N [--lock-fd=N] [--answer-fd=N]`: never returns.
pub fn main(
    detach: bool,
    launch_fd: Option<std::os::fd::RawFd>,
    lock_fd: Option<std::os::fd::RawFd>,
    answer_fd: Option<std::os::fd::RawFd>,
) -> ! {
    sys::set_name("mm-supervise");
    let launch: Result<Launch, String> = match launch_fd {
        // Only `mm start`/`mm run` start a supervisor; without the argument it has no launch.
        None => Err("no --launch-fd=N argument (mm start and mm run give it)".to_owned()),
        Some(fd) => {
            // SAFETY: descriptor `fd` is the launch, handed over by `mm start`/`mm run`
            // (machine::supervisor_command), and nothing else in this process owns it.
            let mut input = unsafe { File::from_raw_fd(fd) };
            let mut text = String::new();
            input
                .read_to_string(&mut text)
                .map_err(|e| format!("reading descriptor {fd}: {e}"))
                .and_then(|_| serde_json::from_str(&text).map_err(|e| e.to_string()))
        }
    };
    // SAFETY: descriptor `lock_fd` is the machine's lock, handed over by this supervisor's
    // previous image (`reexec`), and nothing else in this process owns it.
    let lock = lock_fd.map(|fd| unsafe { File::from_raw_fd(fd) });
    let answer = match answer_fd {
        // SAFETY: descriptor `fd` is the answer pipe `mm oci create` handed over, and
        // nothing else in this process owns it.
        Some(fd) => Answer::Fd(unsafe { File::from_raw_fd(fd) }),
        None => Answer::Stdout,
    };
    // Close-on-exec again: PID 1 must not hold it.
    if let Answer::Fd(file) = &answer
        && let Err(e) = nix::fcntl::fcntl(
            file,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
    {
        eprintln!("error: the supervisor cannot keep its answer pipe to itself: {e}");
        std::process::exit(crate::exit::ExitCode::System as i32);
    }
    // Close-on-exec again: no child of this supervisor may hold it.
    if let Some(lock) = &lock
        && let Err(e) = nix::fcntl::fcntl(
            lock,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
    {
        eprintln!("error: the supervisor cannot keep its lock to itself: {e}");
        std::process::exit(crate::exit::ExitCode::System as i32);
    }
    let code = match launch {
        Ok(launch) => match supervise(&launch, detach, lock, &answer) {
            Ok(code) => code,
            Err(e) => {
                let started = e.to_started();
                if detach {
                    tell(&answer, &started);
                } else {
                    eprintln!("error: {e}");
                }
                e.exit_code() as i32
            }
        },
        Err(e) => {
            eprintln!("error: the supervisor got no launch: {e}");
            70
        }
    };
    std::process::exit(code)
}

/// A detached supervisor answers `mm start` with one line on its standard output (or
/// the descriptor `--answer-fd` named).
fn tell(answer: &Answer, started: &Started) {
    // The caller may be gone (killed, or its pipe closed): the machine goes on without it.
    if let Ok(line) = serde_json::to_string(started) {
        match answer {
            Answer::Stdout => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
            }
            Answer::Fd(file) => {
                let mut file: &File = file;
                let _ = writeln!(file, "{line}");
            }
        }
    }
}

/// A machine that is up: its PID 1 and what holds it together.
struct Machine<'l> {
    launch: &'l Launch,
    paths: Paths,
    leader: Pid,
    cgroup: Option<MachineCgroup>,
    /// Whether systemd-machined has it, to be unregistered when it ends.
    registered: bool,
    /// Held while the machine runs (its forwarded host ports).
    _network: network::Holding,
    /// Write end of PID 1's wait for `mm oci start` (`waits_for_start`), until it is let go.
    barrier: std::cell::RefCell<Option<File>>,
    /// A re-parented PID 1, readable once it has ended.
    pidfd: Option<OwnedFd>,
}

fn supervise(
    launch: &Launch,
    detach: bool,
    held: Option<File>,
    answer: &Answer,
) -> Result<i32, RuntimeError> {
    let plan = &launch.plan;
    let paths = Paths::new(&plan.machine.runtime_dir);
    let lock = take(&paths, plan, held)?;
    let cgroup = machine_cgroup(launch)?;
    let begun = match start(launch, cgroup.as_ref()) {
        Ok(begun) => begun,
        Err(failure) => {
            if let Some(cgroup) = cgroup {
                let _ = cgroup.kill_all();
                let _ = cgroup.remove();
            }
            unmount_and_remove(plan);
            network::release(plan);
            return Err(RuntimeError::Step(failure));
        }
    };
    let leader = begun.leader;
    let console = begun.console;
    let (registered, registration) = register(plan, leader, begun.registrar, &begun.interfaces);
    let notices: Vec<String> = registration
        .into_iter()
        .chain(begun.network.notice.clone())
        .collect();
    let notice = (!notices.is_empty()).then(|| notices.join("\nmm: "));
    let machine = Machine {
        launch,
        paths,
        leader,
        cgroup,
        registered,
        _network: begun.network,
        barrier: std::cell::RefCell::new(begun.barrier),
        pidfd: begun.pidfd,
    };
    // Without its signals and its socket nothing could stop the machine, and without its
    // log a started machine's output would be lost: either is a failed start.
    let (control, log) = match Control::open(&machine.paths)
        .and_then(|control| Ok((control, console_log(&machine.paths, &console, detach)?)))
    {
        Ok(ready) => ready,
        Err(e) => {
            let _ = kill(machine.leader, Signal::SIGKILL);
            let _ = waitpid(machine.leader, None);
            finish(machine, Some(128 + Signal::SIGKILL as i32))?;
            return Err(e);
        }
    };
    record_running(&machine)?;
    announce(&machine, notice, detach, answer);
    match run_loop(
        &machine,
        &control,
        console.map(|master| (master, log)),
        detach,
    ) {
        Ended::Exited(code) => finish(machine, Some(code)).map(|_| code),
        Ended::Gone => finish(machine, None).map(|_| 0),
        Ended::Rebooted => restart(machine, control, detach, &lock),
    }
}

/// How PID 1 ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It exited (or a signal ended it, or a booted init powered off): the status.
    Exited(i32),
    /// A booted init rebooted (reboot(2) ended the PID namespace with SIGHUP), and no stop
    /// was asked for: the machine starts again.
    Rebooted,
    /// A re-parented PID 1 ended; its parent has its exit status.
    Gone,
}

/// A booted init rebooted: takes the machine down as at its end (its processes, cgroup,
/// mounts, network and registration go), keeps the record `running`, and executes the
/// supervisor again in place with the same launch (the same process, so the same
/// `MainPID` for a unit), which starts the machine afresh: a new PID 1 on the same
/// writable layer, ids and definition, registered again. systemd-nspawn exits 133
/// instead and lets its unit restart it. Returns only if that cannot be done, with the
/// machine stopped.
fn restart(
    machine: Machine<'_>,
    control: Control,
    detach: bool,
    lock: &File,
) -> Result<i32, RuntimeError> {
    let launch = machine.launch;
    let paths = machine.paths.clone();
    let _ = notify(&format!(
        "RELOADING=1\nSTATUS={} reboots",
        launch.plan.machine.name
    ));
    if !detach {
        eprintln!("mm: {} reboots", launch.plan.machine.name);
    }
    tear_down(machine)?;
    // The new image opens its own: the control socket is made again, the signals that
    // arrive meanwhile wait, blocked (exec keeps the mask).
    drop(control);
    let e = reexec(launch, detach, lock);
    let path = Path::new("mm __supervise");
    record_stopped(&paths, launch, Some(0))?;
    Err(RuntimeError::io(path, e))
}

/// Executes `mm __supervise` again in this process with `launch` on a fresh descriptor;
/// returns only on failure. The machine's lock stays held: its descriptor goes to the new
/// image ([`LOCK_FD_ARG`]).
fn reexec(launch: &Launch, detach: bool, lock: &File) -> std::io::Error {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut file = match tempfile::tempfile() {
        Ok(file) => file,
        Err(e) => return e,
    };
    let written = serde_json::to_vec(launch)
        .map_err(std::io::Error::from)
        .and_then(|json| file.write_all(&json))
        .and_then(|()| std::io::Seek::rewind(&mut file));
    if let Err(e) = written {
        return e;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let fd = file.as_raw_fd();
    for keep in [fd, lock.as_raw_fd()] {
        // SAFETY: only clears close-on-exec on the launch file above and the lock, both
        // meant for the new image.
        if unsafe { libc::fcntl(keep, libc::F_SETFD, 0) } < 0 {
            return std::io::Error::last_os_error();
        }
    }
    let mut command = std::process::Command::new(exe);
    command.arg("__supervise");
    if detach {
        command.arg("--detach");
    }
    command.arg(format!("--launch-fd={fd}"));
    command.arg(format!("{LOCK_FD_ARG}{}", lock.as_raw_fd()));
    command.exec()
}

/// Takes the machine's lock (it is not running elsewhere), or keeps the one `held` from
/// this supervisor's image before a reboot, cleans up after a supervisor that was killed,
/// and makes this one the reaper of the machine's orphans.
fn take(paths: &Paths, plan: &Plan, held: Option<File>) -> Result<std::fs::File, RuntimeError> {
    // Private: the machine's root is mounted below it (in the supervisor's namespace).
    crate::state::private_dir(&paths.dir).map_err(|e| RuntimeError::io(&paths.dir, e))?;
    let taken = match held {
        Some(held) => Ok(held),
        None => crate::state::lock(&paths.lock(), false),
    };
    let lock = match taken {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(RuntimeError::AlreadyRunning {
                name: plan.machine.name.to_string(),
            });
        }
        Err(e) => return Err(RuntimeError::io(&paths.lock(), e)),
    };
    clean_stale(paths, plan);
    crate::state::remove_stale_temporaries(&paths.dir)
        .map_err(|e| RuntimeError::io(&paths.dir, e))?;
    sys::child_subreaper().map_err(|e| RuntimeError::io(Path::new("prctl"), e))?;
    Ok(lock)
}

/// The machine's cgroup, delegated to its root when it boots an init.
fn machine_cgroup(launch: &Launch) -> Result<Option<MachineCgroup>, RuntimeError> {
    let plan = &launch.plan;
    if launch.unit.is_some() {
        leave_unit_root(&plan.cgroup)?;
    }
    let cgroup = MachineCgroup::create(&plan.cgroup)?;
    if let (Some(cgroup), true, IdMapping::Map { entries }) = (&cgroup, launch.boot, &plan.ids.uid)
        && let Some(root) = entries.first()
    {
        cgroup.delegate(root.outside)?;
    }
    Ok(cgroup)
}

/// The console's log, for a detached machine with a console.
fn console_log(
    paths: &Paths,
    console: &Option<OwnedFd>,
    detach: bool,
) -> Result<Option<File>, RuntimeError> {
    if console.is_none() || !detach {
        return Ok(None);
    }
    let path = paths.console_log();
    File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map(Some)
        .map_err(|e| RuntimeError::io(&path, e))
}

fn record_running(machine: &Machine<'_>) -> Result<(), RuntimeError> {
    let launch = machine.launch;
    let recorded = Recorded::Running {
        supervisor: std::process::id(),
        leader: machine.leader.as_raw(),
        started: state::now(),
        plan_hash: launch.plan.hash(),
        launch: Box::new(launch.clone()),
        registered: machine.registered,
    };
    state::write(&machine.paths, &recorded).map_err(|e| RuntimeError::io(&machine.paths.state(), e))
}

/// Tells systemd, and `mm start` or the user, that the machine runs.
fn announce(machine: &Machine<'_>, notice: Option<String>, detach: bool, answer: &Answer) {
    let leader = machine.leader;
    let _ = notify(&format!(
        "READY=1\nSTATUS=PID 1 of {} runs as {leader}",
        machine.launch.plan.machine.name
    ));
    if detach {
        tell(
            answer,
            &Started::Running {
                leader: leader.as_raw(),
                supervisor: std::process::id(),
                notice,
            },
        );
        detach_stdio();
    } else if let Some(notice) = notice {
        eprintln!("mm: {notice}");
    }
}

/// The registrar forked at start, or why it could not be.
type Spawned = Result<Registrar, StepFailure>;

/// Registers the machine with systemd-machined when the plan says to (through the
/// registrar forked at start). Returns whether it is registered, and otherwise the one
/// line that tells the user why not.
fn register(
    plan: &Plan,
    leader: Pid,
    registrar: Option<Spawned>,
    interfaces: &[u32],
) -> (bool, Option<String>) {
    let name = &plan.machine.name;
    let why = match (&plan.registration, registrar) {
        (Registration::Skip { why }, _) => why.clone(),
        (Registration::Machined(_), Some(Ok(registrar))) => {
            match registrar.register(leader, interfaces) {
                Ok(()) => return (true, None),
                Err(failure) => failure.to_string(),
            }
        }
        (Registration::Machined(_), Some(Err(failure))) => failure.to_string(),
        (Registration::Machined(_), None) => "the registering process was not started".into(),
    };
    (
        false,
        Some(format!(
            "{name} is not registered with systemd-machined: {why}"
        )),
    )
}

/// In a unit (`--keep-unit`) on cgroup v2, the machine's `payload` cgroup can get
/// controllers only if the unit's own cgroup holds no process: the supervisor moves to a
/// `supervisor` sibling first, as systemd-nspawn does.
fn leave_unit_root(cgroup: &crate::plan::Cgroup) -> Result<(), RuntimeError> {
    let crate::plan::Cgroup::Create {
        mode: crate::host::CgroupMode::V2,
        dirs,
        ..
    } = cgroup
    else {
        return Ok(());
    };
    let Some(unit) = dirs.first().and_then(|d| d.parent()) else {
        return Ok(());
    };
    let dir = unit.join("supervisor");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()))
        .map_err(|e| RuntimeError::io(&dir, e))
}

/// What [`start`] gives the supervisor: PID 1, the console's master side, the registrar,
/// and the machine's network (the host ports held, the host's side of its links).
struct Begun {
    leader: Pid,
    console: Option<OwnedFd>,
    registrar: Option<Spawned>,
    network: network::Holding,
    interfaces: Vec<u32>,
    barrier: Option<File>,
    /// A re-parented PID 1, watched (it is not this supervisor's child).
    pidfd: Option<OwnedFd>,
}

/// Starts PID 1 and, while it waits in its namespaces, sets up the machine's network.
fn start(launch: &Launch, cgroup: Option<&MachineCgroup>) -> Result<Begun, StepFailure> {
    let plan = &launch.plan;
    // Connecting to the bus takes a while: it happens meanwhile, in a child forked before
    // any pipe of the launch exists (it must hold none of them open).
    let registrar = match &plan.registration {
        Registration::Machined(machine) => Some(Registrar::spawn(machine)),
        Registration::Skip { .. } => None,
    };
    network::enter(plan)?;
    let mut holding = network::before(plan)?;
    let userns = userns::create(&plan.ids)?;
    prepare_root(plan, &userns)?;
    let (console, master) = open_console(launch)?;
    let (go_r, go_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let (barrier_r, barrier_w) = if plan.process.waits_for_start {
        let (r, w) = pipe()?;
        (Some(r), Some(File::from(w)))
    } else {
        (None, None)
    };
    let console_socket = match (&plan.process.terminal, &launch.console_socket) {
        (Some(_), Some(path)) => Some(
            super::terminal::connect(path)
                .step(|| Step::ConnectConsoleSocket { path: path.clone() })?,
        ),
        (Some(_), None) => {
            return Err(StepFailure::other(
                Step::ConnectConsoleSocket {
                    path: std::path::PathBuf::new(),
                },
                "the process has a terminal, and no console socket was given",
            ));
        }
        (None, _) => None,
    };
    let inherited = Inherited {
        go: go_r,
        report: File::from(report_w),
        userns,
        console,
        barrier: barrier_r,
        host_fs: Vec::new(),
        console_socket,
    };
    // Re-parented: the spawner, and so PID 1 (its CLONE_PARENT clone), are the children
    // of the supervisor's parent.
    let forked = if plan.process.reparented {
        // SAFETY: the supervisor is single-threaded.
        unsafe { sys::clone_fork(libc::CLONE_PARENT as libc::c_ulong) }.map(|pid| match pid {
            0 => ForkResult::Child,
            pid => ForkResult::Parent {
                child: Pid::from_raw(pid),
            },
        })
    } else {
        // SAFETY: the supervisor is single-threaded.
        unsafe { fork() }.map_err(std::io::Error::from)
    };
    let spawner = match forked.step(|| Step::ForkSpawner)? {
        ForkResult::Child => {
            drop((go_w, report_r, master, barrier_w));
            child::spawner(launch, inherited)
        }
        ForkResult::Parent { child } => child,
    };
    drop(inherited);
    let mut go_w = File::from(go_w);
    let went = go(spawner, cgroup, &mut go_w);
    let mut reports = Reports::new(File::from(report_r), None);
    let mut interfaces = Vec::new();
    match went {
        // The spawner, still waiting for its go-ahead, reads the end of the pipe and leaves.
        Err(failure) => {
            drop(go_w);
            reports.fail(failure);
            let _ = waitpid(spawner, None);
        }
        Ok(()) => {
            reports.until_leader_of(spawner);
            let _ = waitpid(spawner, None);
            // PID 1's limits, set with this supervisor's privilege while PID 1 cannot have
            // executed yet (plans with limits wait for `mm oci start`).
            if let (Some(leader), None) = (reports.leader, &reports.failure) {
                for limit in &plan.process.rlimits {
                    if let Err(failure) = super::security::set_rlimit(leader.as_raw(), limit) {
                        reports.fail(failure);
                        break;
                    }
                }
                if let Some(adj) = plan.process.oom_score_adj
                    && let Err(failure) = super::security::set_oom_score_adj(leader.as_raw(), adj)
                {
                    reports.fail(failure);
                }
            }
            if let (Some(leader), None) = (reports.leader, &reports.failure)
                && let Some(hooks) = &plan.process.hooks
                && !hooks.create_runtime.is_empty()
            {
                let ran = reports.until_root_ready().and_then(|()| {
                    create_runtime_hooks(hooks, leader)?;
                    go_w.write_all(b"h").step(|| Step::WaitRuntimeHooks)
                });
                if let Err(failure) = ran {
                    reports.fail(failure);
                }
            }
            if let (Some(leader), None) = (reports.leader, &reports.failure) {
                let attached = network::attach(plan, leader, &mut holding).and_then(|attached| {
                    if network::pid1_waits(plan) {
                        go_w.write_all(b"n").step(|| Step::WaitNetwork)?;
                    }
                    Ok(attached)
                });
                match attached {
                    Ok(attached) => interfaces = attached,
                    Err(failure) => reports.fail(failure),
                }
            }
            // PID 1, if it still waits, reads the end of the pipe: the supervisor gave up.
            drop(go_w);
        }
    }
    let leader = reports.rest()?;
    let pidfd = if plan.process.reparented {
        match rustix::process::Pid::from_raw(leader.as_raw())
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                    .map_err(std::io::Error::from)
            }) {
            Ok(fd) => Some(fd),
            Err(e) => {
                let _ = kill(leader, Signal::SIGKILL);
                return Err(StepFailure::io(Step::WatchPid1, &e));
            }
        }
    } else {
        None
    };
    Ok(Begun {
        pidfd,
        leader,
        console: master,
        registrar,
        network: holding,
        interfaces,
        barrier: barrier_w,
    })
}

/// An OCI bundle's `prestart` and `createRuntime` hooks, in the runtime's namespaces (the
/// supervisor's, its caller's), while PID 1 (`leader`) waits before pivot_root: the
/// container's mounts are made under the bundle's root path, seen through `/proc/PID/`.
fn create_runtime_hooks(
    hooks: &crate::plan::ContainerHooks,
    leader: Pid,
) -> Result<(), StepFailure> {
    let state = super::hooks::container_state(&hooks.state, "creating", leader.as_raw());
    super::hooks::run_as_step(&hooks.create_runtime, &state, "createRuntime")
}

fn pipe() -> Result<(OwnedFd, OwnedFd), StepFailure> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| Step::MakePipe)
}

/// The supervisor's own mounts of the image's layers (id-mapped through the machine's
/// user namespace), and a check that a persistent writable layer is there.
fn prepare_root(plan: &Plan, userns: &OwnedFd) -> Result<(), StepFailure> {
    if plan.root.idmapped_lowers {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .step(|| Step::PrivateMountNamespace)?;
        let base = match &plan.ids.uid {
            IdMapping::Map { entries } => entries.first().map_or(0, |e| e.outside),
            IdMapping::Allocate { .. } => 0,
        };
        rootfs::mount_as_root(&mut rootfs::Kernel, plan, userns.as_fd(), base)?;
    }
    if let Upper::Persistent { upper, .. } = &plan.root.upper
        && !upper.exists()
    {
        return Err(StepFailure::other(
            Step::FindUpper {
                path: upper.clone(),
            },
            "it is missing",
        ));
    }
    Ok(())
}

/// The machine's console: its slave side (with its path) for the machine, its master side
/// for the supervisor to relay. Nothing with a pipe console.
type Consoles = (Option<(OwnedFd, std::path::PathBuf)>, Option<OwnedFd>);

fn open_console(launch: &Launch) -> Result<Consoles, StepFailure> {
    if launch.console == Console::Pipe {
        return Ok((None, None));
    }
    let stdin = std::io::stdin();
    let like = nix::unistd::isatty(stdin.as_fd())
        .unwrap_or(false)
        .then(|| stdin.as_fd());
    let pty = super::pty::open(like).step(|| Step::OpenConsole)?;
    let path = nix::unistd::ttyname(&pty.slave).step(|| Step::NameConsole)?;
    // The machine's root must be able to open its console.
    if let IdMapping::Map { entries } = &launch.plan.ids.uid
        && let Some(root) = entries.first()
        && matches!(
            launch.plan.ids.writer,
            crate::plan::MapWriter::Direct | crate::plan::MapWriter::Joined { .. }
        )
        && nix::unistd::geteuid().is_root()
    {
        let id = Some(root.outside);
        nix::unistd::fchown(&pty.slave, id.map(Into::into), id.map(Into::into))
            .step(|| Step::ChownConsole { path: path.clone() })?;
    }
    Ok((Some((pty.slave, path)), Some(pty.master)))
}

/// Puts the spawner in the machine's cgroup and lets it go on.
fn go(spawner: Pid, cgroup: Option<&MachineCgroup>, go_w: &mut File) -> Result<(), StepFailure> {
    if let Some(cgroup) = cgroup {
        cgroup
            .add(spawner.as_raw())
            .map_err(|e| StepFailure::other(Step::JoinCgroup, e.to_string()))?;
    }
    go_w.write_all(b"g").step(|| Step::StartSpawner)
}

/// The machine's reports: PID 1's pid (from the spawner), then nothing until PID 1 execs,
/// or the first failure (the supervisor's own side's, if it failed first).
struct Reports {
    reader: BufReader<File>,
    leader: Option<Pid>,
    /// PID 1 waits before pivot_root ([`Report::RootReady`]).
    root_ready: bool,
    failure: Option<StepFailure>,
}

impl Reports {
    fn new(from: File, failure: Option<StepFailure>) -> Self {
        Self {
            reader: BufReader::new(from),
            leader: None,
            root_ready: false,
            failure,
        }
    }

    fn fail(&mut self, failure: StepFailure) {
        self.failure.get_or_insert(failure);
    }

    /// Reads until PID 1's pid is known, or to the end, or until `spawner` has ended
    /// without reporting it. The pipe alone would not end then: PID 1, the spawner's
    /// clone, holds it open while it waits for its go-ahead (a spawner killed between
    /// its clone and its report left both waiting for ever).
    fn until_leader_of(&mut self, spawner: Pid) {
        let pidfd = rustix::process::Pid::from_raw(spawner.as_raw())
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()));
        let pidfd = match pidfd {
            Ok(pidfd) => pidfd,
            Err(e) => {
                let step = Step::StartPid1;
                return self.fail(StepFailure::errno(step, e.raw_os_error(), "pidfd_open"));
            }
        };
        let mut spawner_ended = false;
        while self.leader.is_none() {
            if self.reader.buffer().is_empty() {
                let report = self.reader.get_ref().as_fd();
                let mut fds = [
                    PollFd::new(report, PollFlags::POLLIN),
                    PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                ];
                // Once the spawner has ended, what it wrote is in the pipe or never was.
                let wait = if spawner_ended {
                    PollTimeout::ZERO
                } else {
                    PollTimeout::NONE
                };
                match poll(&mut fds, wait) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        return self.fail(StepFailure::errno(Step::ReadReport, e as i32, "poll"));
                    }
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                if !ready(&fds[0]) {
                    if spawner_ended {
                        return self.fail(StepFailure::other(
                            Step::StartPid1,
                            "the spawner ended before it reported PID 1 (was it killed?)",
                        ));
                    }
                    spawner_ended = ready(&fds[1]);
                    continue;
                }
            }
            if !self.next() {
                return;
            }
        }
    }

    /// Reads until PID 1 says it waits before pivot_root for the `createRuntime` hooks;
    /// its failure, or the end, is a failure.
    fn until_root_ready(&mut self) -> Result<(), StepFailure> {
        while !self.root_ready && self.failure.is_none() && self.next() {}
        match (&self.failure, self.root_ready) {
            (Some(failure), _) => Err(failure.clone()),
            (None, true) => Ok(()),
            (None, false) => Err(StepFailure::other(
                Step::WaitRuntimeHooks,
                "PID 1 ended before its mounts were made",
            )),
        }
    }

    /// Reads one report; false at the end.
    fn next(&mut self) -> bool {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        match serde_json::from_str::<Report>(line.trim_end()) {
            Ok(Report::Leader { pid }) => self.leader = Some(Pid::from_raw(pid)),
            // PID 1 waits for `mm oci start`: started, as far as the launch goes.
            Ok(Report::Waiting) => return false,
            Ok(Report::RootReady) => self.root_ready = true,
            Ok(Report::Failed(f)) => self.fail(f),
            Err(e) => self.fail(StepFailure::other(Step::ReadReport, e.to_string())),
        }
        true
    }

    /// Reads to the end: PID 1's pid, or the first failure. A PID 1 that started with a
    /// failure is killed.
    fn rest(mut self) -> Result<Pid, StepFailure> {
        while self.next() {}
        match (self.leader, self.failure) {
            (Some(leader), None) => Ok(leader),
            (leader, failure) => {
                if let Some(leader) = leader {
                    let _ = kill(leader, Signal::SIGKILL);
                    let _ = waitpid(leader, None);
                }
                Err(failure.unwrap_or_else(|| {
                    StepFailure::other(Step::StartPid1, "the spawner exited without a word")
                }))
            }
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = sys::dup_onto_standard_streams(null.as_fd());
    }
    let _ = nix::unistd::setsid();
}

/// What the supervisor is told to stop by: its signals (as a descriptor) and its socket.
struct Control {
    signals: SignalFd,
    listener: UnixListener,
}

impl Control {
    fn open(paths: &Paths) -> Result<Self, RuntimeError> {
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            set.add(s);
        }
        set.thread_block().step(|| Step::BlockSupervisorSignals)?;
        let signals = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .step(|| Step::OpenSignalfd)?;
        let path = paths.control();
        let control = |source| RuntimeError::Control {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(control(e)),
            _ => {}
        }
        let listener = super::socket::bind(&path).map_err(control)?;
        listener.set_nonblocking(true).map_err(control)?;
        Ok(Self { signals, listener })
    }

    /// Drains the signals and the socket's requests: the stop timeout asked for, if any.
    fn stop_requests(
        &self,
        plan: &Plan,
        barrier: &std::cell::RefCell<Option<File>>,
    ) -> Option<u32> {
        let mut stop_with: Option<u32> = None;
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo != Signal::SIGCHLD as u32 {
                stop_with.get_or_insert(plan.stop.timeout_secs);
            }
        }
        while let Ok((stream, _)) = self.listener.accept() {
            if let Some(timeout) = answer(&stream, plan, barrier) {
                stop_with = Some(timeout);
            }
        }
        stop_with
    }
}

/// Reads one request from `mm stop` and answers it; the stop timeout it asks for.
fn answer(
    stream: &UnixStream,
    plan: &Plan,
    barrier: &std::cell::RefCell<Option<File>>,
) -> Option<u32> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let (timeout, reply) = match serde_json::from_str(&line) {
        Ok(Request::Stop { timeout_secs }) => (
            Some(timeout_secs.unwrap_or(plan.stop.timeout_secs)),
            Reply::Stopping,
        ),
        Ok(Request::Start) => (None, let_go(barrier)),
        Err(e) => (
            None,
            Reply::Refused {
                why: format!("a request it does not understand ({e})"),
            },
        ),
    };
    // The asker may be gone: then nobody is left to tell.
    if let Ok(mut json) = serde_json::to_string(&reply) {
        json.push('\n');
        let _ = (&*stream).write_all(json.as_bytes());
    }
    timeout
}

/// `mm oci start`: one byte on PID 1's barrier, which it reads before it executes.
fn let_go(barrier: &std::cell::RefCell<Option<File>>) -> Reply {
    let Some(mut barrier) = barrier.borrow_mut().take() else {
        return Reply::Refused {
            why: "its process does not wait to be started (it was, or never waited)".to_owned(),
        };
    };
    match barrier.write_all(b"s") {
        Ok(()) => Reply::Started,
        Err(e) => Reply::Refused {
            why: format!("its process no longer waits ({e})"),
        },
    }
}

/// Waits for PID 1 to end, stopping it when asked; returns how it ended (a reboot asked
/// for while the machine stops is an end).
fn run_loop(
    machine: &Machine<'_>,
    control: &Control,
    console: Option<(OwnedFd, Option<File>)>,
    detach: bool,
) -> Ended {
    if console.is_some() && !detach && super::stdio::stdin_is_terminal() {
        eprintln!(
            "mm: the console of {}. {}",
            machine.launch.plan.machine.name,
            super::console::ESCAPE_HINT
        );
    }
    let mut relay = console.map(|(master, log)| super::console::Relay::new(master, detach, log));
    let mut deadline: Option<Instant> = None;
    let mut escaped = false;
    sys::release_clean_file_pages();
    loop {
        let ended = match &machine.pidfd {
            // Its exit status is its parent's; other children are still reaped here.
            Some(pidfd) => {
                let _ = reap(machine.leader, false);
                ended(pidfd).then_some(Ended::Gone)
            }
            None => reap(machine.leader, machine.launch.boot),
        };
        if let Some(ended) = ended {
            // What the machine wrote last is still in the console.
            if let Some(r) = &mut relay {
                r.pump();
            }
            return match ended {
                Ended::Rebooted if deadline.is_some() || escaped => Ended::Exited(0),
                ended => ended,
            };
        }
        let mut fds = vec![
            PollFd::new(control.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.listener.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(pidfd) = &machine.pidfd {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        if let Some(r) = &relay {
            r.poll_fds(&mut fds);
        }
        let _ = poll(&mut fds, poll_timeout(deadline));
        drop(fds);
        let stop_with = control.stop_requests(&machine.launch.plan, &machine.barrier);
        if let Some(r) = &mut relay {
            r.pump();
            if r.escaped() && !escaped {
                // As systemd-nspawn: the escape kills the machine.
                escaped = true;
                let _ = kill(machine.leader, Signal::SIGKILL);
            }
        }
        stop(machine, stop_with, &mut deadline);
    }
}

/// Until the deadline, at most a minute.
fn poll_timeout(deadline: Option<Instant>) -> PollTimeout {
    deadline.map_or(PollTimeout::NONE, |d| {
        let left = d.saturating_duration_since(Instant::now()).as_millis();
        PollTimeout::try_from(left.min(60_000) as i32).unwrap_or(PollTimeout::ZERO)
    })
}

/// Sends the stop signal when asked (once), and SIGKILL to the whole machine when the
/// stop timeout has passed.
fn stop(machine: &Machine<'_>, stop_with: Option<u32>, deadline: &mut Option<Instant>) {
    if let Some(timeout) = stop_with
        && deadline.is_none()
    {
        let _ = notify("STOPPING=1");
        // SAFETY: kill with a valid signal number.
        unsafe {
            libc::kill(
                machine.leader.as_raw(),
                machine.launch.plan.stop.signal.number(),
            )
        };
        *deadline = Some(Instant::now() + Duration::from_secs(u64::from(timeout)));
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        let _ = kill(machine.leader, Signal::SIGKILL);
        if let Some(cgroup) = &machine.cgroup {
            let _ = cgroup.kill_all();
        }
        *deadline = Some(Instant::now() + Duration::from_secs(3600));
    }
}

/// Whether the process behind `pidfd` has ended.
fn ended(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// How PID 1 ended, if it has; reaps every other child too. A booted init that powers
/// off, halts or reboots calls reboot(2), which in a PID namespace ends it with SIGINT
/// (power-off, halt: a clean shutdown, status 0, as systemd-nspawn reports it) or SIGHUP
/// (reboot: the machine starts again).
fn reap(leader: Pid, boot: bool) -> Option<Ended> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == leader => return Some(Ended::Exited(code)),
            Ok(WaitStatus::Signaled(pid, Signal::SIGINT, _)) if pid == leader && boot => {
                return Some(Ended::Exited(0));
            }
            Ok(WaitStatus::Signaled(pid, Signal::SIGHUP, _)) if pid == leader && boot => {
                return Some(Ended::Rebooted);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == leader => {
                return Some(Ended::Exited(128 + signal as i32));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// After PID 1 ended: kill stragglers, remove the cgroup and mounts, unregister, record
/// the status.
fn finish(machine: Machine<'_>, code: Option<i32>) -> Result<(), RuntimeError> {
    let launch = machine.launch;
    let paths = machine.paths.clone();
    tear_down(machine)?;
    record_stopped(&paths, launch, code)
}

/// Kills what is left of the machine, removes its cgroup, mounts and control socket,
/// releases its network and unregisters it.
fn tear_down(machine: Machine<'_>) -> Result<(), RuntimeError> {
    let _ = std::fs::remove_file(machine.paths.control());
    let launch = machine.launch;
    if let Some(cgroup) = machine.cgroup {
        let _ = cgroup.kill_all();
        cgroup.remove()?;
    }
    unmount_and_remove(&launch.plan);
    network::release(&launch.plan);
    if machine.registered {
        unregister(&launch.plan, machine.leader.as_raw());
    }
    Ok(())
}

fn record_stopped(paths: &Paths, launch: &Launch, code: Option<i32>) -> Result<(), RuntimeError> {
    let stopped = Recorded::Stopped {
        exit_status: code,
        stopped: state::now(),
        unit: launch.unit.clone(),
    };
    state::write(paths, &stopped).map_err(|e| RuntimeError::io(&paths.state(), e))
}

/// Removes the machine from systemd-machined, if it has it with this leader.
fn unregister(plan: &Plan, leader: i32) {
    let name = plan.machine.name.as_str();
    if let Err(e) = Machines::connect().and_then(|m| m.unregister(name, leader.unsigned_abs())) {
        eprintln!("mm: {e}");
    }
}

/// What a killed supervisor left behind: PID 1 died with it (PDEATHSIG), but its cgroup,
/// mount points and machined registration remain. Any later mm command that looks at the
/// machine calls this: it removes them and records the machine as stopped. Does nothing
/// while a supervisor holds the machine's lock.
pub fn reconcile(paths: &Paths) -> std::io::Result<()> {
    if !paths.lock().exists() {
        return Ok(());
    }
    let _lock = match crate::state::lock(&paths.lock(), false) {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
        Err(e) => return Err(e),
    };
    // A supervisor killed while it replaced state.json left its temporary file.
    crate::state::remove_stale_temporaries(&paths.dir)?;
    if let Some(Recorded::Running {
        launch,
        leader,
        registered,
        ..
    }) = state::read(paths)?
    {
        release(&launch.plan);
        if registered {
            unregister(&launch.plan, leader);
        }
        let stopped = Recorded::Stopped {
            exit_status: None,
            stopped: state::now(),
            unit: launch.unit.clone(),
        };
        state::write(paths, &stopped)?;
    }
    Ok(())
}

/// Takes down what the supervisor mounted in its own namespace and removes the mount
/// points. Nothing of it is visible on the host, where these are empty directories.
fn unmount_and_remove(plan: &Plan) {
    let runtime = &plan.machine.runtime_dir;
    let detach = nix::mount::MntFlags::MNT_DETACH;
    // An OCI bundle's root is bound onto itself in PID 1's namespace, never here: what is
    // mounted on its path here (an engine's rootfs) is not the supervisor's.
    if !matches!(plan.root.upper, Upper::InPlace { .. }) {
        let _ = nix::mount::umount2(&plan.root.mount_point, detach);
    }
    let _ = nix::mount::umount2(&runtime.join("layers"), detach);
    let _ = nix::mount::umount2(&runtime.join("volatile"), detach);
    let _ = nix::mount::umount2(&rootfs::stage_dir(plan), detach);
    // Never recursive: if an unmount failed, removing would reach into the machine's files.
    let _ = std::fs::remove_dir(runtime.join("root"));
    if let Ok(entries) = std::fs::read_dir(runtime.join("layers")) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    let _ = std::fs::remove_dir(runtime.join("layers"));
    let _ = std::fs::remove_dir(runtime.join("volatile"));
    let _ = std::fs::remove_dir(rootfs::stage_dir(plan));
}

/// A supervisor that was killed left its cgroup and mount points behind: remove them
/// (both the recorded plan's and this one's, which may differ).
///
/// This plan's cgroup and links are named host-wide after the machine alone, so a
/// machine of the same name under another state root (`MM_ROOT`) may hold them: what a
/// killed supervisor of this machine left has no process that lives on (PID 1 died with
/// it, and its PID namespace with PID 1), so a cgroup whose processes outlast a moment is
/// another's, and is left whole for [`MachineCgroup::create`] to refuse.
fn clean_stale(paths: &Paths, plan: &Plan) {
    if let Ok(Some(Recorded::Running { launch, .. })) = state::read(paths) {
        release(&launch.plan);
    }
    if MachineCgroup::from_plan(&plan.cgroup)
        .is_some_and(|cgroup| !cgroup.empties_within(Duration::from_secs(2)))
    {
        return;
    }
    release(plan);
}

/// Kills what is left in the plan's cgroup, removes it, and the mount points.
fn release(plan: &Plan) {
    if let Some(cgroup) = MachineCgroup::from_plan(&plan.cgroup) {
        let _ = cgroup.kill_all();
        let _ = cgroup.remove();
    }
    unmount_and_remove(plan);
    network::release(plan);
}
