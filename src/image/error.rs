//! What can go wrong bringing an image into the store, said so that the user can act.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::digest::{Digest, Mismatch};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an OCI image layout (no oci-layout file or index.json)", .0.display())]
    NotALayout(PathBuf),
    #[error("{} is not a skopeo dir: image (no `version` file saying `Directory Transport Version: 1.x`, or no manifest.json)", .0.display())]
    NotADir(PathBuf),
    #[error("{} is not a containers-storage store mm can read: {why}", root.display())]
    NotAStore { root: PathBuf, why: String },
    #[error("no image `{image}` in the containers-storage store {}; images there: {}", root.display(), list(available))]
    NotInPodmanStore {
        image: String,
        root: PathBuf,
        available: Vec<String>,
    },
    #[error("layer {layer} of the containers-storage store: cannot rebuild its tar stream: {why}")]
    TarSplit { layer: String, why: String },
    #[error("{} has no tag `{tag}`; tags here: {}", path.display(), list(available))]
    NoSuchTag {
        path: PathBuf,
        tag: String,
        available: Vec<String>,
    },
    #[error("{} holds several images ({}); name one with :REFERENCE", path.display(), list(available))]
    WhichImage {
        path: PathBuf,
        available: Vec<String>,
    },
    /// A multi-image docker-archive, asked for an image by a place it does not have.
    #[error("{} holds {count} image(s) (@0 to @{}), not @{index}; images here: {}", path.display(), count.saturating_sub(1), list(available))]
    NoSuchIndex {
        path: PathBuf,
        index: usize,
        count: usize,
        available: Vec<String>,
    },
    #[error("no image for {wanted} in this index; it has: {}", list(available))]
    NoPlatform {
        wanted: String,
        available: Vec<String>,
    },
    #[error("blob {digest} is missing from {}", path.display())]
    MissingBlob { digest: Digest, path: PathBuf },
    #[error("{what} {digest} does not match its digest: {mismatch}")]
    Corrupt {
        what: &'static str,
        digest: Digest,
        mismatch: Mismatch,
    },
    #[error(
        "layer {layer}: its uncompressed content does not match the config's diff_id: {mismatch}"
    )]
    DiffId { layer: Digest, mismatch: Mismatch },
    #[error("{what} {digest} is not valid JSON of its kind: {why}")]
    BadJson {
        what: &'static str,
        digest: Digest,
        why: String,
    },
    #[error("{what} {digest} is {size} bytes, more than the {limit} bytes mm accepts for it")]
    TooLarge {
        what: &'static str,
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("layer {digest} has media type `{media_type}`, which is not a layer mm can unpack")]
    MediaType { digest: Digest, media_type: String },
    #[error("the manifest lists {layers} layers, and the config {diff_ids} diff_ids")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("the image is {actual}, and the definition pins {pinned}")]
    Pin { pinned: Digest, actual: Digest },
    #[error("layer {layer}, entry `{entry}`: {why}")]
    Entry {
        layer: String,
        entry: String,
        why: String,
    },
    #[error("layer {layer}: the tar stream is broken: {why}")]
    Tar { layer: String, why: String },
    /// A layer the unpacker could not write: its entry, the step and the errno.
    #[error(transparent)]
    Unpack(#[from] super::unpack::UnpackError),
    /// The store's file system refused a write while a layer was unpacked into it (full,
    /// over quota, read-only, failing): the store's fault, not the image's.
    #[error("could not write into the image store at {}: {source}", store.display())]
    StoreWrite {
        store: PathBuf,
        source: super::unpack::UnpackError,
    },
    #[error("no image {0} in the store; `mm image list` shows what is there")]
    NotInStore(String),
    #[error("image {name} is used by machine(s) {}; remove them first", machines.join(", "))]
    InUse { name: String, machines: Vec<String> },
    #[error("`{0}:` sources are not supported by `mm image import` yet")]
    Unsupported(&'static str),
    #[error(
        "a `rootfs:` source is used in place, as the machine's only lower layer: there is nothing to import"
    )]
    InPlace,
    #[error("registry: {0}")]
    Registry(String),
    #[error("registry: {0}: no such image or blob")]
    RegistryNotFound(String),
    /// A registry credentials file (auth.json, docker's config.json) mm cannot use.
    #[error("registry credentials in {}: {why}", file.display())]
    Credentials { file: PathBuf, why: String },
    /// A registries.conf (containers-registries.conf(5)) mm cannot use.
    #[error("registries.conf {}: {why}", file.display())]
    RegistriesConf { file: PathBuf, why: String },
    /// An image whose registry a registries.conf blocks.
    #[error("registry: {reference} is blocked by the [[registry]] with prefix `{prefix}` in {}", file.display())]
    Blocked {
        reference: String,
        prefix: String,
        file: PathBuf,
    },
    /// A short name (no registry) that registries.conf does not resolve to one place.
    #[error("short name `{name}`: {why}")]
    ShortName { name: String, why: String },
    #[error("unpacking as an ordinary user: {0}")]
    Rootless(String),
    /// A directory could not be packed into a layer.
    #[error(transparent)]
    Pack(#[from] super::pack::PackError),
    #[error("the store already has an image {0}; choose another --tag, or --force to replace it")]
    Exists(String),
    /// What `mm commit` cannot commit, and why.
    #[error("cannot commit machine {machine}: {why}")]
    Commit { machine: String, why: String },
    /// What `mm image export` cannot write, and why.
    #[error("cannot export to {target}: {why}")]
    Export { target: String, why: String },
    /// An error inside the rootless worker: its step, errno and exit code.
    #[error("{0}")]
    Worker(WorkerFailure),
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Adds the path to an I/O error.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::Io {
            path: path.into(),
            source,
        })
    }
}

/// What the worker was doing when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum WorkerStep {
    /// Its own `unshare(CLONE_NEWUSER)`.
    Unshare,
    ReadJob,
    Install {
        store: PathBuf,
    },
    Remove,
    Pack {
        dir: PathBuf,
    },
    Check {
        store: PathBuf,
    },
}

impl std::fmt::Display for WorkerStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unshare => f.write_str("unshare a user namespace"),
            Self::ReadJob => f.write_str("read its job"),
            Self::Install { store } => write!(f, "install layers into {}", store.display()),
            Self::Remove => f.write_str("remove files"),
            Self::Pack { dir } => write!(f, "pack {} into a layer", dir.display()),
            Self::Check { store } => write!(f, "check the layers of {}", store.display()),
        }
    }
}

/// The worker's error: its step, the errno under it, and the exit code it maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("the unpack worker could not {step}: {message}")]
pub struct WorkerFailure {
    pub step: WorkerStep,
    pub errno: Option<i32>,
    pub code: u8,
    pub message: String,
}

impl WorkerFailure {
    /// The failure of `step` with `e`; the errno is the first `io::Error`'s in its chain.
    pub(super) fn new(step: WorkerStep, code: u8, e: &(dyn std::error::Error + 'static)) -> Self {
        let mut errno = None;
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>()
                && let Some(n) = io.raw_os_error()
            {
                errno = Some(n);
                break;
            }
            cause = c.source();
        }
        Self {
            step,
            errno,
            code,
            message: e.to_string(),
        }
    }
}
