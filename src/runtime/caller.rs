//! What `mm exec` and `mm shell` take from the caller, as toolbox and distrobox do: its
//! terminal's and locale's variables, and its working directory when that is inside one of
//! the machine's binds (the command then starts at the matching path inside).

use std::path::{Path, PathBuf};

use crate::plan::Mount;

/// The caller's variables that describe its terminal and locale.
pub fn passed(name: &str) -> bool {
    matches!(name, "TERM" | "COLORTERM" | "LANG" | "LANGUAGE") || name.starts_with("LC_")
}

/// The caller, as the command inside sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// `KEY=VALUE` of the [`passed`] variables.
    pub env: Vec<String>,
    /// Its working directory, as the kernel names it.
    pub cwd: Option<PathBuf>,
}

impl Caller {
    /// This process's caller.
    pub fn current() -> Self {
        let mut env: Vec<String> = std::env::vars()
            .filter(|(k, _)| passed(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.sort();
        Self {
            env,
            cwd: std::env::current_dir().ok(),
        }
    }

    /// Where the command starts when the caller's directory is inside one of the plan's
    /// directory binds (the most specific one): the same place inside.
    pub fn inside_dir(&self, mounts: &[Mount]) -> Option<String> {
        let cwd = self.cwd.as_deref()?;
        let mut best: Option<(usize, String)> = None;
        for mount in mounts {
            let Mount::Bind {
                source,
                target,
                recursive: true,
                ..
            } = mount
            else {
                continue;
            };
            let real = std::fs::canonicalize(source).ok();
            for source in std::iter::once(source.as_path()).chain(real.as_deref()) {
                let Some(inside) = within(cwd, source, target) else {
                    continue;
                };
                let depth = source.components().count();
                if best.as_ref().is_none_or(|(d, _)| depth > *d) {
                    best = Some((depth, inside));
                }
            }
        }
        best.map(|(_, inside)| inside)
    }
}

/// `cwd` below (or at) `source`, as the same path below `target`.
fn within(cwd: &Path, source: &Path, target: &str) -> Option<String> {
    let rest = cwd.strip_prefix(source).ok()?;
    let inside = if rest.as_os_str().is_empty() {
        PathBuf::from(target)
    } else {
        Path::new(target).join(rest)
    };
    inside.to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, target: &str, recursive: bool) -> Mount {
        Mount::Bind {
            source: PathBuf::from(source),
            target: target.to_owned(),
            readonly: false,
            recursive,
        }
    }

    #[test]
    fn the_most_specific_bind_holding_the_directory_names_the_place_inside() {
        let mounts = [
            bind("/nonexistent-mm/src", "/src", true),
            bind("/nonexistent-mm/src/deep", "/deep", true),
            bind("/nonexistent-mm/sock", "/run/sock", false),
        ];
        let caller = |cwd: &str| Caller {
            env: vec![],
            cwd: Some(PathBuf::from(cwd)),
        };
        assert_eq!(
            caller("/nonexistent-mm/src/a/b").inside_dir(&mounts),
            Some("/src/a/b".to_owned())
        );
        assert_eq!(
            caller("/nonexistent-mm/src").inside_dir(&mounts),
            Some("/src".to_owned())
        );
        assert_eq!(
            caller("/nonexistent-mm/src/deep/x").inside_dir(&mounts),
            Some("/deep/x".to_owned())
        );
        assert_eq!(caller("/nonexistent-mm/srcx").inside_dir(&mounts), None);
        assert_eq!(caller("/nonexistent-mm/sock").inside_dir(&mounts), None);
        assert_eq!(caller("/").inside_dir(&mounts), None);
    }

    #[test]
    fn terminal_and_locale_variables_pass() {
        for name in [
            "TERM",
            "COLORTERM",
            "LANG",
            "LC_ALL",
            "LC_CTYPE",
            "LANGUAGE",
        ] {
            assert!(passed(name), "{name}");
        }
        for name in ["PATH", "HOME", "DISPLAY", "TERMINFO", "XLANG"] {
            assert!(!passed(name), "{name}");
        }
    }
}
