//! One layer's tar stream → one directory, in overlayfs form, without ever touching
//! anything outside that directory.
//!
//! Every parent directory is opened with `openat2(RESOLVE_IN_ROOT)`, so absolute names and
//! symlinks resolve inside the layer; the final component is always handled with `*at`
//! calls that do not follow it (`O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`). Names with
//! `..` are refused outright. OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a 0/0
//! character device, `.wh..wh..opq` the opaque xattr on its directory.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::error::ImageError;

mod header;
mod pending;
mod resolve;
mod whiteout;
mod xattrs;

use header::{device, gid, timestamps, uid};
pub use pending::Pending;
use resolve::Through;
use whiteout::{OPAQUE, WHITEOUT};

/// How this unpack may treat ownership, devices and overlay metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackMode {
    /// Whether to set owners (root, or an ordinary user inside a user namespace).
    pub chown: bool,
    /// The opaque-directory xattr overlayfs will read: `trusted.` for root, `user.` for
    /// rootless mounts with `userxattr`.
    pub opaque_xattr: &'static str,
    /// Apply whiteouts instead of recording them: for one flattened tree of all layers.
    pub flatten: bool,
    /// Whether the unpack may override file permissions and set file capabilities: root,
    /// or root inside a user namespace (the rootless worker). An ordinary user's extract
    /// is not: it keeps its directories open to itself until the end ([`Pending`]) and
    /// leaves out capabilities, saying so.
    pub privileged: bool,
}

impl UnpackMode {
    pub const ROOT: Self = Self {
        chown: true,
        opaque_xattr: "trusted.overlay.opaque",
        flatten: false,
        privileged: true,
    };
    pub const ROOTLESS: Self = Self {
        chown: true,
        opaque_xattr: "user.overlay.opaque",
        flatten: false,
        privileged: true,
    };

    pub fn flattened(self) -> Self {
        Self {
            flatten: true,
            ..self
        }
    }
}

/// What one unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    /// Whiteouts under a path this layer made a symlink or a file: nothing to hide there.
    #[serde(default)]
    pub ignored_whiteouts: u64,
    /// Device nodes that could not be made (rootless: the kernel forbids it).
    pub skipped_devices: u64,
    /// Extended attributes the kernel would not let this unpack set, as `ENTRY: NAME`
    /// (`security.capability` for an ordinary user; `trusted.*` rootless).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_xattrs: Vec<String>,
}

/// Counts the bytes the tar parser has read, to tell a missing end of archive from a
/// layer that ends inside an entry.
struct Counted<'c, R> {
    inner: R,
    count: &'c Cell<u64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Unpacks the tar stream `tar` into the directory `root` (which should be empty, unless
/// flattening). What must wait until the last layer is done goes into `pending`.
pub fn unpack(
    tar: impl Read,
    root: &OwnedFd,
    layer: &str,
    mode: UnpackMode,
    pending: &mut Pending,
) -> Result<Stats, ImageError> {
    let mut unpacker = Unpacker::new(root, layer, mode);
    let read = Cell::new(0);
    let mut archive = tar::Archive::new(Counted {
        inner: tar,
        count: &read,
    });
    let entries = archive.entries().map_err(|e| unpacker.tar_error(e))?;
    // Where the last entry's content ends, and its name.
    let mut last: Option<(u64, String)> = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            // The last file's padding and the end-of-archive blocks are missing (umoci 0.4.7,
            // Debian 12, writes such layers, with correct digests: umoci#436). When every
            // byte of the last entry was there, the archive is complete; umoci and bsdtar
            // agree. When it ends inside that entry, it is not, whatever its digests say.
            Err(e) if e.to_string() == "unexpected EOF during skip" => match last {
                Some((end, name)) if read.get() < end => {
                    return Err(ImageError::Entry {
                        layer: layer.to_owned(),
                        entry: name,
                        why: format!(
                            "the layer ends inside this entry: {} of its content's bytes are missing",
                            end - read.get()
                        ),
                    });
                }
                _ => break,
            },
            Err(e) => return Err(unpacker.tar_error(e)),
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let end = entry.raw_file_position() + entry.size();
        unpacker
            .entry(&mut entry)
            .map_err(|why| ImageError::Entry {
                layer: layer.to_owned(),
                entry: name.clone(),
                why,
            })?;
        last = Some((end, name));
    }
    unpacker.finish()?;
    pending.dir_modes.append(&mut unpacker.dir_modes);
    Ok(unpacker.stats)
}

struct Unpacker<'a> {
    root: &'a OwnedFd,
    layer: &'a str,
    mode: UnpackMode,
    stats: Stats,
    /// Directories get their mtime last: creating their children changes it.
    dir_times: Vec<(Vec<Vec<u8>>, u64)>,
    /// Flattening: what this layer has made, which its opaque markers must keep.
    created: HashSet<Vec<u8>>,
    /// Directories' times before this layer first changed something in them, restored at
    /// the end as umoci does (a directory the layer itself lists gets its own instead).
    parent_times: HashMap<Vec<Vec<u8>>, Timestamps>,
    /// Unprivileged: the modes its directories get at the very end (see [`Pending`]).
    dir_modes: BTreeMap<Vec<Vec<u8>>, (Mode, String)>,
    buf: Vec<u8>,
}

/// A path inside the layer, as its components; empty for the layer's root.
fn components(name: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut parts = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(
                    "the name contains `..`; refused, as it could reach outside the layer"
                        .to_owned(),
                );
            }
            _ if part.contains(&0) => return Err("the name contains a NUL byte".to_owned()),
            _ => parts.push(part.to_vec()),
        }
    }
    Ok(parts)
}

fn joined(parts: &[Vec<u8>]) -> Vec<u8> {
    if parts.is_empty() {
        return b".".to_vec();
    }
    parts.join(&b'/')
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

fn errno(what: &str, e: Errno) -> String {
    format!("{what}: {}", io::Error::from(e))
}

impl<'a> Unpacker<'a> {
    fn tar_error(&self, e: io::Error) -> ImageError {
        ImageError::Tar {
            layer: self.layer.to_owned(),
            why: e.to_string(),
        }
    }

    fn new(root: &'a OwnedFd, layer: &'a str, mode: UnpackMode) -> Self {
        Self {
            root,
            layer,
            mode,
            stats: Stats::default(),
            dir_times: Vec::new(),
            created: HashSet::new(),
            parent_times: HashMap::new(),
            dir_modes: BTreeMap::new(),
            buf: vec![0; 1 << 18],
        }
    }

    /// Opens an entry's directory inside the layer, following symlinks inside it and
    /// creating missing directories (mode 0755), a dangling symlink's target among them.
    fn dir(&self, parts: &[Vec<u8>]) -> Result<OwnedFd, String> {
        self.open_dir(parts, Through::Symlinks)
            .map_err(|e| errno("opening or creating its directory", e))
    }

    /// Removes whatever is at `name` in `parent`, unless it is a directory and `keep_dir`.
    fn clear(&self, parent: &OwnedFd, name: &[u8], keep_dir: bool) -> Result<(), String> {
        match rustix::fs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(errno("looking at what is there", e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if keep_dir {
                    return Ok(());
                }
                let path = format!(
                    "/proc/self/fd/{}/{}",
                    std::os::fd::AsRawFd::as_raw_fd(parent),
                    String::from_utf8_lossy(name)
                );
                std::fs::remove_dir_all(path).map_err(|e| format!("replacing a directory: {e}"))
            }
            Ok(_) => rustix::fs::unlinkat(parent, os(name), AtFlags::empty())
                .map_err(|e| errno("replacing what was there", e)),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        self.stats.entries += 1;
        let parts = components(&entry.path_bytes())?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        match kind {
            // Metadata for the archive or the next entry, whatever their names say.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => return Ok(()),
            tar::EntryType::Directory
            | tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::Char
            | tar::EntryType::Block
            | tar::EntryType::Fifo => {}
            other => return Err(format!("unsupported tar entry type {other:?}")),
        }
        let Some((name, parent_parts)) = parts.split_last() else {
            // The layer's root itself (`./`): only its metadata.
            if kind.is_dir() {
                let root = self.dir(&[])?;
                self.metadata(&root, b".", &header, true)?;
                self.defer_dir_mode(&[], &header)?;
                self.dir_times
                    .push((Vec::new(), header.mtime().unwrap_or(0)));
            }
            return Ok(());
        };
        if name.as_slice() == OPAQUE.as_bytes() {
            return self.whiteout(parent_parts, None);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT.as_bytes()) {
            if hidden.is_empty()
                || hidden.starts_with(WHITEOUT.as_bytes())
                || hidden == b"."
                || hidden == b".."
            {
                return Err("an unsupported whiteout (aufs metadata or an empty name)".to_owned());
            }
            return self.whiteout(parent_parts, Some(hidden));
        }
        let parent = self.dir(parent_parts)?;
        self.remember_times(&parent, parent_parts);
        let perm = Mode::from_raw_mode(header.mode().map_err(|e| e.to_string())? & 0o7777);
        if self.mode.flatten {
            self.created.insert(joined(&parts));
        }
        match kind {
            tar::EntryType::Directory => {
                self.clear(&parent, name, true)?;
                match rustix::fs::mkdirat(&parent, os(name), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(errno("creating the directory", e)),
                }
                self.metadata(&parent, name, &header, true)?;
                self.defer_dir_mode(&parts, &header)?;
                self.dir_xattrs(&parent, name, entry)?;
                self.dir_times
                    .push((parts.clone(), header.mtime().unwrap_or(0)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&parent, name, false)?;
                let file = rustix::fs::openat(
                    &parent,
                    os(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| errno("creating the file", e))?;
                let mut out = std::fs::File::from(file);
                let mut written = 0u64;
                loop {
                    let n = entry
                        .read(&mut self.buf)
                        .map_err(|e| format!("reading its content: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&self.buf[..n])
                        .map_err(|e| format!("writing the file: {e}"))?;
                    written += n as u64;
                }
                // A PAX `size` record overrides the ustar field: the entry's size.
                let size = entry.size();
                if written != size {
                    return Err(format!(
                        "the layer ends inside this file: {written} of its {size} bytes are there"
                    ));
                }
                self.stats.bytes += written;
                if self.mode.chown {
                    rustix::fs::fchown(&out, Some(uid(&header)?), Some(gid(&header)?))
                        .map_err(|e| errno("setting its owner", e))?;
                }
                // After chown, which clears set-user-ID bits.
                rustix::fs::fchmod(&out, perm).map_err(|e| errno("setting its mode", e))?;
                self.xattrs(out.as_fd(), entry)?;
                let time = timestamps(header.mtime().unwrap_or(0));
                rustix::fs::futimens(&out, &time).map_err(|e| errno("setting its mtime", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or("a symlink without a target")?;
                self.clear(&parent, name, false)?;
                rustix::fs::symlinkat(os(&target), &parent, os(name))
                    .map_err(|e| errno("creating the symlink", e))?;
                self.metadata(&parent, name, &header, false)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or("a hard link without a target")?;
                let target_parts = components(&target)?;
                let Some((target_name, target_parent)) = target_parts.split_last() else {
                    return Err("a hard link to the layer's root".to_owned());
                };
                let target_dir = self.dir(target_parent)?;
                self.clear(&parent, name, false)?;
                rustix::fs::linkat(
                    &target_dir,
                    os(target_name),
                    &parent,
                    os(name),
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    errno(
                        &format!(
                            "linking to `{}` in this layer",
                            String::from_utf8_lossy(&target)
                        ),
                        e,
                    )
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = device(&header, file_type)?;
                self.clear(&parent, name, false)?;
                match rustix::fs::mknodat(&parent, os(name), file_type, perm, dev) {
                    Ok(()) => self.metadata(&parent, name, &header, false)?,
                    Err(Errno::PERM) if file_type != FileType::Fifo && !self.is_root() => {
                        self.stats.skipped_devices += 1
                    }
                    Err(e) => return Err(errno("creating the device node", e)),
                }
            }
            _ => unreachable!("entry types are sorted out above"),
        }
        Ok(())
    }

    fn is_root(&self) -> bool {
        self.mode.opaque_xattr.starts_with("trusted.")
    }

    /// Owner, mode and mtime of a directory or special file, without following symlinks.
    fn metadata(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        header: &tar::Header,
        is_dir: bool,
    ) -> Result<(), String> {
        if self.mode.chown {
            rustix::fs::chownat(
                parent,
                os(name),
                Some(uid(header)?),
                Some(gid(header)?),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| errno("setting its owner", e))?;
        }
        let is_link = header.entry_type() == tar::EntryType::Symlink;
        if !is_link {
            let mut perm = Mode::from_raw_mode(header.mode().map_err(|e| e.to_string())? & 0o7777);
            if is_dir && !self.mode.privileged {
                perm |= Mode::RWXU;
            }
            rustix::fs::chmodat(parent, os(name), perm, AtFlags::empty())
                .map_err(|e| errno("setting its mode", e))?;
        }
        if !is_dir {
            let time = timestamps(header.mtime().unwrap_or(0));
            rustix::fs::utimensat(parent, os(name), &time, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| errno("setting its mtime", e))?;
        }
        Ok(())
    }

    /// A readable descriptor of a directory inside the layer (for xattrs and timestamps).
    /// A readable descriptor of a directory inside the layer, for its timestamps; `None`
    /// when the layer has since removed it or put something else there.
    fn open_real_dir(&self, parts: &[Vec<u8>]) -> Result<Option<OwnedFd>, String> {
        let opened = rustix::fs::openat2(
            self.root,
            os(&joined(parts)),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
        );
        match opened {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(None),
            Err(e) => Err(errno("opening the directory", e)),
        }
    }

    /// Directory mtimes, deepest first, now that nothing more is created inside them.
    /// Notes a directory's times before this layer's first change inside it.
    fn remember_times(&mut self, fd: &OwnedFd, parts: &[Vec<u8>]) {
        if !self.parent_times.contains_key(parts)
            && let Ok(st) = rustix::fs::fstat(fd)
        {
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: Timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            self.parent_times.insert(parts.to_vec(), times);
        }
    }

    fn finish(&mut self) -> Result<(), ImageError> {
        // Directories this layer only changed get their old times back (those it removed
        // meanwhile are gone, which is fine); then those it lists get their own.
        for (parts, times) in std::mem::take(&mut self.parent_times) {
            if let Ok(Some(fd)) = self.open_real_dir(&parts) {
                let _ = rustix::fs::futimens(&fd, &times);
            }
        }
        let times = std::mem::take(&mut self.dir_times);
        for (parts, mtime) in times.into_iter().rev() {
            let result = self.open_real_dir(&parts).and_then(|fd| match fd {
                Some(fd) => rustix::fs::futimens(&fd, &timestamps(mtime))
                    .map_err(|e| errno("setting its mtime", e)),
                None => Ok(()),
            });
            result.map_err(|why| ImageError::Entry {
                layer: self.layer.to_owned(),
                entry: String::from_utf8_lossy(&joined(&parts)).into_owned(),
                why,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_dotdot_refused() {
        assert_eq!(
            components(b"./a//b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            components(b"/etc/passwd").unwrap(),
            vec![b"etc".to_vec(), b"passwd".to_vec()]
        );
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"./").unwrap().is_empty());
    }

    /// One ustar header of `kind` at `name`, its size field saying `size`.
    fn header(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if kind == tar::EntryType::Symlink {
            h.set_link_name("target").unwrap();
        }
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn unpack_bytes(tar: &[u8]) -> Result<Stats, ImageError> {
        let dir = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        unpack(
            tar,
            &root,
            "test",
            UnpackMode::ROOT,
            &mut Pending::default(),
        )
    }

    #[test]
    fn a_missing_end_of_archive_after_a_whole_entry_is_accepted() {
        let mut tar = header("file", tar::EntryType::Regular, 5);
        tar.extend_from_slice(b"hello");
        let stats = unpack_bytes(&tar).unwrap();
        assert_eq!(stats.bytes, 5);
    }

    #[test]
    fn a_layer_that_ends_inside_any_entry_is_refused() {
        // A symlink's content is not read by the unpacker: the parser skips it.
        let mut tar = header("link", tar::EntryType::Symlink, 100);
        tar.extend_from_slice(&[0; 10]);
        let err = unpack_bytes(&tar).unwrap_err().to_string();
        assert!(
            err.contains("entry `link`") && err.contains("ends inside"),
            "{err}"
        );
    }
}
