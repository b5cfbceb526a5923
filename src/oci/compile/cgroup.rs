//! `linux.resources` and `linux.cgroupsPath`: the container's cgroup, its limits and its
//! device rules (cgroup v1's device controller).

use std::path::PathBuf;

use super::{Errors, Options};
use crate::definition::{CpuWeight, MemoryAndSwap, Resources};
use crate::host::Host;
use crate::oci::fields::FieldError;
use crate::oci::spec;
use crate::plan::{Cgroup, DeviceKind, DeviceRule, LimitWrite};

pub(super) fn cgroup(
    linux: &spec::Linux,
    id: &crate::oci::ContainerId,
    host: &Host,
    options: &Options,
    errors: &mut Errors,
) -> Cgroup {
    let limits = resources(linux, errors);
    let rules = linux
        .resources
        .as_ref()
        .map(|res| device_rules(res, errors))
        .unwrap_or_default();
    let placed = match &linux.cgroups_path {
        None => crate::plan::placement(&format!("oci-{id}"), host),
        Some(_) if !host.is_root() => {
            errors.at(
                "linux.cgroupsPath",
                "an ordinary user's container is placed by mm (in its delegated subtree)",
            );
            return Cgroup::Inherit { why: String::new() };
        }
        Some(path) => match cgroups_path(path, options.systemd_cgroup) {
            Ok(path) => Ok((path.clone(), crate::plan::hierarchy_dirs(&path, host))),
            Err(why) => {
                errors.at("linux.cgroupsPath", why);
                return Cgroup::Inherit { why: String::new() };
            }
        },
    };
    match placed {
        Ok((path, dirs)) => {
            match crate::plan::limit_writes(&limits, host.cgroup.mode, &dirs, host) {
                Ok(mut limits) => {
                    limits.extend(device_writes(&rules, &dirs, host, errors));
                    Cgroup::Create {
                        mode: host.cgroup.mode,
                        path,
                        dirs,
                        limits,
                    }
                }
                Err(why) => {
                    errors.at("linux.resources", why);
                    Cgroup::Inherit { why: String::new() }
                }
            }
        }
        Err(_) if !only_own_nodes(&rules) => {
            errors.at(
                "linux.resources.devices",
                "device rules that allow more than the nodes mm binds into /dev need a device \
                 controller, and the container has no cgroup of its own",
            );
            Cgroup::Inherit { why: String::new() }
        }
        Err(why) if limits.any() => {
            errors.at(
                "linux.resources",
                format!("resource limits need a cgroup of the container's own, and {why}"),
            );
            Cgroup::Inherit { why: String::new() }
        }
        Err(why) => Cgroup::Inherit { why },
    }
}

/// The device rules as cgroup v1's `devices.deny` and `devices.allow` writes, in order.
/// On cgroup v2 the device controller is an eBPF program, which mm does not load: rules
/// that allow no more than mm's own nodes are what a container has anyway, others are
/// refused.
pub(super) fn device_writes(
    rules: &[DeviceRule],
    dirs: &[PathBuf],
    host: &Host,
    errors: &mut Errors,
) -> Vec<LimitWrite> {
    if rules.is_empty() {
        return Vec::new();
    }
    let hierarchy = host
        .cgroup
        .v1_hierarchy("devices")
        .filter(|_| host.cgroup.mode != crate::host::CgroupMode::V2)
        .and_then(|h| dirs.iter().find(|d| d.starts_with(&h.path)));
    let Some(dir) = hierarchy else {
        if !only_own_nodes(rules) {
            errors.at(
                "linux.resources.devices",
                "device rules that allow more than the nodes mm binds into /dev need cgroup \
                 v1's device controller (on cgroup v2 it is an eBPF program, which mm does \
                 not load)",
            );
        }
        return Vec::new();
    };
    // The nodes mm binds into /dev work whatever the rules say, as runc allows its own.
    let own = OWN_NODES.iter().map(|(major, minor)| DeviceRule {
        allow: true,
        kind: DeviceKind::Char,
        major: Some(*major),
        minor: *minor,
        access: "rwm".to_owned(),
    });
    rules
        .iter()
        .cloned()
        .chain(own)
        .map(|rule| LimitWrite {
            file: dir.join(if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            }),
            value: rule.to_string(),
        })
        .collect()
}

/// `linux.cgroupsPath` as a path below each hierarchy's root: `/a/b` (cgroupfs), or with
/// `--systemd-cgroup` `SLICE:PREFIX:NAME`, the unit-shaped `SLICE/PREFIX-NAME.scope`.
pub(super) fn cgroups_path(path: &str, systemd: bool) -> Result<String, String> {
    let relative = if systemd {
        let parts: Vec<&str> = path.split(':').collect();
        let [slice, prefix, name] = parts.as_slice() else {
            return Err(format!(
                "`{path}`: with --systemd-cgroup, mm reads SLICE:PREFIX:NAME"
            ));
        };
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        format!("{slice}/{prefix}-{name}.scope")
    } else {
        path.trim_start_matches('/').to_owned()
    };
    let bad = relative.is_empty()
        || relative
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(format!("`{path}` is not a cgroup path mm can use"));
    }
    Ok(relative)
}

/// The device nodes mm binds into a container's /dev tmpfs (and its console and pty
/// nodes), as `(major, minor)`; `None`: every minor. A rule that allows only these asks
/// for nothing a container of mm's does not have anyway.
const OWN_NODES: &[(u32, Option<u32>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
];

/// `linux.resources.devices`, checked: each rule in the device controller's own words.
pub(super) fn device_rules(res: &spec::Resources, errors: &mut Errors) -> Vec<DeviceRule> {
    let mut rules = Vec::new();
    for (i, rule) in res.devices.iter().enumerate() {
        let at = format!("linux.resources.devices[{i}]");
        let kind = match rule.kind.as_deref().unwrap_or("a") {
            "a" => DeviceKind::All,
            "c" => DeviceKind::Char,
            "b" => DeviceKind::Block,
            other => {
                errors.at(
                    format!("{at}.type"),
                    format!("`{other}` is not a device type (a, c or b)"),
                );
                continue;
            }
        };
        let number = |n: Option<i64>, key: &str, errors: &mut Errors| match n {
            None | Some(-1) => None,
            Some(n) => u32::try_from(n).ok().or_else(|| {
                errors.at(format!("{at}.{key}"), format!("{n} is not a device number"));
                None
            }),
        };
        let major = number(rule.major, "major", errors);
        let minor = number(rule.minor, "minor", errors);
        let access = rule.access.clone().unwrap_or_else(|| "rwm".to_owned());
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            errors.at(
                format!("{at}.access"),
                format!("`{access}` is not an access of r, w and m"),
            );
            continue;
        }
        rules.push(DeviceRule {
            allow: rule.allow,
            kind,
            major,
            minor,
            access,
        });
    }
    rules
}

/// Whether `rules` deny every device but nodes mm gives a container anyway: what a
/// container of mm's has without a device controller (a user namespace may not make
/// device nodes, so it opens only nodes bound into it).
pub(super) fn only_own_nodes(rules: &[DeviceRule]) -> bool {
    let Some((first, rest)) = rules.split_first() else {
        return true;
    };
    let deny_all = !first.allow
        && first.kind == DeviceKind::All
        && first.major.is_none()
        && first.minor.is_none();
    deny_all
        && rest.iter().all(|rule| {
            !rule.allow
                || (rule.kind == DeviceKind::Char
                    && OWN_NODES.iter().any(|(major, minor)| {
                        rule.major == Some(*major) && (minor.is_none() || rule.minor == *minor)
                    }))
        })
}

/// `mm oci update --resources`: a runtime-spec `linux.resources` object as mm's limits,
/// checked as config.json's is.
pub fn update_resources(resources: &spec::Resources) -> Result<Resources, Vec<FieldError>> {
    let linux = spec::Linux {
        resources: Some(resources.clone()),
        ..Default::default()
    };
    let mut errors = Errors(Vec::new());
    if !resources.devices.is_empty() {
        errors.at(
            "devices",
            "mm oci update does not change device rules (they are set at create)",
        );
    }
    let limits = self::resources(&linux, &mut errors);
    if errors.0.is_empty() {
        Ok(limits)
    } else {
        Err(errors.0)
    }
}

/// `linux.resources` as mm's limits (the device rules are `device_rules`').
pub(super) fn resources(linux: &spec::Linux, errors: &mut Errors) -> Resources {
    let mut limits = Resources::default();
    let Some(res) = &linux.resources else {
        return limits;
    };
    if let Some(memory) = res.memory.as_ref().and_then(|m| m.limit) {
        match u64::try_from(memory) {
            Ok(bytes) if bytes > 0 => limits.memory = Some(bytes),
            _ if memory == -1 => {}
            _ => errors.at(
                "linux.resources.memory.limit",
                format!("{memory} is not a number of bytes"),
            ),
        }
    }
    // 0: not set; -1: no limit, as runc reads them.
    match res.memory.as_ref().and_then(|m| m.swap) {
        None | Some(0) => {}
        Some(-1) => limits.memory_and_swap = Some(MemoryAndSwap::Unlimited),
        Some(total) => match (u64::try_from(total), limits.memory) {
            (Err(_), _) => errors.at(
                "linux.resources.memory.swap",
                format!("{total} is not a number of bytes"),
            ),
            (Ok(_), None) => errors.at(
                "linux.resources.memory.swap",
                "a limit of memory and swap needs linux.resources.memory.limit",
            ),
            (Ok(total), Some(memory)) if total < memory => errors.at(
                "linux.resources.memory.swap",
                format!(
                    "{total} is memory and swap together, and below the memory limit ({memory})"
                ),
            ),
            (Ok(total), Some(_)) => limits.memory_and_swap = Some(MemoryAndSwap::Bytes(total)),
        },
    }
    if let Some(cpu) = &res.cpu {
        if cpu.period.is_some_and(|p| p != 100_000) {
            errors.at(
                "linux.resources.cpu.period",
                "mm's CFS period is 100000 (100 ms); other periods are not supported by mm yet",
            );
        }
        match cpu.shares {
            // 0: not set, as runc reads it.
            None | Some(0) => {}
            Some(shares) if (2..=262_144).contains(&shares) => {
                limits.cpu_weight = Some(CpuWeight::Shares(shares));
            }
            Some(shares) => errors.at(
                "linux.resources.cpu.shares",
                format!("{shares}: cpu.shares go from 2 to 262144"),
            ),
        }
        // A list of numbers and ranges, as the kernel's cpuset files take them.
        let list = |field: &str, given: &Option<String>, errors: &mut Errors| {
            let given = given.as_deref().filter(|g| !g.is_empty())?;
            let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            let well_formed = given.split(',').all(|part| match part.split_once('-') {
                Some((a, b)) => number(a) && number(b),
                None => number(part),
            });
            if well_formed {
                Some(given.to_owned())
            } else {
                errors.at(
                    format!("linux.resources.cpu.{field}"),
                    format!("`{given}` is not a list of numbers and ranges (`0-3,6`)"),
                );
                None
            }
        };
        limits.cpuset_cpus = list("cpus", &cpu.cpus, errors);
        limits.cpuset_mems = list("mems", &cpu.mems, errors);
        match cpu.quota {
            None | Some(-1) => {}
            Some(quota) if quota > 0 && quota % 100 == 0 => {
                limits.cpus_milli = u32::try_from(quota / 100).ok();
            }
            Some(quota) => errors.at(
                "linux.resources.cpu.quota",
                format!("{quota}: mm takes quotas in steps of 100 µs (a thousandth of a CPU)"),
            ),
        }
    }
    for (i, huge) in res.hugepage_limits.iter().enumerate() {
        let size = huge.page_size.as_str();
        let digits = size.trim_end_matches(['K', 'M', 'G', 'B']);
        let well_formed = ["KB", "MB", "GB"].iter().any(|unit| size.ends_with(unit))
            && digits.len() + 2 == size.len()
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            errors.at(
                format!("linux.resources.hugepageLimits[{i}].pageSize"),
                format!("`{size}` is not a page size as the kernel names them (2MB, 1GB)"),
            );
        } else if limits.hugepages.iter().any(|(s, _)| s == size) {
            errors.at(
                format!("linux.resources.hugepageLimits[{i}].pageSize"),
                format!("`{size}` is limited twice"),
            );
        } else {
            limits.hugepages.push((size.to_owned(), huge.limit));
        }
    }
    // 0 and -1: no limit, as runc reads them.
    if let Some(pids) = res.pids.as_ref().and_then(|p| p.limit) {
        limits.pids = u64::try_from(pids).ok().filter(|n| *n > 0);
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CgroupMode, V1Hierarchy};

    fn hybrid_host(with_hugetlb: bool) -> Host {
        let mut host: Host = serde_json::from_str(include_str!(
            "../../../tests/fixtures/hosts/root-hybrid.json"
        ))
        .unwrap();
        if with_hugetlb {
            host.cgroup.controllers.push("hugetlb".to_owned());
            host.cgroup.v1.push(V1Hierarchy {
                path: PathBuf::from("/sys/fs/cgroup/hugetlb"),
                controllers: vec!["hugetlb".to_owned()],
                options: vec!["hugetlb".to_owned()],
            });
        }
        host
    }

    fn limits(json: serde_json::Value) -> Result<Resources, Vec<FieldError>> {
        let linux: spec::Linux =
            serde_json::from_value(serde_json::json!({ "resources": json })).unwrap();
        let mut errors = Errors(Vec::new());
        let limits = resources(&linux, &mut errors);
        if errors.0.is_empty() {
            Ok(limits)
        } else {
            Err(errors.0)
        }
    }

    /// kubelet gives every container a limit for each huge page size of the node, 0 for
    /// those it did not ask for.
    #[test]
    fn hugepage_limits_are_written_to_the_hugetlb_controller_or_refused_without_one() {
        let limits = limits(serde_json::json!({"hugepageLimits": [
            {"pageSize": "2MB", "limit": 0},
            {"pageSize": "1GB", "limit": 1073741824u64},
        ]}))
        .unwrap();
        let dirs: Vec<PathBuf> = ["cpu", "memory", "hugetlb"]
            .iter()
            .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}/machine.slice/x.scope")))
            .collect();
        let writes =
            crate::plan::limit_writes(&limits, CgroupMode::Hybrid, &dirs, &hybrid_host(true))
                .unwrap();
        let shown: Vec<String> = writes
            .iter()
            .map(|w| format!("{} = {}", w.file.display(), w.value))
            .collect();
        assert_eq!(
            shown,
            [
                "/sys/fs/cgroup/hugetlb/machine.slice/x.scope/hugetlb.2MB.limit_in_bytes = 0",
                "/sys/fs/cgroup/hugetlb/machine.slice/x.scope/hugetlb.1GB.limit_in_bytes = 1073741824",
            ]
        );
        let refused =
            crate::plan::limit_writes(&limits, CgroupMode::Hybrid, &dirs, &hybrid_host(false))
                .unwrap_err();
        assert_eq!(
            refused,
            "the `hugetlb` cgroup controller is not available here"
        );
        let errors = limits_errors(serde_json::json!({"hugepageLimits": [
            {"pageSize": "2M", "limit": 0},
            {"pageSize": "1GB", "limit": 0},
            {"pageSize": "1GB", "limit": 0},
        ]}));
        assert_eq!(
            errors,
            [
                "linux.resources.hugepageLimits[0].pageSize: `2M` is not a page size as the kernel names them (2MB, 1GB)",
                "linux.resources.hugepageLimits[2].pageSize: `1GB` is limited twice",
            ]
        );
    }

    fn limits_errors(json: serde_json::Value) -> Vec<String> {
        limits(json)
            .unwrap_err()
            .iter()
            .map(|e| format!("{}: {}", e.path, e.why))
            .collect()
    }
}
