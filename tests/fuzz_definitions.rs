//! Property tests: no definition text, however odd, makes mm panic. Text that is refused is
//! refused with diagnostics that point inside the file; text that is accepted compiles (or
//! is refused by the host) without panicking, for a root host and for rootless hosts.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use mm::definition::{Definition, Diagnostics};
use mm::host::Host;
use mm::plan;

const PATH: &str = "machines/web.toml";

/// Fixed host facts, as `mm host --json` prints them.
fn hosts() -> Vec<(&'static str, Host)> {
    let parse = |name: &'static str, json: &str| {
        let host: Host = serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        (name, host)
    };
    vec![
        parse(
            "root-hybrid",
            include_str!("fixtures/hosts/root-hybrid.json"),
        ),
        parse(
            "rootless-v2-delegated",
            include_str!("fixtures/hosts/rootless-v2-delegated.json"),
        ),
        parse(
            "rootless-hybrid",
            include_str!("fixtures/hosts/rootless-hybrid.json"),
        ),
    ]
}

/// Every diagnostic has a sane location inside `text`, and renders naming `path`.
fn check_diagnostics(path: &Path, text: &str, all: &Diagnostics) -> Result<(), TestCaseError> {
    prop_assert!(!all.0.is_empty(), "an error without diagnostics");
    let lines: Vec<&str> = text.split('\n').collect();
    let shown = path.display().to_string();
    for d in &all.0 {
        let rendered = d.to_string();
        prop_assert!(
            rendered.contains(&shown),
            "{rendered:?} does not name {shown:?}"
        );
        prop_assert_eq!(&d.file, path);
        if let Some(loc) = &d.location {
            prop_assert!(loc.line >= 1, "line {} in {rendered}", loc.line);
            prop_assert!(loc.column >= 1, "column {} in {rendered}", loc.column);
            prop_assert!(loc.width >= 1, "width {} in {rendered}", loc.width);
            prop_assert!(
                loc.line <= lines.len(),
                "line {} of {} in {rendered}",
                loc.line,
                lines.len()
            );
            let line = lines[loc.line - 1];
            prop_assert_eq!(loc.line_text.as_str(), line.trim_end_matches('\r'));
            // A span may point at the end of a line, which for CRLF text is past its `\r`.
            prop_assert!(
                loc.column <= line.chars().count() + 1,
                "column {} past the end of {line:?}",
                loc.column
            );
            let arrow = format!("--> {shown}:{}:{}", loc.line, loc.column);
            prop_assert!(rendered.contains(&arrow), "{rendered}");
        }
    }
    Ok(())
}

/// What became of one definition text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Refused by the TOML parser.
    Syntax,
    /// Parsed, and refused by structure or validation.
    Invalid,
    /// Accepted.
    Valid,
}

/// Loads `text` as `path`; compiles what is accepted for every host. Panics propagate.
fn exercise(path: &Path, text: &str, hosts: &[(&str, Host)]) -> Result<Outcome, TestCaseError> {
    let def = match Definition::from_text(path, text) {
        Ok(def) => def,
        Err(all) => {
            check_diagnostics(path, text, &all)?;
            let syntax = all.0.iter().all(|d| d.message.starts_with("TOML syntax"));
            return Ok(if syntax {
                Outcome::Syntax
            } else {
                Outcome::Invalid
            });
        }
    };
    for (name, host) in hosts {
        match plan::compile(&def, host, plan::Known::default()) {
            Ok(plan) => {
                let _ = plan.render();
                let _ = plan.hash();
            }
            Err(rejected) => {
                let all = rejected.diagnostics();
                check_diagnostics(path, text, all)
                    .map_err(|e| TestCaseError::fail(format!("compiling for {name}: {e}")))?;
                for d in &all.0 {
                    prop_assert!(d.key.is_some(), "a host error without a key: {d}");
                }
            }
        }
    }
    Ok(Outcome::Valid)
}

// ---- (a) arbitrary text --------------------------------------------------------------------

/// Text made of TOML's punctuation and a few words, so that more of it gets past the
/// first character of the parser than random Unicode does.
fn toml_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[image]\n".to_owned()),
        Just("[exec]\n".to_owned()),
        Just("[[storage.binds]]\n".to_owned()),
        Just("source = ".to_owned()),
        Just("\"docker://busybox\"".to_owned()),
        Just("command = [".to_owned()),
        Just("{ base = 1, size = 2 }".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        "[\\[\\]{}=\"'#.,:/ a-z0-9\\\\\t\n\u{e9}\u{1F600}\u{0}\u{7f}-]{1,6}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|parts| parts.concat())
}

fn weird_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(PATH.to_owned()),
        1 => Just("/tmp/x/my_web.toml".to_owned()),
        1 => Just("machines/web.yaml".to_owned()),
        1 => Just("w\u{e9}b.toml".to_owned()),
        1 => Just(".toml".to_owned()),
        1 => "[a-z_./-]{0,12}(\\.toml)?",
    ]
}

/// The seed every run uses, so that a failure (and the outcome counts) can be reproduced.
const SEED: u64 = 0x6d6d_0001;

/// A runner of `cases` cases from a fixed seed (MM_FUZZ_SEED=N chooses another), which
/// it prints: a failure then reproduces with the same seed, no persistence file needed.
fn seeded_runner(test: &str, cases: u32) -> (TestRunner, u64) {
    let seed = match std::env::var("MM_FUZZ_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("MM_FUZZ_SEED={text:?} is not a u64: {e}")),
        Err(_) => SEED,
    };
    eprintln!("{test}: seed {seed} (MM_FUZZ_SEED={seed} reruns it)");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    (TestRunner::new_with_rng(config, rng), seed)
}

#[test]
fn arbitrary_text_never_panics() {
    let (mut runner, seed) = seeded_runner("arbitrary_text_never_panics", 2000);
    let strategy = (weird_path(), prop_oneof![any::<String>(), toml_soup()]);
    let result = runner.run(&strategy, |(path, text)| {
        exercise(Path::new(&path), &text, &[])?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e} (MM_FUZZ_SEED={seed} reproduces it)");
    }
}

// ---- (b) and (c): TOML built from the real schema (fuzz_schema/mod.rs) ---------------------

mod fuzz_schema;
use fuzz_schema::definition;

#[test]
fn definitions_from_the_schema_never_panic_and_compile_for_every_host() {
    let hosts = hosts();
    let (mut runner, seed) = seeded_runner(
        "definitions_from_the_schema_never_panic_and_compile_for_every_host",
        1000,
    );
    let counts = std::cell::RefCell::new([0usize; 3]);
    let path = Path::new(PATH);
    let result = runner.run(&definition(), |text| {
        let outcome = exercise(path, &text, &hosts)?;
        counts.borrow_mut()[outcome as usize] += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e} (MM_FUZZ_SEED={seed} reproduces it)");
    }
    // The generator is only useful if most cases get past the parser, and many all the
    // way to compilation.
    let [syntax, invalid, valid] = *counts.borrow();
    let total = syntax + invalid + valid;
    eprintln!(
        "{total} definitions (seed {seed}): {syntax} syntax errors, {invalid} invalid, {valid} valid"
    );
    assert!(
        syntax * 4 < total,
        "{syntax} of {total} cases were TOML syntax errors"
    );
    assert!(
        valid * 10 >= total,
        "only {valid} of {total} cases were valid definitions"
    );
    assert!(
        invalid * 4 >= total,
        "only {invalid} of {total} cases were refused by validation"
    );
}
