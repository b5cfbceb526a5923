//! The terminal of an OCI container's process (`process.terminal`, runc's
//! `--console-socket`): a pseudo-terminal opened in the container's own devpts instance
//! (`/dev/pts/ptmx` inside its root), whose slave becomes the process's controlling
//! terminal and standard streams, and whose master goes to the caller over a unix socket
//! (one descriptor with `SCM_RIGHTS`, the message the slave's name, `/dev/pts/N`), as
//! runc and crun send it to conmon or containerd's shim. mm keeps no copy of the master.
//!
//! The pseudo-terminal is the container's, not the host's: the container never holds a
//! descriptor of a host devpts, and its own `/dev/pts` shows the terminal it has.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::sys;

/// A pseudo-terminal of the devpts instance on `/dev/pts` of the current root.
pub struct Terminal {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// The slave's name as the container sees it: `/dev/pts/N`.
    pub name: String,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a new pseudo-terminal in the current root's `/dev/pts/ptmx` (call it inside
/// the container's root), with the window size `size` (rows, columns) when given. Both
/// sides are close-on-exec.
pub fn open(size: Option<(u16, u16)>) -> io::Result<Terminal> {
    let ptmx = CString::new("/dev/pts/ptmx").map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: open of a NUL-terminated path; the result is checked.
    let fd = cvt(unsafe {
        libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a descriptor just opened and owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads the int we own.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the int we own.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) })?;
    // The slave through the master itself, never by a path that could be swapped.
    // SAFETY: TIOCGPTPEER returns a new descriptor, checked.
    let fd = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: as above.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some((rows, cols)) = size {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we own.
        cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) })?;
    }
    Ok(Terminal {
        master,
        slave,
        name: format!("/dev/pts/{number}"),
    })
}

/// Connects to the caller's console socket (before the container's root is entered: the
/// path is the host's).
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    Ok(super::socket::connect(path)?.into())
}

/// Sends `master` over `socket` with the message `name`, as runc does.
pub fn send(socket: BorrowedFd<'_>, master: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let fds = [master];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let data = [io::IoSlice::new(name.as_bytes())];
    sendmsg(socket, &data, &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receives one descriptor and its message from `socket` (the caller's side: `mm oci run`
/// with a terminal, and the tests).
pub fn receive(socket: BorrowedFd<'_>) -> io::Result<(OwnedFd, String)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut name = [0u8; 4096];
    let got = recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let text = String::from_utf8_lossy(&name[..got.bytes]).into_owned();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok((fd, text));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "the console socket's message held no descriptor",
    ))
}

/// In the container's process, inside its root, before it is locked down: a new session
/// whose controlling terminal is a new pseudo-terminal of the container's devpts, on the
/// standard streams; its master is sent over `socket` and then closed, as is the socket.
pub fn attach(socket: OwnedFd, size: Option<(u16, u16)>) -> io::Result<()> {
    let terminal = open(size)?;
    nix::unistd::setsid()?;
    sys::controlling_terminal(terminal.slave.as_fd())?;
    sys::dup_onto_standard_streams(terminal.slave.as_fd())?;
    send(socket.as_fd(), terminal.master.as_fd(), &terminal.name)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd};

    /// A terminal of this host's devpts (the test's root), its master sent over a socket
    /// pair and received: the name, the window size, and bytes both ways.
    #[test]
    fn a_master_travels_over_a_socket_with_its_name() {
        let terminal = match super::open(Some((12, 34))) {
            Ok(t) => t,
            // /dev/pts/ptmx is mode 0 unless ptmxmode says otherwise: root opens it.
            Err(e) => return eprintln!("SKIP a_master_travels_over_a_socket_with_its_name: {e}"),
        };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        super::send(ours.as_fd(), terminal.master.as_fd(), &terminal.name).unwrap();
        drop(terminal.master);
        let (master, name) = super::receive(theirs.as_fd()).unwrap();
        assert_eq!(name, terminal.name);
        assert!(name.starts_with("/dev/pts/"), "{name}");
        // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on a descriptor we own.
        assert_eq!(
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_row, size.ws_col), (12, 34));
        let mut master = std::fs::File::from(master);
        let mut slave = std::fs::File::from(terminal.slave);
        slave.write_all(b"out\n").unwrap();
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"out\r\n");
        eprintln!("{name}: received, 12x34, bytes through it");
    }
}
