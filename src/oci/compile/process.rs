//! `process`: the container's process (args, env, cwd, user, rlimits, terminal) and its
//! lock-down (capabilities, `noNewPrivileges`); also a `mm oci exec` process's.

use std::collections::BTreeSet;

use super::Errors;
use crate::definition::capability;
use crate::oci::fields::FieldError;
use crate::oci::spec::{self, Spec};
use crate::plan::{Command, Exec, Mount, Namespace, Pid1, Process, Rlimit, Security, Terminal};

/// The resource limits of `setrlimit(2)` a config may set.
const RLIMITS: &[&str] = &[
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

/// The container's process and how it is locked down.
/// `apparmor`: whether the host enforces AppArmor ([`crate::host::Host::apparmor`]).
pub(super) fn process(
    config: &Spec,
    id: &crate::oci::ContainerId,
    namespaces: &[Namespace],
    apparmor: bool,
    errors: &mut Errors,
) -> (Process, Security) {
    let empty = spec::Process {
        terminal: false,
        console_size: None,
        user: spec::User {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            umask: None,
        },
        args: Vec::new(),
        env: Vec::new(),
        cwd: "/".to_owned(),
        capabilities: None,
        rlimits: Vec::new(),
        no_new_privileges: false,
        oom_score_adj: None,
        apparmor_profile: None,
    };
    let p = match &config.process {
        Some(p) => p,
        None => {
            errors.at("process", "mm runs a container's process: it needs one");
            &empty
        }
    };
    let terminal = terminal(p, errors);
    if config.process.is_some() && p.args.is_empty() {
        errors.at("process.args", "the process needs at least its program");
    }
    if !p.cwd.starts_with('/') {
        errors.at(
            "process.cwd",
            format!("`{}` is not an absolute path", p.cwd),
        );
    }
    if p.user.umask.is_some_and(|m| m > 0o777) {
        errors.at("process.user.umask", "a umask is at most 0777 (511)");
    }
    if p.oom_score_adj
        .is_some_and(|n| !(-1000..=1000).contains(&n))
    {
        errors.at(
            "process.oomScoreAdj",
            "an oom_score_adj goes from -1000 to 1000",
        );
    }
    let mut rlimits = Vec::new();
    for (i, limit) in p.rlimits.iter().enumerate() {
        if !RLIMITS.contains(&limit.kind.as_str()) {
            errors.at(
                format!("process.rlimits[{i}].type"),
                format!("`{}` is not a resource limit of Linux", limit.kind),
            );
        } else if limit.soft > limit.hard {
            errors.at(
                format!("process.rlimits[{i}].soft"),
                "the soft limit is above the hard one",
            );
        }
        rlimits.push(Rlimit {
            resource: limit.kind.clone(),
            soft: limit.soft,
            hard: limit.hard,
        });
    }
    let hostname = match &config.hostname {
        Some(name) if !namespaces.contains(&Namespace::Uts) => {
            errors.at(
                "hostname",
                "a hostname needs a uts namespace of the container's own",
            );
            name.clone()
        }
        Some(name) => name.clone(),
        None => id.name().to_string(),
    };
    let security = security(p, apparmor, errors);
    let process = Process {
        pid1: Pid1::Direct,
        hostname,
        command: Command::Resolved(Exec {
            argv: p.args.clone(),
            env: p.env.clone(),
            user: format!("{}:{}", p.user.uid, p.user.gid),
            workdir: p.cwd.clone(),
        }),
        rlimits,
        waits_for_start: true,
        hooks: None,
        groups: p.user.additional_gids.clone(),
        umask: p.user.umask,
        oom_score_adj: p.oom_score_adj,
        reparented: true,
        terminal,
    };
    (process, security)
}

/// `process.terminal` and `consoleSize`: the terminal PID 1 opens in the container's own
/// devpts (whether the config mounts one is checked with the mounts).
pub(super) fn terminal(p: &spec::Process, errors: &mut Errors) -> Option<Terminal> {
    let size = p.console_size.map(|size| {
        let fit = |n: u32, field: &str, errors: &mut Errors| {
            u16::try_from(n).unwrap_or_else(|_| {
                errors.at(
                    format!("process.consoleSize.{field}"),
                    format!("{n} is more than a terminal has (at most 65535)"),
                );
                u16::MAX
            })
        };
        (
            fit(size.height, "height", errors),
            fit(size.width, "width", errors),
        )
    });
    if !p.terminal && size.is_some() {
        errors.at(
            "process.consoleSize",
            "a console size needs a terminal (`process.terminal: true`)",
        );
    }
    p.terminal.then_some(Terminal { size })
}

/// A terminal is opened in the container's own devpts: the config must mount one on
/// `/dev/pts` (a pseudo-terminal of the host's devpts is not given to a container).
pub(super) fn has_devpts(mounts: &[Mount]) -> bool {
    mounts.iter().any(|m| {
        matches!(m, Mount::Fs { fstype, target, .. } if fstype == "devpts" && target == "/dev/pts")
    })
}

/// A process to run in a running container (`mm oci exec`), from its runtime-spec
/// `process` object: checked as config.json's process is (the same errors at the same
/// JSON paths), compiled into the plan's process and lock-down.
pub fn exec_process(
    p: &spec::Process,
    id: &crate::oci::ContainerId,
    apparmor: bool,
) -> Result<(Process, Security), Vec<FieldError>> {
    let config = Spec {
        oci_version: "1.0.0".to_owned(),
        process: Some(p.clone()),
        root: None,
        hostname: None,
        mounts: Vec::new(),
        annotations: Default::default(),
        linux: None,
        hooks: None,
    };
    let mut errors = Errors(Vec::new());
    let compiled = process(&config, id, &[Namespace::Uts], apparmor, &mut errors);
    if errors.0.is_empty() {
        Ok(compiled)
    } else {
        Err(errors.0)
    }
}

/// The capability sets. PID 1 executes as root with exactly its bounding set effective
/// and permitted (no file capabilities), or as another user with none: a config that
/// asks otherwise is refused. And the AppArmor profile (`apparmor`: whether the host
/// enforces AppArmor).
pub(super) fn security(p: &spec::Process, apparmor: bool, errors: &mut Errors) -> Security {
    let caps = p.capabilities.clone().unwrap_or_default();
    let names = |field: &str, list: &[String], errors: &mut Errors| -> Vec<String> {
        let mut set = BTreeSet::new();
        for (i, name) in list.iter().enumerate() {
            match capability::canonical(name) {
                Some(c) => {
                    set.insert(c.to_owned());
                }
                None => errors.at(
                    format!("process.capabilities.{field}[{i}]"),
                    format!("`{name}` is not a capability"),
                ),
            }
        }
        set.into_iter().collect()
    };
    let bounding = names("bounding", &caps.bounding, errors);
    let root = p.user.uid == 0;
    let mut sets = Vec::new();
    for (field, list) in [
        ("effective", &caps.effective),
        ("permitted", &caps.permitted),
        ("inheritable", &caps.inheritable),
        ("ambient", &caps.ambient),
    ] {
        let set = list
            .as_deref()
            .map(|l| names(field, l, errors))
            .unwrap_or_default();
        let subset = set.iter().all(|c| bounding.contains(c));
        let fine = match field {
            "effective" | "permitted" if root => list.is_none() || set == bounding,
            "effective" | "permitted" => set.is_empty(),
            "ambient" if !root => set.is_empty(),
            _ => subset,
        };
        if !fine {
            let why = if root {
                "as root, mm gives the process its bounding set as effective and permitted \
                 sets, and takes inheritable and ambient capabilities from inside it only"
            } else {
                "mm gives a process that is not root no capabilities (effective, permitted \
                 and ambient sets must be empty)"
            };
            errors.at(format!("process.capabilities.{field}"), why);
        }
        sets.push(set);
    }
    let ambient = sets.pop().unwrap_or_default();
    let inheritable = sets.pop().unwrap_or_default();
    Security {
        capabilities: bounding,
        seccomp: crate::plan::Seccomp::None,
        no_new_privileges: p.no_new_privileges,
        inheritable,
        ambient,
        apparmor_profile: apparmor_profile(p, apparmor, errors),
    }
}

/// `process.apparmorProfile`: a profile's name, on a host that enforces AppArmor. Where
/// the kernel has none, the process would run unconfined, which its config did not ask
/// for: refused, as youki refuses it (crun and runc ignore it there).
fn apparmor_profile(p: &spec::Process, enabled: bool, errors: &mut Errors) -> Option<String> {
    let name = p.apparmor_profile.as_deref().filter(|n| !n.is_empty())?;
    let field = "process.apparmorProfile";
    if name.contains(['\n', '\0']) || name.trim() != name {
        errors.at(
            field,
            format!("{name:?} is not the name of a profile (no spaces around it, no newline)"),
        );
    } else if !enabled {
        errors.at(
            field,
            format!(
                "`{name}`: AppArmor is not enabled on this host \
                 (/sys/module/apparmor/parameters/enabled is not Y), and mm does not run a \
                 process unconfined when its config names a profile"
            ),
        );
    }
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_profile(profile: &str, apparmor: bool) -> Result<Security, Vec<FieldError>> {
        let p: spec::Process = serde_json::from_value(serde_json::json!({
            "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
            "apparmorProfile": profile,
        }))
        .unwrap();
        let id = crate::oci::ContainerId::new("c1").unwrap();
        exec_process(&p, &id, apparmor).map(|(_, security)| security)
    }

    /// podman and containerd name a profile in every config on a host with AppArmor
    /// (`containers-default-0.50.1`, `cri-containerd.apparmor.d`).
    #[test]
    fn an_apparmor_profile_is_taken_where_the_host_enforces_apparmor_and_refused_elsewhere() {
        let security = with_profile("containers-default-0.50.1", true).unwrap();
        assert_eq!(
            security.apparmor_profile.as_deref(),
            Some("containers-default-0.50.1")
        );
        let refused = with_profile("containers-default-0.50.1", false).unwrap_err();
        assert_eq!(refused[0].path, "process.apparmorProfile");
        assert!(
            refused[0]
                .why
                .contains("AppArmor is not enabled on this host"),
            "{}",
            refused[0].why
        );
        let bad = with_profile("a\nchange_profile b", true).unwrap_err();
        assert_eq!(bad[0].path, "process.apparmorProfile");
        // An empty name is no profile, as runc takes it.
        assert_eq!(with_profile("", false).unwrap().apparmor_profile, None);
    }
}
