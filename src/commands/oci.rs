//! `mm oci` (and mm invoked as `mm-runc`): runc's command line, each verb a call into
//! `mm::oci`. Errors also go to `--log` (text or runc's JSON lines), where conmon and
//! containerd's shim look for them.

use std::io::Write;
use std::path::{Path, PathBuf};

use mm::error::{Error, ExitCode};
use mm::oci::{Options, control, lifecycle, state::Container};

use super::output::{print, print_json};
use crate::cli::{OciArgs, OciCommand, OciLogFormat, OciPsFormat};

pub fn run(args: OciArgs) -> Result<ExitCode, Error> {
    let log = args.log.clone().map(|path| (path, args.log_format));
    if args.debug
        && let Some(log) = &log
    {
        write_log(log, "debug", &format!("{:?}", args.command));
    }
    let result = verb(args);
    if let (Err(e), Some(log)) = (&result, &log) {
        write_log(log, "error", &e.to_string());
    }
    result
}

fn verb(args: OciArgs) -> Result<ExitCode, Error> {
    let root = args.root;
    let systemd_cgroup = args.systemd_cgroup;
    // What `create` has to say: warnings to --log, debug lines with --debug too.
    let (log_to, debug) = (args.log.clone().map(|p| (p, args.log_format)), args.debug);
    let note = move |level: &str, message: &str| {
        if let Some(log) = &log_to
            && (debug || level != "debug")
        {
            write_log(log, level, message);
        }
    };
    // Only the verbs that touch containers need a state directory.
    let options = move || -> Result<Options, Error> {
        Ok(Options {
            state_root: state_root(root)?,
            systemd_cgroup,
        })
    };
    match args.command {
        OciCommand::Create {
            bundle,
            pid_file,
            console_socket,
            no_pivot: _,
            no_new_keyring: _,
            id,
        } => {
            lifecycle::create(
                &options()?,
                &id,
                &bundle,
                pid_file.as_deref(),
                console_socket.as_deref(),
                &note,
            )?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Start { id } => {
            lifecycle::start(&options()?, &id)?;
            Ok(ExitCode::Ok)
        }
        OciCommand::State { id } => {
            print_json(&Container::new(&options()?.state_root, &id)?.state()?)?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Kill { all, id, signal } => {
            lifecycle::kill(&options()?, &id, &signal, all)?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Delete { force, id } => {
            lifecycle::delete(&options()?, &id, force)?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Run {
            bundle,
            pid_file,
            detach,
            id,
        } => {
            let options = options()?;
            let terminal = mm::oci::load(&bundle)?.process.is_some_and(|p| p.terminal);
            let status = if terminal {
                if detach {
                    return Err(usage(
                        "process.terminal is true: a detached container's terminal needs \
                         `create --console-socket`",
                    ));
                }
                mm::oci::attach::run(&options, &id, &bundle, pid_file.as_deref(), &note)?
            } else {
                lifecycle::create(&options, &id, &bundle, pid_file.as_deref(), None, &note)?;
                lifecycle::start(&options, &id)?;
                if detach {
                    return Ok(ExitCode::Ok);
                }
                lifecycle::wait(&options, &id)?
            };
            lifecycle::delete(&options, &id, false)?;
            // The container's own status, as runc exits with it.
            std::process::exit(status.unwrap_or(ExitCode::System as i32))
        }
        OciCommand::Exec {
            process,
            tty,
            detach,
            pid_file,
            console_socket,
            cwd,
            env,
            user,
            cap,
            no_new_privs,
            apparmor,
            preserve_fds,
            id,
            args,
        } => {
            let request = mm::oci::exec::Request {
                process,
                tty,
                detach,
                pid_file,
                console_socket,
                cwd,
                env,
                user,
                caps: cap,
                no_new_privs,
                apparmor,
                preserve_fds,
                args,
            };
            let code = mm::oci::exec::exec(&options()?, &id, &request)?;
            let _ = std::io::stdout().flush();
            std::process::exit(code)
        }
        OciCommand::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = control::pids(&options()?, &id)?;
            match format {
                OciPsFormat::Json => print_json(&pids)?,
                OciPsFormat::Table => ps_table(&pids, &ps_args)?,
            }
            Ok(ExitCode::Ok)
        }
        OciCommand::Pause { id } => {
            control::pause(&options()?, &id)?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Resume { id } => {
            control::resume(&options()?, &id)?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Update {
            resources,
            memory,
            memory_swap,
            pids_limit,
            cpu_quota,
            cpu_period,
            id,
        } => {
            let update = control::Update {
                resources,
                memory,
                memory_swap,
                pids_limit,
                cpu_quota,
                cpu_period,
            };
            control::update(&options()?, &id, &update)?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Features => {
            print_json(&mm::oci::features())?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Spec { rootless, bundle } => {
            let path = bundle.join("config.json");
            let mut text = serde_json::to_string_pretty(&mm::oci::default_spec(rootless))
                .map_err(|e| Error::Output(e.into()))?;
            text.push('\n');
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| mm::oci::OciError::io(&path, e))?;
            file.write_all(text.as_bytes())
                .map_err(|e| mm::oci::OciError::io(&path, e))?;
            Ok(ExitCode::Ok)
        }
        OciCommand::Plan {
            bundle,
            id,
            json,
            host_file,
        } => {
            let host = match host_file {
                Some(path) => super::definitions::read_host(&path)?,
                None => mm::host::Host::probe(),
            };
            let plan = mm::oci::plan(&bundle, &id, &host, &options()?)?;
            if json {
                print_json(&plan.hashed())?;
            } else {
                print(&plan.render())?;
            }
            Ok(ExitCode::Ok)
        }
    }
}

/// runc's `ps` table: ps(1)'s header and the lines of the container's processes (ps
/// run with `args`, default `-ef`, its lines kept by their PID column).
fn ps_table(pids: &[i32], args: &[String]) -> Result<(), Error> {
    let args: Vec<&str> = if args.is_empty() {
        vec!["-ef"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| mm::oci::OciError::io(Path::new("ps"), e))?;
    if !output.status.success() {
        return Err(usage(&format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(column) = header.split_whitespace().position(|c| c == "PID") else {
        return Err(usage("ps printed no PID column"));
    };
    let mut table = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            table.push_str(line);
            table.push('\n');
        }
    }
    print(&table)
}

fn usage(why: &str) -> Error {
    Error::Oci(mm::oci::OciError::Usage(why.to_owned()))
}

/// `--root`, else /run/mm-oci as the host's root and $XDG_RUNTIME_DIR/mm-oci for others
/// (uid 0 of rootless podman's user namespace too, as runc does).
fn state_root(root: Option<PathBuf>) -> Result<PathBuf, Error> {
    if let Some(root) = root {
        return std::path::absolute(&root).map_err(|e| mm::oci::OciError::io(&root, e).into());
    }
    if mm::host::host_root() {
        return Ok(PathBuf::from("/run/mm-oci"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => Ok(Path::new(&dir).join("mm-oci")),
        _ => Err(usage(
            "XDG_RUNTIME_DIR is not set: give the state directory with --root",
        )),
    }
}

/// One line in the log file: runc's JSON (`{"level","msg","time"}`) or plain text. A log
/// that cannot be written must not hide the error itself, which goes to stderr anyway.
fn write_log((path, format): &(PathBuf, OciLogFormat), level: &str, message: &str) {
    let time = mm::oci::state::rfc3339_now();
    let line = match format {
        OciLogFormat::Json => {
            serde_json::json!({"level": level, "msg": message, "time": time}).to_string()
        }
        OciLogFormat::Text => format!("{time} {level}: {message}"),
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}
