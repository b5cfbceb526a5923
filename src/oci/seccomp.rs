//! A bundle's `linux.seccomp` validated into the plan's typed profile: every value mm
//! cannot take is a [`FieldError`] at its exact JSON path. Pure: it reads nothing (syscall
//! names are looked up in libseccomp's built-in tables).
//!
//! As runc and crun do, a syscall name this libseccomp does not know is skipped (podman's
//! profile names calls newer than Debian 12's libseccomp): the plan lists each one, and
//! `mm oci create` logs them. A rule whose action is the default one changes nothing and is
//! left out, as both do.

use libseccomp::{ScmpArch, ScmpSyscall};

use super::fields::FieldError;
use super::spec;
use crate::plan::seccomp::{Action, ArgCondition, CmpOp, Filter, Flag, Overridden, Profile, Rule};

const AT: &str = "linux.seccomp";

/// `linux.seccomp` as the plan's profile, or the errors found, each at its path.
pub fn profile(seccomp: &spec::Seccomp, errors: &mut Vec<FieldError>) -> Option<Profile> {
    let before = errors.len();
    let mut err = |path: String, why: String| errors.push(FieldError { path, why });
    let default_action = action(
        &seccomp.default_action,
        seccomp.default_errno_ret,
        &format!("{AT}.defaultAction"),
        &format!("{AT}.defaultErrnoRet"),
        &mut err,
    );
    let mut architectures = Vec::new();
    for (i, arch) in seccomp.architectures.iter().enumerate() {
        match arch.parse::<ScmpArch>() {
            Ok(_) if !architectures.contains(arch) => architectures.push(arch.clone()),
            Ok(_) => {}
            Err(_) => err(
                format!("{AT}.architectures[{i}]"),
                format!(
                    "`{arch}` is not an architecture libseccomp knows (such as SCMP_ARCH_X86_64)"
                ),
            ),
        }
    }
    let mut flags = Vec::new();
    for (i, flag) in seccomp.flags.iter().enumerate() {
        let parsed = match flag.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => Flag::Tsync,
            "SECCOMP_FILTER_FLAG_LOG" => Flag::Log,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => Flag::SpecAllow,
            "SECCOMP_FILTER_FLAG_NEW_LISTENER" | "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => {
                err(
                    format!("{AT}.flags[{i}]"),
                    format!("`{flag}`: mm has no seccomp notify agent"),
                );
                continue;
            }
            _ => {
                err(
                    format!("{AT}.flags[{i}]"),
                    format!(
                        "`{flag}` is not a seccomp filter flag mm knows (SECCOMP_FILTER_FLAG_TSYNC, _LOG, _SPEC_ALLOW)"
                    ),
                );
                continue;
            }
        };
        if !flags.contains(&parsed) {
            flags.push(parsed);
        }
    }
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    // Each call's unconditional action, and where it was given: libseccomp keeps the first
    // and drops a later, different one without a word (podman's own profile has such
    // pairs: `setns` allowed, then denied without CAP_SYS_ADMIN). mm keeps the first too,
    // as runc and crun do through libseccomp, and lists the others in the plan.
    let mut overridden = Vec::new();
    let mut unconditional: std::collections::HashMap<&str, (Action, String)> =
        std::collections::HashMap::new();
    for (i, call) in seccomp.syscalls.iter().enumerate() {
        let at = format!("{AT}.syscalls[{i}]");
        let act = action(
            &call.action,
            call.errno_ret,
            &format!("{at}.action"),
            &format!("{at}.errnoRet"),
            &mut err,
        );
        if call.names.is_empty() {
            err(
                format!("{at}.names"),
                "a rule needs at least one syscall name".to_owned(),
            );
        }
        let mut args = Vec::new();
        for (j, arg) in call.args.iter().enumerate() {
            let at = format!("{at}.args[{j}]");
            let Ok(index) = u8::try_from(arg.index)
                .map_err(drop)
                .and_then(|i| if i < 6 { Ok(i) } else { Err(()) })
            else {
                err(
                    format!("{at}.index"),
                    format!("{}: a syscall has arguments 0 to 5", arg.index),
                );
                continue;
            };
            let op = match arg.op.as_str() {
                "SCMP_CMP_NE" => CmpOp::Ne,
                "SCMP_CMP_LT" => CmpOp::Lt,
                "SCMP_CMP_LE" => CmpOp::Le,
                "SCMP_CMP_EQ" => CmpOp::Eq,
                "SCMP_CMP_GE" => CmpOp::Ge,
                "SCMP_CMP_GT" => CmpOp::Gt,
                "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq,
                other => {
                    err(
                        format!("{at}.op"),
                        format!(
                            "`{other}` is not a comparison (SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ)"
                        ),
                    );
                    continue;
                }
            };
            if op != CmpOp::MaskedEq && arg.value_two != 0 {
                err(
                    format!("{at}.valueTwo"),
                    "only SCMP_CMP_MASKED_EQ takes a second value".to_owned(),
                );
            }
            args.push(ArgCondition {
                index,
                op,
                value: arg.value,
                value_two: arg.value_two,
            });
        }
        let Some(act) = act else { continue };
        for (j, name) in call.names.iter().enumerate() {
            if name.is_empty() {
                err(
                    format!("{at}.names[{j}]"),
                    "an empty syscall name".to_owned(),
                );
                continue;
            }
            if ScmpSyscall::from_name(name).is_err() {
                if !skipped.contains(name) {
                    skipped.push(name.clone());
                }
                continue;
            }
            // runc and crun skip these too: libseccomp refuses them.
            if Some(act) == default_action {
                continue;
            }
            if call.args.is_empty() {
                match unconditional.get(name.as_str()) {
                    Some((earlier, _)) if *earlier == act => continue,
                    Some((earlier, place)) => {
                        overridden.push(Overridden {
                            syscall: name.clone(),
                            action: act,
                            at: at.clone(),
                            kept: *earlier,
                            kept_at: place.clone(),
                        });
                        continue;
                    }
                    None => {
                        unconditional.insert(name, (act, at.clone()));
                    }
                }
            }
            rules.push(Rule {
                syscall: name.clone(),
                action: act,
                args: args.clone(),
            });
        }
    }
    let default_action = default_action?;
    if errors.len() > before {
        return None;
    }
    let filter = Filter {
        default_action,
        architectures,
        flags,
        rules,
    };
    Some(Profile {
        digest: filter.digest(),
        filter,
        skipped,
        overridden,
    })
}

/// An action and its errno (for ERRNO and TRACE; EPERM when the profile gives none, as
/// runc and crun take it).
fn action(
    name: &str,
    errno: Option<u32>,
    at: &str,
    errno_at: &str,
    err: &mut impl FnMut(String, String),
) -> Option<Action> {
    let mut value = || -> Option<u16> {
        match errno.map(u16::try_from) {
            None => Some(libc::EPERM as u16),
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                err(
                    errno_at.to_owned(),
                    format!("{} is above 65535", errno.unwrap_or_default()),
                );
                None
            }
        }
    };
    let takes_errno = matches!(name, "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE");
    let parsed = match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Some(Some(Action::KillThread)),
        "SCMP_ACT_KILL_PROCESS" => Some(Some(Action::KillProcess)),
        "SCMP_ACT_TRAP" => Some(Some(Action::Trap)),
        "SCMP_ACT_ERRNO" => Some(value().map(Action::Errno)),
        "SCMP_ACT_TRACE" => Some(value().map(Action::Trace)),
        "SCMP_ACT_ALLOW" => Some(Some(Action::Allow)),
        "SCMP_ACT_LOG" => Some(Some(Action::Log)),
        _ => None,
    };
    let Some(parsed) = parsed else {
        let why = if name == "SCMP_ACT_NOTIFY" {
            "SCMP_ACT_NOTIFY: mm has no seccomp notify agent".to_owned()
        } else {
            format!(
                "`{name}` is not a seccomp action (SCMP_ACT_KILL, _KILL_PROCESS, _KILL_THREAD, _TRAP, _ERRNO, _TRACE, _ALLOW or _LOG)"
            )
        };
        err(at.to_owned(), why);
        return None;
    };
    if errno.is_some() && !takes_errno {
        err(
            errno_at.to_owned(),
            format!("only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, not {name}"),
        );
        return None;
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<Profile, Vec<String>> {
        let seccomp: spec::Seccomp = serde_json::from_str(json).unwrap();
        let mut errors = Vec::new();
        match profile(&seccomp, &mut errors) {
            Some(p) if errors.is_empty() => Ok(p),
            _ => Err(errors.iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn a_profile_becomes_one_rule_per_known_name() {
        let p = check(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[
                  {"names":["read","write","no_such_call_at_all"],"action":"SCMP_ACT_ALLOW"},
                  {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
                   "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                  {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                  {"names":["clone"],"action":"SCMP_ACT_ALLOW",
                   "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}
                ]}"#,
        )
        .unwrap();
        assert_eq!(p.filter.default_action, Action::Errno(38));
        assert_eq!(p.filter.flags, [Flag::Log]);
        let names: Vec<&str> = p.filter.rules.iter().map(|r| r.syscall.as_str()).collect();
        // mkdir's rule is the default action: it changes nothing.
        assert_eq!(names, ["read", "write", "personality", "clone"]);
        assert_eq!(p.skipped, ["no_such_call_at_all"]);
        assert_eq!(p.filter.rules[2].args[0].op, CmpOp::Eq);
        assert_eq!(p.filter.rules[3].args[0].op, CmpOp::MaskedEq);
        assert_eq!(p.digest, p.filter.digest());
    }

    #[test]
    fn errno_defaults_to_eperm() {
        let p = check(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert_eq!(p.filter.rules[0].action, Action::Errno(1));
        assert_eq!(p.filter.default_action, Action::Allow);
    }

    #[test]
    fn every_bad_value_is_named_at_its_path() {
        let errors = check(
            r#"{"defaultAction":"SCMP_ACT_NOTIFY","architectures":["SCMP_ARCH_VAX"],
                "flags":["SECCOMP_FILTER_FLAG_NEW_LISTENER","SECCOMP_FILTER_FLAG_FAST"],
                "syscalls":[
                  {"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1},
                  {"names":[],"action":"SCMP_ACT_EXPLODE"},
                  {"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":70000},
                  {"names":["open"],"action":"SCMP_ACT_ALLOW","args":[
                     {"index":6,"value":1,"op":"SCMP_CMP_EQ"},
                     {"index":0,"value":1,"op":"SCMP_CMP_ABOUT"},
                     {"index":1,"value":1,"valueTwo":2,"op":"SCMP_CMP_EQ"}]}
                ]}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = errors
            .iter()
            .map(|e| e.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "linux.seccomp.defaultAction",
                "linux.seccomp.architectures[0]",
                "linux.seccomp.flags[0]",
                "linux.seccomp.flags[1]",
                "linux.seccomp.syscalls[0].errnoRet",
                "linux.seccomp.syscalls[1].action",
                "linux.seccomp.syscalls[1].names",
                "linux.seccomp.syscalls[2].errnoRet",
                "linux.seccomp.syscalls[3].args[0].index",
                "linux.seccomp.syscalls[3].args[1].op",
                "linux.seccomp.syscalls[3].args[2].valueTwo",
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn a_later_action_of_a_call_is_overridden_by_its_first_and_listed() {
        let p = check(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                  {"names":["mkdir","rmdir"],"action":"SCMP_ACT_ERRNO"},
                  {"names":["rmdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                  {"names":["getpid","mkdir"],"action":"SCMP_ACT_KILL"}]}"#,
        )
        .unwrap();
        let rules: Vec<(&str, Action)> = p
            .filter
            .rules
            .iter()
            .map(|r| (r.syscall.as_str(), r.action))
            .collect();
        assert_eq!(
            rules,
            [
                ("mkdir", Action::Errno(1)),
                ("rmdir", Action::Errno(1)),
                ("getpid", Action::KillThread)
            ]
        );
        assert_eq!(
            p.overridden,
            [Overridden {
                syscall: "mkdir".into(),
                action: Action::KillThread,
                at: "linux.seccomp.syscalls[2]".into(),
                kept: Action::Errno(1),
                kept_at: "linux.seccomp.syscalls[0]".into(),
            }]
        );
    }
}
