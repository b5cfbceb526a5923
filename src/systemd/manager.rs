//! The service manager (`org.freedesktop.systemd1`): mm starts, stops, enables and disables
//! `mm@NAME.service` through it when systemd runs the host (root) or the user's session
//! (rootless), as `systemctl` would.

use zbus::MatchRule;
use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type as MessageType;
use zbus::zvariant::OwnedObjectPath;

use super::{Bus, SystemdError, has_owner, object_path, property};

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";

/// The unit that runs machine `name`.
pub fn unit_name(name: &str) -> String {
    format!("mm@{name}.service")
}

/// A change `EnableUnitFiles` or `DisableUnitFiles` made: (kind, link, target).
pub type Change = (String, String, String);

pub struct Manager {
    connection: Connection,
    pub bus: Bus,
}

impl Manager {
    /// The service manager on `bus`, or `None` when that bus is unreachable or no manager
    /// answers on it.
    pub fn find(bus: Bus) -> Option<Self> {
        let connection = bus.connect().ok()?;
        has_owner(&connection, DESTINATION)
            .ok()
            .filter(|&owned| owned)
            .map(|_| Self { connection, bus })
    }

    /// The environment the manager gives its units (`systemctl show-environment`).
    pub fn environment(&self) -> Result<Vec<String>, SystemdError> {
        property(&self.connection, DESTINATION, PATH, MANAGER, "Environment")
    }

    /// Starts `unit` and waits until its job is done: for a `Type=notify` unit, until it
    /// said READY=1.
    pub fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job("StartUnit", "start", unit)
    }

    /// Stops `unit` and waits until it has stopped.
    pub fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job("StopUnit", "stop", unit)
    }

    /// `active`, `inactive`, `failed`, …; `inactive` for a unit the manager has not loaded.
    pub fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        let reply = self.call("GetUnit", &(unit,));
        let what = format!("look up {unit}");
        let Some(path) = object_path(reply, "org.freedesktop.systemd1.NoSuchUnit", &what)? else {
            return Ok("inactive".to_owned());
        };
        property(
            &self.connection,
            DESTINATION,
            path.as_str(),
            UNIT,
            "ActiveState",
        )
    }

    /// Links `unit` into the targets its `[Install]` section names, then reloads.
    pub fn enable(&self, unit: &str) -> Result<Vec<Change>, SystemdError> {
        let what = || format!("enable {unit}");
        let reply = self
            .call("EnableUnitFiles", &(vec![unit], false, false))
            .map_err(SystemdError::bus(what()))?;
        let (_, changes): (bool, Vec<Change>) = reply
            .body()
            .deserialize()
            .map_err(SystemdError::bus(what()))?;
        self.reload()?;
        Ok(changes)
    }

    /// Removes the links `enable` made, then reloads.
    pub fn disable(&self, unit: &str) -> Result<Vec<Change>, SystemdError> {
        let what = || format!("disable {unit}");
        let reply = self
            .call("DisableUnitFiles", &(vec![unit], false))
            .map_err(SystemdError::bus(what()))?;
        let changes: Vec<Change> = reply
            .body()
            .deserialize()
            .map_err(SystemdError::bus(what()))?;
        self.reload()?;
        Ok(changes)
    }

    fn reload(&self) -> Result<(), SystemdError> {
        self.call("Reload", &())
            .map(drop)
            .map_err(SystemdError::bus("reload the service manager"))
    }

    /// Queues a job (`StartUnit`/`StopUnit` with mode `replace`) and waits for the
    /// `JobRemoved` signal that carries its result. The subscription and the match are in
    /// place before the job is queued, so its end cannot be missed.
    fn run_job(&self, method: &str, verb: &'static str, unit: &str) -> Result<(), SystemdError> {
        let what = || format!("{verb} {unit}");
        self.call("Subscribe", &()).map_err(SystemdError::bus(
            "subscribe to the service manager's signals",
        ))?;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(DESTINATION)
            .and_then(|b| b.path(PATH))
            .and_then(|b| b.interface(MANAGER))
            .and_then(|b| b.member("JobRemoved"))
            .map(|b| b.build())
            .map_err(SystemdError::bus(what()))?;
        let signals = MessageIterator::for_match_rule(rule, &self.connection, Some(256))
            .map_err(SystemdError::bus(what()))?;
        let job: OwnedObjectPath = self
            .call(method, &(unit, "replace"))
            .and_then(|reply| reply.body().deserialize())
            .map_err(SystemdError::bus(what()))?;
        for message in signals {
            let message = message.map_err(SystemdError::bus(what()))?;
            let Ok((_, path, _, result)) = message
                .body()
                .deserialize::<(u32, OwnedObjectPath, String, String)>()
            else {
                continue;
            };
            if path == job {
                return if result == "done" {
                    Ok(())
                } else {
                    Err(SystemdError::Job {
                        unit: unit.to_owned(),
                        verb,
                        result,
                    })
                };
            }
        }
        Err(SystemdError::bus(what())(zbus::Error::Failure(
            "the bus connection closed before the job ended".to_owned(),
        )))
    }

    fn call<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::message::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.connection
            .call_method(Some(DESTINATION), PATH, Some(MANAGER), method, body)
    }
}
