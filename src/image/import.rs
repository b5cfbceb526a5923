//! Bringing an image into the store (`import`) or onto disk as one tree (`extract`).

use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::{self, Digest, HashingReader};
use super::error::{ImageError, IoContext};
use super::oci::{Compression, Descriptor};
use super::progress::{Counting, Progress};
use super::sources::{self, Opened};
use super::store::{ImageRecord, Installed, LayerRef, Store};
use super::unpack::{self, Pending, Stats, UnpackMode};
use super::worker;
use crate::definition::ImageSource;
use crate::host::Host;

/// What to import, for which host.
pub struct Request<'a> {
    pub source: &'a ImageSource,
    /// Refuse any manifest but this one.
    pub pin: Option<&'a Digest>,
    /// The architecture to pick from multi-platform images, and whether to unpack as root
    /// or in a user namespace on the user's subordinate ids.
    pub host: &'a Host,
    /// Registries: plain HTTP only when false (`--tls-verify=false`).
    pub tls_verify: bool,
}

/// One layer to install: where its blob is, what it must hash to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerJob {
    pub blob: PathBuf,
    pub desc: Descriptor,
    pub diff_id: Digest,
}

/// Opens the request's source, and checks the digest pin.
fn open(
    request: &Request<'_>,
    scratch_in: &Path,
    have: &dyn Fn(&Digest) -> bool,
    progress: &Progress,
) -> Result<Opened, ImageError> {
    let options = sources::Options {
        arch: &request.host.arch,
        scratch_in,
        tls_verify: request.tls_verify,
        have,
        progress,
    };
    let opened = sources::open(request.source, &options)?;
    if let Some(pin) = request.pin
        && *pin != opened.manifest
        && Some(pin) != opened.index.as_ref()
    {
        return Err(ImageError::Pin {
            pinned: pin.clone(),
            actual: opened.manifest,
        });
    }
    Ok(opened)
}

/// Imports the image into `store`: every blob verified, every layer unpacked once and
/// shared with every image that has it. Rootless, the layers are unpacked by a worker in a
/// user namespace on the user's subordinate ids.
pub fn import(
    request: &Request<'_>,
    store: &Store,
    progress: &Progress,
) -> Result<ImageRecord, ImageError> {
    store.create()?;
    let opened = open(
        request,
        &store.root().join("tmp"),
        &|diff_id| store.has_layer(diff_id),
        progress,
    )?;
    let jobs = &opened.layers;
    if request.host.is_root() {
        install_layers(store, jobs, UnpackMode::ROOT, progress)?;
    } else {
        worker::run(
            request.host,
            &worker::Job::Install {
                store: store.root().to_owned(),
                layers: jobs.clone(),
            },
        )?;
    }
    for (digest, bytes) in &opened.blobs {
        store.put_blob(digest, bytes)?;
    }
    let record = ImageRecord {
        name: request.source.to_string(),
        manifest: opened.manifest.clone(),
        config_digest: opened.config_digest.clone(),
        config: opened.config.clone(),
        layers: jobs
            .iter()
            .map(|job| LayerRef {
                diff_id: job.diff_id.clone(),
                blob: job.desc.digest.clone(),
                blob_size: job.desc.size,
            })
            .collect(),
    };
    store.put_image(&record)?;
    Ok(record)
}

/// Installs layers in parallel, up to one per core; the first error wins.
pub fn install_layers(
    store: &Store,
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
                        done.push((i, install_layer(store, job, mode, progress)?));
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
    job: &LayerJob,
    mode: UnpackMode,
    progress: &Progress,
) -> Result<Installed, ImageError> {
    let item = progress.item(format!("layer {}", job.desc.digest.short()), job.desc.size);
    let installed = store.install_layer(&job.diff_id, |root| {
        let blob = open_blob(job)?;
        let mut pending = Pending::default();
        let stats = unpack_verified(
            Counting {
                inner: blob,
                item: &item,
            },
            &job.desc,
            &job.diff_id,
            root,
            mode,
            &mut pending,
        )?;
        pending.apply(root)?;
        Ok(stats)
    })?;
    item.done(match installed {
        Installed::AlreadyThere => "already in the store",
        Installed::Unpacked(_) => "verified and unpacked",
    });
    Ok(installed)
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

/// Writes the image as one tree in `dir` (which must not exist), whiteouts applied, as
/// `umoci unpack` makes its rootfs. Rootless, every file is the user's (as with
/// `umoci unpack --rootless`), directories get their modes once every layer is in, and
/// what the user may not set (file capabilities) is left out and listed in the stats. On
/// failure nothing is left at `dir`.
pub fn extract(
    request: &Request<'_>,
    dir: &Path,
    progress: &Progress,
) -> Result<Stats, ImageError> {
    let scratch_in = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let opened = open(request, scratch_in, &|_| false, progress)?;
    let mode = if request.host.is_root() {
        UnpackMode::ROOT.flattened()
    } else {
        UnpackMode {
            chown: false,
            privileged: false,
            ..UnpackMode::ROOTLESS.flattened()
        }
    };
    // The tree is made in a private scratch directory and renamed to `dir` only when
    // complete, and private itself (0700): it holds the image's files as they are, setuid
    // ones included, which no other user may run.
    if dir.symlink_metadata().is_ok() {
        return Err(ImageError::Io {
            path: dir.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::EEXIST),
        });
    }
    let scratch = sources::new_scratch(scratch_in, ".mm-extract.")?;
    let tree = scratch.path().join("rootfs");
    std::fs::create_dir(&tree).at(&tree)?;
    let result = flatten(&opened, &tree, mode, progress).and_then(|total| {
        crate::state::private_dir(&tree).at(&tree)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tree,
            rustix::fs::CWD,
            dir,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| ImageError::Io {
            path: dir.to_owned(),
            source: e.into(),
        })?;
        Ok(total)
    });
    // On failure the scratch directory takes the half-made tree with it.
    drop(scratch);
    result
}

/// Applies every layer of `opened`, bottom first, to the tree at `tree`, then the modes
/// that had to wait for the last layer.
fn flatten(
    opened: &Opened,
    tree: &Path,
    mode: UnpackMode,
    progress: &Progress,
) -> Result<Stats, ImageError> {
    let root = rustix::fs::open(
        tree,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| ImageError::Io {
        path: tree.to_owned(),
        source: e.into(),
    })?;
    let mut total = Stats::default();
    let mut pending = Pending::default();
    for job in &opened.layers {
        let item = progress.item(format!("layer {}", job.desc.digest.short()), job.desc.size);
        let blob = open_blob(job)?;
        let stats = unpack_verified(
            Counting {
                inner: blob,
                item: &item,
            },
            &job.desc,
            &job.diff_id,
            &root,
            mode,
            &mut pending,
        )?;
        item.done("verified and applied");
        total.entries += stats.entries;
        total.bytes += stats.bytes;
        total.whiteouts += stats.whiteouts;
        total.skipped_devices += stats.skipped_devices;
        total.dropped_xattrs.extend(stats.dropped_xattrs);
    }
    pending.apply(&root)?;
    Ok(total)
}

/// Unpacks one layer blob into `root` in a single pass: the compressed stream is hashed
/// against the blob's digest, the decompressed stream against its diff_id. When unpacking
/// fails, the rest of the blob is still hashed: a corrupt blob is reported as such (with
/// both digests), not as the tar or gzip error it caused.
pub fn unpack_verified(
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
