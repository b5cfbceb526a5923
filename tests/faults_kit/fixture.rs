//! The large-layer image the import rounds use: an OCI layout with one uncompressed layer
//! of 64 MiB (256 files of 256 KiB of seeded noise, and 1,024 small files in 32
//! directories), built once into the system's temporary directory and reused.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::Rng;

const VERSION: &str = "v2";

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

/// The layout's path (every user may read it); built when missing.
pub fn big_layer_image() -> PathBuf {
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("mm-faults-big-layer-{VERSION}"));
    if dir.join("index.json").exists() {
        return dir;
    }
    let building = std::env::temp_dir().join(format!(
        "mm-faults-big-layer-{VERSION}.{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&building);
    build(&building);
    // Another test binary may have built it meanwhile: either copy is the same.
    if std::fs::rename(&building, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(
        dir.join("index.json").exists(),
        "{} was built",
        dir.display()
    );
    dir
}

/// A ustar header owned by 0:0.
fn header(mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header
}

fn build(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer_path = dir.join("layer.tar");
    {
        let file = std::fs::File::create(&layer_path).unwrap();
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        let mut rng = Rng::new(16);
        let dir_entry = |tar: &mut tar::Builder<_>, name: &str| {
            let mut header = header(0o755, 0);
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, name, std::io::empty())
                .unwrap();
        };
        dir_entry(&mut tar, "big/");
        let mut data = vec![0u8; 256 << 10];
        for i in 0..256 {
            for chunk in data.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            let mut header = header(0o644, data.len() as u64);
            tar.append_data(&mut header, format!("big/blob-{i:03}"), &data[..])
                .unwrap();
        }
        for d in 0..32 {
            dir_entry(&mut tar, &format!("small/d{d:02}/"));
            for f in 0..32 {
                let body = format!("file {f} of directory {d}, {}\n", rng.next());
                let mut header = header(0o644, body.len() as u64);
                tar.append_data(
                    &mut header,
                    format!("small/d{d:02}/f{f:02}"),
                    body.as_bytes(),
                )
                .unwrap();
            }
        }
        tar.into_inner().unwrap().flush().unwrap();
    }
    let layer = std::fs::read(&layer_path).unwrap();
    let layer_hex = hex(&Sha256::digest(&layer));
    let layer_size = layer.len();
    drop(layer);
    std::fs::rename(&layer_path, blobs.join(&layer_hex)).unwrap();
    let put = |bytes: Vec<u8>| -> (String, usize) {
        let h = hex(&Sha256::digest(&bytes));
        std::fs::write(blobs.join(&h), &bytes).unwrap();
        (h, bytes.len())
    };
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
    });
    let (config_hex, config_size) = put(serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_hex}"),
            "size": layer_size,
        }],
    });
    let (manifest_hex, manifest_size) = put(serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The layers an OCI layout's images hold: diff_id hex → the blob's path.
pub fn layout_layers(layout: &Path) -> Vec<(String, PathBuf)> {
    let read = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(digest.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = read(layout.join("index.json"));
    let mut layers = Vec::new();
    for entry in index["manifests"].as_array().unwrap() {
        let manifest = read(blob(&entry["digest"]));
        let config = read(blob(&manifest["config"]["digest"]));
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        for (diff_id, layer) in diff_ids.iter().zip(manifest["layers"].as_array().unwrap()) {
            layers.push((
                diff_id
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_owned(),
                blob(&layer["digest"]),
            ));
        }
    }
    layers
}
