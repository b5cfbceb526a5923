//! A bundle's hooks (`hooks` in config.json): programs the runtime runs at points of the
//! lifecycle, each given the container's state (runtime-spec JSON) on its standard input.
//! Those of the launch are the plan's (`plan::ContainerHooks`): `prestart` and
//! `createRuntime`, which the supervisor runs while PID 1 waits before pivot_root, and
//! `createContainer` and `startContainer`, which PID 1 runs in the container's namespaces.
//! The others are run by the command that reaches their point: `poststart` by `mm oci
//! start` once the process goes on, `poststop` by `mm oci delete` once the container is
//! gone.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::OciError;
use super::fields::FieldError;
use super::spec;

pub use crate::plan::Hook;

/// The hooks mm runs, by the point they run at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// A failure is a warning, as the runtime-spec says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<Hook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<Hook>,
    /// `prestart` then `createRuntime`, and the rest below, are the launch's
    /// (`plan::ContainerHooks`), not the lifecycle's commands': the plan carries them,
    /// `oci.json` does not.
    #[serde(skip)]
    pub create_runtime: Vec<Hook>,
    #[serde(skip)]
    pub create_container: Vec<Hook>,
    #[serde(skip)]
    pub start_container: Vec<Hook>,
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
    let mut create_runtime = list("prestart", &h.prestart);
    create_runtime.extend(list("createRuntime", &h.create_runtime));
    let poststart = list("poststart", &h.poststart);
    let poststop = list("poststop", &h.poststop);
    let create_container = list("createContainer", &h.create_container);
    let start_container = list("startContainer", &h.start_container);
    Hooks {
        create_runtime,
        poststart,
        poststop,
        create_container,
        start_container,
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
    crate::runtime::hooks::run(hooks, &input).map_err(|failed| OciError::Hook {
        point: point.to_owned(),
        path: failed.path,
        why: failed.why,
    })
}
