//! `[desktop]` compiled: each passthrough's host sockets, files and device nodes as binds,
//! the variables that point the machine's clients at them, and (root on cgroup v1) the
//! device rules. A passthrough whose socket or device the host lacks is refused at its key,
//! naming the missing variable or path.
//!
//! Inside, the sockets go to [`INSIDE`] (on the machine's own `/run` tmpfs, so nothing is
//! written into its image), and the variables name them by absolute path; X11's socket goes
//! where every client looks, `/tmp/.X11-unix/XN`; device nodes and driver files keep their
//! host paths (or the CDI spec's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Cgroup, Desktop, LimitWrite, Mount};
use crate::definition::desktop::Passthrough;
use crate::definition::{Definition, Diagnostic, Located};
use crate::host::{CgroupMode, DeviceNode, Host, Probed};

/// Where the passed sockets and files go inside the machine.
pub const INSIDE: &str = "/run/host/desktop";

/// The passthroughs' binds (after the definition's), their variables and what `mm plan`
/// says about them; one diagnostic per passthrough the host cannot give.
#[derive(Default)]
pub(super) struct Compiled {
    pub mounts: Vec<Mount>,
    pub env: BTreeMap<String, String>,
    pub desktop: Vec<Desktop>,
    /// Device nodes the machine is given, for the cgroup's device rules.
    pub devices: Vec<DeviceNode>,
}

pub(super) fn desktop(def: &Definition, host: &Host) -> Result<Compiled, Vec<Diagnostic>> {
    let mut compiled = Compiled {
        mounts: Vec::new(),
        env: BTreeMap::new(),
        desktop: Vec::new(),
        devices: Vec::new(),
    };
    let mut problems = Vec::new();
    for on in &def.desktop {
        match one(on.value, host) {
            Ok(passed) => {
                compiled.mounts.extend(passed.mounts);
                compiled.devices.extend(passed.devices);
                for kv in &passed.summary.env {
                    if let Some((k, v)) = kv.split_once('=') {
                        compiled.env.insert(k.to_owned(), v.to_owned());
                    }
                }
                compiled.desktop.push(passed.summary);
            }
            Err(why) => problems.push(refused(def, on, why)),
        }
    }
    if problems.is_empty() {
        Ok(compiled)
    } else {
        Err(problems)
    }
}

fn refused(def: &Definition, on: &Located<Passthrough>, why: String) -> Diagnostic {
    let d = def.file.error_at(&on.span, why).key(on.value.to_string());
    match on.value {
        Passthrough::Gpu | Passthrough::Nvidia => d.help("this host has no such device: turn the key off"),
        _ => d.help(
            "run mm from the session that has it (the variable set, its server running), or turn the key off",
        ),
    }
}

/// One passthrough's part of the plan.
struct Passed {
    mounts: Vec<Mount>,
    devices: Vec<DeviceNode>,
    summary: Desktop,
}

impl Passed {
    fn new(which: Passthrough) -> Self {
        Self {
            mounts: Vec::new(),
            devices: Vec::new(),
            summary: Desktop {
                passthrough: which,
                env: Vec::new(),
                notes: Vec::new(),
            },
        }
    }

    fn bind(&mut self, source: &Path, target: String, readonly: bool) {
        self.mounts.push(Mount::Bind {
            source: source.to_owned(),
            target,
            readonly,
            recursive: false,
        });
    }

    /// A socket bound at `INSIDE/name`, and `var` set to `value(inside path)`.
    fn socket(mut self, source: &Path, name: &str, var: &str, value: &str) -> Self {
        let inside = format!("{INSIDE}/{name}");
        self.bind(source, inside.clone(), false);
        self.summary
            .env
            .push(format!("{var}={}", value.replace("{}", &inside)));
        self
    }

    fn device(&mut self, node: &DeviceNode, inside: String) {
        self.bind(&node.path, inside, false);
        self.devices.push(node.clone());
    }
}

fn found<T: Clone>(probed: &Probed<T>) -> Result<T, String> {
    match probed {
        Probed::Found(value) => Ok(value.clone()),
        Probed::Missing(why) => Err(why.clone()),
    }
}

fn one(which: Passthrough, host: &Host) -> Result<Passed, String> {
    let facts = &host.desktop;
    let passed = Passed::new(which);
    Ok(match which {
        Passthrough::Wayland => {
            passed.socket(&found(&facts.wayland)?, "wayland", "WAYLAND_DISPLAY", "{}")
        }
        Passthrough::Pipewire => passed.socket(
            &found(&facts.pipewire)?,
            "pipewire-0",
            "PIPEWIRE_REMOTE",
            "{}",
        ),
        Passthrough::Pulseaudio => passed.socket(
            &found(&facts.pulseaudio)?,
            "pulse-native",
            "PULSE_SERVER",
            "unix:{}",
        ),
        Passthrough::SshAgent => passed.socket(
            &found(&facts.ssh_agent)?,
            "ssh-agent",
            "SSH_AUTH_SOCK",
            "{}",
        ),
        Passthrough::SessionBus => passed.socket(
            &found(&facts.session_bus)?,
            "bus",
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path={}",
        ),
        Passthrough::X11 => x11(passed, host)?,
        Passthrough::Gpu => gpu(passed, host)?,
        Passthrough::Nvidia => nvidia(passed, host)?,
    })
}

fn x11(mut passed: Passed, host: &Host) -> Result<Passed, String> {
    let x = found(&host.desktop.x11)?;
    passed.bind(&x.socket, format!("/tmp/.X11-unix/X{}", x.display), false);
    passed.summary.env.push(format!("DISPLAY=:{}", x.display));
    match &x.xauthority {
        Some(file) => {
            let inside = format!("{INSIDE}/Xauthority");
            passed.bind(file, inside.clone(), true);
            passed.summary.env.push(format!("XAUTHORITY={inside}"));
            passed.summary.notes.push(
                "the machine has a hostname of its own: the Xauthority's cookie must be a \
                 wildcard (FamilyWild) entry to match (docs/devenv.md)"
                    .to_owned(),
            );
        }
        None => passed.summary.notes.push(
            "no Xauthority (XAUTHORITY unset, no ~/.Xauthority): the server must take \
             clients without a cookie"
                .to_owned(),
        ),
    }
    Ok(passed)
}

fn group_note(host: &Host, nodes: &[&DeviceNode], group: Option<&str>) -> Option<String> {
    let node = nodes.iter().find(|n| n.mode & 0o006 != 0o006)?;
    let group = group.map_or_else(
        || format!("gid {}", node.gid),
        |g| format!("`{g}` (gid {})", node.gid),
    );
    let who = if host.is_root() {
        "the machine's ids are not the host's, so its users reach them only when the mode lets others"
    } else {
        "the machine's users reach them through the host's group only where that group is theirs outside"
    };
    Some(format!(
        "{} is mode {:04o}, group {group}: {who}",
        node.path.display(),
        node.mode
    ))
}

fn gpu(mut passed: Passed, host: &Host) -> Result<Passed, String> {
    let gpu = found(&host.desktop.gpu)?;
    for node in &gpu.render_nodes {
        passed.device(node, node.path.display().to_string());
    }
    let nodes: Vec<&DeviceNode> = gpu.render_nodes.iter().collect();
    passed
        .summary
        .notes
        .extend(group_note(host, &nodes, gpu.group.as_deref()));
    Ok(passed)
}

fn nvidia(mut passed: Passed, host: &Host) -> Result<Passed, String> {
    let nvidia = found(&host.desktop.nvidia)?;
    for (node, inside) in &nvidia.devices {
        passed.device(node, inside.clone());
    }
    for (file, inside) in &nvidia.files {
        passed.bind(file, inside.clone(), true);
    }
    passed.summary.env.extend(nvidia.env.iter().cloned());
    passed.summary.notes.push(match &nvidia.cdi_spec {
        Some(spec) => format!("from the CDI spec {}", spec.display()),
        None => "from the host's /dev/nvidia* and driver libraries (no CDI spec)".to_owned(),
    });
    passed.summary.notes.extend(
        nvidia
            .hooks_not_run
            .iter()
            .map(|hook| format!("the spec's hook is not run: {hook}")),
    );
    let nodes: Vec<&DeviceNode> = nvidia.devices.iter().map(|(n, _)| n).collect();
    passed.summary.notes.extend(group_note(host, &nodes, None));
    Ok(passed)
}

/// Root on cgroup v1 or hybrid: `devices.allow` for each node, in the machine's `devices`
/// hierarchy (a v2 cgroup has no device files, and mm attaches no device program).
pub(super) fn device_rules(cgroup: &mut Cgroup, devices: &[DeviceNode], host: &Host) {
    let Cgroup::Create {
        mode, dirs, limits, ..
    } = cgroup
    else {
        return;
    };
    if *mode == CgroupMode::V2 || devices.is_empty() {
        return;
    }
    let Some(hierarchy) = host.cgroup.v1_hierarchy("devices") else {
        return;
    };
    let Some(dir): Option<&PathBuf> = dirs.iter().find(|d| d.starts_with(&hierarchy.path)) else {
        return;
    };
    for node in devices {
        limits.push(LimitWrite {
            file: dir.join("devices.allow"),
            value: format!("{} {}:{} rw", node.kind, node.major, node.minor),
        });
    }
}
