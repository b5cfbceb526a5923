//! `mm image check`: every stored layer walked again and compared with the tree recorded
//! when it was unpacked and verified (`tree.rs`), every blob hashed again against its name,
//! every image's layers present; with `repair`, what does not match is removed, so that
//! the next import of its image unpacks it again. Rootless, the walk runs in the unpack
//! worker, whose user namespace sees the layers' owners as they were unpacked
//! (`import::check` chooses).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::digest::{Digest, HashingReader};
use super::error::ImageError;
use super::store::{Layout, Store};
use super::tree::{self, Difference};

/// The most differences reported per layer.
const DIFFERENCES: usize = 20;

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Layers walked and compared with their record.
    pub layers: u64,
    /// Blobs hashed.
    pub blobs: u64,
    /// Layers with no record to compare with (unpacked by an mm that did not record
    /// trees): present, but not verifiable.
    pub unrecorded: Vec<PathBuf>,
    pub damaged: Vec<Damage>,
}

impl Report {
    /// Whether anything is damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }

    fn extend(&mut self, other: Report) {
        self.layers += other.layers;
        self.blobs += other.blobs;
        self.unrecorded.extend(other.unrecorded);
        self.damaged.extend(other.damaged);
    }
}

/// What is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    /// An unpacked layer differs from what was unpacked.
    Layer,
    /// A blob's contents do not hash to its name.
    Blob,
    /// An image names a layer the store does not have.
    MissingLayer,
}

/// One damaged thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    pub what: What,
    /// The layer's diff_id, or the blob's digest.
    pub digest: Digest,
    pub path: PathBuf,
    /// How it differs (a layer: paths inside it).
    pub differences: Vec<Difference>,
    /// Whether `--repair` removed it.
    pub removed: bool,
    /// The images that use it.
    pub images: Vec<String>,
}

/// Checks the whole store (and repairs it, with `repair`); `layout` checks one layout's
/// layers ([`check_layout`], run where that layout's owners can be read).
pub fn check(
    store: &Store,
    repair: bool,
    layout: impl Fn(Layout) -> Result<Report, ImageError>,
) -> Result<Report, ImageError> {
    let mut report = Report::default();
    for one in store.layouts() {
        report.extend(layout(one)?);
    }
    // Blobs are the user's own files, outside any layout.
    report.extend(check_blobs(store, repair)?);
    let images = store.images()?;
    for damage in &mut report.damaged {
        damage.images = images
            .iter()
            .filter(|i| {
                i.manifest == damage.digest
                    || i.config_digest == damage.digest
                    || i.layers
                        .iter()
                        .any(|l| l.diff_id == damage.digest || l.blob == damage.digest)
            })
            .map(|i| i.name.clone())
            .collect();
    }
    for image in &images {
        for layer in &image.layers {
            if !store.has_layer(&layer.diff_id)
                && !report.damaged.iter().any(|d| d.digest == layer.diff_id)
            {
                report.damaged.push(Damage {
                    what: What::MissingLayer,
                    digest: layer.diff_id.clone(),
                    path: store.layer_dir(&layer.diff_id),
                    differences: Vec::new(),
                    removed: false,
                    images: images
                        .iter()
                        .filter(|i| i.layers.iter().any(|l| l.diff_id == layer.diff_id))
                        .map(|i| i.name.clone())
                        .collect(),
                });
            }
        }
    }
    Ok(report)
}

/// Checks one layout's layers, in this process (root, or the rootless worker).
pub fn check_layout(store: &Store, layout: Layout, repair: bool) -> Result<Report, ImageError> {
    let mut report = Report::default();
    for diff_id in store.layers_in(layout)? {
        let dir = store.layer_dir_in(layout, &diff_id);
        report.layers += 1;
        let differences = match tree::read_record(&dir) {
            Ok(None) => {
                report.unrecorded.push(dir);
                continue;
            }
            Ok(Some(record)) if record.diff_id != diff_id => vec![Difference {
                path: tree::record_path(&dir).display().to_string(),
                what: format!("the record is for another layer, {}", record.diff_id),
            }],
            Ok(Some(record)) => match tree::open_dir(&dir).and_then(|fd| tree::walk(&fd, &dir)) {
                Ok(now) => tree::compare(&record.entries, &now, DIFFERENCES),
                Err(e) => vec![Difference {
                    path: ".".to_owned(),
                    what: format!("cannot be walked: {e}"),
                }],
            },
            Err(e) => vec![Difference {
                path: tree::record_path(&dir).display().to_string(),
                what: format!("the record cannot be read: {e}"),
            }],
        };
        if differences.is_empty() {
            continue;
        }
        if repair {
            store.remove_layer(layout, &diff_id)?;
        }
        report.damaged.push(Damage {
            what: What::Layer,
            digest: diff_id,
            path: dir,
            differences,
            removed: repair,
            images: Vec::new(),
        });
    }
    Ok(report)
}

fn check_blobs(store: &Store, repair: bool) -> Result<Report, ImageError> {
    let mut report = Report::default();
    let dir = store.root().join("blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(report);
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
            continue;
        };
        let path = store.blob_path(&digest);
        report.blobs += 1;
        let what = match std::fs::File::open(&path) {
            Ok(file) => {
                let mut reader = HashingReader::new(file);
                match reader.drain() {
                    Ok(()) => {
                        let (actual, _) = reader.finish();
                        (actual != digest).then(|| format!("its contents hash to {actual}"))
                    }
                    Err(e) => Some(format!("cannot be read: {e}")),
                }
            }
            Err(e) => Some(format!("cannot be opened: {e}")),
        };
        let Some(what) = what else {
            continue;
        };
        if repair {
            std::fs::remove_file(&path).map_err(|source| ImageError::Io {
                path: path.clone(),
                source,
            })?;
        }
        report.damaged.push(Damage {
            what: What::Blob,
            digest,
            path,
            differences: vec![Difference {
                path: ".".to_owned(),
                what,
            }],
            removed: repair,
            images: Vec::new(),
        });
    }
    Ok(report)
}
