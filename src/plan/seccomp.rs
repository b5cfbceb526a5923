//! A plan's seccomp filter: none, mm's own (`mm-default`, compiled at build time), or an
//! OCI bundle's profile, validated and typed (no JSON of the bundle's is kept), with the
//! digest of its canonical form that names its compiled BPF in the cache.

use serde::{Deserialize, Serialize};

/// Which filter PID 1 (and every `mm exec` into the machine) loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seccomp {
    /// No filter at all (an OCI bundle without `linux.seccomp`, as the runtime-spec asks).
    None,
    /// mm's default filter (src/runtime/seccomp.rs, docs/security.md).
    MmDefault,
    /// A bundle's `linux.seccomp`, compiled with libseccomp at `mm oci create`.
    Profile(Box<Profile>),
}

/// A validated seccomp profile and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// `sha256:HEX` of the canonical JSON form of `filter` (see [`Filter::digest`]).
    pub digest: String,
    pub filter: Filter,
    /// Syscall names of the profile that this libseccomp does not know, skipped as runc
    /// and crun skip them (a profile may name calls newer than the library).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Later actions the profile gives a call it gave another action already, without
    /// conditions: libseccomp keeps the first (as runc and crun get it), and so does mm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<Overridden>,
}

/// A call's later action, dropped for its first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overridden {
    pub syscall: String,
    pub action: Action,
    /// Where it was given (`linux.seccomp.syscalls[15]`).
    pub at: String,
    /// The action kept, and where it was given.
    pub kept: Action,
    pub kept_at: String,
}

impl std::fmt::Display for Overridden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({}), after {} ({})",
            self.syscall, self.action, self.at, self.kept, self.kept_at
        )
    }
}

/// What the compiled program does: the canonical form the digest is taken of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub default_action: Action,
    /// libseccomp's architecture names (`SCMP_ARCH_X86_64`); empty: the native one only.
    pub architectures: Vec<String>,
    /// Flags of `seccomp(2)` given when the program is loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// One rule per syscall name, in the profile's order.
    pub rules: Vec<Rule>,
}

/// What a matching call (or any call, as the default) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `SCMP_ACT_KILL_PROCESS`.
    KillProcess,
    /// `SCMP_ACT_KILL_THREAD` (and `SCMP_ACT_KILL`, its old name).
    KillThread,
    /// `SCMP_ACT_TRAP`: SIGSYS.
    Trap,
    /// `SCMP_ACT_ERRNO`: fails with this errno.
    Errno(u16),
    /// `SCMP_ACT_TRACE`: tells a tracer, with this value.
    Trace(u16),
    /// `SCMP_ACT_LOG`: allowed, and logged.
    Log,
    /// `SCMP_ACT_ALLOW`.
    Allow,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KillProcess => f.write_str("SCMP_ACT_KILL_PROCESS"),
            Self::KillThread => f.write_str("SCMP_ACT_KILL_THREAD"),
            Self::Trap => f.write_str("SCMP_ACT_TRAP"),
            Self::Errno(errno) => write!(f, "SCMP_ACT_ERRNO({errno})"),
            Self::Trace(value) => write!(f, "SCMP_ACT_TRACE({value})"),
            Self::Log => f.write_str("SCMP_ACT_LOG"),
            Self::Allow => f.write_str("SCMP_ACT_ALLOW"),
        }
    }
}

/// A flag of `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flag {
    /// `SECCOMP_FILTER_FLAG_TSYNC` (PID 1 is single-threaded: it changes nothing).
    Tsync,
    /// `SECCOMP_FILTER_FLAG_LOG`: log every action but `ALLOW`.
    Log,
    /// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: keep speculative store bypass allowed.
    SpecAllow,
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tsync => "SECCOMP_FILTER_FLAG_TSYNC",
            Self::Log => "SECCOMP_FILTER_FLAG_LOG",
            Self::SpecAllow => "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        })
    }
}

/// What one syscall gets, on condition of its arguments (all must hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub syscall: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgCondition>,
}

/// A condition on one argument (`index` 0 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgCondition {
    pub index: u8,
    pub op: CmpOp,
    pub value: u64,
    /// With `masked-eq`: the value the masked argument must equal (`value` is the mask).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value_two: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// libseccomp's comparisons (`SCMP_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CmpOp {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    MaskedEq,
}

impl Filter {
    /// `sha256:HEX` of the filter's canonical form (its JSON, fields in their fixed order).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        // Serialising plain data with string keys cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let hash = Sha256::digest(&json);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

impl std::fmt::Display for Seccomp {
    /// As the plan's text shows it: `mm-default`, `none`, or
    /// `profile sha256:ab12… (default SCMP_ACT_ERRNO(1), 371 rules)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::MmDefault => f.write_str("mm-default"),
            Self::Profile(p) => {
                let short = p.digest.get(..19).unwrap_or(&p.digest);
                write!(
                    f,
                    "profile {short}… (default {}, {} rules",
                    p.filter.default_action,
                    p.filter.rules.len()
                )?;
                match p.skipped.len() {
                    0 => {}
                    1 => f.write_str(", 1 name skipped")?,
                    n => write!(f, ", {n} names skipped")?,
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_filters_keep_their_string_form() {
        assert_eq!(serde_json::to_string(&Seccomp::None).unwrap(), "\"none\"");
        assert_eq!(
            serde_json::to_string(&Seccomp::MmDefault).unwrap(),
            "\"mm-default\""
        );
        let back: Seccomp = serde_json::from_str("\"mm-default\"").unwrap();
        assert_eq!(back, Seccomp::MmDefault);
    }

    #[test]
    fn the_digest_follows_the_content() {
        let mut filter = Filter {
            default_action: Action::Allow,
            architectures: vec![],
            flags: vec![],
            rules: vec![Rule {
                syscall: "mkdir".into(),
                action: Action::Errno(1),
                args: vec![],
            }],
        };
        let first = filter.digest();
        assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");
        assert_eq!(first, filter.clone().digest());
        filter.rules[0].action = Action::Errno(2);
        assert_ne!(first, filter.digest());
    }
}
