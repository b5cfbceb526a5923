//! `[exec]`: what PID 1 runs, with which environment, as whom and where.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Checker;
use crate::definition::raw::RawExec;
use crate::definition::{Exec, Image};

pub(super) fn exec(c: &mut Checker<'_>, raw: RawExec, image: &Option<Image>) -> Exec {
    let boot = raw.boot.as_ref().is_some_and(|b| *b.get_ref());
    let command = match &raw.command {
        Some(cmd) => command(c, cmd, boot, image),
        None => {
            no_default_command(c, boot, image);
            Vec::new()
        }
    };
    Exec {
        boot,
        command,
        env: env(c, raw.env.unwrap_or_default()),
        user: raw.user.map(|user| exec_user(c, user)),
        workdir: raw.workdir.map(|dir| workdir(c, dir)),
    }
}

/// `exec.command`: not empty, not with `boot`, a program named, no NUL in any argument.
fn command(
    c: &mut Checker<'_>,
    cmd: &Spanned<Vec<Spanned<String>>>,
    boot: bool,
    image: &Option<Image>,
) -> Vec<String> {
    let has_config = image.as_ref().is_none_or(|i| i.source.value.has_config());
    if cmd.get_ref().is_empty() {
        let d = c.at(cmd, "exec.command", "the command is empty");
        if has_config {
            d.help
                .push("leave `command` out to run the image's own command".to_owned());
        }
    } else if boot {
        c.at(
            cmd,
            "exec.command",
            "`command` cannot be combined with `boot = true`",
        )
        .help
        .push("a booted machine runs its image's init; remove one of the two".to_owned());
    } else if cmd.get_ref()[0].get_ref().is_empty() {
        c.at(
            &cmd.get_ref()[0],
            "exec.command[0]",
            "the program to run is an empty string",
        );
    }
    // An argument with NUL cannot be passed to execve: say which, here.
    for (i, arg) in cmd.get_ref().iter().enumerate() {
        if arg.get_ref().contains('\0') {
            c.at(
                arg,
                &format!("exec.command[{i}]"),
                "the argument holds a NUL byte",
            );
        }
    }
    cmd.get_ref().iter().map(|a| a.get_ref().clone()).collect()
}

/// No `exec.command` and no `boot`, for a source without an image config: nothing to run.
fn no_default_command(c: &mut Checker<'_>, boot: bool, image: &Option<Image>) {
    let needs_command = image.as_ref().is_some_and(|i| !i.source.value.has_config());
    if boot || !needs_command {
        return;
    }
    let span = image
        .as_ref()
        .map(|i| i.source.span.clone())
        .unwrap_or(0..0);
    let d = c.file.error_at(
        &span,
        "this source carries no image config, so there is no default command",
    );
    c.problems.push(
        d.key("exec.command")
            .help("set `command` in [exec], or `boot = true` to run the image's /sbin/init"),
    );
}

/// `exec.env`: names neither empty nor with `=`, values without NUL.
fn env(
    c: &mut Checker<'_>,
    raw: BTreeMap<Spanned<String>, Spanned<String>>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (key, value) in raw {
        let name = key.get_ref();
        if name.is_empty() || name.contains(['=', '\0']) {
            c.at(
                &key,
                &format!("exec.env.{name}"),
                "an environment variable's name cannot be empty or hold `=`",
            );
        } else if value.get_ref().contains('\0') {
            c.at(
                &value,
                &format!("exec.env.{name}"),
                "the value holds a NUL byte",
            );
        }
        env.insert(name.clone(), value.into_inner());
    }
    env
}

/// `exec.user`: a name or number, optionally with a group.
fn exec_user(c: &mut Checker<'_>, user: Spanned<String>) -> String {
    let text = user.get_ref();
    let ok = !text.is_empty()
        && text.split(':').count() <= 2
        && text
            .split(':')
            .all(|part| !part.is_empty() && !part.contains(['/', '\0', ' ']));
    if !ok {
        c.at(&user, "exec.user", format!("`{text}` is not a user"))
            .help
            .push(
                "write a name or number, optionally with a group: `root`, `1000`, `app:app`"
                    .to_owned(),
            );
    }
    user.into_inner()
}

/// `exec.workdir`: an absolute path inside the machine, without NUL.
fn workdir(c: &mut Checker<'_>, dir: Spanned<String>) -> String {
    if !dir.get_ref().starts_with('/') {
        c.at(
            &dir,
            "exec.workdir",
            "the working directory must be an absolute path inside the machine",
        );
    } else if dir.get_ref().contains('\0') {
        c.at(&dir, "exec.workdir", "the path holds a NUL byte");
    }
    dir.into_inner()
}
