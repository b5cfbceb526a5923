//! What can go wrong unpacking a layer: which entry, which step, and the kernel's errno.
//! The callers make it an `ImageError` (its `Unpack` variant, by `From`), its message
//! unchanged; the unpacker itself knows nothing of the image module's errors.

use std::fmt;
use std::io;

use rustix::io::Errno;

/// A layer the unpacker could not write.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}, entry `{entry}`: {why}")]
    Entry {
        layer: String,
        entry: String,
        #[source]
        why: EntryError,
    },
    #[error("layer {layer}: the tar stream is broken: {source}")]
    Tar { layer: String, source: io::Error },
}

impl UnpackError {
    /// The errno of the write or system call that failed, when that is what failed (not
    /// the layer's own content).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Entry {
                why:
                    EntryError::Write(e) | EntryError::RemoveDir(e) | EntryError::Sys { source: e, .. },
                ..
            } => e.raw_os_error(),
            _ => None,
        }
    }
}

/// What failed in one entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("the name contains `..`; refused, as it could reach outside the layer")]
    DotDot,
    #[error("the name contains a NUL byte")]
    Nul,
    #[error("unsupported tar entry type {0:?}")]
    UnsupportedType(tar::EntryType),
    #[error("an unsupported whiteout (aufs metadata or an empty name)")]
    UnsupportedWhiteout,
    #[error("a symlink without a target")]
    SymlinkWithoutTarget,
    #[error("a hard link without a target")]
    LinkWithoutTarget,
    #[error("a hard link to the layer's root")]
    LinkToRoot,
    #[error("the layer ends inside this file: {written} of its {size} bytes are there")]
    ShortFile { written: u64, size: u64 },
    #[error("the layer ends inside this entry: {missing} of its content's bytes are missing")]
    EndsInside { missing: u64 },
    /// The header's mode field does not parse.
    #[error("{0}")]
    Mode(#[source] io::Error),
    /// The header's uid field does not parse.
    #[error("{0}")]
    Uid(#[source] io::Error),
    /// The header's gid field does not parse.
    #[error("{0}")]
    Gid(#[source] io::Error),
    #[error("uid {0} is out of range")]
    UidRange(u64),
    #[error("gid {0} is out of range")]
    GidRange(u64),
    #[error("its device {which} number: {source}")]
    DeviceNumber {
        which: &'static str,
        source: io::Error,
    },
    #[error("a device without a {0} number")]
    NoDeviceNumber(&'static str),
    #[error(
        "device number {major}:{minor} is beyond what the kernel holds \
         (major at most 4095, minor at most 1048575)"
    )]
    DeviceRange { major: u32, minor: u32 },
    #[error("reading its content: {0}")]
    Read(#[source] io::Error),
    #[error("writing the file: {0}")]
    Write(#[source] io::Error),
    #[error("reading its PAX header: {0}")]
    Pax(#[source] io::Error),
    #[error("replacing a directory: {0}")]
    RemoveDir(#[source] io::Error),
    /// A system call failed.
    #[error("{step}: {source}")]
    Sys { step: Step, source: io::Error },
}

/// The system call an entry failed at, said as what it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `openat2` (and `mkdirat` on the way) of the entry's parent directory.
    OpenOrCreateParent,
    /// `statat` of what is at the entry's name.
    LookAt,
    /// `unlinkat` of what is at the entry's name.
    Replace,
    CreateDir,
    CreateFile,
    CreateSymlink,
    /// `linkat` to a hard link's target (its name in the layer).
    Link {
        target: String,
    },
    CreateDevice,
    SetOwner,
    SetMode,
    SetMtime,
    OpenDir,
    ListDir,
    CreateWhiteout,
    /// `fsetxattr` of the opaque marker (its xattr name).
    MarkOpaque {
        xattr: &'static str,
    },
    SetXattr {
        name: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpenOrCreateParent => f.write_str("opening or creating its directory"),
            Self::LookAt => f.write_str("looking at what is there"),
            Self::Replace => f.write_str("replacing what was there"),
            Self::CreateDir => f.write_str("creating the directory"),
            Self::CreateFile => f.write_str("creating the file"),
            Self::CreateSymlink => f.write_str("creating the symlink"),
            Self::Link { target } => write!(f, "linking to `{target}` in this layer"),
            Self::CreateDevice => f.write_str("creating the device node"),
            Self::SetOwner => f.write_str("setting its owner"),
            Self::SetMode => f.write_str("setting its mode"),
            Self::SetMtime => f.write_str("setting its mtime"),
            Self::OpenDir => f.write_str("opening the directory"),
            Self::ListDir => f.write_str("listing the directory"),
            Self::CreateWhiteout => {
                f.write_str("creating the overlay whiteout (a 0/0 character device)")
            }
            Self::MarkOpaque { xattr } => write!(f, "marking the directory opaque ({xattr})"),
            Self::SetXattr { name } => write!(f, "setting xattr {name}"),
        }
    }
}

/// The error of a failed system call at `step`, for `map_err`.
pub(super) fn sys(step: Step) -> impl FnOnce(Errno) -> EntryError {
    move |e| EntryError::Sys {
        step,
        source: io::Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageError;

    #[test]
    fn messages_name_the_entry_the_step_and_the_errno() {
        let e = UnpackError::Entry {
            layer: "sha256:ab".to_owned(),
            entry: "etc/x".to_owned(),
            why: sys(Step::Link {
                target: "etc/y".to_owned(),
            })(Errno::PERM),
        };
        let e = ImageError::from(e);
        assert_eq!(
            e.to_string(),
            "layer sha256:ab, entry `etc/x`: linking to `etc/y` in this layer: \
             Operation not permitted (os error 1)"
        );
        // The errno is kept, as the io::Error at the end of the source chain.
        let mut source: &dyn std::error::Error = &e;
        while let Some(next) = source.source() {
            source = next;
        }
        let errno = source
            .downcast_ref::<io::Error>()
            .map(io::Error::raw_os_error);
        assert_eq!(errno, Some(Some(libc::EPERM)));
    }
}
