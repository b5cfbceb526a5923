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

    fn walk(&self, parts: &[Vec<u8>], through: Through) -> Result<OwnedFd, Errno> {
        let open_in = |dir: &OwnedFd, name: &[u8]| {
            rustix::fs::openat(
                dir,
                os(name),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let reopen = |real: &[Vec<u8>]| {
            rustix::fs::openat2(
                self.root,
                os(&joined(real)),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
        };
        let mut todo: VecDeque<Vec<u8>> = parts.iter().cloned().collect();
        // The real directories resolved so far, from the root.
        let mut real: Vec<Vec<u8>> = Vec::new();
        let mut fd = reopen(&real)?;
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    real.pop();
                    fd = reopen(&real)?;
                    continue;
                }
                _ => {}
            }
            match rustix::fs::statat(&fd, os(&part), AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&fd, os(&part), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {}
                    FileType::Symlink if through == Through::Symlinks => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(Errno::LOOP);
                        }
                        let target = rustix::fs::readlinkat(&fd, os(&part), Vec::new())?;
                        let target = target.as_bytes();
                        if target.starts_with(b"/") {
                            real.clear();
                            fd = reopen(&real)?;
                        }
                        for component in target.split(|b| *b == b'/').rev() {
                            todo.push_front(component.to_vec());
                        }
                        continue;
                    }
                    kind => {
                        let mut path = real.clone();
                        path.push(part.clone());
                        let lower = through == Through::ReplacingLower
                            && !self.created.contains(&joined(&path));
                        if !lower {
                            return Err(if kind == FileType::Symlink {
                                Errno::LOOP
                            } else {
                                Errno::NOTDIR
                            });
                        }
                        rustix::fs::unlinkat(&fd, os(&part), AtFlags::empty())?;
                        rustix::fs::mkdirat(&fd, os(&part), Mode::from_raw_mode(0o755))?;
                    }
                },
            }
            fd = open_in(&fd, &part)?;
            real.push(part);
        }
        Ok(fd)
    }
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
