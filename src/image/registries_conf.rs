//! registries.conf as containers-registries.conf(5) (v2) says podman, skopeo and buildah read
//! it: `$CONTAINERS_REGISTRIES_CONF`, else `~/.config/containers/registries.conf` if it
//! exists (it replaces the system file, and then only the user's drop-ins are read), else
//! `/etc/containers/registries.conf`; then the drop-ins `*.conf` of
//! `/etc/containers/registries.conf.d` and `~/.config/containers/registries.conf.d`, by
//! file name (a user's file replaces the system's of the same name). Later files replace
//! `[[registry]]` tables of the same prefix and the scalars they set.
//!
//! mm uses it when pulling: the `[[registry]]` whose `prefix` matches the image the most
//! (`host[:port][/namespace…]` or `*.domain`) gives where to pull from — its
//! `[[registry.mirror]]`s in order, then its `location` — whether each may be reached over
//! plain HTTP (`insecure`), or that the image is refused (`blocked`).
//!
//! A short name (`fedora:40`, a name without a registry and without a transport) is
//! resolved as podman resolves it: an `[aliases]` entry, else each of
//! `unqualified-search-registries`. With several of those, `short-name-mode = "enforcing"`
//! (the default) asks podman's user to choose at a terminal and refuses without one; mm,
//! whose definitions are read by units and scripts as well, never asks: it refuses and
//! says how to choose (an alias, or the full name). `permissive` and `disabled` try each
//! registry in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ImageError;
use crate::definition::source::{ImageName, RegistryReference};

/// Where the configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfEnv {
    /// `$CONTAINERS_REGISTRIES_CONF`.
    pub env_file: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// `/etc/containers/registries.conf`.
    pub system_file: PathBuf,
    /// `/etc/containers/registries.conf.d`.
    pub system_dir: PathBuf,
}

impl ConfEnv {
    /// From this process's environment.
    pub fn from_process() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            env_file: var("CONTAINERS_REGISTRIES_CONF"),
            home: var("HOME"),
            system_file: "/etc/containers/registries.conf".into(),
            system_dir: "/etc/containers/registries.conf.d".into(),
        }
    }

    /// The files to read, in order (those that do not exist are skipped when read).
    pub fn files(&self) -> Vec<PathBuf> {
        let user_file = self
            .home
            .as_ref()
            .map(|h| h.join(".config/containers/registries.conf"));
        let user_dir = self
            .home
            .as_ref()
            .map(|h| h.join(".config/containers/registries.conf.d"));
        let (main, dirs) = match (&self.env_file, &user_file) {
            (Some(file), _) => (file.clone(), vec![Some(self.system_dir.clone()), user_dir]),
            (None, Some(user)) if user.exists() => (user.clone(), vec![user_dir]),
            (None, _) => (
                self.system_file.clone(),
                vec![Some(self.system_dir.clone()), user_dir],
            ),
        };
        let mut drop_ins: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
        for dir in dirs.into_iter().flatten() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "conf") {
                    drop_ins.insert(entry.file_name(), path);
                }
            }
        }
        std::iter::once(main)
            .chain(drop_ins.into_values())
            .collect()
    }
}

/// One `[[registry]]`, with the file that said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub prefix: String,
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirrors: Vec<Mirror>,
    pub mirror_by_digest_only: bool,
    pub file: PathBuf,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    /// `all`, `digest-only` or `tag-only`.
    pub pull_from_mirror: String,
}

/// Where to pull an image from: a registry's reference, and whether plain HTTP (or a TLS
/// certificate that does not verify) is allowed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub reference: RegistryReference,
    pub insecure: bool,
}

/// What `short-name-mode` says to do when a short name could be in several registries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShortNameMode {
    /// Refuse (podman asks at a terminal; mm never asks).
    #[default]
    Enforcing,
    /// Try each of `unqualified-search-registries` in order.
    Permissive,
    /// The same as `permissive` for mm (podman neither asks nor records aliases).
    Disabled,
}

/// A setting with the file that said it last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said<T> {
    pub value: T,
    pub file: PathBuf,
}

impl<T> Said<T> {
    fn new(value: T, file: &Path) -> Self {
        Self {
            value,
            file: file.to_owned(),
        }
    }
}

/// The merged configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    pub registries: Vec<Registry>,
    /// `[aliases]`: a short name (without tag) to the image it means.
    pub aliases: BTreeMap<String, Said<String>>,
    pub search_registries: Option<Said<Vec<String>>>,
    pub short_name_mode: Option<Said<ShortNameMode>>,
    /// The files that were read.
    pub files: Vec<PathBuf>,
}

/// Where a short name was resolved to, in the order to try, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub candidates: Vec<RegistryReference>,
    /// How they were found, for the user: "an alias in FILE", "unqualified-search-registries
    /// in FILE"; `None` for a name that named its registry.
    pub how: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<String>,
    aliases: Option<BTreeMap<String, String>>,
    credential_helpers: Option<Vec<String>>,
    /// The v1 format's tables, refused with a word.
    registries: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRegistry {
    location: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

impl RegistriesConf {
    /// Reads and merges `env`'s files; a file that is missing is skipped, one that cannot be
    /// read or is not valid is an error naming it.
    pub fn load(env: &ConfEnv) -> Result<Self, ImageError> {
        let mut conf = Self::default();
        for file in env.files() {
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ImageError::Io { path: file, source }),
            };
            conf.merge(&file, &text)?;
            conf.files.push(file);
        }
        Ok(conf)
    }

    /// Adds one file's tables: a `[[registry]]` replaces the one of the same prefix.
    pub fn merge(&mut self, file: &Path, text: &str) -> Result<(), ImageError> {
        let bad = |why: String| ImageError::RegistriesConf {
            file: file.to_owned(),
            why,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        if raw.registries.is_some() {
            return Err(bad(
                "`[registries.*]` is the v1 format, which mm does not read; write `[[registry]]` tables (v2)".to_owned(),
            ));
        }
        if let Some(helpers) = &raw.credential_helpers
            && helpers.iter().any(|h| h != "containers-auth.json")
        {
            return Err(bad(format!(
                "credential-helpers {helpers:?}: mm reads the auth files (containers-auth.json) only"
            )));
        }
        if let Some(mode) = &raw.short_name_mode {
            let mode = match mode.as_str() {
                "enforcing" => ShortNameMode::Enforcing,
                "permissive" => ShortNameMode::Permissive,
                "disabled" => ShortNameMode::Disabled,
                _ => {
                    return Err(bad(format!(
                        "short-name-mode `{mode}`: it is enforcing, permissive or disabled"
                    )));
                }
            };
            self.short_name_mode = Some(Said::new(mode, file));
        }
        if let Some(search) = raw.unqualified_search_registries {
            if let Some(bad_one) = search.iter().find(|r| r.is_empty() || r.contains('/')) {
                return Err(bad(format!(
                    "unqualified-search-registries: `{bad_one}` is not a registry (a host, and a port after a colon)"
                )));
            }
            self.search_registries = Some(Said::new(search, file));
        }
        for (short, target) in raw.aliases.unwrap_or_default() {
            let qualified = ImageName::parse(&target)
                .ok()
                .and_then(|t| t.qualified().map(|_| t));
            if ImageName::parse(&short).is_err() || short.contains([':', '@']) {
                return Err(bad(format!(
                    "alias `{short}`: an alias is a short name without a tag or digest"
                )));
            }
            if qualified.is_none() {
                return Err(bad(format!(
                    "alias `{short}` = `{target}`: an alias names its registry (`docker.io/library/{short}`)"
                )));
            }
            self.aliases.insert(short, Said::new(target, file));
        }
        for r in raw.registry {
            let prefix = r
                .prefix
                .clone()
                .or_else(|| r.location.clone())
                .ok_or_else(|| bad("a [[registry]] needs a location or a prefix".to_owned()))?;
            if prefix.starts_with("*.") && prefix.contains(['/', '@', ':']) {
                return Err(bad(format!(
                    "prefix `{prefix}`: a wildcard prefix is `*.example.com`, nothing more"
                )));
            }
            let location = r.location.clone().unwrap_or_default();
            let mut mirrors = Vec::new();
            for m in r.mirror {
                let pull_from_mirror = m.pull_from_mirror.unwrap_or_else(|| "all".to_owned());
                if !["all", "digest-only", "tag-only"].contains(&pull_from_mirror.as_str()) {
                    return Err(bad(format!(
                        "pull-from-mirror `{pull_from_mirror}`: it is all, digest-only or tag-only"
                    )));
                }
                mirrors.push(Mirror {
                    location: m.location,
                    insecure: m.insecure,
                    pull_from_mirror,
                });
            }
            let entry = Registry {
                prefix,
                location,
                insecure: r.insecure,
                blocked: r.blocked,
                mirrors,
                mirror_by_digest_only: r.mirror_by_digest_only,
                file: file.to_owned(),
            };
            self.registries.retain(|e| e.prefix != entry.prefix);
            self.registries.push(entry);
        }
        Ok(())
    }

    /// The `[[registry]]` whose prefix matches `reference` the most, and how much it matched.
    fn find(&self, reference: &str) -> Option<&Registry> {
        let host = reference.split('/').next().unwrap_or_default();
        self.registries
            .iter()
            .filter_map(|r| {
                let len = if let Some(domain) = r.prefix.strip_prefix('*') {
                    (host.ends_with(domain) && host.len() > domain.len()).then_some(host.len())?
                } else {
                    let rest = reference.strip_prefix(r.prefix.as_str())?;
                    (rest.is_empty() || rest.starts_with(['/', ':', '@']))
                        .then_some(r.prefix.len())?
                };
                Some((len, r))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, r)| r)
    }

    /// The references `name` may mean, in the order to try them (one, unless the mode lets
    /// several registries be tried).
    pub fn resolve(&self, name: &ImageName) -> Result<Resolved, ImageError> {
        if let Some(reference) = name.qualified() {
            return Ok(Resolved {
                candidates: vec![reference],
                how: None,
            });
        }
        let refuse = |why: String| ImageError::ShortName {
            name: name.to_string(),
            why,
        };
        let files = || {
            let read: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
            if read.is_empty() {
                "no registries.conf was found".to_owned()
            } else {
                format!("read: {}", read.join(", "))
            }
        };
        if let Some(alias) = self.aliases.get(name.repository()) {
            let target = ImageName::parse(&alias.value).map_err(|e| refuse(e.to_string()))?;
            let pinned = target.pin().is_empty();
            let full = if pinned {
                format!("{}{}", alias.value, name.pin())
            } else if name.pin().is_empty() {
                alias.value.clone()
            } else {
                return Err(refuse(format!(
                    "its alias `{}` in {} has a tag or digest of its own",
                    alias.value,
                    alias.file.display()
                )));
            };
            let reference = RegistryReference::parse(&full).map_err(|e| refuse(e.to_string()))?;
            return Ok(Resolved {
                candidates: vec![reference],
                how: Some(format!("an alias in {}", alias.file.display())),
            });
        }
        let search = self
            .search_registries
            .as_ref()
            .filter(|s| !s.value.is_empty())
            .ok_or_else(|| {
                refuse(format!(
                    "no alias and no unqualified-search-registries say where it is ({}); write the full name, as in `docker.io/library/{name}`",
                    files()
                ))
            })?;
        let candidates = search
            .value
            .iter()
            .map(|registry| {
                name.in_registry(registry)
                    .map_err(|e| refuse(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mode = self
            .short_name_mode
            .as_ref()
            .map(|m| m.value)
            .unwrap_or_default();
        if candidates.len() > 1 && mode == ShortNameMode::Enforcing {
            let list: Vec<String> = candidates.iter().map(ToString::to_string).collect();
            let mode_file = self
                .short_name_mode
                .as_ref()
                .map_or("the default".to_owned(), |m| {
                    format!("set in {}", m.file.display())
                });
            return Err(refuse(format!(
                "it may be any of {} (unqualified-search-registries in {}), and short-name-mode is enforcing ({mode_file}), which mm does not guess under; write the full name, or add an alias: `[aliases]` `\"{}\" = \"{}\"`",
                list.join(", "),
                search.file.display(),
                name.repository(),
                candidates[0].to_string().trim_end_matches(name.pin()),
            )));
        }
        Ok(Resolved {
            candidates,
            how: Some(format!(
                "unqualified-search-registries in {}",
                search.file.display()
            )),
        })
    }

    /// Where to pull `reference` from, in order: the matching registry's mirrors, then its
    /// location (or the reference as it is, when nothing matches); a blocked registry is an
    /// error naming the file that blocks it.
    pub fn endpoints(&self, reference: &RegistryReference) -> Result<Vec<Endpoint>, ImageError> {
        let text = reference.to_string();
        let Some(registry) = self.find(&text) else {
            return Ok(vec![Endpoint {
                reference: reference.clone(),
                insecure: false,
            }]);
        };
        if registry.blocked {
            return Err(ImageError::Blocked {
                reference: text,
                prefix: registry.prefix.clone(),
                file: registry.file.clone(),
            });
        }
        let wildcard = registry.prefix.starts_with("*.");
        let matched = if wildcard {
            text.split('/').next().unwrap_or_default().len()
        } else {
            registry.prefix.len()
        };
        let rewrite = |location: &str, insecure: bool| -> Result<Endpoint, ImageError> {
            let reference = if location.is_empty() {
                reference.clone()
            } else {
                let new = format!("{location}{}", &text[matched..]);
                RegistryReference::parse(&new).map_err(|e| ImageError::RegistriesConf {
                    file: registry.file.clone(),
                    why: format!("`{location}` makes `{text}` into `{new}`: {e}"),
                })?
            };
            Ok(Endpoint {
                reference,
                insecure,
            })
        };
        let by_digest = reference.digest.is_some();
        let mut endpoints = Vec::new();
        for mirror in &registry.mirrors {
            let wanted = match mirror.pull_from_mirror.as_str() {
                "digest-only" => by_digest,
                "tag-only" => !by_digest,
                _ => by_digest || !registry.mirror_by_digest_only,
            };
            if wanted {
                endpoints.push(rewrite(&mirror.location, mirror.insecure)?);
            }
        }
        endpoints.push(rewrite(&registry.location, registry.insecure)?);
        Ok(endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(text: &str) -> RegistryReference {
        RegistryReference::parse(text).unwrap()
    }

    fn conf(text: &str) -> RegistriesConf {
        let mut conf = RegistriesConf::default();
        conf.merge(Path::new("/test/registries.conf"), text)
            .unwrap();
        conf
    }

    #[test]
    fn mirrors_come_first_then_the_location_with_the_prefix_rewritten() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com/team"
location = "127.0.0.1:5000/copy"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:5001/mirror"
[[registry.mirror]]
location = "127.0.0.1:5002"
pull-from-mirror = "digest-only"
[[registry]]
location = "example.com"
"#,
        );
        let endpoints = c.endpoints(&reference("example.com/team/app:1")).unwrap();
        let shown: Vec<(String, bool)> = endpoints
            .iter()
            .map(|e| (e.reference.to_string(), e.insecure))
            .collect();
        assert_eq!(
            shown,
            [
                ("127.0.0.1:5001/mirror/app:1".to_owned(), false),
                ("127.0.0.1:5000/copy/app:1".to_owned(), true)
            ]
        );
        // `example.com/teamwork` is not under `example.com/team`.
        let other = c.endpoints(&reference("example.com/teamwork/app")).unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].reference.to_string(), "example.com/teamwork/app");
        let pinned = format!("example.com/team/app@sha256:{}", "a".repeat(64));
        assert_eq!(c.endpoints(&reference(&pinned)).unwrap().len(), 3);
        assert_eq!(
            c.endpoints(&reference("elsewhere.org/x")).unwrap()[0].reference,
            reference("elsewhere.org/x")
        );
    }

    fn name(text: &str) -> ImageName {
        ImageName::parse(text).unwrap()
    }

    fn candidates(c: &RegistriesConf, text: &str) -> Result<Vec<String>, String> {
        c.resolve(&name(text))
            .map(|r| r.candidates.iter().map(ToString::to_string).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn short_names_resolve_by_alias_then_search_registries_as_the_mode_allows() {
        let mut c = conf(
            r#"
unqualified-search-registries = ["registry.fedoraproject.org", "docker.io"]
[aliases]
"box" = "quay.io/team/box"
"pinned" = "quay.io/team/pinned:7"
"#,
        );
        assert_eq!(candidates(&c, "box:1").unwrap(), ["quay.io/team/box:1"]);
        assert_eq!(candidates(&c, "pinned").unwrap(), ["quay.io/team/pinned:7"]);
        let twice = candidates(&c, "pinned:8").unwrap_err();
        assert!(twice.contains("has a tag or digest of its own"), "{twice}");
        // A name with its registry is never looked up.
        assert_eq!(candidates(&c, "quay.io/a/b").unwrap(), ["quay.io/a/b"]);
        // Enforcing (the default) with two registries: refused, with how to choose.
        let why = candidates(&c, "fedora:40").unwrap_err();
        assert!(
            why.contains("registry.fedoraproject.org/fedora:40, docker.io/library/fedora:40")
                && why.contains("short-name-mode is enforcing (the default)")
                && why.contains(r#""fedora" = "registry.fedoraproject.org/fedora""#),
            "{why}"
        );
        // A later file's mode and list replace the earlier's; its aliases add to them.
        c.merge(
            Path::new("/test/registries.conf.d/10-mode.conf"),
            "short-name-mode = \"permissive\"\n[aliases]\n\"other\" = \"docker.io/library/busybox\"\n",
        )
        .unwrap();
        assert_eq!(
            candidates(&c, "fedora:40").unwrap(),
            [
                "registry.fedoraproject.org/fedora:40",
                "docker.io/library/fedora:40"
            ]
        );
        assert_eq!(candidates(&c, "box").unwrap(), ["quay.io/team/box"]);
        let resolved = c.resolve(&name("other")).unwrap();
        assert_eq!(
            resolved.how.as_deref(),
            Some("an alias in /test/registries.conf.d/10-mode.conf")
        );
        // One search registry is no choice at all, even when enforcing.
        let one = conf("unqualified-search-registries = [\"127.0.0.1:5000\"]\n");
        assert_eq!(candidates(&one, "app").unwrap(), ["127.0.0.1:5000/app"]);
        let none = candidates(&conf(""), "app").unwrap_err();
        assert!(
            none.contains("no alias and no unqualified-search-registries"),
            "{none}"
        );
    }

    #[test]
    fn bad_short_name_tables_name_the_file() {
        let mut c = RegistriesConf::default();
        for (text, why) in [
            ("[aliases]\n\"box:1\" = \"quay.io/box\"\n", "without a tag"),
            ("[aliases]\n\"box\" = \"box\"\n", "names its registry"),
            (
                "unqualified-search-registries = [\"a.io/x\"]\n",
                "`a.io/x` is not a registry",
            ),
        ] {
            let e = c.merge(Path::new("/test/bad.conf"), text).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("/test/bad.conf") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn blocked_registries_and_wildcards_are_said_with_the_file() {
        let c = conf(
            r#"
[[registry]]
prefix = "*.blocked.example"
blocked = true
"#,
        );
        let e = c
            .endpoints(&reference("quay.blocked.example/a/b:1"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "registry: quay.blocked.example/a/b:1 is blocked by the [[registry]] with prefix `*.blocked.example` in /test/registries.conf"
        );
        assert!(c.endpoints(&reference("blocked.example/a")).is_ok());
    }

    #[test]
    fn later_files_replace_the_same_prefix_and_bad_files_are_errors() {
        let mut c = conf("[[registry]]\nlocation = \"r.example\"\nblocked = true\n");
        c.merge(
            Path::new("/test/drop.conf"),
            "[[registry]]\nlocation = \"r.example\"\ninsecure = true\n",
        )
        .unwrap();
        assert_eq!(c.registries.len(), 1);
        assert!(c.registries[0].insecure && !c.registries[0].blocked);
        let mut c = RegistriesConf::default();
        for (text, why) in [
            ("[registries.search]\nregistries = []\n", "v1 format"),
            (
                "short-name-mode = \"loose\"\n",
                "enforcing, permissive or disabled",
            ),
            ("[[registry]]\nlocaton = \"x\"\n", "unknown field `locaton`"),
            (
                "[[registry]]\ninsecure = true\n",
                "needs a location or a prefix",
            ),
        ] {
            let e = c.merge(Path::new("/f.conf"), text).unwrap_err().to_string();
            assert!(
                e.starts_with("registries.conf /f.conf: ") && e.contains(why),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn the_user_file_replaces_the_system_one_and_the_variable_both() {
        let home = tempfile::tempdir().unwrap();
        let env = ConfEnv {
            env_file: None,
            home: Some(home.path().to_owned()),
            system_file: "/nonexistent/registries.conf".into(),
            system_dir: "/nonexistent/registries.conf.d".into(),
        };
        assert_eq!(env.files(), [PathBuf::from("/nonexistent/registries.conf")]);
        let user = home.path().join(".config/containers");
        std::fs::create_dir_all(user.join("registries.conf.d")).unwrap();
        std::fs::write(user.join("registries.conf"), "").unwrap();
        std::fs::write(user.join("registries.conf.d/b.conf"), "").unwrap();
        std::fs::write(user.join("registries.conf.d/a.conf"), "").unwrap();
        std::fs::write(user.join("registries.conf.d/ignored.txt"), "").unwrap();
        assert_eq!(
            env.files(),
            [
                user.join("registries.conf"),
                user.join("registries.conf.d/a.conf"),
                user.join("registries.conf.d/b.conf"),
            ]
        );
        let given = ConfEnv {
            env_file: Some("/given.conf".into()),
            ..env
        };
        assert_eq!(given.files()[0], PathBuf::from("/given.conf"));
    }
}
