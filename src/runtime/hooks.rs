//! Running an OCI bundle's hooks (`plan::Hook`): each program with its whole argv and
//! environment, the container's state on its standard input, killed at its timeout. The
//! lifecycle's commands run those of their points (oci/hooks.rs); those of the launch
//! ([`crate::plan::ContainerHooks`]) are run by the supervisor (`createRuntime`) and PID 1
//! (the container's).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::launch::{Step, StepFailure};
use crate::plan::Hook;

/// A hook that failed, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub path: PathBuf,
    pub why: String,
}

/// Runs `hooks` in order, each with `input` on its standard input; the first that fails
/// (an exit status other than 0, a signal, its timeout) stops the rest.
pub fn run(hooks: &[Hook], input: &[u8]) -> Result<(), Failed> {
    for hook in hooks {
        let failed = |why: String| Failed {
            path: hook.path.clone(),
            why,
        };
        let mut command = Command::new(&hook.path);
        if let Some((first, rest)) = hook.args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut command, first);
            command.args(rest);
        }
        command.env_clear();
        for pair in &hook.env {
            if let Some((key, value)) = pair.split_once('=') {
                command.env(key, value);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        // A hook that does not read its input must not block us: a broken pipe is fine.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input);
        }
        let deadline = hook
            .timeout
            .map(|t| Instant::now() + Duration::from_secs(u64::from(t)));
        let status = loop {
            match child.try_wait().map_err(|e| failed(e.to_string()))? {
                Some(status) => break status,
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failed(format!(
                        "killed after its timeout of {} s",
                        hook.timeout.unwrap_or_default()
                    )));
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        if !status.success() {
            return Err(failed(status.to_string()));
        }
    }
    Ok(())
}

/// [`run`] as a step of the launch: the first that fails, at `point`.
pub fn run_as_step(hooks: &[Hook], input: &[u8], point: &str) -> Result<(), StepFailure> {
    run(hooks, input).map_err(|failed| {
        StepFailure::other(
            Step::Hook {
                point: point.to_owned(),
                path: failed.path,
            },
            failed.why,
        )
    })
}

/// The state document a hook of the container's namespaces is given: the plan's, with
/// `status` and the process's `pid` on the host.
pub fn container_state(state: &crate::plan::HookState, status: &str, pid: i32) -> Vec<u8> {
    let mut value = serde_json::to_value(state).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("status".to_owned(), status.into());
        object.insert("pid".to_owned(), pid.into());
    }
    serde_json::to_vec(&value).unwrap_or_default()
}
