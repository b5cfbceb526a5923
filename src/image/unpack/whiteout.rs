//! OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`): recorded as overlayfs reads them, or
//! applied when flattening; never through a symlink.

use std::os::fd::OwnedFd;

use rustix::fs::{FileType, Mode, OFlags, XattrFlags, makedev};
use rustix::io::Errno;

use super::{Through, Unpacker, errno, joined, os};

pub const WHITEOUT: &str = ".wh.";
pub const OPAQUE: &str = ".wh..wh..opq";

impl Unpacker<'_> {
    /// The real directory a whiteout sits in: no symlink is followed on the way (a
    /// whiteout under a path that is now a symlink or a file is about a directory this layer
    /// already replaced). `None` when the parent is not a real directory. Flattening, a
    /// symlink or file a lower layer left there becomes a directory: in overlayfs, the
    /// directory this layer holds there hides it.
    fn whiteout_dir(&self, parts: &[Vec<u8>]) -> Result<Option<OwnedFd>, String> {
        let through = if self.mode.flatten {
            Through::ReplacingLower
        } else {
            Through::Nothing
        };
        match self.open_dir(parts, through) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::LOOP | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(errno("opening or creating its directory", e)),
        }
    }

    /// A whiteout of `hidden` in `dir`, or (`None`) the opaque marker of `dir`: recorded as
    /// overlayfs reads them, or applied when flattening.
    pub(super) fn whiteout(
        &mut self,
        dir: &[Vec<u8>],
        hidden: Option<&[u8]>,
    ) -> Result<(), String> {
        self.stats.whiteouts += 1;
        let Some(parent) = self.whiteout_dir(dir)? else {
            self.stats.ignored_whiteouts += 1;
            return Ok(());
        };
        self.remember_times(&parent, dir);
        let readable = || {
            rustix::fs::openat(
                &parent,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno("opening the directory", e))
        };
        match (hidden, self.mode.flatten) {
            (Some(hidden), flatten) => {
                self.clear(&parent, hidden, false)?;
                if flatten {
                    return Ok(());
                }
                rustix::fs::mknodat(
                    &parent,
                    os(hidden),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    makedev(0, 0),
                )
                .map_err(|e| errno("creating the overlay whiteout (a 0/0 character device)", e))
            }
            (None, false) => rustix::fs::fsetxattr(
                readable()?,
                self.mode.opaque_xattr,
                b"y",
                XattrFlags::empty(),
            )
            .map_err(|e| {
                errno(
                    &format!("marking the directory opaque ({})", self.mode.opaque_xattr),
                    e,
                )
            }),
            // Flattening an opaque directory: what earlier layers put in it goes.
            (None, true) => {
                let mut doomed = Vec::new();
                for entry in rustix::fs::Dir::read_from(readable()?)
                    .map_err(|e| errno("listing the directory", e))?
                {
                    let name = entry
                        .map_err(|e| errno("listing the directory", e))?
                        .file_name()
                        .to_bytes()
                        .to_vec();
                    if name == b"." || name == b".." {
                        continue;
                    }
                    let mut child = dir.to_vec();
                    child.push(name.clone());
                    if !self.created.contains(&joined(&child)) {
                        doomed.push(name);
                    }
                }
                doomed
                    .iter()
                    .try_for_each(|name| self.clear(&parent, name, false))
            }
        }
    }
}
