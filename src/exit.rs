//! mm's exit codes: a leaf, so that every module can say which code its errors mean.

/// Exit codes, after sysexits(3), so that scripts can tell failures apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    /// Something failed that has no code of its own.
    Failure = 1,
    /// `mm status`: the machine is not running (as LSB's and `systemctl status`'s 3).
    NotRunning = 3,
    /// The command line was wrong (clap's own code).
    Usage = 2,
    /// A definition is invalid, or an image is corrupt or hostile (EX_DATAERR).
    InvalidDefinition = 65,
    /// No such machine or file (EX_NOINPUT).
    NotFound = 66,
    /// This host cannot do what the definition asks (EX_UNAVAILABLE).
    HostCannot = 69,
    /// A launch step or another system call failed (EX_OSERR).
    System = 71,
    /// Reading or writing failed (EX_IOERR).
    Io = 74,
    /// The machine is already running, or still starting (EX_TEMPFAIL).
    Busy = 75,
    /// The machine's command exists but could not be executed (as shells and podman).
    CannotExecute = 126,
    /// The machine's command was not found (as shells and podman).
    CommandNotFound = 127,
}
