//! Whether the D-Bus buses and systemd-machined are reachable from here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zbus::blocking::connection::Builder;
use zbus::blocking::fdo::DBusProxy;
use zbus::names::BusName;

/// machined's well-known name on the system bus.
pub const MACHINED: &str = "org.freedesktop.machine1";

/// A yes or no, with what was found or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub available: bool,
    pub detail: String,
}

impl Probe {
    fn yes(detail: impl Into<String>) -> Self {
        Self {
            available: true,
            detail: detail.into(),
        }
    }

    fn no(detail: impl Into<String>) -> Self {
        Self {
            available: false,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusFacts {
    pub system_bus: Probe,
    /// systemd-machined on the system bus, running or activatable.
    pub machined: Probe,
    pub user_bus: Probe,
}

impl BusFacts {
    /// The facts of a command that has no use for the buses (`mm oci`: an OCI container
    /// is not registered by mm), which so neither waits for them nor starts zbus's thread.
    pub fn not_probed(why: &str) -> Self {
        Self {
            system_bus: Probe::no(why),
            machined: Probe::no(why),
            user_bus: Probe::no(why),
        }
    }

    /// Connects to each bus and asks the system bus about machined. Connections are dropped
    /// before this returns.
    pub fn probe() -> Self {
        let timeout = Duration::from_secs(2);
        let (system_bus, machined) =
            match Builder::system().and_then(|b| b.method_timeout(timeout).build()) {
                Err(e) => (Probe::no(e.to_string()), Probe::no("no system bus")),
                Ok(connection) => (Probe::yes("connected"), machined(&connection)),
            };
        let user_bus = match Builder::session().and_then(|b| b.method_timeout(timeout).build()) {
            Ok(_) => Probe::yes("connected"),
            Err(e) => Probe::no(e.to_string()),
        };
        Self {
            system_bus,
            machined,
            user_bus,
        }
    }
}

fn machined(connection: &zbus::blocking::Connection) -> Probe {
    let ask = || -> zbus::Result<Probe> {
        let proxy = DBusProxy::new(connection)?;
        let name = BusName::try_from(MACHINED)?;
        if proxy.name_has_owner(name.clone())? {
            return Ok(Probe::yes("running"));
        }
        let activatable = proxy.list_activatable_names()?;
        Ok(if activatable.iter().any(|n| n.as_str() == MACHINED) {
            Probe::yes("activatable")
        } else {
            Probe::no("not running and not activatable on the system bus")
        })
    };
    ask().unwrap_or_else(|e| Probe::no(e.to_string()))
}
