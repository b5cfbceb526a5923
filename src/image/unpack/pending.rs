//! Directory modes an unprivileged unpack (an ordinary user's `mm image extract`) sets
//! only once every layer is in: until then its directories stay open to their owner.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{ImageError, Unpacker, errno, joined, os};

/// Directory modes an unprivileged unpack applies only at the very end, after every layer:
/// until then each directory stays open to its owner (a mode-000 directory could not be
/// filled otherwise).
#[derive(Debug, Default)]
pub struct Pending {
    pub(super) dir_modes: BTreeMap<Vec<Vec<u8>>, (Mode, String)>,
}

impl Pending {
    /// Gives the directories under `root` their modes, deepest first.
    pub fn apply(self, root: &OwnedFd) -> Result<(), ImageError> {
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
                Err(e) => Err(errno("opening the directory", e)),
                Ok(fd) => rustix::fs::fchmod(&fd, mode).map_err(|e| errno("setting its mode", e)),
            };
            result.map_err(|why| ImageError::Entry {
                layer,
                entry: String::from_utf8_lossy(&joined(&parts)).into_owned(),
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
    ) -> Result<(), String> {
        if !self.mode.privileged {
            let perm = Mode::from_raw_mode(header.mode().map_err(|e| e.to_string())? & 0o7777);
            self.dir_modes
                .insert(parts.to_vec(), (perm, self.layer.to_owned()));
        }
        Ok(())
    }
}
