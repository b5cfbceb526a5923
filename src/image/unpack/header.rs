//! Typed values from an entry's header: device numbers, owners, times.

use std::io;

use rustix::fs::{FileType, Timespec, Timestamps, makedev};

/// The device number of a character or block device entry (0 for a FIFO). Refused when
/// the kernel's 32-bit `dev_t` (12-bit major, 20-bit minor) cannot hold it: `mknod` would
/// truncate it, and 0:0 is what overlayfs reads as a whiteout.
pub(super) fn device(header: &tar::Header, kind: FileType) -> Result<rustix::fs::Dev, String> {
    if kind == FileType::Fifo {
        return Ok(makedev(0, 0));
    }
    let field = |value: io::Result<Option<u32>>, what: &str| {
        value
            .map_err(|e| format!("its device {what} number: {e}"))?
            .ok_or_else(|| format!("a device without a {what} number"))
    };
    let major = field(header.device_major(), "major")?;
    let minor = field(header.device_minor(), "minor")?;
    if major > 0xfff || minor > 0xf_ffff {
        return Err(format!(
            "device number {major}:{minor} is beyond what the kernel holds \
             (major at most 4095, minor at most 1048575)"
        ));
    }
    Ok(makedev(major, minor))
}

pub(super) fn uid(header: &tar::Header) -> Result<rustix::fs::Uid, String> {
    let id = header.uid().map_err(|e| e.to_string())?;
    u32::try_from(id)
        .map(rustix::fs::Uid::from_raw)
        .map_err(|_| format!("uid {id} is out of range"))
}

pub(super) fn gid(header: &tar::Header) -> Result<rustix::fs::Gid, String> {
    let id = header.gid().map_err(|e| e.to_string())?;
    u32::try_from(id)
        .map(rustix::fs::Gid::from_raw)
        .map_err(|_| format!("gid {id} is out of range"))
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
