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
fn examples_run_as_root_and_rootless() {
    for path in examples() {
        let def = Definition::load(&path).unwrap();
        assert!(
            plan::compile(&def, &host("root-hybrid"), plan::Known::default()).is_ok(),
            "{}",
            def.name
        );
        let rootless = plan::compile(&def, &host("rootless-v2-delegated"), plan::Known::default());
        assert!(rootless.is_ok(), "{}: {:?}", def.name, rootless.err());
    }
    let dev = Definition::load(&repo().join("machines/dev.toml")).unwrap();
    assert!(plan::compile(&dev, &host("rootless-hybrid"), plan::Known::default()).is_ok());
}

#[test]
fn a_rootless_zone_shares_the_zones_user_namespace() {
    let compile = |text: &str| {
        let def = Definition::from_text(Path::new("machines/rz.toml"), text).unwrap();
        plan::compile(&def, &host("rootless-hybrid"), plan::Known::default())
    };
    let zone = "[image]\nsource = \"docker://busybox\"\n[network]\nzone = \"app\"\n";
    let plan = compile(zone).unwrap();
    assert_eq!(plan.ids.writer, plan::MapWriter::Zone);
    let plan::Network::Link(link) = &plan.network else {
        panic!("{:?}", plan.network)
    };
    let own = link
        .zone
        .as_ref()
        .and_then(|z| z.rootless.as_ref())
        .unwrap();
    assert_eq!(link.mtu, 65520);
    assert!(own.dir.ends_with(".zones/app"), "{}", own.dir.display());
    // Its ids are the zone's: no other range.
    let e = compile(&format!(
        "{zone}[users]\nrange = {{ base = 200000, size = 65536 }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("users.range") && e.contains("share the zone's user namespace"),
        "{e}"
    );
    let e = compile(&format!("{zone}[users]\nkeep_id = true\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("users.keep_id"), "{e}");
    let e = compile(&format!("{zone}mtu = 65535\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("network.mtu") && e.contains("at most 65521"),
        "{e}"
    );
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

/// A stored image as `mm image import` records it, with a config that names a command,
/// an environment, a user and a working directory.
fn stored_image(name: &str) -> mm::image::ImageRecord {
    stored_image_of(name, &['c'])
}

/// [`stored_image`] with a layer for each of `layers` (bottom first), whose digests are
/// the letter repeated.
fn stored_image_of(name: &str, layers: &[char]) -> mm::image::ImageRecord {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let diff_ids: Vec<String> = layers.iter().map(|&c| digest(c)).collect();
    let refs: Vec<serde_json::Value> = layers
        .iter()
        .map(|&c| serde_json::json!({"diff_id": digest(c), "blob": digest('d'), "blob_size": 10}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "name": name,
        "manifest": digest('a'),
        "config_digest": digest('b'),
        "config": {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": "app",
                "Env": ["PATH=/image/bin", "FROM_IMAGE=1", "LANG=en_GB"],
                "Entrypoint": ["/entry", "--flag"],
                "Cmd": ["serve"],
                "WorkingDir": "/work"
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        },
        "layers": refs
    }))
    .unwrap()
}

/// The exact mount sequence of every example, as root and rootless, recorded by
/// `runtime::rootfs::Recorder` (no root, nothing touched): a change in what is mounted, or
/// in what order, shows up in review. The image has two layers, so their order shows.
#[test]
fn every_example_mounts_as_recorded_as_root_and_rootless() {
    let settings = settings();
    for path in examples() {
        let def = Definition::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let record = stored_image_of(&def.image.source.value.to_string(), &['1', '2']);
        for host_name in HOSTS {
            let known = plan::Known {
                image: Some(&record),
                ids: Some(mm::idmap::IdRange {
                    start: 589_824,
                    count: 65_536,
                }),
                taken: &[],
                addresses: plan::KnownAddresses::default(),
                account: None,
            };
            let name = format!("{}@{host_name}.mounts", def.name);
            let text = match plan::compile(&def, &host(host_name), known) {
                Ok(plan) => match mm::runtime::rootfs::sequence(&plan) {
                    Ok(lines) => lines.join("\n") + "\n",
                    Err(failure) => format!("fails: {}: {}\n", failure.step, failure.message),
                },
                Err(rejected) => format!("does not compile here:\n{rejected}\n"),
            };
            settings.bind(|| insta::assert_snapshot!(name, text));
        }
    }
}

/// The plan says what will run: with the image in the store, the command, environment,
/// user and working directory are resolved in it (the definition's over the image's, over
/// mm's defaults), so the plan hash covers them; before, the image is named as unresolved.
#[test]
fn a_stored_image_resolves_the_command_environment_user_and_workdir() {
    let path = repo().join("machines/web.toml");
    let text = "[image]\nsource = \"oci:../images/busybox:latest\"\n\
                [exec]\nenv = { LANG = \"C.UTF-8\" }\nuser = \"www\"\n";
    let def = Definition::from_text(&path, text).unwrap();
    let record = stored_image(&def.image.source.value.to_string());
    let known = plan::Known {
        image: Some(&record),
        ..Default::default()
    };
    let root = host("root-hybrid");
    let resolved = plan::compile(&def, &root, known).unwrap();
    let json = serde_json::to_value(resolved.hashed()).unwrap();
    let command = &json["plan"]["process"]["command"];
    let uuid = json["plan"]["registration"]["id"].as_str().unwrap();
    assert_eq!(
        *command,
        serde_json::json!({
            "state": "resolved",
            "argv": ["/entry", "--flag", "serve"],
            "env": [
                "FROM_IMAGE=1",
                "LANG=C.UTF-8",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "container=mm",
                format!("container_uuid={uuid}"),
            ],
            "user": "www",
            "workdir": "/work",
        }),
        "{json:#}"
    );
    assert_eq!(json["plan"]["process"]["pid1"], "mm-init");
    assert_eq!(json["plan"]["stop"]["signal"], "SIGTERM", "{json:#}");
    let text = resolved.render();
    assert!(
        text.contains("PID 1: mm's init, running /entry --flag serve\n       as www in /work\n"),
        "{text}"
    );
    assert!(
        text.contains("environment: FROM_IMAGE=1 LANG=C.UTF-8 PATH="),
        "{text}"
    );

    let unresolved = plan::compile(&def, &root, plan::Known::default()).unwrap();
    let json = serde_json::to_value(&unresolved.process).unwrap();
    assert_eq!(json["command"]["state"], "unresolved", "{json:#}");
    assert_eq!(json["command"]["argv"], serde_json::Value::Null);
    assert_eq!(json["command"]["user"], "www");
    assert!(
        unresolved
            .render()
            .contains("unresolved until the image is in the store")
    );
    assert_ne!(resolved.hash(), unresolved.hash());
}

/// The machine's /sys/fs/cgroup comes from the host's hierarchies as probed, with their
/// options; only the trees a booted init manages are writable, and only when it boots.
#[test]
fn the_cgroup_tree_names_the_hosts_hierarchies() {
    let path = repo().join("machines/web.toml");
    let tree = |text: &str, host_name: &str| {
        let def = Definition::from_text(&path, text).unwrap();
        let plan = plan::compile(&def, &host(host_name), plan::Known::default()).unwrap();
        let mounts = serde_json::to_value(&plan.mounts).unwrap();
        mounts
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == "cgroup-tree")
            .cloned()
            .unwrap()
    };
    let source = "[image]\nsource = \"oci:../images/busybox:latest\"\n";
    let command = format!("{source}[exec]\ncommand = [\"/bin/true\"]\n");
    let boot = format!("{source}[exec]\nboot = true\n");
    let hierarchy = |tree: &serde_json::Value, dir: &str| {
        tree["hierarchies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["dir"] == dir)
            .cloned()
            .unwrap_or_else(|| panic!("no {dir} in {tree:#}"))
    };
    let hybrid = tree(&command, "root-hybrid");
    assert_eq!(hybrid["mode"], "hybrid");
    assert_eq!(
        hybrid["hierarchies"].as_array().unwrap().len(),
        10,
        "{hybrid:#}"
    );
    assert_eq!(
        hierarchy(&hybrid, "systemd"),
        serde_json::json!({"dir": "systemd", "fstype": "cgroup",
                           "options": ["xattr", "name=systemd"], "writable": false})
    );
    assert_eq!(hierarchy(&hybrid, "unified")["fstype"], "cgroup2");
    assert_eq!(
        hierarchy(&hybrid, "memory")["options"],
        serde_json::json!(["memory"])
    );

    let booted = tree(&boot, "root-hybrid");
    assert_eq!(hierarchy(&booted, "systemd")["writable"], true);
    assert_eq!(hierarchy(&booted, "unified")["writable"], true);
    assert_eq!(hierarchy(&booted, "memory")["writable"], false);

    let v2 = tree(&boot, "rootless-v2-delegated");
    assert_eq!(
        v2["hierarchies"],
        serde_json::json!([{"dir": "", "fstype": "cgroup2", "options": [], "writable": true}])
    );
}

/// A host whose cgroups are v1 or hybrid but with no hierarchy directly under
/// /sys/fs/cgroup cannot show a machine its tree: the plan says so, not the start.
#[test]
fn no_cgroup_hierarchy_under_sys_fs_cgroup_is_what_the_host_cannot_do() {
    let def = Definition::load(&repo().join("machines/web.toml")).unwrap();
    let mut elsewhere = host("root-hybrid");
    for h in &mut elsewhere.cgroup.v1 {
        h.path = Path::new("/cgroups").join(h.path.file_name().unwrap());
    }
    elsewhere.cgroup.unified = Some("/cgroups/unified".into());
    let rejected = plan::compile(&def, &elsewhere, plan::Known::default()).unwrap_err();
    assert!(
        matches!(rejected, plan::Rejected::HostCannot(_)),
        "{rejected:?}"
    );
    let message = rejected.to_string();
    assert!(
        message.contains("no cgroup hierarchy is mounted under /sys/fs/cgroup"),
        "{message}"
    );
}

/// The supervisor is only ever given a plan that says what runs: a launch of a plan whose
/// image is not stored yet is refused, naming the image; a resolved one copies the plan.
#[test]
fn a_launch_takes_its_command_from_the_plan_and_refuses_an_unresolved_one() {
    use mm::runtime::{Console, Launch};
    let def = Definition::load(&repo().join("machines/web.toml")).unwrap();
    let root = host("root-hybrid");
    let unresolved = plan::compile(&def, &root, plan::Known::default()).unwrap();
    let refused = Launch::new(unresolved, Console::Pipe)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("the plan does not say what runs yet"),
        "{refused}"
    );
    assert!(refused.contains("images/busybox:latest"), "{refused}");

    let record = stored_image(&def.image.source.value.to_string());
    let known = plan::Known {
        image: Some(&record),
        ..Default::default()
    };
    let resolved = plan::compile(&def, &root, known).unwrap();
    let launch = Launch::new(resolved.clone(), Console::Pipe).unwrap();
    let plan::Command::Resolved(exec) = &resolved.process.command else {
        panic!("{:?}", resolved.process.command);
    };
    assert_eq!(
        launch.argv,
        ["/bin/httpd", "-f", "-v", "-p", "8080", "-h", "/srv"]
    );
    assert_eq!(launch.argv, exec.argv);
    assert_eq!(launch.env, exec.env);
    assert_eq!(
        (launch.user.as_str(), launch.workdir.as_str()),
        ("app", "/srv")
    );
    assert!(!launch.boot);
}

/// Alice as the host's name service gives her: in `audio` (29), `docker` (999) and `root`.
fn alice() -> mm::host::HostAccount {
    serde_json::from_value(serde_json::json!({
        "name": "alice", "uid": 1000, "gid": 1000, "group": "alice",
        "home": "/home/alice", "shell": "/usr/bin/zsh",
        "groups": [
            {"name": "audio", "gid": 29},
            {"name": "docker", "gid": 999},
            {"name": "root", "gid": 0}
        ]
    }))
    .unwrap()
}

/// A keep-id machine: as root (keep_id names alice; her ids carved out of the machine's
/// block, her groups mapped but root's) and rootless (alice herself; the keep-id map and
/// the store's keep-id layout, her other groups left out), each with its machine home,
/// in text, JSON and its mounts.
#[test]
fn a_keep_id_machine_plans_as_recorded() {
    let settings = settings();
    for (host_name, who) in [
        ("root-hybrid", "\"alice\""),
        ("rootless-v2-delegated", "true"),
    ] {
        let text = format!(
            "[image]\nsource = \"oci:../images/debian:12\"\n[exec]\ncommand = [\"sleep\", \"infinity\"]\n\
             [storage]\npersistent = false\nbinds = [{{ source = \"~/src\", target = \"/home/alice/src\" }}]\n\
             [users]\nkeep_id = {who}\n"
        );
        let def = Definition::from_text(&repo().join("machines/devbox.toml"), &text).unwrap();
        let record = stored_image_of(&def.image.source.value.to_string(), &['1']);
        let account = alice();
        let known = plan::Known {
            image: Some(&record),
            ids: Some(mm::idmap::IdRange {
                start: 589_824,
                count: 65_536,
            }),
            account: Some(&account),
            ..Default::default()
        };
        let plan = plan::compile(&def, &host(host_name), known).unwrap();
        let mounts = mm::runtime::rootfs::sequence(&plan).unwrap().join("\n") + "\n";
        let json = serde_json::to_string_pretty(&plan.hashed()).unwrap();
        settings.bind(|| {
            insta::assert_snapshot!(format!("keep-id@{host_name}"), plan.render());
            insta::assert_snapshot!(format!("keep-id@{host_name}.json"), json);
            insta::assert_snapshot!(format!("keep-id@{host_name}.mounts"), mounts);
        });
        // The same user inside: the keep-id uid and gid are alice's host ids.
        let (plan::IdMapping::Map { entries: uids }, plan::IdMapping::Map { entries: gids }) =
            (&plan.ids.uid, &plan.ids.gid)
        else {
            panic!("{:?}", plan.ids);
        };
        assert_eq!(mm::idmap::outside_of(uids, 1000), Some(1000));
        assert_eq!(mm::idmap::outside_of(gids, 1000), Some(1000));
        let keep = plan.keep_id.as_ref().unwrap();
        assert_eq!(keep.shells, ["/usr/bin/zsh", "/bin/bash", "/bin/sh"]);
        assert_eq!(keep.home, "/home/alice");
        if host_name.starts_with("root-") {
            assert_eq!(mm::idmap::outside_of(uids, 0), Some(589_824));
            assert_eq!(mm::idmap::outside_of(gids, 29), Some(29));
            assert_eq!(mm::idmap::outside_of(gids, 0), Some(589_824));
            assert_eq!(plan.image.layout, mm::image::Layout::Default);
        } else {
            assert_ne!(mm::idmap::outside_of(uids, 0), Some(1000));
            assert!(keep.groups.is_empty() && keep.left_out.len() == 3);
            assert_eq!(
                plan.image.layout,
                mm::image::Layout::KeepId {
                    uid: 1000,
                    gid: 1000
                }
            );
        }
    }
}

/// What keep_id cannot be on a host: `true` as root, another user rootless, a user the
/// host does not have.
#[test]
fn keep_id_that_the_host_cannot_give_is_refused_at_its_line() {
    let with = |who: &str| {
        let text = format!(
            "[image]\nsource = \"docker://debian\"\n[exec]\ncommand = [\"sh\"]\n[users]\nkeep_id = {who}\n"
        );
        Definition::from_text(Path::new("machines/devbox.toml"), &text).unwrap()
    };
    let account = alice();
    let reject = |who: &str, host_name: &str, account: Option<&mm::host::HostAccount>| {
        let known = plan::Known {
            account,
            ..Default::default()
        };
        let rejected = plan::compile(&with(who), &host(host_name), known).unwrap_err();
        let d = &rejected.diagnostics().0[0];
        assert_eq!(d.key.as_deref(), Some("users.keep_id"), "{rejected}");
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(6), "{rejected}");
        rejected.to_string()
    };
    let root_true = reject("true", "root-hybrid", Some(&account));
    assert!(root_true.contains("names a host user"), "{root_true}");
    assert!(root_true.contains("keep_id = \"alice\""), "{root_true}");
    let other = reject("\"bob\"", "rootless-v2-delegated", Some(&account));
    assert!(other.contains("not you (`alice`)"), "{other}");
    let missing = reject("\"carol\"", "root-hybrid", None);
    assert!(missing.contains("no host user `carol`"), "{missing}");
}
