//! systemd over D-Bus (zbus, blocking): machined registration, the service manager that
//! runs `mm@NAME.service`, and the readiness notification a unit's main process sends.
//!
//! Every live D-Bus connection runs a helper thread. A process that still has to enter a
//! user namespace or fork its machine must not open one: the supervisor registers only
//! after PID 1 runs, with the signals it waits for already blocked.

pub mod machined;
pub mod manager;
pub mod notify;

use std::time::Duration;

use zbus::blocking::Connection;

/// How long one D-Bus call may take before mm gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// A call on the bus failed; `what` says what mm asked.
    #[error("{what}: {}", describe(.source))]
    Bus {
        what: String,
        #[source]
        source: zbus::Error,
    },
    /// A unit's job ended with a result other than `done`.
    #[error("{unit}: the job to {verb} it ended with `{result}`")]
    Job {
        unit: String,
        verb: &'static str,
        result: String,
    },
}

impl SystemdError {
    pub(crate) fn bus(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> Self {
        let what = what.into();
        move |source| Self::Bus { what, source }
    }

    /// The D-Bus error name of a failed call, such as
    /// `org.freedesktop.systemd1.NoSuchUnit`.
    pub fn error_name(&self) -> Option<&str> {
        match self {
            Self::Bus {
                source: zbus::Error::MethodError(name, _, _),
                ..
            } => Some(name.as_str()),
            _ => None,
        }
    }

    /// What went wrong, without what mm asked (for a caller that names its step itself).
    pub fn detail(&self) -> String {
        match self {
            Self::Bus { source, .. } => describe(source),
            other => other.to_string(),
        }
    }

    /// Whether the errno is the socket's own (then the detail already shows it).
    pub fn from_socket(&self) -> bool {
        matches!(
            self,
            Self::Bus {
                source: zbus::Error::InputOutput(_),
                ..
            }
        )
    }

    /// The errno behind the failure: the socket's, or the one a standard D-Bus error name
    /// stands for (as sd-bus maps them).
    pub fn errno(&self) -> Option<i32> {
        let Self::Bus { source, .. } = self else {
            return None;
        };
        if let zbus::Error::InputOutput(e) = source {
            return e.raw_os_error();
        }
        let name = self
            .error_name()?
            .strip_prefix("org.freedesktop.DBus.Error.")?;
        Some(match name {
            "AccessDenied" | "AuthFailed" => libc::EACCES,
            "NoMemory" => libc::ENOMEM,
            "ServiceUnknown" | "NameHasNoOwner" => libc::EHOSTUNREACH,
            "NoReply" | "Timeout" | "TimedOut" => libc::ETIMEDOUT,
            "FileNotFound" | "UnknownObject" => libc::ENOENT,
            "FileExists" => libc::EEXIST,
            "LimitsExceeded" => libc::ENOBUFS,
            "InvalidArgs" => libc::EINVAL,
            "Disconnected" => libc::ECONNRESET,
            "NotSupported" | "UnknownMethod" => libc::EOPNOTSUPP,
            _ => return None,
        })
    }
}

/// A method error's own message is what the user needs; its name only when it has none.
fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(detail), _) if !detail.is_empty() => {
            format!("{detail} ({name})")
        }
        e => e.to_string(),
    }
}

/// Which bus: the system's, or the user's own (`$DBUS_SESSION_BUS_ADDRESS`, or
/// `$XDG_RUNTIME_DIR/bus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    System,
    User,
}

impl Bus {
    /// The bus a process with this effective uid talks to systemd on.
    pub fn for_uid(uid: u32) -> Self {
        if uid == 0 { Self::System } else { Self::User }
    }

    pub fn connect(self) -> Result<Connection, SystemdError> {
        let builder = match self {
            Self::System => zbus::blocking::connection::Builder::system(),
            Self::User => zbus::blocking::connection::Builder::session(),
        };
        builder
            .and_then(|b| b.method_timeout(CALL_TIMEOUT).build())
            .map_err(SystemdError::bus(format!("connect to the {self} bus")))
    }
}

impl std::fmt::Display for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::System => "system",
            Self::User => "user",
        })
    }
}

/// Whether `name` has an owner on the bus.
fn has_owner(connection: &Connection, name: &str) -> Result<bool, SystemdError> {
    let what = || format!("ask the bus whether {name} runs");
    let proxy =
        zbus::blocking::fdo::DBusProxy::new(connection).map_err(SystemdError::bus(what()))?;
    let bus_name =
        zbus::names::BusName::try_from(name).map_err(|e| SystemdError::bus(what())(e.into()))?;
    proxy
        .name_has_owner(bus_name)
        .map_err(|e| SystemdError::bus(what())(e.into()))
}

/// One property of an object, read with `org.freedesktop.DBus.Properties.Get`.
fn property<T>(
    connection: &Connection,
    destination: &str,
    path: &str,
    interface: &str,
    name: &str,
) -> Result<T, SystemdError>
where
    T: TryFrom<zbus::zvariant::OwnedValue>,
    T::Error: Into<zbus::Error>,
{
    let what = || format!("read {interface}.{name} of {path}");
    let reply = connection
        .call_method(
            Some(destination),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(interface, name),
        )
        .map_err(SystemdError::bus(what()))?;
    let value: zbus::zvariant::OwnedValue = reply
        .body()
        .deserialize()
        .map_err(SystemdError::bus(what()))?;
    T::try_from(value).map_err(|e| SystemdError::bus(what())(e.into()))
}

/// The object path a `Get…` method answered, or `None` when it answered the error
/// `missing` (such as `org.freedesktop.systemd1.NoSuchUnit`).
fn object_path(
    reply: zbus::Result<zbus::message::Message>,
    missing: &str,
    what: &str,
) -> Result<Option<zbus::zvariant::OwnedObjectPath>, SystemdError> {
    match reply {
        Ok(reply) => reply
            .body()
            .deserialize()
            .map(Some)
            .map_err(SystemdError::bus(what)),
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == missing => Ok(None),
        Err(e) => Err(SystemdError::bus(what)(e)),
    }
}
