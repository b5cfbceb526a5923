//! mm as an OCI runtime: a bundle's `config.json` compiled into mm's own plan (the same
//! `Plan` a TOML definition gives, run by the same runtime), and the runc-style lifecycle
//! around it (`create`, `start`, `state`, `kill`, `delete`), with each container's state
//! under the runtime's `--root`. docs/oci.md says what works and what is refused.

mod compile;
mod defaults;
mod fields;
pub mod lifecycle;
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
    /// The container's supervisor did not do what it was asked.
    #[error("the supervisor of container {id}: {why}")]
    Supervisor { id: String, why: String },
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
            Self::Supervisor { .. } => ExitCode::System,
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
    let name = container_id(id)?;
    let bundle = std::path::absolute(bundle).map_err(|e| OciError::io(bundle, e))?;
    let spec = load(&bundle)?;
    compile(&spec, &bundle, &name, host, options).map_err(|errors| OciError::Config {
        path: bundle.join("config.json"),
        errors,
    })
}

/// A container id as mm takes it: a hostname label (what podman's and containerd's
/// 64-hex-digit ids are), since it names the container's cgroup and state directory.
pub fn container_id(id: &str) -> Result<crate::definition::MachineName, OciError> {
    crate::definition::MachineName::new(id).map_err(|why| OciError::BadId {
        id: id.to_owned(),
        why,
    })
}
