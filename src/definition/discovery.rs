//! Finding definition files: by name along the search path, or by explicit path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::diagnostic::closest;
use super::name::MachineName;

/// Where a definition was found; earlier directories on the search path win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub path: PathBuf,
    /// Files with the same name later on the search path, hidden by this one.
    pub shadowed: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "no machine named `{name}`; looked in {}{}",
        list_dirs(searched),
        suggestion(similar)
    )]
    NotFound {
        name: String,
        searched: Vec<PathBuf>,
        similar: Option<String>,
    },
    #[error("{} does not exist", .0.display())]
    NoSuchFile(PathBuf),
    #[error("`{}` is not a machine name: {why}", arg.escape_debug())]
    BadName { arg: String, why: String },
}

fn list_dirs(dirs: &[PathBuf]) -> String {
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    shown.join(", ")
}

fn suggestion(similar: &Option<String>) -> String {
    similar
        .as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// True when a command-line argument is a path to a file rather than a machine name.
pub fn is_path(arg: &str) -> bool {
    arg.contains('/') || arg.ends_with(".toml")
}

/// The definition file a command-line argument means: a path as given, or `NAME.toml` in
/// the first directory of `search` that has one.
pub fn resolve(arg: &str, search: &[PathBuf]) -> Result<PathBuf, DiscoveryError> {
    if is_path(arg) {
        let path = PathBuf::from(arg);
        // Anything there: loading it says why a FIFO or a directory is not a definition.
        return if path.symlink_metadata().is_ok() {
            Ok(path)
        } else {
            Err(DiscoveryError::NoSuchFile(path))
        };
    }
    MachineName::new(arg).map_err(|why| DiscoveryError::BadName {
        arg: arg.to_owned(),
        why,
    })?;
    let file = format!("{arg}.toml");
    if let Some(path) = search
        .iter()
        .map(|dir| dir.join(&file))
        .find(|p| p.symlink_metadata().is_ok())
    {
        return Ok(path);
    }
    let known = list(search);
    let similar = closest(arg, known.iter().map(|f| f.name.as_str())).map(str::to_owned);
    Err(DiscoveryError::NotFound {
        name: arg.to_owned(),
        searched: search.to_vec(),
        similar,
    })
}

/// Every definition on the search path, by name; unreadable directories are skipped, as
/// a missing `/etc/mm/machines` is normal.
pub fn list(search: &[PathBuf]) -> Vec<Found> {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for dir in search {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| is_definition(p)) {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match found.get_mut(&name) {
                Some(first) => first.shadowed.push(path),
                None => {
                    found.insert(
                        name.clone(),
                        Found {
                            name,
                            path,
                            shadowed: Vec::new(),
                        },
                    );
                }
            }
        }
    }
    found.into_values().collect()
}

fn is_definition(path: &Path) -> bool {
    // Not only regular files: `mm list` shows why another kind is not a definition.
    path.extension().is_some_and(|e| e == "toml") && path.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_directories_win_and_later_ones_are_shadowed() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for (dir, name) in [(&a, "web"), (&b, "web"), (&b, "dev")] {
            std::fs::write(dir.path().join(format!("{name}.toml")), "").unwrap();
        }
        std::fs::write(b.path().join("notes.txt"), "").unwrap();
        let search = vec![
            a.path().to_owned(),
            b.path().to_owned(),
            "/nonexistent".into(),
        ];
        assert_eq!(resolve("web", &search).unwrap(), a.path().join("web.toml"));
        let all = list(&search);
        assert_eq!(
            all.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["dev", "web"]
        );
        assert_eq!(all[1].shadowed, [b.path().join("web.toml")]);
        match resolve("wbe", &search) {
            Err(DiscoveryError::NotFound { similar, .. }) => {
                assert_eq!(similar.as_deref(), Some("web"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve("a_b", &search),
            Err(DiscoveryError::BadName { .. })
        ));
        assert!(matches!(
            resolve("./nope.toml", &search),
            Err(DiscoveryError::NoSuchFile(_))
        ));
    }
}
