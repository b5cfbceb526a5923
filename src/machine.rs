//! A machine, from its definition to a launch, as the verbs need it: compiling against
//! what mm holds, preparing what needs no namespace (the image in the store, the id block,
//! the writable layer), the launch, and the command that starts its supervisor; and
//! finding a machine's runtime files by its name.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check;
use crate::definition::discovery;
use crate::definition::{Definition, KeepWho, MachineName};
use crate::error::Error;
use crate::host::{Dirs, Host};
use crate::idmap::{Allocator, IdRange};
use crate::image::progress::Progress;
use crate::image::{Request, Store};
use crate::network::ipam::Ipam;
use crate::plan::{self, IdMapping, Layers, Plan, Upper};
use crate::runtime::state::{self, Paths};
use crate::runtime::{Console, Launch, RuntimeError};

/// Loads, checks and compiles one definition: everything short of touching the system.
pub fn compile(path: &Path, host: &Host) -> Result<Plan, Error> {
    let def = Definition::load(path)?;
    check::paths(&def, host).map_err(Error::Invalid)?;
    let store = crate::image::Store::new(&host.dirs.store);
    let stored = store.image(&def.image.source.value.to_string())?;
    let ipam = Ipam::new(&host.dirs.machines);
    let name = def.name.as_str();
    let (own, others) = match plan::wanted(&def) {
        Some(_) => (ipam.recorded(name)?, ipam.others(name)?),
        None => (None, Vec::new()),
    };
    let (ids, taken) = if host.is_root() {
        let allocator = crate::idmap::Allocator::new(&host.dirs.machines);
        let name = def.name.as_str();
        // Only an explicit range can overlap another machine's: an allocated one never does.
        let taken = match def.users.value {
            crate::definition::UserRange::Explicit { .. } => allocator.others(name)?,
            crate::definition::UserRange::Auto => Vec::new(),
        };
        (allocator.recorded(name)?, taken)
    } else {
        (None, Vec::new())
    };
    let account = match def.keep_id.as_ref().map(|k| &k.value.who) {
        Some(KeepWho::Named(name)) => crate::host::account::lookup(name)?,
        Some(KeepWho::Me) => crate::host::account::lookup(&host.user)?,
        None => None,
    };
    let known = plan::Known {
        image: stored.as_ref(),
        ids,
        taken: &taken,
        addresses: plan::KnownAddresses {
            own: own.as_ref(),
            others: &others,
        },
        account: account.as_ref(),
    };
    Ok(plan::compile(&def, host, known)?)
}

/// The systemd unit this process runs in, and its cgroup (`--keep-unit`).
pub fn own_unit(host: &Host) -> Result<(String, String), Error> {
    let Some(cgroup) = host.cgroup.own.clone() else {
        return Err(Error::NoSystemd(
            "--keep-unit: mm found no cgroup of its own in /proc/self/cgroup, so no systemd \
             unit to stay in; it is meant for mm@.service"
                .to_owned(),
        ));
    };
    let unit = Path::new(&cgroup)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".service"))
        .map(str::to_owned);
    match unit {
        Some(unit) => Ok((unit, cgroup)),
        None => Err(Error::NoSystemd(format!(
            "--keep-unit: mm is not running as a systemd service (its cgroup is `{cgroup}`); \
             it is meant for mm@.service"
        ))),
    }
}

/// A machine made ready to boot by [`ready_to_boot`].
pub struct Ready {
    /// Its definition.
    pub path: PathBuf,
    /// Its plan, made concrete.
    pub plan: Plan,
    /// The machine's lock, taken before anything was prepared: `mm rm`, `mm commit` and
    /// another start find the machine busy until the supervisor (given this lock) ends.
    pub lock: std::fs::File,
}

/// Finds and prepares a machine that is not running: after cleaning up what a killed
/// supervisor left, its lock taken, its plan made concrete.
pub fn ready_to_boot(machine: &str, host: &Host, pull: &Pull) -> Result<Ready, Error> {
    let path = discovery::resolve(machine, &host.dirs.search)?;
    let (name, paths) = machine_paths(&path.to_string_lossy())?;
    reconciled(&paths)?;
    crate::state::private_dir(&paths.dir).map_err(|e| RuntimeError::io(&paths.dir, e))?;
    let lock = match crate::state::lock(&paths.lock(), false) {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(RuntimeError::AlreadyRunning { name }.into());
        }
        Err(e) => return Err(RuntimeError::io(&paths.lock(), e).into()),
    };
    let plan = prepare(&path, host, pull)?;
    Ok(Ready { path, plan, lock })
}

/// The launch of a prepared plan: a pty console for `mm start` or when any of our
/// standard streams is a terminal (the machine never gets ours), else the standard
/// streams as they are (pipes or files, none a terminal).
pub fn launch(plan: Plan, detach: bool) -> Result<Launch, Error> {
    let console = if detach || crate::runtime::stdio::any_terminal() {
        Console::Pty
    } else {
        Console::Pipe
    };
    Ok(Launch::new(plan, console)?)
}

/// Cleans up after a supervisor that was killed (its cgroup, mount points and machined
/// registration) before anything looks at the machine.
pub fn reconciled(paths: &Paths) -> Result<(), Error> {
    crate::runtime::supervisor::reconcile(paths)
        .map_err(|e| RuntimeError::io(&paths.state(), e).into())
}

/// How `mm run` and `mm start` pull an image the store does not have yet.
#[derive(Debug, Clone, Default)]
pub struct Pull {
    /// `--authfile FILE`: the only registry auth file read (else containers-auth.json(5)'s).
    pub authfile: Option<PathBuf>,
}

/// Compiles the plan, then makes it concrete: the image imported, the id block allocated,
/// the writable layer made. Compiles again after each, so the plan says what is.
pub fn prepare(path: &Path, host: &Host, pull: &Pull) -> Result<Plan, Error> {
    let mut plan = compile(path, host)?;
    let store = Store::new(&host.dirs.store);
    // A stored image whose layers this plan's layout lacks (a keep-id machine's first
    // start) is opened again and unpacked once more, in that layout, from its blobs.
    let missing = match &plan.image.layers {
        Layers::Unresolved => true,
        Layers::Stored { layers, .. } => layers.iter().any(|l| !l.dir.is_dir()),
        Layers::Directory { .. } => false,
    };
    if missing {
        let request = Request {
            source: &plan.image.source,
            pin: plan.image.pinned.as_ref(),
            host,
            tls_verify: true,
            layout: plan.image.layout,
            authfile: pull.authfile.as_deref(),
        };
        crate::image::import(&request, &store, &Progress::new())?;
        plan = compile(path, host)?;
    }
    if host.is_root() {
        // Root machines' blocks are disjoint: an allocated one is recorded, an explicit
        // `users.range` is claimed (and refused if another machine holds any of it).
        let allocator = Allocator::new(&host.dirs.machines);
        let name = plan.machine.name.as_str();
        match &plan.ids.uid {
            IdMapping::Allocate { .. } => {
                allocator.allocate(name)?;
                plan = compile(path, host)?;
            }
            IdMapping::Map { entries } => {
                let single = match entries.as_slice() {
                    [e] => Some(IdRange {
                        start: e.outside,
                        count: e.count,
                    }),
                    _ => None,
                };
                if let Some(range) = plan.ids.block.or(single) {
                    match allocator.claim(name, range) {
                        // Another machine claimed them since this one compiled: compiling
                        // again points at `users.range`.
                        Err(e @ crate::idmap::AllocError::Overlap { .. }) => {
                            compile(path, host)?;
                            return Err(e.into());
                        }
                        claimed => claimed?,
                    }
                }
            }
        }
    }
    if let plan::Network::Link(link) = &plan.network
        && let Some(want) = plan::unallocated(link)
    {
        let name = plan.machine.name.as_str();
        Ipam::new(&host.dirs.machines).allocate(name, &want, &host.network.around())?;
        plan = compile(path, host)?;
    }
    if let Upper::Persistent { upper, work } = &plan.root.upper {
        let owner = match &plan.ids.uid {
            IdMapping::Map { entries } if host.is_root() => entries.first().map(|e| e.outside),
            _ => None,
        };
        // The machine's directory holds its files as they are (setuid ones too): private.
        if let Some(machine_dir) = upper.parent() {
            crate::state::private_dir(machine_dir).map_err(|e| RuntimeError::io(machine_dir, e))?;
        }
        for dir in [upper, work] {
            let made = std::fs::create_dir_all(dir).and_then(|()| {
                owner.map_or(Ok(()), |id| {
                    std::os::unix::fs::chown(dir, Some(id), Some(id))
                })
            });
            made.map_err(|e| RuntimeError::io(dir, e))?;
        }
    }
    if let Some(keep) = &plan.keep_id
        && let plan::HomeFrom::Machine { dir } = &keep.home_from
    {
        make_home(host, &plan.machine.state_dir, dir, keep)?;
    }
    Ok(plan)
}

/// The keep-id user's machine home, in the machine's state directory: made once, the
/// user's (as root, the named user's host ids, which are its ids inside too).
fn make_home(host: &Host, state_dir: &Path, dir: &Path, keep: &plan::KeepId) -> Result<(), Error> {
    crate::state::private_dir(state_dir).map_err(|e| RuntimeError::io(state_dir, e))?;
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(RuntimeError::io(dir, e).into()),
    }
    let owned = if host.is_root() {
        std::os::unix::fs::chown(dir, Some(keep.uid), Some(keep.gid))
    } else {
        Ok(())
    };
    owned
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        })
        .map_err(|e| RuntimeError::io(dir, e).into())
}

pub use crate::runtime::launch::LAUNCH_FD_ARG;

/// `mm __supervise [--detach] --launch-fd=N` with the launch, as JSON, on descriptor N
/// (see [`crate::runtime::launch::supervisor_command`]).
pub fn supervisor_command(
    launch: &Launch,
    detach: bool,
    lock: &std::fs::File,
) -> Result<(Command, std::fs::File), Error> {
    Ok(crate::runtime::launch::supervisor_command(
        launch,
        detach,
        Some(lock),
    )?)
}

/// The store layer directories that running machines' overlays are made of (read from
/// each supervised machine's state under `runtime`): what `mm image check --repair` must
/// not remove under them. A machine whose state cannot be read counts as using nothing.
pub fn layers_in_use(runtime: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(entries) = std::fs::read_dir(runtime) else {
        return dirs;
    };
    for entry in entries.flatten() {
        let paths = Paths::new(&entry.path());
        if !state::supervised(&paths).unwrap_or(false) {
            continue;
        }
        if let Ok(Some(state::Recorded::Running { launch, .. })) = state::read(&paths)
            && let Layers::Stored { layers, .. } = &launch.plan.image.layers
        {
            dirs.extend(layers.iter().map(|l| l.dir.clone()));
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// A machine's name (a NAME or a path to NAME.toml) and its runtime files.
pub fn machine_paths(machine: &str) -> Result<(String, Paths), Error> {
    let stem = Path::new(machine)
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|_| machine.ends_with(".toml"))
        .unwrap_or(machine);
    let name = MachineName::new(stem).map_err(|why| discovery::DiscoveryError::BadName {
        arg: machine.to_owned(),
        why,
    })?;
    let dirs = Dirs::current();
    Ok((
        name.to_string(),
        Paths::new(&dirs.runtime.join(name.as_str())),
    ))
}
