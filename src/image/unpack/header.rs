//! Typed values from an entry's header: device numbers, owners, times.

use std::io;

use rustix::fs::{FileType, Mode, Timespec, Timestamps, makedev};

use super::EntryError;

/// The device number of a character or block device entry (0 for a FIFO). Refused when
/// the kernel's 32-bit `dev_t` (12-bit major, 20-bit minor) cannot hold it: `mknod` would
/// truncate it, and 0:0 is what overlayfs reads as a whiteout.
pub(super) fn device(header: &tar::Header, kind: FileType) -> Result<rustix::fs::Dev, EntryError> {
    if kind == FileType::Fifo {
        return Ok(makedev(0, 0));
    }
    let field = |value: io::Result<Option<u32>>, which: &'static str| {
        value
            .map_err(|source| EntryError::DeviceNumber { which, source })?
            .ok_or(EntryError::NoDeviceNumber(which))
    };
    let major = field(header.device_major(), "major")?;
    let minor = field(header.device_minor(), "minor")?;
    if major > 0xfff || minor > 0xf_ffff {
        return Err(EntryError::DeviceRange { major, minor });
    }
    Ok(makedev(major, minor))
}

/// The permission bits (with set-id and sticky bits) of the entry.
pub(super) fn mode(header: &tar::Header) -> Result<Mode, EntryError> {
    let mode = header.mode().map_err(EntryError::Mode)?;
    Ok(Mode::from_raw_mode(mode & 0o7777))
}

pub(super) fn uid(header: &tar::Header) -> Result<rustix::fs::Uid, EntryError> {
    let id = header.uid().map_err(EntryError::Uid)?;
    u32::try_from(id)
        .map(rustix::fs::Uid::from_raw)
        .map_err(|_| EntryError::UidRange(id))
}

pub(super) fn gid(header: &tar::Header) -> Result<rustix::fs::Gid, EntryError> {
    let id = header.gid().map_err(EntryError::Gid)?;
    u32::try_from(id)
        .map(rustix::fs::Gid::from_raw)
        .map_err(|_| EntryError::GidRange(id))
}

pub(super) fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}
