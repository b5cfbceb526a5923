//! Which `config.json` fields mm handles, which the runtime-spec has and mm refuses, and
//! the walk that finds every field of a document in neither (each with its JSON path).
//!
//! mm refuses rather than ignores: a field it does not honour is an error naming it
//! (`linux.sysctl is not supported by mm`), and so is a field the runtime-spec does not
//! have (a misspelling), with the closest field mm knows.

use serde_json::Value;

/// A field that cannot be taken, at its JSON path (`linux.namespaces[2].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub why: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

/// The fields mm reads, as patterns: `[]` stands for any index, a trailing `.*` for any
/// key of a free map (whose values are not looked into).
const HANDLED: &[&str] = &[
    "ociVersion",
    "process",
    "process.terminal",
    "process.consoleSize",
    "process.consoleSize.height",
    "process.consoleSize.width",
    "process.user",
    "process.user.uid",
    "process.user.gid",
    "process.user.additionalGids",
    "process.user.umask",
    "process.args",
    "process.env",
    "process.cwd",
    "process.capabilities",
    "process.capabilities.bounding",
    "process.capabilities.effective",
    "process.capabilities.inheritable",
    "process.capabilities.permitted",
    "process.capabilities.ambient",
    "process.oomScoreAdj",
    "process.apparmorProfile",
    "process.rlimits",
    "process.rlimits[]",
    "process.rlimits[].type",
    "process.rlimits[].soft",
    "process.rlimits[].hard",
    "process.noNewPrivileges",
    "root",
    "root.path",
    "root.readonly",
    "hostname",
    "mounts",
    "mounts[]",
    "mounts[].destination",
    "mounts[].type",
    "mounts[].source",
    "mounts[].options",
    "annotations",
    "annotations.*",
    "hooks",
    "hooks.prestart",
    "hooks.prestart[]",
    "hooks.prestart[].path",
    "hooks.prestart[].args",
    "hooks.prestart[].env",
    "hooks.prestart[].timeout",
    "hooks.createRuntime",
    "hooks.createRuntime[]",
    "hooks.createRuntime[].path",
    "hooks.createRuntime[].args",
    "hooks.createRuntime[].env",
    "hooks.createRuntime[].timeout",
    "hooks.createContainer",
    "hooks.createContainer[]",
    "hooks.createContainer[].path",
    "hooks.createContainer[].args",
    "hooks.createContainer[].env",
    "hooks.createContainer[].timeout",
    "hooks.startContainer",
    "hooks.startContainer[]",
    "hooks.startContainer[].path",
    "hooks.startContainer[].args",
    "hooks.startContainer[].env",
    "hooks.startContainer[].timeout",
    "hooks.poststart",
    "hooks.poststart[]",
    "hooks.poststart[].path",
    "hooks.poststart[].args",
    "hooks.poststart[].env",
    "hooks.poststart[].timeout",
    "hooks.poststop",
    "hooks.poststop[]",
    "hooks.poststop[].path",
    "hooks.poststop[].args",
    "hooks.poststop[].env",
    "hooks.poststop[].timeout",
    "linux.sysctl",
    "linux.sysctl.*",
    "linux.devices",
    "linux.devices[]",
    "linux.devices[].path",
    "linux.devices[].type",
    "linux.devices[].major",
    "linux.devices[].minor",
    "linux.devices[].fileMode",
    "linux.devices[].uid",
    "linux.devices[].gid",
    "linux",
    "linux.uidMappings",
    "linux.uidMappings[]",
    "linux.uidMappings[].containerID",
    "linux.uidMappings[].hostID",
    "linux.uidMappings[].size",
    "linux.gidMappings",
    "linux.gidMappings[]",
    "linux.gidMappings[].containerID",
    "linux.gidMappings[].hostID",
    "linux.gidMappings[].size",
    "linux.namespaces",
    "linux.namespaces[]",
    "linux.namespaces[].type",
    "linux.namespaces[].path",
    "linux.resources",
    "linux.resources.devices",
    "linux.resources.devices[]",
    "linux.resources.devices[].allow",
    "linux.resources.devices[].type",
    "linux.resources.devices[].major",
    "linux.resources.devices[].minor",
    "linux.resources.devices[].access",
    "linux.resources.memory",
    "linux.resources.hugepageLimits",
    "linux.resources.hugepageLimits[]",
    "linux.resources.hugepageLimits[].pageSize",
    "linux.resources.hugepageLimits[].limit",
    "linux.resources.memory.limit",
    "linux.resources.memory.swap",
    "linux.resources.cpu",
    "linux.resources.cpu.quota",
    "linux.resources.cpu.shares",
    "linux.resources.cpu.cpus",
    "linux.resources.cpu.mems",
    "linux.resources.cpu.period",
    "linux.resources.pids",
    "linux.resources.pids.limit",
    "linux.cgroupsPath",
    "linux.rootfsPropagation",
    "linux.maskedPaths",
    "linux.readonlyPaths",
    "linux.seccomp",
    "linux.seccomp.defaultAction",
    "linux.seccomp.defaultErrnoRet",
    "linux.seccomp.architectures",
    "linux.seccomp.flags",
    "linux.seccomp.syscalls",
    "linux.seccomp.syscalls[]",
    "linux.seccomp.syscalls[].names",
    "linux.seccomp.syscalls[].action",
    "linux.seccomp.syscalls[].errnoRet",
    "linux.seccomp.syscalls[].args",
    "linux.seccomp.syscalls[].args[]",
    "linux.seccomp.syscalls[].args[].index",
    "linux.seccomp.syscalls[].args[].value",
    "linux.seccomp.syscalls[].args[].valueTwo",
    "linux.seccomp.syscalls[].args[].op",
];

/// Fields of the runtime-spec (1.0 to 1.2) that mm does not honour (yet), each with why.
/// A prefix covers what is below it.
const REFUSED: &[(&str, &str)] = &[
    ("process.selinuxLabel", "mm has no SELinux support"),
    ("process.scheduler", "not supported by mm yet"),
    ("process.ioPriority", "not supported by mm yet"),
    ("process.execCPUAffinity", "not supported by mm yet"),
    ("process.user.username", "a Windows field"),
    ("process.commandLine", "a Windows field"),
    ("domainname", "not supported by mm yet"),
    (
        "mounts[].uidMappings",
        "id-mapped mounts of a bundle are not supported by mm yet",
    ),
    (
        "mounts[].gidMappings",
        "id-mapped mounts of a bundle are not supported by mm yet",
    ),
    (
        "linux.timeOffsets",
        "a time namespace is not supported by mm yet",
    ),
    (
        "linux.seccomp.listenerPath",
        "mm has no seccomp notify agent (SCMP_ACT_NOTIFY)",
    ),
    (
        "linux.seccomp.listenerMetadata",
        "mm has no seccomp notify agent (SCMP_ACT_NOTIFY)",
    ),
    ("linux.mountLabel", "mm has no SELinux support"),
    ("linux.intelRdt", "not supported by mm"),
    ("linux.personality", "not supported by mm yet"),
    ("linux.memoryPolicy", "not supported by mm yet"),
    ("linux.netDevices", "not supported by mm yet"),
    (
        "linux.resources.memory.reservation",
        "not supported by mm yet",
    ),
    ("linux.resources.memory.kernel", "not supported by mm yet"),
    (
        "linux.resources.memory.kernelTCP",
        "not supported by mm yet",
    ),
    (
        "linux.resources.memory.swappiness",
        "not supported by mm yet",
    ),
    (
        "linux.resources.memory.disableOOMKiller",
        "not supported by mm yet",
    ),
    (
        "linux.resources.memory.useHierarchy",
        "not supported by mm yet",
    ),
    (
        "linux.resources.memory.checkBeforeUpdate",
        "not supported by mm yet",
    ),
    ("linux.resources.cpu.burst", "not supported by mm yet"),
    (
        "linux.resources.cpu.realtimeRuntime",
        "not supported by mm yet",
    ),
    (
        "linux.resources.cpu.realtimePeriod",
        "not supported by mm yet",
    ),
    ("linux.resources.cpu.idle", "not supported by mm yet"),
    ("linux.resources.blockIO", "not supported by mm yet"),
    ("linux.resources.network", "not supported by mm yet"),
    ("linux.resources.rdma", "not supported by mm yet"),
    ("linux.resources.unified", "not supported by mm yet"),
    ("solaris", "a Solaris field"),
    ("windows", "a Windows field"),
    ("vm", "virtual-machine containers are not supported by mm"),
    ("zos", "a z/OS field"),
];

/// Every field of `doc` that mm does not handle, keys in sorted order.
pub fn check(doc: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    walk(doc, "", "", &mut errors);
    errors
}

fn walk(value: &Value, pattern: &str, shown: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::Object(map) => {
            // A free map (annotations): its keys are anything, dots included.
            if HANDLED.contains(&format!("{pattern}.*").as_str()) {
                return;
            }
            for (key, child) in map {
                let (full, shown) = if pattern.is_empty() {
                    (key.clone(), key.clone())
                } else {
                    (format!("{pattern}.{key}"), format!("{shown}.{key}"))
                };
                if HANDLED.contains(&full.as_str()) {
                    walk(child, &full, &shown, errors);
                    continue;
                }
                let why = match refused(&full) {
                    // A reason that is only "not supported by mm (yet)" is said once.
                    Some(why) if why.starts_with("not supported by mm") => format!("is {why}"),
                    Some(why) => format!("is not supported by mm ({why})"),
                    None => unknown(pattern, key),
                };
                errors.push(FieldError { path: shown, why });
            }
        }
        Value::Array(items) => {
            let pattern = format!("{pattern}[]");
            if !HANDLED.contains(&pattern.as_str()) {
                return;
            }
            for (i, item) in items.iter().enumerate() {
                walk(item, &pattern, &format!("{shown}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

fn refused(pattern: &str) -> Option<&'static str> {
    REFUSED
        .iter()
        .find(|(field, _)| {
            pattern == *field
                || pattern
                    .strip_prefix(field)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
        .map(|(_, why)| *why)
}

fn unknown(parent: &str, key: &str) -> String {
    let siblings = HANDLED
        .iter()
        .chain(REFUSED.iter().map(|(f, _)| f))
        .filter_map(|f| {
            let (p, k) = f.rsplit_once('.').unwrap_or(("", f));
            (p == parent && !k.contains('[') && k != "*").then_some(k)
        });
    let best = siblings
        .map(|k| (strsim::jaro_winkler(k, key), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!("is not a runtime-spec field (did you mean `{k}`?)"),
        None => "is not a runtime-spec field".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(json: &str) -> Vec<String> {
        let doc: Value = serde_json::from_str(json).unwrap();
        check(&doc).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn refused_and_unknown_fields_are_named_with_their_paths() {
        let found = errors(
            r#"{"ociVersion":"1.0.0","linux":{"intelRdt":{"closID":"x"},
               "namespaces":[{"type":"pid"},{"type":"net","pth":"/x"}]},
               "annotations":{"anything":"goes"},"proces":{}}"#,
        );
        assert_eq!(
            found,
            [
                "linux.intelRdt: is not supported by mm",
                "linux.namespaces[1].pth: is not a runtime-spec field (did you mean `path`?)",
                "proces: is not a runtime-spec field (did you mean `process`?)",
            ]
        );
    }

    #[test]
    fn a_refused_prefix_covers_what_is_below_it() {
        assert_eq!(
            errors(r#"{"linux":{"intelRdt":{"closID":"x"},"resources":{"cpu":{"burst":2}}}}"#),
            [
                "linux.intelRdt: is not supported by mm",
                "linux.resources.cpu.burst: is not supported by mm yet",
            ]
        );
    }
}
