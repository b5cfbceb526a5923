//! The machine's id maps: a block from mm's pool (root) or the user's own id and
//! subordinate ranges (rootless), or why the host cannot give them.

use super::{IdMapping, Ids, KeepId, MapWriter};
use crate::definition::{Definition, Diagnostic, NetworkMode, UserRange};
use crate::host::Host;
use crate::idmap::{
    IdMapEntry, IdRange, MACHINE_IDS, ROOT_POOL, carved_map, keep_id_map, rootless_map,
};

/// The id maps for `def` on `host`; `recorded` is root's block from an earlier start;
/// `keep` the keep-id user, whose ids are the same inside as outside.
pub(super) fn ids(
    def: &Definition,
    host: &Host,
    recorded: Option<IdRange>,
    keep: Option<&KeepId>,
) -> Result<Ids, Diagnostic> {
    let ids = if host.is_root() {
        root_ids(def, recorded)?
    } else {
        rootless_ids(def, host)?
    };
    match keep {
        None => Ok(ids),
        Some(keep) if host.is_root() => carve(def, ids, keep),
        Some(keep) => Ok(Ids {
            uid: keep_map(&ids.uid, host.uid, keep.uid),
            gid: keep_map(&ids.gid, host.gid, keep.gid),
            ..ids
        }),
    }
}

/// Rootless keep-id: the subordinate ids the default map gives, laid out around the user.
fn keep_map(mapping: &IdMapping, own: u32, keep: u32) -> IdMapping {
    let IdMapping::Map { entries } = mapping else {
        return mapping.clone();
    };
    let ranges: Vec<IdRange> = entries
        .iter()
        .filter(|e| !(e.inside == 0 && e.outside == own && e.count == 1))
        .map(|e| IdRange {
            start: e.outside,
            count: e.count,
        })
        .collect();
    IdMapping::Map {
        entries: keep_id_map(own, keep, &ranges),
    }
}

/// Root keep-id: the machine's block with the user's uid, gid and groups cut out of it;
/// while the block is still to allocate, the plan says so and carves at the next compile.
fn carve(def: &Definition, ids: Ids, keep: &KeepId) -> Result<Ids, Diagnostic> {
    let IdMapping::Map { entries } = &ids.uid else {
        return Ok(ids);
    };
    let [whole] = entries.as_slice() else {
        return Ok(ids);
    };
    let block = IdRange {
        start: whole.outside,
        count: whole.count,
    };
    let mut gids = vec![(keep.gid, keep.gid)];
    gids.extend(keep.groups.iter().map(|g| (g.gid, g.gid)));
    for (what, id) in [("uid", keep.uid)]
        .into_iter()
        .chain(gids.iter().map(|(g, _)| ("gid", *g)))
    {
        if block.contains(&IdRange {
            start: id,
            count: 1,
        }) {
            return Err(range_error(
                def,
                format!(
                    "the machine's ids {block} hold `{}`'s {what} {id}",
                    keep.name
                ),
            )
            .help("pick a range clear of the user's ids, or `range = \"auto\"`"));
        }
    }
    Ok(Ids {
        uid: IdMapping::Map {
            entries: carved_map(block, &[(keep.uid, keep.uid)]),
        },
        gid: IdMapping::Map {
            entries: carved_map(block, &gids),
        },
        block: Some(block),
        writer: ids.writer,
    })
}

/// An error at `users.range`; where it is not written, the problem is the file's as a whole.
fn range_error(def: &Definition, message: String) -> Diagnostic {
    let range = &def.users;
    let diagnostic = if range.span.is_empty() {
        def.file.error(message)
    } else {
        def.file.error_at(&range.span, message)
    };
    diagnostic.key("users.range")
}

/// One map entry: root inside is `base` outside, for `size` ids.
fn single(base: u32, size: u32) -> Vec<IdMapEntry> {
    vec![IdMapEntry {
        inside: 0,
        outside: base,
        count: size,
    }]
}

/// Root: the recorded block, a block to allocate from mm's pool, or an explicit range
/// outside the host's own ids; the supervisor writes the maps.
fn root_ids(def: &Definition, recorded: Option<IdRange>) -> Result<Ids, Diagnostic> {
    let mapping = match def.users.value {
        UserRange::Auto => match recorded {
            Some(block) => IdMapping::Map {
                entries: single(block.start, block.count),
            },
            None => IdMapping::Allocate {
                pool: ROOT_POOL,
                count: MACHINE_IDS,
            },
        },
        UserRange::Explicit { base, size } => {
            if base < MACHINE_IDS {
                return Err(range_error(
                    def,
                    format!("base {base} overlaps the host's own users and groups (0-65535)"),
                )
                .help(format!(
                    "use ids from mm's pool, {}, or `range = \"auto\"`",
                    ROOT_POOL
                )));
            }
            IdMapping::Map {
                entries: single(base, size),
            }
        }
    };
    Ok(Ids {
        writer: MapWriter::Direct,
        uid: mapping.clone(),
        gid: mapping,
        block: None,
    })
}

/// Rootless: root inside is the user, the rest from the subordinate ranges (or exactly
/// the explicit range, inside them); newuidmap and newgidmap write the maps.
fn rootless_ids(def: &Definition, host: &Host) -> Result<Ids, Diagnostic> {
    let how = format!(
        "add one as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
        host.user
    );
    for (file, ranges) in [("/etc/subuid", &host.subuid), ("/etc/subgid", &host.subgid)] {
        if ranges.is_empty() {
            let mut error = range_error(
                def,
                format!("user `{}` has no subordinate id range in {file}", host.user),
            );
            // Lines of the file that did not parse may have been meant as the range.
            for note in host.notes.iter().filter(|n| n.starts_with(file)) {
                error = error.help(note.clone());
            }
            return Err(error.help(how.clone()));
        }
    }
    let (uid, gid) = match def.users.value {
        UserRange::Auto => subordinate_maps(def, host, how)?,
        UserRange::Explicit { base, size } => explicit_subordinate(def, host, base, size)?,
    };
    // A zone's machines are children of the zone's user namespace (plan::RootlessZone).
    let writer = match def.network.mode {
        NetworkMode::Zone(_) => MapWriter::Zone,
        _ => MapWriter::Newidmap,
    };
    Ok(Ids {
        writer,
        uid: IdMapping::Map { entries: uid },
        gid: IdMapping::Map { entries: gid },
        block: None,
    })
}

type Maps = (Vec<IdMapEntry>, Vec<IdMapEntry>);

/// `range = "auto"` rootless: the user's own id and every subordinate range; a booted
/// machine needs a whole block of them.
fn subordinate_maps(def: &Definition, host: &Host, how: String) -> Result<Maps, Diagnostic> {
    let uid = rootless_map(host.uid, &host.subuid);
    let gid = rootless_map(host.gid, &host.subgid);
    let mapped = |m: &[IdMapEntry]| m.iter().map(|e| u64::from(e.count)).sum::<u64>();
    let fewest = mapped(&uid).min(mapped(&gid));
    if def.exec.boot && fewest < u64::from(MACHINE_IDS) {
        return Err(range_error(
            def,
            format!(
                "a booted machine needs {MACHINE_IDS} ids, and user `{}` has {fewest} (with its own id)",
                host.user
            ),
        )
        .help(how));
    }
    Ok((uid, gid))
}

/// An explicit range rootless: it must lie inside the user's subordinate ranges.
fn explicit_subordinate(
    def: &Definition,
    host: &Host,
    base: u32,
    size: u32,
) -> Result<Maps, Diagnostic> {
    let wanted = IdRange {
        start: base,
        count: size,
    };
    for (file, ranges) in [("/etc/subuid", &host.subuid), ("/etc/subgid", &host.subgid)] {
        if !ranges.iter().any(|r| r.contains(&wanted)) {
            let yours: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            return Err(range_error(
                def,
                format!(
                    "{wanted} is not inside your ranges in {file}: {}",
                    yours.join(", ")
                ),
            )
            .help("pick a base and size inside them, or `range = \"auto\"`"));
        }
    }
    Ok((single(base, size), single(base, size)))
}
