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
            let text = match plan::compile(&def, &host(host_name), plan::Known::default()) {
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
            plan::compile(&def, &host("root-hybrid"), plan::Known::default()).is_ok(),
            "{}",
            def.name
        );
        assert!(
            plan::compile(&def, &host("rootless-v2-delegated"), plan::Known::default()).is_ok(),
            "{}",
            def.name
        );
    }
    let dev = Definition::load(&repo().join("machines/dev.toml")).unwrap();
    assert!(plan::compile(&dev, &host("rootless-hybrid"), plan::Known::default()).is_ok());
}

#[test]
fn the_same_inputs_give_the_same_bytes_and_any_change_a_new_hash() {
    let path = repo().join("machines/web.toml");
    let root = host("root-hybrid");
    let once = plan::compile(
        &Definition::load(&path).unwrap(),
        &root,
        plan::Known::default(),
    )
    .unwrap();
    let twice = plan::compile(
        &Definition::load(&path).unwrap(),
        &root,
        plan::Known::default(),
    )
    .unwrap();
    let bytes = |p: &plan::Plan| serde_json::to_vec(&p.hashed()).unwrap();
    assert_eq!(bytes(&once), bytes(&twice));

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("64M", "65M");
    let changed = plan::compile(
        &Definition::from_text(&path, &text).unwrap(),
        &root,
        plan::Known::default(),
    )
    .unwrap();
    assert_ne!(once.hash(), changed.hash());
    let mut other_host = root.clone();
    other_host.dirs.runtime = "/run/elsewhere".into();
    assert_ne!(
        once.hash(),
        plan::compile(
            &Definition::load(&path).unwrap(),
            &other_host,
            plan::Known::default()
        )
        .unwrap()
        .hash()
    );
}

#[test]
fn a_recorded_id_block_replaces_the_allocation_step() {
    let def = Definition::load(&repo().join("machines/web.toml")).unwrap();
    let block = mm::idmap::IdRange {
        start: 0x0009_0000,
        count: 65536,
    };
    let known = plan::Known {
        ids: Some(block),
        ..Default::default()
    };
    let plan = plan::compile(&def, &host("root-hybrid"), known).unwrap();
    let json = serde_json::to_value(&plan.ids).unwrap();
    assert_eq!(json["uid"]["kind"], "map");
    assert_eq!(
        json["uid"]["entries"][0],
        serde_json::json!({"inside": 0, "outside": 0x0009_0000, "count": 65536})
    );
    assert!(
        plan.render().contains("uid map: 0-65535 → 589824-655359"),
        "{}",
        plan.render()
    );
    let fresh = plan::compile(&def, &host("root-hybrid"), plan::Known::default()).unwrap();
    assert_ne!(plan.hash(), fresh.hash());
}

/// `mm run --keep-unit` in `mm@web.service`: the machine's cgroup is the unit's `payload`
/// child, in every hierarchy as root and in the delegated v2 tree for a user; a user on a
/// hybrid host has no cgroup to put limits in.
#[test]
fn in_a_unit_the_machine_goes_below_the_units_cgroup() {
    let def = Definition::load(&repo().join("machines/web.toml")).unwrap();
    let cgroup = |host_name: &str, unit: &str| {
        let mut host = host(host_name);
        host.unit_cgroup = Some(unit.to_owned());
        plan::compile(&def, &host, plan::Known::default())
            .map(|p| serde_json::to_value(&p.cgroup).unwrap())
            .map_err(|d| d.to_string())
    };
    let root = cgroup("root-hybrid", "/machine.slice/mm@web.service").unwrap();
    assert_eq!(root["path"], "machine.slice/mm@web.service/payload");
    let dirs: Vec<&str> = root["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(dirs.len() > 2, "{dirs:?}");
    assert!(
        dirs.iter()
            .all(|d| d.ends_with("/machine.slice/mm@web.service/payload")),
        "{dirs:?}"
    );
    assert!(dirs.contains(&"/sys/fs/cgroup/unified/machine.slice/mm@web.service/payload"));
    assert!(
        root["limits"][0]["file"]
            .as_str()
            .unwrap()
            .starts_with("/sys/fs/cgroup/memory/machine.slice/mm@web.service/payload/"),
        "{root}"
    );

    let unit = "/user.slice/user-1000.slice/user@1000.service/app.slice/mm@web.service";
    let user = cgroup("rootless-v2-delegated", unit).unwrap();
    assert_eq!(
        user["dirs"][0],
        format!("/sys/fs/cgroup{unit}/payload"),
        "{user}"
    );
    // Outside the delegated subtree there is nothing the user may write.
    let outside = cgroup("rootless-v2-delegated", "/system.slice/mm@web.service").unwrap_err();
    assert!(outside.contains("not delegated"), "{outside}");
    let hybrid = cgroup("rootless-hybrid", unit).unwrap_err();
    assert!(hybrid.contains("only cgroup v2"), "{hybrid}");
}
