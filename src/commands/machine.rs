//! The machine verbs: run, start, stop, kill, status, exec, shell, rm (`ps` has its own file).
//!
//! `run` and `start` prepare everything that needs no namespace (the image in the store,
//! the id block, the writable layer), then hand a [`Launch`] to a fresh `mm __supervise`.
//! `exec` and `shell` join the machine's namespaces themselves, so they never start a
//! thread (no host probe: only [`Dirs::current`]).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mm::error::{Error, ExitCode};
use mm::host::Host;
use mm::idmap::Allocator;
use mm::machine::{
    Pull, Ready, launch, machine_paths, own_unit, ready_to_boot, reconciled, supervisor_command,
};
use mm::runtime::caller::Caller;
use mm::runtime::launch::Started;
use mm::runtime::state::{self, Paths, Recorded, Status};
use mm::runtime::supervisor::{Reply, Request as ToSupervisor};
use mm::runtime::{RuntimeError, enter, procs};
use mm::signal::Signal;

use super::output::{print, print_json};
use super::unit;

/// `mm run`: the supervisor takes this process's place, in the foreground.
pub fn run(machine: &str, keep_unit: bool, pull: &Pull) -> Result<ExitCode, Error> {
    let mut host = Host::probe();
    let unit = if keep_unit {
        let (unit, cgroup) = own_unit(&host)?;
        host.unit_cgroup = Some(cgroup);
        Some(unit)
    } else {
        None
    };
    let ready = ready_to_boot(machine, &host, pull)?;
    let mut launch = launch(ready.plan, false)?;
    launch.unit = unit;
    let (mut supervisor, _file) = supervisor_command(&launch, false, &ready.lock)?;
    let e = supervisor.exec();
    Err(RuntimeError::io(Path::new("mm __supervise"), e).into())
}

/// `mm start`: through systemd (`mm@NAME.service`) when it can, else a supervisor that
/// detaches by itself.
pub fn start(machine: &str, use_systemd: bool, pull: &Pull) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let Ready { path, plan, lock } = ready_to_boot(machine, &host, pull)?;
    if !(use_systemd && unit::manager_here(&host)) {
        return detached(plan, lock);
    }
    // The unit's supervisor takes the machine's lock itself.
    drop(lock);
    match unit::start(&host, &path, &plan)? {
        unit::Via::Systemd => return Ok(ExitCode::Ok),
        unit::Via::Supervisor(None) => {}
        unit::Via::Supervisor(Some(why)) => eprintln!("mm: {why}"),
    }
    // Not through systemd after all: prepared again under the lock (another mm may have
    // changed the machine while it was not held), then a detached supervisor.
    let Ready { plan, lock, .. } = ready_to_boot(machine, &host, pull)?;
    detached(plan, lock)
}

/// A detached supervisor for a prepared machine whose lock the caller holds.
fn detached(plan: mm::plan::Plan, lock: std::fs::File) -> Result<ExitCode, Error> {
    let name = plan.machine.name.to_string();
    let launch = launch(plan, true)?;
    let (mut supervisor, file) = supervisor_command(&launch, true, &lock)?;
    let mut child = supervisor
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io(Path::new("mm __supervise"), e))?;
    drop(file);
    // The supervisor holds the lock now (the same open file, which stays locked while any
    // descriptor of it is open): ours goes, so that a `mm stop` waiting for the lock waits
    // for the supervisor only, not for this process too.
    drop(lock);
    started(name, &mut child)
}

/// What a detached supervisor answered `mm start`.
fn started(name: String, child: &mut std::process::Child) -> Result<ExitCode, Error> {
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let failed = match serde_json::from_str::<Started>(&line) {
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
            return Ok(ExitCode::Ok);
        }
        Ok(Started::AlreadyRunning) => RuntimeError::AlreadyRunning { name },
        Ok(Started::StepFailed(failure)) => RuntimeError::Step(failure),
        Ok(Started::Failed(failure)) => RuntimeError::Supervisor(failure),
        Err(_) => {
            let status = match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("its status is unknown: {e}"),
            };
            RuntimeError::SupervisorEnded { name, status }
        }
    };
    let _ = child.wait();
    Err(failed.into())
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
        && unit::stop(unit)?
    {
        print(&format!("{name} stopped ({unit})\n"))?;
        return Ok(ExitCode::Ok);
    }
    let asked = match connect(&name, &paths)? {
        Supervisor::Listening(stream) => {
            let asked = Asked::listening(&stream, &paths);
            ask_to_stop(stream, &name, &paths, timeout)?;
            asked
        }
        Supervisor::Ending(asked) => Some(asked),
    };
    // The supervisor lets go of the lock when it has cleaned up; one that was killed
    // meanwhile left its machine to be reconciled. The lock may be a new start's by then
    // (a start takes it before it prepares): the one asked ended and recorded it.
    loop {
        match mm::state::lock(&paths.lock(), false) {
            Ok(lock) => break drop(lock),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(io(e).into()),
        }
        // Once the one asked has ended, whatever holds the lock is another start's; only a
        // record of it still running (it was killed) is left to reconcile.
        if let Some(asked) = asked
            && !asked.alive()
            && !matches!(
                state::read(&paths),
                Ok(Some(Recorded::Running { supervisor, .. }))
                    if i32::try_from(supervisor) == Ok(asked.pid)
            )
        {
            print(&format!("{name} stopped\n"))?;
            return Ok(ExitCode::Ok);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // What it could not record (a full disk), reconciling cannot either: the machine
    // stopped all the same, and the error says so.
    let not_recorded = |source| RuntimeError::StopNotRecorded {
        name: name.clone(),
        path: paths.state(),
        source,
    };
    mm::runtime::supervisor::reconcile(&paths).map_err(not_recorded)?;
    match state::read(&paths) {
        Ok(Some(Recorded::Stopped {
            exit_status: Some(exit_status),
            ..
        })) => {
            print(&format!(
                "{name} stopped (PID 1 exited with status {exit_status})\n"
            ))?;
        }
        // The supervisor stopped the machine but could not record it (a full disk): record
        // it here, or say why not.
        Ok(Some(running @ Recorded::Running { .. })) => {
            let stopped = Recorded::Stopped {
                exit_status: None,
                stopped: state::now(),
                unit: running.unit().map(str::to_owned),
            };
            state::write(&paths, &stopped).map_err(not_recorded)?;
            print(&format!("{name} stopped\n"))?;
        }
        _ => print(&format!("{name} stopped\n"))?,
    }
    Ok(ExitCode::Ok)
}

/// What `mm stop` finds at the supervisor's control socket.
enum Supervisor {
    /// It listens: the stop request goes there.
    Listening(UnixStream),
    /// It was listening and no longer is: this supervisor is already tearing the
    /// machine down.
    Ending(Asked),
}

/// The supervisor a stop waits for: its pid, and when it recorded the machine running (a
/// later process with the same pid is not it).
#[derive(Debug, Clone, Copy)]
struct Asked {
    pid: i32,
    started: u64,
}

impl Asked {
    fn recorded(paths: &Paths) -> Option<Asked> {
        match state::read(paths) {
            Ok(Some(Recorded::Running {
                supervisor,
                started,
                ..
            })) => Some(Asked {
                pid: i32::try_from(supervisor).ok()?,
                started,
            }),
            _ => None,
        }
    }

    /// The supervisor behind the control socket, from the socket itself: it binds the
    /// socket before it records the machine running, so the record may not name it yet (a
    /// stop that waited for the lock alone then waited for ever when another start took the
    /// lock as this supervisor let it go).
    fn listening(stream: &std::os::unix::net::UnixStream, paths: &Paths) -> Option<Asked> {
        let recorded = Asked::recorded(paths);
        let Ok(peer) = rustix::net::sockopt::socket_peercred(stream) else {
            return recorded;
        };
        let pid = peer.pid.as_raw_nonzero().get();
        match recorded {
            Some(asked) if asked.pid == pid => Some(asked),
            // It started before now; a later process given its pid did not.
            _ => Some(Asked {
                pid,
                started: state::now(),
            }),
        }
    }

    fn alive(self) -> bool {
        mm::state::alive_since(self.pid, self.started)
    }
}

/// The supervisor's control socket. A supervisor binds it before it records the machine
/// running and removes it when it begins to tear down; while the lock is held by a start
/// that is still preparing, there is none yet, and the stop waits for it, however long
/// preparing takes (a first unpack may take minutes), so that once `mm stop` returns the
/// machine is not running. A lock let go means nothing runs.
fn connect(name: &str, paths: &Paths) -> Result<Supervisor, Error> {
    let io = |e| RuntimeError::io(&paths.control(), e);
    loop {
        // Read before connecting: a supervisor recorded running had bound its socket.
        let recorded = Asked::recorded(paths);
        if let Ok(stream) = mm::runtime::socket::connect(&paths.control()) {
            return Ok(Supervisor::Listening(stream));
        }
        if !state::supervised(paths).map_err(io)? {
            return Err(not_running(name));
        }
        if let Some(asked) = recorded
            && asked.alive()
        {
            return Ok(Supervisor::Ending(asked));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the supervisor has ended (its lock is free), waiting up to `within` for it to:
/// a killed supervisor's socket closes a moment before its lock is let go.
fn ended(paths: &Paths, within: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        if !state::supervised(paths)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long a supervisor that closed its connection without answering may take to end.
const ENDING: Duration = Duration::from_secs(2);

/// Sends the stop request; fine if the supervisor takes it, or ended meanwhile.
fn ask_to_stop(
    mut stream: UnixStream,
    name: &str,
    paths: &Paths,
    timeout: Option<u32>,
) -> Result<(), Error> {
    let io = |e| RuntimeError::io(&paths.control(), e);
    let request = serde_json::to_string(&ToSupervisor::Stop {
        timeout_secs: timeout,
    })
    .map_err(|e| io(e.into()))?;
    let closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::BrokenPipe
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
        )
    };
    if let Err(e) = writeln!(stream, "{request}") {
        if closed(&e) && ended(paths, ENDING).map_err(io)? {
            return Ok(());
        }
        return Err(io(e).into());
    }
    // A supervisor answers at once; one that does not within this is stuck.
    let patience = Duration::from_secs(5);
    stream.set_read_timeout(Some(patience)).map_err(io)?;
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    // Closed without an answer: the supervisor is ending (killed, say).
    let closing = match &read {
        Ok(_) => reply.is_empty(),
        Err(e) => closed(e),
    };
    let wait = if closing { ENDING } else { Duration::ZERO };
    let why = match (read, serde_json::from_str::<Reply>(&reply)) {
        (_, Ok(Reply::Stopping)) => return Ok(()),
        (_, Ok(Reply::Refused { why })) => why,
        (_, Ok(Reply::Started)) => "it answered a start request".to_owned(),
        // A supervisor that ended meanwhile has stopped the machine all the same.
        _ if ended(paths, wait).map_err(io)? => return Ok(()),
        (Err(e), _) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            format!(
                "it did not answer within {} s (it may still stop the machine when it can)",
                patience.as_secs()
            )
        }
        (Err(e), _) => format!("reading its answer: {e}"),
        (Ok(_), Err(_)) if reply.is_empty() => {
            "it closed the connection without answering".to_owned()
        }
        (Ok(_), Err(e)) => format!("it answered `{}` ({e})", reply.trim()),
    };
    let name = name.to_owned();
    Err(RuntimeError::StopRefused { name, why }.into())
}

/// `mm kill`: PID 1, or with `all` every process of the machine but mm's init.
pub fn kill(machine: &str, signal: Signal, all: bool) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    let number = signal.number();
    let (leader, launch) = state::running(&paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e))?
        .ok_or_else(|| not_running(&name))?;
    if all {
        let mut processes = procs::list(&name, leader, &launch)?;
        // mm's init passes every signal on to the command, which would get it twice.
        processes.retain(|p| launch.boot || p.pid != 1);
        procs::signal(&processes, number)?;
        return Ok(ExitCode::Ok);
    }
    // By number: real-time signals have no nix `Signal`.
    // SAFETY: kill with a pid and a signal number.
    if unsafe { libc::kill(leader, number) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(RuntimeError::io(Path::new(&format!("/proc/{leader}")), e).into());
    }
    Ok(ExitCode::Ok)
}

/// `mm bind NAME SRC DST [--read-only]`.
pub fn bind(machine: &str, source: &Path, target: &str, readonly: bool) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    let (leader, _) = state::running(&paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e))?
        .ok_or_else(|| not_running(&name))?;
    mm::runtime::bind::bind(&name, leader, source, target, readonly)?;
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
    /// While it runs: its network as its plan has it (mode, links, address, forwards).
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<mm::plan::Network>,
}

pub fn status(machine: &str, json: bool) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    // What is recorded can still be told when the cleanup after a dead supervisor cannot
    // be recorded (a full disk): the status says stopped either way; the warning says why
    // the record is behind.
    if let Err(e) = reconciled(&paths) {
        eprintln!("mm: {name}: the cleanup after its supervisor could not be recorded: {e}");
    }
    let status = state::status(&paths).map_err(|e| RuntimeError::io(&paths.state(), e))?;
    let recorded = state::read(&paths).map_err(|e| RuntimeError::io(&paths.state(), e))?;
    let unit = recorded.as_ref().and_then(|r| r.unit().map(str::to_owned));
    let network = match (&status, recorded) {
        (Status::Running { .. }, Some(state::Recorded::Running { launch, .. })) => {
            Some(launch.plan.network)
        }
        _ => None,
    };
    if json {
        print_json(&StatusReport {
            name: &name,
            status: &status,
            runtime_dir: paths.dir.clone(),
            unit,
            network,
        })?;
    } else {
        let unit = unit.map(|u| format!(" as {u}")).unwrap_or_default();
        let network = network.as_ref().and_then(network_line).unwrap_or_default();
        print(&format!("{name}: {}{unit}\n{network}", describe(&status)))?;
    }
    Ok(match status {
        Status::Running { .. } | Status::Starting => ExitCode::Ok,
        Status::Stopped { .. } => ExitCode::NotRunning,
    })
}

/// `mm status`'s line for a machine with a network of its own: its address and forwards.
fn network_line(network: &mm::plan::Network) -> Option<String> {
    use mm::plan::{Address, Network};
    let (address, on, forwards) = match network {
        Network::Link(link) => {
            let Address::Assigned { address, .. } = &link.address else {
                return None;
            };
            let on = match &link.zone {
                Some(zone) => format!(
                    "{}, zone {} ({})",
                    link.machine_side, zone.name, zone.bridge
                ),
                None => format!("{} ({} on the host)", link.machine_side, link.host_side),
            };
            (address.to_string(), on, &link.forwards)
        }
        Network::UserMode(mode) => (
            mode.address.to_string(),
            format!("{} ({})", mode.interface, mode.helper),
            &mode.forwards,
        ),
        Network::Host | Network::Private | Network::Joined => return None,
    };
    let mut line = format!("  address {address} on {on}");
    if !forwards.is_empty() {
        let list: Vec<String> = forwards.iter().map(ToString::to_string).collect();
        line.push_str(&format!("; forwards {}", list.join(", ")));
    }
    line.push('\n');
    Some(line)
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
        caller: Caller::current(),
        oci: None,
    };
    let code = enter::run(&name, &paths, &command)?.code();
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

pub fn shell(machine: &str, user: Option<&str>, line: Option<String>) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    let command = enter::Command {
        argv: line.into_iter().collect(),
        user,
        login: true,
        caller: Caller::current(),
        oci: None,
    };
    let code = enter::run(&name, &paths, &command)?.code();
    std::process::exit(code)
}

pub fn rm(machine: &str) -> Result<ExitCode, Error> {
    let (name, paths) = machine_paths(machine)?;
    reconciled(&paths)?;
    // Held to the end: a start of the machine meanwhile waits for none of it, and fails
    // as "already running" instead of finding its files half gone.
    let _lock = if paths.lock().exists() {
        match mm::state::lock(&paths.lock(), false) {
            Ok(lock) => Some(lock),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(RuntimeError::AlreadyRunning { name }.into());
            }
            Err(e) => return Err(RuntimeError::io(&paths.lock(), e).into()),
        }
    } else {
        None
    };
    let host = Host::probe();
    let state_dir = host.dirs.machines.join(&name);
    if host.is_root() {
        Allocator::new(&host.dirs.machines).release(&name)?;
    }
    // Root's machines and rootless zones' have recorded addresses.
    mm::network::ipam::Ipam::new(&host.dirs.machines).release(&name)?;
    let mut removed = Vec::new();
    for dir in ["upper", "work", "home"].map(|d| state_dir.join(d)) {
        if dir.exists() {
            removed.push(dir);
        }
    }
    if !removed.is_empty() {
        mm::image::remove(&host, removed)?;
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
