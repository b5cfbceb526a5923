//! `mm commit`: a machine's writable layer becomes a layer of the store, and a new image
//! record (the machine's image's layers and config, plus that layer) that definitions
//! name as `mm:NAME`.
//!
//! The layer is packed (`pack.rs`: whiteouts as `.wh.` entries, owners as the machine sees
//! them, both digests computed while writing) into the store's `tmp/`, renamed into
//! `blobs/`, and then installed as any imported layer is: unpacked and verified against
//! the digests the packer computed. Rootless, packing and installing run in the unpack
//! worker, whose user namespace can read the machine's files.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::digest::Digest;
use super::error::{ImageError, IoContext};
use super::install::install_layers;
use super::oci::{self, Compression, Descriptor, ImageConfig};
use super::opened::LayerJob;
use super::pack::{OverlayXattrs, Owners, Packed, pack};
use super::progress::Progress;
use super::store::{ImageRecord, LayerRef, Layout, Store};
use super::unpack::UnpackMode;
use super::worker;
use crate::host::Host;
use crate::idmap::IdMapEntry;

/// The transport of images made by `mm commit`: `mm:NAME` in a definition's `source`.
pub const STORE_TRANSPORT: &str = "mm";

/// What to commit: a stopped machine's writable layer on top of its image.
pub struct Commit<'a> {
    /// The record of the image the machine runs.
    pub base: &'a ImageRecord,
    /// The machine's writable (upper) directory.
    pub upper: &'a Path,
    /// The machine's uid and gid maps (inside → host).
    pub map: (&'a [IdMapEntry], &'a [IdMapEntry]),
    /// The record's name, `mm:NAME`.
    pub name: String,
    /// Replace an image of that name.
    pub force: bool,
    /// Why it was made, for the config's history.
    pub created_by: String,
}

/// Commits, returning the new record and what packing found.
pub fn commit(
    host: &Host,
    store: &Store,
    request: &Commit<'_>,
) -> Result<(ImageRecord, Packed), ImageError> {
    store.create()?;
    if !request.force && store.image(&request.name)?.is_some() {
        return Err(ImageError::Exists(request.name.clone()));
    }
    let reader = if host.is_root() {
        let identity = Owners::identity();
        (identity.uids, identity.gids)
    } else {
        worker::maps(host, Layout::Default)
    };
    let owners = Owners::through((&reader.0, &reader.1), request.map);
    let tmp = store.root().join("tmp");
    let (packed, packed_at) = pack_dir(host, &tmp, request.upper, &owners)?;
    let blob = store.blob_path(&packed.digest);
    std::fs::rename(&packed_at, &blob).at(&blob)?;
    let job = LayerJob {
        blob: blob.clone(),
        desc: Descriptor {
            media_type: Compression::Gzip.media_type().to_owned(),
            digest: packed.digest.clone(),
            size: packed.size,
            annotations: Default::default(),
            platform: None,
        },
        diff_id: packed.diff_id.clone(),
    };
    install(host, store, job)?;

    let (config_digest, config_bytes) = config(store, request.base, &packed, &request.created_by)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| ImageError::BadJson {
            what: "config",
            digest: config_digest.clone(),
            why: e.to_string(),
        })?;
    store.put_blob(&config_digest, &config_bytes)?;
    let mut layers = request.base.layers.clone();
    layers.push(LayerRef {
        diff_id: packed.diff_id.clone(),
        blob: packed.digest.clone(),
        blob_size: packed.size,
    });
    let manifest = manifest(store, request.base, &layers, &config_digest, &config_bytes);
    let manifest_digest = Digest::of(&manifest);
    store.put_blob(&manifest_digest, &manifest)?;
    let record = ImageRecord {
        name: request.name.clone(),
        manifest: manifest_digest,
        config_digest,
        config,
        layers,
    };
    store.put_image(&record)?;
    Ok((record, packed))
}

/// Packs `dir` into a new blob file in `into` (rootless: by the worker, in its user
/// namespace): the digests, and the file.
pub(super) fn pack_dir(
    host: &Host,
    into: &Path,
    dir: &Path,
    owners: &Owners,
) -> Result<(Packed, PathBuf), ImageError> {
    let tmp = into.join(format!("pack.{}.{}", std::process::id(), unique()));
    let packed = if host.is_root() {
        let file = std::fs::File::create_new(&tmp).at(&tmp)?;
        pack(
            dir,
            std::io::BufWriter::new(file),
            owners,
            OverlayXattrs::Trusted,
        )
        .map_err(ImageError::from)
    } else {
        worker::pack(
            host,
            &worker::Job::Pack {
                dir: dir.to_owned(),
                out: tmp.clone(),
                owners: owners.clone(),
                overlay: OverlayXattrs::User,
            },
        )
    };
    match packed {
        Ok(packed) => Ok((packed, tmp)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A name no other pack of this process uses.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn install(host: &Host, store: &Store, job: LayerJob) -> Result<(), ImageError> {
    if host.is_root() {
        install_layers(
            store,
            Layout::Default,
            &[job],
            UnpackMode::ROOT,
            &Progress::new(),
        )?;
    } else {
        worker::run(
            host,
            &worker::Job::Install {
                store: store.root().to_owned(),
                layout: Layout::Default,
                layers: vec![job],
            },
        )?;
    }
    Ok(())
}

/// The base image's config as it was written (every field kept), with the new layer's
/// diff_id, and a history entry when the base has a history.
fn config(
    store: &Store,
    base: &ImageRecord,
    packed: &Packed,
    created_by: &str,
) -> Result<(Digest, Vec<u8>), ImageError> {
    let diff_ids: Vec<Digest> = base
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .chain([packed.diff_id.clone()])
        .collect();
    let mut object = store.config_with_layers(base, &diff_ids)?;
    let now = rfc3339(std::time::SystemTime::now());
    object.insert("created".to_owned(), Value::String(now.clone()));
    if let Some(Value::Array(history)) = object.get_mut("history") {
        history.push(json!({"created": now, "created_by": created_by, "comment": "mm commit"}));
    }
    let bytes = serde_json::to_vec(&object).map_err(|e| ImageError::BadJson {
        what: "config",
        digest: base.config_digest.clone(),
        why: e.to_string(),
    })?;
    Ok((Digest::of(&bytes), bytes))
}

/// An OCI manifest for `layers`: the base manifest's descriptors where the store has it
/// (their media types), gzip layers otherwise.
pub(super) fn manifest(
    store: &Store,
    base: &ImageRecord,
    layers: &[LayerRef],
    config_digest: &Digest,
    config: &[u8],
) -> Vec<u8> {
    let base_layers: Vec<Value> = std::fs::read(store.blob_path(&base.manifest))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|m| m.get("layers").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let media_type = |layer: &LayerRef| {
        base_layers
            .iter()
            .find(|d| d.get("digest").and_then(Value::as_str) == Some(&layer.blob.to_string()))
            .and_then(|d| d.get("mediaType").and_then(Value::as_str))
            .map(oci_layer_type)
            .unwrap_or(Compression::Gzip.media_type())
            .to_owned()
    };
    let descriptors: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": media_type(l), "digest": l.blob.to_string(), "size": l.blob_size}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": descriptors,
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// The OCI media type for a layer of `media_type` (Docker's become OCI's).
fn oci_layer_type(media_type: &str) -> &'static str {
    Compression::of_media_type(media_type)
        .unwrap_or(Compression::Gzip)
        .media_type()
}

/// `2026-12-01T10:00:00Z`: UTC, to the second.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        let at = |secs| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
