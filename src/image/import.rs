//! Bringing an image into the store (`import`) or onto disk as one tree (`extract`),
//! taking layers out of the store (`remove`), and checking them (`check`): rootless, each
//! in the unpack worker.

use std::path::Path;

use super::check::{Report, check_layout};
use super::digest::Digest;
use super::error::{ImageError, IoContext};
use super::install::{install_layers, unpack_job};
use super::opened::{Opened, Options};
use super::progress::Progress;
use super::sources;
use super::store::{ImageRecord, LayerRef, Layout, Store};
use super::unpack::{Pending, Stats, UnpackMode};
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
    /// Which owners' layout the layers are unpacked in (a rootless keep-id machine's, or
    /// the default).
    pub layout: Layout,
    /// Registries: `--authfile FILE`, read instead of the usual auth files.
    pub authfile: Option<&'a Path>,
}

/// Opens the request's source, and checks the digest pin.
fn open(
    request: &Request<'_>,
    scratch_in: &Path,
    have: &dyn Fn(&Digest) -> bool,
    progress: &Progress,
) -> Result<Opened, ImageError> {
    let options = Options {
        arch: &request.host.arch,
        scratch_in,
        tls_verify: request.tls_verify,
        authfile: request.authfile,
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
        &|diff_id| store.has_layer_in(request.layout, diff_id),
        progress,
    )?;
    let jobs = &opened.layers;
    if request.host.is_root() {
        install_layers(store, request.layout, jobs, UnpackMode::ROOT, progress)?;
    } else {
        worker::run(
            request.host,
            &worker::Job::Install {
                store: store.root().to_owned(),
                layers: jobs.clone(),
                layout: request.layout,
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
    let scratch = super::opened::new_scratch(scratch_in, ".mm-extract.")?;
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
        let stats = unpack_job(job, &item, &root, mode, &mut pending)?;
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

/// Removes store paths; rootless, inside the user namespace that owns their content.
pub fn remove(host: &Host, paths: Vec<std::path::PathBuf>) -> Result<(), ImageError> {
    if !host.is_root() {
        worker::run(host, &worker::Job::Remove { paths })?;
        return Ok(());
    }
    for path in paths {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|source| ImageError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `mm image check`: every layout's layers checked (rootless, each layout in a worker
/// mapped as its machines are), then the blobs and the images' layers. `--repair` leaves
/// the layer directories of `in_use` (running machines') in place.
pub fn check(
    host: &Host,
    store: &Store,
    repair: bool,
    in_use: &[std::path::PathBuf],
) -> Result<Report, ImageError> {
    super::check::check(store, repair, |layout| {
        if host.is_root() {
            return check_layout(store, layout, repair, in_use);
        }
        worker::check(
            host,
            &worker::Job::Check {
                store: store.root().to_owned(),
                layout,
                repair,
                in_use: in_use.to_vec(),
            },
        )
    })
}
