//! Extended attributes from PAX `SCHILY.xattr.*` records (file capabilities among them).
//!
//! The layer's own overlayfs attributes (`trusted.overlay.*` for root, `user.overlay.*`
//! rootless: opaque, redirect, metacopy, …) are escaped as overlayfs escapes them
//! (`trusted.overlay.overlay.*`), so only mm's whiteout translation steers the overlay.

use std::borrow::Cow;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags, XattrFlags};
use rustix::io::Errno;

use super::error::{EntryError, Step, sys};
use super::{Unpacker, os};

const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

impl Unpacker<'_> {
    /// The overlayfs namespace this unpack writes (`trusted.overlay.` or `user.overlay.`).
    fn overlay_prefix(&self) -> &'static str {
        let opaque = self.mode.opaque_xattr;
        &opaque[..opaque.len() - "opaque".len()]
    }

    /// The name to store a layer's xattr under: its own overlay attributes escaped.
    fn stored_name<'n>(&self, name: &'n [u8]) -> Cow<'n, [u8]> {
        let prefix = self.overlay_prefix().as_bytes();
        match name.strip_prefix(prefix) {
            Some(rest) => Cow::Owned([prefix, b"overlay.", rest].concat()),
            None => Cow::Borrowed(name),
        }
    }

    pub(super) fn dir_xattrs<R: Read>(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        if !has_xattrs(entry) {
            return Ok(());
        }
        let fd = rustix::fs::openat(
            parent,
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(Step::OpenDir))?;
        self.xattrs(fd.as_fd(), entry)
    }

    /// Sets the entry's xattrs on `fd`. What the kernel lets no one here set (`trusted.*`
    /// rootless, `security.capability` for an ordinary user outside a user namespace) is
    /// left out and noted in the stats.
    pub(super) fn xattrs<R: Read>(
        &mut self,
        fd: BorrowedFd<'_>,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        let Ok(Some(extensions)) = entry.pax_extensions() else {
            return Ok(());
        };
        let mut dropped = Vec::new();
        for extension in extensions {
            let extension = extension.map_err(EntryError::Pax)?;
            let Some(name) = extension.key_bytes().strip_prefix(PAX_XATTR) else {
                continue;
            };
            let stored = self.stored_name(name);
            match rustix::fs::fsetxattr(
                fd,
                os(&stored),
                extension.value_bytes(),
                XattrFlags::empty(),
            ) {
                Ok(()) => {}
                Err(Errno::PERM) if !self.is_root() && self.may_drop(name) => {
                    dropped.push(String::from_utf8_lossy(name).into_owned());
                }
                Err(e) => {
                    let name = String::from_utf8_lossy(&stored).into_owned();
                    return Err(sys(Step::SetXattr { name })(e));
                }
            }
        }
        if !dropped.is_empty() {
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            self.stats
                .dropped_xattrs
                .extend(dropped.into_iter().map(|x| format!("{path}: {x}")));
        }
        Ok(())
    }

    /// Whether an xattr the kernel refused may be left out rather than fail the unpack:
    /// `trusted.*` is out of a user namespace's reach and never needed to run the image; an
    /// ordinary user outside any user namespace may not set file capabilities.
    fn may_drop(&self, name: &[u8]) -> bool {
        name.starts_with(b"trusted.") || (!self.mode.privileged && name == b"security.capability")
    }
}

fn has_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> bool {
    match entry.pax_extensions() {
        Ok(Some(mut extensions)) => {
            extensions.any(|x| x.is_ok_and(|x| x.key_bytes().starts_with(PAX_XATTR)))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::UnpackMode;

    #[test]
    fn the_layers_own_overlay_xattrs_are_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let root_mode = Unpacker::new(&root, "test", UnpackMode::ROOT);
        assert_eq!(
            &*root_mode.stored_name(b"trusted.overlay.opaque"),
            b"trusted.overlay.overlay.opaque"
        );
        assert_eq!(
            &*root_mode.stored_name(b"trusted.overlay.overlay.x"),
            b"trusted.overlay.overlay.overlay.x"
        );
        assert_eq!(
            &*root_mode.stored_name(b"user.overlay.opaque"),
            b"user.overlay.opaque"
        );
        assert_eq!(
            &*root_mode.stored_name(b"security.capability"),
            b"security.capability"
        );
        let rootless = Unpacker::new(&root, "test", UnpackMode::ROOTLESS);
        assert_eq!(
            &*rootless.stored_name(b"user.overlay.redirect"),
            b"user.overlay.overlay.redirect"
        );
        assert_eq!(
            &*rootless.stored_name(b"trusted.overlay.opaque"),
            b"trusted.overlay.opaque"
        );
    }
}
