//! The machine verbs: run, start, stop, kill, status, exec, shell, rm.
//!
//! `run` and `start` prepare everything that needs no namespace (the image in the store,
//! the id block, the writable layer), then hand a [`Launch`] to a fresh `mm __supervise`.
//! `exec` and `shell` join the machine's namespaces themselves, so they never start a
//! thread (no host probe: only [`Dirs::current`]).

use std::io::{BufRead, BufReader, ErrorKind, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mm::definition::MachineName;
use mm::definition::discovery;
use mm::error::{Error, ExitCode};
use mm::host::{Dirs, Host};
use mm::idmap::{Allocator, IdRange};
use mm::image::progress::Progress;
use mm::image::{Request, Store};
use mm::plan::{IdMapping, Layers, Plan, Upper};
use mm::runtime::launch::Started;
use mm::runtime::state::{self, Paths, Recorded, Status};
use mm::runtime::supervisor::{Reply, Request as ToSupervisor};
use mm::runtime::{Console, Launch, RuntimeError, enter};
use mm::signal::Signal;

use crate::commands::{compile, print, print_json};

/// `mm run`: the supervisor takes this process's place, in the foreground.
pub fn run(machine: &str, keep_unit: bool) -> Result<ExitCode, Error> {
    let mut host = Host::probe();
    let unit = if keep_unit {
        let (unit, cgroup) = own_unit(&host)?;
        host.unit_cgroup = Some(cgroup);
        Some(unit)
    } else {
        None
    };
    let (_, plan) = ready_to_boot(machine, &host)?;
    let mut launch = launch(plan, &host, false)?;
    launch.unit = unit;
    let (mut supervisor, _file) = supervisor_command(&launch, false)?;
    let e = supervisor.exec();
    Err(RuntimeError::io(Path::new("mm __supervise"), e).into())
}

/// `mm start`: through systemd (`mm@NAME.service`) when it can, else a supervisor that
/// detaches by itself.
pub fn start(machine: &str, use_systemd: bool) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let (path, plan) = ready_to_boot(machine, &host)?;
    if use_systemd {
        match crate::unit_commands::start(&host, &path, &plan)? {
            crate::unit_commands::Via::Systemd => return Ok(ExitCode::Ok),
            crate::unit_commands::Via::Supervisor(None) => {}
            crate::unit_commands::Via::Supervisor(Some(why)) => eprintln!("mm: {why}"),
        }
    }
    let name = plan.machine.name.to_string();
    let launch = launch(plan, &host, true)?;
    let (mut supervisor, file) = supervisor_command(&launch, true)?;
    let mut child = supervisor
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io(Path::new("mm __supervise"), e))?;
    drop(file);
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    match serde_json::from_str::<Started>(&line) {
        Ok(Started::Running {
            leader,
            supervisor,
            notice,
        }) => {
            if let Some(notice) = notice {
                eprintln!("mm: {notice}");
            }
            print(&format!(
                "{name} started: PID 1 is {leader} on the host, supervisor {supervisor}\n"
            ))?;
            Ok(ExitCode::Ok)
        }
        Ok(Started::AlreadyRunning) => {
            let _ = child.wait();
            Err(RuntimeError::AlreadyRunning { name }.into())
        }
        Ok(Started::Failed { error, exit_code }) => {
            let _ = child.wait();
            Err(RuntimeError::Remote {
                message: error,
                code: exit_code,
            }
            .into())
        }
        Err(_) => {
            let status = match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("its status is unknown: {e}"),
            };
            Err(RuntimeError::SupervisorEnded { name, status }.into())
        }
    }
}

/// The systemd unit this process runs in, and its cgroup (`--keep-unit`).
fn own_unit(host: &Host) -> Result<(String, String), Error> {
    let Some(cgroup) = host.cgroup.own.clone() else {
        return Err(Error::NoSystemd(
            "--keep-unit: mm found no cgroup of its own in /proc/self/cgroup, so no systemd \
             unit to stay in; it is meant for mm@.service"
                .to_owned(),
        ));
    };
    let unit = Path::new(&cgroup)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".service"))
        .map(str::to_owned);
    match unit {
        Some(unit) => Ok((unit, cgroup)),
        None => Err(Error::NoSystemd(format!(
            "--keep-unit: mm is not running as a systemd service (its cgroup is `{cgroup}`); \
             it is meant for mm@.service"
        ))),
    }
}

/// Finds and prepares a machine that is not running: after cleaning up what a killed
/// supervisor left, its plan made concrete.
fn ready_to_boot(machine: &str, host: &Host) -> Result<(PathBuf, Plan), Error> {
    let path = discovery::resolve(machine, &host.dirs.search)?;
    let (name, paths) = machine_paths(&path.to_string_lossy())?;
    reconciled(&paths)?;
    if state::supervised(&paths).map_err(|e| RuntimeError::io(&paths.lock(), e))? {
        return Err(RuntimeError::AlreadyRunning { name }.into());
    }
    let plan = prepare(&path, host)?;
    Ok((path, plan))
}

/// The launch of a prepared plan: a pty console for `mm start` or when any of our
/// standard streams is a terminal (the machine never gets ours), else the standard
/// streams as they are (pipes or files, none a terminal).
fn launch(plan: Plan, host: &Host, detach: bool) -> Result<Launch, Error> {
    let store = Store::new(&host.dirs.store);
    let record = store.image(&plan.image.source.to_string())?;
    let console = if detach || mm::runtime::stdio::any_terminal() {
        Console::Pty
    } else {
        Console::Pipe
    };
    Ok(Launch::new(plan, record.as_ref(), console)?)
}

/// Cleans up after a supervisor that was killed (its cgroup, mount points and machined
/// registration) before anything looks at the machine.
pub fn reconciled(paths: &Paths) -> Result<(), Error> {
    mm::runtime::supervisor::reconcile(paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e).into())
}

/// Compiles the plan, then makes it concrete: the image imported, the id block allocated,
/// the writable layer made. Compiles again after each, so the plan says what is.
fn prepare(path: &Path, host: &Host) -> Result<Plan, Error> {
    let mut plan = compile(path, host)?;
    if matches!(plan.image.layers, Layers::Unresolved) {
        let request = Request {
            source: &plan.image.source,
            pin: plan.image.pinned.as_ref(),
            host,
            tls_verify: true,
        };
        mm::image::import(&request, &Store::new(&host.dirs.store), &Progress::new())?;
        plan = compile(path, host)?;
    }
    if host.is_root() {
        // Root machines' blocks are disjoint: an allocated one is recorded, an explicit
        // `users.range` is claimed (and refused if another machine holds any of it).
        let allocator = Allocator::new(&host.dirs.machines);
        let name = plan.machine.name.as_str();
        match &plan.ids.uid {
            IdMapping::Allocate { .. } => {
                allocator.allocate(name)?;
                plan = compile(path, host)?;
            }
            IdMapping::Map { entries } => {
                if let [e] = entries.as_slice() {
                    let range = IdRange {
                        start: e.outside,
                        count: e.count,
                    };
                    match allocator.claim(name, range) {
                        // Another machine claimed them since this one compiled: compiling
                        // again points at `users.range`.
                        Err(e @ mm::idmap::AllocError::Overlap { .. }) => {
                            compile(path, host)?;
                            return Err(e.into());
                        }
                        claimed => claimed?,
                    }
                }
            }
        }
    }
    if let Upper::Persistent { upper, work } = &plan.root.upper {
        let owner = match &plan.ids.uid {
            IdMapping::Map { entries } if host.is_root() => entries.first().map(|e| e.outside),
            _ => None,
        };
        // The machine's directory holds its files as they are (setuid ones too): private.
        if let Some(machine_dir) = upper.parent() {
            mm::state::private_dir(machine_dir).map_err(|e| RuntimeError::io(machine_dir, e))?;
        }
        for dir in [upper, work] {
            let made = std::fs::create_dir_all(dir).and_then(|()| {
                owner.map_or(Ok(()), |id| {
                    std::os::unix::fs::chown(dir, Some(id), Some(id))
                })
            });
            made.map_err(|e| RuntimeError::io(dir, e))?;
        }
    }
    Ok(plan)
}

/// `mm __supervise [--detach]` with the launch on descriptor 3. The file must live until
/// the command has been spawned, so it is returned with it.
fn supervisor_command(launch: &Launch, detach: bool) -> Result<(Command, std::fs::File), Error> {
    let io = |e| RuntimeError::io(Path::new("the launch file"), e);
    let mut file = tempfile::tempfile().map_err(io)?;
    let json = serde_json::to_vec(launch).map_err(|e| io(e.into()))?;
    file.write_all(&json).map_err(io)?;
    file.rewind().map_err(io)?;
    let exe =
        std::env::current_exe().map_err(|e| RuntimeError::io(Path::new("/proc/self/exe"), e))?;
    let mut command = Command::new(exe);
    command.arg("__supervise");
    if detach {
        command.arg("--detach");
    }
    let fd = file.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if ok < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok((command, file))
}

/// A machine's name (a NAME or a path to NAME.toml) and its runtime files.
pub fn machine_paths(machine: &str) -> Result<(String, Paths), Error> {
    let stem = Path::new(machine)
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|_| machine.ends_with(".toml"))
        .unwrap_or(machine);
    let name = MachineName::new(stem).map_err(|why| discovery::DiscoveryError::BadName {
        arg: machine.to_owned(),
        why,
    })?;
    let dirs = Dirs::current();
    Ok((
        name.to_string(),
        Paths::new(&dirs.runtime.join(name.as_str())),
    ))
}

fn not_running(name: &str) -> Error {
    RuntimeError::NotRunning {
        name: name.to_owned(),
    }
    .into()
}

pub fn stop(machine: &str, timeout: Option<u32>) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    let io = |e| RuntimeError::io(&paths.control(), e);
    if !state::supervised(&paths).map_err(io)? {
        return Err(not_running(&name));
    }
    // A unit is stopped through systemd, unless a timeout is asked for: the supervisor
    // takes that itself, and the unit ends when it exits.
    let recorded = state::read(&paths).map_err(|e| RuntimeError::io(&paths.state(), e))?;
    if timeout.is_none()
        && let Some(recorded) = recorded
        && let Some(unit) = recorded.unit()
        && crate::unit_commands::stop(unit)?
    {
        print(&format!("{name} stopped ({unit})\n"))?;
        return Ok(ExitCode::Ok);
    }
    // A supervisor still starting has no socket yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match UnixStream::connect(paths.control()) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline && state::supervised(&paths).unwrap_or(false) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) if !state::supervised(&paths).map_err(io)? => {
                return Err(not_running(&name));
            }
            Err(e) => {
                let why = format!(
                    "its socket {} does not take connections after 10 s ({e})",
                    paths.control().display()
                );
                return Err(RuntimeError::StopRefused { name, why }.into());
            }
        }
    };
    let request = serde_json::to_string(&ToSupervisor::Stop {
        timeout_secs: timeout,
    })
    .map_err(|e| io(e.into()))?;
    writeln!(stream, "{request}").map_err(io)?;
    // A supervisor answers at once; one that does not within this is stuck.
    let patience = Duration::from_secs(5);
    stream.set_read_timeout(Some(patience)).map_err(io)?;
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    let refused = |why: String| RuntimeError::StopRefused {
        name: name.clone(),
        why,
    };
    match (read, serde_json::from_str::<Reply>(&reply)) {
        (_, Ok(Reply { ok: true, .. })) => {}
        (_, Ok(Reply { error, .. })) => {
            let why = error.unwrap_or_else(|| "it gave no reason".to_owned());
            return Err(refused(why).into());
        }
        // A supervisor that ended meanwhile has stopped the machine all the same.
        _ if !state::supervised(&paths).map_err(io)? => {}
        (Err(e), _) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            let why = format!(
                "it did not answer within {} s (it may still stop the machine when it can)",
                patience.as_secs()
            );
            return Err(refused(why).into());
        }
        (Err(e), _) => return Err(refused(format!("reading its answer: {e}")).into()),
        (Ok(_), Err(_)) if reply.is_empty() => {
            return Err(refused("it closed the connection without answering".to_owned()).into());
        }
        (Ok(_), Err(e)) => {
            return Err(refused(format!("it answered `{}` ({e})", reply.trim())).into());
        }
    }
    // The supervisor lets go of the lock when it has cleaned up.
    drop(mm::state::lock(&paths.lock(), true).map_err(io)?);
    match state::read(&paths) {
        Ok(Some(Recorded::Stopped {
            exit_status: Some(exit_status),
            ..
        })) => {
            print(&format!(
                "{name} stopped (PID 1 exited with status {exit_status})\n"
            ))?;
        }
        _ => print(&format!("{name} stopped\n"))?,
    }
    Ok(ExitCode::Ok)
}

pub fn kill(machine: &str, signal: Signal) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    let number = signal.number();
    let (leader, _) = state::running(&paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e))?
        .ok_or_else(|| not_running(&name))?;
    // By number: real-time signals have no nix `Signal`.
    // SAFETY: kill with a pid and a signal number.
    if unsafe { libc::kill(leader, number) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(RuntimeError::io(Path::new(&format!("/proc/{leader}")), e).into());
    }
    Ok(ExitCode::Ok)
}

#[derive(serde::Serialize)]
struct StatusReport<'a> {
    name: &'a str,
    #[serde(flatten)]
    status: &'a Status,
    runtime_dir: PathBuf,
    /// The systemd unit it runs or ran as.
    unit: Option<String>,
}

pub fn status(machine: &str, json: bool) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    let status = state::status(&paths).map_err(|e| RuntimeError::io(&paths.state(), e))?;
    let unit = state::read(&paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e))?
        .and_then(|r| r.unit().map(str::to_owned));
    if json {
        print_json(&StatusReport {
            name: &name,
            status: &status,
            runtime_dir: paths.dir.clone(),
            unit,
        })?;
    } else {
        let unit = unit.map(|u| format!(" as {u}")).unwrap_or_default();
        print(&format!("{name}: {}{unit}\n", describe(&status)))?;
    }
    Ok(match status {
        Status::Running { .. } | Status::Starting => ExitCode::Ok,
        Status::Stopped { .. } => ExitCode::NotRunning,
    })
}

/// One line for `mm status` and `mm list`.
pub fn describe(status: &Status) -> String {
    match status {
        Status::Running {
            leader,
            supervisor,
            started,
            ..
        } => {
            let up = state::now().saturating_sub(*started);
            format!("running for {up} s, PID 1 is {leader}, supervisor {supervisor}")
        }
        Status::Starting => "starting".to_owned(),
        Status::Stopped {
            exit_status: Some(code),
            ..
        } => format!("stopped (PID 1 exited with status {code})"),
        Status::Stopped { crashed: true, .. } => {
            "stopped (its supervisor was killed; mm cleaned up after it)".to_owned()
        }
        Status::Stopped { .. } => "stopped".to_owned(),
    }
}

pub fn exec(machine: &str, user: Option<&str>, argv: Vec<String>) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    let command = enter::Command {
        argv,
        user,
        login: false,
        env: vec![],
    };
    let code = enter::run(&name, &paths, &command)?;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

pub fn shell(machine: &str, user: &str) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    let command = enter::Command {
        argv: vec![],
        user: Some(user),
        login: true,
        env: vec![],
    };
    let code = enter::run(&name, &paths, &command)?;
    std::process::exit(code)
}

pub fn rm(machine: &str) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    if state::supervised(&paths).map_err(|e| RuntimeError::io(&paths.lock(), e))? {
        return Err(RuntimeError::AlreadyRunning { name }.into());
    }
    let host = Host::probe();
    let state_dir = host.dirs.machines.join(&name);
    if host.is_root() {
        Allocator::new(&host.dirs.machines).release(&name)?;
    }
    let mut removed = Vec::new();
    for dir in ["upper", "work"].map(|d| state_dir.join(d)) {
        if dir.exists() {
            removed.push(dir);
        }
    }
    if !removed.is_empty() {
        crate::image_commands::remove(&host, removed)?;
    }
    // What mm did not put there stays, and stops the removal with its name.
    let absent = |r: std::io::Result<()>, path: &Path| match r {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::Remove {
            path: path.to_owned(),
            source,
        }),
        _ => Ok(()),
    };
    absent(std::fs::remove_dir(&state_dir), &state_dir)?;
    for file in [paths.state(), paths.console_log()] {
        absent(std::fs::remove_file(&file), &file)?;
    }
    print(&format!("{name} removed (its writable layer and state)\n"))?;
    Ok(ExitCode::Ok)
}
