//! The keep-id user written into the machine by its PID 1, as the machine's root, after
//! `pivot_root`: its `/etc/passwd` and `/etc/group` entries, a sudoers drop-in, and a
//! machine home seeded from `/etc/skel` while it is empty.
//!
//! The image is hostile: every directory is opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` (a `/proc/self/fd/N` link cannot reach a descriptor PID 1
//! still holds), files are read with `O_NOFOLLOW | O_NONBLOCK` and only when regular (a
//! symlinked `/etc/passwd` is read as absent; a FIFO cannot block PID 1), and written as a
//! new file renamed over the old name, which replaces a symlink instead of following it.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::launch::{Step, StepFailure};
use crate::plan::{HomeFrom, KeepId};

/// How deep /etc/skel may go before the copy stops (a loop of bind mounts, a hostile tree).
const SKEL_DEPTH: usize = 16;

/// Writes `keep` into the machine whose root is this process's root.
pub fn write(keep: &KeepId) -> Result<(), StepFailure> {
    let fail = |path: &str| {
        let path = path.to_owned();
        move |e: Errno| StepFailure::io(Step::WriteUserFile { path }, &e.into())
    };
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("/"))?;
    let etc = dir_in_root(root.as_fd(), "etc", true).map_err(fail("/etc"))?;
    let shell = keep
        .shells
        .iter()
        .find(|s| is_file_in_root(root.as_fd(), s))
        .map_or("/bin/sh", String::as_str);
    let passwd = read_regular(etc.as_fd(), "passwd").map_err(fail("/etc/passwd"))?;
    replace(
        etc.as_fd(),
        "passwd",
        &edit_passwd(&passwd, keep, shell),
        0o644,
    )
    .map_err(fail("/etc/passwd"))?;
    let group = read_regular(etc.as_fd(), "group").map_err(fail("/etc/group"))?;
    replace(etc.as_fd(), "group", &edit_group(&group, keep), 0o644).map_err(fail("/etc/group"))?;
    let (dir, name) = keep
        .sudoers
        .rsplit_once('/')
        .unwrap_or(("/etc/sudoers.d", keep.sudoers.as_str()));
    let sudoers_d = dir_in_root(root.as_fd(), dir, true).map_err(fail(dir))?;
    let rule = format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", keep.name);
    replace(sudoers_d.as_fd(), name, &rule, 0o440).map_err(fail(&keep.sudoers))?;
    if let HomeFrom::Machine { .. } = keep.home_from {
        let failed = |e: Errno| {
            StepFailure::io(
                Step::SeedHome {
                    path: keep.home.clone(),
                },
                &e.into(),
            )
        };
        let home = dir_in_root(root.as_fd(), &keep.home, false).map_err(failed)?;
        if is_empty(home.as_fd()).map_err(failed)? {
            match dir_in_root(root.as_fd(), "/etc/skel", false) {
                Ok(skel) => copy_tree(skel.as_fd(), home.as_fd(), keep, 0).map_err(failed)?,
                Err(Errno::NOENT | Errno::NOTDIR) => {}
                Err(e) => return Err(failed(e)),
            }
        }
    }
    Ok(())
}

/// The directory `path` inside `root`, made (mode 0755) when missing and `create`.
fn dir_in_root(root: BorrowedFd<'_>, path: &str, create: bool) -> Result<OwnedFd, Errno> {
    let relative = path.trim_start_matches('/');
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::openat2(root, relative, flags, Mode::empty(), how) {
        Err(Errno::NOENT) if create => {
            let (parent, name) = relative.rsplit_once('/').unwrap_or(("", relative));
            let parent = dir_in_root(root, if parent.is_empty() { "." } else { parent }, true)?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            rustix::fs::openat2(root, relative, flags, Mode::empty(), how)
        }
        other => other,
    }
}

/// Whether `path` is a regular file inside `root` (symlinks followed inside it).
fn is_file_in_root(root: BorrowedFd<'_>, path: &str) -> bool {
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    rustix::fs::openat2(
        root,
        path.trim_start_matches('/'),
        flags,
        Mode::empty(),
        how,
    )
    .and_then(|fd| rustix::fs::fstat(&fd))
    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
}

/// The text of `dir/name` when it is a regular file; empty when it is missing or is not
/// one (a symlink, a FIFO, a device): it is then replaced, never followed.
fn read_regular(dir: BorrowedFd<'_>, name: &str) -> Result<String, Errno> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP | Errno::NXIO) => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(String::new());
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Replaces `dir/name` with a new file of `content` and `mode`, owned by the machine's
/// root: written under a temporary name, then renamed over it.
fn replace(dir: BorrowedFd<'_>, name: &str, content: &str, mode: u32) -> Result<(), Errno> {
    let tmp = format!(".{name}.mm-new");
    match rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e),
    }
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(mode))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(content.as_bytes())
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    drop(file);
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)
}

/// `/etc/passwd` with the keep-id user's line, in place of any of the same name or uid.
/// A machine always has its root: one is written where the file has none (a hostile
/// image's symlink, read as no file).
pub fn edit_passwd(old: &str, keep: &KeepId, shell: &str) -> String {
    let mut out = String::new();
    if !old.lines().any(|l| l.split(':').nth(2) == Some("0")) {
        out.push_str("root:x:0:0:root:/root:/bin/sh\n");
    }
    for line in old.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let ours = fields.first() == Some(&keep.name.as_str())
            || fields.get(2) == Some(&keep.uid.to_string().as_str());
        if !ours {
            out.push_str(line);
            out.push('\n');
        }
    }
    // `*`: no password, and none in /etc/shadow to look for (with `x`, pam_unix's account
    // check fails for want of a shadow entry, and sudo with it).
    out.push_str(&format!(
        "{}:*:{}:{}::{}:{}\n",
        keep.name, keep.uid, keep.gid, keep.home, shell
    ));
    out
}

/// `/etc/group` with the keep-id user in its groups: its primary gid named (the host's
/// name, else the user's) when the image has no group of that gid; a member of each
/// supplementary group, by name, created with the host's gid when the image has none;
/// in no other group. Running it again gives the same file.
pub fn edit_group(old: &str, keep: &KeepId) -> String {
    let mut lines: Vec<Vec<String>> = old
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect();
    for fields in &mut lines {
        if let Some(members) = fields.get_mut(3) {
            let kept: Vec<&str> = members
                .split(',')
                .filter(|m| !m.is_empty() && *m != keep.name)
                .collect();
            *members = kept.join(",");
        }
    }
    if !lines.iter().any(|f| f.get(2).is_some_and(|g| g == "0")) {
        lines.insert(
            0,
            vec!["root".into(), "x".into(), "0".into(), String::new()],
        );
    }
    let named = |lines: &[Vec<String>], name: &str| lines.iter().position(|f| f[0] == name);
    let gid = keep.gid.to_string();
    if !lines.iter().any(|f| f.get(2) == Some(&gid)) {
        let free = [&keep.group, &keep.name]
            .into_iter()
            .find(|n| named(&lines, n).is_none());
        if let Some(name) = free {
            lines.push(vec![name.clone(), "x".into(), gid, String::new()]);
        }
    }
    for group in &keep.groups {
        let at = match named(&lines, &group.name) {
            Some(at) => at,
            None => {
                lines.push(vec![
                    group.name.clone(),
                    "x".into(),
                    group.gid.to_string(),
                    String::new(),
                ]);
                lines.len() - 1
            }
        };
        let fields = &mut lines[at];
        while fields.len() < 4 {
            fields.push(String::new());
        }
        if fields[3].is_empty() {
            fields[3] = keep.name.clone();
        } else {
            fields[3] = format!("{},{}", fields[3], keep.name);
        }
    }
    lines.iter().map(|f| f.join(":") + "\n").collect()
}

/// Whether the directory has no entries.
fn is_empty(dir: BorrowedFd<'_>) -> Result<bool, Errno> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let entries = rustix::fs::Dir::read_from(&fd)?;
    for entry in entries {
        let name = entry?.file_name().to_bytes().to_owned();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies the tree `from` into `to`, owned by the user; symlinks are copied as links,
/// never followed; anything but files, directories and links is left out.
fn copy_tree(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    keep: &KeepId,
    depth: usize,
) -> Result<(), Errno> {
    if depth > SKEL_DEPTH {
        return Ok(());
    }
    let (uid, gid) = (
        Some(rustix::fs::Uid::from_raw(keep.uid)),
        Some(rustix::fs::Gid::from_raw(keep.gid)),
    );
    let listing = rustix::fs::openat(
        from,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let entries = rustix::fs::Dir::read_from(&listing)?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_owned();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = rustix::fs::statat(from, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777 & !0o6000);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                let src = rustix::fs::openat(
                    from,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let flags = OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::WRONLY
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let dst = rustix::fs::openat(to, name.as_c_str(), flags, mode)?;
                rustix::fs::fchown(&dst, uid, gid)?;
                let (mut src, mut dst) = (std::fs::File::from(src), std::fs::File::from(dst));
                std::io::copy(&mut src, &mut dst)
                    .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            }
            FileType::Directory => {
                match rustix::fs::mkdirat(to, name.as_c_str(), mode) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub_to = rustix::fs::openat(to, name.as_c_str(), flags, Mode::empty())?;
                rustix::fs::fchown(&sub_to, uid, gid)?;
                let sub_from = rustix::fs::openat(from, name.as_c_str(), flags, Mode::empty())?;
                copy_tree(sub_from.as_fd(), sub_to.as_fd(), keep, depth + 1)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(from, name.as_c_str(), Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), to, name.as_c_str())?;
                rustix::fs::chownat(to, name.as_c_str(), uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostGroup;

    fn alice() -> KeepId {
        KeepId {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            group: "alice".into(),
            groups: vec![
                HostGroup {
                    name: "audio".into(),
                    gid: 29,
                },
                HostGroup {
                    name: "docker".into(),
                    gid: 999,
                },
            ],
            left_out: vec![],
            home: "/home/alice".into(),
            home_from: HomeFrom::Machine {
                dir: "/var/lib/mm/machines/dev/home".into(),
            },
            shells: vec!["/bin/zsh".into(), "/bin/bash".into(), "/bin/sh".into()],
            sudoers: "/etc/sudoers.d/mm-alice".into(),
        }
    }

    #[test]
    fn passwd_gets_one_line_for_the_user_in_place_of_its_name_or_uid() {
        let old = "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\nalice:x:2000:2000::/x:/bin/sh\n";
        let new = edit_passwd(old, &alice(), "/bin/bash");
        assert_eq!(
            new,
            "root:x:0:0:root:/root:/bin/bash\nalice:*:1000:1000::/home/alice:/bin/bash\n"
        );
        assert_eq!(edit_passwd(&new, &alice(), "/bin/bash"), new, "idempotent");
        assert_eq!(
            edit_passwd("", &alice(), "/bin/sh"),
            "root:x:0:0:root:/root:/bin/sh\nalice:*:1000:1000::/home/alice:/bin/sh\n",
            "a machine always has its root"
        );
    }

    #[test]
    fn groups_are_joined_by_name_or_created_with_the_hosts_gid() {
        let old = "root:x:0:\naudio:x:63:bob\nstaff:x:50:alice,bob\n";
        let new = edit_group(old, &alice());
        assert_eq!(
            new,
            "root:x:0:\naudio:x:63:bob,alice\nstaff:x:50:bob\nalice:x:1000:\ndocker:x:999:alice\n"
        );
        assert_eq!(edit_group(&new, &alice()), new, "idempotent");
        // The primary gid is the image's group where it has one; a taken name is not reused.
        let old = "root:x:0:\nusers:x:1000:\nalice:x:7:\n";
        assert_eq!(
            edit_group(old, &alice()),
            "root:x:0:\nusers:x:1000:\nalice:x:7:\naudio:x:29:alice\ndocker:x:999:alice\n"
        );
        assert!(edit_group("", &alice()).starts_with("root:x:0:\n"));
    }
}
