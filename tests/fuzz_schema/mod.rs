//! Definitions built from mm's real schema, for tests/fuzz_definitions.rs.
//!
//! A definition is generated in one of two moods. A wild one mixes good and bad words,
//! values of the wrong type, control characters, huge and negative numbers, NaN and
//! infinities, arrays and inline tables, so that every check in validation is reached. A
//! tame one uses only values of the right shape, so that many definitions are valid and go
//! on to be compiled.

use proptest::prelude::*;

/// `s` as a TOML basic string, with every control character escaped.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn any_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_./:~@ -]{0,16}",
        2 => any::<String>(),
        1 => "[\\x00-\\x1f\\x7f\u{85}\u{2028}]{0,4}",
        1 => "[\u{e9}\u{1F600}\u{202E}\u{FEFF}a]{1,8}",
    ]
    .boxed()
}

type Words = &'static [&'static str];

/// A string value. Tame: one of `good`, quoted. Wild: also one of `bad` or anything, some
/// written as literal strings and a few raw and unescaped, to reach the parser's errors.
fn string_of(wild: bool, good: Words, bad: Words) -> BoxedStrategy<String> {
    let words: Vec<&'static str> = good.iter().chain(bad).copied().collect();
    if !wild {
        return prop::sample::select(good).prop_map(quote).boxed();
    }
    let text = if words.is_empty() {
        any_text()
    } else {
        prop_oneof![
            3 => prop::sample::select(words).prop_map(str::to_owned),
            1 => any_text(),
        ]
        .boxed()
    };
    prop_oneof![
        20 => text.clone().prop_map(|s| quote(&s)),
        2 => text.clone().prop_map(|s| {
            if s.contains(['\'', '\n', '\r']) || s.chars().any(char::is_control) {
                quote(&s)
            } else {
                format!("'{s}'")
            }
        }),
        1 => text.prop_map(|s| format!("\"{s}\"")),
    ]
    .boxed()
}

/// Tame: within `range`. Wild: edge values, any i64, hex, and beyond 64 bits.
fn integer(wild: bool, range: std::ops::RangeInclusive<i64>) -> BoxedStrategy<String> {
    if !wild {
        return range.prop_map(|n| n.to_string()).boxed();
    }
    prop_oneof![
        4 => prop::sample::select(&[
            0i64, 1, -1, 16, 65535, 65536, 100_000, 524_288, 1 << 20,
            4_294_967_295, 4_294_967_296, i64::MAX, i64::MIN,
        ][..])
        .prop_map(|n| n.to_string()),
        2 => range.prop_map(|n| n.to_string()),
        3 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0i64..=i64::MAX).prop_map(|n| format!("0x{n:x}")),
        1 => Just("99999999999999999999".to_owned()),
        1 => Just("-99999999999999999999".to_owned()),
    ]
    .boxed()
}

fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        // Debug always writes a `.` or an exponent, as TOML floats need.
        format!("{x:?}")
    }
}

/// Tame: a plausible CPU count. Wild: edges, any f64, NaN and infinities.
fn float(wild: bool) -> BoxedStrategy<String> {
    if !wild {
        return (0.01f64..64.0).prop_map(toml_float).boxed();
    }
    prop_oneof![
        3 => prop::sample::select(&[
            0.0f64, -0.0, 0.0001, 0.0005, 0.001, 0.5, 1.5, 4096.0, 4096.1, 1e300,
            f64::MIN_POSITIVE, f64::NAN, f64::INFINITY, f64::NEG_INFINITY,
        ][..]),
        2 => any::<f64>(),
    ]
    .prop_map(toml_float)
    .boxed()
}

fn boolean() -> BoxedStrategy<String> {
    any::<bool>().prop_map(|b| b.to_string()).boxed()
}

/// Any TOML value at all: scalars, arrays and inline tables, nested a little.
fn any_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        string_of(true, &["", "auto", "host", "/", "x"], &[]),
        integer(true, 0..=10),
        float(true),
        boolean(),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::btree_map(key_name(), inner, 0..4).prop_map(inline_table),
        ]
    })
    .boxed()
}

fn key_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(&[
            "source", "target", "readonly", "base", "size", "mode", "boot", "x",
        ][..])
        .prop_map(str::to_owned),
        1 => any_text(),
    ]
    .boxed()
}

fn inline_table(entries: std::collections::BTreeMap<String, String>) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{} = {v}", quote(k)))
        .collect();
    format!("{{ {} }}", body.join(", "))
}

fn array_of(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(item, 0..max)
        .prop_map(|items| format!("[{}]", items.join(", ")))
        .boxed()
}

/// Wild: mostly a value of the right shape for the key, sometimes any value at all.
fn typed(wild: bool, right: BoxedStrategy<String>) -> BoxedStrategy<String> {
    if wild {
        prop_oneof![8 => right, 1 => any_value()].boxed()
    } else {
        right
    }
}

const GOOD_SOURCES: Words = &["/srv", "/tmp", "~/src", "~", ".", "../images"];
const GOOD_TARGETS: Words = &["/srv", "/data", "/mnt/x", "/data/./y", "/src"];
const BAD_PATHS: Words = &["/", "srv", "..", "/a/../b", "~bob/x", "", "/data/./"];

fn image_source(wild: bool) -> BoxedStrategy<String> {
    if !wild {
        let good = prop::sample::select(
            &[
                "docker://busybox",
                "docker://busybox:1.36",
                "docker://quay.io/a/b:1.0",
                "docker://localhost:5000/x/y",
                "oci:./images/busybox:latest",
                "oci:/srv/img",
                "oci-archive:../img.tar:v1",
                "docker-archive:/x.tar",
                "rootfs:/srv/root",
                "tar:./root.tar.gz",
            ][..],
        );
        let pin = prop::option::weighted(0.1, "@sha256:[0-9a-f]{64}");
        return (good, pin)
            .prop_map(|(s, pin)| match pin {
                Some(pin) if s.starts_with("docker://") => quote(&format!("{s}{pin}")),
                _ => quote(s),
            })
            .boxed();
    }
    let transport = prop::sample::select(
        &[
            "oci",
            "oci-archive",
            "docker-archive",
            "docker",
            "tar",
            "rootfs",
            "ocii",
            "",
        ][..],
    );
    let rest = prop::sample::select(
        &[
            "//busybox",
            "//busybox:latest",
            "//quay.io/a/b:1.0",
            "//localhost:5000/x",
            "//Busybox",
            "//a//b",
            "//",
            "busybox",
            "./images/busybox:latest",
            "../images/busybox",
            "/abs/img:bad!tag",
            "x:",
            "",
        ][..],
    );
    let digest = prop_oneof![
        4 => Just(String::new()),
        1 => "@sha256:[0-9a-f]{64}",
        1 => "@sha256:[0-9a-fA-F]{0,66}",
    ];
    let spelt = (transport, rest, digest).prop_map(|(t, r, d)| {
        if t.is_empty() {
            format!("{r}{d}")
        } else {
            format!("{t}:{r}{d}")
        }
    });
    prop_oneof![8 => spelt.prop_map(|s| quote(&s)), 1 => string_of(true, &[], &[])].boxed()
}

fn digest(wild: bool) -> BoxedStrategy<String> {
    let good = "sha256:[0-9a-f]{64}".prop_map(|s| quote(&s));
    if !wild {
        return good.boxed();
    }
    prop_oneof![
        good,
        string_of(true, &[], &["sha256:1234", "md5:x", "sha256:"])
    ]
    .boxed()
}

fn user_range(wild: bool) -> BoxedStrategy<String> {
    let explicit = |base: BoxedStrategy<String>, size: BoxedStrategy<String>| {
        (base, size).prop_map(|(base, size)| format!("{{ base = {base}, size = {size} }}"))
    };
    if !wild {
        return prop_oneof![
            string_of(false, &["auto"], &[]),
            explicit(
                integer(false, 65536..=1_000_000_000),
                integer(false, 1..=131_072),
            ),
        ]
        .boxed();
    }
    prop_oneof![
        3 => string_of(true, &["auto"], &["manual", "AUTO"]),
        3 => explicit(
            integer(true, 0..=4_294_967_296),
            integer(true, 0..=131_072),
        ),
    ]
    .boxed()
}

fn memory(wild: bool) -> BoxedStrategy<String> {
    let good: Words = &["512M", "64M", "2G", "1GiB", "1048576", "3 G", "1T"];
    if !wild {
        return prop_oneof![
            string_of(false, good, &[]),
            integer(false, 1 << 20..=1 << 40),
        ]
        .boxed();
    }
    prop_oneof![
        2 => integer(true, 0..=1 << 40),
        3 => string_of(true, good, &["0", "1023K", "12Q", "1.5G", " 2 G ", "M", ""]),
        1 => ("[0-9]{1,22}", "(|B|K|KB|KiB|M|MB|G|gib|T|TiB|P| M)")
            .prop_map(|(n, unit)| quote(&format!("{n}{unit}"))),
    ]
    .boxed()
}

fn capabilities(wild: bool) -> BoxedStrategy<String> {
    let mut names: Vec<String> = mm::definition::capability::ALL
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    names.extend(["net_admin", "SYS_ADMIN", "cap_chown"].map(String::from));
    if wild {
        names.extend(["all", "ALL", "NET_ADMINN", "", " chown "].map(String::from));
    }
    let name = prop::sample::select(names).prop_map(|n| quote(&n));
    let name = if wild {
        prop_oneof![5 => name, 1 => string_of(true, &[], &[])].boxed()
    } else {
        name.boxed()
    };
    array_of(name, if wild { 5 } else { 3 })
}

fn env_table(wild: bool) -> BoxedStrategy<String> {
    let good_names: Words = &["LANG", "PATH", "EDITOR", "container", "TERM"];
    let name = if wild {
        prop_oneof![
            3 => prop::sample::select(&["LANG", "PATH", "A=B", "", "É", "container"][..])
                .prop_map(str::to_owned),
            1 => any_text(),
        ]
        .boxed()
    } else {
        prop::sample::select(good_names)
            .prop_map(str::to_owned)
            .boxed()
    };
    let value = string_of(wild, &["C.UTF-8", "", "vi", "/bin:/usr/bin"], &["x\u{0}y"]);
    prop::collection::btree_map(name, value, 0..4)
        .prop_map(inline_table)
        .boxed()
}

fn binds(wild: bool) -> BoxedStrategy<String> {
    if !wild {
        // Distinct targets, so that tame binds are valid.
        let source = string_of(false, GOOD_SOURCES, &[]);
        return prop::collection::btree_map(
            prop::sample::select(GOOD_TARGETS),
            (source, prop::option::of(boolean())),
            0..3,
        )
        .prop_map(|binds| {
            let all: Vec<String> = binds
                .into_iter()
                .map(|(target, (source, readonly))| {
                    let readonly = readonly.map(|r| format!(", readonly = {r}"));
                    format!(
                        "{{ source = {source}, target = {}{} }}",
                        quote(target),
                        readonly.unwrap_or_default()
                    )
                })
                .collect();
            format!("[{}]", all.join(", "))
        })
        .boxed();
    }
    let one = (
        string_of(true, GOOD_SOURCES, BAD_PATHS),
        string_of(true, GOOD_TARGETS, BAD_PATHS),
        prop::option::of(boolean()),
    )
        .prop_map(|(source, target, readonly)| match readonly {
            Some(r) => format!("{{ source = {source}, target = {target}, readonly = {r} }}"),
            None => format!("{{ source = {source}, target = {target} }}"),
        });
    array_of(one.boxed(), 4)
}

/// `[[storage.binds]]` tables, written as an array of tables rather than inline.
fn bind_tables(wild: bool) -> BoxedStrategy<String> {
    if !wild {
        return Just(String::new()).boxed();
    }
    let one = (
        string_of(true, GOOD_SOURCES, BAD_PATHS),
        string_of(true, GOOD_TARGETS, BAD_PATHS),
    )
        .prop_map(|(source, target)| {
            format!("[[storage.binds]]\nsource = {source}\ntarget = {target}\n")
        });
    prop_oneof![
        3 => Just(String::new()),
        1 => prop::collection::vec(one, 1..3).prop_map(|t| t.concat()),
    ]
    .boxed()
}

/// One `key = value` line, present with probability `p`.
fn entry(
    wild: bool,
    p: f64,
    key: &'static str,
    value: BoxedStrategy<String>,
) -> BoxedStrategy<Option<String>> {
    let line = typed(wild, value).prop_map(move |v| format!("{key} = {v}\n"));
    if p >= 1.0 {
        line.prop_map(Some).boxed()
    } else {
        prop::option::weighted(p, line).boxed()
    }
}

/// A `[name]` table (the top level for `""`) with some of its keys, present with
/// probability `p`; wild ones sometimes have an unknown key too.
fn table(
    wild: bool,
    name: &'static str,
    p: f64,
    entries: Vec<BoxedStrategy<Option<String>>>,
) -> BoxedStrategy<String> {
    let stray = if wild {
        prop::option::weighted(
            0.05,
            (
                prop::sample::select(&["comand", "sorce", "memroy", "mdoe", "extra"][..]),
                any_value(),
            )
                .prop_map(|(k, v)| format!("{k} = {v}\n")),
        )
        .boxed()
    } else {
        Just(None).boxed()
    };
    let body = (entries, stray).prop_map(move |(lines, stray)| {
        let mut text = if name.is_empty() {
            String::new()
        } else {
            format!("[{name}]\n")
        };
        text.extend(lines.into_iter().flatten());
        text.extend(stray);
        text
    });
    if p >= 1.0 {
        return body.boxed();
    }
    prop::option::weighted(p, body)
        .prop_map(Option::unwrap_or_default)
        .boxed()
}

fn definition_in(wild: bool) -> BoxedStrategy<String> {
    let w = wild;
    // Tame definitions rarely set `boot` (it may not go with `command`), but a missing
    // command with a `tar:` or `rootfs:` source, or capabilities both added and dropped,
    // still make some of them invalid.
    let tables = vec![
        table(
            w,
            "",
            1.0,
            vec![entry(
                w,
                0.5,
                "description",
                string_of(w, &["a machine", ""], &[]),
            )],
        ),
        table(
            w,
            "image",
            if w { 0.97 } else { 1.0 },
            vec![
                entry(w, if w { 0.97 } else { 1.0 }, "source", image_source(w)),
                entry(w, 0.15, "digest", digest(w)),
            ],
        ),
        table(
            w,
            "exec",
            0.8,
            vec![
                entry(w, if w { 0.5 } else { 0.1 }, "boot", boolean()),
                entry(
                    w,
                    0.7,
                    "command",
                    array_of(string_of(w, &["/bin/sh", "-c", "sleep", "1"], &[""]), 4),
                ),
                entry(w, 0.5, "env", env_table(w)),
                entry(
                    w,
                    0.3,
                    "user",
                    string_of(
                        w,
                        &["root", "1000", "app:app", "65534:65534"],
                        &["a:b:c", ""],
                    ),
                ),
                entry(w, 0.3, "workdir", string_of(w, GOOD_TARGETS, BAD_PATHS)),
            ],
        ),
        table(
            w,
            "storage",
            0.4,
            vec![
                entry(w, 0.5, "persistent", boolean()),
                entry(w, 0.5, "binds", binds(w)),
            ],
        ),
        bind_tables(w),
        table(w, "users", 0.4, vec![entry(w, 0.7, "range", user_range(w))]),
        table(
            w,
            "network",
            0.4,
            vec![entry(
                w,
                0.7,
                "mode",
                string_of(
                    w,
                    &["host", "private", "veth"],
                    &["zone", "bridge", "privat", "HOST"],
                ),
            )],
        ),
        table(
            w,
            "resources",
            0.5,
            vec![
                entry(w, 0.5, "memory", memory(w)),
                entry(
                    w,
                    0.5,
                    "cpus",
                    prop_oneof![3 => float(w), 1 => integer(w, 1..=8)].boxed(),
                ),
                entry(w, 0.5, "pids", integer(w, 1..=100_000)),
            ],
        ),
        table(
            w,
            "security",
            0.4,
            vec![
                entry(w, 0.5, "add_capabilities", capabilities(w)),
                entry(w, 0.5, "drop_capabilities", capabilities(w)),
                entry(w, 0.5, "no_new_privileges", boolean()),
                entry(w, 0.5, "read_only", boolean()),
            ],
        ),
    ];
    tables.prop_map(|parts| parts.concat()).boxed()
}

pub fn definition() -> BoxedStrategy<String> {
    prop_oneof![definition_in(true), definition_in(false)].boxed()
}
