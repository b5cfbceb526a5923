//! `mm oci exec`: another process in a created or running container, as conmon and
//! containerd's shim ask for it (`--process FILE` with a runtime-spec `process`, or the
//! container's own process with runc's changes: `--cwd`, `--env`, `--user`, `--cap`, …).
//!
//! The process is checked as config.json's process is (same errors, same JSON paths),
//! compiled into the plan's process and lock-down (with the container's seccomp filter),
//! and run by `runtime::enter`, which joins the container's cgroup and namespaces.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::spec;
use super::state::{Container, Status};
use super::{OciError, Options};
use crate::runtime::enter::{self, OciProcess, OciStreams, Outcome};

/// What `mm oci exec` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--process FILE`: a runtime-spec `process` object.
    pub process: Option<PathBuf>,
    pub tty: bool,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub cwd: Option<String>,
    /// `KEY=VALUE`, over the container's.
    pub env: Vec<String>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    /// Added to the process's bounding set (and so, as root, to its effective set).
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    /// `--apparmor PROFILE`, over the container's.
    pub apparmor: Option<String>,
    pub preserve_fds: u32,
    pub args: Vec<String>,
}

/// Runs the request in container `id`: its exit status, or 0 once a detached one runs.
pub fn exec(options: &Options, id: &str, request: &Request) -> Result<i32, OciError> {
    let container = Container::new(&options.state_root, id)?;
    let name = super::ContainerId::new(id)?;
    let (_, status) = container.status()?;
    if !matches!(status, Status::Created | Status::Running) {
        return Err(OciError::WrongState {
            id: id.to_owned(),
            status,
            what: "a process can be executed only in a created or running container".to_owned(),
        });
    }
    let (_, launch) = crate::runtime::state::running(&container.paths)
        .map_err(|e| OciError::io(&container.paths.state(), e))?
        .ok_or_else(|| OciError::NotFound { id: id.to_owned() })?;
    let (process, origin) = match &request.process {
        Some(file) => (from_file(file, request)?, file.clone()),
        None => (
            from_container(&launch.plan, request)?,
            PathBuf::from("mm oci exec"),
        ),
    };
    let (compiled, mut security) =
        super::compile::exec_process(&process, &name, crate::host::apparmor_enabled()).map_err(
            |errors| OciError::Config {
                path: origin,
                errors,
            },
        )?;
    // The container's own filter and (unless the process names another) AppArmor profile:
    // exec'd processes are confined as its PID 1 is, as runc confines them.
    security.seccomp = launch.plan.security.seccomp.clone();
    if security.apparmor_profile.is_none() {
        security.apparmor_profile = launch.plan.security.apparmor_profile.clone();
    }
    let crate::plan::Command::Resolved(exec) = compiled.command else {
        return Err(OciError::Usage("the process has no command".to_owned()));
    };
    let streams = streams(request, compiled.terminal)?;
    let pid_file = request.pid_file.as_deref().map(PidFile::open).transpose()?;
    let command = enter::Command {
        argv: Vec::new(),
        user: None,
        login: false,
        caller: crate::runtime::caller::Caller::current(),
        oci: Some(OciProcess {
            exec,
            groups: compiled.groups,
            umask: compiled.umask,
            rlimits: compiled.rlimits,
            oom_score_adj: compiled.oom_score_adj,
            security,
            seccomp: launch.seccomp.clone(),
            streams,
            detach: request.detach,
            preserve_fds: request.preserve_fds,
            pid_file: pid_file.map(|p| (p.dir, p.name)),
        }),
    };
    match enter::run(id, &container.paths, &command)? {
        Outcome::Exited(code) => Ok(code),
        Outcome::Detached(_) => Ok(0),
    }
}

/// The pid file's directory, opened before mm enters the container (the path is the
/// host's), and the file's name in it.
struct PidFile {
    dir: OwnedFd,
    name: String,
}

impl PidFile {
    fn open(path: &Path) -> Result<Self, OciError> {
        let path = std::path::absolute(path).map_err(|e| OciError::io(path, e))?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(OciError::Usage(format!(
                "--pid-file {}: not a file's path",
                path.display()
            )));
        };
        let dir = std::fs::File::open(dir).map_err(|e| OciError::io(dir, e))?;
        Ok(Self {
            dir: dir.into(),
            name: name.to_string_lossy().into_owned(),
        })
    }
}

/// The process's standard streams, by runc's rules: a terminal goes to the console
/// socket, or without one is relayed (not when detached); a socket needs a terminal.
/// The caller's streams go to the process as they are, unless one is a terminal: mm
/// never gives a container a descriptor of a host terminal, so those are relayed.
fn streams(
    request: &Request,
    terminal: Option<crate::plan::Terminal>,
) -> Result<OciStreams, OciError> {
    let usage = |why: &str| Err(OciError::Usage(why.to_owned()));
    match (terminal, &request.console_socket) {
        (Some(terminal), Some(path)) => {
            let socket =
                crate::runtime::terminal::connect(path).map_err(|e| OciError::io(path, e))?;
            Ok(OciStreams::ConsoleSocket {
                socket,
                size: terminal.size,
            })
        }
        (Some(_), None) if request.detach => usage(
            "a detached process with a terminal needs --console-socket, where its master goes",
        ),
        (Some(_), None) => Ok(OciStreams::Relay { terminal: true }),
        (None, Some(_)) => {
            usage("--console-socket is given, but the process has no terminal (--tty)")
        }
        (None, None) if crate::runtime::stdio::any_terminal() => {
            if request.detach {
                return usage(
                    "a standard stream is a terminal, and mm does not give a container a host \
                     terminal: use --tty with --console-socket, or other streams",
                );
            }
            Ok(OciStreams::Relay { terminal: false })
        }
        (None, None) => Ok(OciStreams::Inherit),
    }
}

/// `--process FILE`: the runtime-spec `process` object, every field checked at its JSON
/// path; of runc's other options only those conmon passes with it are taken.
fn from_file(file: &Path, request: &Request) -> Result<spec::Process, OciError> {
    let overrides = [
        ("--cwd", request.cwd.is_some()),
        ("--env", !request.env.is_empty()),
        ("--user", request.user.is_some()),
        ("--no-new-privs", request.no_new_privs),
        ("--apparmor", request.apparmor.is_some()),
        ("ARGS", !request.args.is_empty()),
    ];
    if let Some((flag, _)) = overrides.iter().find(|(_, given)| *given) {
        return Err(OciError::Usage(format!(
            "{flag} with --process: the process file says what runs, and how"
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| OciError::io(file, e))?;
    let json = |source| OciError::Json {
        path: file.to_owned(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
    let errors = super::fields::check(&serde_json::json!({ "process": value }));
    if !errors.is_empty() {
        return Err(OciError::Config {
            path: file.to_owned(),
            errors,
        });
    }
    let mut process: spec::Process = serde_json::from_value(value).map_err(json)?;
    process.terminal |= request.tty;
    add_caps(&mut process, &request.caps);
    Ok(process)
}

/// The container's own process (its compiled plan), with runc's changes.
fn from_container(plan: &crate::plan::Plan, request: &Request) -> Result<spec::Process, OciError> {
    let crate::plan::Command::Resolved(exec) = &plan.process.command else {
        return Err(OciError::Usage(
            "the container's process is not resolved".to_owned(),
        ));
    };
    if request.args.is_empty() {
        return Err(OciError::Usage(
            "what to run: mm oci exec ID COMMAND [ARGS...], or --process FILE".to_owned(),
        ));
    }
    let ids = |spec: &str| -> Option<(u32, Option<u32>)> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let gid = g.map(str::parse).transpose().ok()?;
        Some((u.parse().ok()?, gid))
    };
    let (uid, gid) = ids(&exec.user).ok_or_else(|| {
        OciError::Usage(format!(
            "the container's user `{}` is not UID:GID",
            exec.user
        ))
    })?;
    let (uid, gid) = match &request.user {
        Some(user) => {
            let (u, g) = ids(user).ok_or_else(|| {
                OciError::Usage(format!("--user {user}: not UID or UID:GID (numbers)"))
            })?;
            (u, g.or(gid))
        }
        None => (uid, gid),
    };
    let mut env = exec.env.clone();
    for kv in &request.env {
        let Some((key, _)) = kv.split_once('=') else {
            return Err(OciError::Usage(format!("--env {kv}: not KEY=VALUE")));
        };
        env.retain(|old| old.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(kv.clone());
    }
    let security = &plan.security;
    let mut process = spec::Process {
        terminal: request.tty,
        console_size: None,
        user: spec::User {
            uid,
            gid: gid.unwrap_or(0),
            additional_gids: plan.process.groups.clone(),
            umask: plan.process.umask,
        },
        args: request.args.clone(),
        env,
        cwd: request.cwd.clone().unwrap_or_else(|| exec.workdir.clone()),
        capabilities: Some(spec::Capabilities {
            bounding: security.capabilities.clone(),
            effective: None,
            inheritable: Some(security.inheritable.clone()),
            permitted: None,
            // Ambient capabilities are for a process that is not root; another user
            // given with --user gets none.
            ambient: Some(if uid == 0 || request.user.is_none() {
                security.ambient.clone()
            } else {
                Vec::new()
            }),
        }),
        rlimits: Vec::new(),
        no_new_privileges: security.no_new_privileges || request.no_new_privs,
        oom_score_adj: plan.process.oom_score_adj,
        // Else the container's, given to the compiled process.
        apparmor_profile: request.apparmor.clone(),
    };
    add_caps(&mut process, &request.caps);
    Ok(process)
}

/// `--cap NAME`: into the bounding set (checked as names with the rest).
fn add_caps(process: &mut spec::Process, caps: &[String]) {
    if caps.is_empty() {
        return;
    }
    let sets = process.capabilities.get_or_insert_with(Default::default);
    for cap in caps {
        if !sets.bounding.contains(cap) {
            sets.bounding.push(cap.clone());
        }
    }
    // Root's effective and permitted sets are its bounding set.
    if process.user.uid == 0 {
        sets.effective = None;
        sets.permitted = None;
    }
}
