//! `[desktop]`'s passthroughs: the caller's display, sound, agent and bus sockets and the
//! host's GPU devices, each opted into by a key of its own.

use serde::{Deserialize, Serialize};

/// One passthrough of `[desktop]`, named as its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Passthrough {
    Wayland,
    X11,
    Pipewire,
    Pulseaudio,
    Gpu,
    Nvidia,
    SshAgent,
    SessionBus,
}

impl Passthrough {
    /// Every passthrough, in the order `mm plan` lists them.
    pub const ALL: [Self; 8] = [
        Self::Wayland,
        Self::X11,
        Self::Pipewire,
        Self::Pulseaudio,
        Self::Gpu,
        Self::Nvidia,
        Self::SshAgent,
        Self::SessionBus,
    ];

    /// Its key in `[desktop]`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Wayland => "wayland",
            Self::X11 => "x11",
            Self::Pipewire => "pipewire",
            Self::Pulseaudio => "pulseaudio",
            Self::Gpu => "gpu",
            Self::Nvidia => "nvidia",
            Self::SshAgent => "ssh_agent",
            Self::SessionBus => "session_bus",
        }
    }

    /// The variables it sets in the machine (so `[exec] env` may not set them too).
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Self::Wayland => &["WAYLAND_DISPLAY"],
            Self::X11 => &["DISPLAY", "XAUTHORITY"],
            Self::Pipewire => &["PIPEWIRE_REMOTE"],
            Self::Pulseaudio => &["PULSE_SERVER"],
            Self::Gpu | Self::Nvidia => &[],
            Self::SshAgent => &["SSH_AUTH_SOCK"],
            Self::SessionBus => &["DBUS_SESSION_BUS_ADDRESS"],
        }
    }
}

impl std::fmt::Display for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "desktop.{}", self.key())
    }
}
