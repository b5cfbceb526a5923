//! Each kind of image source, opened into the same shape: a verified config, the layers
//! to install (blob, digest, diff_id), and the small blobs to keep.
//!
//! Archives (`oci-archive:`, `docker-archive:`) are unpacked to a scratch directory first;
//! only plain files and directories with safe names come out of them. Sources that carry
//! no manifest (`docker-archive:` of the classic kind, `tar:`) get one written for them,
//! as skopeo does when it copies such an image into an OCI layout.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::digest::{Digest, HashingReader};
use super::error::{ImageError, IoContext};
use super::layout::Layout;
use super::oci::{Compression, Descriptor, ImageConfig, RootFs};
use super::opened::{
    LayerJob, Opened, Options, Scratch, new_scratch, normalized, safe_relative, with_manifest,
};
use crate::definition::ImageSource;
use crate::definition::source::ArchiveImage;

/// Opens `source`: archives are unpacked and registry layers downloaded into a scratch
/// directory, removed when the returned value is dropped.
pub fn open(source: &ImageSource, options: &Options<'_>) -> Result<Opened, ImageError> {
    let (arch, scratch_in) = (options.arch, options.scratch_in);
    match source {
        ImageSource::Oci { path, tag } => {
            from_layout(&Layout::open(path)?, tag.as_deref(), arch, None)
        }
        ImageSource::Dir { path } => {
            let layout = Layout::open_dir(path)?;
            let resolved = layout.resolve_dir(arch)?;
            Ok(from_resolved(&layout, resolved, None))
        }
        ImageSource::OciArchive { path, tag } => {
            let scratch = unpack_archive(path, scratch_in)?;
            from_layout(
                &Layout::open_as(scratch.path(), path)?,
                tag.as_deref(),
                arch,
                Some(scratch),
            )
        }
        ImageSource::DockerArchive { path, image } => {
            let scratch = unpack_archive(path, scratch_in)?;
            if image.is_none() && scratch.path().join("oci-layout").is_file() {
                // Docker 25 and later save an OCI layout (with a manifest.json beside it,
                // which names the images when one is chosen).
                return from_layout(
                    &Layout::open_as(scratch.path(), path)?,
                    None,
                    arch,
                    Some(scratch),
                );
            }
            from_docker_save(scratch, path, image.as_ref())
        }
        ImageSource::ContainersStorage { store, image } => {
            super::containers_storage::open(store.as_ref(), image, options)
        }
        ImageSource::Tar { path } => from_rootfs_tarball(path, arch),
        ImageSource::Docker(reference) => {
            super::registry::pull(reference, options, new_scratch(scratch_in, "pull.")?)
        }
        ImageSource::Name(name) => super::registry::pull_name(name, options),
        ImageSource::Rootfs { .. } => Err(ImageError::InPlace),
        ImageSource::Store { name } => Err(ImageError::NotInStore(format!(
            "mm:{name} (such images are made by `mm commit MACHINE --tag {name}`)"
        ))),
    }
}

fn from_layout(
    layout: &Layout,
    tag: Option<&str>,
    arch: &str,
    scratch: Option<Scratch>,
) -> Result<Opened, ImageError> {
    let resolved = layout.resolve(tag, arch)?;
    Ok(from_resolved(layout, resolved, scratch))
}

/// What a layout resolved to, with its layers' blobs in `layout`.
fn from_resolved(
    layout: &Layout,
    resolved: super::layout::Resolved,
    scratch: Option<Scratch>,
) -> Opened {
    let layers = resolved
        .layers
        .iter()
        .zip(&resolved.config.rootfs.diff_ids)
        .map(|(desc, diff_id)| LayerJob {
            blob: layout.blob_path(&desc.digest),
            desc: desc.clone(),
            diff_id: diff_id.clone(),
        })
        .collect();
    Opened {
        manifest: resolved.manifest.digest,
        index: None,
        config_digest: resolved.config_digest,
        config: resolved.config,
        layers,
        blobs: resolved.blobs,
        scratch,
    }
}

/// The classic `docker save` format: manifest.json names a config and layer tarballs, for
/// one image or (`podman save -m`) several, of which `image` chooses; `archive` is the
/// user's file, which errors name.
fn from_docker_save(
    scratch: Scratch,
    archive: &Path,
    image: Option<&ArchiveImage>,
) -> Result<Opened, ImageError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    let dir = scratch.path();
    let manifest_path = dir.join("manifest.json");
    let text =
        std::fs::read(&manifest_path).map_err(|_| ImageError::NotALayout(archive.to_owned()))?;
    let entries: Vec<Entry> = serde_json::from_slice(&text).map_err(|e| ImageError::BadJson {
        what: "manifest.json",
        digest: Digest::of(&text),
        why: e.to_string(),
    })?;
    let available = || -> Vec<String> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| match e.repo_tags.as_slice() {
                [] => format!("@{i}"),
                tags => format!("@{i} {}", tags.join(" ")),
            })
            .collect()
    };
    let entry = match (image, entries.as_slice()) {
        (None, [only]) => only,
        (None, _) => {
            return Err(ImageError::WhichImage {
                path: archive.to_owned(),
                available: available(),
            });
        }
        (Some(ArchiveImage::Index(index)), _) => {
            entries.get(*index).ok_or_else(|| ImageError::NoSuchIndex {
                path: archive.to_owned(),
                index: *index,
                count: entries.len(),
                available: available(),
            })?
        }
        (Some(ArchiveImage::Reference(wanted)), _) => {
            let wanted = normalized(wanted);
            entries
                .iter()
                .find(|e| e.repo_tags.iter().any(|t| normalized(t) == wanted))
                .ok_or_else(|| ImageError::NoSuchTag {
                    path: archive.to_owned(),
                    tag: wanted.clone(),
                    available: entries.iter().flat_map(|e| e.repo_tags.clone()).collect(),
                })?
        }
    };
    let config_path = scratch.member(&entry.config)?;
    let config_bytes = std::fs::read(&config_path).at(&config_path)?;
    let config_digest = Digest::of(&config_bytes);
    // Docker names the config after its digest; a mismatch is a corrupt archive.
    let stem = entry
        .config
        .trim_start_matches("blobs/sha256/")
        .trim_end_matches(".json");
    if stem.len() == 64 && stem != config_digest.hex() {
        let expected = Digest::parse(&format!("sha256:{stem}"))
            .map_err(|e| ImageError::NotALayout(PathBuf::from(e.0)))?;
        return Err(ImageError::Corrupt {
            what: "config",
            digest: expected.clone(),
            mismatch: super::digest::Mismatch::Digest {
                expected,
                actual: config_digest,
            },
        });
    }
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| ImageError::BadJson {
            what: "config",
            digest: config_digest.clone(),
            why: e.to_string(),
        })?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(ImageError::LayerCount {
            layers: entry.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let blob = scratch.member(name)?;
        let (desc, _) = describe(&blob)?;
        layers.push(LayerJob {
            blob,
            desc,
            diff_id: diff_id.clone(),
        });
    }
    Ok(with_manifest(
        config_digest,
        config_bytes,
        config,
        layers,
        Some(scratch),
    ))
}

/// A rootfs tarball (plain, gzip or zstd) as a one-layer image with a written config.
fn from_rootfs_tarball(path: &Path, arch: &str) -> Result<Opened, ImageError> {
    let (desc, compression) = describe(path)?;
    let diff_id = diff_id_of(path, compression)?;
    let config = ImageConfig {
        architecture: arch.to_owned(),
        os: "linux".to_owned(),
        config: Default::default(),
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids: vec![diff_id.clone()],
        },
    };
    let config_bytes = serde_json::to_vec(&config).expect("a config serializes");
    let layers = vec![LayerJob {
        blob: path.to_owned(),
        desc,
        diff_id,
    }];
    Ok(with_manifest(
        Digest::of(&config_bytes),
        config_bytes,
        config,
        layers,
        None,
    ))
}

/// A layer descriptor for a tarball file (digest, size, media type from its first bytes),
/// and its compression.
fn describe(path: &Path) -> Result<(Descriptor, Compression), ImageError> {
    let mut file = File::open(path).at(path)?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head).at(path)?;
    let compression = Compression::sniff(&head[..n]);
    let mut reader = HashingReader::new(head[..n].chain(file));
    reader.drain().at(path)?;
    let (digest, size) = reader.finish();
    let media_type = compression.media_type().to_owned();
    let desc = Descriptor {
        media_type,
        digest,
        size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    Ok((desc, compression))
}

/// The sha256 of a tarball's uncompressed content: a first pass, as a rootfs tarball comes
/// with no diff_id to check against while unpacking.
fn diff_id_of(path: &Path, compression: Compression) -> Result<Digest, ImageError> {
    let file = BufReader::with_capacity(1 << 20, File::open(path).at(path)?);
    let mut reader = HashingReader::new(compression.decoder(file).at(path)?);
    reader.drain().at(path)?;
    Ok(reader.finish().0)
}

/// Unpacks an image archive (plain, gzip or zstd tar) into a new scratch directory. Only
/// directories and regular files are written, under plain relative names; links become
/// aliases that must point inside the archive; anything else is refused.
fn unpack_archive(archive: &Path, scratch_in: &Path) -> Result<Scratch, ImageError> {
    let dir = new_scratch(scratch_in, "archive.")?;
    let mut links = BTreeMap::new();
    let mut file = File::open(archive).at(archive)?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head).at(archive)?;
    let stream = BufReader::with_capacity(1 << 20, head[..n].chain(file));
    let stream = Compression::sniff(&head[..n]).decoder(stream).at(archive)?;
    let refuse = |entry: String, why: &str| ImageError::Entry {
        layer: archive.display().to_string(),
        entry,
        why: why.to_owned(),
    };
    let broken = |e: std::io::Error| ImageError::Tar {
        layer: archive.display().to_string(),
        why: e.to_string(),
    };
    let mut tar = tar::Archive::new(stream);
    for entry in tar.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let Some(relative) = safe_relative(Path::new(&name)) else {
            if kind.is_dir() && name.trim_start_matches("./").trim_matches('/').is_empty() {
                continue; // the archive's own `./`
            }
            return Err(refuse(name, "not a plain relative name"));
        };
        let path = dir.path().join(&relative);
        match kind {
            tar::EntryType::Directory => std::fs::create_dir_all(&path).at(&path)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).at(parent)?;
                }
                let mut out = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .at(&path)?;
                std::io::copy(&mut entry, &mut out).at(&path)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| PathBuf::from(String::from_utf8_lossy(&t).into_owned()));
                let base = if kind == tar::EntryType::Symlink {
                    relative.parent().unwrap_or(Path::new(""))
                } else {
                    Path::new("")
                };
                let target = target
                    .and_then(|t| safe_relative(&base.join(t)))
                    .ok_or_else(|| {
                        refuse(name.clone(), "a link that points outside the archive")
                    })?;
                links.insert(relative, target);
            }
            _ => {
                return Err(refuse(
                    name,
                    "an image archive holds only files, directories and links",
                ));
            }
        }
    }
    Ok(Scratch::with_links(dir, links))
}
