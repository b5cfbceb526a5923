//! `[users] keep_id` compiled: which host user, its groups (mapped or left out and why),
//! its home (the machine's own, the host's, or a directory) and its login shells.

use std::path::Path;

use super::{HomeFrom, KeepId, LeftOut, Mount};
use crate::definition::{BindSource, Definition, Diagnostic, Home, KeepWho};
use crate::host::{Host, HostAccount};

/// An error at `users.keep_id`.
fn at_keep_id(def: &Definition, message: String) -> Diagnostic {
    let span = def.keep_id.as_ref().map_or(0..0, |k| k.span.clone());
    def.file.error_at(&span, message).key("users.keep_id")
}

/// The keep-id user for `def` on `host`, from the host account the command looked up
/// (`account`: the user mm runs as, rootless; the named one, as root).
pub(super) fn keep_id(
    def: &Definition,
    host: &Host,
    account: Option<&HostAccount>,
    state_dir: &Path,
) -> Result<Option<KeepId>, Diagnostic> {
    let Some(keep) = &def.keep_id else {
        return Ok(None);
    };
    let wanted = match (&keep.value.who, host.is_root()) {
        (KeepWho::Me, true) => {
            return Err(at_keep_id(
                def,
                "as root, `keep_id = true` would be root itself: keep_id names a host user"
                    .to_owned(),
            )
            .help("write the user's name, e.g. `keep_id = \"alice\"`"));
        }
        (KeepWho::Named(name), false) if *name != host.user => {
            return Err(at_keep_id(
                def,
                format!(
                    "an ordinary user can keep only its own ids, and `{name}` is not you (`{}`)",
                    host.user
                ),
            )
            .help("write `keep_id = true`, or run mm as root to map another user"));
        }
        (KeepWho::Named(name), _) => name.clone(),
        (KeepWho::Me, false) => host.user.clone(),
    };
    let Some(account) = account.filter(|a| a.name == wanted) else {
        return Err(at_keep_id(def, format!("there is no host user `{wanted}`"))
            .help("name a user of this host (see getent passwd)"));
    };
    if account.uid == 0 || account.gid == 0 {
        return Err(at_keep_id(
            def,
            format!(
                "`{wanted}` has uid {} and gid {}: the machine's root is its own, never the host's",
                account.uid, account.gid
            ),
        )
        .help("name an ordinary user"));
    }
    let (groups, left_out) = if host.is_root() {
        account
            .groups
            .iter()
            .cloned()
            .partition::<Vec<_>, _>(|g| g.gid != 0)
    } else {
        (Vec::new(), account.groups.clone())
    };
    let left_out = left_out
        .into_iter()
        .map(|g| LeftOut {
            why: if g.gid == 0 {
                "gid 0 is the machine's own root group".to_owned()
            } else {
                "an ordinary user's map holds only its own gid and its subordinate ids".to_owned()
            },
            name: g.name,
            gid: g.gid,
        })
        .collect();
    let home_from = match &keep.value.home {
        Home::Machine => HomeFrom::Machine {
            dir: state_dir.join("home"),
        },
        Home::Host => HomeFrom::Host {
            dir: account.home.clone(),
        },
        Home::Path(BindSource::Path(path)) => HomeFrom::Path { dir: path.clone() },
        Home::Path(BindSource::Home(rest)) => HomeFrom::Path {
            dir: account.home.join(rest),
        },
    };
    let mut shells = Vec::new();
    for shell in [account.shell.as_str(), "/bin/bash", "/bin/sh"] {
        if shell.starts_with('/') && !shells.iter().any(|s| s == shell) {
            shells.push(shell.to_owned());
        }
    }
    let file_name: String = account
        .name
        .chars()
        .map(|c| if c == '.' { '_' } else { c })
        .collect();
    Ok(Some(KeepId {
        name: account.name.clone(),
        uid: account.uid,
        gid: account.gid,
        group: account.group.clone(),
        groups,
        left_out,
        home: account.home.display().to_string(),
        home_from,
        shells,
        // sudo skips drop-ins whose names have a `.`.
        sudoers: format!("/etc/sudoers.d/mm-{file_name}"),
    }))
}

/// The bind of the keep-id user's home, before the definition's binds (which may go
/// below it).
pub(super) fn home_mount(keep: &KeepId) -> Mount {
    Mount::Bind {
        source: keep.home_from.dir().to_owned(),
        target: keep.home.clone(),
        readonly: false,
        recursive: true,
    }
}
