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
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

mod entry;
mod error;
mod header;
mod pending;
mod resolve;
mod whiteout;
mod xattrs;

use error::sys;
pub use error::{EntryError, Step, UnpackError};
use header::timestamps;
pub use pending::Pending;
use resolve::Through;
pub use whiteout::{OPAQUE, WHITEOUT};

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
) -> Result<Stats, UnpackError> {
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
                    let missing = end - read.get();
                    return Err(unpacker.failed(name, EntryError::EndsInside { missing }));
                }
                _ => break,
            },
            Err(e) => return Err(unpacker.tar_error(e)),
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let end = entry.raw_file_position() + entry.size();
        if let Err(why) = unpacker.entry(&mut entry) {
            return Err(unpacker.failed(name, why));
        }
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
fn components(name: &[u8]) -> Result<Vec<Vec<u8>>, EntryError> {
    let mut parts = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(EntryError::DotDot),
            _ if part.contains(&0) => return Err(EntryError::Nul),
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

/// A path inside the layer as error messages name it.
fn entry_name(parts: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&joined(parts)).into_owned()
}

impl<'a> Unpacker<'a> {
    fn tar_error(&self, source: io::Error) -> UnpackError {
        UnpackError::Tar {
            layer: self.layer.to_owned(),
            source,
        }
    }

    /// The error of this layer's entry `entry`.
    fn failed(&self, entry: String, why: EntryError) -> UnpackError {
        UnpackError::Entry {
            layer: self.layer.to_owned(),
            entry,
            why,
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
    fn dir(&self, parts: &[Vec<u8>]) -> Result<OwnedFd, EntryError> {
        self.open_dir(parts, Through::Symlinks)
            .map_err(sys(Step::OpenOrCreateParent))
    }

    fn is_root(&self) -> bool {
        self.mode.opaque_xattr.starts_with("trusted.")
    }

    /// A readable descriptor of a directory inside the layer, for its timestamps; `None`
    /// when the layer has since removed it or put something else there.
    fn open_real_dir(&self, parts: &[Vec<u8>]) -> Result<Option<OwnedFd>, EntryError> {
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
            Err(e) => Err(sys(Step::OpenDir)(e)),
        }
    }

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

    /// Directory mtimes, deepest first, now that nothing more is created inside them.
    fn finish(&mut self) -> Result<(), UnpackError> {
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
                Some(fd) => {
                    rustix::fs::futimens(&fd, &timestamps(mtime)).map_err(sys(Step::SetMtime))
                }
                None => Ok(()),
            });
            result.map_err(|why| self.failed(entry_name(&parts), why))?;
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

    fn unpack_bytes(tar: &[u8]) -> Result<Stats, UnpackError> {
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
