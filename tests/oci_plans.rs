//! OCI bundles' config.json compiled into mm's plan (`mm oci plan`), for a root host and
//! a rootless one, recorded in tests/snapshots: `runc spec`'s and `crun spec --rootless`'s
//! configs (with `terminal` off), one full of fields mm does not support and one of values
//! it refuses, each refusal with its JSON path, and one that joins network and IPC
//! namespaces by path (a pod's). Also
//! each plan's exact mount sequence.

use std::path::{Path, PathBuf};

use mm::host::Host;

const HOSTS: &[&str] = &["root-hybrid", "rootless-v2-delegated"];
const BUNDLES: &[&str] = &["runc", "crun-rootless", "unsupported", "refused", "joins"];

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

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    let repo = repo().to_str().unwrap().replace('.', "\\.");
    settings.add_filter(&repo, "[REPO]");
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[HASH]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn options() -> mm::oci::Options {
    mm::oci::Options {
        state_root: PathBuf::from("/run/mm-oci"),
        systemd_cgroup: false,
    }
}

#[test]
fn bundles_plan_as_recorded() {
    let settings = settings();
    let mut plans = 0;
    let mut refusals = 0;
    for bundle in BUNDLES {
        let dir = repo().join("tests/fixtures/oci").join(bundle);
        for host_name in HOSTS {
            let name = format!("oci-{bundle}@{host_name}");
            let text = match mm::oci::plan(&dir, "ctr1", &host(host_name), &options()) {
                Ok(plan) => {
                    plans += 1;
                    let json = serde_json::to_string_pretty(&plan.hashed()).unwrap();
                    settings.bind(|| insta::assert_snapshot!(format!("{name}.json"), json));
                    let mounts = mm::runtime::rootfs::sequence(&plan)
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                        .join("\n");
                    settings.bind(|| insta::assert_snapshot!(format!("{name}.mounts"), mounts));
                    plan.render()
                }
                Err(e) => {
                    refusals += 1;
                    format!("{e}\n")
                }
            };
            settings.bind(|| insta::assert_snapshot!(name, text));
        }
    }
    println!("{plans} plans and {refusals} refusals recorded");
    // runc's spec has no user namespace: fine as root, refused rootless; crun's rootless
    // one has a user namespace without maps: mm's own rootless, refused as root; the last
    // two are refused everywhere; the one that joins namespaces by path needs root.
    assert_eq!((plans, refusals), (3, 7));
}

/// Rootless podman's config.json (its default network: a namespace podman made, joined by
/// path; no user namespace; `net.ipv4.ping_group_range` for that network namespace), as mm
/// takes it running as uid 0 of podman's user namespace (the `podman-rootless` host): the
/// container's user namespace maps that namespace's ids onto themselves, written by mm
/// itself; the network namespace is joined and its parameter written there; no cgroup of
/// its own. An ordinary user outside podman's namespace is refused the same config.
#[test]
fn rootless_podmans_bundle_plans_in_podmans_user_namespace() {
    let settings = settings();
    let dir = repo().join("tests/fixtures/oci/podman-rootless");
    let plan = mm::oci::plan(&dir, "ctr1", &host("podman-rootless"), &options()).unwrap();
    assert_eq!(plan.ids.writer, mm::plan::MapWriter::Direct);
    let name = "oci-podman-rootless@podman-rootless";
    settings.bind(|| insta::assert_snapshot!(name, plan.render()));
    let mounts = mm::runtime::rootfs::sequence(&plan).unwrap().join("\n");
    settings.bind(|| insta::assert_snapshot!(format!("{name}.mounts"), mounts));
    let Err(mm::oci::OciError::Config { errors, .. }) =
        mm::oci::plan(&dir, "ctr1", &host("rootless-v2-delegated"), &options())
    else {
        panic!("an ordinary user took a join and no user namespace");
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "linux.namespaces[1].path",
            "linux.namespaces",
            "linux.sysctl.net.ipv4.ping_group_range"
        ],
        "{errors:?}"
    );
}

/// Every refusal names its field's JSON path, and none is left out for a later one.
#[test]
fn every_unsupported_field_is_named_with_its_path() {
    let dir = repo().join("tests/fixtures/oci/unsupported");
    let Err(mm::oci::OciError::Config { errors, .. }) = mm::oci::load(&dir) else {
        panic!("the unsupported bundle loaded");
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    println!("{} fields refused: {paths:?}", paths.len());
    assert_eq!(
        paths,
        [
            "linux.maskedPath",
            "linux.resources.cpu.realtimeRuntime",
            "linux.seccomp.listenerPath",
            "process.selinuxLabel",
        ]
    );
    assert!(
        errors[0].why.contains("did you mean `maskedPaths`"),
        "{}",
        errors[0]
    );
}

/// A bundle's seccomp profile in the plan (typed, with its digest, the names this
/// libseccomp does not know listed), and one with a bad value in each part, each refused
/// at its JSON path.
#[test]
fn seccomp_profiles_plan_and_refuse_with_their_paths() {
    let settings = settings();
    let host = host("root-hybrid");
    let dir = repo().join("tests/fixtures/oci/seccomp");
    let plan = mm::oci::plan(&dir, "ctr1", &host, &options()).unwrap();
    let mm::plan::Seccomp::Profile(profile) = &plan.security.seccomp else {
        panic!("no profile in the plan: {:?}", plan.security.seccomp);
    };
    println!(
        "{} rules, skipped {:?}, {}",
        profile.filter.rules.len(),
        profile.skipped,
        profile.digest
    );
    assert_eq!(profile.skipped, ["no_such_call_yet"]);
    // The mkdir rule is the default action: left out.
    assert_eq!(profile.filter.rules.len(), 7);
    let json = serde_json::to_string_pretty(&plan.security).unwrap();
    settings.bind(|| insta::assert_snapshot!("oci-seccomp@root-hybrid.security.json", json));
    settings.bind(|| insta::assert_snapshot!("oci-seccomp@root-hybrid", plan.render()));
    let again = mm::oci::plan(&dir, "ctr2", &host, &options()).unwrap();
    assert_eq!(
        again.security.seccomp, plan.security.seccomp,
        "same profile, same digest"
    );

    let dir = repo().join("tests/fixtures/oci/seccomp-refused");
    let Err(mm::oci::OciError::Config { errors, .. }) =
        mm::oci::plan(&dir, "ctr1", &host, &options())
    else {
        panic!("the bad profile was taken");
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    println!("{} seccomp values refused: {paths:?}", paths.len());
    assert_eq!(
        paths,
        [
            "linux.seccomp.defaultAction",
            "linux.seccomp.architectures[1]",
            "linux.seccomp.flags[0]",
            "linux.seccomp.syscalls[0].errnoRet",
            "linux.seccomp.syscalls[1].action",
            "linux.seccomp.syscalls[2].errnoRet",
            "linux.seccomp.syscalls[3].args[0].index",
            "linux.seccomp.syscalls[3].args[1].op",
        ]
    );
    let text = errors.iter().map(|e| format!("{e}\n")).collect::<String>();
    settings.bind(|| insta::assert_snapshot!("oci-seccomp-refused@root-hybrid", text));
}
