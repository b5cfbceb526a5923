//! The definition file exactly as written: serde structs with spans, no meaning yet.
//!
//! Every table denies unknown keys. Values whose meaning needs checking keep their span so
//! the validator can point at them. Keys listed here are the whole schema: the validator
//! (`validate.rs`) turns these into the typed [`super::Definition`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefinition {
    pub description: Option<Spanned<String>>,
    pub image: Spanned<RawImage>,
    #[serde(default)]
    pub exec: RawExec,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub users: RawUsers,
    #[serde(default)]
    pub network: RawNetwork,
    pub resources: Option<Spanned<RawResources>>,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub desktop: RawDesktop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub source: Spanned<String>,
    pub digest: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExec {
    pub boot: Option<Spanned<bool>>,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub user: Option<Spanned<String>>,
    pub workdir: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub persistent: Option<bool>,
    #[serde(default)]
    pub binds: Vec<Spanned<RawBind>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBind {
    pub source: Spanned<String>,
    pub target: Spanned<String>,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsers {
    pub range: Option<Spanned<RawRange>>,
    pub keep_id: Option<Spanned<RawKeepId>>,
    pub home: Option<Spanned<String>>,
}

/// `keep_id = true` (yourself) or `keep_id = "NAME"` (a named host user, as root).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawKeepId {
    Flag(bool),
    Name(String),
}

/// `range = "auto"` or `range = { base = 524288, size = 65536 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRange {
    Word(String),
    Explicit(RawExplicitRange),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExplicitRange {
    pub base: i64,
    pub size: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub mode: Option<Spanned<String>>,
    pub zone: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    #[serde(default)]
    pub ports: Vec<Spanned<String>>,
    pub mtu: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub memory: Option<Spanned<RawSize>>,
    pub cpus: Option<Spanned<f64>>,
    pub pids: Option<Spanned<i64>>,
    pub cpu_weight: Option<Spanned<i64>>,
}

/// A size: `"512M"` or a plain number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    #[serde(default)]
    pub add_capabilities: Vec<Spanned<String>>,
    #[serde(default)]
    pub drop_capabilities: Vec<Spanned<String>>,
    pub no_new_privileges: Option<bool>,
    pub read_only: Option<bool>,
}

/// `[desktop]`: each passthrough a boolean of its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDesktop {
    pub wayland: Option<Spanned<bool>>,
    pub x11: Option<Spanned<bool>>,
    pub pipewire: Option<Spanned<bool>>,
    pub pulseaudio: Option<Spanned<bool>>,
    pub gpu: Option<Spanned<bool>>,
    pub nvidia: Option<Spanned<bool>>,
    pub ssh_agent: Option<Spanned<bool>>,
    pub session_bus: Option<Spanned<bool>>,
}

/// The keys each table accepts, for suggestions and the "valid keys" help line.
pub const SCHEMA: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "description",
            "image",
            "exec",
            "storage",
            "users",
            "network",
            "resources",
            "security",
            "desktop",
        ],
    ),
    ("image", &["source", "digest"]),
    ("exec", &["boot", "command", "env", "user", "workdir"]),
    ("storage", &["persistent", "binds"]),
    ("storage.binds", &["source", "target", "readonly"]),
    ("users", &["range", "keep_id", "home"]),
    ("users.range", &["base", "size"]),
    ("network", &["mode", "zone", "address", "ports", "mtu"]),
    ("resources", &["memory", "cpus", "pids", "cpu_weight"]),
    (
        "security",
        &[
            "add_capabilities",
            "drop_capabilities",
            "no_new_privileges",
            "read_only",
        ],
    ),
    (
        "desktop",
        &[
            "wayland",
            "x11",
            "pipewire",
            "pulseaudio",
            "gpu",
            "nvidia",
            "ssh_agent",
            "session_bus",
        ],
    ),
];
