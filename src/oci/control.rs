//! The verbs that act on a container's cgroup: `ps` (its processes), `pause` and
//! `resume` (its freezer: v1's `freezer` hierarchy where the host has one, else v2's
//! `cgroup.freeze`), and `update` (the limits mm's cgroup layer sets: memory, CPU quota,
//! pids).

use super::state::{Container, Status};
use super::{OciError, Options};
use crate::runtime::cgroup::MachineCgroup;

/// The container's cgroup, from the plan its supervisor runs; an error saying why when
/// it has none of its own (an ordinary user's container without a delegated cgroup).
fn cgroup(container: &Container, what: &str) -> Result<MachineCgroup, OciError> {
    let (_, launch) = crate::runtime::state::running(&container.paths)
        .map_err(|e| OciError::io(&container.paths.state(), e))?
        .ok_or_else(|| OciError::NotFound {
            id: container.id.clone(),
        })?;
    match (
        &launch.plan.cgroup,
        MachineCgroup::from_plan(&launch.plan.cgroup),
    ) {
        (_, Some(cgroup)) => Ok(cgroup),
        (crate::plan::Cgroup::Inherit { why }, None) => Err(OciError::NoCgroup {
            id: container.id.clone(),
            what: what.to_owned(),
            why: why.clone(),
        }),
        (crate::plan::Cgroup::Create { .. }, None) => Err(OciError::NoCgroup {
            id: container.id.clone(),
            what: what.to_owned(),
            why: String::new(),
        }),
    }
}

fn live(options: &Options, id: &str) -> Result<(Container, Status), OciError> {
    let container = Container::new(&options.state_root, id)?;
    let (_, status) = container.status()?;
    if status == Status::Stopped {
        return Err(OciError::WrongState {
            id: id.to_owned(),
            status,
            what: "it has no processes".to_owned(),
        });
    }
    Ok((container, status))
}

/// `ps`: the host pids of every process in the container's cgroup, in order.
pub fn pids(options: &Options, id: &str) -> Result<Vec<i32>, OciError> {
    let (container, _) = live(options, id)?;
    cgroup(&container, "list its processes")?
        .all_pids()
        .map_err(|e| OciError::Cgroup {
            id: id.to_owned(),
            source: e,
        })
}

/// Freezes or thaws the container's cgroup (`delete --force` thaws a paused one first).
pub fn freeze(container: &Container, frozen: bool) -> Result<(), OciError> {
    let what = if frozen { "pause it" } else { "resume it" };
    cgroup(container, what)?
        .freeze(frozen)
        .map_err(|source| OciError::Cgroup {
            id: container.id.clone(),
            source,
        })?;
    if let Some(mut record) = container.read()? {
        record.paused = frozen;
        container.write(&record)?;
    }
    Ok(())
}

/// `pause`: freezes a created or running container (status `paused`).
pub fn pause(options: &Options, id: &str) -> Result<(), OciError> {
    let (container, status) = live(options, id)?;
    if !matches!(status, Status::Created | Status::Running) {
        return Err(OciError::WrongState {
            id: id.to_owned(),
            status,
            what: "only a created or running container can be paused".to_owned(),
        });
    }
    freeze(&container, true)
}

/// `resume`: thaws a paused container.
pub fn resume(options: &Options, id: &str) -> Result<(), OciError> {
    let (container, status) = live(options, id)?;
    if status != Status::Paused {
        return Err(OciError::WrongState {
            id: id.to_owned(),
            status,
            what: "only a paused container can be resumed".to_owned(),
        });
    }
    freeze(&container, false)
}

/// What `update` was asked: runc's flags, over a `--resources` file's limits.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// `--resources FILE`: a runtime-spec `linux.resources` object.
    pub resources: Option<std::path::PathBuf>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub pids_limit: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

/// `update`: new limits for the container's cgroup, checked as config.json's are, written
/// and read back.
pub fn update(options: &Options, id: &str, update: &Update) -> Result<(), OciError> {
    let (container, _) = live(options, id)?;
    let mut resources = match &update.resources {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| OciError::io(file, e))?;
            let json = |source| OciError::Json {
                path: file.clone(),
                source,
            };
            let value: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
            let errors =
                super::fields::check(&serde_json::json!({ "linux": { "resources": value } }));
            if !errors.is_empty() {
                return Err(OciError::Config {
                    path: file.clone(),
                    errors,
                });
            }
            serde_json::from_value(value).map_err(json)?
        }
        None => super::spec::Resources::default(),
    };
    if update.memory.is_some() || update.memory_swap.is_some() {
        let memory = resources.memory.get_or_insert_with(Default::default);
        memory.limit = update.memory.or(memory.limit);
        memory.swap = update.memory_swap.or(memory.swap);
    }
    if let Some(limit) = update.pids_limit {
        resources.pids = Some(super::spec::Pids { limit: Some(limit) });
    }
    if update.cpu_quota.is_some() || update.cpu_period.is_some() {
        let cpu = resources.cpu.get_or_insert_with(Default::default);
        cpu.quota = update.cpu_quota.or(cpu.quota);
        cpu.period = update.cpu_period.or(cpu.period);
    }
    let limits =
        super::compile::update_resources(&resources).map_err(|errors| OciError::Config {
            path: update
                .resources
                .clone()
                .unwrap_or_else(|| "mm oci update".into()),
            errors,
        })?;
    if !limits.any() {
        return Err(OciError::Usage(
            "nothing to update: give --memory, --memory-swap, --pids-limit, --cpu-quota or --resources".to_owned(),
        ));
    }
    let (_, launch) = crate::runtime::state::running(&container.paths)
        .map_err(|e| OciError::io(&container.paths.state(), e))?
        .ok_or_else(|| OciError::NotFound { id: id.to_owned() })?;
    let cgroup = cgroup(&container, "limit it")?;
    let crate::plan::Cgroup::Create { mode, dirs, .. } = &launch.plan.cgroup else {
        return Err(OciError::Usage("it has no cgroup of its own".to_owned()));
    };
    let host = crate::host::Host::probe_without_buses("not asked: mm oci update");
    let writes = crate::plan::limit_writes(&limits, *mode, dirs, &host)
        .map_err(|why| OciError::Usage(format!("linux.resources: {why}")))?;
    cgroup.apply(&writes).map_err(|source| OciError::Cgroup {
        id: id.to_owned(),
        source,
    })
}
