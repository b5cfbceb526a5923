//! `[desktop]`: the passthroughs turned on, each at its key; a variable one of them sets
//! may not be set in `[exec] env` too.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Checker;
use crate::definition::Located;
use crate::definition::desktop::Passthrough;
use crate::definition::raw::RawDesktop;

pub(super) fn desktop(
    c: &mut Checker<'_>,
    raw: RawDesktop,
    env: Option<&BTreeMap<Spanned<String>, Spanned<String>>>,
) -> Vec<Located<Passthrough>> {
    let RawDesktop {
        wayland,
        x11,
        pipewire,
        pulseaudio,
        gpu,
        nvidia,
        ssh_agent,
        session_bus,
    } = raw;
    let keys = [
        wayland,
        x11,
        pipewire,
        pulseaudio,
        gpu,
        nvidia,
        ssh_agent,
        session_bus,
    ];
    let mut on: Vec<Located<Passthrough>> = Passthrough::ALL
        .into_iter()
        .zip(keys)
        .filter_map(|(which, key)| {
            let key = key?;
            (*key.get_ref()).then(|| Located {
                value: which,
                span: key.span(),
            })
        })
        .collect();
    // In the file's order, as its diagnostics are.
    on.sort_by_key(|p| p.span.start);
    for (name, _) in env.into_iter().flatten() {
        let Some(which) = on
            .iter()
            .find(|p| p.value.variables().contains(&name.get_ref().as_str()))
        else {
            continue;
        };
        c.at(
            name,
            &format!("exec.env.{}", name.get_ref()),
            format!("`{}` is set by `{}`", name.get_ref(), which.value),
        )
        .help
        .push(format!(
            "leave it out of [exec] env, or turn `{}` off",
            which.value
        ));
    }
    on
}
