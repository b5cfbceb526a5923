//! OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`): recorded as overlayfs reads them, or
//! applied when flattening; never through a symlink.

use std::os::fd::OwnedFd;

use rustix::fs::{FileType, Mode, OFlags, XattrFlags, makedev};
use rustix::io::Errno;

use super::error::{EntryError, Step, sys};
use super::{Through, Unpacker, joined, os};

pub const WHITEOUT: &str = ".wh.";
pub const OPAQUE: &str = ".wh..wh..opq";

/// What a whiteout entry says: its directory is opaque, or it hides `NAME` (`.wh.NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Whiteout<'n> {
    Opaque,
    Hides(&'n [u8]),
}

impl<'n> Whiteout<'n> {
    /// The whiteout an entry's last name component is, `None` when it is none.
    pub(super) fn parse(name: &'n [u8]) -> Result<Option<Self>, EntryError> {
        if name == OPAQUE.as_bytes() {
            return Ok(Some(Self::Opaque));
        }
        let Some(hidden) = name.strip_prefix(WHITEOUT.as_bytes()) else {
            return Ok(None);
        };
        if hidden.is_empty()
            || hidden.starts_with(WHITEOUT.as_bytes())
            || hidden == b"."
            || hidden == b".."
        {
            return Err(EntryError::UnsupportedWhiteout);
        }
        Ok(Some(Self::Hides(hidden)))
    }
}

impl Unpacker<'_> {
    /// The real directory a whiteout sits in: no symlink is followed on the way (a
    /// whiteout under a path that is now a symlink or a file is about a directory this layer
    /// already replaced). `None` when the parent is not a real directory. Flattening, a
    /// symlink or file a lower layer left there becomes a directory: in overlayfs, the
    /// directory this layer holds there hides it.
    fn whiteout_dir(&self, parts: &[Vec<u8>]) -> Result<Option<OwnedFd>, EntryError> {
        let through = if self.mode.flatten {
            Through::ReplacingLower
        } else {
            Through::Nothing
        };
        match self.open_dir(parts, through) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::LOOP | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(sys(Step::OpenOrCreateParent)(e)),
        }
    }

    /// A whiteout in `dir`, or the opaque marker of `dir`: recorded as overlayfs reads
    /// them, or applied when flattening.
    pub(super) fn whiteout(
        &mut self,
        dir: &[Vec<u8>],
        whiteout: Whiteout<'_>,
    ) -> Result<(), EntryError> {
        self.stats.whiteouts += 1;
        let Some(parent) = self.whiteout_dir(dir)? else {
            self.stats.ignored_whiteouts += 1;
            return Ok(());
        };
        self.remember_times(&parent, dir);
        match (whiteout, self.mode.flatten) {
            (Whiteout::Hides(hidden), flatten) => {
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
                .map_err(sys(Step::CreateWhiteout))
            }
            (Whiteout::Opaque, false) => rustix::fs::fsetxattr(
                readable(&parent)?,
                self.mode.opaque_xattr,
                b"y",
                XattrFlags::empty(),
            )
            .map_err(sys(Step::MarkOpaque {
                xattr: self.mode.opaque_xattr,
            })),
            (Whiteout::Opaque, true) => self.empty_lower(&parent, dir),
        }
    }

    /// Flattening an opaque directory: what earlier layers put in it goes.
    fn empty_lower(&self, parent: &OwnedFd, dir: &[Vec<u8>]) -> Result<(), EntryError> {
        let mut doomed = Vec::new();
        for entry in rustix::fs::Dir::read_from(readable(parent)?).map_err(sys(Step::ListDir))? {
            let name = entry
                .map_err(sys(Step::ListDir))?
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
            .try_for_each(|name| self.clear(parent, name, false))
    }
}

/// A readable descriptor of the directory `dir` (an `O_PATH` one), for its xattrs and
/// entries.
fn readable(dir: &OwnedFd) -> Result<OwnedFd, EntryError> {
    rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(Step::OpenDir))
}
