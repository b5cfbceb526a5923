//! A directory in overlayfs form (a machine's writable layer, or a layer of the store) →
//! one OCI layer blob: a gzip-compressed tar whose sha256 digests (of the tar, the
//! diff_id, and of the blob) are computed while it is written.
//!
//! The walk never follows a symlink: every directory is opened below its parent with
//! `O_NOFOLLOW | O_DIRECTORY`, every entry is looked at with `AT_SYMLINK_NOFOLLOW`, and
//! names are sorted, so the same tree gives the same bytes. overlayfs whiteouts (0/0
//! character devices) become `.wh.NAME` entries, an opaque directory (its `overlay.opaque`
//! xattr is `y`) gets a `.wh..wh..opq` entry, and the layer's own overlay xattrs, which
//! overlayfs (and mm's unpacker) store escaped as `PREFIX.overlay.overlay.*`, are written
//! back under their own names; overlayfs's bookkeeping xattrs are left out. Owners are
//! written as the machine sees them, through [`Owners`].

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use crate::idmap::IdMapEntry;

/// How the ids files have in the directory (as the reading process sees them) become the
/// ids written in the tar (as the machine sees them): each entry maps `outside` (seen)
/// to `inside` (written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owners {
    pub uids: Vec<IdMapEntry>,
    pub gids: Vec<IdMapEntry>,
}

impl Owners {
    /// Ids written as they are seen.
    pub fn identity() -> Self {
        let all = vec![IdMapEntry {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }];
        Self {
            uids: all.clone(),
            gids: all,
        }
    }

    /// The ids a process whose user namespace map is `reader` (inside: what it sees,
    /// outside: the host's) must write for a machine whose map is `machine`.
    pub fn through(
        reader: (&[IdMapEntry], &[IdMapEntry]),
        machine: (&[IdMapEntry], &[IdMapEntry]),
    ) -> Self {
        Self {
            uids: compose(reader.0, machine.0),
            gids: compose(reader.1, machine.1),
        }
    }
}

/// Seen id (the reader's inside) → host id → the machine's inside id, where both know it.
fn compose(reader: &[IdMapEntry], machine: &[IdMapEntry]) -> Vec<IdMapEntry> {
    let mut out = Vec::new();
    for r in reader {
        for m in machine {
            let lo = u64::from(r.outside).max(u64::from(m.outside));
            let hi = (u64::from(r.outside) + u64::from(r.count))
                .min(u64::from(m.outside) + u64::from(m.count));
            if lo < hi {
                // Both offsets fit: lo and hi lie within both ranges of 32-bit ids.
                let seen = u64::from(r.inside) + (lo - u64::from(r.outside));
                let inside = u64::from(m.inside) + (lo - u64::from(m.outside));
                out.push(IdMapEntry {
                    inside: inside as u32,
                    outside: seen as u32,
                    count: (hi - lo) as u32,
                });
            }
        }
    }
    out
}

fn translate(map: &[IdMapEntry], id: u32) -> Option<u64> {
    map.iter().find_map(|e| {
        let offset = u64::from(id).checked_sub(u64::from(e.outside))?;
        (offset < u64::from(e.count)).then_some(u64::from(e.inside) + offset)
    })
}

/// Which overlayfs xattr namespace the directory was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlayXattrs {
    /// `trusted.overlay.*`: root's overlays.
    Trusted,
    /// `user.overlay.*`: rootless overlays mounted with `userxattr`.
    User,
}

impl OverlayXattrs {
    fn prefix(self) -> &'static [u8] {
        match self {
            Self::Trusted => b"trusted.overlay.",
            Self::User => b"user.overlay.",
        }
    }
}

/// A layer blob written: the digests and size of its tar and of its gzip stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub entries: u64,
    pub whiteouts: u64,
    /// Sockets: a tar cannot hold them (a listening program makes them again).
    pub skipped_sockets: u64,
}

/// What went wrong packing a directory: the file and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "{}: its {kind} {id} is not one the machine's id map holds, so it has no owner inside",
        path.display()
    )]
    Unmapped {
        path: PathBuf,
        kind: &'static str,
        id: u32,
    },
}

fn io_at<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(io::Error) -> PackError + 'p {
    move |source| PackError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

fn sys_at<'p>(
    path: &'p Path,
    what: &'static str,
) -> impl FnOnce(rustix::io::Errno) -> PackError + 'p {
    move |e| PackError::Io {
        path: path.to_owned(),
        what,
        source: e.into(),
    }
}

/// Hashes and counts what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

type Tar<W> = tar::Builder<HashingWriter<flate2::write::GzEncoder<HashingWriter<W>>>>;

/// Packs the tree at `dir` into `out` as a gzip-compressed OCI layer.
pub fn pack(
    dir: &Path,
    out: impl Write,
    owners: &Owners,
    overlay: OverlayXattrs,
) -> Result<Packed, PackError> {
    let root = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_at(dir, "open the directory"))?;
    // The gzip header has no name and a zero time, so the same tree gives the same blob.
    let gzip =
        flate2::GzBuilder::new().write(HashingWriter::new(out), flate2::Compression::default());
    let mut builder = tar::Builder::new(HashingWriter::new(gzip));
    builder.mode(tar::HeaderMode::Complete);
    let mut packer = Packer {
        tar: builder,
        owners,
        overlay,
        links: BTreeMap::new(),
        packed: Packed {
            diff_id: Digest::of(b""),
            digest: Digest::of(b""),
            size: 0,
            entries: 0,
            whiteouts: 0,
            skipped_sockets: 0,
        },
        top: dir,
    };
    if packer.opaque(root.as_fd(), dir)? {
        packer.whiteout(Path::new(super::unpack::OPAQUE), dir)?;
    }
    packer.directory(&root, Path::new(""))?;
    let Packer {
        tar, mut packed, ..
    } = packer;
    let written = |e| PackError::Io {
        path: dir.to_owned(),
        what: "write the layer",
        source: e,
    };
    let tar_stream = tar.into_inner().map_err(written)?;
    packed.diff_id = Digest::from_hasher(tar_stream.hasher);
    let mut blob = tar_stream.inner.finish().map_err(written)?;
    blob.flush().map_err(written)?;
    packed.digest = Digest::from_hasher(blob.hasher);
    packed.size = blob.count;
    Ok(packed)
}

struct Packer<'a, W: Write> {
    tar: Tar<W>,
    owners: &'a Owners,
    overlay: OverlayXattrs,
    /// Regular files with several links: (device, inode) → the first name written.
    links: BTreeMap<(u64, u64), PathBuf>,
    packed: Packed,
    top: &'a Path,
}

impl<W: Write> Packer<'_, W> {
    fn shown(&self, rel: &Path) -> PathBuf {
        self.top.join(rel)
    }

    /// Every entry of the directory `fd` (at `rel`), by name, depth first.
    fn directory(&mut self, fd: &OwnedFd, rel: &Path) -> Result<(), PackError> {
        let shown = self.shown(rel);
        let listing = rustix::fs::openat(
            fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys_at(&shown, "list the directory"))?;
        let mut names = Vec::new();
        for entry in
            rustix::fs::Dir::read_from(&listing).map_err(sys_at(&shown, "list the directory"))?
        {
            let entry = entry.map_err(sys_at(&shown, "list the directory"))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            self.entry(fd, rel, OsStr::from_bytes(&name))?;
        }
        Ok(())
    }

    fn entry(&mut self, parent: &OwnedFd, dir: &Path, name: &OsStr) -> Result<(), PackError> {
        let rel = dir.join(name);
        let shown = self.shown(&rel);
        let stat = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(sys_at(&shown, "stat"))?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        let mut header = tar::Header::new_gnu();
        header.set_mode(stat.st_mode & 0o7777);
        header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
        header.set_size(0);
        if kind == FileType::CharacterDevice && stat.st_rdev == 0 {
            // overlayfs makes whiteouts as the mounter, whose ids the machine need not have:
            // a whiteout's owner means nothing. Its name, as bytes, is the hidden file's.
            let mut bytes = super::unpack::WHITEOUT.as_bytes().to_vec();
            bytes.extend_from_slice(name.as_bytes());
            return self.whiteout(&dir.join(OsStr::from_bytes(&bytes)), &shown);
        }
        header.set_uid(self.owner(&shown, "uid", stat.st_uid, |o| &o.uids)?);
        header.set_gid(self.owner(&shown, "gid", stat.st_gid, |o| &o.gids)?);
        match kind {
            FileType::Directory => {
                let fd = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys_at(&shown, "open the directory"))?;
                header.set_entry_type(tar::EntryType::Directory);
                self.xattrs(fd.as_fd(), &shown)?;
                let mut path = rel.clone().into_os_string();
                path.push("/");
                self.append(&mut header, Path::new(&path), io::empty(), &shown)?;
                if self.opaque(fd.as_fd(), &shown)? {
                    self.whiteout(&rel.join(super::unpack::OPAQUE), &shown)?;
                }
                return self.directory(&fd, &rel);
            }
            FileType::RegularFile => {
                let key = (stat.st_dev, stat.st_ino);
                if stat.st_nlink > 1
                    && let Some(first) = self.links.get(&key).cloned()
                {
                    header.set_entry_type(tar::EntryType::Link);
                    return self
                        .tar
                        .append_link(&mut header, &rel, &first)
                        .map_err(io_at(&shown, "write the layer"));
                }
                let file = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys_at(&shown, "open"))?;
                self.xattrs(file.as_fd(), &shown)?;
                let size = u64::try_from(stat.st_size).unwrap_or(0);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                if stat.st_nlink > 1 {
                    self.links.insert(key, rel.clone());
                }
                let file = std::fs::File::from(file);
                // Exactly `size` bytes: a file that shrank meanwhile fails the tar, not the layer.
                return self.append(&mut header, &rel, file.take(size), &shown);
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent, name, Vec::new())
                    .map_err(sys_at(&shown, "read the link"))?;
                header.set_entry_type(tar::EntryType::Symlink);
                self.packed.entries += 1;
                return self
                    .tar
                    .append_link(&mut header, &rel, OsStr::from_bytes(target.to_bytes()))
                    .map_err(io_at(&shown, "write the layer"));
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                header.set_entry_type(if kind == FileType::CharacterDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                let (major, minor) = (
                    rustix::fs::major(stat.st_rdev),
                    rustix::fs::minor(stat.st_rdev),
                );
                header
                    .set_device_major(major)
                    .and_then(|()| header.set_device_minor(minor))
                    .map_err(io_at(&shown, "write the device numbers"))?;
            }
            FileType::Fifo => header.set_entry_type(tar::EntryType::Fifo),
            FileType::Socket | FileType::Unknown => {
                self.packed.skipped_sockets += 1;
                return Ok(());
            }
        }
        self.append(&mut header, &rel, io::empty(), &shown)
    }

    fn append(
        &mut self,
        header: &mut tar::Header,
        rel: &Path,
        data: impl Read,
        shown: &Path,
    ) -> Result<(), PackError> {
        self.packed.entries += 1;
        self.tar
            .append_data(header, rel, data)
            .map_err(io_at(shown, "write the layer"))
    }

    fn whiteout(&mut self, rel: &Path, shown: &Path) -> Result<(), PackError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_mtime(0);
        self.packed.whiteouts += 1;
        self.append(&mut header, rel, io::empty(), shown)
    }

    fn owner(
        &self,
        shown: &Path,
        kind: &'static str,
        id: u32,
        map: impl Fn(&Owners) -> &Vec<IdMapEntry>,
    ) -> Result<u64, PackError> {
        translate(map(self.owners), id).ok_or_else(|| PackError::Unmapped {
            path: shown.to_owned(),
            kind,
            id,
        })
    }

    fn opaque(&self, fd: BorrowedFd<'_>, shown: &Path) -> Result<bool, PackError> {
        let name = [self.overlay.prefix(), b"opaque"].concat();
        let mut value = [0u8; 8];
        match rustix::fs::fgetxattr(fd, OsStr::from_bytes(&name), &mut value[..]) {
            Ok(n) => Ok(value[..n] == *b"y"),
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(false),
            Err(e) => Err(sys_at(shown, "read its opaque xattr")(e)),
        }
    }

    /// The file's xattrs as PAX `SCHILY.xattr.*` records, before its header.
    fn xattrs(&mut self, fd: BorrowedFd<'_>, shown: &Path) -> Result<(), PackError> {
        let mut names = vec![0u8; 4096];
        let n = loop {
            match rustix::fs::flistxattr(fd, &mut names[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) if names.len() < 1 << 20 => {
                    names.resize(names.len() * 4, 0);
                }
                Err(rustix::io::Errno::NOTSUP) => return Ok(()),
                Err(e) => return Err(sys_at(shown, "list its xattrs")(e)),
            }
        };
        let prefix = self.overlay.prefix();
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for raw in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            let written = match raw.strip_prefix(prefix) {
                // The layer's own overlay xattr, stored escaped.
                Some(rest) => match rest.strip_prefix(b"overlay.".as_slice()) {
                    Some(own) => [prefix, own].concat(),
                    // overlayfs's own (opaque, origin, impure, …).
                    None => continue,
                },
                None => raw.to_vec(),
            };
            let mut value = vec![0u8; 256];
            let len = loop {
                match rustix::fs::fgetxattr(fd, OsStr::from_bytes(raw), &mut value[..]) {
                    Ok(len) => break len,
                    Err(rustix::io::Errno::RANGE) if value.len() < 1 << 20 => {
                        value.resize(value.len() * 4, 0);
                    }
                    Err(e) => return Err(sys_at(shown, "read an xattr")(e)),
                }
            };
            value.truncate(len);
            records.push(([b"SCHILY.xattr.".as_slice(), &written].concat(), value));
        }
        if records.is_empty() {
            return Ok(());
        }
        records.sort();
        let mut pax = Vec::new();
        for (key, value) in &records {
            // "LEN key=value\n", LEN counting itself.
            let body = key.len() + value.len() + 3;
            let mut len = body + body.to_string().len();
            if len.to_string().len() + body != len {
                len += 1;
            }
            pax.extend_from_slice(len.to_string().as_bytes());
            pax.push(b' ');
            pax.extend_from_slice(key);
            pax.push(b'=');
            pax.extend_from_slice(value);
            pax.push(b'\n');
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_mode(0o644);
        header.set_size(pax.len() as u64);
        header
            .set_path("PaxHeaders/xattrs")
            .map_err(io_at(shown, "write the layer"))?;
        header.set_cksum();
        self.tar
            .append(&header, &pax[..])
            .map_err(io_at(shown, "write the layer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(inside: u32, outside: u32, count: u32) -> IdMapEntry {
        IdMapEntry {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn owners_compose_the_reader_and_the_machine() {
        // Rootless: the worker and the machine share the map, so ids are written as seen.
        let map = [entry(0, 1000, 1), entry(1, 100_000, 65535)];
        let owners = Owners::through((&map, &map), (&map, &map));
        assert_eq!(translate(&owners.uids, 0), Some(0));
        assert_eq!(translate(&owners.uids, 33), Some(33));
        // Root: the reader sees host ids; the machine's block starts at 0x80000.
        let block = [entry(0, 0x80000, 65536)];
        let identity = Owners::identity();
        let owners = Owners::through((&identity.uids, &identity.gids), (&block, &block));
        assert_eq!(translate(&owners.uids, 0x80000 + 5), Some(5));
        assert_eq!(translate(&owners.uids, 0), None);
    }

    #[test]
    fn pax_lengths_count_themselves() {
        for (k, v) in [(9usize, 0usize), (90, 3), (95, 0), (995, 0)] {
            let body = k + v + 3;
            let mut len = body + body.to_string().len();
            if len.to_string().len() + body != len {
                len += 1;
            }
            assert_eq!(len, len.to_string().len() + body);
        }
    }
}
