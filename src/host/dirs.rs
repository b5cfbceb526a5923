//! Where mm keeps its state and looks for definitions, for root and for ordinary users.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::definition::source::absolute;

/// mm's directories on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dirs {
    /// Where definitions are looked up by name, first match wins.
    pub search: Vec<PathBuf>,
    /// Content-addressed blobs and unpacked layers.
    pub store: PathBuf,
    /// Each machine's writable layer and persistent state.
    pub machines: PathBuf,
    /// Locks, sockets and the state of running machines.
    pub runtime: PathBuf,
    /// What mm can make again and keeps to be fast: compiled seccomp profiles
    /// (`CACHE/seccomp`). `/var/cache/mm`, `$XDG_CACHE_HOME/mm`, or `$MM_ROOT/cache`.
    #[serde(default)]
    pub cache: PathBuf,
}

/// Environment variables that move mm's directories.
pub const ENV_ROOT: &str = "MM_ROOT";
pub const ENV_PATH: &str = "MM_PATH";

impl Dirs {
    /// This process's directories, from its uid (as the host knows it), `HOME` and
    /// environment (no other probing, so commands that must stay single-threaded can use it).
    pub fn current() -> Self {
        let ns = super::UserNamespace::probe().ok().flatten();
        let uid = super::owner_uid(nix::unistd::geteuid().as_raw(), ns.as_ref());
        let home = home(uid);
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Self::from_env(uid, &home, &cwd, |k| std::env::var_os(k))
    }

    /// The directories for `uid`, from the environment `env` and the working directory `cwd`.
    ///
    /// `MM_ROOT=DIR` puts the store, machines and runtime state under DIR; `MM_PATH` (a
    /// colon-separated list) replaces the definition search path. Relative paths in either
    /// start at the working directory. (Relative XDG paths are ignored, as the XDG spec says.)
    pub fn from_env(
        uid: u32,
        home: &Path,
        cwd: &Path,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Self {
        let var = |name: &str| {
            env(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let local = cwd.join("machines");
        let search = match env(ENV_PATH).filter(|v| !v.is_empty()) {
            Some(list) => std::env::split_paths(&list)
                .map(|p| absolute(cwd, &p))
                .collect(),
            None if uid == 0 => vec![
                local,
                "/etc/mm/machines".into(),
                "/usr/share/mm/machines".into(),
            ],
            None => {
                let config = var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
                vec![local, config.join("mm/machines")]
            }
        };
        let root = env(ENV_ROOT)
            .filter(|v| !v.is_empty())
            .map(|v| absolute(cwd, Path::new(&v)));
        let (data, runtime, cache) = if let Some(root) = root {
            (root.clone(), root.join("run"), root.join("cache"))
        } else if uid == 0 {
            (
                PathBuf::from("/var/lib/mm"),
                PathBuf::from("/run/mm"),
                PathBuf::from("/var/cache/mm"),
            )
        } else {
            let data = var("XDG_DATA_HOME")
                .unwrap_or_else(|| home.join(".local/share"))
                .join("mm");
            let runtime = var("XDG_RUNTIME_DIR")
                .map(|dir| dir.join("mm"))
                .unwrap_or_else(|| std::env::temp_dir().join(format!("mm-run-{uid}")));
            let cache = var("XDG_CACHE_HOME")
                .unwrap_or_else(|| home.join(".cache"))
                .join("mm");
            (data, runtime, cache)
        };
        Self {
            search,
            store: data.join("images"),
            machines: data.join("machines"),
            runtime,
            cache,
        }
    }
}

/// `MM_ROOT` when it names something that is there and is not a directory (a file, a
/// FIFO): every command would fail on some path below it, so mm says so first, once.
pub fn root_not_a_dir() -> Option<PathBuf> {
    let root = PathBuf::from(std::env::var_os(ENV_ROOT).filter(|v| !v.is_empty())?);
    let meta = std::fs::metadata(&root).ok()?;
    (!meta.is_dir()).then_some(root)
}

/// `$HOME`, else the account's home directory, else `/`.
pub fn home(uid: u32) -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|a| a.dir)
        })
        .unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn root_uses_system_directories() {
        let d = Dirs::from_env(0, Path::new("/root"), Path::new("/srv"), env(&[]));
        assert_eq!(d.search[0], Path::new("/srv/machines"));
        assert_eq!(d.search[1], Path::new("/etc/mm/machines"));
        assert_eq!(d.store, Path::new("/var/lib/mm/images"));
        assert_eq!(d.runtime, Path::new("/run/mm"));
        assert_eq!(d.cache, Path::new("/var/cache/mm"));
    }

    #[test]
    fn users_follow_xdg() {
        let vars = [
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_CONFIG_HOME", "/cfg"),
        ];
        let d = Dirs::from_env(1000, Path::new("/home/a"), Path::new("/w"), env(&vars));
        assert_eq!(d.search[1], Path::new("/cfg/mm/machines"));
        assert_eq!(d.store, Path::new("/home/a/.local/share/mm/images"));
        assert_eq!(d.runtime, Path::new("/run/user/1000/mm"));
        assert_eq!(d.cache, Path::new("/home/a/.cache/mm"));
    }

    #[test]
    fn overrides_move_everything() {
        let vars = [("MM_ROOT", "/tmp/t"), ("MM_PATH", "defs:/etc/x/../y")];
        let d = Dirs::from_env(1000, Path::new("/home/a"), Path::new("/w"), env(&vars));
        assert_eq!(
            d.search,
            [PathBuf::from("/w/defs"), PathBuf::from("/etc/y")]
        );
        let relative = Dirs::from_env(
            1000,
            Path::new("/home/a"),
            Path::new("/w"),
            env(&[("MM_ROOT", "state")]),
        );
        assert_eq!(relative.store, Path::new("/w/state/images"));
        assert_eq!(d.machines, Path::new("/tmp/t/machines"));
        assert_eq!(d.runtime, Path::new("/tmp/t/run"));
        assert_eq!(d.cache, Path::new("/tmp/t/cache"));
    }
}
