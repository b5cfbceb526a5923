//! Directory modes an unprivileged unpack (an ordinary user's `mm image extract`) sets
//! only once every layer is in: until then its directories stay open to their owner.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::error::{EntryError, Step, UnpackError, sys};
use super::header::mode;
use super::{Unpacker, entry_name, joined, os};

/// Directory modes an unprivileged unpack applies only at the very end, after every layer:
/// until then each directory stays open to its owner (a mode-000 directory could not be
/// filled otherwise).
#[derive(Debug, Default)]
pub struct Pending {
    pub(super) dir_modes: BTreeMap<Vec<Vec<u8>>, (Mode, String)>,
}

impl Pending {
    /// Gives the directories under `root` their modes, deepest first.
    pub fn apply(self, root: &OwnedFd) -> Result<(), UnpackError> {
        for (parts, (mode, layer)) in self.dir_modes.into_iter().rev() {
            let opened = rustix::fs::openat2(
                root,
                os(&joined(&parts)),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
            );
            let result = match opened {
                // A later layer removed it or put something else there.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(()),
                Err(e) => Err(sys(Step::OpenDir)(e)),
                Ok(fd) => rustix::fs::fchmod(&fd, mode).map_err(sys(Step::SetMode)),
            };
            result.map_err(|why| UnpackError::Entry {
                layer,
                entry: entry_name(&parts),
                why,
            })?;
        }
        Ok(())
    }
}

impl Unpacker<'_> {
    /// Unprivileged: notes the mode a directory gets at the very end.
    pub(super) fn defer_dir_mode(
        &mut self,
        parts: &[Vec<u8>],
        header: &tar::Header,
    ) -> Result<(), EntryError> {
        if !self.mode.privileged {
            self.dir_modes
                .insert(parts.to_vec(), (mode(header)?, self.layer.to_owned()));
        }
        Ok(())
    }
}
