//! The verbs about definitions and the host: validate, plan, list, host.

use std::path::{Path, PathBuf};

use serde::Serialize;

use mm::definition::discovery::{self, Found};
use mm::definition::{Definition, Diagnostics};
use mm::error::{Error, ExitCode};
use mm::host::Host;

use super::output::{print, print_json};

pub fn plan(machine: &str, json: bool, host_file: Option<&Path>) -> Result<ExitCode, Error> {
    let host = match host_file {
        Some(path) => read_host(path)?,
        None => Host::probe(),
    };
    let path = discovery::resolve(machine, &host.dirs.search)?;
    let plan = mm::machine::compile(&path, &host)?;
    if json {
        print_json(&plan.hashed())?;
    } else {
        print(&plan.render())?;
    }
    Ok(ExitCode::Ok)
}

pub fn read_host(path: &Path) -> Result<Host, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::HostFile {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// The outcome of validating one file, as `mm validate --json` prints it.
#[derive(Serialize)]
struct Validated {
    file: PathBuf,
    valid: bool,
    diagnostics: Vec<mm::definition::Diagnostic>,
    error: Option<String>,
}

pub fn validate(machines: &[String], json: bool) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let paths: Vec<PathBuf> = if machines.is_empty() {
        discovery::list(&host.dirs.search)
            .into_iter()
            .map(|f| f.path)
            .collect()
    } else {
        machines
            .iter()
            .map(|m| discovery::resolve(m, &host.dirs.search))
            .collect::<Result<_, _>>()?
    };
    let mut worst = ExitCode::Ok;
    let mut results = Vec::new();
    for path in paths {
        let outcome = mm::machine::compile(&path, &host);
        if let Err(e) = &outcome {
            worst = worst.max_with(e.exit_code());
        }
        if json {
            let (diagnostics, error) = match outcome {
                Ok(_) => (Vec::new(), None),
                Err(Error::Invalid(Diagnostics(d)) | Error::HostCannot(Diagnostics(d))) => {
                    (d, None)
                }
                Err(other) => (Vec::new(), Some(other.to_string())),
            };
            results.push(Validated {
                file: path,
                valid: diagnostics.is_empty() && error.is_none(),
                diagnostics,
                error,
            });
        } else {
            match outcome {
                Ok(_) => print(&format!("{}: valid\n", path.display()))?,
                Err(e) => eprintln!("{}\n", e.render()),
            }
        }
    }
    if json {
        print_json(&results)?;
    }
    Ok(worst)
}

/// One machine in `mm list --json`.
#[derive(Serialize)]
struct Listed {
    name: String,
    state: &'static str,
    image: Option<String>,
    description: Option<String>,
    definition: PathBuf,
    shadowed: Vec<PathBuf>,
    /// The first problem, for an invalid definition; or why its state is `unknown`.
    problem: Option<String>,
    /// Whether it runs, with its PID 1 and supervisor; `None` for an invalid definition
    /// or an unknown state.
    status: Option<mm::runtime::state::Status>,
    /// While it runs: the details `mm status --json` gives, as `machinectl list` has them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    running: Option<Running>,
}

/// What `mm list --json` says of a running machine beyond its status.
#[derive(Serialize)]
struct Running {
    /// The machine's own IPv4 addresses (none with the host's network or only loopback).
    addresses: Vec<std::net::Ipv4Addr>,
    /// The systemd unit it runs as (`mm@NAME.service`), if any.
    unit: Option<String>,
    /// The hash of the plan it was started from (`mm plan NAME --json` has the current one).
    plan_hash: String,
}

/// The running details of the machine whose runtime files are `paths`, if it runs.
fn running(paths: &mm::runtime::state::Paths) -> Option<Running> {
    use mm::plan::{Address, Network};
    let Ok(Some((_, launch))) = mm::runtime::state::running(paths) else {
        return None;
    };
    let Ok(Some(mm::runtime::state::Recorded::Running { plan_hash, .. })) =
        mm::runtime::state::read(paths)
    else {
        return None;
    };
    let addresses = match &launch.plan.network {
        Network::Link(link) => match link.address {
            Address::Assigned { address, .. } => vec![address.address],
            Address::Allocate { .. } => vec![],
        },
        Network::UserMode(mode) => vec![mode.address.address],
        Network::Host | Network::Private | Network::Joined => vec![],
    };
    Some(Running {
        addresses,
        unit: launch.unit,
        plan_hash,
    })
}

pub fn list(json: bool) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let listed: Vec<Listed> = discovery::list(&host.dirs.search)
        .into_iter()
        .map(|found| listed(found, &host.dirs.runtime))
        .collect();
    if json {
        print_json(&listed)?;
        return Ok(ExitCode::Ok);
    }
    if listed.is_empty() {
        let dirs: Vec<String> = host
            .dirs
            .search
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        print(&format!(
            "No machines defined. Looked in {}.\n",
            dirs.join(", ")
        ))?;
        return Ok(ExitCode::Ok);
    }
    let width = listed
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$}  {:9}  {}\n", "NAME", "STATE", "IMAGE");
    for l in &listed {
        let image = l
            .problem
            .clone()
            .or_else(|| l.image.clone())
            .unwrap_or_default();
        out.push_str(&format!("{:width$}  {:9}  {image}\n", l.name, l.state));
    }
    print(&out)?;
    Ok(ExitCode::Ok)
}

fn listed(found: Found, runtime: &Path) -> Listed {
    let loaded = Definition::load(&found.path);
    let problem = loaded.as_ref().err().map(|e| match e {
        mm::definition::LoadError::Invalid(d) => {
            d.first().map(|d| d.message.clone()).unwrap_or_default()
        }
        other => other.to_string(),
    });
    let def = loaded.ok();
    let paths = mm::runtime::state::Paths::new(&runtime.join(&found.name));
    // A valid definition whose state cannot be read is `unknown`, with the reason.
    let status = def.as_ref().map(|_| {
        mm::machine::reconciled(&paths).and_then(|()| {
            mm::runtime::state::status(&paths)
                .map_err(|e| mm::runtime::RuntimeError::io(&paths.state(), e).into())
        })
    });
    let (state, status, problem) = match status {
        None => ("invalid", None, problem),
        Some(Err(e)) => ("unknown", None, Some(e.to_string())),
        Some(Ok(status)) => {
            let state = match &status {
                mm::runtime::state::Status::Running { .. } => "running",
                mm::runtime::state::Status::Starting => "starting",
                mm::runtime::state::Status::Stopped { .. } => "stopped",
            };
            (state, Some(status), problem)
        }
    };
    let running = matches!(status, Some(mm::runtime::state::Status::Running { .. }))
        .then(|| running(&paths))
        .flatten();
    Listed {
        name: found.name,
        state,
        status,
        running,
        image: def.as_ref().map(|d| d.image.source.value.to_string()),
        description: def.and_then(|d| d.description),
        definition: found.path,
        shadowed: found.shadowed,
        problem,
    }
}

pub fn host(json: bool) -> Result<ExitCode, Error> {
    let host = Host::probe();
    if json {
        print_json(&host)?;
    } else {
        print(&render_host(&host))?;
    }
    Ok(ExitCode::Ok)
}

fn render_host(h: &Host) -> String {
    let mut out = String::new();
    for (key, value) in who(h)
        .into_iter()
        .chain(cgroups(h))
        .chain(services(h))
        .chain(places(h))
    {
        out.push_str(&format!("{key:<18} {value}\n"));
    }
    for note in &h.notes {
        out.push_str(&format!("{:<18} {note}\n", "note"));
    }
    out
}

/// Items joined by `sep`, or `none`.
fn or_none(items: impl IntoIterator<Item = String>, sep: &str) -> String {
    let items: Vec<String> = items.into_iter().collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(sep)
    }
}

fn shown(path: Option<&PathBuf>) -> String {
    path.map_or("none".to_owned(), |p| p.display().to_string())
}

/// `mm host`: the user and their subordinate ids.
fn who(h: &Host) -> Vec<(&'static str, String)> {
    let kind = if h.is_root() { "root" } else { "rootless" };
    let ranges = |r: &[mm::idmap::IdRange]| or_none(r.iter().map(ToString::to_string), ", ");
    vec![
        (
            "user",
            format!("{} (uid {}, gid {}), {kind}", h.user, h.uid, h.gid),
        ),
        ("home", h.home.display().to_string()),
        ("subuid", ranges(&h.subuid)),
        ("subgid", ranges(&h.subgid)),
    ]
}

/// `mm host`: the cgroup layout.
fn cgroups(h: &Host) -> Vec<(&'static str, String)> {
    let c = &h.cgroup;
    vec![
        ("cgroup mode", c.mode.to_string()),
        ("cgroup v2 tree", shown(c.unified.as_ref())),
        (
            "cgroup v1",
            or_none(c.v1.iter().map(|v| v.path.display().to_string()), " "),
        ),
        ("cgroup delegated", shown(c.delegated.as_ref())),
        (
            "cgroup controllers",
            or_none(c.controllers.iter().cloned(), " "),
        ),
    ]
}

/// `mm host`: the buses, machined and the service manager.
fn services(h: &Host) -> Vec<(&'static str, String)> {
    let probe =
        |p: &mm::host::Probe| format!("{} ({})", if p.available { "yes" } else { "no" }, p.detail);
    vec![
        ("system bus", probe(&h.bus.system_bus)),
        ("machined", probe(&h.bus.machined)),
        ("user bus", probe(&h.bus.user_bus)),
        (
            "systemd is PID 1",
            if h.systemd_pid1 { "yes" } else { "no" }.to_owned(),
        ),
        ("architecture", h.arch.clone()),
    ]
}

/// `mm host`: where definitions and state live.
fn places(h: &Host) -> Vec<(&'static str, String)> {
    let search = h.dirs.search.iter().map(|p| p.display().to_string());
    vec![
        ("definitions", search.collect::<Vec<_>>().join(" ")),
        ("image store", h.dirs.store.display().to_string()),
        ("machines", h.dirs.machines.display().to_string()),
        ("runtime", h.dirs.runtime.display().to_string()),
    ]
}
