//! systemd-machined: a started machine is registered so that `machinectl list` and
//! `machinectl status` show it, and unregistered when it stops.
//!
//! machined (systemd 252) takes registrations from root only, and derives the machine's
//! unit from the leader's cgroup: the leader must already be in a unit-shaped cgroup such
//! as `machine.slice/mm-web.scope` (on hybrid hosts, in the unified tree).

use zbus::blocking::Connection;

use super::{SystemdError, object_path, property};
use crate::plan::Machined;

const DESTINATION: &str = "org.freedesktop.machine1";
const PATH: &str = "/org/freedesktop/machine1";
const MANAGER: &str = "org.freedesktop.machine1.Manager";
const MACHINE: &str = "org.freedesktop.machine1.Machine";
const NO_SUCH_MACHINE: &str = "org.freedesktop.machine1.NoSuchMachine";

/// A connection to the system bus on which machined answers.
pub struct Machines {
    connection: Connection,
}

impl Machines {
    /// Connects to the system bus. Whether machined answers shows at the first call (an
    /// activatable one is started by it).
    pub fn connect() -> Result<Self, SystemdError> {
        Ok(Self {
            connection: super::Bus::System.connect()?,
        })
    }

    /// `RegisterMachineWithNetwork`: the machine, its PID 1 as seen on the host, and the
    /// host's side of its network (interface indexes: its veth, or its zone's bridge, as
    /// nspawn registers them). A machine of the same name whose leader is dead was left by
    /// a crash: it is replaced.
    pub fn register(
        &self,
        machine: &Machined,
        leader: u32,
        interfaces: &[u32],
    ) -> Result<(), SystemdError> {
        match self.register_once(machine, leader, interfaces) {
            Err(e) if e.error_name() == Some("org.freedesktop.machine1.MachineExists") => {
                let name = machine.name.as_str();
                match self.leader(name)? {
                    Some(old) if !std::path::Path::new(&format!("/proc/{old}")).exists() => {
                        self.unregister(name, old)?;
                        self.register_once(machine, leader, interfaces)
                    }
                    _ => Err(e),
                }
            }
            result => result,
        }
    }

    fn register_once(
        &self,
        machine: &Machined,
        leader: u32,
        interfaces: &[u32],
    ) -> Result<(), SystemdError> {
        let what = || format!("register {} with systemd-machined", machine.name);
        let id = hex_bytes(&machine.id).ok_or_else(|| {
            SystemdError::bus(what())(zbus::Error::Failure(format!(
                "the machine id {} is not 32 hex digits",
                machine.id
            )))
        })?;
        let root = machine.root_directory.to_string_lossy();
        let body = (
            machine.name.as_str(),
            id,
            machine.service.as_str(),
            machine.class.as_str(),
            leader,
            root.as_ref(),
            interfaces
                .iter()
                .filter_map(|i| i32::try_from(*i).ok())
                .collect::<Vec<i32>>(),
        );
        self.call("RegisterMachineWithNetwork", &body)
            .map(drop)
            .map_err(SystemdError::bus(what()))
    }

    /// The leader pid machined has for `name`, or `None` when it has no such machine.
    pub fn leader(&self, name: &str) -> Result<Option<u32>, SystemdError> {
        let reply = self.call("GetMachine", &(name,));
        let what = format!("look up machine {name}");
        let Some(path) = object_path(reply, NO_SUCH_MACHINE, &what)? else {
            return Ok(None);
        };
        property::<u32>(
            &self.connection,
            DESTINATION,
            path.as_str(),
            MACHINE,
            "Leader",
        )
        .map(Some)
    }

    /// Unregisters `name` if machined has it with this leader (another manager's machine
    /// of the same name is left alone). Returns whether it did.
    pub fn unregister(&self, name: &str, leader: u32) -> Result<bool, SystemdError> {
        if self.leader(name)? != Some(leader) {
            return Ok(false);
        }
        match self.call("UnregisterMachine", &(name,)) {
            Ok(_) => Ok(true),
            Err(zbus::Error::MethodError(error, _, _)) if error.as_str() == NO_SUCH_MACHINE => {
                Ok(false)
            }
            Err(e) => Err(SystemdError::bus(format!(
                "unregister {name} from systemd-machined"
            ))(e)),
        }
    }

    fn call<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::message::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.connection
            .call_method(Some(DESTINATION), PATH, Some(MANAGER), method, body)
    }
}

/// `5b324bbc…` (32 hex digits) as 16 bytes.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_bytes() {
        let bytes = hex_bytes("5b324bbc46a84d3587160c56dfe6f391").unwrap();
        assert_eq!(bytes.len(), 16);
        assert_eq!(bytes[0], 0x5b);
        assert_eq!(bytes[15], 0x91);
        assert!(hex_bytes("5b324bbc").is_none());
        assert!(hex_bytes("zz324bbc46a84d3587160c56dfe6f391").is_none());
    }
}
