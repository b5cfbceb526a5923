//! What opening an image source gives (its manifest, config and layer jobs, and the
//! scratch directory they may live in), shared by the local sources and the registry.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::ImageError;
use super::oci::{Descriptor, ImageConfig};
use super::progress::Progress;

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
