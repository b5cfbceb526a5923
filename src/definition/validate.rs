//! Raw definition to typed [`Definition`]: one check per concern, every problem collected.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

mod desktop;
mod exec;
mod network;

use super::capability;
use super::diagnostic::{Diagnostic, Diagnostics, SourceFile, closest};
use super::raw::{
    RawBind, RawDefinition, RawKeepId, RawRange, RawResources, RawSecurity, RawSize, RawStorage,
};
use super::source::{Digest, ImageSource, SourceError, TRANSPORTS};
use super::units::{parse_cpus, parse_size};
use super::{
    Bind, BindSource, CapabilityDrop, CpuWeight, Definition, Home, Image, KeepId, KeepWho, Located,
    MachineName, Resources, Security, Storage, UserRange,
};
use desktop::desktop;
use exec::exec;
use network::network;

/// The smallest id range a booted init gets along with: systemd needs `nobody` (65534).
const BOOT_MIN_IDS: u32 = 65536;

/// Collects diagnostics for one file while the checks run.
struct Checker<'f> {
    file: &'f SourceFile,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at<T>(
        &mut self,
        value: &Spanned<T>,
        key: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.problems
            .push(self.file.error_at(&value.span(), message).key(key));
        self.problems.last_mut().expect("just pushed")
    }
}

pub fn validate(file: SourceFile, raw: RawDefinition) -> Result<Definition, Diagnostics> {
    let base = super::base_dir(file.path());
    let mut c = Checker {
        file: &file,
        problems: Vec::new(),
    };
    let name = machine_name(&mut c);
    let image = image(&mut c, raw.image.into_inner(), &base);
    let desktop = desktop(&mut c, raw.desktop, raw.exec.env.as_ref());
    let exec = exec(&mut c, raw.exec, &image);
    let storage = storage(&mut c, raw.storage, &base);
    let keep_id = keep_id(&mut c, raw.users.keep_id, raw.users.home, &base);
    let users = users(&mut c, raw.users.range, exec.boot);
    let network = network(&mut c, raw.network);
    let resources = resources(&mut c, raw.resources);
    let security = security(&mut c, raw.security);
    let description = raw.description.map(Spanned::into_inner);

    let mut problems = c.problems;
    if !problems.is_empty() {
        problems.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
        return Err(Diagnostics(problems));
    }
    Ok(Definition {
        name: name.expect("a missing name is a problem"),
        file,
        description,
        image: image.expect("a bad image is a problem"),
        exec,
        storage,
        users,
        keep_id,
        network,
        resources,
        security,
        desktop,
    })
}

fn machine_name(c: &mut Checker<'_>) -> Option<MachineName> {
    let path = c.file.path();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if path.extension().and_then(|e| e.to_str()) != Some("toml") {
        c.problems.push(c.file.error(
            "a definition file's name ends in `.toml`; the part before it names the machine",
        ));
        return None;
    }
    match MachineName::new(stem) {
        Ok(name) => Some(name),
        Err(why) => {
            let diagnostic = c
                .file
                .error(format!("the machine is named after its file, and {why}"))
                .help("rename the file, e.g. `my-machine.toml`");
            c.problems.push(diagnostic);
            None
        }
    }
}

fn image(c: &mut Checker<'_>, raw: super::raw::RawImage, base: &Path) -> Option<Image> {
    let pin_span = raw.digest.as_ref().map(|d| d.span());
    let digest = raw.digest.and_then(|d| match Digest::parse(d.get_ref()) {
        Ok(digest) => Some(digest),
        Err(_) => {
            c.at(
                &d,
                "image.digest",
                SourceError::BadDigest(d.get_ref().clone()).to_string(),
            );
            None
        }
    });
    let span = raw.source.span();
    match ImageSource::parse(raw.source.get_ref(), base) {
        Ok(source) => {
            if let (Some(pin), Some(pin_span)) = (&digest, pin_span) {
                let conflict = match &source {
                    ImageSource::Rootfs { .. } => Some(
                        "a `rootfs:` directory has no manifest, so a digest pin cannot apply"
                            .to_owned(),
                    ),
                    ImageSource::Docker(_) | ImageSource::Name(_) => named_digest(&source)
                        .as_ref()
                        .filter(|in_source| *in_source != pin)
                        .map(|in_source| {
                            format!("the source names {in_source}, and `digest` pins {pin}")
                        }),
                    _ => None,
                };
                if let Some(why) = conflict {
                    c.problems
                        .push(c.file.error_at(&pin_span, why).key("image.digest"));
                }
            }
            Some(Image {
                source: Located {
                    value: source,
                    span,
                },
                digest,
            })
        }
        Err(e) => {
            let d = c.at(&raw.source, "image.source", e.to_string());
            if let SourceError::UnknownTransport(t) = &e
                && let Some(guess) = closest(t, TRANSPORTS.iter().copied())
            {
                d.help.push(format!("did you mean `{guess}:`?"));
            }
            if matches!(
                e,
                SourceError::UnknownTransport(_) | SourceError::NoTransport
            ) {
                d.help.push(
                    "sources: oci:PATH[:REF], oci-archive:PATH[:REF], dir:PATH, containers-storage:[STORE]IMAGE, docker-archive:PATH[:REF|:@INDEX], \
                     docker://REGISTRY/REPO[:TAG|@DIGEST], tar:PATH, rootfs:PATH, mm:NAME (made by `mm commit`), or an image name as podman takes it (quay.io/x/y:1, fedora:40)"
                        .to_owned(),
                );
            }
            None
        }
    }
}

/// The digest a registry source names in itself (`…@sha256:…`).
fn named_digest(source: &ImageSource) -> Option<Digest> {
    match source {
        ImageSource::Docker(reference) => reference.digest.clone(),
        ImageSource::Name(name) => {
            crate::definition::source::RegistryReference::parse(&name.name)
                .ok()?
                .digest
        }
        _ => None,
    }
}

fn storage(c: &mut Checker<'_>, raw: RawStorage, base: &Path) -> Storage {
    let mut binds: Vec<Located<Bind>> = Vec::new();
    let mut targets = BTreeSet::new();
    for (i, bind) in raw.binds.into_iter().enumerate() {
        let span = bind.span();
        let RawBind {
            source,
            target,
            readonly,
        } = bind.into_inner();
        let key = format!("storage.binds[{i}]");
        let Some(target_path) = machine_path(c, &target, &format!("{key}.target")) else {
            continue;
        };
        if target_path == "/" {
            c.at(
                &target,
                &format!("{key}.target"),
                "a bind cannot cover the machine's whole root",
            );
            continue;
        }
        if !targets.insert(target_path.clone()) {
            c.at(
                &target,
                &format!("{key}.target"),
                format!("`{target_path}` is already the target of another bind"),
            );
            continue;
        }
        let text = source.get_ref();
        let source_path = if text.is_empty() {
            c.at(
                &source,
                &format!("{key}.source"),
                "the bind source is empty",
            );
            continue;
        } else if text == "~" {
            BindSource::Home(PathBuf::new())
        } else if let Some(rest) = text.strip_prefix("~/") {
            BindSource::Home(PathBuf::from(rest))
        } else if text.starts_with('~') {
            c.at(
                &source,
                &format!("{key}.source"),
                "only `~/` (your own home) is understood",
            )
            .help
            .push("write the absolute path of another user's directory".to_owned());
            continue;
        } else {
            BindSource::Path(super::source::absolute(base, Path::new(text)))
        };
        binds.push(Located {
            value: Bind {
                source: source_path,
                target: target_path,
                readonly,
            },
            span,
        });
    }
    Storage {
        persistent: raw.persistent.unwrap_or(true),
        binds,
    }
}

/// An absolute path inside the machine, normalised; `..` is refused, so that a path can
/// never name something above the machine's root.
fn machine_path(c: &mut Checker<'_>, path: &Spanned<String>, key: &str) -> Option<String> {
    let text = path.get_ref();
    if !text.starts_with('/') {
        c.at(
            path,
            key,
            format!("`{text}` is relative; paths inside the machine are absolute"),
        )
        .help
        .push(format!("write `/{}`", text.trim_start_matches("./")));
        return None;
    }
    let mut parts = Vec::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                c.at(
                    path,
                    key,
                    format!("`{text}` contains `..`; write the path without it"),
                );
                return None;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn users(c: &mut Checker<'_>, raw: Option<Spanned<RawRange>>, boot: bool) -> Located<UserRange> {
    let Some(raw) = raw else {
        return Located {
            value: UserRange::Auto,
            span: 0..0,
        };
    };
    let span = raw.span();
    let value = match raw.get_ref() {
        RawRange::Word(word) if word == "auto" => UserRange::Auto,
        RawRange::Word(word) => {
            c.at(&raw, "users.range", format!("`{word}` is not a range"))
                .help
                .push("write `\"auto\"` or `{ base = 524288, size = 65536 }`".to_owned());
            UserRange::Auto
        }
        RawRange::Explicit(range) => {
            let base = u32::try_from(range.base).ok();
            let size = u32::try_from(range.size).ok();
            match (base, size) {
                (_, Some(0)) => {
                    c.at(
                        &raw,
                        "users.range.size",
                        "the range's size must be greater than 0",
                    );
                    UserRange::Auto
                }
                (Some(base), Some(size)) if u64::from(base) + u64::from(size) <= 1 << 32 => {
                    if boot && size < BOOT_MIN_IDS {
                        c.at(&raw, "users.range.size", format!("a booted machine needs at least {BOOT_MIN_IDS} ids; this range has {size}"));
                    }
                    UserRange::Explicit { base, size }
                }
                _ => {
                    c.at(
                        &raw,
                        "users.range",
                        "the range does not fit in the 32-bit id space",
                    )
                    .help
                    .push(
                        "base and size are positive, and base + size is at most 4294967296"
                            .to_owned(),
                    );
                    UserRange::Auto
                }
            }
        }
    };
    Located { value, span }
}

/// A host user name as shadow's tools accept it: letters, digits, `_`, `-` and `.`, not
/// starting with `-`, at most 32 bytes.
fn user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn keep_id(
    c: &mut Checker<'_>,
    raw: Option<Spanned<RawKeepId>>,
    home: Option<Spanned<String>>,
    base: &Path,
) -> Option<Located<KeepId>> {
    let who = match raw.as_ref().map(|r| (r, r.get_ref())) {
        None | Some((_, RawKeepId::Flag(false))) => None,
        Some((_, RawKeepId::Flag(true))) => Some(KeepWho::Me),
        Some((_, RawKeepId::Name(name))) if user_name(name) => Some(KeepWho::Named(name.clone())),
        Some((raw, RawKeepId::Name(name))) => {
            c.at(raw, "users.keep_id", format!("`{name}` is not a user name"))
                .help
                .push(
                    "write `true` (yourself) or a host user's name, e.g. `keep_id = \"alice\"`"
                        .to_owned(),
                );
            return None;
        }
    };
    let Some(who) = who else {
        if let Some(home) = &home {
            c.at(
                home,
                "users.home",
                "`home` is the keep_id user's home, and keep_id is not set",
            )
            .help
            .push("add `keep_id = true` to [users], or remove `home`".to_owned());
        }
        return None;
    };
    let span = raw.as_ref().map_or(0..0, Spanned::span);
    let home_span = home.as_ref().map_or(0..0, Spanned::span);
    let home = match home.as_ref().map(|h| (h, h.get_ref().as_str())) {
        None | Some((_, "machine")) => Home::Machine,
        Some((_, "host")) => Home::Host,
        Some((h, "")) => {
            c.at(h, "users.home", "the home is empty")
                .help
                .push("write \"machine\", \"host\" or a host directory".to_owned());
            return None;
        }
        Some((_, "~")) => Home::Path(BindSource::Home(PathBuf::new())),
        Some((_, text)) if text.starts_with("~/") => {
            Home::Path(BindSource::Home(PathBuf::from(&text[2..])))
        }
        Some((h, text)) if text.starts_with('~') => {
            c.at(h, "users.home", "only `~/` (your own home) is understood")
                .help
                .push("write the absolute path of another user's directory".to_owned());
            return None;
        }
        Some((_, text)) => Home::Path(BindSource::Path(super::source::absolute(
            base,
            Path::new(text),
        ))),
    };
    Some(Located {
        value: KeepId {
            who,
            home,
            home_span,
        },
        span,
    })
}

fn resources(c: &mut Checker<'_>, raw: Option<Spanned<RawResources>>) -> Located<Resources> {
    let Some(raw) = raw else {
        return Located {
            value: Resources::default(),
            span: 0..0,
        };
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let memory = raw.memory.and_then(|m| {
        let bytes = match m.get_ref() {
            RawSize::Bytes(n) => {
                u64::try_from(*n).map_err(|_| "a size cannot be negative".to_owned())
            }
            RawSize::Text(text) => parse_size(text),
        };
        match bytes {
            Ok(bytes) if bytes >= 1 << 20 => Some(bytes),
            Ok(_) => {
                c.at(
                    &m,
                    "resources.memory",
                    "below 1M, which no machine can run in",
                );
                None
            }
            Err(why) => {
                c.at(&m, "resources.memory", why).help.push(
                    "write a size such as \"512M\" or \"2G\" (K, M, G, T are powers of 1024)"
                        .to_owned(),
                );
                None
            }
        }
    });
    let cpus_milli = raw.cpus.and_then(|cpus| match parse_cpus(*cpus.get_ref()) {
        Ok(milli) => Some(milli),
        Err(why) => {
            c.at(&cpus, "resources.cpus", format!("the CPU count {why}"));
            None
        }
    });
    let pids = raw
        .pids
        .and_then(|pids| match u64::try_from(*pids.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                c.at(
                    &pids,
                    "resources.pids",
                    "the process limit must be a number greater than 0",
                );
                None
            }
        });
    let cpu_weight = raw
        .cpu_weight
        .and_then(|w| match u16::try_from(*w.get_ref()) {
            Ok(n) if (1..=10_000).contains(&n) => Some(CpuWeight::Weight(n)),
            _ => {
                c.at(
                    &w,
                    "resources.cpu_weight",
                    "the CPU weight must be from 1 to 10000 (100 is the default weight)",
                );
                None
            }
        });
    Located {
        value: Resources {
            memory,
            cpus_milli,
            pids,
            cpu_weight,
            memory_and_swap: None,
            hugepages: Vec::new(),
            cpuset_cpus: None,
            cpuset_mems: None,
        },
        span,
    }
}

fn security(c: &mut Checker<'_>, raw: RawSecurity) -> Security {
    let mut capability_set = |list: &[Spanned<String>], key: &str, allow_all: bool| {
        let mut set = BTreeSet::new();
        let mut all = false;
        for name in list {
            let is_all = name.get_ref().eq_ignore_ascii_case("all");
            if is_all && allow_all {
                all = true;
            } else if is_all {
                c.at(name, key, "`all` can only be dropped")
                    .help
                    .push("to start from an empty set, write `drop_capabilities = [\"all\"]` and add what you need".to_owned());
            } else if let Some(cap) = capability::canonical(name.get_ref()) {
                set.insert(cap);
            } else {
                let word = name.get_ref().to_ascii_uppercase();
                let word = if word.starts_with("CAP_") {
                    word
                } else {
                    format!("CAP_{word}")
                };
                let d = c.at(
                    name,
                    key,
                    format!("unknown capability `{}`", name.get_ref()),
                );
                if let Some(guess) = closest(&word, capability::ALL.iter().copied()) {
                    d.help.push(format!("did you mean `{guess}`?"));
                }
                d.help.push(
                    "capability names are listed in capabilities(7), e.g. CAP_NET_ADMIN".to_owned(),
                );
            }
        }
        (set, all)
    };
    let (add, _) = capability_set(&raw.add_capabilities, "security.add_capabilities", false);
    let (drop, drop_all) =
        capability_set(&raw.drop_capabilities, "security.drop_capabilities", true);
    if let Some(both) = add.intersection(&drop).next() {
        let span = raw
            .add_capabilities
            .iter()
            .find(|n| capability::canonical(n.get_ref()) == Some(*both));
        if let Some(at) = span {
            c.at(
                at,
                "security.add_capabilities",
                format!("`{both}` is both added and dropped"),
            );
        }
    }
    Security {
        add_capabilities: add,
        drop_capabilities: if drop_all {
            CapabilityDrop::All
        } else {
            CapabilityDrop::Some(drop)
        },
        no_new_privileges: raw.no_new_privileges.unwrap_or(false),
        read_only: raw.read_only.unwrap_or(false),
    }
}
