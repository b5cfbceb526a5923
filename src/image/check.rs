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
    /// A layer `--repair` left because a running machine is made of it.
    #[serde(default)]
    pub in_use: bool,
    /// The images that use it.
    pub images: Vec<String>,
}

/// Checks the whole store (and repairs it, with `repair`); `layout` checks one layout's
/// layers ([`check_layout`], run where that layout's owners can be read). Repairs never
/// remove a layer directory of `in_use` (running machines' overlays).
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
    // A layer is there if any layout has it: a rootless keep-id machine's image may be in
    // its keep-id layout only.
    let layouts = store.layouts();
    for image in &images {
        for layer in &image.layers {
            if !layouts
                .iter()
                .any(|l| store.has_layer_in(*l, &layer.diff_id))
                && !report.damaged.iter().any(|d| d.digest == layer.diff_id)
            {
                report.damaged.push(Damage {
                    what: What::MissingLayer,
                    digest: layer.diff_id.clone(),
                    path: store.layer_dir(&layer.diff_id),
                    differences: Vec::new(),
                    removed: false,
                    in_use: false,
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

/// Checks one layout's layers, in this process (root, or the rootless worker); with
/// `repair`, removes the damaged ones but those in `in_use`.
pub fn check_layout(
    store: &Store,
    layout: Layout,
    repair: bool,
    in_use: &[PathBuf],
) -> Result<Report, ImageError> {
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
        let used = in_use.contains(&dir);
        if repair && !used {
            store.remove_layer(layout, &diff_id)?;
        }
        report.damaged.push(Damage {
            what: What::Layer,
            digest: diff_id,
            path: dir,
            differences,
            removed: repair && !used,
            in_use: used,
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
            in_use: false,
            images: Vec::new(),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::Stats;

    /// A store with one layer installed (and so recorded) as `install_layer` does it.
    fn store_with_a_layer() -> (tempfile::TempDir, Store, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("store"));
        store.create().unwrap();
        let diff_id = Digest::of(b"a layer");
        let tmp = store.root().join("tmp");
        store
            .install_layer(Layout::Default, &diff_id, |_| {
                // The one directory in tmp/ is the layer being made.
                let layer = std::fs::read_dir(&tmp)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .path();
                std::fs::create_dir(layer.join("etc")).unwrap();
                std::fs::write(layer.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
                std::os::unix::fs::symlink("passwd", layer.join("etc/link")).unwrap();
                Ok(Stats::default())
            })
            .unwrap();
        (dir, store, diff_id)
    }

    #[test]
    fn a_layer_is_recorded_when_installed_and_verifies() {
        let (_dir, store, diff_id) = store_with_a_layer();
        let dir = store.layer_dir(&diff_id);
        let record = tree::read_record(&dir).unwrap().unwrap();
        assert_eq!(record.diff_id, diff_id);
        assert_eq!(record.entries.len(), 4, "{:#?}", record.entries);
        let report = check_layout(&store, Layout::Default, false, &[]).unwrap();
        assert_eq!(report.layers, 1);
        assert!(report.is_clean(), "{report:#?}");
        // What gc considers: every file of a layer no image uses, its record too.
        let unused = store.unused().unwrap();
        assert_eq!(unused.len(), 3, "{unused:?}");
    }

    #[test]
    fn a_changed_layer_is_reported_and_repair_removes_it_whole() {
        let (_dir, store, diff_id) = store_with_a_layer();
        let dir = store.layer_dir(&diff_id);
        std::fs::remove_file(dir.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.join("etc/link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("etc/passwd"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        let report = check_layout(&store, Layout::Default, false, &[]).unwrap();
        assert_eq!(report.damaged.len(), 1);
        let damage = &report.damaged[0];
        assert_eq!((damage.what, &damage.digest), (What::Layer, &diff_id));
        let shown: Vec<(&str, &str)> = damage
            .differences
            .iter()
            .map(|d| (d.path.as_str(), d.what.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("etc/link", "contents changed"),
                ("etc/passwd", "mode 4755, unpacked 0644")
            ]
        );
        assert!(dir.exists(), "a check without --repair changed the store");
        let report = check_layout(&store, Layout::Default, true, &[]).unwrap();
        assert!(report.damaged[0].removed);
        assert!(!dir.exists());
        assert!(!tree::record_path(&dir).exists());
        assert!(store.layer_info(&diff_id).is_none());
        assert!(
            check_layout(&store, Layout::Default, false, &[])
                .unwrap()
                .is_clean()
        );
    }

    #[test]
    fn a_layer_without_a_record_is_not_verifiable_but_not_damaged() {
        let (_dir, store, diff_id) = store_with_a_layer();
        std::fs::remove_file(tree::record_path(&store.layer_dir(&diff_id))).unwrap();
        let report = check_layout(&store, Layout::Default, true, &[]).unwrap();
        assert!(report.is_clean());
        assert_eq!(report.unrecorded, [store.layer_dir(&diff_id)]);
        assert!(
            store.has_layer(&diff_id),
            "repair removed an unrecorded layer"
        );
    }

    #[test]
    fn a_blob_that_does_not_hash_to_its_name_is_damaged() {
        let (_dir, store, _) = store_with_a_layer();
        let digest = Digest::of(b"{}");
        store.put_blob(&digest, b"{}").unwrap();
        let report = check(&store, false, |layout| {
            check_layout(&store, layout, false, &[])
        })
        .unwrap();
        assert!(report.is_clean(), "{report:#?}");
        assert_eq!(report.blobs, 1);
        std::fs::write(store.blob_path(&digest), b"{ }").unwrap();
        let report = check(&store, true, |layout| {
            check_layout(&store, layout, true, &[])
        })
        .unwrap();
        assert_eq!(report.damaged.len(), 1);
        assert_eq!(report.damaged[0].what, What::Blob);
        assert!(
            report.damaged[0].differences[0]
                .what
                .starts_with("its contents hash to sha256:")
        );
        assert!(!store.blob_path(&digest).exists());
    }

    #[test]
    fn layouts_are_named_and_parsed_back() {
        let layout = Layout::KeepId {
            uid: 1000,
            gid: 100,
        };
        assert_eq!(Layout::parse(&layout.name().unwrap()), Some(layout));
        assert_eq!(Layout::parse("keep-id-x-1"), None);
        assert_eq!(Layout::parse("other"), None);
    }
}
