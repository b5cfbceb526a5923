// PLACEHOLDER
use std::os::fd::{BorrowedFd, OwnedFd};
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}
pub fn open(_like: Option<BorrowedFd>) -> std::io::Result<Pty> {
    let r = nix::pty::openpty(None, None)?;
    Ok(Pty {
        master: r.master,
        slave: r.slave,
    })
}
pub fn attach_as_controlling(_s: &OwnedFd) -> std::io::Result<()> {
    Ok(())
}
pub fn relay(_m: OwnedFd) -> std::io::Result<()> {
    Ok(())
}
