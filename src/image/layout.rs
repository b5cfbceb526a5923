//! Reading an OCI image layout directory (index → (index →) manifest → config) and
//! skopeo's `dir:` layout (manifest.json → config, blobs named by their digest's hex), each
//! blob verified against its digest and size before it is trusted.

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

/// The first line of a skopeo `dir:` layout's `version` file, before the version number.
const DIR_VERSION: &str = "Directory Transport Version: 1.";

/// An OCI image layout directory, or a skopeo `dir:` one.
pub struct Layout {
    dir: PathBuf,
    /// Where blobs are, each named by its digest's hex: `blobs/sha256` in an OCI layout,
    /// the directory itself in a `dir:` one.
    blobs: PathBuf,
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
            blobs: dir.join("blobs/sha256"),
            shown: shown.to_owned(),
        })
    }

    /// The skopeo `dir:` layout in `dir` (containers-transports(5)): a `version` file,
    /// `manifest.json`, and the blobs beside them.
    pub fn open_dir(dir: &Path) -> Result<Self, ImageError> {
        let not = || ImageError::NotADir(dir.to_owned());
        let version = dir.join("version");
        let mut head = Vec::new();
        File::open(&version)
            .map_err(|_| not())?
            .take(64)
            .read_to_end(&mut head)
            .at(&version)?;
        if !head.starts_with(DIR_VERSION.as_bytes()) || !dir.join("manifest.json").is_file() {
            return Err(not());
        }
        Ok(Self {
            dir: dir.to_owned(),
            blobs: dir.to_owned(),
            shown: dir.to_owned(),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
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
        let path = self.blob_path(&desc.digest);
        self.read_json_at(what, desc, &path)
    }

    /// Reads, verifies and parses a small JSON blob at `path`, which `desc` describes.
    fn read_json_at<T: DeserializeOwned>(
        &self,
        what: &'static str,
        desc: &Descriptor,
        path: &Path,
    ) -> Result<(T, Vec<u8>), ImageError> {
        if desc.size > JSON_LIMIT {
            return Err(ImageError::TooLarge {
                what,
                digest: desc.digest.clone(),
                size: desc.size,
                limit: JSON_LIMIT,
            });
        }
        let file = File::open(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ImageError::MissingBlob {
                digest: desc.digest.clone(),
                path: self.shown.clone(),
            },
            _ => ImageError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
        let mut reader = HashingReader::new(file.take(JSON_LIMIT + 1));
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).at(path)?;
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
        self.resolve_manifest(manifest_desc, manifest, blobs)
    }

    /// The image of a `dir:` layout (opened with [`Layout::open_dir`]) for `arch` on Linux:
    /// its manifest.json, or, when skopeo copied a whole index there (`--all`), the
    /// platform's manifest from `HEX.manifest.json`.
    pub fn resolve_dir(&self, arch: &str) -> Result<Resolved, ImageError> {
        let path = self.dir.join("manifest.json");
        let mut bytes = Vec::new();
        File::open(&path)
            .at(&path)?
            .take(JSON_LIMIT + 1)
            .read_to_end(&mut bytes)
            .at(&path)?;
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        if size > JSON_LIMIT {
            return Err(ImageError::TooLarge {
                what: "manifest",
                digest,
                size,
                limit: JSON_LIMIT,
            });
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Kind {
            #[serde(default)]
            media_type: String,
            manifests: Option<Vec<Descriptor>>,
        }
        let bad = |e: serde_json::Error| ImageError::BadJson {
            what: "manifest",
            digest: digest.clone(),
            why: e.to_string(),
        };
        let kind: Kind = serde_json::from_slice(&bytes).map_err(bad)?;
        let mut blobs = Vec::new();
        let (manifest_desc, manifest, bytes) = match kind.manifests {
            Some(manifests) => {
                blobs.push((digest, bytes));
                let chosen = pick_platform(&manifests, arch)?.clone();
                let path = self
                    .dir
                    .join(format!("{}.manifest.json", chosen.digest.hex()));
                let (manifest, bytes): (Manifest, _) =
                    self.read_json_at("manifest", &chosen, &path)?;
                (chosen, manifest, bytes)
            }
            None => {
                let manifest: Manifest = serde_json::from_slice(&bytes).map_err(bad)?;
                let media_type = match kind.media_type.as_str() {
                    "" => super::oci::MANIFEST.to_owned(),
                    other => other.to_owned(),
                };
                let desc = Descriptor {
                    media_type,
                    digest,
                    size,
                    annotations: Default::default(),
                    platform: None,
                };
                (desc, manifest, bytes)
            }
        };
        blobs.push((manifest_desc.digest.clone(), bytes));
        self.resolve_manifest(manifest_desc, manifest, blobs)
    }

    /// The config and layers of a manifest, read and verified.
    fn resolve_manifest(
        &self,
        manifest_desc: Descriptor,
        manifest: Manifest,
        mut blobs: Vec<(Digest, Vec<u8>)>,
    ) -> Result<Resolved, ImageError> {
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
