//! What opening an image source gives (its manifest, config and layer jobs, and the
//! scratch directory they may live in), and the helpers the sources share to make it
//! (scratch directories, a written manifest, docker's name normalization).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::ImageError;
use super::error::IoContext;
use super::oci::{self, Descriptor, ImageConfig};
use super::progress::Progress;
use crate::definition::source::RegistryReference;

/// One layer to install: where its blob is, what it must hash to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerJob {
    pub blob: PathBuf,
    pub desc: Descriptor,
    pub diff_id: Digest,
}

/// An image source, opened and checked, ready to install.
pub struct Opened {
    pub manifest: Digest,
    /// The multi-platform index the manifest was picked from, when a registry served one.
    pub index: Option<Digest>,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Bottom first.
    pub layers: Vec<LayerJob>,
    /// Manifests and configs, verified, to keep in the store.
    pub blobs: Vec<(Digest, Vec<u8>)>,
    /// An unpacked archive the layer blobs are read from; removed when this is dropped.
    pub scratch: Option<Scratch>,
}

/// An image archive unpacked: its files, and its links as aliases (never made on disk).
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Link name → the member it points to, both relative to the archive's root.
    links: BTreeMap<PathBuf, PathBuf>,
}

impl Scratch {
    /// A scratch directory without links (a registry's downloads).
    pub fn new(dir: tempfile::TempDir) -> Self {
        Self::with_links(dir, BTreeMap::new())
    }

    /// An unpacked archive whose links are `links` (name → member).
    pub(super) fn with_links(dir: tempfile::TempDir, links: BTreeMap<PathBuf, PathBuf>) -> Self {
        Self { dir, links }
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A member by the name the archive's manifest gives, following the archive's links.
    pub(super) fn member(&self, name: &str) -> Result<PathBuf, ImageError> {
        let mut relative = safe_relative(Path::new(name)).ok_or_else(|| ImageError::Entry {
            layer: "manifest.json".to_owned(),
            entry: name.to_owned(),
            why: "not a plain relative name inside the archive".to_owned(),
        })?;
        for _ in 0..8 {
            match self.links.get(&relative) {
                Some(target) => relative = target.clone(),
                None => break,
            }
        }
        Ok(self.path().join(relative))
    }
}

/// How to open a source.
pub struct Options<'a> {
    pub arch: &'a str,
    /// Where archives are unpacked and registry layers downloaded (then removed).
    pub scratch_in: &'a Path,
    /// Registries: plain HTTP is used only when this is false (or registries.conf says
    /// `insecure = true`).
    pub tls_verify: bool,
    /// Registries: `--authfile FILE`, the only auth file then read.
    pub authfile: Option<&'a Path>,
    /// Layers (by diff_id) the destination has already: not downloaded again.
    pub have: &'a dyn Fn(&Digest) -> bool,
    pub progress: &'a Progress,
}

/// `path` as a relative path of normal components only, `..` resolved lexically; `None`
/// if it is absolute, climbs above its root, or is empty.
pub(super) fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// A reference as docker normalizes it, to compare a user's with an archive's `RepoTags`
/// (docker writes `busybox:latest` for `docker.io/library/busybox:latest`); `:latest` when
/// it has no tag. What does not parse as a reference is compared as written.
pub(super) fn normalized(reference: &str) -> String {
    match RegistryReference::parse(reference) {
        Ok(mut parsed) => {
            if parsed.tag.is_none() && parsed.digest.is_none() {
                parsed.tag = Some("latest".to_owned());
            }
            parsed.to_string()
        }
        Err(_) => reference.to_owned(),
    }
}

/// Writes the OCI manifest a source did not come with.
pub(super) fn with_manifest(
    config_digest: Digest,
    config_bytes: Vec<u8>,
    config: ImageConfig,
    layers: Vec<LayerJob>,
    scratch: Option<Scratch>,
) -> Opened {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers.iter().map(|l| serde_json::to_value(&l.desc).expect("a descriptor serializes")).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let manifest = Digest::of(&manifest_bytes);
    Opened {
        manifest: manifest.clone(),
        index: None,
        config_digest: config_digest.clone(),
        config,
        layers,
        blobs: vec![(manifest, manifest_bytes), (config_digest, config_bytes)],
        scratch,
    }
}

/// A new scratch directory in `parent` (made if missing), removed when dropped.
pub(super) fn new_scratch(parent: &Path, prefix: &str) -> Result<tempfile::TempDir, ImageError> {
    std::fs::create_dir_all(parent).at(parent)?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .at(parent)
}
