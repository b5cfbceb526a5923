//! Installing layers into the store, and the one pass that verifies and unpacks a layer
//! blob (used by `import`, by the rootless worker, and by `extract`).

use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;

use super::digest::{self, Digest, HashingReader};
use super::error::ImageError;
use super::oci::{Compression, Descriptor};
use super::opened::LayerJob;
use super::progress::{Counting, Item, Progress};
use super::store::{Installed, Layout, Store};
use super::unpack::{self, Pending, Stats, UnpackMode};

/// Installs layers in `layout`, in parallel, up to one per core; the first error wins.
pub fn install_layers(
    store: &Store,
    layout: Layout,
    jobs: &[LayerJob],
    mode: UnpackMode,
    progress: &Progress,
) -> Result<Vec<Installed>, ImageError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, Installed)>, ImageError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else {
                            return Ok(done);
                        };
                        done.push((i, install_layer(store, layout, job, mode, progress)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an unpack thread panicked"))
            .collect()
    });
    let mut all = Vec::new();
    for result in results {
        all.extend(result?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, installed)| installed).collect())
}

fn install_layer(
    store: &Store,
    layout: Layout,
    job: &LayerJob,
    mode: UnpackMode,
    progress: &Progress,
) -> Result<Installed, ImageError> {
    let item = progress.item(format!("layer {}", job.desc.digest.short()), job.desc.size);
    let installed = store.install_layer(layout, &job.diff_id, |root| {
        let mut pending = Pending::default();
        let stats = unpack_job(job, &item, root, mode, &mut pending)?;
        pending.apply(root)?;
        Ok(stats)
    })?;
    item.done(match installed {
        Installed::AlreadyThere => "already in the store",
        Installed::Unpacked(_) => "verified and unpacked",
    });
    Ok(installed)
}

/// Unpacks `job`'s blob into `root`, verified, counting its bytes on `item`.
pub(super) fn unpack_job(
    job: &LayerJob,
    item: &Item,
    root: &OwnedFd,
    mode: UnpackMode,
    pending: &mut Pending,
) -> Result<Stats, ImageError> {
    let blob = Counting {
        inner: open_blob(job)?,
        item,
    };
    unpack_verified(blob, &job.desc, &job.diff_id, root, mode, pending)
}

fn open_blob(job: &LayerJob) -> Result<std::fs::File, ImageError> {
    std::fs::File::open(&job.blob).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ImageError::MissingBlob {
            digest: job.desc.digest.clone(),
            path: job.blob.clone(),
        },
        _ => ImageError::Io {
            path: job.blob.clone(),
            source,
        },
    })
}

/// Unpacks one layer blob into `root` in a single pass: the compressed stream is hashed
/// against the blob's digest, the decompressed stream against its diff_id. When unpacking
/// fails, the rest of the blob is still hashed: a corrupt blob is reported as such (with
/// both digests), not as the tar or gzip error it caused.
fn unpack_verified(
    blob: impl Read,
    desc: &Descriptor,
    diff_id: &Digest,
    root: &OwnedFd,
    mode: UnpackMode,
    pending: &mut Pending,
) -> Result<Stats, ImageError> {
    let compression =
        Compression::of_media_type(&desc.media_type).ok_or_else(|| ImageError::MediaType {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
        })?;
    let mut compressed = HashingReader::new(BufReader::with_capacity(1 << 20, blob));
    let (unpacked, diff) = {
        let decoder = compression
            .decoder(BufReader::new(&mut compressed))
            .map_err(|e| ImageError::Tar {
                layer: desc.digest.to_string(),
                why: e.to_string(),
            })?;
        let mut uncompressed = HashingReader::new(decoder);
        let unpacked = unpack::unpack(
            &mut uncompressed,
            root,
            &desc.digest.to_string(),
            mode,
            pending,
        );
        let drained = uncompressed.drain();
        (unpacked, drained.map(|()| uncompressed.finish()))
    };
    let rest = compressed.drain();
    digest::verify(compressed.finish(), &desc.digest, Some(desc.size)).map_err(|mismatch| {
        ImageError::Corrupt {
            what: "layer",
            digest: desc.digest.clone(),
            mismatch,
        }
    })?;
    rest.map_err(|e| ImageError::Tar {
        layer: desc.digest.to_string(),
        why: e.to_string(),
    })?;
    let stats = unpacked?;
    let diff = diff.map_err(|e| ImageError::Tar {
        layer: desc.digest.to_string(),
        why: e.to_string(),
    })?;
    digest::verify(diff, diff_id, None).map_err(|mismatch| ImageError::DiffId {
        layer: desc.digest.clone(),
        mismatch,
    })?;
    Ok(stats)
}
