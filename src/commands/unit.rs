//! The verbs that go through systemd when it runs the host (root) or the user's session:
//! starting and stopping `mm@NAME.service`, enabling it, and showing a machine's logs.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mm::definition::discovery;
use mm::error::{Error, ExitCode};
use mm::host::{Dirs, Host};
use mm::plan::{Plan, Registration};
use mm::runtime::RuntimeError;
use mm::runtime::state::{self, Paths};
use mm::systemd::manager::{Manager, unit_name};
use mm::systemd::{Bus, SystemdError};

use super::output::print;

/// How `mm start` started a machine.
pub enum Via {
    /// As `mm@NAME.service`.
    Systemd,
    /// mm's supervisor is to detach by itself; with the reason when systemd runs here but
    /// could not take the machine.
    Supervisor(Option<String>),
}

/// The service manager mm talks to: the host's (root, only when systemd is PID 1) or the
/// user's own.
fn manager(host: &Host) -> Option<Manager> {
    let bus = Bus::for_uid(host.uid);
    if bus == Bus::System && !host.systemd_pid1 {
        return None;
    }
    Manager::find(bus)
}

/// Whether a service manager answers for this user here (`mm start` goes through it).
pub fn manager_here(host: &Host) -> bool {
    manager(host).is_some()
}

fn no_manager(host: &Host, verb: &str) -> Error {
    let bus = Bus::for_uid(host.uid);
    Error::NoSystemd(format!(
        "mm {verb} needs systemd, and no service manager answers on the {bus} bus here{}",
        if bus == Bus::System {
            " (systemd is not PID 1)"
        } else {
            " (is this a systemd user session? DBUS_SESSION_BUS_ADDRESS, XDG_RUNTIME_DIR)"
        }
    ))
}

/// Whether `mm@NAME.service`, run by `manager`, finds the definition at `path` and keeps
/// its state where this process does. Its environment is the manager's and its working
/// directory `/`, so `./machines` and MM_* variables set only in this shell do not reach
/// it.
fn unit_sees(manager: &Manager, host: &Host, path: &Path) -> Result<(), String> {
    let environment = manager.environment().map_err(|e| e.to_string())?;
    let lookup = |key: &str| {
        environment.iter().find_map(|kv| {
            kv.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(OsString::from)
        })
    };
    let home = lookup("HOME").map_or_else(|| host.home.clone(), PathBuf::from);
    let dirs = Dirs::from_env(host.uid, &home, Path::new("/"), lookup);
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
    let searched = || {
        dirs.search
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    match discovery::resolve(name, &dirs.search) {
        Ok(found) if same(&found, path) => {}
        Ok(found) => {
            return Err(format!(
                "{} would run {}, not {}",
                unit_name(name),
                found.display(),
                path.display()
            ));
        }
        Err(_) => {
            return Err(format!(
                "{} would not find {} (the service manager's search path is {}); put the \
                 definition there to run it under systemd",
                unit_name(name),
                path.display(),
                searched()
            ));
        }
    }
    if dirs.runtime != host.dirs.runtime {
        return Err(format!(
            "{} would keep its state in {}, not {} (MM_ROOT differs)",
            unit_name(name),
            dirs.runtime.display(),
            host.dirs.runtime.display()
        ));
    }
    Ok(())
}

/// `mm start` through systemd: `mm@NAME.service`, waited for until it said READY=1.
pub fn start(host: &Host, path: &Path, plan: &Plan) -> Result<Via, Error> {
    let Some(manager) = manager(host) else {
        return Ok(Via::Supervisor(None));
    };
    let name = plan.machine.name.as_str();
    let unit = unit_name(name);
    if let Err(why) = unit_sees(&manager, host, path) {
        return Ok(Via::Supervisor(Some(format!(
            "{name} runs outside systemd: {why}"
        ))));
    }
    match manager.start(&unit) {
        Ok(()) => {}
        Err(e) if e.error_name() == Some("org.freedesktop.systemd1.NoSuchUnit") => {
            return Ok(Via::Supervisor(Some(format!(
                "{name} runs outside systemd: mm@.service is not installed for the {} \
                 manager",
                manager.bus
            ))));
        }
        Err(e) => return Err(with_journal_hint(e, &manager, &unit)),
    }
    let paths = Paths::new(&plan.machine.runtime_dir);
    let io = |e| RuntimeError::io(&paths.state(), e);
    let recorded = if state::supervised(&paths).map_err(io)? {
        state::read(&paths).map_err(io)?
    } else {
        None
    };
    let Some(state::Recorded::Running {
        leader, registered, ..
    }) = recorded
    else {
        return Err(Error::Service(format!(
            "{unit} started, but the machine is not running; see {}",
            journal_command(&manager, &unit)
        )));
    };
    if let Registration::Skip { why } = &plan.registration {
        eprintln!("mm: {name} is not registered with systemd-machined: {why}");
    } else if !registered {
        eprintln!(
            "mm: {name} is not registered with systemd-machined; {} says why",
            journal_command(&manager, &unit)
        );
    }
    print(&format!(
        "{name} started as {unit}: PID 1 is {leader} on the host\n"
    ))?;
    Ok(Via::Systemd)
}

/// Stops `unit` through its service manager. False when no manager answers here, so the
/// caller asks the supervisor itself.
pub fn stop(unit: &str) -> Result<bool, Error> {
    let host_uid = nix::unistd::geteuid().as_raw();
    let Some(manager) = Manager::find(Bus::for_uid(host_uid)) else {
        return Ok(false);
    };
    manager
        .stop(unit)
        .map_err(|e| with_journal_hint(e, &manager, unit))?;
    Ok(true)
}

fn journal_command(manager: &Manager, unit: &str) -> String {
    match manager.bus {
        Bus::System => format!("`journalctl -u {unit}`"),
        Bus::User => format!("`journalctl --user-unit {unit}`"),
    }
}

fn with_journal_hint(e: SystemdError, manager: &Manager, unit: &str) -> Error {
    Error::Service(format!("{e}; see {}", journal_command(manager, unit)))
}

/// `mm enable NAME [--now]`.
pub fn enable(machine: &str, now: bool) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let path = discovery::resolve(machine, &host.dirs.search)?;
    let manager = manager(&host).ok_or_else(|| no_manager(&host, "enable"))?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or(machine);
    unit_sees(&manager, &host, &path)
        .map_err(|why| Error::NoSystemd(format!("cannot enable {name}: {why}")))?;
    let unit = unit_name(name);
    let changes = manager.enable(&unit)?;
    report_changes(&changes, &format!("{unit} was already enabled"))?;
    if now {
        manager
            .start(&unit)
            .map_err(|e| with_journal_hint(e, &manager, &unit))?;
        print(&format!("{name} started as {unit}\n"))?;
    }
    Ok(ExitCode::Ok)
}

/// `mm disable NAME [--now]`.
pub fn disable(machine: &str, now: bool) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let manager = manager(&host).ok_or_else(|| no_manager(&host, "disable"))?;
    let name = Path::new(machine)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(machine);
    let unit = unit_name(name);
    let changes = manager.disable(&unit)?;
    report_changes(&changes, &format!("{unit} was not enabled"))?;
    if now && manager.active_state(&unit)? != "inactive" {
        manager
            .stop(&unit)
            .map_err(|e| with_journal_hint(e, &manager, &unit))?;
        print(&format!("{name} stopped ({unit})\n"))?;
    }
    Ok(ExitCode::Ok)
}

/// As systemctl prints them: `Created symlink LINK → TARGET.`
fn report_changes(changes: &[mm::systemd::manager::Change], none: &str) -> Result<(), Error> {
    if changes.is_empty() {
        return print(&format!("{none}\n"));
    }
    let mut out = String::new();
    for (kind, link, target) in changes {
        match kind.as_str() {
            "symlink" => out.push_str(&format!("Created symlink {link} → {target}.\n")),
            "unlink" => out.push_str(&format!("Removed \"{link}\".\n")),
            other => out.push_str(&format!("{other}: {link} {target}\n")),
        }
    }
    print(&out)
}

/// `mm logs NAME [-f] [-n N]`: the journal of its unit, or its console log.
pub fn logs(machine: &str, follow: bool, lines: Option<usize>) -> Result<ExitCode, Error> {
    let (name, paths) = mm::machine::machine_paths(machine)?;
    mm::machine::reconciled(&paths)?;
    let recorded = state::read(&paths).map_err(|e| RuntimeError::io(&paths.state(), e))?;
    if let Some(unit) = recorded.as_ref().and_then(|r| r.unit()) {
        let mut journalctl = std::process::Command::new("journalctl");
        journalctl.args(["--output", "cat", "--no-pager"]);
        journalctl.arg(if nix::unistd::geteuid().is_root() {
            "--unit"
        } else {
            "--user-unit"
        });
        journalctl.arg(unit);
        if follow {
            journalctl.arg("--follow");
        }
        if let Some(n) = lines {
            journalctl.arg(format!("--lines={n}"));
        }
        let e = journalctl.exec();
        return Err(RuntimeError::io(Path::new("journalctl"), e).into());
    }
    let log = paths.console_log();
    let mut file = std::fs::File::open(&log).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::Missing(format!(
                "{name} has no console log: it has not been started with `mm start` (a \
                 machine run with `mm run` writes to its terminal)"
            ))
        } else {
            Error::Read {
                path: log.clone(),
                source,
            }
        }
    })?;
    let read_error = |source| Error::Read {
        path: log.clone(),
        source,
    };
    if let Some(n) = lines {
        let start = tail_offset(&mut file, n).map_err(read_error)?;
        file.seek(SeekFrom::Start(start)).map_err(read_error)?;
    }
    copy_out(&mut file).map_err(read_error)?;
    // Until the machine stops: then what it wrote last is printed and mm exits.
    let mut running = follow;
    while running {
        running = state::supervised(&paths).unwrap_or(false);
        std::thread::sleep(Duration::from_millis(200));
        let position = file.stream_position().map_err(read_error)?;
        if file.metadata().map_err(read_error)?.len() < position {
            // A new start truncated the log.
            file.seek(SeekFrom::Start(0)).map_err(read_error)?;
        }
        copy_out(&mut file).map_err(read_error)?;
    }
    Ok(ExitCode::Ok)
}

fn copy_out(file: &mut std::fs::File) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match file.read(&mut buffer)? {
            0 => return stdout.flush(),
            n => stdout.write_all(&buffer[..n])?,
        }
    }
}

/// Where the last `n` lines of `file` begin.
fn tail_offset(file: &mut std::fs::File, n: usize) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut newlines = 0;
    let mut end = len;
    let mut buffer = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buffer.len() as u64);
        let chunk = &mut buffer[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, byte) in chunk.iter().enumerate().rev() {
            // A newline that ends the file does not start a line.
            if *byte == b'\n' && start + i as u64 != len - 1 {
                newlines += 1;
                if newlines == n {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}
