//! A bundle's hooks (`hooks` in config.json): programs the runtime runs at points of the
//! lifecycle, each given the container's state (runtime-spec JSON) on its standard input.
//! mm runs those of the runtime namespace, from the command that reaches each point:
//! `prestart` and `createRuntime` from `mm oci create` once the container's process waits
//! (so after pivot_root, where runc runs them before it: see docs/oci.md), `poststart`
//! from `mm oci start` once the process goes on, `poststop` from `mm oci delete` once the
//! container is gone. `createContainer` and `startContainer`, which run inside the
//! container's namespaces, are refused.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::OciError;
use super::fields::FieldError;
use super::spec;

/// One hook, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    /// Its whole argv, `args[0]` included (empty: the path alone).
    #[serde(default)]
    pub args: Vec<String>,
    /// Its whole environment (`KEY=VALUE`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Killed after this many seconds.
    #[serde(default)]
    pub timeout: Option<u32>,
}

/// The hooks mm runs, by the point they run at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// `prestart` then `createRuntime`: their failure fails the create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create: Vec<Hook>,
    /// A failure is a warning, as the runtime-spec says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<Hook>,
}

/// `hooks`, checked: each problem a [`FieldError`] at its path.
pub fn hooks(hooks: Option<&spec::Hooks>, errors: &mut Vec<FieldError>) -> Hooks {
    let Some(h) = hooks else {
        return Hooks::default();
    };
    let mut list = |name: &str, given: &[spec::Hook]| -> Vec<Hook> {
        given
            .iter()
            .enumerate()
            .filter_map(|(i, hook)| checked(&format!("hooks.{name}[{i}]"), hook, errors))
            .collect()
    };
    let mut create = list("prestart", &h.prestart);
    create.extend(list("createRuntime", &h.create_runtime));
    let poststart = list("poststart", &h.poststart);
    let poststop = list("poststop", &h.poststop);
    for (name, given) in [
        ("createContainer", &h.create_container),
        ("startContainer", &h.start_container),
    ] {
        if !given.is_empty() {
            errors.push(FieldError {
                path: format!("hooks.{name}"),
                why: "is not supported by mm (mm runs no program inside the container's \
                      namespaces before its process)"
                    .to_owned(),
            });
        }
    }
    Hooks {
        create,
        poststart,
        poststop,
    }
}

fn checked(at: &str, hook: &spec::Hook, errors: &mut Vec<FieldError>) -> Option<Hook> {
    let before = errors.len();
    let mut error = |field: &str, why: String| {
        errors.push(FieldError {
            path: format!("{at}.{field}"),
            why,
        })
    };
    if !hook.path.starts_with('/') {
        error("path", format!("`{}` is not an absolute path", hook.path));
    }
    for (i, pair) in hook.env.iter().enumerate() {
        if !pair.contains('=') {
            error(&format!("env[{i}]"), format!("`{pair}` is not KEY=VALUE"));
        }
    }
    if hook.timeout.is_some_and(|t| t <= 0) {
        error(
            "timeout",
            "a timeout is a number of seconds above 0".to_owned(),
        );
    }
    (errors.len() == before).then(|| Hook {
        path: PathBuf::from(&hook.path),
        args: hook.args.clone(),
        env: hook.env.clone(),
        timeout: hook.timeout.and_then(|t| u32::try_from(t).ok()),
    })
}

/// Runs `hooks` in order, each with `state` on its standard input; the first that fails
/// (an exit status other than 0, a signal, its timeout) stops the rest.
pub fn run(hooks: &[Hook], state: &impl Serialize, point: &str) -> Result<(), OciError> {
    let input = serde_json::to_vec(state).map_err(|e| OciError::io(&PathBuf::new(), e.into()))?;
    for hook in hooks {
        let failed = |why: String| OciError::Hook {
            point: point.to_owned(),
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
            let _ = stdin.write_all(&input);
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
