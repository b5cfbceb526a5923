//! Host facts and the registration step against the real system bus and the real
//! systemd-machined, started by the harness when they are not running.

mod support;

use support::*;

#[test]
fn machined_on_the_system_bus_is_found_and_planned_for() {
    if let Err(why) = system_bus_with_machined() {
        return skip("machined_on_the_system_bus_is_found_and_planned_for", &why);
    }
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let (out, stdout, stderr) = run(mm(dir.path(), &["host", "--json"]));
    assert!(out.status.success(), "{stderr}");
    let facts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(facts["bus"]["system_bus"]["available"], true, "{stdout}");
    assert_eq!(facts["bus"]["machined"]["available"], true, "{stdout}");

    let (out, stdout, stderr) = run(mm(dir.path(), &["plan", "web", "--json"]));
    assert!(out.status.success(), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let registration = &plan["plan"]["registration"];
    assert_eq!(registration["kind"], "machined", "{registration}");
    assert_eq!(registration["name"], "web");
    assert_eq!(registration["class"], "container");
    assert_eq!(registration["id"].as_str().unwrap().len(), 32);
}

#[test]
fn an_unreachable_bus_means_no_registration_and_says_why() {
    let dir = shared_tempdir();
    copy_examples(dir.path());
    let mut command = mm(dir.path(), &["plan", "web", "--json"]);
    command.env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        format!("unix:path={}/no-bus", dir.path().display()),
    );
    let (out, stdout, stderr) = run(command);
    // web has [resources]: the same rule as cli.rs's validation of the examples.
    if let Some(why) = limits_refused_here() {
        assert_eq!(out.status.code(), Some(69), "{why}: {stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let registration = &plan["plan"]["registration"];
    assert_eq!(registration["kind"], "skip");
    let why = registration["why"].as_str().unwrap();
    if is_root() {
        assert!(why.contains("not reachable"), "{registration}");
    } else {
        assert!(why.contains("root only"), "{registration}");
    }
}
