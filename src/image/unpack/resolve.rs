//! Opening (and making) an entry's parent directory inside the layer's root, one component
//! at a time, so that a symlink whose target does not exist yet (`var/run -> /run`) gets
//! that target made, still inside the root.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{Unpacker, joined, os};

/// As many symlinks as the kernel follows in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;

/// What to do with a symlink (or other non-directory) met on the way to a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Through {
    /// Follow symlinks, as `RESOLVE_IN_ROOT` does: absolute targets start at the root,
    /// `..` stops there. Missing directories, the targets' among them, are made.
    Symlinks,
    /// Follow nothing: a symlink is `ELOOP`, a file `ENOTDIR`.
    Nothing,
    /// Follow nothing, and replace a non-directory a lower layer left (flattening) with a
    /// directory, as an upper layer's directory hides it in overlayfs; one this layer made
    /// is `ELOOP`/`ENOTDIR`.
    ReplacingLower,
}

impl Unpacker<'_> {
    /// Opens (`O_PATH`) the directory at `parts` inside the layer, making missing ones
    /// (mode 0755) on the way.
    pub(super) fn open_dir(&self, parts: &[Vec<u8>], through: Through) -> Result<OwnedFd, Errno> {
        let mut resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        if through != Through::Symlinks {
            resolve |= ResolveFlags::NO_SYMLINKS;
        }
        // The common case: it is all there.
        match rustix::fs::openat2(
            self.root,
            os(&joined(parts)),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            Err(Errno::NOENT) => {}
            Err(Errno::LOOP | Errno::NOTDIR) if through == Through::ReplacingLower => {}
            other => return other,
        }
        self.walk(parts, through)
    }

    /// Resolves `parts` one component at a time, making what is missing.
    fn walk(&self, parts: &[Vec<u8>], through: Through) -> Result<OwnedFd, Errno> {
        let mut walk = Walk {
            unpacker: self,
            through,
            todo: parts.iter().cloned().collect(),
            real: Vec::new(),
            fd: reopen(self.root, &[])?,
            links: 0,
        };
        while let Some(part) = walk.todo.pop_front() {
            walk.step(part)?;
        }
        Ok(walk.fd)
    }
}

/// A walk from the layer's root to a directory.
struct Walk<'u, 'a> {
    unpacker: &'u Unpacker<'a>,
    through: Through,
    /// The components still to resolve, a symlink's target's among them.
    todo: VecDeque<Vec<u8>>,
    /// The real directories resolved so far, from the root.
    real: Vec<Vec<u8>>,
    /// The last of them.
    fd: OwnedFd,
    /// Symlinks followed so far.
    links: u32,
}

impl Walk<'_, '_> {
    /// Goes one component further: into a directory (made if missing), or a symlink's
    /// target's components in its place.
    fn step(&mut self, part: Vec<u8>) -> Result<(), Errno> {
        match part.as_slice() {
            b"" | b"." => return Ok(()),
            b".." => {
                self.real.pop();
                self.fd = reopen(self.unpacker.root, &self.real)?;
                return Ok(());
            }
            _ => {}
        }
        match rustix::fs::statat(&self.fd, os(&part), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&self.fd, os(&part), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {}
                FileType::Symlink if self.through == Through::Symlinks => {
                    return self.follow(&part);
                }
                kind => self.replace_lower(&part, kind)?,
            },
        }
        self.fd = rustix::fs::openat(
            &self.fd,
            os(&part),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.real.push(part);
        Ok(())
    }

    /// Puts the target of the symlink `link` in its place: an absolute one from the root.
    fn follow(&mut self, link: &[u8]) -> Result<(), Errno> {
        self.links += 1;
        if self.links > MAX_SYMLINKS {
            return Err(Errno::LOOP);
        }
        let target = rustix::fs::readlinkat(&self.fd, os(link), Vec::new())?;
        let target = target.as_bytes();
        if target.starts_with(b"/") {
            self.real.clear();
            self.fd = reopen(self.unpacker.root, &self.real)?;
        }
        for component in target.split(|b| *b == b'/').rev() {
            self.todo.push_front(component.to_vec());
        }
        Ok(())
    }

    /// A non-directory `part` of `kind` on the way: replaced by a directory when a lower
    /// layer left it and this walk may ([`Through::ReplacingLower`]), else `ELOOP` (a
    /// symlink) or `ENOTDIR`.
    fn replace_lower(&self, part: &[u8], kind: FileType) -> Result<(), Errno> {
        let mut path = self.real.clone();
        path.push(part.to_vec());
        let lower = self.through == Through::ReplacingLower
            && !self.unpacker.created.contains(&joined(&path));
        if !lower {
            return Err(if kind == FileType::Symlink {
                Errno::LOOP
            } else {
                Errno::NOTDIR
            });
        }
        rustix::fs::unlinkat(&self.fd, os(part), AtFlags::empty())?;
        rustix::fs::mkdirat(&self.fd, os(part), Mode::from_raw_mode(0o755))
    }
}

/// Opens (`O_PATH`) the real directory `real` from the root, following no symlink.
fn reopen(root: &OwnedFd, real: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        root,
        os(&joined(real)),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::UnpackMode;

    fn unpacker(root: &OwnedFd, mode: UnpackMode) -> Unpacker<'_> {
        Unpacker::new(root, "test", mode)
    }

    fn parts(path: &str) -> Vec<Vec<u8>> {
        path.split('/').map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn dangling_symlinks_get_their_targets_made_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        std::fs::create_dir(dir.path().join("var")).unwrap();
        std::os::unix::fs::symlink("/run", dir.path().join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../../../../up", dir.path().join("rel")).unwrap();
        let u = unpacker(&root, UnpackMode::ROOT);
        u.open_dir(&parts("var/run/lock"), Through::Symlinks)
            .unwrap();
        assert!(dir.path().join("run/lock").is_dir());
        u.open_dir(&parts("rel/x"), Through::Symlinks).unwrap();
        assert!(dir.path().join("up/x").is_dir());
        assert_eq!(
            u.open_dir(&parts("var/run/z"), Through::Nothing)
                .unwrap_err(),
            Errno::LOOP
        );
    }

    #[test]
    fn symlink_loops_end_in_eloop() {
        let dir = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        let u = unpacker(&root, UnpackMode::ROOT);
        assert_eq!(
            u.open_dir(&parts("a/x"), Through::Symlinks).unwrap_err(),
            Errno::LOOP
        );
    }
}
