//! mm's errors as the user sees them, and the exit code each one gives.

use std::path::PathBuf;

use crate::definition::Diagnostics;
use crate::definition::LoadError;
use crate::definition::discovery::DiscoveryError;
use crate::image::ImageError;

pub use crate::exit::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The definition itself is wrong.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A definition that is not a regular file, or too large to be one.
    #[error(transparent)]
    Load(LoadError),
    /// The definition is fine, but this host cannot run it as written.
    #[error("{0}")]
    HostCannot(Diagnostics),
    #[error("host facts in {}: {why}", path.display())]
    HostFile { path: PathBuf, why: String },
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A root machine's id block could not be read, chosen or recorded.
    #[error(transparent)]
    Ids(#[from] crate::idmap::AllocError),
    /// A root machine's address could not be read, chosen or recorded.
    #[error(transparent)]
    Address(#[from] crate::network::ipam::IpamError),
    #[error(transparent)]
    Account(#[from] crate::host::account::AccountError),
    #[error("`{text}` is not an image source: {why}")]
    BadSource { text: String, why: String },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// `mm bind` could not bind the path into the machine.
    #[error(transparent)]
    Bind(#[from] crate::runtime::bind::BindError),
    #[error(transparent)]
    Systemd(#[from] crate::systemd::SystemdError),
    /// What needs a service manager where none runs.
    #[error("{0}")]
    NoSystemd(String),
    /// The service manager failed to start or stop a machine's unit.
    #[error("{0}")]
    Service(String),
    /// A launcher or desktop entry could not be exported or removed.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// `MM_ROOT` names something that is not a directory.
    #[error(
        "MM_ROOT={} is not a directory; it must name the directory for mm's state (made if missing)",
        .0.display()
    )]
    RootNotADir(PathBuf),
    /// Something the user asked to see does not exist (a machine's console log).
    #[error("{0}")]
    Missing(String),
    /// `mm oci`: a bundle mm cannot take, or a container in the wrong state.
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Read { path, source } => Self::Read { path, source },
            LoadError::Invalid(diagnostics) => Self::Invalid(diagnostics),
            other => Self::Load(other),
        }
    }
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Discovery(DiscoveryError::BadName { .. }) => ExitCode::Usage,
            Self::Discovery(_) => ExitCode::NotFound,
            Self::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ExitCode::NotFound
            }
            Self::Read { .. } | Self::Output(_) => ExitCode::Io,
            Self::Ids(e) => ids_exit_code(e),
            Self::Address(e) => address_exit_code(e),
            Self::Invalid(_) | Self::HostFile { .. } | Self::Load(_) => ExitCode::InvalidDefinition,
            Self::HostCannot(_) => ExitCode::HostCannot,
            Self::BadSource { .. } | Self::RootNotADir(_) => ExitCode::Usage,
            Self::Image(e) => image_exit_code(e),
            Self::Runtime(e) => e.exit_code(),
            Self::Bind(e) if e.source.kind() == std::io::ErrorKind::NotFound => ExitCode::NotFound,
            Self::Bind(_) => ExitCode::HostCannot,
            Self::Systemd(_) | Self::Service(_) | Self::Account(_) => ExitCode::System,
            Self::Missing(_) => ExitCode::NotFound,
            Self::NoSystemd(_) => ExitCode::HostCannot,
            Self::Export(e) => export_exit_code(e),
            Self::Oci(e) => e.exit_code(),
        }
    }

    /// The error as printed on standard error: diagnostics print themselves (they start
    /// with `error:`), other errors get the prefix.
    pub fn render(&self) -> String {
        match self {
            Self::Invalid(d) | Self::HostCannot(d) => d.to_string(),
            other => format!("error: {other}"),
        }
    }
}

fn export_exit_code(e: &crate::export::ExportError) -> ExitCode {
    use crate::export::ExportError;
    match e {
        ExportError::Io { .. } | ExportError::Record { .. } => ExitCode::Io,
        ExportError::Exists(_) | ExportError::Foreign(_) => ExitCode::Busy,
        ExportError::NotExported { .. } => ExitCode::NotFound,
        ExportError::BadName(_) | ExportError::BadProgram(_) => ExitCode::Usage,
        ExportError::Desktop { .. } => ExitCode::InvalidDefinition,
    }
}

fn ids_exit_code(e: &crate::idmap::AllocError) -> ExitCode {
    use crate::idmap::AllocError;
    match e {
        AllocError::Io { .. } => ExitCode::Io,
        AllocError::Corrupt { .. } => ExitCode::InvalidDefinition,
        AllocError::Exhausted => ExitCode::HostCannot,
        AllocError::Overlap { .. } => ExitCode::InvalidDefinition,
    }
}

fn address_exit_code(e: &crate::network::ipam::IpamError) -> ExitCode {
    use crate::network::ipam::IpamError;
    match e {
        IpamError::Io { .. } => ExitCode::Io,
        IpamError::Corrupt { .. } | IpamError::Taken(_) => ExitCode::InvalidDefinition,
        IpamError::Exhausted { .. } | IpamError::ZoneFull { .. } => ExitCode::HostCannot,
    }
}

impl From<crate::plan::Rejected> for Error {
    fn from(e: crate::plan::Rejected) -> Self {
        match e {
            crate::plan::Rejected::Invalid(d) => Self::Invalid(d),
            crate::plan::Rejected::HostCannot(d) => Self::HostCannot(d),
        }
    }
}

/// The exit code for an image error (also used by the rootless worker, across processes).
pub fn image_exit_code(e: &ImageError) -> ExitCode {
    match e {
        ImageError::NotALayout(_)
        | ImageError::NotADir(_)
        | ImageError::NotAStore { .. }
        | ImageError::NotInPodmanStore { .. }
        | ImageError::NoSuchTag { .. }
        | ImageError::NoSuchIndex { .. }
        | ImageError::WhichImage { .. }
        | ImageError::NoPlatform { .. }
        | ImageError::MissingBlob { .. }
        | ImageError::NotInStore(_)
        | ImageError::RegistryNotFound(_) => ExitCode::NotFound,
        ImageError::Io { .. } | ImageError::StoreWrite { .. } => ExitCode::Io,
        ImageError::Unsupported(_)
        | ImageError::Rootless(_)
        | ImageError::Registry(_)
        | ImageError::Blocked { .. }
        | ImageError::ShortName { .. } => ExitCode::HostCannot,
        ImageError::InPlace
        | ImageError::Exists(_)
        | ImageError::Commit { .. }
        | ImageError::Export { .. } => ExitCode::Usage,
        ImageError::Pack(_) => ExitCode::Io,
        ImageError::Worker(failure) => ExitCode::from_code(failure.code),
        _ => ExitCode::InvalidDefinition,
    }
}

impl ExitCode {
    /// The code a worker process reported; unknown codes are plain failures.
    pub fn from_code(code: u8) -> Self {
        [
            Self::Ok,
            Self::Usage,
            Self::NotRunning,
            Self::InvalidDefinition,
            Self::NotFound,
            Self::HostCannot,
            Self::System,
            Self::Io,
            Self::Busy,
            Self::CannotExecute,
            Self::CommandNotFound,
        ]
        .into_iter()
        .find(|c| *c as u8 == code)
        .unwrap_or(Self::Failure)
    }

    /// Success gives way to a failure; between failures, the first one stays.
    pub fn max_with(self, other: ExitCode) -> ExitCode {
        if self == ExitCode::Ok { other } else { self }
    }
}
