//! Property test: no command line, however odd, makes mm's argument parser (clap, as
//! `main` calls it: `Cli::try_parse_from`) panic; a refused one renders its error. The
//! argument vectors mix mm's real subcommand and flag names (walked from clap's own
//! definition, so new ones are covered) with junk: empty strings, unicode, `--`, `-x`,
//! `--flag=junk`, control characters. Seeded (MM_FUZZ_SEED=N replays another seed) and
//! bounded in cases; it prints the seed, the case count and how many parsed.

#[path = "../src/cli.rs"]
#[allow(dead_code)]
mod cli;

use clap::{CommandFactory, Parser};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const SEED: u64 = 0x6d6d_0c11;
const CASES: u32 = 2000;

/// Every subcommand of mm's CLI at every depth (its path of names), with its own long
/// and short flags and their possible values.
fn commands() -> Vec<(Vec<String>, Vec<String>)> {
    fn walk(command: &clap::Command, path: &[String], all: &mut Vec<(Vec<String>, Vec<String>)>) {
        let mut words = Vec::new();
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                words.push(format!("--{long}"));
            }
            if let Some(short) = arg.get_short() {
                words.push(format!("-{short}"));
            }
            for value in arg.get_possible_values() {
                words.push(value.get_name().to_owned());
            }
        }
        words.push("--help".to_owned());
        all.push((path.to_vec(), words));
        for sub in command.get_subcommands() {
            let mut deeper = path.to_vec();
            deeper.push(sub.get_name().to_owned());
            walk(sub, &deeper, all);
        }
    }
    let mut all = Vec::new();
    walk(&cli::Cli::command(), &[], &mut all);
    all
}

fn argument(words: Vec<String>) -> impl Strategy<Value = String> {
    let word = prop::sample::select(words);
    prop_oneof![
        6 => word.clone(),
        3 => Just("web".to_owned()),
        1 => Just(String::new()),
        1 => Just("--".to_owned()),
        1 => Just("-".to_owned()),
        1 => Just("../../etc/passwd".to_owned()),
        1 => Just("w\u{e9}b/\u{1F600}".to_owned()),
        1 => Just("4294967296".to_owned()),
        1 => Just("-1".to_owned()),
        2 => (word, "[a-z0-9=:/.,@\u{e9}\u{0}\u{7f} -]{0,8}")
            .prop_map(|(w, junk)| format!("{w}={junk}")),
        2 => any::<String>(),
        1 => "-[a-zA-Z]{1,3}",
    ]
}

/// A command line: one of mm's subcommands (sometimes with a word of it misspelt or
/// dropped), then up to 6 arguments from its own flags and junk.
fn command_line(commands: Vec<(Vec<String>, Vec<String>)>) -> impl Strategy<Value = Vec<String>> {
    prop::sample::select(commands).prop_flat_map(|(path, words)| {
        let args = prop::collection::vec(argument(words), 0..6);
        (Just(path), args, 0..10usize).prop_map(|(mut path, args, twist)| {
            match twist {
                0 if !path.is_empty() => {
                    path.pop();
                }
                1 if !path.is_empty() => path[0].push('x'),
                _ => {}
            }
            path.extend(args);
            path
        })
    })
}

fn seeded_runner(test: &str) -> (TestRunner, u64) {
    let seed = match std::env::var("MM_FUZZ_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("MM_FUZZ_SEED={text:?} is not a u64: {e}")),
        Err(_) => SEED,
    };
    eprintln!("{test}: seed {seed} (MM_FUZZ_SEED={seed} reruns it), {CASES} cases");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    (TestRunner::new_with_rng(config, rng), seed)
}

#[test]
fn the_cli_definition_is_consistent() {
    cli::Cli::command().debug_assert();
}

#[test]
fn arbitrary_command_lines_never_panic_the_parser() {
    let commands = commands();
    let words: usize = commands.iter().map(|(_, w)| w.len()).sum();
    let (mut runner, seed) = seeded_runner("arbitrary_command_lines_never_panic_the_parser");
    let counts = std::cell::RefCell::new([0usize; 2]);
    let strategy = command_line(commands.clone());
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |args| {
        let argv = std::iter::once("mm".to_owned()).chain(args.iter().cloned());
        let parsed = std::panic::catch_unwind(|| match cli::Cli::try_parse_from(argv) {
            Ok(_) => true,
            Err(e) => {
                // Rendering the error (or the help it carries) must not panic either.
                let _ = e.render().to_string();
                false
            }
        });
        match parsed {
            Ok(ok) => counts.borrow_mut()[usize::from(ok)] += 1,
            Err(_) => prop_assert!(false, "the parser panicked on {args:?}"),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e} (MM_FUZZ_SEED={seed} reproduces it)");
    }
    let [refused, parsed] = *counts.borrow();
    eprintln!(
        "{} command lines (seed {seed}; {} subcommands, {words} flags and values): {parsed} parsed, {refused} refused, in {:.2} s",
        refused + parsed,
        commands.len(),
        started.elapsed().as_secs_f64()
    );
    // A generator that never gets a command line past clap tests little.
    assert!(parsed * 20 >= refused + parsed, "only {parsed} parsed");
}
