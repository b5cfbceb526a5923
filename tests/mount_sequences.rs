//! The exact mount sequence of every example, as root and rootless, recorded by
//! `runtime::rootfs::Recorder` (no root, nothing touched) and snapshotted in
//! tests/snapshots: a change in what is mounted, or in what order, shows up in review.

use std::path::{Path, PathBuf};

use mm::definition::Definition;
use mm::host::Host;
use mm::idmap::IdRange;
use mm::image::store::ImageRecord;
use mm::plan;

const HOSTS: &[&str] = &["root-hybrid", "rootless-v2-delegated", "rootless-hybrid"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn host(name: &str) -> Host {
    let path = repo()
        .join("tests/fixtures/hosts")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn examples() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(repo().join("machines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    all.sort();
    assert!(!all.is_empty(), "machines/ holds the examples");
    all
}

/// A stored image of two layers, with fixed digests, under the example's source name.
fn stored(source: &str) -> ImageRecord {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    serde_json::from_value(serde_json::json!({
        "name": source,
        "manifest": digest('a'),
        "config_digest": digest('b'),
        "config": {
            "architecture": "amd64",
            "os": "linux",
            "config": { "Cmd": ["/bin/sh"] },
            "rootfs": { "type": "layers", "diff_ids": [digest('1'), digest('2')] }
        },
        "layers": [
            { "diff_id": digest('1'), "blob": digest('c'), "blob_size": 1 },
            { "diff_id": digest('2'), "blob": digest('d'), "blob_size": 1 }
        ]
    }))
    .unwrap()
}

#[test]
fn every_example_mounts_as_recorded_as_root_and_rootless() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    let checkout = repo().to_str().unwrap().replace('.', "\\.");
    settings.add_filter(&checkout, "[REPO]");
    for path in examples() {
        let def = Definition::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let record = stored(&def.image.source.value.to_string());
        for host_name in HOSTS {
            let known = plan::Known {
                image: Some(&record),
                ids: Some(IdRange {
                    start: 589_824,
                    count: 65_536,
                }),
                taken: &[],
            };
            let name = format!("{}@{host_name}.mounts", def.name);
            let text = match plan::compile(&def, &host(host_name), known) {
                Ok(plan) => match mm::runtime::rootfs::sequence(&plan) {
                    Ok(lines) => lines.join("\n") + "\n",
                    Err(failure) => format!("fails: {}: {}\n", failure.step, failure.message),
                },
                Err(diagnostics) => format!("does not compile here:\n{diagnostics}\n"),
            };
            settings.bind(|| insta::assert_snapshot!(name, text));
        }
    }
}
