//! The content-addressed image store: verified blobs by digest, unpacked layers by
//! diff_id, and one record per imported image.
//!
//! ```text
//! STORE/blobs/sha256/HEX      manifests and configs (verified before they are written)
//! STORE/layers/HEX/           an unpacked layer, overlayfs form, never changed once here
//! STORE/layers/HEX.json       what unpacking it found (entries, bytes, whiteouts)
//! STORE/images/ID.json        an imported image: its name, manifest, config and layers
//! STORE/tmp/                  work in progress; a layer is renamed into layers/ only verified
//! STORE/locks/HEX.lock        one importer per layer at a time; others wait, then share it
//! ```

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::{ImageError, IoContext};
use super::oci::ImageConfig;
use super::unpack::Stats;

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An imported image, as `mm image list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The source it was imported from, as written (`oci:/srv/img:latest`).
    pub name: String,
    pub manifest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Bottom first.
    pub layers: Vec<LayerRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub diff_id: Digest,
    /// The compressed blob it came from.
    pub blob: Digest,
    pub blob_size: u64,
}

/// What the store knows about an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub diff_id: Digest,
    pub stats: Stats,
}

/// How a layer's files are owned in the store. The default layout is the one rootless
/// machines map by default (inside 0 is the user); a rootless keep-id machine maps inside
/// `uid` to the user instead, so its layers are unpacked once more, straight from the
/// verified blob, with owners laid out for that map: no chown copy, shared by every
/// keep-id machine of the user. Root's store has only the default layout (its machines
/// see it through id-mapped mounts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Layout {
    #[default]
    Default,
    KeepId {
        uid: u32,
        gid: u32,
    },
}

impl Layout {
    pub fn is_default(&self) -> bool {
        *self == Self::Default
    }

    /// The layout's directory under `layouts/`, and the suffix of its locks and
    /// temporary directories; `None` for the default layout.
    pub fn name(&self) -> Option<String> {
        match self {
            Self::Default => None,
            Self::KeepId { uid, gid } => Some(format!("keep-id-{uid}-{gid}")),
        }
    }

    /// The layout a directory under `layouts/` is named for ([`Layout::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        let (uid, gid) = name.strip_prefix("keep-id-")?.split_once('-')?;
        Some(Self::KeepId {
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
        })
    }

    /// The key of a layer in this layout: its diff_id's hex, then the layout's name.
    fn key(&self, diff_id: &Digest) -> String {
        match self.name() {
            None => diff_id.hex().to_owned(),
            Some(name) => format!("{}-{name}", diff_id.hex()),
        }
    }
}

/// Whether a layer had to be unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Installed {
    AlreadyThere,
    Unpacked(Stats),
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir_in(Layout::Default, diff_id)
    }

    /// The directory of a layer in `layout`: `layers/HEX`, or `layouts/NAME/HEX`.
    pub fn layer_dir_in(&self, layout: Layout, diff_id: &Digest) -> PathBuf {
        self.layout_dir(layout).join(diff_id.hex())
    }

    fn layout_dir(&self, layout: Layout) -> PathBuf {
        match layout.name() {
            None => self.root.join("layers"),
            Some(name) => self.root.join("layouts").join(name),
        }
    }

    fn layer_info_path(&self, layout: Layout, diff_id: &Digest) -> PathBuf {
        self.layout_dir(layout)
            .join(format!("{}.json", diff_id.hex()))
    }

    /// `record`'s config as it was written (every field kept; from the record where its blob
    /// is not in the store), with `rootfs` naming `diff_ids`: the base of a committed or
    /// exported image's config.
    pub fn config_with_layers(
        &self,
        record: &ImageRecord,
        diff_ids: &[Digest],
    ) -> Result<serde_json::Map<String, serde_json::Value>, ImageError> {
        let bad = |why: String| ImageError::BadJson {
            what: "config",
            digest: record.config_digest.clone(),
            why,
        };
        let config = match std::fs::read(self.blob_path(&record.config_digest)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?,
            Err(_) => serde_json::to_value(&record.config).map_err(|e| bad(e.to_string()))?,
        };
        let serde_json::Value::Object(mut object) = config else {
            return Err(bad("it is not a JSON object".to_owned()));
        };
        let ids: Vec<serde_json::Value> = diff_ids
            .iter()
            .map(|d| serde_json::Value::String(d.to_string()))
            .collect();
        object.insert(
            "rootfs".to_owned(),
            serde_json::json!({"type": "layers", "diff_ids": ids}),
        );
        Ok(object)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn image_path(&self, name: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", &Digest::of(name.as_bytes()).hex()[..32]))
    }

    /// Makes the store's directories, private to their owner (mode 0700, also for a
    /// store made before): layers hold the images' files as they are, setuid ones
    /// included, which no other user may run from here. Removes the temporary files of
    /// records and blobs whose writers were killed before they renamed them.
    pub fn create(&self) -> Result<(), ImageError> {
        crate::state::private_dir(&self.root).at(&self.root)?;
        for dir in [
            "blobs/sha256",
            "layers",
            "layouts",
            "images",
            "tmp",
            "locks",
        ] {
            let path = self.root.join(dir);
            crate::state::private_dir(&path).at(&path)?;
        }
        for dir in ["blobs/sha256", "layers", "images"] {
            let path = self.root.join(dir);
            crate::state::remove_stale_temporaries(&path).at(&path)?;
        }
        Ok(())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.has_layer_in(Layout::Default, diff_id)
    }

    pub fn has_layer_in(&self, layout: Layout, diff_id: &Digest) -> bool {
        self.layer_dir_in(layout, diff_id).is_dir()
    }

    /// Installs a layer, unless it is already there: under the layer's lock, `unpack` fills
    /// a fresh temporary directory, which is renamed into place only if it succeeds.
    /// Leftovers of an earlier, killed attempt are removed first.
    pub fn install_layer(
        &self,
        layout: Layout,
        diff_id: &Digest,
        unpack: impl FnOnce(&OwnedFd) -> Result<Stats, ImageError>,
    ) -> Result<Installed, ImageError> {
        if self.has_layer_in(layout, diff_id) {
            return Ok(Installed::AlreadyThere);
        }
        let key = layout.key(diff_id);
        let _lock = self.lock(&key, true)?;
        if self.has_layer_in(layout, diff_id) {
            return Ok(Installed::AlreadyThere);
        }
        self.remove_stale(&key)?;
        let layout_dir = self.layout_dir(layout);
        crate::state::private_dir(&layout_dir).at(&layout_dir)?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{key}.{}", std::process::id()));
        std::fs::create_dir(&tmp).at(&tmp)?;
        let result = rustix::fs::open(
            &tmp,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ImageError::Io {
            path: tmp.clone(),
            source: e.into(),
        })
        .and_then(|fd| {
            let stats = unpack(&fd)?;
            let entries = super::tree::walk(&fd, &tmp)?;
            Ok((stats, entries))
        });
        let (stats, entries) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(self.store_write(e));
            }
        };
        let info = LayerInfo {
            diff_id: diff_id.clone(),
            stats: stats.clone(),
        };
        if let Err(e) = write_atomically(
            &self.layer_info_path(layout, diff_id),
            &serde_json::to_vec_pretty(&info).expect("serializable"),
        ) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dest = self.layer_dir_in(layout, diff_id);
        let tree = super::tree::Tree {
            diff_id: diff_id.clone(),
            entries,
        };
        let written = write_atomically(
            &super::tree::record_path(&dest),
            &serde_json::to_vec(&tree).expect("serializable"),
        )
        .and_then(|()| std::fs::rename(&tmp, &dest).at(&dest));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(Installed::Unpacked(stats))
    }

    /// The layouts the store holds layers in: the default one, and each `layouts/NAME`.
    pub fn layouts(&self) -> Vec<Layout> {
        let mut all = vec![Layout::Default];
        if let Ok(entries) = std::fs::read_dir(self.root.join("layouts")) {
            for entry in entries.flatten() {
                if let Some(layout) = Layout::parse(&entry.file_name().to_string_lossy()) {
                    all.push(layout);
                }
            }
        }
        all
    }

    /// The layers unpacked in `layout`: each directory named by a digest's hex.
    pub fn layers_in(&self, layout: Layout) -> Result<Vec<Digest>, ImageError> {
        let dir = self.layout_dir(layout);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ImageError::Io { path: dir, source }),
        };
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.at(&dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(digest) = Digest::parse(&format!("sha256:{name}"))
                && entry.file_type().at(entry.path())?.is_dir()
            {
                all.push(digest);
            }
        }
        all.sort();
        Ok(all)
    }

    /// Removes a layer of `layout` (its directory, its info and its tree record) under its
    /// lock, so that the next import unpacks it again.
    pub fn remove_layer(&self, layout: Layout, diff_id: &Digest) -> Result<(), ImageError> {
        let _lock = self.lock(&layout.key(diff_id), true)?;
        let dir = self.layer_dir_in(layout, diff_id);
        // The directory first: without it the layer is absent, whatever is left beside it.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ImageError::Io { path: dir, source }),
        }
        for path in [
            self.layer_info_path(layout, diff_id),
            super::tree::record_path(&dir),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ImageError::Io { path, source }),
            }
        }
        Ok(())
    }

    /// An unpack error that is the store's file system refusing a write (no space, over
    /// quota, read-only, an I/O error) says so, naming the store.
    fn store_write(&self, e: ImageError) -> ImageError {
        match e {
            ImageError::Unpack(source)
                if source.errno().is_some_and(|n| {
                    [libc::ENOSPC, libc::EDQUOT, libc::EROFS, libc::EIO].contains(&n)
                }) =>
            {
                ImageError::StoreWrite {
                    store: self.root.clone(),
                    source,
                }
            }
            other => other,
        }
    }

    /// Removes temporary directories left by killed imports of `hex` (the caller holds its lock).
    fn remove_stale(&self, hex: &str) -> Result<(), ImageError> {
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).at(&tmp)? {
            let path = entry.at(&tmp)?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{hex}.")))
            {
                std::fs::remove_dir_all(&path).at(&path)?;
            }
        }
        Ok(())
    }

    /// An exclusive lock, held until the returned file is dropped; with `wait`, waits for
    /// another holder, else fails at once.
    fn lock(&self, name: &str, wait: bool) -> Result<File, ImageError> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        crate::state::lock(&path, wait).at(path)
    }

    /// Stores a blob already verified against `digest`.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        let path = self.blob_path(digest);
        if !path.exists() {
            write_atomically(&path, bytes)?;
        }
        Ok(())
    }

    pub fn put_image(&self, record: &ImageRecord) -> Result<(), ImageError> {
        write_atomically(
            &self.image_path(&record.name),
            &serde_json::to_vec_pretty(record).expect("serializable"),
        )
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let path = self.image_path(name);
        crate::state::read_json(&path).map_err(|source| ImageError::Io { path, source })
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("images");
        let mut all = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(all);
        };
        for entry in entries {
            let path = entry.at(&dir)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).at(&path)?;
                let record: ImageRecord =
                    serde_json::from_slice(&bytes).map_err(|e| ImageError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })?;
                all.push(record);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    pub fn layer_info(&self, diff_id: &Digest) -> Option<LayerInfo> {
        let bytes = std::fs::read(self.layer_info_path(Layout::Default, diff_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn remove_image(&self, name: &str) -> Result<(), ImageError> {
        let path = self.image_path(name);
        std::fs::remove_file(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ImageError::NotInStore(name.to_owned()),
            _ => ImageError::Io { path, source },
        })
    }

    /// Layers and blobs no image refers to, and temporary leftovers nobody holds a lock on.
    pub fn unused(&self) -> Result<Vec<PathBuf>, ImageError> {
        let images = self.images()?;
        let mut keep = std::collections::BTreeSet::new();
        for image in &images {
            keep.insert(image.manifest.hex().to_owned());
            keep.insert(image.config_digest.hex().to_owned());
            for layer in &image.layers {
                keep.insert(layer.diff_id.hex().to_owned());
                // A committed layer's blob (imported layers' blobs are not kept).
                keep.insert(layer.blob.hex().to_owned());
            }
        }
        let mut unused = Vec::new();
        let mut dirs = vec![self.root.join("layers"), self.root.join("blobs/sha256")];
        if let Ok(layouts) = std::fs::read_dir(self.root.join("layouts")) {
            dirs.extend(layouts.flatten().map(|e| e.path()));
        }
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.at(&dir)?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                // `HEX`, `HEX.json`, `HEX.tree.json`; a keep-id layout's `HEX-LAYOUT…`.
                let hex = name.split(['.', '-']).next().unwrap_or_default();
                if !keep.contains(hex) {
                    unused.push(path);
                }
            }
        }
        let tmp = self.root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries {
                let path = entry.at(&tmp)?.path();
                let hex = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if let Ok(lock) = self.lock(&hex, false) {
                    drop(lock);
                    unused.push(path);
                }
            }
        }
        unused.sort();
        Ok(unused)
    }
}

/// [`crate::state::write_atomically`], with the path in the error.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    crate::state::write_atomically(path, bytes).at(path)
}
