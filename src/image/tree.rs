//! What an unpacked layer holds, entry by entry, so that `mm image check` can verify a tree
//! long after the tar stream it came from (and its diff_id) is gone.
//!
//! A layer is verified against its diff_id while it is unpacked; right after, before it is
//! renamed into the store, the fresh tree is walked and recorded here (path, type, mode,
//! owner, size, and the sha256 of each file's contents or a symlink's target) as
//! `layers/HEX.tree.json`. A check walks the tree again the same way and compares. The walk
//! never follows a symlink (`O_NOFOLLOW` on every open, `AT_SYMLINK_NOFOLLOW` on every stat)
//! and never opens anything but directories and regular files. Extended attributes and
//! timestamps are not recorded.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::error::ImageError;

/// The kind of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Dir,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// One entry of a layer's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Below the layer's root, `/`-separated (`.` for the root), bytes that are not
    /// printable ASCII escaped as `\xNN` (so every name has one spelling).
    pub path: String,
    pub kind: Kind,
    /// Permission bits, setuid, setgid and sticky included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A regular file's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A regular file's contents' sha256, or a symlink's target's (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A device's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
}

/// A layer's recorded tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub diff_id: Digest,
    /// In walk order: each directory's entries sorted by name, depth first.
    pub entries: Vec<Entry>,
}

/// One way a tree differs from its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

/// Walks the tree below `root` (a directory, opened with `O_PATH` or not); `shown` is the
/// directory's path for errors.
pub fn walk(root: &OwnedFd, shown: &Path) -> Result<Vec<Entry>, ImageError> {
    let io = |rel: &str, e: rustix::io::Errno| ImageError::Io {
        path: if rel == "." {
            shown.to_owned()
        } else {
            shown.join(rel)
        },
        source: e.into(),
    };
    let top = rustix::fs::openat(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(".", e))?;
    let stat = rustix::fs::fstat(&top).map_err(|e| io(".", e))?;
    let mut entries = vec![entry(".".to_owned(), &stat, None, None)];
    // Directories still to read, with their paths; popped from the end, pushed in
    // reverse order, so the walk is depth first in name order.
    let mut stack: Vec<(OwnedFd, String)> = vec![(top, String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut names = Vec::new();
        let mut reader = rustix::fs::Dir::read_from(&dir).map_err(|e| io(&prefix, e))?;
        while let Some(item) = reader.read() {
            let item = item.map_err(|e| io(&prefix, e))?;
            let name = item.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let path = format!("{prefix}{}", escape(&name));
            let os = OsStr::from_bytes(&name);
            let stat = rustix::fs::statat(&dir, os, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io(&path, e))?;
            let kind = FileType::from_raw_mode(stat.st_mode);
            let (size, sha256) = match kind {
                FileType::RegularFile => {
                    let file = rustix::fs::openat(
                        &dir,
                        os,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io(&path, e))?;
                    let (hex, size) = hash_file(file).map_err(|e| ImageError::Io {
                        path: shown.join(&path),
                        source: e,
                    })?;
                    (Some(size), Some(hex))
                }
                FileType::Symlink => {
                    let target =
                        rustix::fs::readlinkat(&dir, os, Vec::new()).map_err(|e| io(&path, e))?;
                    (None, Some(Digest::of(target.as_bytes()).hex().to_owned()))
                }
                _ => (None, None),
            };
            entries.push(entry(path.clone(), &stat, size, sha256));
            if kind == FileType::Directory {
                let sub = rustix::fs::openat(
                    &dir,
                    os,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(&path, e))?;
                subdirs.push((sub, format!("{path}/")));
            }
        }
        // Entries were pushed in name order; a directory's children come after all of its
        // siblings, which is fine: the order is only ever compared with itself.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(entries)
}

fn entry(
    path: String,
    stat: &rustix::fs::Stat,
    size: Option<u64>,
    sha256: Option<String>,
) -> Entry {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::CharacterDevice => Kind::CharDevice,
        FileType::BlockDevice => Kind::BlockDevice,
        FileType::Fifo => Kind::Fifo,
        FileType::Socket => Kind::Socket,
        _ => Kind::File,
    };
    let rdev = matches!(kind, Kind::CharDevice | Kind::BlockDevice).then_some(stat.st_rdev);
    Entry {
        path,
        kind,
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        size,
        sha256,
        rdev,
    }
}

fn hash_file(file: OwnedFd) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::from(file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_hasher(hasher).hex().to_owned(), size))
}

/// A name's one spelling: printable ASCII as it is (`\` doubled), other bytes `\xNN`.
fn escape(name: &[u8]) -> String {
    name.escape_ascii().to_string()
}

/// How `now` differs from `recorded`: entries missing, added, or changed (at most `limit`
/// differences, then one that says how many more).
pub fn compare(recorded: &[Entry], now: &[Entry], limit: usize) -> Vec<Difference> {
    let then: BTreeMap<&str, &Entry> = recorded.iter().map(|e| (e.path.as_str(), e)).collect();
    let found: BTreeMap<&str, &Entry> = now.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut all = Vec::new();
    for (path, was) in &then {
        match found.get(path) {
            None => all.push(Difference {
                path: (*path).to_owned(),
                what: "missing".to_owned(),
            }),
            Some(is) => {
                if let Some(what) = changed(was, is) {
                    all.push(Difference {
                        path: (*path).to_owned(),
                        what,
                    });
                }
            }
        }
    }
    for path in found.keys().filter(|p| !then.contains_key(*p)) {
        all.push(Difference {
            path: (*path).to_owned(),
            what: "not in the layer as unpacked".to_owned(),
        });
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    if all.len() > limit {
        let more = all.len() - limit;
        all.truncate(limit);
        all.push(Difference {
            path: "…".to_owned(),
            what: format!("{more} more"),
        });
    }
    all
}

fn changed(was: &Entry, is: &Entry) -> Option<String> {
    if was.kind != is.kind {
        return Some(format!("was a {:?}, is a {:?}", was.kind, is.kind).to_lowercase());
    }
    if was.sha256 != is.sha256 || was.size != is.size {
        return Some(match (was.size, is.size) {
            (Some(a), Some(b)) if a != b => format!("contents changed (size {b}, unpacked {a})"),
            _ => "contents changed".to_owned(),
        });
    }
    if was.mode != is.mode {
        return Some(format!("mode {:04o}, unpacked {:04o}", is.mode, was.mode));
    }
    if (was.uid, was.gid) != (is.uid, is.gid) {
        return Some(format!(
            "owner {}:{}, unpacked {}:{}",
            is.uid, is.gid, was.uid, was.gid
        ));
    }
    if was.rdev != is.rdev {
        return Some("device number changed".to_owned());
    }
    None
}

/// Opens a directory to walk, without following a symlink at its last component.
pub fn open_dir(path: &Path) -> Result<OwnedFd, ImageError> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// The record's file beside a layer directory `DIR`: `DIR.tree.json`.
pub fn record_path(layer_dir: &Path) -> PathBuf {
    let mut name = layer_dir.as_os_str().to_owned();
    name.push(".tree.json");
    PathBuf::from(name)
}

/// Reads a layer's record, `None` when it has none (a layer unpacked before mm recorded
/// trees).
pub fn read_record(layer_dir: &Path) -> Result<Option<Tree>, ImageError> {
    let path = record_path(layer_dir);
    crate::state::read_json(&path).map_err(|source| ImageError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<Entry> {
        walk(&open_dir(dir).unwrap(), dir).unwrap()
    }

    #[test]
    fn a_changed_byte_a_removed_file_and_an_added_one_are_each_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0\n").unwrap();
        std::fs::write(root.join("etc/sub/a"), b"a").unwrap();
        std::os::unix::fs::symlink("passwd", root.join("etc/link")).unwrap();
        std::fs::write(root.join("name\nwith\u{e9}"), b"").unwrap();
        let recorded = tree(root);
        assert_eq!(recorded.len(), 7, "{recorded:#?}");
        assert!(compare(&recorded, &tree(root), 10).is_empty());
        assert!(recorded.iter().any(|e| e.path == "name\\nwith\\xc3\\xa9"));

        std::fs::write(root.join("etc/passwd"), b"root:x:0:1\n").unwrap();
        std::fs::remove_file(root.join("etc/sub/a")).unwrap();
        std::fs::write(root.join("etc/new"), b"").unwrap();
        let differences = compare(&recorded, &tree(root), 10);
        let shown: Vec<(&str, &str)> = differences
            .iter()
            .map(|d| (d.path.as_str(), d.what.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("etc/new", "not in the layer as unpacked"),
                ("etc/passwd", "contents changed"),
                ("etc/sub/a", "missing"),
            ]
        );
        assert_eq!(compare(&recorded, &tree(root), 1).len(), 2);
    }

    #[test]
    fn a_symlink_is_recorded_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        let entries = tree(dir.path());
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].kind, Kind::Symlink);
    }
}
