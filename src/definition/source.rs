//! Image sources, spelt as in containers-transports(5), plus `tar:` and `rootfs:`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::digest::Digest;

/// Where a machine's image comes from. Local paths are absolute once parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "kebab-case")]
pub enum ImageSource {
    /// An OCI image layout directory (skopeo, umoci, buildah), with an optional reference:
    /// the `org.opencontainers.image.ref.name` of one of its images, a tag (`latest`) or a
    /// whole reference as podman writes it (`localhost/clbox:latest`).
    Oci { path: PathBuf, tag: Option<String> },
    /// A directory in skopeo's `dir:` layout: `manifest.json`, `version`, and each blob
    /// named by its digest's hex digits.
    Dir { path: PathBuf },
    /// An image in podman's (containers/storage's) store, read and never written:
    /// `containers-storage:[[DRIVER@]ROOT[+RUNROOT][:OPTIONS]]IMAGE`.
    ContainersStorage {
        /// The store; without it, the user's (root: /var/lib/containers/storage).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store: Option<StoreSpec>,
        /// A reference (`localhost/x:1`, `busybox` as docker normalizes it) or an image id
        /// (64 hex digits, or a reference followed by `@ID`).
        image: String,
    },
    /// A tarball of an OCI image layout, with an optional reference as for `oci:`.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// A tarball made by `docker save`, `podman save` (also `-m`, several images) or
    /// skopeo; which of its images, when it holds several.
    DockerArchive {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<ArchiveImage>,
    },
    /// An image in a registry.
    Docker(RegistryReference),
    /// A tarball of a root filesystem, as one layer.
    Tar { path: PathBuf },
    /// A plain directory used as the root filesystem's only lower layer.
    Rootfs { path: PathBuf },
    /// An image `mm commit` made in the store: `mm:NAME`.
    Store { name: String },
    /// An image name as podman takes it, with no transport: fully qualified
    /// (`quay.io/x/y:1`), or a short name (`fedora:40`) that registries.conf's aliases and
    /// unqualified-search-registries resolve when it is pulled.
    Name(ImageName),
}

/// A registry image's name as the user wrote it, without a transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageName {
    /// `[REGISTRY/]REPO[:TAG][@DIGEST]`, valid as a registry reference.
    pub name: String,
}

impl ImageName {
    pub fn parse(text: &str) -> Result<Self, SourceError> {
        RegistryReference::parse(text)?;
        Ok(Self {
            name: text.to_owned(),
        })
    }

    /// The reference it names when it names its registry (`localhost/x`, `quay.io/x`,
    /// `127.0.0.1:5000/x`: a first component with a `.` or `:`, or `localhost`, as podman
    /// tells them); `None` for a short name.
    pub fn qualified(&self) -> Option<RegistryReference> {
        let (first, _) = self.name.split_once('/')?;
        let registry = first.contains(['.', ':']) || first == "localhost";
        registry.then(|| RegistryReference::parse(&self.name).ok())?
    }

    /// The name without its tag or digest: what an alias is looked up by.
    pub fn repository(&self) -> &str {
        let end = self.name.find('@').unwrap_or(self.name.len());
        let name = &self.name[..end];
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        match name[last_slash..].rfind(':') {
            Some(i) => &name[..last_slash + i],
            None => name,
        }
    }

    /// Its tag and digest as written (`:40`, `@sha256:…`, or empty).
    pub fn pin(&self) -> &str {
        &self.name[self.repository().len()..]
    }

    /// The short name in `registry` (`docker.io` adds `library/` to a one-word name).
    pub fn in_registry(&self, registry: &str) -> Result<RegistryReference, SourceError> {
        RegistryReference::parse(&format!("{registry}/{}", self.name))
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A containers/storage store as containers-transports(5) spells it in brackets:
/// `[DRIVER@]ROOT[+RUNROOT][:OPTIONS]`. The run root and options are kept as written; mm
/// reads only the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSpec {
    /// `overlay` or `vfs`; without it, the driver whose image list the root holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    pub root: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_root: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

impl StoreSpec {
    /// Parses what is between the brackets; relative paths are taken relative to `base`.
    fn parse(text: &str, base: &Path) -> Result<Self, SourceError> {
        let bad = || SourceError::BadStore(text.to_owned());
        let (driver, rest) = match text.split_once('@') {
            Some((driver, rest)) => (Some(driver), rest),
            None => (None, text),
        };
        let (paths, options) = match rest.split_once(':') {
            Some((paths, options)) => (paths, Some(options.to_owned())),
            None => (rest, None),
        };
        let (root, run_root) = match paths.split_once('+') {
            Some((root, run_root)) => (root, Some(run_root)),
            None => (paths, None),
        };
        if root.is_empty()
            || run_root.is_some_and(str::is_empty)
            || driver.is_some_and(|d| d.is_empty() || !d.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(bad());
        }
        Ok(Self {
            driver: driver.map(str::to_owned),
            root: absolute(base, Path::new(root)),
            run_root: run_root.map(|r| absolute(base, Path::new(r))),
            options,
        })
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(driver) = &self.driver {
            write!(f, "{driver}@")?;
        }
        write!(f, "{}", self.root.display())?;
        if let Some(run_root) = &self.run_root {
            write!(f, "+{}", run_root.display())?;
        }
        if let Some(options) = &self.options {
            write!(f, ":{options}")?;
        }
        Ok(())
    }
}

/// One image of a multi-image `docker-archive:` (containers-transports(5):
/// `docker-archive:PATH[:{reference|@source-index}]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveImage {
    /// The image one of whose `RepoTags` is this reference (`localhost/clbox:latest`;
    /// `busybox:latest` as docker writes docker.io's names).
    Reference(String),
    /// The image at this place in the archive's manifest.json, from 0.
    Index(usize),
}

impl fmt::Display for ArchiveImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reference(reference) => f.write_str(reference),
            Self::Index(index) => write!(f, "@{index}"),
        }
    }
}

/// The transports a user may write, for errors and suggestions.
pub const TRANSPORTS: &[&str] = &[
    "oci",
    "oci-archive",
    "dir",
    "containers-storage",
    "docker-archive",
    "docker",
    "tar",
    "rootfs",
    "mm",
];

impl ImageSource {
    /// Parses `TRANSPORT:REST`; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, SourceError> {
        let transport = text.split_once(':').map(|(t, _)| t);
        // `ocii:x` is a misspelt transport, and `fedora:40` a name with its tag.
        let misspelt = transport
            .is_some_and(|t| super::diagnostic::closest(t, TRANSPORTS.iter().copied()).is_some());
        if !misspelt && Self::looks_like_a_name(text) {
            return ImageName::parse(text).map(Self::Name);
        }
        let Some((transport, rest)) = text.split_once(':') else {
            return Err(SourceError::NoTransport);
        };
        let local = |rest: &str| -> Result<PathBuf, SourceError> {
            if rest.is_empty() {
                return Err(SourceError::EmptyPath {
                    transport: transport.to_owned(),
                });
            }
            Ok(absolute(base, Path::new(rest)))
        };
        match transport {
            "oci" | "oci-archive" => {
                let (path, tag) = split_reference(rest)?;
                let path = local(path)?;
                Ok(if transport == "oci" {
                    Self::Oci { path, tag }
                } else {
                    Self::OciArchive { path, tag }
                })
            }
            "docker-archive" => {
                let (path, image) = match rest.split_once(':') {
                    Some((path, index)) if index.starts_with('@') => {
                        let index = index[1..]
                            .parse()
                            .map_err(|_| SourceError::BadSourceIndex(index.to_owned()))?;
                        (path, Some(ArchiveImage::Index(index)))
                    }
                    Some((path, reference)) => {
                        validate_reference(reference)?;
                        (path, Some(ArchiveImage::Reference(reference.to_owned())))
                    }
                    None => (rest, None),
                };
                Ok(Self::DockerArchive {
                    path: local(path)?,
                    image,
                })
            }
            "dir" => Ok(Self::Dir { path: local(rest)? }),
            "containers-storage" => {
                let (store, image) = match rest.strip_prefix('[') {
                    Some(inner) => {
                        let (spec, image) = inner
                            .split_once(']')
                            .ok_or_else(|| SourceError::BadStore(rest.to_owned()))?;
                        (Some(StoreSpec::parse(spec, base)?), image)
                    }
                    None => (None, rest),
                };
                if image.is_empty() {
                    return Err(SourceError::EmptyPath {
                        transport: transport.to_owned(),
                    });
                }
                validate_reference(image)?;
                Ok(Self::ContainersStorage {
                    store,
                    image: image.to_owned(),
                })
            }
            "tar" => Ok(Self::Tar { path: local(rest)? }),
            "rootfs" => Ok(Self::Rootfs { path: local(rest)? }),
            "mm" => {
                validate_tag(rest)?;
                Ok(Self::Store {
                    name: rest.to_owned(),
                })
            }
            "docker" => {
                let rest = rest.strip_prefix("//").ok_or(SourceError::DockerSlashes)?;
                RegistryReference::parse(rest).map(Self::Docker)
            }
            other => Err(SourceError::UnknownTransport(other.to_owned())),
        }
    }

    /// Whether `text`, which has no transport mm knows, is meant as an image name (podman's
    /// `fedora:40`, `quay.io/x/y`) rather than a path (`./img`, `/srv/img`) or a misspelt
    /// transport (`oic:images/x`: `oic:images` is no registry). A name that is also a
    /// directory beside the definition is refused when the definition is checked.
    fn looks_like_a_name(text: &str) -> bool {
        !text.starts_with(['.', '/', '~']) && RegistryReference::parse(text).is_ok()
    }

    /// The local file or directory this source reads, if it is local.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Self::Oci { path, .. }
            | Self::OciArchive { path, .. }
            | Self::Dir { path }
            | Self::DockerArchive { path, .. }
            | Self::Tar { path }
            | Self::Rootfs { path } => Some(path),
            Self::Docker(_)
            | Self::Name(_)
            | Self::Store { .. }
            | Self::ContainersStorage { .. } => None,
        }
    }

    /// Whether the image carries a config (default command, environment, user).
    pub fn has_config(&self) -> bool {
        !matches!(self, Self::Tar { .. } | Self::Rootfs { .. })
    }

    /// Whether the local path must be a directory (as opposed to a file).
    pub fn wants_directory(&self) -> bool {
        matches!(
            self,
            Self::Oci { .. } | Self::Dir { .. } | Self::Rootfs { .. }
        )
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tagged = |f: &mut fmt::Formatter<'_>, t: &str, p: &Path, tag: &Option<String>| {
            write!(f, "{t}:{}", p.display())?;
            match tag {
                Some(tag) => write!(f, ":{tag}"),
                None => Ok(()),
            }
        };
        match self {
            Self::Oci { path, tag } => tagged(f, "oci", path, tag),
            Self::OciArchive { path, tag } => tagged(f, "oci-archive", path, tag),
            Self::DockerArchive { path, image } => {
                write!(f, "docker-archive:{}", path.display())?;
                match image {
                    Some(image) => write!(f, ":{image}"),
                    None => Ok(()),
                }
            }
            Self::Docker(reference) => write!(f, "docker://{reference}"),
            Self::Dir { path } => write!(f, "dir:{}", path.display()),
            Self::ContainersStorage { store, image } => match store {
                Some(store) => write!(f, "containers-storage:[{store}]{image}"),
                None => write!(f, "containers-storage:{image}"),
            },
            Self::Tar { path } => write!(f, "tar:{}", path.display()),
            Self::Rootfs { path } => write!(f, "rootfs:{}", path.display()),
            Self::Store { name } => write!(f, "mm:{name}"),
            Self::Name(name) => write!(f, "{name}"),
        }
    }
}

/// `PATH[:REFERENCE]`: as in containers-transports(5), the first colon ends the path, so
/// that the reference may be a whole one (`oci-archive:x.tar:localhost/clbox:latest`).
fn split_reference(rest: &str) -> Result<(&str, Option<String>), SourceError> {
    match rest.split_once(':') {
        Some((path, reference)) => {
            validate_reference(reference)?;
            Ok((path, Some(reference.to_owned())))
        }
        None => Ok((rest, None)),
    }
}

/// An image's name in a layout or archive: what the OCI image spec allows for
/// `org.opencontainers.image.ref.name` (letters and digits, separated by one of `-._:@/+`).
fn validate_reference(reference: &str) -> Result<(), SourceError> {
    let separator = |b: &u8| b"-._:@/+".contains(b);
    let bytes = reference.as_bytes();
    let ok = (1..=255).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || separator(b))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !bytes
            .windows(2)
            .any(|w| separator(&w[0]) && separator(&w[1]));
    if ok {
        Ok(())
    } else {
        Err(SourceError::BadReference(reference.to_owned()))
    }
}

/// `base/path`, cleaned lexically as podman and skopeo clean paths: `.` is dropped and
/// `..` removes the component before it (never going above `/`).
pub fn absolute(base: &Path, path: &Path) -> PathBuf {
    let mut clean = PathBuf::from("/");
    for component in base.join(path).components() {
        match component {
            Component::ParentDir => {
                clean.pop();
            }
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    clean
}

/// A reference to an image in a registry: `REGISTRY/REPO[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryReference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// The registry assumed when a reference names none, as docker and podman do.
pub const DEFAULT_REGISTRY: &str = "docker.io";

impl RegistryReference {
    pub fn parse(text: &str) -> Result<Self, SourceError> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).map_err(|_| SourceError::BadDigest(digest.to_owned()))?),
            ),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, repo)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), repo.to_owned())
            }
            Some(_) => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
            None => (DEFAULT_REGISTRY.to_owned(), format!("library/{name}")),
        };
        // Docker Hub's official images live under `library/`, as docker and podman spell
        // `docker.io/busybox`.
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if registry.is_empty() || repository.is_empty() {
            return Err(SourceError::BadRepository(name.to_owned()));
        }
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry.as_str(), None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !(host_ok && port_ok) {
            return Err(SourceError::BadRegistry(registry));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(SourceError::BadRepository(repository));
        }
        Ok(Self {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for RegistryReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn validate_tag(tag: &str) -> Result<(), SourceError> {
    let ok = (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.starts_with('_'));
    if ok {
        Ok(())
    } else {
        Err(SourceError::BadTag(tag.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("no transport: an image source starts with one, as in `oci:PATH` or `docker://REPO`")]
    NoTransport,
    #[error("unknown transport `{0}:`")]
    UnknownTransport(String),
    #[error("`{transport}:` needs a path after the colon")]
    EmptyPath { transport: String },
    #[error("registry images are written `docker://REGISTRY/REPO[:TAG]`, with two slashes")]
    DockerSlashes,
    #[error("`{0}` is not a valid repository name (lowercase letters, digits, `.`, `_`, `-`, `/`)")]
    BadRepository(String),
    #[error("`{0}` is not a registry (a host name, and a port after a colon)")]
    BadRegistry(String),
    #[error("`{0}` is not a valid tag (up to 128 letters, digits, `_`, `.`, `-`)")]
    BadTag(String),
    #[error(
        "`{0}` is not an image reference (letters and digits, separated by one of `-._:@/+`, as in `latest` or `localhost/app:1.0`)"
    )]
    BadReference(String),
    #[error(
        "`{0}` is not a source index (`@` and a number from 0, as in `docker-archive:all.tar:@1`)"
    )]
    BadSourceIndex(String),
    #[error(
        "`{0}` is not a containers-storage store: `[DRIVER@]ROOT[+RUNROOT][:OPTIONS]` in brackets, as in containers-transports(5)"
    )]
    BadStore(String),
    #[error("`{0}` is not a sha256 digest (`sha256:` and 64 lowercase hex digits)")]
    BadDigest(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ImageSource, SourceError> {
        ImageSource::parse(text, Path::new("/defs"))
    }

    #[test]
    fn local_transports_resolve_relative_to_the_definition() {
        assert_eq!(
            parse("oci:./images/busybox:latest").unwrap(),
            ImageSource::Oci {
                path: "/defs/images/busybox".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            parse("oci:/srv/img").unwrap(),
            ImageSource::Oci {
                path: "/srv/img".into(),
                tag: None
            }
        );
        assert_eq!(
            parse("tar:root.tar.gz").unwrap(),
            ImageSource::Tar {
                path: "/defs/root.tar.gz".into()
            }
        );
        assert_eq!(
            parse("dir:copied").unwrap(),
            ImageSource::Dir {
                path: "/defs/copied".into()
            }
        );
        // skopeo's dir: takes the whole rest as the path, colons included.
        assert_eq!(parse("dir:a:b").unwrap().to_string(), "dir:/defs/a:b");
        assert_eq!(
            parse("containers-storage:[overlay@st+/run/x]localhost/x:1").unwrap(),
            ImageSource::ContainersStorage {
                store: Some(StoreSpec {
                    driver: Some("overlay".into()),
                    root: "/defs/st".into(),
                    run_root: Some("/run/x".into()),
                    options: None,
                }),
                image: "localhost/x:1".into()
            }
        );
        assert_eq!(
            parse("containers-storage:[/s:o=1]busybox")
                .unwrap()
                .to_string(),
            "containers-storage:[/s:o=1]busybox"
        );
        assert_eq!(
            parse("containers-storage:localhost/x:1")
                .unwrap()
                .to_string(),
            "containers-storage:localhost/x:1"
        );
        assert!(matches!(
            parse("containers-storage:[overlay@]x"),
            Err(SourceError::BadStore(_))
        ));
        assert!(matches!(
            parse("containers-storage:[/s"),
            Err(SourceError::BadStore(_))
        ));
        assert_eq!(
            parse("oci-archive:../a.tar:v1").unwrap().to_string(),
            "oci-archive:/a.tar:v1"
        );
    }

    /// As podman and skopeo write them: the first colon ends the path.
    #[test]
    fn archives_name_their_images_as_podman_and_skopeo_do() {
        assert_eq!(
            parse("oci-archive:clbox.tar:localhost/clbox:latest").unwrap(),
            ImageSource::OciArchive {
                path: "/defs/clbox.tar".into(),
                tag: Some("localhost/clbox:latest".into())
            }
        );
        assert_eq!(
            parse("oci:dir:localhost:5000/a/b:1.2").unwrap(),
            ImageSource::Oci {
                path: "/defs/dir".into(),
                tag: Some("localhost:5000/a/b:1.2".into())
            }
        );
        assert_eq!(
            parse("docker-archive:all.tar:@1").unwrap(),
            ImageSource::DockerArchive {
                path: "/defs/all.tar".into(),
                image: Some(ArchiveImage::Index(1))
            }
        );
        let named = parse("docker-archive:all.tar:localhost/b:latest").unwrap();
        assert_eq!(
            named,
            ImageSource::DockerArchive {
                path: "/defs/all.tar".into(),
                image: Some(ArchiveImage::Reference("localhost/b:latest".into()))
            }
        );
        assert_eq!(
            named.to_string(),
            "docker-archive:/defs/all.tar:localhost/b:latest"
        );
        assert_eq!(
            parse("docker-archive:all.tar").unwrap().to_string(),
            "docker-archive:/defs/all.tar"
        );
    }

    #[test]
    fn registry_references_get_docker_defaults() {
        let ImageSource::Docker(r) = parse("docker://busybox").unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        let ImageSource::Docker(r) = parse("docker://localhost:5000/a/b:1.2").unwrap() else {
            panic!()
        };
        assert_eq!(r.to_string(), "localhost:5000/a/b:1.2");
        let pinned = format!("docker://quay.io/x/y@sha256:{}", "a".repeat(64));
        assert!(parse(&pinned).is_ok());
    }

    #[test]
    fn names_without_a_transport_are_podmans_image_names() {
        let name = |text: &str| match parse(text).unwrap() {
            ImageSource::Name(name) => name,
            other => panic!("{text}: {other:?}"),
        };
        let short = name("fedora:40");
        assert_eq!(short.qualified(), None);
        assert_eq!((short.repository(), short.pin()), ("fedora", ":40"));
        assert_eq!(
            short.in_registry("docker.io").unwrap().to_string(),
            "docker.io/library/fedora:40"
        );
        assert_eq!(
            short.in_registry("127.0.0.1:5000").unwrap().to_string(),
            "127.0.0.1:5000/fedora:40"
        );
        let pinned = format!("team/app@sha256:{}", "b".repeat(64));
        let team = name(&pinned);
        assert_eq!(team.repository(), "team/app");
        assert_eq!(team.qualified(), None);
        let full = name("quay.io/x/y:1");
        assert_eq!(full.qualified().unwrap().to_string(), "quay.io/x/y:1");
        assert_eq!(
            name("localhost/clbox").qualified().unwrap().registry,
            "localhost"
        );
        assert_eq!(
            name("127.0.0.1:5000/a:2").qualified().unwrap().registry,
            "127.0.0.1:5000"
        );
        assert_eq!(parse("fedora:40").unwrap().to_string(), "fedora:40");
        // Docker Hub's one-word names are its official images, however written.
        let ImageSource::Docker(hub) = parse("docker://docker.io/busybox").unwrap() else {
            panic!()
        };
        assert_eq!(hub.repository, "library/busybox");
    }

    #[test]
    fn common_image_names_are_not_taken_for_misspelt_transports() {
        for name in [
            "fedora:40",
            "debian:12",
            "ubuntu:24.04",
            "alpine:3",
            "nginx:1",
            "node:22",
            "python:3",
            "golang:1",
            "redis:7",
            "postgres:16",
            "busybox:1",
            "mariadb:11",
            "httpd:2",
            "registry:2",
            "rust:1",
            "archlinux:base",
            "centos:7",
            "toolbox:40",
            "distrobox:1",
            "mysql:8",
            "ocaml:5",
            "dart:3",
            "tomcat:10",
            "oraclelinux:9",
        ] {
            assert!(
                matches!(parse(name), Ok(ImageSource::Name(_))),
                "{name}: {:?}",
                parse(name)
            );
        }
    }

    #[test]
    fn bad_sources_say_why() {
        assert_eq!(parse("./images/busybox"), Err(SourceError::NoTransport));
        assert_eq!(parse("/srv/Images"), Err(SourceError::NoTransport));
        assert_eq!(
            parse("oic:images/busybox"),
            Err(SourceError::UnknownTransport("oic".into()))
        );
        assert_eq!(
            parse("ocı:x"),
            Err(SourceError::UnknownTransport("ocı".into()))
        );
        assert_eq!(parse("docker:busybox"), Err(SourceError::DockerSlashes));
        assert!(matches!(
            parse("docker://Busybox"),
            Err(SourceError::BadRepository(_))
        ));
        assert!(matches!(
            parse("oci:x:bad tag"),
            Err(SourceError::BadReference(_))
        ));
        assert!(matches!(
            parse("docker-archive:x.tar:@one"),
            Err(SourceError::BadSourceIndex(_))
        ));
        assert!(matches!(
            parse("docker://a@sha256:12"),
            Err(SourceError::BadDigest(_))
        ));
        assert!(matches!(
            parse("rootfs:"),
            Err(SourceError::EmptyPath { .. })
        ));
    }
}
