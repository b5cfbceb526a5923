//! Every example in machines/ compiles, for a root host and for rootless hosts, to the
//! plan recorded in tests/snapshots. A change to a plan shows up here as a readable diff.

use std::path::{Path, PathBuf};

use mm::definition::Definition;
use mm::host::Host;
use mm::plan;

const HOSTS: &[&str] = &["root-hybrid", "rootless-v2-delegated", "rootless-hybrid"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn host(name: &str) -> Host {
    let path = repo()
        .join("tests/fixtures/hosts")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn examples() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(repo().join("machines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    all.sort();
    assert!(all.len() >= 2, "machines/ holds the examples");
    all
}

/// The checkout's path and the plan hash (which covers that path) vary between clones.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(repo().to_str().unwrap()), "[REPO]");
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[HASH]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn every_example_plans_as_recorded() {
    let settings = settings();
    for path in examples() {
        let def = Definition::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for host_name in HOSTS {
            let name = format!("{}@{host_name}", def.name);
            let text = match plan::compile(&def, &host(host_name), None) {
                Ok(plan) => {
                    let json = serde_json::to_string_pretty(&plan.hashed()).unwrap();
                    settings.bind(|| insta::assert_snapshot!(format!("{name}.json"), json));
                    plan.render()
                }
                Err(diagnostics) => format!("{diagnostics}\n"),
            };
            settings.bind(|| insta::assert_snapshot!(name, text));
        }
    }
}

#[test]
fn examples_run_as_root_and_the_dev_machine_runs_rootless() {
    for path in examples() {
        let def = Definition::load(&path).unwrap();
        assert!(
            plan::compile(&def, &host("root-hybrid"), None).is_ok(),
            "{}",
            def.name
        );
        assert!(
            plan::compile(&def, &host("rootless-v2-delegated"), None).is_ok(),
            "{}",
            def.name
        );
    }
    let dev = Definition::load(&repo().join("machines/dev.toml")).unwrap();
    assert!(plan::compile(&dev, &host("rootless-hybrid"), None).is_ok());
}

#[test]
fn the_same_inputs_give_the_same_bytes_and_any_change_a_new_hash() {
    let path = repo().join("machines/web.toml");
    let root = host("root-hybrid");
    let once = plan::compile(&Definition::load(&path).unwrap(), &root, None).unwrap();
    let twice = plan::compile(&Definition::load(&path).unwrap(), &root, None).unwrap();
    let bytes = |p: &plan::Plan| serde_json::to_vec(&p.hashed()).unwrap();
    assert_eq!(bytes(&once), bytes(&twice));

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("64M", "65M");
    let changed =
        plan::compile(&Definition::from_text(&path, &text).unwrap(), &root, None).unwrap();
    assert_ne!(once.hash(), changed.hash());
    let mut other_host = root.clone();
    other_host.dirs.runtime = "/run/elsewhere".into();
    assert_ne!(
        once.hash(),
        plan::compile(&Definition::load(&path).unwrap(), &other_host, None)
            .unwrap()
            .hash()
    );
}
