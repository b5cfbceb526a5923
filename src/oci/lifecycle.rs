//! The runc-style lifecycle: each verb finds the container under the runtime's root,
//! asks its supervisor or signals its process, and records what changed.
//!
//! `create` compiles the bundle into a plan and hands it to a detached supervisor
//! (`mm __supervise`, as `mm start` does), whose PID 1 is the container's process: it
//! sets itself up, locks itself down and waits before it executes its command. The
//! supervisor answers on a pipe of its own (`--answer-fd`), since its standard streams
//! are the caller's, which the container's process gets. `start` asks the supervisor,
//! over its control socket, to let the process go on.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::state::{Container, Record, Status};
use super::{OciError, Options};
use crate::runtime::RuntimeError;
use crate::runtime::launch::{Console, Launch, Started};
use crate::runtime::supervisor::{ANSWER_FD_ARG, Reply, Request};

/// `create`: the container's process exists and waits for `start`. Returns its pid.
/// `log(level, message)` hears what the user may want to know (`debug`: whether the
/// seccomp profile was compiled or cached; `warning`: names it skipped).
pub fn create(
    options: &Options,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
    log: &dyn Fn(&str, &str),
) -> Result<i32, OciError> {
    let container = Container::new(&options.state_root, id)?;
    let host =
        crate::host::Host::probe_without_buses("not asked: mm does not register OCI containers");
    let (plan, spec) = super::plan_and_spec(bundle, id, &host, options)?;
    // Checked with the plan already; now that the host's nodes are the devices asked for.
    let devices = spec
        .linux
        .as_ref()
        .map(|l| l.devices.as_slice())
        .unwrap_or_default();
    super::devices::check_host(&super::devices::nodes(devices, &mut Vec::new())).map_err(
        |errors| OciError::Config {
            path: plan.machine.definition.clone(),
            errors,
        },
    )?;
    let console_socket = console_socket
        .map(|p| std::path::absolute(p).map_err(|e| OciError::io(p, e)))
        .transpose()?;
    match (&plan.process.terminal, &console_socket) {
        (Some(_), None) => {
            return Err(OciError::Usage(
                "process.terminal is true: the terminal's master goes to --console-socket, \
                 which is missing"
                    .to_owned(),
            ));
        }
        (None, Some(_)) => {
            return Err(OciError::Usage(
                "--console-socket is given but process.terminal is false: there is no \
                 terminal to send"
                    .to_owned(),
            ));
        }
        _ => {}
    }
    let annotations = spec.annotations;
    // Checked with the plan already.
    let hooks = super::hooks::hooks(spec.hooks.as_ref(), &mut Vec::new());
    let root = &options.state_root;
    crate::state::private_dir(root).map_err(|e| OciError::io(root, e))?;
    match std::fs::create_dir(&container.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(OciError::Exists {
                id: id.to_owned(),
                dir: container.dir,
            });
        }
        Err(e) => return Err(OciError::io(&container.dir, e)),
    }
    let bundle_dir = plan
        .machine
        .definition
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let launched = (|| {
        let mut launch = Launch::new(plan, Console::Pipe)?;
        launch.seccomp = seccomp_program(&launch.plan, log)?;
        launch.console_socket = console_socket;
        let pid = spawn(&launch, id)?;
        container.write(&Record {
            id: id.to_owned(),
            bundle: bundle_dir,
            pid,
            annotations,
            created: crate::runtime::state::now(),
            started: false,
            paused: false,
            hooks,
        })?;
        if let Some(file) = pid_file {
            crate::state::write_atomically(file, pid.to_string().as_bytes())
                .map_err(|e| OciError::io(file, e))?;
        }
        Ok(pid)
    })();
    if launched.is_err() {
        // What the supervisor made it removed itself; what is left is this directory.
        let _ = kill_and_wait(&container);
        let _ = remove(&container);
    }
    launched
}

/// The compiled program of the plan's seccomp profile, from the cache when it has it
/// (runtime/profile.rs); says which, and the names the profile had to skip.
fn seccomp_program(
    plan: &crate::plan::Plan,
    log: &dyn Fn(&str, &str),
) -> Result<Option<crate::runtime::seccomp::Program>, OciError> {
    use crate::runtime::profile::{self, Outcome};
    let crate::plan::Seccomp::Profile(p) = &plan.security.seccomp else {
        return Ok(None);
    };
    if !p.skipped.is_empty() {
        log(
            "warning",
            &format!(
                "seccomp: skipped {} syscall names this libseccomp does not know: {}",
                p.skipped.len(),
                p.skipped.join(", ")
            ),
        );
    }
    if !p.overridden.is_empty() {
        let each: Vec<String> = p.overridden.iter().map(ToString::to_string).collect();
        log(
            "debug",
            &format!(
                "seccomp: kept the first action of {} calls given another later: {}",
                p.overridden.len(),
                each.join("; ")
            ),
        );
    }
    let dir = crate::host::Dirs::current().cache.join("seccomp");
    let began = Instant::now();
    let (program, outcome) = profile::load_or_compile(p, &dir).map_err(|e| OciError::Seccomp {
        digest: p.digest.clone(),
        why: e.to_string(),
    })?;
    let n = format!(
        "{} instructions, {:.1} ms",
        program.instructions(),
        began.elapsed().as_secs_f64() * 1000.0
    );
    let stored = |stored: &Result<(), String>| match stored {
        Ok(()) => String::new(),
        Err(e) => format!("; not cached: {e}"),
    };
    let (level, message) = match &outcome {
        Outcome::Cached => ("debug", format!("seccomp: cached {} ({n})", p.digest)),
        Outcome::Compiled { stored: s } => (
            if s.is_ok() { "debug" } else { "warning" },
            format!("seccomp: compiled {} ({n}){}", p.digest, stored(s)),
        ),
        Outcome::Recompiled { damage, stored: s } => (
            "warning",
            format!(
                "seccomp: compiled {} again ({n}): its cache entry was damaged ({damage}){}",
                p.digest,
                stored(s)
            ),
        ),
    };
    log(level, &message);
    Ok(Some(program))
}

/// Starts the supervisor for `launch` and reads its answer: the container's pid.
fn spawn(launch: &Launch, id: &str) -> Result<i32, OciError> {
    let (mut command, file) = crate::runtime::launch::supervisor_command(launch, true, None)?;
    let (answer_r, answer_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| OciError::io(Path::new("a pipe"), e.into()))?;
    let fd = answer_w.as_raw_fd();
    command.arg(format!("{ANSWER_FD_ARG}{fd}"));
    // SAFETY: fcntl is async-signal-safe, and only clears close-on-exec on our own pipe.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| RuntimeError::io(Path::new("mm __supervise"), e))?;
    drop((file, answer_w));
    let mut line = String::new();
    let _ = BufReader::new(std::fs::File::from(answer_r)).read_line(&mut line);
    // The supervisor goes on detached (its own session); its exit is not ours to wait for,
    // but a zombie must not stay: it is reaped once it ends, by init, after we exit.
    let failed = match serde_json::from_str::<Started>(&line) {
        Ok(Started::Running { leader, .. }) => {
            drop(child);
            return Ok(leader);
        }
        Ok(Started::AlreadyRunning) => RuntimeError::AlreadyRunning {
            name: id.to_owned(),
        },
        Ok(Started::StepFailed(failure)) => RuntimeError::Step(failure),
        Ok(Started::Failed(failure)) => RuntimeError::Supervisor(failure),
        Err(_) => RuntimeError::SupervisorEnded {
            name: id.to_owned(),
            status: match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("its status is unknown: {e}"),
            },
        },
    };
    let _ = child.wait();
    Err(failed.into())
}

/// `run` without `--detach`: waits until the container's process has ended and its
/// supervisor has cleaned up; its exit status. The process is this one's child (a
/// re-parented PID 1's parent is the one that created it), so its status is here.
pub fn wait(options: &Options, id: &str) -> Result<Option<i32>, OciError> {
    use nix::sys::wait::{WaitStatus, waitpid};
    let container = Container::new(&options.state_root, id)?;
    let pid = container.read()?.map(|r| r.pid).unwrap_or_default();
    let status = match waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some(128 + signal as i32),
        _ => None,
    };
    while container.supervised()? {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(status)
}

/// `start`: lets a created container's process execute its command.
pub fn start(options: &Options, id: &str) -> Result<(), OciError> {
    let container = Container::new(&options.state_root, id)?;
    let (record, status) = container.status()?;
    let (Some(mut record), Status::Created) = (record, status) else {
        return Err(OciError::WrongState {
            id: id.to_owned(),
            status,
            what: "only a created container can be started".to_owned(),
        });
    };
    match ask(&container, &Request::Start)? {
        Reply::Started => {}
        Reply::Refused { why } => {
            return Err(OciError::Supervisor {
                id: id.to_owned(),
                why,
            });
        }
        Reply::Stopping => {
            return Err(OciError::Supervisor {
                id: id.to_owned(),
                why: "it answered a stop request".to_owned(),
            });
        }
    }
    record.started = true;
    container.write(&record)?;
    // A poststart hook that fails is a warning; the container runs on (runtime-spec).
    if let Err(e) = super::hooks::run(&record.hooks.poststart, &container.state()?, "poststart") {
        eprintln!("mm: warning: {e}");
    }
    Ok(())
}

/// One request to the container's supervisor, over its control socket, and its reply.
fn ask(container: &Container, request: &Request) -> Result<Reply, OciError> {
    let path = container.paths.control();
    let io = |e| OciError::io(&path, e);
    let mut stream = crate::runtime::socket::connect(&path).map_err(io)?;
    let line = serde_json::to_string(request).map_err(|e| io(e.into()))?;
    writeln!(stream, "{line}").map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply).map_err(|_| OciError::Supervisor {
        id: container.id.clone(),
        why: format!("it answered `{}`", reply.trim()),
    })
}

/// `kill`: `signal` to the container's process, or with `all` to every process in its
/// cgroup.
pub fn kill(options: &Options, id: &str, signal: &str, all: bool) -> Result<(), OciError> {
    let container = Container::new(&options.state_root, id)?;
    let signal: crate::signal::Signal = signal
        .parse()
        .map_err(|_| OciError::BadSignal(signal.to_owned()))?;
    let (record, status) = container.status()?;
    let (Some(record), Status::Created | Status::Running | Status::Paused) = (record, status)
    else {
        return Err(OciError::WrongState {
            id: id.to_owned(),
            status,
            what: "only a created or running container can be signalled".to_owned(),
        });
    };
    let mut pids = vec![record.pid];
    if all {
        let running = crate::runtime::state::running(&container.paths)
            .map_err(|e| OciError::io(&container.paths.state(), e))?;
        let cgroup = running.and_then(|(_, launch)| {
            crate::runtime::cgroup::MachineCgroup::from_plan(&launch.plan.cgroup)
        });
        match cgroup {
            Some(cgroup) => pids = cgroup.pids().map_err(RuntimeError::from)?,
            None if signal.number() == libc::SIGKILL => {}
            None => {
                return Err(OciError::WrongState {
                    id: id.to_owned(),
                    status,
                    what: "it has no cgroup of its own, so --all can only send KILL (which \
                           ends its PID namespace)"
                        .to_owned(),
                });
            }
        }
    }
    for pid in pids {
        // SAFETY: kill with a pid and a valid signal number.
        if unsafe { libc::kill(pid, signal.number()) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(OciError::io(Path::new(&format!("/proc/{pid}")), e));
            }
        }
    }
    Ok(())
}

/// `delete`: removes a stopped container (with `force`, kills it first) and everything
/// `create` made: its supervisor cleans up its cgroup and mounts as it ends; this removes
/// the state directory.
pub fn delete(options: &Options, id: &str, force: bool) -> Result<(), OciError> {
    let container = Container::new(&options.state_root, id)?;
    let (_, status) = container.status()?;
    if status != Status::Stopped {
        if !force {
            return Err(OciError::WrongState {
                id: id.to_owned(),
                status,
                what: "stop it first, or delete --force".to_owned(),
            });
        }
        if status == Status::Paused {
            // A frozen process does not die of SIGKILL until it is thawed.
            super::control::freeze(&container, false)?;
        }
        kill_and_wait(&container)?;
    }
    // Stopped, its supervisor may still be tearing down: what it removes is gone first.
    wait_for_supervisor(&container)?;
    // A supervisor killed with SIGKILL left its cgroup and mounts: reconcile removes them.
    crate::runtime::supervisor::reconcile(&container.paths)
        .map_err(|e| OciError::io(&container.paths.lock(), e))?;
    let last = container.state()?;
    let hooks = container.read()?.map(|r| r.hooks).unwrap_or_default();
    remove(&container)?;
    // As for poststart, a failure is a warning: the container is gone all the same.
    if let Err(e) = super::hooks::run(&hooks.poststop, &last, "poststop") {
        eprintln!("mm: warning: {e}");
    }
    Ok(())
}

/// SIGKILLs the container's process (and its cgroup) and waits for the supervisor to end.
fn kill_and_wait(container: &Container) -> Result<(), OciError> {
    if let Ok(Some(record)) = container.read() {
        // SAFETY: kill with a pid and a valid signal number.
        unsafe { libc::kill(record.pid, libc::SIGKILL) };
    }
    wait_for_supervisor(container)
}

/// Waits for the supervisor to end: once the container's process has ended, it removes the
/// cgroup and mounts and releases the lock.
fn wait_for_supervisor(container: &Container) -> Result<(), OciError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while container.supervised()? {
        if Instant::now() > deadline {
            return Err(OciError::Supervisor {
                id: container.id.clone(),
                why: "it still runs 30 s after its container was killed".to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The files a container's directory holds; anything else in it is not removed.
const FILES: &[&str] = &["oci.json", "state.json", "lock", "control", "console.log"];

/// Removes the container's directory: its known files, its empty mount points, itself.
/// Never recursively: a directory that is not empty (a mount point with something in it)
/// is an error, so nothing of the bundle can go with it.
fn remove(container: &Container) -> Result<(), OciError> {
    for name in FILES {
        let path = container.dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(OciError::io(&path, e));
            }
            _ => {}
        }
    }
    for name in ["root", "stage", "layers", "volatile"] {
        let path = container.dir.join(name);
        match std::fs::remove_dir(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(OciError::io(&path, e));
            }
            _ => {}
        }
    }
    std::fs::remove_dir(&container.dir).map_err(|e| OciError::io(&container.dir, e))
}
