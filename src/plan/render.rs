//! The plan as numbered, readable steps, in the order the launcher takes them.

use std::fmt::Write as _;

use super::{
    Address, Cgroup, Command, HomeFrom, IdMapping, Ids, KeepId, Layers, Layout, LimitWrite,
    Machined, MapWriter, Mount, Network, Pid1, Plan, Registration, Upper,
};
use crate::definition::units::format_size;
use crate::host::CgroupMode;

pub fn render(plan: &Plan) -> String {
    let mut out = heading(plan);
    let mut steps = Steps::default();
    steps.push_step(image(plan));
    steps.push_step(state(plan));
    let mut id_lines = ids_lines(&plan.ids);
    if let Some(keep) = &plan.keep_id {
        id_lines.push(format!(
            "keep-id: inside uid {} and gid {} are `{}`'s on the host",
            keep.uid, keep.gid, keep.name
        ));
        if let Some(block) = &plan.ids.block {
            id_lines.push(format!("carved out of the machine's block {block}"));
        }
    }
    steps.push(ids_title(&plan.ids), id_lines);
    steps.push_step(namespaces(plan));
    steps.push_step(cgroup(&plan.cgroup));
    steps.push(
        format!(
            "Root file system: {} at {}",
            if matches!(plan.root.upper, Upper::InPlace { .. }) {
                "bound onto itself"
            } else {
                "overlay"
            },
            plan.root.mount_point.display()
        ),
        root_lines(plan),
    );
    for mount in &plan.mounts {
        steps.push(mount_line(mount), mount_details(mount));
    }
    let hooks = plan.process.hooks.as_ref();
    let hook_lines = |point: &str, by: &str, list: Option<&Vec<crate::plan::Hook>>| {
        list.into_iter()
            .flatten()
            .map(|hook| format!("{by} the {point} hook {}", hook.path.display()))
            .collect::<Vec<_>>()
    };
    let mut before_pivot = hook_lines(
        "prestart/createRuntime",
        "first, the supervisor runs (in the runtime's namespaces)",
        hooks.map(|h| &h.create_runtime),
    );
    before_pivot.extend(hook_lines(
        "createContainer",
        "first, PID 1 runs",
        hooks.map(|h| &h.create_container),
    ));
    steps.push(
        format!(
            "pivot_root into {}; detach the old root{}",
            plan.root.mount_point.display(),
            match plan.root.propagation {
                Some(p) => format!("; make the root {p}"),
                None => String::new(),
            }
        ),
        before_pivot,
    );
    steps.push_step(network(&plan.network));
    steps.push(format!("Hostname: {}", plan.process.hostname), vec![]);
    steps.push_step(security(plan));
    if let Some(keep) = &plan.keep_id {
        steps.push_step(keep_id(keep));
    }
    steps.push_step(registration(&plan.registration));
    if !plan.desktop.is_empty() {
        steps.push_step(desktop(plan));
    }
    let (title, mut details) = pid1(plan);
    for limit in &plan.process.rlimits {
        details.push(format!(
            "limit {}: soft {}, hard {}",
            limit.resource, limit.soft, limit.hard
        ));
    }
    if let Some(umask) = plan.process.umask {
        details.push(format!("umask {umask:04o}"));
    }
    if let Some(adj) = plan.process.oom_score_adj {
        details.push(format!("oom_score_adj {adj}"));
    }
    if let Some(terminal) = &plan.process.terminal {
        details.push(match terminal.size {
            Some((rows, cols)) => format!(
                "on a new terminal of the machine's devpts ({rows} rows, {cols} columns), its \
                 master sent to the caller's console socket"
            ),
            None => "on a new terminal of the machine's devpts, its master sent to the caller's \
                     console socket"
                .to_owned(),
        });
    }
    if plan.process.reparented {
        details.push(
            "the child of the caller (its subreaper gets it and its exit status), watched by \
             the supervisor"
                .to_owned(),
        );
    }
    if plan.process.waits_for_start {
        details
            .push("waits, set up and locked down, until `mm oci start` lets it execute".to_owned());
    }
    details.extend(hook_lines(
        "startContainer",
        "then runs",
        hooks.map(|h| &h.start_container),
    ));
    steps.push_step((title, details));
    steps.push(
        format!(
            "Stop: {} to PID 1, then kill every process after {} s",
            plan.stop.signal, plan.stop.timeout_secs
        ),
        vec![],
    );
    out.push('\n');
    out.push_str(&steps.text);
    out
}

/// A step's title and its detail lines.
type Step = (String, Vec<String>);

/// The passthroughs, their variables (also given to `mm exec` and `mm shell`) and notes.
fn desktop(plan: &Plan) -> Step {
    let keys: Vec<String> = plan
        .desktop
        .iter()
        .map(|d| d.passthrough.to_string())
        .collect();
    let mut lines = Vec::new();
    for d in &plan.desktop {
        lines.extend(d.env.iter().map(|kv| format!("{}: {kv}", d.passthrough)));
        lines.extend(d.notes.iter().map(|n| format!("{}: {n}", d.passthrough)));
    }
    (
        format!(
            "Desktop: {} (bound above; their variables go to PID 1, mm exec and mm shell)",
            keys.join(", ")
        ),
        lines,
    )
}

/// The machine's name, definition, description and the plan's hash.
fn heading(plan: &Plan) -> String {
    let mut out = String::new();
    let m = &plan.machine;
    let _ = writeln!(
        out,
        "Plan for machine {} ({})",
        m.name,
        m.definition.display()
    );
    if let Some(description) = &m.description {
        let _ = writeln!(out, "  {description}");
    }
    let _ = writeln!(out, "  plan {}", plan.hash());
    out
}

fn image(plan: &Plan) -> Step {
    let mut image = format!("Image {}", plan.image.source);
    if let Some(pin) = &plan.image.pinned {
        let _ = write!(image, ", pinned to {pin}");
    }
    let lines = match &plan.image.layers {
        Layers::Unresolved => vec![
            "layers: fetched, verified (sha256) and unpacked into the store before start"
                .to_owned(),
        ],
        Layers::Stored { manifest, layers } => {
            let mut lines = vec![format!(
                "in the store: manifest {manifest}, {} layer(s), bottom first:",
                layers.len()
            )];
            lines.extend(layers.iter().map(|l| format!("  {}", l.diff_id)));
            lines
        }
        Layers::Directory { path } => {
            vec![format!("one lower layer: the directory {}", path.display())]
        }
    };
    let mut lines = lines;
    if let Layout::KeepId { uid, gid } = plan.image.layout {
        lines.push(format!(
            "store layout keep-id-{uid}-{gid}: the layers unpacked once more from their blobs, \
             owners laid out for the keep-id map (no chown copy)"
        ));
    }
    (image, lines)
}

/// What mm writes into the machine for the keep-id user, as its root, inside its root.
fn keep_id(keep: &KeepId) -> Step {
    let mut lines = vec![format!(
        "/etc/passwd: {}:*:{}:{}::{}:<the first of {}>",
        keep.name,
        keep.uid,
        keep.gid,
        keep.home,
        keep.shells.join(", ")
    )];
    lines.push(format!(
        "/etc/group: gid {} (`{}` where the image has no group of that gid)",
        keep.gid, keep.group
    ));
    for g in &keep.groups {
        lines.push(format!(
            "/etc/group: member of `{}` (created with gid {} where the image has none)",
            g.name, g.gid
        ));
    }
    for g in &keep.left_out {
        lines.push(format!(
            "left out: group `{}` ({}): {}",
            g.name, g.gid, g.why
        ));
    }
    lines.push(format!(
        "{}: {} ALL=(ALL:ALL) NOPASSWD: ALL",
        keep.sudoers, keep.name
    ));
    lines.push(match &keep.home_from {
        HomeFrom::Machine { dir } => format!(
            "home {}: the machine's own, {} (kept across restarts; seeded from /etc/skel while empty)",
            keep.home,
            dir.display()
        ),
        HomeFrom::Host { dir } => format!("home {}: the host's {}", keep.home, dir.display()),
        HomeFrom::Path { dir } => format!("home {}: the host directory {}", keep.home, dir.display()),
    });
    (
        format!("User `{}` inside, written at every start", keep.name),
        lines,
    )
}

fn state(plan: &Plan) -> Step {
    let m = &plan.machine;
    (
        format!(
            "State in {} (runtime: {})",
            m.state_dir.display(),
            m.runtime_dir.display()
        ),
        vec![],
    )
}

fn namespaces(plan: &Plan) -> Step {
    let names: Vec<String> = plan
        .namespaces
        .iter()
        .map(|n| format!("{n:?}").to_lowercase())
        .collect();
    let lines = plan
        .joins
        .iter()
        .map(|j| {
            format!(
                "join the {} namespace {}",
                format!("{:?}", j.namespace).to_lowercase(),
                j.path.display()
            )
        })
        .chain(plan.sysctls.iter().map(|s| match s.joined {
            None => format!("write {} = {}", s.file(), s.value),
            Some(kind) => format!(
                "write {} = {} in the joined {} namespace",
                s.file(),
                s.value,
                format!("{kind:?}").to_lowercase()
            ),
        }))
        .collect();
    (format!("Namespaces: {}", names.join(", ")), lines)
}

fn cgroup(cgroup: &Cgroup) -> Step {
    match cgroup {
        Cgroup::Create {
            mode,
            path,
            dirs,
            limits,
        } => {
            let mut lines: Vec<String> = dirs
                .iter()
                .map(|d| format!("mkdir {}", d.display()))
                .collect();
            lines.extend(limits.iter().map(limit_line));
            (
                format!("Cgroup {path} ({mode} host), removed at stop"),
                lines,
            )
        }
        Cgroup::Inherit { why } => (format!("Cgroup: none of its own ({why})"), vec![]),
    }
}

fn network(network: &Network) -> Step {
    let link = match network {
        Network::Host => {
            return (
                "Network: the host's (no network namespace)".to_owned(),
                vec![],
            );
        }
        Network::Private => {
            return (
                "Network: private namespace, loopback only, brought up".to_owned(),
                vec![],
            );
        }
        Network::Joined => {
            return (
                "Network: an existing namespace, joined (mm configures nothing in it)".to_owned(),
                vec![],
            );
        }
        Network::Link(link) => link,
        Network::UserMode(mode) => return user_mode(mode),
    };
    let mut lines = Vec::new();
    let host_end = match &link.zone {
        Some(zone) => {
            if let Some(own) = &zone.rootless {
                lines.push(format!(
                    "zone {}: mm's zone keeper holds its user and network namespaces (made \
                     with its first machine, ended with its last), state in {}; {} gives \
                     them {} ({}/{}, MTU {}) and NAT to the world, the host's loopback closed",
                    zone.name,
                    own.dir.display(),
                    own.helper,
                    crate::network::rootless::INTERFACE,
                    own.address,
                    crate::network::rootless::addresses().prefix_len,
                    own.mtu
                ));
            }
            let place = if zone.rootless.is_some() {
                "in the zone's namespace"
            } else {
                "made with the zone's first machine, removed with its last"
            };
            lines.push(format!(
                "zone {}: bridge {} ({place}), MTU {}",
                zone.name, zone.bridge, link.mtu
            ));
            lines.push(format!("{} joins {}", link.host_side, zone.bridge));
            zone.bridge.as_str()
        }
        None => link.host_side.as_str(),
    };
    let (machine, gateway) = match &link.address {
        Address::Assigned { address, gateway } => {
            lines.push(format!("{host_end}: {gateway}/{}", address.prefix));
            lines.push(format!("{}: {address}, up; loopback up", link.machine_side));
            (address.address.to_string(), gateway.to_string())
        }
        Address::Allocate { wanted } => {
            let what = match wanted {
                Some(address) => format!("{address}, recorded"),
                None => "the first free one of mm's pools, recorded".to_owned(),
            };
            lines.push(format!("address: allocated at start ({what})"));
            ("ADDRESS".to_owned(), "GATEWAY".to_owned())
        }
    };
    lines.push(format!(
        "route inside: default via {gateway} dev {}",
        link.machine_side
    ));
    let rootless = link.zone.as_ref().and_then(|z| z.rootless.as_ref());
    let out = match rootless {
        Some(_) => "the zone's namespace",
        None => "the host",
    };
    lines.push(format!(
        "forwarding on {host_end}; nft table ip mm: masquerade {machine} out of {out}"
    ));
    for forward in &link.forwards {
        let from = forward.host_address.map_or(
            "any of the host's addresses, localhost too".to_owned(),
            |a| a.to_string(),
        );
        let from = match rootless {
            Some(own) => format!(
                "{from}, by {} to {}:{}",
                own.helper, own.address, forward.host_ports
            ),
            None => from,
        };
        lines.push(format!(
            "forward {} port {} ({from}) → {machine}:{}",
            forward.proto.name(),
            forward.host_ports,
            forward.ports
        ));
    }
    (
        format!(
            "Network: veth pair {} ↔ {} (MTU {})",
            link.host_side, link.machine_side, link.mtu
        ),
        lines,
    )
}

fn user_mode(mode: &super::UserMode) -> Step {
    let mut lines = vec![
        format!(
            "{} serves {} (MTU {}): {}, gateway {}, name server {}; NAT to the world, the \
             host's loopback closed",
            mode.helper, mode.interface, mode.mtu, mode.address, mode.gateway, mode.dns
        ),
        format!(
            "{} runs as the user, beside the supervisor, and ends with it",
            mode.helper
        ),
    ];
    for forward in &mode.forwards {
        let from = forward
            .host_address
            .map_or("any of the host's addresses".to_owned(), |a| a.to_string());
        lines.push(format!(
            "forward {} port {} ({from}) → {}:{}",
            forward.proto, forward.host_ports, mode.address.address, forward.ports
        ));
    }
    (
        format!(
            "Network: private namespace with a user-mode network ({})",
            mode.helper
        ),
        lines,
    )
}

fn security(plan: &Plan) -> Step {
    let sec = &plan.security;
    (
        format!(
            "Security: seccomp filter {}, no_new_privileges {}",
            sec.seccomp,
            if sec.no_new_privileges { "on" } else { "off" }
        ),
        {
            let mut lines = vec![format!(
                "capability bounding set ({}): {}",
                sec.capabilities.len(),
                short_caps(&sec.capabilities)
            )];
            for (set, caps) in [("inheritable", &sec.inheritable), ("ambient", &sec.ambient)] {
                if !caps.is_empty() {
                    lines.push(format!("{set} set ({}): {}", caps.len(), short_caps(caps)));
                }
            }
            if let Some(profile) = &sec.apparmor_profile {
                lines.push(format!(
                    "the command executes under the AppArmor profile {profile}"
                ));
            }
            if let crate::plan::Seccomp::Profile(profile) = &sec.seccomp {
                lines.extend(seccomp_lines(profile, sec.no_new_privileges));
            }
            lines
        },
    )
}

/// A bundle's profile: what it covers, when it is loaded, and what was skipped.
fn seccomp_lines(profile: &crate::plan::seccomp::Profile, nnp: bool) -> Vec<String> {
    let filter = &profile.filter;
    let arches = if filter.architectures.is_empty() {
        "the native one".to_owned()
    } else {
        filter.architectures.join(", ")
    };
    let mut lines = vec![
        format!("seccomp profile {}", profile.digest),
        format!("seccomp architectures: {arches}"),
        if nnp {
            "seccomp loaded just before the command executes (no_new_privileges)".to_owned()
        } else {
            "seccomp loaded before the capabilities are dropped".to_owned()
        },
    ];
    if !filter.flags.is_empty() {
        let flags: Vec<String> = filter.flags.iter().map(ToString::to_string).collect();
        lines.push(format!("seccomp flags: {}", flags.join(", ")));
    }
    if !profile.overridden.is_empty() {
        let each: Vec<String> = profile.overridden.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "seccomp kept the first action of {} calls given another later (as libseccomp does): {}",
            profile.overridden.len(),
            each.join("; ")
        ));
    }
    if !profile.skipped.is_empty() {
        lines.push(format!(
            "seccomp skipped {} syscall names this libseccomp does not know: {}",
            profile.skipped.len(),
            profile.skipped.join(", ")
        ));
    }
    lines
}

fn registration(registration: &Registration) -> Step {
    match registration {
        Registration::Machined(Machined {
            name,
            id,
            class,
            service,
            root_directory,
        }) => (
            format!("Register with systemd-machined as {name}"),
            vec![format!(
                "id {id}, class {class}, service {service}, root {}",
                root_directory.display()
            )],
        ),
        Registration::Skip { why } => (
            format!("Not registered with systemd-machined: {why}"),
            vec![],
        ),
    }
}

/// What runs as PID 1, as whom, where and with which environment.
fn pid1(plan: &Plan) -> Step {
    let p = &plan.process;
    let title = |argv: Option<&[String]>| match (p.pid1, argv) {
        (Pid1::Boot, Some(argv)) => format!("PID 1: boot the image's init, {}", argv.join(" ")),
        (Pid1::Direct, Some(argv)) => format!("PID 1: the command itself, {}", shell_words(argv)),
        (_, Some(argv)) => format!("PID 1: mm's init, running {}", shell_words(argv)),
        (_, None) => "PID 1: mm's init, running the image's entrypoint and command".to_owned(),
    };
    match &p.command {
        Command::Resolved(exec) => (
            title(Some(&exec.argv)),
            vec![
                format!("as {} in {}", exec.user, exec.workdir),
                format!("environment: {}", exec.env.join(" ")),
            ],
        ),
        Command::Unresolved {
            argv,
            env,
            user,
            workdir,
        } => {
            let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let who = format!(
                "as {} in {}",
                user.as_deref().unwrap_or("the image's user (else root)"),
                workdir
                    .as_deref()
                    .unwrap_or("the image's working directory (else /)")
            );
            (
                title(argv.as_deref()),
                vec![
                    who,
                    format!("environment: the image's, then {}", env.join(" ")),
                    "(unresolved until the image is in the store: mm run and mm start import it, then compile again)".to_owned(),
                ],
            )
        }
    }
}

/// Numbered steps with indented detail lines.
#[derive(Default)]
struct Steps {
    text: String,
    count: usize,
}

impl Steps {
    fn push(&mut self, title: String, details: Vec<String>) {
        self.count += 1;
        let _ = writeln!(self.text, "{:>3}. {title}", self.count);
        for line in details {
            let _ = writeln!(self.text, "       {line}");
        }
    }

    fn push_step(&mut self, (title, details): Step) {
        self.push(title, details);
    }
}

fn ids_title(ids: &Ids) -> String {
    match &ids.writer {
        MapWriter::Joined { path } => format!(
            "User ids: the user namespace {} joined, its maps checked to be these",
            path.display()
        ),
        MapWriter::Direct => "User ids: maps written by mm".to_owned(),
        MapWriter::Newidmap => "User ids: maps written by newuidmap and newgidmap".to_owned(),
        MapWriter::Zone => "User ids: a child of the zone's user namespace (mapped by \
                            newuidmap and newgidmap), the same ids, written by mm"
            .to_owned(),
    }
}

fn ids_lines(ids: &Ids) -> Vec<String> {
    [("uid", &ids.uid), ("gid", &ids.gid)]
        .into_iter()
        .map(|(kind, mapping)| match mapping {
            IdMapping::Allocate { pool, count } => {
                format!("{kind}s 0-{}: a block of {count} from mm's pool {pool}, allocated at first start and kept", count - 1)
            }
            IdMapping::Map { entries } => {
                let shown: Vec<String> = entries.iter().map(ToString::to_string).collect();
                format!("{kind} map: {}", shown.join(", "))
            }
        })
        .collect()
}

fn root_lines(plan: &Plan) -> Vec<String> {
    let root = &plan.root;
    let mut lines = vec![match &plan.image.layers {
        Layers::Unresolved if root.idmapped_lowers => {
            "lower: the image's layers from the store, id-mapped to the machine's ids".to_owned()
        }
        Layers::Unresolved => "lower: the image's layers from the store".to_owned(),
        Layers::Stored { layers, .. } => {
            let dirs: Vec<String> = layers
                .iter()
                .rev()
                .map(|l| l.dir.display().to_string())
                .collect();
            let mapped = if root.idmapped_lowers {
                ", each id-mapped to the machine's ids"
            } else {
                ""
            };
            format!("lower (top first{mapped}): {}", dirs.join(":"))
        }
        Layers::Directory { path } => format!("lower: {}", path.display()),
    }];
    lines.push(match &root.upper {
        Upper::Persistent { upper, work } => format!(
            "upper: {} (kept), work: {}",
            upper.display(),
            work.display()
        ),
        Upper::Volatile { tmpfs } => {
            format!("upper: a tmpfs at {} (lost at stop)", tmpfs.display())
        }
        Upper::ReadOnly => "no upper: the root is read-only".to_owned(),
        Upper::InPlace { readonly: false } => {
            "no overlay: the directory is the root, written in place".to_owned()
        }
        Upper::InPlace { readonly: true } => {
            "no overlay: the directory is the root, read-only".to_owned()
        }
    });
    if !root.options.is_empty() {
        lines.push(format!("options: {}", root.options.join(",")));
    }
    lines
}

fn mount_line(mount: &Mount) -> String {
    match mount {
        Mount::Fs {
            fstype,
            target,
            options,
            source,
        } => match source {
            Some(source) => format!(
                "Mount {fstype} from {source} on {target} ({})",
                options.join(",")
            ),
            None => format!("Mount {fstype} on {target} ({})", options.join(",")),
        },
        Mount::HostFs {
            fstype,
            target,
            options,
        } => format!(
            "Mount {fstype} on {target} ({}), made by mm in the namespaces joined, as their owner",
            options.join(",")
        ),
        Mount::HostTmpfs { target, options } => format!(
            "Mount tmpfs on {target} ({}), made by host root and owned by the machine's root",
            options.join(",")
        ),
        Mount::Bind {
            source,
            target,
            readonly,
            recursive,
        } => format!(
            "Bind {} on {target}{}{}",
            source.display(),
            if *readonly { ", read-only" } else { "" },
            if *recursive { ", recursive" } else { "" }
        ),
        Mount::Mask {
            target,
            directory: false,
        } => format!("Mask {target} with /dev/null"),
        Mount::Mask {
            target,
            directory: true,
        } => format!("Mask {target} with an empty read-only tmpfs"),
        Mount::MaskPath { target } => {
            format!("Mask {target} with /dev/null or an empty read-only tmpfs, by its kind")
        }
        Mount::ReadOnly { target } => format!("Make {target} read-only"),
        Mount::Restrict {
            target,
            nosuid,
            nodev,
            noexec,
        } => {
            let flags: Vec<&str> = [(*nosuid, "nosuid"), (*nodev, "nodev"), (*noexec, "noexec")]
                .into_iter()
                .filter_map(|(on, word)| on.then_some(word))
                .collect();
            format!("Make {target} {}", flags.join(","))
        }
        Mount::Propagate {
            target,
            propagation,
        } => format!("Make {target} {propagation}"),
        Mount::Console { target } => format!("Bind a new pseudo-terminal on {target}"),
        Mount::CgroupTree { mode, hierarchies } => format!(
            "Mount the cgroup tree on /sys/fs/cgroup ({mode} layout){}",
            if hierarchies.iter().any(|h| h.writable) {
                ", its own subtree writable"
            } else {
                ", read-only"
            }
        ),
        Mount::Symlink { target, points_to } => format!("Link {target} → {points_to}"),
        Mount::File { target, .. } => format!("Write {target}, read-only"),
    }
}

/// A mount's parts: the cgroup tree's hierarchies.
fn mount_details(mount: &Mount) -> Vec<String> {
    if let Mount::File { content, .. } = mount {
        return content.lines().map(str::to_owned).collect();
    }
    let Mount::CgroupTree { mode, hierarchies } = mount else {
        return vec![];
    };
    let mut lines = Vec::new();
    if *mode != CgroupMode::V2 {
        lines.push("tmpfs on /sys/fs/cgroup, made read-only after the hierarchies".to_owned());
    }
    for h in hierarchies {
        let options = if h.options.is_empty() {
            String::new()
        } else {
            format!(" ({})", h.options.join(","))
        };
        let dir = if h.dir.is_empty() {
            String::new()
        } else {
            format!("/{}", h.dir)
        };
        lines.push(format!(
            "{}{options} on /sys/fs/cgroup{dir}, {}",
            h.fstype.name(),
            if h.writable { "writable" } else { "read-only" }
        ));
    }
    lines
}

/// A limit write; memory sizes also in the units they were likely written in.
fn limit_line(limit: &LimitWrite) -> String {
    let file = limit.file.display();
    let is_memory = limit
        .file
        .file_name()
        .is_some_and(|f| f.to_string_lossy().starts_with("memory."));
    match limit.value.parse::<u64>() {
        Ok(bytes) if is_memory => {
            format!("write {file} = {} ({})", limit.value, format_size(bytes))
        }
        _ => format!("write {file} = {}", limit.value),
    }
}

/// Capabilities without the `CAP_` prefix, lower-case, as capsh prints them.
fn short_caps(caps: &[String]) -> String {
    let short: Vec<String> = caps
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    if short.is_empty() {
        "(empty)".to_owned()
    } else {
        short.join(" ")
    }
}

/// A command line as a shell would need it quoted.
fn shell_words(argv: &[String]) -> String {
    let quote = |a: &String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
        {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}
