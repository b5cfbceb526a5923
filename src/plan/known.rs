//! What mm already holds for a machine (its stored image, the id blocks recorded for it
//! and for the other machines), and the definitions that contradict it: found when
//! compiling, before anything is imported, allocated or made for the machine.

use super::{Image, Layers};
use crate::definition::{Definition, Diagnostic, Diagnostics, UserRange};
use crate::host::Host;
use crate::idmap::IdRange;
use crate::image::ImageRecord;

/// What mm already holds for a machine, read before compiling (compile reads nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The image as the store has it (its layers are then named in the plan).
    pub image: Option<&'a ImageRecord>,
    /// Root: the id block recorded for the machine at an earlier start.
    pub ids: Option<IdRange>,
    /// Root: every other machine's recorded id block, by machine name.
    pub taken: &'a [(String, IdRange)],
    /// Root: the addresses recorded for this machine and the others.
    pub addresses: super::network::KnownAddresses<'a>,
    /// `[users] keep_id`: the host account it names, looked up by the command (`None`:
    /// there is no such user).
    pub account: Option<&'a crate::host::HostAccount>,
}

/// Why a definition does not compile: it asks for what cannot be, given what mm holds
/// (invalid, exit 65), or for what this host cannot give (exit 69).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    HostCannot(Diagnostics),
}

impl Rejected {
    pub fn diagnostics(&self) -> &Diagnostics {
        match self {
            Self::Invalid(d) | Self::HostCannot(d) => d,
        }
    }
}

/// An image whose config names no command (no Entrypoint, no Cmd), for a definition that
/// neither sets one nor boots. Known only once the image is in the store; checked before
/// ids are allocated or a writable layer is made.
pub(super) fn no_command(
    def: &Definition,
    image: &Image,
    stored: Option<&ImageRecord>,
) -> Option<Diagnostic> {
    let (Layers::Stored { .. }, Some(record)) = (&image.layers, stored) else {
        return None;
    };
    if def.exec.boot || !def.exec.command.is_empty() {
        return None;
    }
    let config = &record.config.config;
    let names_one = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .any(|v| !v.is_empty());
    if names_one {
        return None;
    }
    let d = def.file.error_at(
        &def.image.source.span,
        format!(
            "the image `{}` names no command (its config has no Entrypoint or Cmd), and [exec] sets none",
            image.source
        ),
    );
    Some(
        d.key("exec.command").help(
            "set `command = [...]` in [exec], or `boot = true` to run the image's /sbin/init",
        ),
    )
}

/// Root: an explicit `users.range` that overlaps another machine's recorded block.
pub(super) fn ids_taken(
    def: &Definition,
    host: &Host,
    taken: &[(String, IdRange)],
) -> Option<Diagnostic> {
    let UserRange::Explicit { base, size } = def.users.value else {
        return None;
    };
    if !host.is_root() {
        return None;
    }
    let wanted = IdRange {
        start: base,
        count: size,
    };
    let (machine, theirs) = taken.iter().find(|(_, theirs)| theirs.overlaps(&wanted))?;
    let d = def.file.error_at(
        &def.users.span,
        format!("{wanted} overlaps machine `{machine}`'s ids, {theirs}"),
    );
    Some(d.key("users.range").help(format!(
        "pick a base and size that no other machine uses, or `range = \"auto\"`; `mm rm {machine}` frees its ids"
    )))
}
