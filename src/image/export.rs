//! `mm image export`: an image of the store written as an OCI image layout (`oci:DIR[:TAG]`),
//! a tarball of one (`oci-archive:FILE[:TAG]`) or a `docker save` tarball
//! (`docker-archive:FILE`), as podman, skopeo and docker read them.
//!
//! The store keeps committed layers' blobs as they were written, and exports them
//! byte for byte. Imported layers are kept unpacked only: they are packed again from the
//! store (`pack.rs`, owners as the machine sees them), which gives a layer with the same
//! files and new digests; the exported config lists the diff_ids of what it holds.
//! Everything is staged in the store's `tmp/` and moved into place at the end.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::commit::pack_dir;
use super::digest::Digest;
use super::error::{ImageError, IoContext};
use super::oci::{self, Compression, REF_NAME};
use super::pack::Owners;
use super::store::{ImageRecord, Store};
use crate::definition::ImageSource;
use crate::host::Host;

/// Where an export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Oci { dir: PathBuf, tag: String },
    OciArchive { file: PathBuf, tag: String },
    DockerArchive { file: PathBuf },
}

impl Target {
    /// From `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or `docker-archive:FILE` (relative
    /// paths from `base`); the tag defaults to `latest`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ImageError> {
        let bad = |why: String| ImageError::Export {
            target: text.to_owned(),
            why,
        };
        let tag = |t: Option<String>| t.unwrap_or_else(|| "latest".to_owned());
        match ImageSource::parse(text, base).map_err(|e| bad(e.to_string()))? {
            ImageSource::Oci { path, tag: t } => Ok(Self::Oci {
                dir: path,
                tag: tag(t),
            }),
            ImageSource::OciArchive { path, tag: t } => Ok(Self::OciArchive {
                file: path,
                tag: tag(t),
            }),
            ImageSource::DockerArchive { path, image: None } => {
                Ok(Self::DockerArchive { file: path })
            }
            _ => Err(bad(
                "mm writes oci:DIR[:TAG], oci-archive:FILE[:TAG] and docker-archive:FILE"
                    .to_owned(),
            )),
        }
    }
}

/// One blob of the export: its digest, size, media type and where its bytes are.
struct Blob {
    digest: Digest,
    size: u64,
    media_type: String,
    path: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exported {
    pub manifest: Digest,
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    /// Layers packed again from the store (imported ones, whose blobs it does not keep).
    pub repacked: usize,
}

/// Writes `record` to `target`.
pub fn export(
    host: &Host,
    store: &Store,
    record: &ImageRecord,
    target: &Target,
) -> Result<Exported, ImageError> {
    let shown = match target {
        Target::Oci { dir, .. } => dir,
        Target::OciArchive { file, .. } | Target::DockerArchive { file } => file,
    };
    if !matches!(target, Target::Oci { .. }) && shown.symlink_metadata().is_ok() {
        return Err(ImageError::Export {
            target: shown.display().to_string(),
            why: "it exists; remove it first".to_owned(),
        });
    }
    store.create()?;
    let tmp = store.root().join("tmp");
    let stage = tempfile::Builder::new()
        .prefix("export.")
        .tempdir_in(&tmp)
        .at(&tmp)?;
    let (layers, diff_ids, repacked) = layer_blobs(host, store, record, stage.path())?;
    let config = config(store, record, &diff_ids)?;
    let config_blob = stage.path().join("config.json");
    std::fs::write(&config_blob, &config).at(&config_blob)?;
    let config = Blob {
        digest: Digest::of(&config),
        size: config.len() as u64,
        media_type: "application/vnd.oci.image.config.v1+json".to_owned(),
        path: config_blob,
    };
    let exported = Exported {
        manifest: Digest::of(&manifest(&config, &layers)),
        layers: layers.iter().map(|l| l.digest.clone()).collect(),
        diff_ids: diff_ids.clone(),
        repacked,
    };
    match target {
        Target::Oci { dir, tag } => write_layout(dir, tag, &config, &layers)?,
        Target::OciArchive { file, tag } => {
            let layout = stage.path().join("layout");
            write_layout(&layout, tag, &config, &layers)?;
            archive(file, &stage.path().join("archive.tar"), |tar| {
                for name in ["oci-layout", "index.json"] {
                    tar.append_path_with_name(layout.join(name), name)?;
                }
                let digests = std::iter::once(&exported.manifest)
                    .chain(std::iter::once(&config.digest))
                    .chain(layers.iter().map(|l| &l.digest));
                for digest in digests {
                    let name = format!("blobs/sha256/{}", digest.hex());
                    tar.append_path_with_name(layout.join(&name), &name)?;
                }
                Ok(())
            })?;
        }
        Target::DockerArchive { file } => {
            let tags: Vec<String> = record
                .name
                .strip_prefix("mm:")
                .map(|n| vec![format!("localhost/{n}:latest")])
                .unwrap_or_default();
            let layer_names: Vec<String> = layers
                .iter()
                .map(|l| format!("{}.tar", l.digest.hex()))
                .collect();
            let config_name = format!("{}.json", config.digest.hex());
            let manifest =
                json!([{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]);
            let manifest_file = stage.path().join("manifest.json");
            std::fs::write(&manifest_file, manifest.to_string()).at(&manifest_file)?;
            archive(file, &stage.path().join("archive.tar"), |tar| {
                tar.append_path_with_name(&manifest_file, "manifest.json")?;
                tar.append_path_with_name(&config.path, &config_name)?;
                for (blob, name) in layers.iter().zip(&layer_names) {
                    tar.append_path_with_name(&blob.path, name)?;
                }
                Ok(())
            })?;
        }
    }
    Ok(exported)
}

/// Each layer's blob: the store's when it keeps it, else packed again into `stage`.
fn layer_blobs(
    host: &Host,
    store: &Store,
    record: &ImageRecord,
    stage: &Path,
) -> Result<(Vec<Blob>, Vec<Digest>, usize), ImageError> {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut repacked = 0;
    for layer in &record.layers {
        let kept = store.blob_path(&layer.blob);
        if kept.is_file() {
            let mut head = [0u8; 4];
            let n = std::fs::File::open(&kept)
                .and_then(|mut f| f.read(&mut head))
                .at(&kept)?;
            blobs.push(Blob {
                digest: layer.blob.clone(),
                size: layer.blob_size,
                media_type: Compression::sniff(&head[..n]).media_type().to_owned(),
                path: kept,
            });
            diff_ids.push(layer.diff_id.clone());
            continue;
        }
        // The store holds its layers as the machine sees them (root: unshifted; rootless:
        // the worker's map is the store's), so the owners are written as seen.
        let dir = store.layer_dir(&layer.diff_id);
        let (packed, path) = pack_dir(host, stage, &dir, &Owners::identity())?;
        repacked += 1;
        blobs.push(Blob {
            digest: packed.digest,
            size: packed.size,
            media_type: Compression::Gzip.media_type().to_owned(),
            path,
        });
        diff_ids.push(packed.diff_id);
    }
    Ok((blobs, diff_ids, repacked))
}

/// The stored config, every field kept, with the diff_ids of the exported layers.
fn config(store: &Store, record: &ImageRecord, diff_ids: &[Digest]) -> Result<Vec<u8>, ImageError> {
    let object = store.config_with_layers(record, diff_ids)?;
    serde_json::to_vec(&object).map_err(|e| ImageError::BadJson {
        what: "config",
        digest: record.config_digest.clone(),
        why: e.to_string(),
    })
}

fn descriptor(blob: &Blob) -> Value {
    json!({"mediaType": blob.media_type, "digest": blob.digest.to_string(), "size": blob.size})
}

fn manifest(config: &Blob, layers: &[Blob]) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": descriptor(config),
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    });
    manifest.to_string().into_bytes()
}

/// An OCI image layout at `dir` (made if missing; an existing one keeps its other images,
/// and an image tagged `tag` there is replaced).
fn write_layout(dir: &Path, tag: &str, config: &Blob, layers: &[Blob]) -> Result<(), ImageError> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).at(&blobs)?;
    let layout = dir.join("oci-layout");
    std::fs::write(&layout, r#"{"imageLayoutVersion":"1.0.0"}"#).at(&layout)?;
    for blob in std::iter::once(config).chain(layers) {
        let to = blobs.join(blob.digest.hex());
        if !to.exists() {
            let partial = blobs.join(format!(".{}.partial", blob.digest.hex()));
            std::fs::copy(&blob.path, &partial).at(&partial)?;
            std::fs::rename(&partial, &to).at(&to)?;
        }
    }
    let manifest = manifest(config, layers);
    let manifest_digest = Digest::of(&manifest);
    let manifest_blob = blobs.join(manifest_digest.hex());
    std::fs::write(&manifest_blob, &manifest).at(&manifest_blob)?;
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|i| i.get("manifests").and_then(Value::as_array).cloned())
            .ok_or_else(|| ImageError::Export {
                target: dir.display().to_string(),
                why: "its index.json is not an OCI index".to_owned(),
            })?,
        Err(_) => Vec::new(),
    };
    manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    manifests.push(json!({
        "mediaType": oci::MANIFEST,
        "digest": manifest_digest.to_string(),
        "size": manifest.len(),
        "annotations": {REF_NAME: tag},
    }));
    let index = json!({"schemaVersion": 2, "mediaType": oci::INDEX, "manifests": manifests});
    crate::state::write_atomically(&index_path, index.to_string().as_bytes()).at(&index_path)
}

/// A tar written at `partial` by `fill`, then renamed to `file` (which must not exist).
fn archive(
    file: &Path,
    partial: &Path,
    fill: impl FnOnce(&mut tar::Builder<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), ImageError> {
    let out = std::fs::File::create_new(partial).at(partial)?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    fill(&mut tar)
        .and_then(|()| tar.into_inner())
        .and_then(|f| f.sync_all())
        .at(file)?;
    let no_replace = |from: &Path| {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            from,
            rustix::fs::CWD,
            file,
            rustix::fs::RenameFlags::NOREPLACE,
        )
    };
    match no_replace(partial) {
        Ok(()) => {}
        // Across file systems (the store's tmp/ and the target): a copy beside it, renamed.
        Err(rustix::io::Errno::XDEV) => {
            let beside = file.with_file_name(format!(
                ".{}.partial",
                file.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::copy(partial, &beside).at(&beside)?;
            no_replace(&beside).map_err(|e| {
                let _ = std::fs::remove_file(&beside);
                ImageError::Io {
                    path: file.to_owned(),
                    source: e.into(),
                }
            })?;
        }
        Err(e) => {
            return Err(ImageError::Io {
                path: file.to_owned(),
                source: e.into(),
            });
        }
    }
    Ok(())
}
