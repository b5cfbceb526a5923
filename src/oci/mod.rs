//! mm as an OCI runtime: a bundle's `config.json` compiled into mm's own plan (the same
//! `Plan` a TOML definition gives, run by the same runtime), and the runc-style lifecycle
//! around it (`create`, `start`, `state`, `kill`, `delete`; `exec`; `ps`, `pause`,
//! `resume`, `update`), with each container's state under the runtime's `--root`.
//! docs/oci.md says what works and what is refused.

pub mod attach;
mod compile;
pub mod control;
mod defaults;
pub mod devices;
pub mod exec;
mod fields;
pub mod hooks;
pub mod lifecycle;
mod seccomp;
mod spec;
pub mod state;

use std::path::{Path, PathBuf};

pub use compile::{Options, compile};
pub use defaults::{default_spec, features};
pub use fields::FieldError;
pub use spec::Spec;

use crate::exit::ExitCode;

/// What the OCI front end reports.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a runtime-spec config: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Fields mm cannot take, each at its JSON path.
    #[error("{}: {} field{} mm cannot take:\n{}", path.display(), errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Config {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
    #[error("`{id}` is not a container id mm takes: {why}")]
    BadId { id: String, why: String },
    #[error("container {id} exists already (in {})", dir.display())]
    Exists { id: String, dir: PathBuf },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    /// The container is not in the state the command needs.
    #[error("container {id} is {status}: {what}")]
    WrongState {
        id: String,
        status: state::Status,
        what: String,
    },
    /// A command line mm cannot follow.
    #[error("{0}")]
    Usage(String),
    #[error("`{0}` is not a signal name or number (such as TERM, SIGKILL or 9)")]
    BadSignal(String),
    /// The bundle's seccomp profile could not be compiled.
    #[error("the seccomp profile {digest}: {why}")]
    Seccomp { digest: String, why: String },
    /// A hook failed.
    #[error("the {point} hook {}: {why}", path.display())]
    Hook {
        point: String,
        path: PathBuf,
        why: String,
    },
    /// The container's supervisor did not do what it was asked.
    #[error("the supervisor of container {id}: {why}")]
    Supervisor { id: String, why: String },
    /// The container has no cgroup of its own (an ordinary user's, without a delegated
    /// cgroup): what needs one cannot be done.
    #[error("container {id} has no cgroup of its own, so mm cannot {what}{}",
        if why.is_empty() { String::new() } else { format!(" ({why})") })]
    NoCgroup {
        id: String,
        what: String,
        why: String,
    },
    #[error("container {id}: {source}")]
    Cgroup {
        id: String,
        source: crate::runtime::cgroup::CgroupError,
    },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

impl OciError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ExitCode::NotFound
            }
            Self::Io { .. } => ExitCode::Io,
            Self::Json { .. } | Self::Config { .. } => ExitCode::InvalidDefinition,
            Self::BadId { .. } | Self::BadSignal(_) | Self::Usage(_) => ExitCode::Usage,
            Self::Exists { .. } | Self::WrongState { .. } => ExitCode::Busy,
            Self::NotFound { .. } => ExitCode::NotFound,
            Self::Supervisor { .. }
            | Self::Seccomp { .. }
            | Self::Cgroup { .. }
            | Self::Hook { .. } => ExitCode::System,
            Self::NoCgroup { .. } => ExitCode::Busy,
            Self::Runtime(e) => e.exit_code(),
        }
    }
}

/// Reads and checks a bundle's `config.json`: every field mm does not handle is an error
/// at its JSON path, then the rest is read into [`Spec`].
pub fn load(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| OciError::io(&path, e))?;
    let json = |source| OciError::Json {
        path: path.clone(),
        source,
    };
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
    let errors = fields::check(&doc);
    if !errors.is_empty() {
        return Err(OciError::Config { path, errors });
    }
    serde_json::from_str(&text).map_err(json)
}

/// Loads the bundle at `bundle` and compiles it for `host` as container `id`.
pub fn plan(
    bundle: &Path,
    id: &str,
    host: &crate::host::Host,
    options: &Options,
) -> Result<crate::plan::Plan, OciError> {
    plan_and_spec(bundle, id, host, options).map(|(plan, _)| plan)
}

/// [`plan`], with the config it was compiled from (what `create` keeps beside the plan:
/// annotations, hooks), read once.
pub fn plan_and_spec(
    bundle: &Path,
    id: &str,
    host: &crate::host::Host,
    options: &Options,
) -> Result<(crate::plan::Plan, Spec), OciError> {
    let name = ContainerId::new(id)?;
    let bundle = std::path::absolute(bundle).map_err(|e| OciError::io(bundle, e))?;
    let spec = load(&bundle)?;
    let plan =
        compile(&spec, &bundle, &name, host, options).map_err(|errors| OciError::Config {
            path: bundle.join("config.json"),
            errors,
        })?;
    Ok((plan, spec))
}

/// A container id as mm takes it: 1 to 200 letters, digits and `_ + - .`, not starting
/// with a dot (runc's rule, bounded so that `mm-oci-ID.scope` is a file name); it names the
/// container's state directory and cgroup. Podman's and containerd's ids are 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerId {
    id: String,
    /// The plan's machine name, a hostname label: the id itself when it is one, else the
    /// id cut to 63 characters with other characters as `-`.
    name: crate::definition::MachineName,
}

impl ContainerId {
    pub fn new(id: &str) -> Result<Self, OciError> {
        let bad = |why: &str| OciError::BadId {
            id: id.to_owned(),
            why: why.to_owned(),
        };
        if id.is_empty() || id.len() > 200 {
            return Err(bad("it must have 1 to 200 characters"));
        }
        if id.starts_with('.') {
            return Err(bad("it must not start with a dot"));
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
        {
            return Err(bad("it may hold only letters, digits and _ + - ."));
        }
        let label: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(63)
            .collect();
        let name = crate::definition::MachineName::new(id)
            .or_else(|_| crate::definition::MachineName::new(label.trim_matches('-')))
            .map_err(|why| bad(&why))?;
        Ok(Self {
            id: id.to_owned(),
            name,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &crate::definition::MachineName {
        &self.name
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::ContainerId;

    #[test]
    fn container_ids_of_engines_are_taken() {
        let podman = "c38b54c92057ae6e91715414569c83a7d5f7f8089109419a20c1ded86d3cbc6d";
        let id = ContainerId::new(podman).unwrap();
        assert_eq!(id.as_str(), podman);
        assert_eq!(id.name().as_str(), &podman[..63]);
        assert_eq!(
            ContainerId::new("web_1.x").unwrap().name().as_str(),
            "web-1-x"
        );
        for bad in ["", "..", ".x", "a/b", "a b", &"x".repeat(201)] {
            assert!(ContainerId::new(bad).is_err(), "{bad:?}");
        }
    }
}
