//! mm: a declarative machine manager. A machine definition (TOML) and the host's facts are
//! compiled into a pure [`plan::Plan`], which the launcher then executes.

pub mod check;
pub mod commit;
pub mod definition;
pub mod digest;
pub mod error;
pub mod exit;
pub mod export;
pub mod host;
pub mod idmap;
pub mod image;
pub mod machine;
pub mod network;
pub mod oci;
pub mod plan;
pub mod runtime;
pub mod signal;
pub mod state;
pub mod systemd;

pub use error::{Error, ExitCode};
