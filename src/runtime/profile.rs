//! A bundle's seccomp profile compiled to BPF with libseccomp, at `mm oci create` (before
//! the supervisor clones PID 1), and the compiled program cached by the profile's digest.
//!
//! A cache entry is `CACHE/seccomp/HEX.ARCH.libseccomp-X.Y.Z.bpf`: the digest of the
//! profile's canonical form, the machine's architecture and the libseccomp version
//! (another version may compile the same profile otherwise). Its content is the sha256
//! of the program, then the program; it is written atomically and read back checked
//! (the hash, whole 8-byte instructions, at most `BPF_MAXINSNS`): a damaged entry is
//! compiled again and replaced, never loaded. The program reaches PID 1 in the launch,
//! in memory: nothing is read from the host once PID 1 is in the container's root.

use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use sha2::{Digest as _, Sha256};

use super::seccomp::{BadProgram, Program};
use crate::plan::seccomp::{Action, CmpOp, Filter, Profile};

/// Why a profile could not be compiled or cached.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("libseccomp cannot {what}: {source}")]
    Libseccomp {
        what: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("the compiled seccomp profile: {0}")]
    Program(#[from] BadProgram),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the program was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken from the cache: nothing was compiled.
    Cached,
    /// Compiled, and written to the cache (or not: why).
    Compiled { stored: Result<(), String> },
    /// The cache entry was damaged (why): compiled again and replaced.
    Recompiled {
        damage: String,
        stored: Result<(), String>,
    },
}

/// The cache entry of `profile` under `dir` (`CACHE/seccomp`).
pub fn cache_path(profile: &Profile, dir: &Path) -> Result<PathBuf, ProfileError> {
    let version = ScmpVersion::current().map_err(|source| ProfileError::Libseccomp {
        what: "say its version".to_owned(),
        source,
    })?;
    let hex = profile
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&profile.digest);
    Ok(dir.join(format!(
        "{hex}.{}.libseccomp-{}.{}.{}.bpf",
        std::env::consts::ARCH,
        version.major,
        version.minor,
        version.micro
    )))
}

/// The program of `profile`: from the cache in `dir` when its entry is sound, else
/// compiled (and stored there).
pub fn load_or_compile(profile: &Profile, dir: &Path) -> Result<(Program, Outcome), ProfileError> {
    let path = cache_path(profile, dir)?;
    let flags = profile.filter.flags.clone();
    let damage = match std::fs::read(&path) {
        Ok(bytes) => match entry(&bytes) {
            Ok(program) => return Ok((Program::new(program.to_vec(), flags)?, Outcome::Cached)),
            Err(why) => Some(why),
        },
        // No entry, or no cache directory (a path through a file: then storing fails too).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            None
        }
        Err(e) => Some(format!("unreadable: {e}")),
    };
    let program = compile(&profile.filter)?;
    let stored = store(dir, &path, &program).map_err(|e| format!("{}: {e}", path.display()));
    let outcome = match damage {
        None => Outcome::Compiled { stored },
        Some(damage) => Outcome::Recompiled { damage, stored },
    };
    Ok((program, outcome))
}

/// The program in a cache entry's bytes, or what is wrong with them.
fn entry(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 32 {
        return Err(format!("{} bytes, shorter than its hash", bytes.len()));
    }
    let (hash, program) = bytes.split_at(32);
    if Sha256::digest(program).as_slice() != hash {
        return Err("its program does not match its hash".to_owned());
    }
    Program::new(program.to_vec(), Vec::new()).map_err(|e| e.to_string())?;
    Ok(program)
}

fn store(dir: &Path, path: &Path, program: &Program) -> std::io::Result<()> {
    crate::state::private_dir(dir)?;
    let mut bytes = Sha256::digest(program.bytes()).to_vec();
    bytes.extend_from_slice(program.bytes());
    crate::state::write_atomically(path, &bytes)
}

/// Compiles `filter` with libseccomp and exports its BPF.
pub fn compile(filter: &Filter) -> Result<Program, ProfileError> {
    let lib = |what: String| move |source| ProfileError::Libseccomp { what, source };
    let mut ctx = ScmpFilterContext::new(action(filter.default_action))
        .map_err(lib("make a filter".to_owned()))?;
    for name in &filter.architectures {
        let arch: ScmpArch = name
            .parse()
            .map_err(lib(format!("take the architecture {name}")))?;
        if !ctx
            .is_arch_present(arch)
            .map_err(lib(format!("look for the architecture {name}")))?
        {
            ctx.add_arch(arch)
                .map_err(lib(format!("add the architecture {name}")))?;
        }
    }
    for rule in &filter.rules {
        let what = || format!("add the rule {} {}", rule.syscall, rule.action);
        let call = ScmpSyscall::from_name(&rule.syscall).map_err(lib(what()))?;
        let act = action(rule.action);
        let conditions: Vec<ScmpArgCompare> = rule
            .args
            .iter()
            .map(|a| {
                let op = match a.op {
                    CmpOp::Ne => ScmpCompareOp::NotEqual,
                    CmpOp::Lt => ScmpCompareOp::Less,
                    CmpOp::Le => ScmpCompareOp::LessOrEqual,
                    CmpOp::Eq => ScmpCompareOp::Equal,
                    CmpOp::Ge => ScmpCompareOp::GreaterEqual,
                    CmpOp::Gt => ScmpCompareOp::Greater,
                    CmpOp::MaskedEq => ScmpCompareOp::MaskedEqual(a.value),
                };
                let datum = if a.op == CmpOp::MaskedEq {
                    a.value_two
                } else {
                    a.value
                };
                ScmpArgCompare::new(u32::from(a.index), op, datum)
            })
            .collect();
        let mut indexes: Vec<u8> = rule.args.iter().map(|a| a.index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        if conditions.is_empty() {
            ctx.add_rule(act, call).map_err(lib(what()))?;
        } else if indexes.len() < conditions.len() {
            // Two conditions on one argument: each its own rule (either matches), as
            // runc reads such a profile; libseccomp refuses them in one rule.
            for condition in &conditions {
                ctx.add_rule_conditional(act, call, std::slice::from_ref(condition))
                    .map_err(lib(what()))?;
            }
        } else {
            ctx.add_rule_conditional(act, call, &conditions)
                .map_err(lib(what()))?;
        }
    }
    let io = |source| ProfileError::Io {
        path: PathBuf::from("a temporary file for the BPF program"),
        source,
    };
    let mut file = tempfile::tempfile().map_err(io)?;
    ctx.export_bpf(&file)
        .map_err(lib("export the program".to_owned()))?;
    file.rewind().map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(Program::new(bytes, filter.flags.clone())?)
}

fn action(action: Action) -> ScmpAction {
    match action {
        Action::KillProcess => ScmpAction::KillProcess,
        Action::KillThread => ScmpAction::KillThread,
        Action::Trap => ScmpAction::Trap,
        Action::Errno(errno) => ScmpAction::Errno(i32::from(errno)),
        Action::Trace(value) => ScmpAction::Trace(value),
        Action::Log => ScmpAction::Log,
        Action::Allow => ScmpAction::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::seccomp::{ArgCondition, Rule};

    fn profile() -> Profile {
        let filter = Filter {
            default_action: Action::Allow,
            architectures: vec!["SCMP_ARCH_X86_64".into(), "SCMP_ARCH_X86".into()],
            flags: vec![],
            rules: vec![
                Rule {
                    syscall: "mkdirat".into(),
                    action: Action::Errno(1),
                    args: vec![],
                },
                Rule {
                    syscall: "personality".into(),
                    action: Action::Errno(1),
                    args: vec![
                        ArgCondition {
                            index: 0,
                            op: CmpOp::Eq,
                            value: 8,
                            value_two: 0,
                        },
                        ArgCondition {
                            index: 0,
                            op: CmpOp::Eq,
                            value: 9,
                            value_two: 0,
                        },
                    ],
                },
            ],
        };
        Profile {
            digest: filter.digest(),
            filter,
            skipped: vec![],
            overridden: vec![],
        }
    }

    #[test]
    fn a_profile_is_compiled_once_then_cached_and_a_damaged_entry_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        let p = profile();
        let (first, outcome) = load_or_compile(&p, &cache).unwrap();
        assert_eq!(outcome, Outcome::Compiled { stored: Ok(()) });
        assert!(first.instructions() > 4);
        let (again, outcome) = load_or_compile(&p, &cache).unwrap();
        assert_eq!((again.bytes(), outcome), (first.bytes(), Outcome::Cached));
        let path = cache_path(&p, &cache).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (fixed, outcome) = load_or_compile(&p, &cache).unwrap();
        assert!(
            matches!(&outcome, Outcome::Recompiled { damage, stored: Ok(()) } if damage.contains("hash")),
            "{outcome:?}"
        );
        assert_eq!(fixed.bytes(), first.bytes());
        std::fs::write(&path, [0u8; 7]).unwrap();
        let (_, outcome) = load_or_compile(&p, &cache).unwrap();
        assert!(matches!(outcome, Outcome::Recompiled { .. }), "{outcome:?}");
        println!(
            "{} instructions; cache entry {}",
            first.instructions(),
            path.display()
        );
    }

    /// A cache that cannot be written is said (a warning at create), and the program is
    /// still given.
    #[test]
    fn an_unwritable_cache_still_gives_the_program_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let (program, outcome) = load_or_compile(&profile(), &file.join("seccomp")).unwrap();
        assert!(program.instructions() > 4);
        let Outcome::Compiled { stored: Err(why) } = outcome else {
            panic!("{outcome:?}");
        };
        println!("not cached: {why}");
        assert!(why.contains("a-file/seccomp"), "{why}");
    }

    #[test]
    fn bad_cache_bytes_are_refused() {
        let program = [0u8; 16];
        let mut entry_bytes = Sha256::digest(program).to_vec();
        entry_bytes.extend_from_slice(&program);
        assert_eq!(entry(&entry_bytes).unwrap(), program);
        let mut partial = Sha256::digest(&program[..12]).to_vec();
        partial.extend_from_slice(&program[..12]);
        assert!(
            entry(&partial)
                .unwrap_err()
                .contains("whole BPF instructions")
        );
        let long = vec![0u8; 8 * 4097];
        let mut too_long = Sha256::digest(&long).to_vec();
        too_long.extend_from_slice(&long);
        assert!(entry(&too_long).unwrap_err().contains("4096"));
    }
}
