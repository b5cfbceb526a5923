//! Reading an OCI image layout directory: index → (index →) manifest → config, each blob
//! verified against its digest and size before it is trusted.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::digest::{self, Digest, HashingReader};
use super::error::{ImageError, IoContext};
use super::oci::{Descriptor, ImageConfig, Index, Manifest};

/// The most mm reads into memory for an index, manifest or config.
const JSON_LIMIT: u64 = 4 << 20;

/// An image resolved from a layout: what to unpack and how to run it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub manifest: Descriptor,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// The manifest and config bytes, verified, to keep in the store.
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

/// An OCI image layout directory.
pub struct Layout {
    dir: PathBuf,
    /// What errors name: the directory, or the archive the user gave that it was unpacked
    /// from (never mm's scratch directory).
    shown: PathBuf,
}

impl Layout {
    /// The layout in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ImageError> {
        Self::open_as(dir, dir)
    }

    /// The layout in `dir`, unpacked from `shown` (an `oci-archive:`), which errors name.
    pub fn open_as(dir: &Path, shown: &Path) -> Result<Self, ImageError> {
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            return Err(ImageError::NotALayout(shown.to_owned()));
        }
        Ok(Self {
            dir: dir.to_owned(),
            shown: shown.to_owned(),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Opens a blob for streaming; the caller verifies while reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, ImageError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ImageError::MissingBlob {
                digest: digest.clone(),
                path: self.shown.clone(),
            },
            _ => ImageError::Io { path, source },
        })
    }

    /// Reads, verifies and parses a small JSON blob.
    fn read_json<T: DeserializeOwned>(
        &self,
        what: &'static str,
        desc: &Descriptor,
    ) -> Result<(T, Vec<u8>), ImageError> {
        if desc.size > JSON_LIMIT {
            return Err(ImageError::TooLarge {
                what,
                digest: desc.digest.clone(),
                size: desc.size,
                limit: JSON_LIMIT,
            });
        }
        let file = self.open_blob(&desc.digest)?;
        let mut reader = HashingReader::new(file.take(JSON_LIMIT + 1));
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .at(self.blob_path(&desc.digest))?;
        digest::verify(reader.finish(), &desc.digest, Some(desc.size)).map_err(|mismatch| {
            ImageError::Corrupt {
                what,
                digest: desc.digest.clone(),
                mismatch,
            }
        })?;
        let value = serde_json::from_slice(&bytes).map_err(|e| ImageError::BadJson {
            what,
            digest: desc.digest.clone(),
            why: e.to_string(),
        })?;
        Ok((value, bytes))
    }

    /// The image named `tag` (or the only one, or the one named `latest`) for `arch` on
    /// Linux. `tag` is matched against each image's `org.opencontainers.image.ref.name`,
    /// which podman writes as a whole reference (`localhost/clbox:latest`) and skopeo, umoci
    /// and buildah as whatever they were given.
    pub fn resolve(&self, tag: Option<&str>, arch: &str) -> Result<Resolved, ImageError> {
        let index_path = self.dir.join("index.json");
        let text = std::fs::read(&index_path).at(&index_path)?;
        let index: Index = serde_json::from_slice(&text).map_err(|e| ImageError::BadJson {
            what: "index.json",
            digest: Digest::of(&text),
            why: e.to_string(),
        })?;
        let tags: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.tag().map(str::to_owned))
            .collect();
        let chosen = match tag {
            Some(tag) => index
                .manifests
                .iter()
                .find(|d| d.tag() == Some(tag))
                .ok_or_else(|| ImageError::NoSuchTag {
                    path: self.shown.clone(),
                    tag: tag.to_owned(),
                    available: tags.clone(),
                })?,
            None => match index.manifests.as_slice() {
                [only] => only,
                _ => index
                    .manifests
                    .iter()
                    .find(|d| d.tag() == Some("latest"))
                    .ok_or_else(|| ImageError::WhichImage {
                        path: self.shown.clone(),
                        available: tags.clone(),
                    })?,
            },
        };
        let mut blobs = Vec::new();
        let manifest_desc = if chosen.is_index() {
            let (nested, bytes): (Index, _) = self.read_json("index", chosen)?;
            blobs.push((chosen.digest.clone(), bytes));
            pick_platform(&nested.manifests, arch)?.clone()
        } else {
            chosen.clone()
        };
        let (manifest, bytes): (Manifest, _) = self.read_json("manifest", &manifest_desc)?;
        blobs.push((manifest_desc.digest.clone(), bytes));
        let (config, bytes): (ImageConfig, _) = self.read_json("config", &manifest.config)?;
        blobs.push((manifest.config.digest.clone(), bytes));
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::LayerCount {
                layers: manifest.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        Ok(Resolved {
            manifest: manifest_desc,
            config_digest: manifest.config.digest.clone(),
            config,
            layers: manifest.layers,
            blobs,
        })
    }
}

/// The manifest for Linux on `arch` in a multi-platform index.
pub fn pick_platform<'a>(
    manifests: &'a [Descriptor],
    arch: &str,
) -> Result<&'a Descriptor, ImageError> {
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .ok_or_else(|| ImageError::NoPlatform {
            wanted: format!("linux/{arch}"),
            available: manifests
                .iter()
                .filter_map(|d| {
                    d.platform
                        .as_ref()
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                })
                .collect(),
        })
}
