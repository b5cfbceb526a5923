//! What PID 1 executes, as whom, where and with which environment: the definition's, else
//! the stored image config's, else mm's defaults (user `0:0`, `/`); and how the machine is
//! stopped.

use std::collections::BTreeMap;

use super::{Command, Exec, Image, Layers, Pid1, Process, Stop, machine_id};
use crate::definition::Definition;
use crate::image::ImageRecord;
use crate::image::oci::RunConfig;
use crate::signal::Signal;

/// The PATH a machine's processes get unless the definition sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Who PID 1 runs as when neither the definition nor the image config names a user: numbers,
/// which need no /etc/passwd in the image (runc, crun and podman run such images as 0:0).
const DEFAULT_USER: &str = "0:0";
/// What a booted machine executes as PID 1.
const INIT: &str = "/sbin/init";

/// PID 1 and its command; resolved when the image's config is known (in the store, or a
/// directory source, which has none).
pub(super) fn process(
    def: &Definition,
    image: &Image,
    stored: Option<&ImageRecord>,
    desktop: BTreeMap<String, String>,
) -> Process {
    let exec = &def.exec;
    let mut env = definition_env(def);
    // Validation refused a definition that sets one of these itself.
    env.extend(desktop);
    let argv = if exec.boot {
        Some(vec![INIT.to_owned()])
    } else if exec.command.is_empty() {
        None
    } else {
        Some(exec.command.clone())
    };
    let command = match (&image.layers, stored) {
        (Layers::Stored { .. }, Some(record)) => {
            Command::Resolved(resolve(def, argv, env, Some(&record.config.config)))
        }
        (Layers::Directory { .. }, _) => Command::Resolved(resolve(def, argv, env, None)),
        _ => Command::Unresolved {
            argv,
            env,
            user: exec.user.clone(),
            workdir: exec.workdir.clone(),
        },
    };
    Process {
        pid1: if exec.boot { Pid1::Boot } else { Pid1::MmInit },
        rlimits: Vec::new(),
        waits_for_start: false,
        hooks: None,
        groups: Vec::new(),
        umask: None,
        oom_score_adj: None,
        reparented: false,
        terminal: None,
        hostname: def.name.to_string(),
        command,
    }
}

/// mm's variables, then the definition's over them.
fn definition_env(def: &Definition) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    env.insert("container".to_owned(), "mm".to_owned());
    env.insert("container_uuid".to_owned(), machine_id(def.name.as_str()));
    env.extend(def.exec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The command with the image config's parts filled in where the definition leaves them.
fn resolve(
    def: &Definition,
    argv: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    config: Option<&RunConfig>,
) -> Exec {
    let argv = argv.unwrap_or_else(|| {
        config
            .into_iter()
            .flat_map(|c| c.entrypoint.iter().chain(&c.cmd).flatten())
            .cloned()
            .collect()
    });
    let mut all: Vec<String> = config
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or_default();
            !env.contains_key(key)
        })
        .collect();
    all.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    let from_image = |field: Option<&String>| field.filter(|v| !v.is_empty()).cloned();
    let exec = &def.exec;
    Exec {
        argv,
        env: all,
        user: exec
            .user
            .clone()
            .or_else(|| from_image(config.and_then(|c| c.user.as_ref())))
            .unwrap_or_else(|| DEFAULT_USER.to_owned()),
        workdir: exec
            .workdir
            .clone()
            .or_else(|| from_image(config.and_then(|c| c.working_dir.as_ref())))
            .unwrap_or_else(|| "/".to_owned()),
    }
}

/// A booted init is asked to stop as systemd asks it (SIGRTMIN+3), with more time.
pub(super) fn stop(def: &Definition) -> Stop {
    if def.exec.boot {
        Stop {
            signal: Signal::rtmin(3),
            timeout_secs: 30,
        }
    } else {
        Stop {
            signal: Signal::TERM,
            timeout_secs: 10,
        }
    }
}
