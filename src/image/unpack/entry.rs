//! One tar entry written into the layer: sorted out by kind, then made with `*at` calls
//! that never follow its last component.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::error::{EntryError, Step, sys};
use super::header::{device, gid, mode, timestamps, uid};
use super::whiteout::Whiteout;
use super::{Unpacker, components, joined, os};

/// Whether the unpacker writes entries of this kind; `false` for metadata of the archive
/// or of the next entry, whatever their names say.
fn writes(kind: tar::EntryType) -> Result<bool, EntryError> {
    match kind {
        tar::EntryType::XGlobalHeader
        | tar::EntryType::XHeader
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink => Ok(false),
        tar::EntryType::Directory
        | tar::EntryType::Regular
        | tar::EntryType::Continuous
        | tar::EntryType::Symlink
        | tar::EntryType::Link
        | tar::EntryType::Char
        | tar::EntryType::Block
        | tar::EntryType::Fifo => Ok(true),
        other => Err(EntryError::UnsupportedType(other)),
    }
}

/// Where an entry goes: its parent directory, its name there, its whole path.
struct Place<'p> {
    parent: OwnedFd,
    name: &'p [u8],
    parts: &'p [Vec<u8>],
}

impl Unpacker<'_> {
    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        self.stats.entries += 1;
        let parts = components(&entry.path_bytes())?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        if !writes(kind)? {
            return Ok(());
        }
        let Some((name, parent_parts)) = parts.split_last() else {
            return self.root_entry(&header);
        };
        if let Some(whiteout) = Whiteout::parse(name)? {
            return self.whiteout(parent_parts, whiteout);
        }
        let parent = self.dir(parent_parts)?;
        self.remember_times(&parent, parent_parts);
        let perm = mode(&header)?;
        if self.mode.flatten {
            self.created.insert(joined(&parts));
        }
        let at = Place {
            parent,
            name,
            parts: &parts,
        };
        match kind {
            tar::EntryType::Directory => self.directory(&at, &header, entry),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(&at, &header, perm, entry)
            }
            tar::EntryType::Symlink => self.symlink(&at, &header, entry),
            tar::EntryType::Link => self.hard_link(&at, entry),
            _ => self.node(&at, &header, perm),
        }
    }

    /// The layer's root itself (`./`): only its metadata.
    fn root_entry(&mut self, header: &tar::Header) -> Result<(), EntryError> {
        if header.entry_type().is_dir() {
            let root = self.dir(&[])?;
            self.metadata(&root, b".", header, true)?;
            self.defer_dir_mode(&[], header)?;
            self.dir_times
                .push((Vec::new(), header.mtime().unwrap_or(0)));
        }
        Ok(())
    }

    fn directory<R: Read>(
        &mut self,
        at: &Place<'_>,
        header: &tar::Header,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        self.clear(&at.parent, at.name, true)?;
        match rustix::fs::mkdirat(&at.parent, os(at.name), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(sys(Step::CreateDir)(e)),
        }
        self.metadata(&at.parent, at.name, header, true)?;
        self.defer_dir_mode(at.parts, header)?;
        self.dir_xattrs(&at.parent, at.name, entry)?;
        self.dir_times
            .push((at.parts.to_vec(), header.mtime().unwrap_or(0)));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        at: &Place<'_>,
        header: &tar::Header,
        perm: Mode,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        self.clear(&at.parent, at.name, false)?;
        let file = rustix::fs::openat(
            &at.parent,
            os(at.name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(sys(Step::CreateFile))?;
        let mut out = std::fs::File::from(file);
        self.content(entry, &mut out)?;
        if self.mode.chown {
            rustix::fs::fchown(&out, Some(uid(header)?), Some(gid(header)?))
                .map_err(sys(Step::SetOwner))?;
        }
        // After chown, which clears set-user-ID bits.
        rustix::fs::fchmod(&out, perm).map_err(sys(Step::SetMode))?;
        self.xattrs(out.as_fd(), entry)?;
        let time = timestamps(header.mtime().unwrap_or(0));
        rustix::fs::futimens(&out, &time).map_err(sys(Step::SetMtime))
    }

    /// Copies a file's content, all of it: a layer that ends inside it is refused.
    fn content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &mut std::fs::File,
    ) -> Result<(), EntryError> {
        let mut written = 0u64;
        loop {
            let n = entry.read(&mut self.buf).map_err(EntryError::Read)?;
            if n == 0 {
                break;
            }
            out.write_all(&self.buf[..n]).map_err(EntryError::Write)?;
            written += n as u64;
        }
        // A PAX `size` record overrides the ustar field: the entry's size.
        let size = entry.size();
        if written != size {
            return Err(EntryError::ShortFile { written, size });
        }
        self.stats.bytes += written;
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        at: &Place<'_>,
        header: &tar::Header,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        let target = entry
            .link_name_bytes()
            .ok_or(EntryError::SymlinkWithoutTarget)?;
        self.clear(&at.parent, at.name, false)?;
        rustix::fs::symlinkat(os(&target), &at.parent, os(at.name))
            .map_err(sys(Step::CreateSymlink))?;
        self.metadata(&at.parent, at.name, header, false)
    }

    /// A hard link to a path earlier in this layer.
    fn hard_link<R: Read>(
        &mut self,
        at: &Place<'_>,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), EntryError> {
        let target = entry
            .link_name_bytes()
            .ok_or(EntryError::LinkWithoutTarget)?;
        let target_parts = components(&target)?;
        let Some((target_name, target_parent)) = target_parts.split_last() else {
            return Err(EntryError::LinkToRoot);
        };
        let target_dir = self.dir(target_parent)?;
        self.clear(&at.parent, at.name, false)?;
        rustix::fs::linkat(
            &target_dir,
            os(target_name),
            &at.parent,
            os(at.name),
            AtFlags::empty(),
        )
        .map_err(sys(Step::Link {
            target: String::from_utf8_lossy(&target).into_owned(),
        }))
    }

    /// A character or block device, or a FIFO. Rootless, the kernel refuses devices: they
    /// are counted and left out.
    fn node(&mut self, at: &Place<'_>, header: &tar::Header, perm: Mode) -> Result<(), EntryError> {
        let file_type = match header.entry_type() {
            tar::EntryType::Char => FileType::CharacterDevice,
            tar::EntryType::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        let dev = device(header, file_type)?;
        self.clear(&at.parent, at.name, false)?;
        match rustix::fs::mknodat(&at.parent, os(at.name), file_type, perm, dev) {
            Ok(()) => self.metadata(&at.parent, at.name, header, false),
            Err(Errno::PERM) if file_type != FileType::Fifo && !self.is_root() => {
                self.stats.skipped_devices += 1;
                Ok(())
            }
            Err(e) => Err(sys(Step::CreateDevice)(e)),
        }
    }

    /// Removes whatever is at `name` in `parent`, unless it is a directory and `keep_dir`.
    pub(super) fn clear(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        keep_dir: bool,
    ) -> Result<(), EntryError> {
        match rustix::fs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(sys(Step::LookAt)(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if keep_dir {
                    return Ok(());
                }
                let path = format!(
                    "/proc/self/fd/{}/{}",
                    std::os::fd::AsRawFd::as_raw_fd(parent),
                    String::from_utf8_lossy(name)
                );
                std::fs::remove_dir_all(path).map_err(EntryError::RemoveDir)
            }
            Ok(_) => {
                rustix::fs::unlinkat(parent, os(name), AtFlags::empty()).map_err(sys(Step::Replace))
            }
        }
    }

    /// Owner, mode and mtime of a directory or special file, without following symlinks.
    fn metadata(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        header: &tar::Header,
        is_dir: bool,
    ) -> Result<(), EntryError> {
        if self.mode.chown {
            rustix::fs::chownat(
                parent,
                os(name),
                Some(uid(header)?),
                Some(gid(header)?),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(sys(Step::SetOwner))?;
        }
        let is_link = header.entry_type() == tar::EntryType::Symlink;
        if !is_link {
            let mut perm = mode(header)?;
            if is_dir && !self.mode.privileged {
                perm |= Mode::RWXU;
            }
            rustix::fs::chmodat(parent, os(name), perm, AtFlags::empty())
                .map_err(sys(Step::SetMode))?;
        }
        if !is_dir {
            let time = timestamps(header.mtime().unwrap_or(0));
            rustix::fs::utimensat(parent, os(name), &time, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(sys(Step::SetMtime))?;
        }
        Ok(())
    }
}
