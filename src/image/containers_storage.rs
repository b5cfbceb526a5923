//! `containers-storage:` — an image in podman's (containers/storage's) store, read and never
//! written: the image list (`DRIVER-images/images.json`), the manifest and config kept as
//! the image's "big data" (verified against their digests), the layer chain
//! (`DRIVER-layers/layers.json`), and each layer's exact tar stream rebuilt from its
//! tar-split file (`DRIVER-layers/ID.tar-split.gz`) and its files in the driver's diff
//! directory, verified against the config's diff_id before it is installed.
//!
//! Files are read from the diff directory with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`, so a name in the tar-split data never leads out of the layer.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::error::{ImageError, IoContext};
use super::layout::pick_platform;
use super::oci::{self, Descriptor, ImageConfig, Manifest};
use super::opened::{LayerJob, Opened, Options, Scratch};
use crate::definition::source::StoreSpec;

/// The most mm reads into memory for an image list, layer list, manifest or config.
const JSON_LIMIT: u64 = 64 << 20;

/// The drivers whose layers mm can read, in the order a store without one named is probed.
const DRIVERS: &[&str] = &["overlay", "vfs"];

#[derive(Deserialize)]
struct StoredImage {
    id: String,
    #[serde(default)]
    digest: Option<Digest>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    layer: Option<String>,
}

#[derive(Deserialize)]
struct StoredLayer {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default, rename = "diff-digest")]
    diff_digest: Option<Digest>,
    #[serde(default, rename = "diff-size")]
    diff_size: Option<u64>,
}

/// One line of a tar-split file: a tar segment (type 2, its bytes) or a file entry (type 1,
/// whose `size` bytes of content come from the diff directory).
#[derive(Deserialize)]
struct SplitEntry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    payload: Option<String>,
}

/// The store's root: the one given, else the user's (root's under /var/lib, an ordinary
/// user's under `$XDG_DATA_HOME` or `~/.local/share`), as podman's defaults are.
fn default_root() -> Result<PathBuf, ImageError> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/containers/storage"));
    }
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        Some(data) => PathBuf::from(data),
        None => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/share"),
            None => {
                return Err(ImageError::NotAStore {
                    root: PathBuf::from("~/.local/share/containers/storage"),
                    why: "neither XDG_DATA_HOME nor HOME is set".to_owned(),
                });
            }
        },
    };
    Ok(data.join("containers/storage"))
}

/// Reads a JSON file of the store, up to [`JSON_LIMIT`] bytes.
fn read_limited(path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    File::open(path)
        .at(path)?
        .take(JSON_LIMIT + 1)
        .read_to_end(&mut bytes)
        .at(path)?;
    if bytes.len() as u64 > JSON_LIMIT {
        return Err(ImageError::NotAStore {
            root: path.to_owned(),
            why: format!("more than {JSON_LIMIT} bytes"),
        });
    }
    Ok(bytes)
}

/// The file containers/storage keeps an image's big-data item `key` in: the key itself
/// when it is a plain name, else `=` and its base64.
fn big_data_file(key: &str) -> String {
    if key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        key.to_owned()
    } else {
        format!("={}", base64::engine::general_purpose::STANDARD.encode(key))
    }
}

/// Whether `text` is a whole image id (64 lowercase hex digits).
fn is_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Opens `image` in the store `spec` (or the user's): its manifest and config verified, its
/// layers rebuilt into a scratch directory and verified against the config's diff_ids.
pub fn open(
    spec: Option<&StoreSpec>,
    image: &str,
    options: &Options<'_>,
) -> Result<Opened, ImageError> {
    let root = match spec {
        Some(spec) => spec.root.clone(),
        None => default_root()?,
    };
    let driver = match spec.and_then(|s| s.driver.as_deref()) {
        Some(driver) if DRIVERS.contains(&driver) => driver.to_owned(),
        Some(driver) => {
            return Err(ImageError::NotAStore {
                root,
                why: format!(
                    "mm reads the {} drivers' layers, not {driver}'s",
                    DRIVERS.join(" and ")
                ),
            });
        }
        None => DRIVERS
            .iter()
            .find(|d| root.join(format!("{d}-images/images.json")).is_file())
            .map(|d| (*d).to_owned())
            .ok_or_else(|| ImageError::NotAStore {
                root: root.clone(),
                why: format!(
                    "no image list ({}-images/images.json)",
                    DRIVERS.join("- or ")
                ),
            })?,
    };
    let images_path = root.join(format!("{driver}-images/images.json"));
    let bytes = read_limited(&images_path)?;
    let images: Vec<StoredImage> =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::NotAStore {
            root: root.clone(),
            why: format!("{}: {e}", images_path.display()),
        })?;
    let chosen = find(&images, image).ok_or_else(|| ImageError::NotInPodmanStore {
        image: image.to_owned(),
        root: root.clone(),
        available: images
            .iter()
            .map(|i| match i.names.as_slice() {
                [] => i.id.chars().take(12).collect(),
                names => names.join(" "),
            })
            .collect(),
    })?;
    let image_dir = root.join(format!("{driver}-images")).join(&chosen.id);
    let big = |key: &str| -> Result<Vec<u8>, ImageError> {
        let path = image_dir.join(big_data_file(key));
        read_limited(&path)
    };
    let mut blobs = Vec::new();
    let top = big("manifest")?;
    let top_digest = Digest::of(&top);
    if let Some(expected) = &chosen.digest
        && *expected != top_digest
    {
        // The image's digest may be the index's while `manifest` holds the instance's;
        // then the instance must be kept under `manifest-DIGEST` as well.
        let by_digest = image_dir.join(big_data_file(&format!("manifest-{expected}")));
        if !by_digest.is_file() {
            return Err(ImageError::Corrupt {
                what: "manifest",
                digest: expected.clone(),
                mismatch: super::digest::Mismatch::Digest {
                    expected: expected.clone(),
                    actual: top_digest,
                },
            });
        }
    }
    let parse_err = |what: &'static str, digest: &Digest| {
        let digest = digest.clone();
        move |e: serde_json::Error| ImageError::BadJson {
            what,
            digest,
            why: e.to_string(),
        }
    };
    #[derive(Deserialize)]
    struct Kind {
        manifests: Option<Vec<Descriptor>>,
    }
    let kind: Kind = serde_json::from_slice(&top).map_err(parse_err("manifest", &top_digest))?;
    let (manifest_digest, manifest_bytes) = match kind.manifests {
        Some(manifests) => {
            let chosen = pick_platform(&manifests, options.arch)?;
            let bytes = big(&format!("manifest-{}", chosen.digest))?;
            verify("manifest", &chosen.digest, &bytes)?;
            blobs.push((top_digest, top));
            (chosen.digest.clone(), bytes)
        }
        None => (top_digest, top),
    };
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(parse_err("manifest", &manifest_digest))?;
    let config_digest = manifest.config.digest.clone();
    let config_bytes = big(&config_digest.to_string())?;
    verify("config", &config_digest, &config_bytes)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(parse_err("config", &config_digest))?;

    let chain = layer_chain(&root, &driver, chosen.layer.as_deref())?;
    if chain.len() != config.rootfs.diff_ids.len() || chain.len() != manifest.layers.len() {
        return Err(ImageError::LayerCount {
            layers: chain.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    let dir = super::opened::new_scratch(options.scratch_in, "containers-storage.")?;
    let mut layers = Vec::new();
    for (layer, diff_id) in chain.iter().zip(&config.rootfs.diff_ids) {
        if let Some(recorded) = &layer.diff_digest
            && recorded != diff_id
        {
            return Err(ImageError::TarSplit {
                layer: layer.id.clone(),
                why: format!("the store records it as {recorded}, the image's config as {diff_id}"),
            });
        }
        let (blob, size) = if (options.have)(diff_id) {
            (PathBuf::new(), layer.diff_size.unwrap_or(0))
        } else {
            let out = dir.path().join(format!("{}.tar", layer.id));
            let size = rebuild(&root, &driver, &layer.id, diff_id, &out)?;
            (out, size)
        };
        layers.push(LayerJob {
            blob,
            desc: Descriptor {
                media_type: oci::Compression::None.media_type().to_owned(),
                digest: diff_id.clone(),
                size,
                annotations: Default::default(),
                platform: None,
            },
            diff_id: diff_id.clone(),
        });
    }
    // The layers mm installs are the rebuilt, uncompressed streams, so the manifest it
    // keeps lists those (as for a docker-archive); the config is podman's own.
    Ok(super::opened::with_manifest(
        config_digest,
        config_bytes,
        config,
        layers,
        Some(Scratch::new(dir)),
    ))
}

fn verify(what: &'static str, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
    let actual = Digest::of(bytes);
    if actual == *digest {
        return Ok(());
    }
    Err(ImageError::Corrupt {
        what,
        digest: digest.clone(),
        mismatch: super::digest::Mismatch::Digest {
            expected: digest.clone(),
            actual,
        },
    })
}

/// The image chosen by `wanted`: an id, `REFERENCE@ID`, or a reference compared as docker
/// normalizes names.
fn find<'a>(images: &'a [StoredImage], wanted: &str) -> Option<&'a StoredImage> {
    let id = match wanted.rsplit_once('@') {
        Some((_, id)) if is_id(id) => Some(id),
        _ if is_id(wanted) => Some(wanted),
        _ => None,
    };
    if let Some(id) = id {
        return images.iter().find(|i| i.id == id);
    }
    let wanted = super::opened::normalized(wanted);
    images.iter().find(|i| {
        i.names
            .iter()
            .any(|n| super::opened::normalized(n) == wanted)
    })
}

/// The layers from the bottom up to `top`, following each one's parent.
fn layer_chain(
    root: &Path,
    driver: &str,
    top: Option<&str>,
) -> Result<Vec<StoredLayer>, ImageError> {
    let path = root.join(format!("{driver}-layers/layers.json"));
    let bytes = read_limited(&path)?;
    let mut all: Vec<StoredLayer> =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::NotAStore {
            root: root.to_owned(),
            why: format!("{}: {e}", path.display()),
        })?;
    let mut chain = Vec::new();
    let mut next = top.map(str::to_owned);
    while let Some(id) = next {
        let at = all
            .iter()
            .position(|l| l.id == id)
            .ok_or_else(|| ImageError::NotAStore {
                root: root.to_owned(),
                why: format!("layer {id} is not in {}", path.display()),
            })?;
        // Taken out, so a cycle ends as a missing layer.
        let layer = all.swap_remove(at);
        next = layer.parent.clone();
        chain.push(layer);
    }
    chain.reverse();
    Ok(chain)
}

/// Writes layer `id`'s tar stream to `out` from its tar-split data and diff directory, and
/// checks it against `diff_id`; its size.
fn rebuild(
    root: &Path,
    driver: &str,
    id: &str,
    diff_id: &Digest,
    out: &Path,
) -> Result<u64, ImageError> {
    let fail = |why: String| ImageError::TarSplit {
        layer: id.to_owned(),
        why,
    };
    let diff = match driver {
        "overlay" => root.join("overlay").join(id).join("diff"),
        _ => root.join("vfs/dir").join(id),
    };
    let diff_fd: OwnedFd = rustix::fs::open(
        &diff,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("{}: {e}", diff.display())))?;
    let split = root.join(format!("{driver}-layers/{id}.tar-split.gz"));
    let file = File::open(&split).map_err(|e| {
        fail(format!(
            "{}: {e} (without tar-split data the exact tar stream cannot be rebuilt)",
            split.display()
        ))
    })?;
    let lines = BufReader::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)));
    let mut writer = std::io::BufWriter::new(
        File::options()
            .write(true)
            .create_new(true)
            .open(out)
            .at(out)?,
    );
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut emit =
        |bytes: &[u8], writer: &mut std::io::BufWriter<File>| -> Result<(), ImageError> {
            hasher.update(bytes);
            size += bytes.len() as u64;
            writer.write_all(bytes).at(out)
        };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut buf = vec![0u8; 1 << 16];
    for line in lines.split(b'\n') {
        let line = line.map_err(|e| fail(format!("{}: {e}", split.display())))?;
        if line.is_empty() {
            continue;
        }
        let entry: SplitEntry =
            serde_json::from_slice(&line).map_err(|e| fail(format!("{}: {e}", split.display())))?;
        match entry.kind {
            2 => {
                let payload = entry.payload.unwrap_or_default();
                let bytes = b64
                    .decode(payload)
                    .map_err(|e| fail(format!("a segment that is not base64: {e}")))?;
                emit(&bytes, &mut writer)?;
            }
            1 => {
                let wanted = entry.size.unwrap_or(0);
                if wanted == 0 {
                    continue;
                }
                let name: Vec<u8> = match (entry.name_raw, entry.name) {
                    (Some(raw), _) => b64
                        .decode(raw)
                        .map_err(|e| fail(format!("a name that is not base64: {e}")))?,
                    (None, Some(name)) => name.into_bytes(),
                    (None, None) => return Err(fail("a file entry without a name".to_owned())),
                };
                let shown = String::from_utf8_lossy(&name).into_owned();
                let relative = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name);
                let fd = rustix::fs::openat2(
                    &diff_fd,
                    Path::new(&relative),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
                )
                .map_err(|e| {
                    let hint = if e == rustix::io::Errno::ACCESS
                        && !rustix::process::geteuid().is_root()
                    {
                        " (a file of one of your subordinate ids that only it may read: mm reads \
                         podman's store as you, outside podman's user namespace)"
                    } else {
                        ""
                    };
                    fail(format!("`{shown}` in {}: {e}{hint}", diff.display()))
                })?;
                let mut content = File::from(fd).take(wanted);
                let mut copied = 0u64;
                loop {
                    let n = content
                        .read(&mut buf)
                        .map_err(|e| fail(format!("`{shown}`: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    copied += n as u64;
                    emit(&buf[..n], &mut writer)?;
                }
                if copied != wanted {
                    return Err(fail(format!(
                        "`{shown}` is {copied} bytes in {}, {wanted} in the tar stream",
                        diff.display()
                    )));
                }
            }
            other => return Err(fail(format!("an entry of unknown type {other}"))),
        }
    }
    writer.flush().at(out)?;
    let actual = Digest::from_hasher(hasher);
    if actual != *diff_id {
        return Err(ImageError::DiffId {
            layer: diff_id.clone(),
            mismatch: super::digest::Mismatch::Digest {
                expected: diff_id.clone(),
                actual,
            },
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_files_are_named_as_containers_storage_names_them() {
        assert_eq!(big_data_file("manifest"), "manifest");
        assert_eq!(
            big_data_file(
                "sha256:bb4c2cca9952c426e21975f5567b79b4e7276581fa464a974b0f95315bb087a5"
            ),
            "=c2hhMjU2OmJiNGMyY2NhOTk1MmM0MjZlMjE5NzVmNTU2N2I3OWI0ZTcyNzY1ODFmYTQ2NGE5NzRiMGY5NTMxNWJiMDg3YTU="
        );
    }
}
