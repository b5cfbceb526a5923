//! A host user's account as `[users] keep_id` needs it: name, ids, groups, home and login
//! shell, looked up through the C library's name service (so LDAP and sssd users too).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A host user, with the groups it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The name of its primary group (its gid as a number when the group has no name).
    pub group: String,
    pub home: PathBuf,
    pub shell: String,
    /// Its supplementary groups, by name and gid, without the primary group.
    pub groups: Vec<HostGroup>,
}

/// A host group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostGroup {
    pub name: String,
    pub gid: u32,
}

/// Why a host account could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("looking up host user `{name}`: {source}")]
    Lookup {
        name: String,
        source: nix::errno::Errno,
    },
}

/// The host account named `name`, or `None` if there is no such user.
pub fn lookup(name: &str) -> Result<Option<HostAccount>, AccountError> {
    let failed = |source| AccountError::Lookup {
        name: name.to_owned(),
        source,
    };
    let Some(user) = nix::unistd::User::from_name(name).map_err(failed)? else {
        return Ok(None);
    };
    let group_name = |gid: nix::unistd::Gid| -> Result<String, AccountError> {
        Ok(nix::unistd::Group::from_gid(gid)
            .map_err(failed)?
            .map_or_else(|| gid.as_raw().to_string(), |g| g.name))
    };
    let c_name = std::ffi::CString::new(name).map_err(|_| failed(nix::errno::Errno::EINVAL))?;
    let mut groups = Vec::new();
    for gid in nix::unistd::getgrouplist(&c_name, user.gid).map_err(failed)? {
        if gid != user.gid {
            groups.push(HostGroup {
                name: group_name(gid)?,
                gid: gid.as_raw(),
            });
        }
    }
    groups.sort();
    groups.dedup();
    Ok(Some(HostAccount {
        name: user.name.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        group: group_name(user.gid)?,
        home: user.dir.clone(),
        shell: user.shell.to_string_lossy().into_owned(),
        groups,
    }))
}
