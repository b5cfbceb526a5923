//! A [`Mounter`] that only writes the calls down: the exact mount sequence of a plan, as
//! lines to read in review or snapshot in tests, without root and without touching the
//! system. Descriptors it hands out are `/dev/null`, named after what they stand for.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::mount::MsFlags;

use super::mounter::{At, Kind, Mounter};
use crate::host::CgroupMode;
use crate::plan::CgroupHierarchy;

/// Records every call; [`Recorder::lines`] gives them in order.
#[derive(Default)]
pub struct Recorder {
    lines: Vec<String>,
    /// Stand-in descriptors by number, while their holders keep them open.
    names: HashMap<RawFd, String>,
    /// What the recorded calls made: path and whether a directory.
    made: Vec<(std::path::PathBuf, bool)>,
}

impl Recorder {
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// A stand-in descriptor named `name`.
    pub fn fd(&mut self, name: impl Into<String>) -> io::Result<OwnedFd> {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null")?);
        self.names.insert(fd.as_raw_fd(), name.into());
        Ok(fd)
    }

    fn name(&self, fd: BorrowedFd<'_>) -> String {
        self.names
            .get(&fd.as_raw_fd())
            .cloned()
            .unwrap_or_else(|| format!("fd {}", fd.as_raw_fd()))
    }

    fn at(&self, at: At<'_>) -> String {
        match at {
            At::Path(path) => path.display().to_string(),
            At::Fd(fd) => self.name(fd),
        }
    }

    /// A heading: which process makes the calls that follow.
    pub fn say_section(&mut self, heading: &str) {
        self.lines.push(format!("# {heading}"));
    }

    fn say(&mut self, line: String) -> io::Result<()> {
        self.lines.push(line);
        Ok(())
    }
}

/// The flags of a mount call, as the `mount` command would spell them.
fn flag_words(flags: MsFlags) -> String {
    let words: Vec<&str> = [
        (MsFlags::MS_BIND, "bind"),
        (MsFlags::MS_REC, "rec"),
        (MsFlags::MS_REMOUNT, "remount"),
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_SLAVE, "slave"),
        (MsFlags::MS_PRIVATE, "private"),
        (MsFlags::MS_SHARED, "shared"),
        (MsFlags::MS_UNBINDABLE, "unbindable"),
        (MsFlags::MS_RELATIME, "relatime"),
        (MsFlags::MS_STRICTATIME, "strictatime"),
        (MsFlags::MS_NOATIME, "noatime"),
        (MsFlags::MS_NODIRATIME, "nodiratime"),
        (MsFlags::MS_SYNCHRONOUS, "sync"),
        (MsFlags::MS_DIRSYNC, "dirsync"),
    ]
    .into_iter()
    .filter(|(flag, _)| flags.contains(*flag))
    .map(|(_, word)| word)
    .collect();
    words.join(",")
}

impl Mounter for Recorder {
    fn mount(
        &mut self,
        source: Option<&OsStr>,
        target: At<'_>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> io::Result<()> {
        let mut line = format!("mount {}", fstype.unwrap_or("-"));
        if let Some(source) = source {
            line.push_str(&format!(" from {}", source.to_string_lossy()));
        }
        line.push_str(&format!(" on {}", self.at(target)));
        let flags = flag_words(flags);
        if !flags.is_empty() {
            line.push_str(&format!(" [{flags}]"));
        }
        if let Some(data) = data.filter(|d| !d.is_empty()) {
            line.push_str(&format!(" ({})", data.to_string_lossy()));
        }
        self.say(line)
    }

    fn make_dir(&mut self, path: &Path) -> io::Result<()> {
        self.made.push((path.to_owned(), true));
        self.say(format!("mkdir -p {}", path.display()))
    }

    fn make_file(&mut self, path: &Path) -> io::Result<()> {
        self.made.push((path.to_owned(), false));
        self.say(format!("touch {}", path.display()))
    }

    fn chown(&mut self, path: &Path, id: u32) -> io::Result<()> {
        self.say(format!("chown {id}:{id} {}", path.display()))
    }

    fn chmod(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        self.say(format!("chmod {mode:o} {}", path.display()))
    }

    /// What the recorded calls made answers first (the overlay's mount point, a staged
    /// source); anything else is a host path looked at without changing it (`/dev/null`,
    /// `/sys`, a bind's source), so the sequence does not depend on what mm left here.
    fn is_dir(&mut self, path: &Path) -> bool {
        let made = self
            .made
            .iter()
            .rev()
            .find(|(made, _)| made == path || (path.is_relative() && made.ends_with(path)));
        match made {
            Some((_, dir)) => *dir,
            None => path.is_absolute() && path.is_dir(),
        }
    }

    fn clone_tree(&mut self, from: At<'_>, recursive: bool) -> io::Result<OwnedFd> {
        let from = self.at(from);
        let how = if recursive { " (recursive)" } else { "" };
        self.say(format!("clone the mount of {from}{how}"))?;
        self.fd(format!("the clone of {from}"))
    }

    fn new_fs(&mut self, fstype: &str, attributes: u64) -> io::Result<OwnedFd> {
        self.say(format!("a new {fstype}, attributes {attributes:#x}"))?;
        self.fd(format!("the new {fstype}"))
    }

    fn file_tree(&mut self, name: &str, content: &[u8]) -> io::Result<OwnedFd> {
        self.say(format!("a tmpfs holding {name} ({} bytes)", content.len()))?;
        self.fd(format!("the file {name}"))
    }

    fn set_attributes(&mut self, mount: BorrowedFd<'_>, attributes: u64) -> io::Result<()> {
        self.say(format!(
            "attributes {attributes:#x} on {} (recursive)",
            self.name(mount)
        ))
    }

    fn make_readonly(&mut self, tree: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
        let how = if recursive { " (recursive)" } else { "" };
        self.say(format!("read-only: {}{how}", self.name(tree)))
    }

    fn idmap(&mut self, tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
        self.say(format!(
            "id-map {} through {}",
            self.name(tree),
            self.name(userns)
        ))
    }

    fn attach(&mut self, tree: BorrowedFd<'_>, to: At<'_>) -> io::Result<()> {
        self.say(format!("attach {} on {}", self.name(tree), self.at(to)))
    }

    fn open_dir(&mut self, path: &Path) -> io::Result<OwnedFd> {
        self.fd(format!("the root ({})", path.display()))
    }

    fn open_in_root(
        &mut self,
        _root: BorrowedFd<'_>,
        target: &str,
        create: Option<Kind>,
    ) -> io::Result<Option<OwnedFd>> {
        let made = match create {
            Some(Kind::Dir) => " (a directory if missing)",
            Some(Kind::File) => " (a file if missing)",
            None => "",
        };
        self.say(format!("resolve {target} in the root{made}"))?;
        Ok(Some(self.fd(target.to_owned())?))
    }

    fn symlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr, points_to: &str) -> io::Result<()> {
        self.say(format!(
            "symlink {}/{} -> {points_to}",
            self.name(dir),
            name.to_string_lossy()
        ))
    }

    fn cgroup_tree(
        &mut self,
        root: BorrowedFd<'_>,
        mode: CgroupMode,
        hierarchies: &[CgroupHierarchy],
    ) -> io::Result<()> {
        let trees: Vec<String> = hierarchies
            .iter()
            .map(|h| {
                let options = if h.options.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", h.options.join(","))
                };
                let dir = if h.dir.is_empty() { "." } else { &h.dir };
                let how = if h.writable { "rw" } else { "ro" };
                format!("{} {dir}{options} {how}", h.fstype.name())
            })
            .collect();
        self.say(format!(
            "cgroup tree ({mode:?}) on {}/sys/fs/cgroup: {}",
            self.name(root),
            trees.join("; ")
        ))
    }

    fn pivot(&mut self, root: BorrowedFd<'_>) -> io::Result<()> {
        self.say(format!(
            "pivot_root into {}, detach the old root",
            self.name(root)
        ))
    }
}
