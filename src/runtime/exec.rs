//! `execve` with a `PATH` search, for PID 1, mm's init's command and `mm exec`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::launch::{Step, StepFailure};
use super::sys;

/// `execve` of `argv` with `env`, searching `PATH` from `env` for a bare name. Returns only
/// on failure.
pub fn exec(argv: &[String], env: &[String]) -> StepFailure {
    let to_c = |s: &String| CString::new(s.as_bytes()).ok();
    let (Some(args), Some(envp)) = (
        argv.iter().map(to_c).collect::<Option<Vec<_>>>(),
        env.iter().map(to_c).collect::<Option<Vec<_>>>(),
    ) else {
        return StepFailure::other(
            Step::Exec { argv: vec![] },
            "an argument or variable contains a NUL byte",
        );
    };
    let Some(program) = argv.first() else {
        return StepFailure::other(Step::Exec { argv: vec![] }, "no command");
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .map(|dir| Path::new(dir).join(program))
            .collect()
    };
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for candidate in candidates {
        let Ok(c) = sys::cstring(&candidate) else {
            continue;
        };
        let err = nix::unistd::execve(&c, &args, &envp).unwrap_err();
        if err != nix::errno::Errno::ENOENT || last.raw_os_error() == Some(libc::ENOENT) {
            last = std::io::Error::from(err);
        }
    }
    StepFailure::io(
        Step::Exec {
            argv: argv.to_vec(),
        },
        &last,
    )
}
