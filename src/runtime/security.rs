//! Locking PID 1 down before it runs anything of the image's: the AppArmor profile of its
//! exec, `no_new_privs` when asked, the seccomp filter, and the capability bounding set.
//!
//! The bounding set limits what any program PID 1 executes can hold; mm's own init keeps
//! its capabilities only to switch the command to its user. Seccomp goes first, while
//! PID 1 still holds `CAP_SYS_ADMIN` in its user namespace, so that a machine with every
//! capability dropped and without `no_new_privileges` still gets the filter.

use std::collections::HashSet;

use caps::{CapSet, Capability};

use super::launch::{Step, StepFailure, WithStep};
use super::seccomp::{self, Program};
use super::sys;
use crate::plan::{Seccomp, Security};

/// `no_new_privs`, the seccomp filter (mm's own; a profile when `no_new_privileges` is
/// off, while PID 1 still holds `CAP_SYS_ADMIN` in its user namespace, as runc loads it),
/// and the capability sets. `program` is the launch's compiled profile.
pub fn lock_down(security: &Security, program: Option<&Program>) -> Result<(), StepFailure> {
    // First, as runc sets it: before no_new_privs, the user's switch and the filter, so
    // nothing of those stands in its way; what executes next (a startContainer hook, the
    // command) runs confined.
    if let Some(profile) = &security.apparmor_profile {
        sys::apparmor_exec_profile(profile).step(|| Step::AppArmor {
            profile: profile.clone(),
        })?;
    }
    if security.no_new_privileges {
        sys::no_new_privs().step(|| Step::NoNewPrivs)?;
    }
    match &security.seccomp {
        Seccomp::None => {}
        Seccomp::MmDefault => {
            seccomp::install(seccomp::Filter::Default).step(|| Step::LoadSeccomp {
                filter: Some("mm-default".to_owned()),
            })?;
        }
        Seccomp::Profile(_) if security.no_new_privileges => {}
        Seccomp::Profile(_) => load_profile(security, program)?,
    }
    let keep = capability_set(&security.capabilities)?;
    let caps_err =
        |what: Step| move |e: caps::errors::CapsError| StepFailure::other(what, e.to_string());
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err(Step::DropCapability {
                capability: cap.to_string(),
            }))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err(Step::ClearAmbientCapabilities))?;
    caps::set(
        None,
        CapSet::Inheritable,
        &capability_set(&security.inheritable)?,
    )
    .map_err(caps_err(Step::ClearInheritableCapabilities))
}

/// With `no_new_privileges`, a profile is loaded as late as it can be: just before the
/// command executes (after the `mm oci start` barrier), so that it filters the command
/// and nothing of mm's set-up. Without, [`lock_down`] loaded it already.
pub fn load_late(security: &Security, program: Option<&Program>) -> Result<(), StepFailure> {
    match &security.seccomp {
        Seccomp::Profile(_) if security.no_new_privileges => load_profile(security, program),
        _ => Ok(()),
    }
}

fn load_profile(security: &Security, program: Option<&Program>) -> Result<(), StepFailure> {
    let step = || Step::LoadSeccomp {
        filter: match &security.seccomp {
            Seccomp::Profile(p) => Some(format!("profile {}", p.digest)),
            _ => None,
        },
    };
    let Some(program) = program else {
        return Err(StepFailure::other(
            step(),
            "the launch carries no compiled program (only `mm oci create` compiles profiles)",
        ));
    };
    seccomp::install_program(program).step(step)
}

/// Raises the plan's ambient set (it needs each capability permitted and inheritable): the
/// last step before an OCI process executes, after it became its user.
pub fn raise_ambient(security: &Security) -> Result<(), StepFailure> {
    if security.ambient.is_empty() {
        return Ok(());
    }
    let wanted = capability_set(&security.ambient)?;
    let inheritable = caps::read(None, CapSet::Inheritable)
        .map_err(|e| StepFailure::other(Step::RaiseAmbientCapabilities, e.to_string()))?;
    caps::set(
        None,
        CapSet::Inheritable,
        &inheritable.union(&wanted).copied().collect(),
    )
    .map_err(|e| StepFailure::other(Step::RaiseAmbientCapabilities, e.to_string()))?;
    for cap in wanted {
        caps::raise(None, CapSet::Ambient, cap)
            .map_err(|e| StepFailure::other(Step::RaiseAmbientCapabilities, e.to_string()))?;
    }
    Ok(())
}

/// `UID:GID` with exactly `groups` as its supplementary groups (an OCI process's user,
/// which names no account).
pub fn numeric_user(spec: &str, groups: &[u32]) -> Result<User, StepFailure> {
    let ids = spec
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)));
    let Some((uid, gid)) = ids else {
        return Err(StepFailure::other(
            Step::SetGroups {
                groups: groups.to_vec(),
            },
            format!("`{spec}` is not UID:GID"),
        ));
    };
    Ok(User {
        uid,
        gid,
        groups: groups.to_vec(),
        account: None,
    })
}

/// `prlimit(2)` of one of the plan's limits on process `pid`: the supervisor sets them on
/// PID 1 while it waits for `mm oci start`, with the supervisor's privilege (host root may
/// raise a hard limit, which no process inside a user namespace may).
/// Writes process `pid`'s `oom_score_adj`: lowering it below what it was needs
/// `CAP_SYS_RESOURCE` (root's), raising it does not.
pub fn set_oom_score_adj(pid: i32, value: i32) -> Result<(), StepFailure> {
    let file = format!("/proc/{pid}/oom_score_adj");
    std::fs::write(&file, value.to_string()).map_err(|e| {
        let mut failure = StepFailure::io(Step::OomScoreAdj { value }, &e);
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            failure.message.push_str(
                " (lowering an oom_score_adj below the caller's needs CAP_SYS_RESOURCE, which \
                 mm does not have here: without it, only values at or above it)",
            );
        }
        failure
    })
}

pub fn set_rlimit(pid: i32, limit: &crate::plan::Rlimit) -> Result<(), StepFailure> {
    use rustix::process::Resource;
    let step = || Step::SetRlimit {
        resource: limit.resource.clone(),
    };
    let resource = match limit.resource.as_str() {
        "RLIMIT_AS" => Resource::As,
        "RLIMIT_CORE" => Resource::Core,
        "RLIMIT_CPU" => Resource::Cpu,
        "RLIMIT_DATA" => Resource::Data,
        "RLIMIT_FSIZE" => Resource::Fsize,
        "RLIMIT_LOCKS" => Resource::Locks,
        "RLIMIT_MEMLOCK" => Resource::Memlock,
        "RLIMIT_MSGQUEUE" => Resource::Msgqueue,
        "RLIMIT_NICE" => Resource::Nice,
        "RLIMIT_NOFILE" => Resource::Nofile,
        "RLIMIT_NPROC" => Resource::Nproc,
        "RLIMIT_RSS" => Resource::Rss,
        "RLIMIT_RTPRIO" => Resource::Rtprio,
        "RLIMIT_RTTIME" => Resource::Rttime,
        "RLIMIT_SIGPENDING" => Resource::Sigpending,
        "RLIMIT_STACK" => Resource::Stack,
        other => {
            return Err(StepFailure::other(
                step(),
                format!("`{other}` is not a resource limit this system knows"),
            ));
        }
    };
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| StepFailure::other(step(), "no such process"))?;
    let new = rustix::process::Rlimit {
        current: Some(limit.soft),
        maximum: Some(limit.hard),
    };
    rustix::process::prlimit(Some(pid), resource, new)
        .map(drop)
        .map_err(std::io::Error::from)
        .step(step)
}

fn capability_set(names: &[String]) -> Result<HashSet<Capability>, StepFailure> {
    names
        .iter()
        .map(|name| {
            name.parse::<Capability>().map_err(|_| {
                StepFailure::other(
                    Step::CapabilityBoundingSet,
                    format!("`{name}` is not a capability this system knows"),
                )
            })
        })
        .collect()
}

/// A user inside the machine, resolved from its `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The user's /etc/passwd entry, when it has one.
    pub account: Option<Account>,
}

/// What /etc/passwd says of a user, for a login (`mm shell`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub home: String,
    pub shell: String,
}

/// Resolves `spec` against the machine's /etc/passwd and /etc/group; for a process that
/// is already inside the machine's root.
pub fn machine_user(spec: &str) -> Result<User, StepFailure> {
    // An image may have no /etc/passwd (numeric users need none: a `FROM scratch` image);
    // an unreadable one is an error, not an empty file.
    let read = |path: &str| match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StepFailure::io(
            Step::ReadMachineFile {
                path: path.to_owned(),
            },
            &e,
        )),
    };
    let (passwd, group) = (read("/etc/passwd")?, read("/etc/group")?);
    resolve_user(spec, passwd.as_deref(), group.as_deref()).map_err(|e| {
        StepFailure::other(
            Step::FindUser {
                spec: spec.to_owned(),
            },
            e,
        )
    })
}

/// Resolves `NAME[:GROUP]` or `UID[:GID]` against the machine's files (read after
/// `pivot_root`, so they are the image's; `None`: the image has no such file). Numbers
/// need no file (as runc and crun run `0:0` in a `FROM scratch` image); a name that
/// cannot be found says which file was missing or lacked it.
pub fn resolve_user(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<User, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let account = entry.as_ref().map(|f| Account {
        name: f[0].to_owned(),
        home: f.get(5).copied().unwrap_or("/").to_owned(),
        shell: f.get(6).copied().unwrap_or_default().to_owned(),
    });
    let id = |f: &[&str], field: usize, what: &str| {
        f[field].parse::<u32>().map_err(|_| {
            format!(
                "the machine's /etc/passwd gives `{}` the {what} `{}`, which is not a number",
                f[0], f[field]
            )
        })
    };
    let (uid, mut gid, name) = match (user.parse::<u32>(), &entry) {
        (Ok(uid), Some(f)) => (uid, id(f, 3, "gid")?, Some(f[0])),
        (Ok(uid), None) => (uid, uid, None),
        (Err(_), Some(f)) => (id(f, 2, "uid")?, id(f, 3, "gid")?, Some(f[0])),
        (Err(_), None) if passwd.is_none() => {
            return Err(format!(
                "user `{user}` cannot be found: the machine has no /etc/passwd (a numeric UID[:GID] needs none)"
            ));
        }
        (Err(_), None) => return Err(format!("user `{user}` is not in the machine's /etc/passwd")),
    };
    let groups_of = group
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() > 3);
    if let Some(g) = grp {
        gid = match g.parse() {
            Ok(gid) => gid,
            Err(_) => {
                let f = groups_of.clone().find(|f| f[0] == g).ok_or_else(|| {
                    if group.is_none() {
                        format!(
                            "group `{g}` cannot be found: the machine has no /etc/group (a numeric GID needs none)"
                        )
                    } else {
                        format!("group `{g}` is not in the machine's /etc/group")
                    }
                })?;
                f[2].parse().map_err(|_| {
                    format!(
                        "the machine's /etc/group gives `{g}` the gid `{}`, which is not a number",
                        f[2]
                    )
                })?
            }
        };
    }
    let mut groups: Vec<u32> = match name {
        Some(name) => groups_of
            .filter(|f| f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => vec![],
    };
    groups.retain(|g| *g != gid);
    groups.insert(0, gid);
    Ok(User {
        uid,
        gid,
        groups,
        account,
    })
}

/// Becomes `user`; as anyone but root this also empties the capability sets.
pub fn become_user(user: &User) -> Result<(), StepFailure> {
    use nix::unistd::{Gid, Uid};
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).step(|| Step::SetGroups {
        groups: user.groups.clone(),
    })?;
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).step(|| Step::BecomeGid { gid: user.gid })?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).step(|| Step::BecomeUid { uid: user.uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/srv:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:34:\nstaff:x:50:www,bob\n";

    #[test]
    fn users_resolve_by_name_number_and_group() {
        let user = |spec| resolve_user(spec, Some(PASSWD), Some(GROUP));
        assert_eq!(
            user("root").unwrap(),
            User {
                uid: 0,
                gid: 0,
                groups: vec![0],
                account: Some(Account {
                    name: "root".into(),
                    home: "/root".into(),
                    shell: "/bin/sh".into()
                })
            }
        );
        assert_eq!(
            user("www").unwrap(),
            User {
                uid: 33,
                gid: 34,
                groups: vec![34, 50],
                account: Some(Account {
                    name: "www".into(),
                    home: "/srv".into(),
                    shell: "/bin/sh".into()
                })
            }
        );
        assert_eq!(user("33").unwrap().gid, 34);
        assert_eq!(
            user("65534:65534").unwrap(),
            User {
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
                account: None
            }
        );
        assert_eq!(user("www:staff").unwrap().gid, 50);
        assert!(user("nobody").unwrap_err().contains("/etc/passwd"));
        assert!(user("www:nogroup").unwrap_err().contains("/etc/group"));
    }

    /// A `FROM scratch` image has neither file: numbers work, names say which file is missing.
    #[test]
    fn without_passwd_and_group_numbers_resolve_and_names_say_what_is_missing() {
        assert_eq!(
            resolve_user("0:0", None, None).unwrap(),
            User {
                uid: 0,
                gid: 0,
                groups: vec![0],
                account: None
            }
        );
        assert_eq!(resolve_user("1000", None, None).unwrap().gid, 1000);
        assert_eq!(
            resolve_user("root", None, None).unwrap_err(),
            "user `root` cannot be found: the machine has no /etc/passwd (a numeric UID[:GID] needs none)"
        );
        assert_eq!(
            resolve_user("0:wheel", Some(PASSWD), None).unwrap_err(),
            "group `wheel` cannot be found: the machine has no /etc/group (a numeric GID needs none)"
        );
        assert_eq!(
            resolve_user("0:0", Some(PASSWD), Some(GROUP))
                .unwrap()
                .account
                .map(|a| a.name),
            Some("root".to_owned()),
            "the numeric default still finds root's home and shell for a login"
        );
    }

    /// Every capability a definition may name is one the bounding set can keep.
    #[test]
    fn every_capability_a_definition_names_is_known_here() {
        for name in crate::definition::capability::ALL {
            assert!(name.parse::<Capability>().is_ok(), "{name}");
        }
    }

    /// A gid that is not a number is the image's fault, said as such: never the uid instead.
    #[test]
    fn a_bad_gid_in_passwd_or_group_is_an_error() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:staff::/srv:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:fifty:\n";
        for spec in ["app", "1000"] {
            assert_eq!(
                resolve_user(spec, Some(passwd), Some(group)),
                Err(
                    "the machine's /etc/passwd gives `app` the gid `staff`, which is not a number"
                        .to_owned()
                ),
                "{spec}"
            );
        }
        assert_eq!(
            resolve_user("root:staff", Some(passwd), Some(group)),
            Err(
                "the machine's /etc/group gives `staff` the gid `fifty`, which is not a number"
                    .to_owned()
            )
        );
    }
}
