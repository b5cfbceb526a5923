//! Signals by name or number, as a definition, a plan and `mm kill --signal` write them:
//! `SIGTERM`, `TERM`, `SIGRTMIN+3`, `9`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A signal this system has; written by its name, read from a name or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(libc::c_int);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a signal name or number (such as TERM, SIGHUP, RTMIN+3 or 9)")]
pub struct BadSignal(pub String);

impl Signal {
    pub const TERM: Signal = Signal(libc::SIGTERM);

    /// `SIGRTMIN+offset` (what a booted systemd takes as "halt").
    pub fn rtmin(offset: libc::c_int) -> Signal {
        Signal(libc::SIGRTMIN() + offset)
    }

    pub fn number(self) -> libc::c_int {
        self.0
    }
}

impl FromStr for Signal {
    type Err = BadSignal;

    fn from_str(text: &str) -> Result<Self, BadSignal> {
        let bad = || BadSignal(text.to_owned());
        let name = text.trim();
        if let Ok(n) = name.parse::<libc::c_int>() {
            return (1..=libc::SIGRTMAX())
                .contains(&n)
                .then_some(Signal(n))
                .ok_or_else(bad);
        }
        let bare = name.strip_prefix("SIG").unwrap_or(name);
        if let Some(rest) = bare.strip_prefix("RTMIN") {
            let offset: libc::c_int = if rest.is_empty() {
                0
            } else {
                let digits = rest.strip_prefix('+').ok_or_else(bad)?;
                digits.parse().map_err(|_| bad())?
            };
            let n = libc::SIGRTMIN().checked_add(offset).ok_or_else(bad)?;
            return (n <= libc::SIGRTMAX()).then_some(Signal(n)).ok_or_else(bad);
        }
        format!("SIG{bare}")
            .parse::<nix::sys::signal::Signal>()
            .map(|s| Signal(s as libc::c_int))
            .map_err(|_| bad())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rtmin = libc::SIGRTMIN();
        match nix::sys::signal::Signal::try_from(self.0) {
            Ok(s) => f.write_str(s.as_str()),
            Err(_) if self.0 == rtmin => f.write_str("SIGRTMIN"),
            Err(_) if self.0 > rtmin => write!(f, "SIGRTMIN+{}", self.0 - rtmin),
            // glibc's own (32, 33): they have no name.
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_and_print_back() {
        for (text, name) in [
            ("SIGTERM", "SIGTERM"),
            ("TERM", "SIGTERM"),
            ("9", "SIGKILL"),
            ("SIGRTMIN+3", "SIGRTMIN+3"),
            ("RTMIN", "SIGRTMIN"),
            (" HUP ", "SIGHUP"),
        ] {
            let signal: Signal = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(signal.to_string(), name);
            assert_eq!(name.parse::<Signal>(), Ok(signal));
        }
        assert_eq!(Signal::rtmin(3).number(), libc::SIGRTMIN() + 3);
    }

    #[test]
    fn what_is_no_signal_is_refused() {
        for text in [
            "",
            "0",
            "-1",
            "TREM",
            "SIGRTMIN+99",
            "RTMIN-1",
            "RTMIN+x",
            "99",
        ] {
            assert_eq!(
                text.parse::<Signal>(),
                Err(BadSignal(text.to_owned())),
                "{text}"
            );
        }
        let json = serde_json::from_str::<Signal>("\"SIGNOPE\"").unwrap_err();
        assert!(
            json.to_string().contains("`SIGNOPE` is not a signal"),
            "{json}"
        );
    }
}
