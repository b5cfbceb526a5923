//! The host's desktop sockets and devices, for `[desktop]` passthroughs: where the caller's
//! Wayland, X11, PipeWire, PulseAudio, ssh-agent and session-bus sockets are (from its
//! environment), its GPU render nodes, and its NVIDIA nodes and driver libraries (a CDI spec
//! when there is one, in `cdi.rs`). Probed once, as facts; what is absent says why, so a
//! definition that asks for it is refused naming the missing variable or path.

mod cdi;

use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cdi::CdiEdits;

/// A fact found, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probed<T> {
    Found(T),
    Missing(String),
}

impl<T> Probed<T> {
    fn missing(why: impl Into<String>) -> Self {
        Self::Missing(why.into())
    }
}

impl<T> Default for Probed<T> {
    fn default() -> Self {
        Self::Missing("not probed (the host facts have no desktop section)".to_owned())
    }
}

/// Everything `[desktop]` may pass through, as found on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesktopFacts {
    /// The Wayland compositor's socket.
    pub wayland: Probed<PathBuf>,
    pub x11: Probed<X11>,
    /// `pipewire-0`.
    pub pipewire: Probed<PathBuf>,
    /// PulseAudio's (or pipewire-pulse's) `native` socket.
    pub pulseaudio: Probed<PathBuf>,
    pub ssh_agent: Probed<PathBuf>,
    /// The session bus's socket (a `unix:path=` address).
    pub session_bus: Probed<PathBuf>,
    pub gpu: Probed<Gpu>,
    pub nvidia: Probed<Nvidia>,
}

/// A local X display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X11 {
    /// N of `DISPLAY=:N`.
    pub display: u32,
    /// `/tmp/.X11-unix/XN`.
    pub socket: PathBuf,
    /// `$XAUTHORITY`, else `~/.Xauthority` when it exists; `None`: the server takes
    /// clients without a cookie.
    pub xauthority: Option<PathBuf>,
}

/// A device node on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    /// Permission bits, owner and group.
    pub mode: u32,
    pub gid: u32,
}

/// The GPU's render nodes (`/dev/dri/renderD*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub render_nodes: Vec<DeviceNode>,
    /// The name of the nodes' group (Debian's `render`), when the host names it.
    pub group: Option<String>,
}

/// NVIDIA's device nodes and user-space driver, as a CDI spec or the host's files give them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nvidia {
    /// The CDI spec they come from; `None`: found under /dev and the library directories.
    pub cdi_spec: Option<PathBuf>,
    /// Host nodes and where they go inside.
    pub devices: Vec<(DeviceNode, String)>,
    /// Host files bound read-only, and where inside.
    pub files: Vec<(PathBuf, String)>,
    /// Variables the spec sets, `KEY=VALUE`.
    pub env: Vec<String>,
    /// What the spec would have run (`hooks`), which mm does not run.
    pub hooks_not_run: Vec<String>,
}

/// Where the probe looks: the real system's paths, or a test's tree.
pub struct Places {
    pub dev: PathBuf,
    pub cdi_dirs: Vec<PathBuf>,
    pub lib_dirs: Vec<PathBuf>,
    pub group_file: PathBuf,
}

impl Places {
    /// The running system's.
    pub fn system() -> Self {
        let paths = |all: &[&str]| all.iter().map(PathBuf::from).collect();
        Self {
            dev: PathBuf::from("/dev"),
            cdi_dirs: paths(&["/etc/cdi", "/var/run/cdi"]),
            lib_dirs: paths(&[
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
                "/usr/lib64",
                "/usr/lib",
            ]),
            group_file: PathBuf::from("/etc/group"),
        }
    }
}

impl DesktopFacts {
    /// Probes from the environment `env` and the files under `places`.
    pub fn probe(env: &dyn Fn(&str) -> Option<OsString>, home: &Path, places: &Places) -> Self {
        let runtime = env("XDG_RUNTIME_DIR").map(PathBuf::from);
        Self {
            wayland: wayland(env, runtime.as_deref()),
            x11: x11(env, home),
            pipewire: pipewire(env, runtime.as_deref()),
            pulseaudio: pulseaudio(env, runtime.as_deref()),
            ssh_agent: match env("SSH_AUTH_SOCK") {
                None => Probed::missing("SSH_AUTH_SOCK is not set"),
                Some(path) => socket(PathBuf::from(path), "SSH_AUTH_SOCK"),
            },
            session_bus: session_bus(env, runtime.as_deref()),
            gpu: gpu(places),
            nvidia: nvidia(places),
        }
    }
}

/// `path` when it is a socket; why not otherwise (`from` names where the path came from).
fn socket(path: PathBuf, from: &str) -> Probed<PathBuf> {
    match std::fs::metadata(&path) {
        Ok(m) if m.file_type().is_socket() => Probed::Found(path),
        Ok(_) => Probed::missing(format!("{} ({from}) is not a socket", path.display())),
        Err(e) => Probed::missing(format!("{} ({from}): {e}", path.display())),
    }
}

fn in_runtime_dir(runtime: Option<&Path>, name: &str, what: &str) -> Probed<PathBuf> {
    match runtime {
        Some(dir) => socket(dir.join(name), &format!("$XDG_RUNTIME_DIR/{name}")),
        None => Probed::missing(format!(
            "XDG_RUNTIME_DIR is not set, so {what} is not found"
        )),
    }
}

fn wayland(env: &dyn Fn(&str) -> Option<OsString>, runtime: Option<&Path>) -> Probed<PathBuf> {
    let Some(display) = env("WAYLAND_DISPLAY") else {
        return Probed::missing("WAYLAND_DISPLAY is not set");
    };
    let display = PathBuf::from(display);
    if display.is_absolute() {
        return socket(display, "WAYLAND_DISPLAY");
    }
    match runtime {
        Some(dir) => socket(dir.join(&display), "$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY"),
        None => Probed::missing("XDG_RUNTIME_DIR is not set (WAYLAND_DISPLAY is relative to it)"),
    }
}

/// The display number of a local `DISPLAY` (`:N`, `:N.S`, `unix:N`).
pub fn local_display(display: &str) -> Option<u32> {
    let rest = display
        .strip_prefix(':')
        .or_else(|| display.strip_prefix("unix:"))?;
    let number = rest.split('.').next()?;
    number.parse().ok()
}

fn x11(env: &dyn Fn(&str) -> Option<OsString>, home: &Path) -> Probed<X11> {
    let Some(display) = env("DISPLAY") else {
        return Probed::missing("DISPLAY is not set");
    };
    let display = display.to_string_lossy().into_owned();
    let Some(number) = local_display(&display) else {
        return Probed::missing(format!(
            "DISPLAY={display} is not a local display (:N); only local sockets are passed"
        ));
    };
    let path = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
    let socket = match socket(path, "DISPLAY") {
        Probed::Found(path) => path,
        Probed::Missing(why) => return Probed::Missing(why),
    };
    let xauthority = match env("XAUTHORITY") {
        Some(file) => {
            let file = PathBuf::from(file);
            match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => Some(file),
                Ok(_) => {
                    return Probed::missing(format!(
                        "{} (XAUTHORITY) is not a file",
                        file.display()
                    ));
                }
                Err(e) => {
                    return Probed::missing(format!("{} (XAUTHORITY): {e}", file.display()));
                }
            }
        }
        None => Some(home.join(".Xauthority")).filter(|f| f.is_file()),
    };
    Probed::Found(X11 {
        display: number,
        socket,
        xauthority,
    })
}

fn pipewire(env: &dyn Fn(&str) -> Option<OsString>, runtime: Option<&Path>) -> Probed<PathBuf> {
    match env("PIPEWIRE_REMOTE").map(PathBuf::from) {
        Some(remote) if remote.is_absolute() => socket(remote, "PIPEWIRE_REMOTE"),
        Some(remote) => in_runtime_dir(runtime, &remote.to_string_lossy(), "PIPEWIRE_REMOTE"),
        None => in_runtime_dir(runtime, "pipewire-0", "PipeWire's socket"),
    }
}

fn pulseaudio(env: &dyn Fn(&str) -> Option<OsString>, runtime: Option<&Path>) -> Probed<PathBuf> {
    match env("PULSE_SERVER") {
        Some(server) => {
            let server = server.to_string_lossy().into_owned();
            match server.strip_prefix("unix:") {
                Some(path) => socket(PathBuf::from(path), "PULSE_SERVER"),
                None => Probed::missing(format!(
                    "PULSE_SERVER={server} is not a local socket (unix:PATH)"
                )),
            }
        }
        None => in_runtime_dir(runtime, "pulse/native", "PulseAudio's socket"),
    }
}

/// The socket of the first `unix:path=` in a D-Bus address list, unescaped.
pub fn bus_socket(address: &str) -> Option<PathBuf> {
    address.split(';').find_map(|one| {
        let params = one.strip_prefix("unix:")?;
        let value = params.split(',').find_map(|kv| kv.strip_prefix("path="))?;
        let mut bytes = Vec::new();
        let raw = value.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                bytes.push(raw[i]);
                i += 1;
            }
        }
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(OsString::from_vec(bytes)))
    })
}

fn session_bus(env: &dyn Fn(&str) -> Option<OsString>, runtime: Option<&Path>) -> Probed<PathBuf> {
    match env("DBUS_SESSION_BUS_ADDRESS") {
        Some(address) => {
            let address = address.to_string_lossy().into_owned();
            match bus_socket(&address) {
                Some(path) => socket(path, "DBUS_SESSION_BUS_ADDRESS"),
                None => Probed::missing(format!(
                    "DBUS_SESSION_BUS_ADDRESS={address} names no unix:path= socket"
                )),
            }
        }
        // What libdbus and sd-bus connect to without the variable.
        None => match runtime {
            Some(dir) => match socket(dir.join("bus"), "$XDG_RUNTIME_DIR/bus") {
                Probed::Found(path) => Probed::Found(path),
                Probed::Missing(why) => {
                    Probed::missing(format!("DBUS_SESSION_BUS_ADDRESS is not set, and {why}"))
                }
            },
            None => Probed::missing("DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR are not set"),
        },
    }
}

/// A device node's facts; `None` when `path` is not one.
pub fn device_node(path: &Path) -> Option<DeviceNode> {
    let m = std::fs::metadata(path).ok()?;
    let t = m.file_type();
    let kind = if t.is_char_device() {
        'c'
    } else if t.is_block_device() {
        'b'
    } else {
        return None;
    };
    let rdev = m.rdev();
    Some(DeviceNode {
        path: path.to_owned(),
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        mode: m.mode() & 0o7777,
        gid: m.gid(),
    })
}

/// The entries of `dir` whose names `keep` accepts, sorted.
fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .collect();
    all.sort();
    all
}

fn group_name(group_file: &Path, gid: u32) -> Option<String> {
    let text = std::fs::read_to_string(group_file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == gid).then(|| name.to_owned())
    })
}

fn gpu(places: &Places) -> Probed<Gpu> {
    let dri = places.dev.join("dri");
    let nodes: Vec<DeviceNode> = entries(&dri, |n| n.starts_with("renderD"))
        .iter()
        .filter_map(|p| device_node(p))
        .collect();
    let Some(first) = nodes.first() else {
        return Probed::missing(format!("{} has no render node (renderD*)", dri.display()));
    };
    let group = group_name(&places.group_file, first.gid);
    Probed::Found(Gpu {
        render_nodes: nodes,
        group,
    })
}

/// NVIDIA's nodes: the control, UVM and mode-setting ones and one per GPU.
fn nvidia_node(name: &str) -> bool {
    name.strip_prefix("nvidia").is_some_and(|rest| {
        rest.chars().all(|c| c.is_ascii_digit())
            || ["ctl", "-uvm", "-uvm-tools", "-modeset"].contains(&rest)
    })
}

/// The user-space driver's libraries, by name.
fn nvidia_library(name: &str) -> bool {
    let prefixes = [
        "libcuda.so",
        "libnvidia-",
        "libnvcuvid.so",
        "libEGL_nvidia.so",
        "libGLX_nvidia.so",
        "libGLESv1_CM_nvidia.so",
        "libGLESv2_nvidia.so",
        "libnvoptix.so",
    ];
    prefixes.iter().any(|p| name.starts_with(p)) && name.contains(".so")
}

fn nvidia(places: &Places) -> Probed<Nvidia> {
    match cdi::find(&places.cdi_dirs) {
        Ok(Some((spec, edits))) => return cdi_nvidia(spec, edits),
        Ok(None) => {}
        Err(why) => return Probed::Missing(why),
    }
    let nodes: Vec<(DeviceNode, String)> = entries(&places.dev, nvidia_node)
        .iter()
        .filter_map(|p| device_node(p))
        .map(|n| {
            let inside = n.path.strip_prefix(&places.dev).unwrap_or(&n.path);
            let inside = format!("/dev/{}", inside.display());
            (n, inside)
        })
        .collect();
    if !nodes.iter().any(|(n, _)| n.path.ends_with("nvidiactl")) {
        return Probed::missing(format!(
            "{} has no nvidiactl (no NVIDIA driver loaded), and no CDI spec names nvidia.com/gpu",
            places.dev.display()
        ));
    }
    let files: Vec<(PathBuf, String)> = places
        .lib_dirs
        .iter()
        .flat_map(|dir| entries(dir, nvidia_library))
        .map(|p| {
            let inside = p.display().to_string();
            (p, inside)
        })
        .collect();
    if files.is_empty() {
        return Probed::missing(
            "the NVIDIA nodes are there but no user-space driver library (libcuda.so, libnvidia-*) was found",
        );
    }
    Probed::Found(Nvidia {
        cdi_spec: None,
        devices: nodes,
        files,
        env: Vec::new(),
        hooks_not_run: Vec::new(),
    })
}

fn cdi_nvidia(spec: PathBuf, edits: CdiEdits) -> Probed<Nvidia> {
    let mut devices = Vec::new();
    for node in &edits.device_nodes {
        let host = node.host_path.as_ref().unwrap_or(&node.path);
        match device_node(host) {
            Some(n) => devices.push((n, node.path.display().to_string())),
            None => {
                return Probed::missing(format!(
                    "{} names the device {}, which is not a device node here",
                    spec.display(),
                    host.display()
                ));
            }
        }
    }
    let files = edits
        .mounts
        .iter()
        .map(|m| (m.host_path.clone(), m.container_path.display().to_string()))
        .collect();
    Probed::Found(Nvidia {
        cdi_spec: Some(spec),
        devices,
        files,
        env: edits.env,
        hooks_not_run: edits.hooks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_displays_and_bus_addresses() {
        assert_eq!(local_display(":0"), Some(0));
        assert_eq!(local_display(":12.0"), Some(12));
        assert_eq!(local_display("unix:3"), Some(3));
        assert_eq!(local_display("host:0"), None);
        assert_eq!(
            bus_socket("unix:path=/run/user/1000/bus"),
            Some(PathBuf::from("/run/user/1000/bus"))
        );
        assert_eq!(
            bus_socket("unix:abstract=/tmp/x;unix:guid=1,path=/tmp/a%20b"),
            Some(PathBuf::from("/tmp/a b"))
        );
        assert_eq!(bus_socket("tcp:host=localhost,port=1"), None);
    }

    #[test]
    fn missing_variables_and_sockets_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().to_owned();
        let listener = std::os::unix::net::UnixListener::bind(runtime.join("wayland-1")).unwrap();
        std::fs::write(runtime.join("pipewire-0"), "").unwrap();
        let env = |k: &str| match k {
            "XDG_RUNTIME_DIR" => Some(runtime.clone().into_os_string()),
            "WAYLAND_DISPLAY" => Some("wayland-1".into()),
            "DISPLAY" => Some("remote:0".into()),
            _ => None,
        };
        let empty = dir.path().join("none");
        let places = Places {
            dev: empty.clone(),
            cdi_dirs: vec![],
            lib_dirs: vec![],
            group_file: empty,
        };
        let facts = DesktopFacts::probe(&env, dir.path(), &places);
        assert_eq!(facts.wayland, Probed::Found(runtime.join("wayland-1")));
        let Probed::Missing(why) = &facts.pipewire else {
            panic!("{:?}", facts.pipewire)
        };
        assert!(why.ends_with("pipewire-0 ($XDG_RUNTIME_DIR/pipewire-0) is not a socket"));
        assert_eq!(
            facts.ssh_agent,
            Probed::Missing("SSH_AUTH_SOCK is not set".into())
        );
        let Probed::Missing(why) = &facts.x11 else {
            panic!()
        };
        assert!(
            why.contains("DISPLAY=remote:0 is not a local display"),
            "{why}"
        );
        assert!(matches!(facts.gpu, Probed::Missing(_)));
        assert!(matches!(facts.nvidia, Probed::Missing(_)));
        drop(listener);
    }
}
