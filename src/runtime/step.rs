//! The launch's steps, by name: what failed travels between the stages as a
//! [`StepFailure`], a [`Step`] with its errno, so that the supervisor and the CLI decide
//! (the exit code, the message) from the step's kind, never from its text.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::idmap::IdKind;

/// A launch step, with the paths and arguments its message needs. Host paths are
/// `PathBuf`s; paths inside the machine are its plan's strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum Step {
    // The supervisor.
    MakePipe,
    /// The plan still has `Allocate` where the supervisor needs the machine's id block.
    MapIdsUnallocated,
    ForkHolder,
    /// The holder's `unshare(CLONE_NEWUSER)`.
    UnshareUserNamespace,
    /// Writing the holder's uid or gid map.
    MapIds {
        kind: IdKind,
    },
    PrivateMountNamespace,
    FindUpper {
        path: PathBuf,
    },
    OpenConsole,
    NameConsole,
    /// Connecting to `mm oci create --console-socket`'s socket.
    ConnectConsoleSocket {
        path: PathBuf,
    },
    /// PID 1's terminal, in the container's devpts, its master sent to the caller.
    OpenTerminal,
    /// `mm oci exec --pid-file`, in its directory.
    WritePidFile {
        name: String,
    },
    ChownConsole {
        path: PathBuf,
    },
    ForkSpawner,
    JoinCgroup,
    StartSpawner,
    ReadReport,
    StartPid1,
    BlockSupervisorSignals,
    OpenSignalfd,
    // The registrar.
    ForkRegistrar,
    ConnectBus,
    ReadLeader,
    Register {
        machine: String,
    },
    // The machine's root (runtime/rootfs).
    FindLayers,
    Create {
        path: PathBuf,
    },
    CreateMountPoint {
        target: String,
    },
    Open {
        path: PathBuf,
    },
    Chown {
        path: PathBuf,
        id: u32,
    },
    Chmod {
        path: PathBuf,
    },
    MountTmpfs {
        target: PathBuf,
    },
    MountOverlay {
        target: PathBuf,
        layers: usize,
        upper: PathBuf,
    },
    PrivateMounts,
    CloneMount {
        path: PathBuf,
    },
    IdMapMount {
        path: PathBuf,
        from: u32,
    },
    Attach {
        source: PathBuf,
        target: PathBuf,
    },
    MakeReadOnly {
        path: PathBuf,
    },
    StageMount {
        source: PathBuf,
        target: PathBuf,
    },
    Mount {
        fstype: String,
        target: String,
        options: Vec<String>,
    },
    Bind {
        source: PathBuf,
        target: String,
    },
    RemountReadOnly {
        path: PathBuf,
    },
    BindConsole {
        pty: PathBuf,
        target: String,
    },
    CgroupTree,
    MaskTmpfs {
        target: String,
    },
    MaskNull {
        target: String,
    },
    Link {
        target: String,
        points_to: String,
    },
    BindRoot {
        root: PathBuf,
    },
    OpenRoot {
        root: PathBuf,
    },
    PivotRoot {
        root: PathBuf,
    },
    // The spawner and PID 1 (runtime/child).
    DupGoPipe,
    WaitSupervisor,
    EnterStage {
        path: PathBuf,
    },
    JoinNamespace {
        name: String,
    },
    JoinExisting {
        namespace: String,
        path: PathBuf,
    },
    Sysctl {
        key: String,
        value: String,
    },
    DropGroups,
    BecomeRootGid,
    BecomeRootUid,
    Unshare {
        namespaces: Vec<String>,
    },
    ClonePid1,
    DeathSignal,
    /// Rootless: PID 1 made dumpable again after it became the machine's root.
    Dumpable,
    KeepMounts,
    Hostname {
        name: String,
    },
    Loopback,
    WriteFile {
        target: String,
    },
    /// Part of the machine's network, in the supervisor.
    Network {
        what: String,
    },
    HoldPort,
    WaitNetwork,
    AttachConsole,
    CloseOnExec,
    // The machine's process (runtime/init, runtime/security, runtime/exec).
    BlockSignals,
    /// Forking a command (`argv` empty: `mm exec`'s child, before it knows its command).
    Fork {
        argv: Vec<String>,
    },
    StartSession,
    ControllingTerminal,
    Chdir {
        path: String,
    },
    RestoreSignalMask,
    NoNewPrivs,
    /// The AppArmor profile of the next exec.
    AppArmor {
        profile: String,
    },
    /// `filter` is `None` when there is no filter of the plan's name.
    LoadSeccomp {
        filter: Option<String>,
    },
    CapabilityBoundingSet,
    DropCapability {
        capability: String,
    },
    ClearAmbientCapabilities,
    ClearInheritableCapabilities,
    RaiseAmbientCapabilities,
    SetRlimit {
        resource: String,
    },
    /// An OCI container's process, waiting for `mm oci start`.
    WaitForStart,
    /// `/proc/PID/oom_score_adj` of an OCI container's process.
    OomScoreAdj {
        value: i32,
    },
    /// PID 1, waiting before pivot_root for the supervisor's `createRuntime` hooks.
    WaitRuntimeHooks,
    /// A hook of an OCI bundle, run during the launch.
    Hook {
        point: String,
        path: PathBuf,
    },
    /// A pidfd on a re-parented PID 1.
    WatchPid1,
    /// nosuid, nodev or noexec on a bind.
    Restrict {
        target: String,
    },
    /// A mount's propagation type (an OCI mount's, or the root's after pivot_root).
    Propagate {
        target: String,
        propagation: crate::plan::Propagation,
    },
    ReadMachineFile {
        path: String,
    },
    /// Writing the keep-id user's entry into one of the machine's files.
    WriteUserFile {
        path: String,
    },
    /// Copying the image's /etc/skel into the keep-id user's empty machine home.
    SeedHome {
        path: String,
    },
    FindUser {
        spec: String,
    },
    SetGroups {
        groups: Vec<u32>,
    },
    BecomeGid {
        gid: u32,
    },
    BecomeUid {
        uid: u32,
    },
    /// `execve` of PID 1 or of a command (`argv` empty: there was none to run).
    Exec {
        argv: Vec<String>,
    },
    // Entering a running machine (runtime/enter).
    EnterCgroup,
    EnterRoot,
    OpenStreams,
    AttachStreams,
    Relay,
    WaitCommand,
}

impl std::fmt::Display for Step {
    /// One arm per step, so that a new step cannot go without its text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MakePipe => f.write_str("make a pipe"),
            Self::MapIdsUnallocated => f.write_str("map the machine's ids"),
            Self::ForkHolder => f.write_str("fork the user namespace holder"),
            Self::UnshareUserNamespace => f.write_str("unshare a user namespace"),
            Self::PrivateMountNamespace => {
                f.write_str("give the supervisor a mount namespace of its own")
            }
            Self::OpenConsole => f.write_str("open the console's pseudo-terminal"),
            Self::NameConsole => f.write_str("name the console"),
            Self::ConnectConsoleSocket { path } => {
                write!(f, "connect to the console socket {}", path.display())
            }
            Self::WritePidFile { name } => write!(f, "write the pid file {name}"),
            Self::OpenTerminal => f.write_str(
                "open a terminal in the container's /dev/pts and send its master to the \
                 console socket",
            ),
            Self::ForkSpawner => f.write_str("fork the spawner"),
            Self::JoinCgroup => f.write_str("put the machine in its cgroup"),
            Self::StartSpawner => f.write_str("start the spawner"),
            Self::ReadReport => f.write_str("read the machine's report"),
            Self::StartPid1 => f.write_str("start PID 1"),
            Self::BlockSupervisorSignals => f.write_str("block the supervisor's signals"),
            Self::OpenSignalfd => f.write_str("open the supervisor's signalfd"),
            Self::ForkRegistrar => f.write_str("fork the registering process"),
            Self::ConnectBus => f.write_str("connect to the system bus"),
            Self::ReadLeader => f.write_str("hand PID 1's pid to the registering process"),
            Self::FindLayers => f.write_str("find the image's layers"),
            Self::PrivateMounts => f.write_str("make the supervisor's mounts private"),
            Self::CgroupTree => f.write_str("mount the cgroup tree on /sys/fs/cgroup"),
            Self::DupGoPipe => f.write_str("dup the go pipe"),
            Self::WaitSupervisor => f.write_str("wait for the supervisor"),
            Self::DropGroups => f.write_str("drop supplementary groups"),
            Self::BecomeRootGid => f.write_str("become gid 0 in the machine"),
            Self::BecomeRootUid => f.write_str("become uid 0 in the machine"),
            Self::ClonePid1 => f.write_str("clone the machine's PID 1"),
            Self::DeathSignal => f.write_str("ask to die with the supervisor"),
            Self::Dumpable => f.write_str("make PID 1 dumpable"),
            Self::KeepMounts => f.write_str("keep the machine's mounts from the host"),
            Self::Loopback => f.write_str("bring the loopback interface up"),
            Self::WriteFile { target } => write!(f, "write {target} on a tmpfs of its own"),
            Self::Network { what } => write!(f, "set up the network: {what}"),
            Self::HoldPort => f.write_str("hold the forwarded host ports"),
            Self::WaitNetwork => f.write_str("wait for the supervisor to set the network up"),
            Self::AttachConsole => f.write_str("attach the console"),
            Self::CloseOnExec => f.write_str("mark inherited descriptors close-on-exec"),
            Self::BlockSignals => f.write_str("block signals"),
            Self::Fork { argv } if argv.is_empty() => f.write_str("fork"),
            Self::StartSession => f.write_str("start a session"),
            Self::ControllingTerminal => f.write_str("take the console as controlling terminal"),
            Self::RestoreSignalMask => f.write_str("restore the signal mask"),
            Self::NoNewPrivs => f.write_str("set no_new_privs"),
            Self::AppArmor { profile } => {
                write!(
                    f,
                    "set the AppArmor profile `{profile}` for the command's exec"
                )
            }
            Self::LoadSeccomp { filter: None } => f.write_str("load the seccomp filter"),
            Self::CapabilityBoundingSet => f.write_str("set the capability bounding set"),
            Self::ClearAmbientCapabilities => f.write_str("clear the ambient capabilities"),
            Self::ClearInheritableCapabilities => f.write_str("clear the inheritable capabilities"),
            Self::RaiseAmbientCapabilities => f.write_str("raise the ambient capabilities"),
            Self::SetRlimit { resource } => write!(f, "set {resource}"),
            Self::WaitForStart => f.write_str("wait for `mm oci start`"),
            Self::WaitRuntimeHooks => f.write_str("wait for the createRuntime hooks"),
            Self::OomScoreAdj { value } => write!(f, "set oom_score_adj to {value}"),
            Self::Hook { point, path } => write!(f, "run the {point} hook {}", path.display()),
            Self::WatchPid1 => f.write_str("watch PID 1 (pidfd_open)"),
            Self::Restrict { target } => write!(f, "restrict the mount on {target}"),
            Self::Propagate {
                target,
                propagation,
            } => write!(f, "make the mount on {target} {propagation}"),
            Self::Exec { argv } if argv.is_empty() => f.write_str("exec"),
            Self::EnterCgroup => f.write_str("join the machine's cgroup"),
            Self::EnterRoot => f.write_str("enter the machine's root"),
            Self::OpenStreams => f.write_str("open the command's terminal or pipes in the machine"),
            Self::AttachStreams => f.write_str("attach the command's standard streams"),
            Self::Relay => f.write_str("relay the command's terminal or pipes"),
            Self::WaitCommand => f.write_str("wait for the command"),
            Self::Create { path } => write!(f, "create {}", path.display()),
            Self::CreateMountPoint { target } => {
                write!(f, "create the mount point {target}")
            }
            Self::Open { path } => write!(f, "open {}", path.display()),
            Self::Chown { path, id } => write!(f, "chown {} to {id}", path.display()),
            Self::Chmod { path } => write!(f, "chmod {}", path.display()),
            Self::MountTmpfs { target } => {
                write!(f, "mount tmpfs on {}", target.display())
            }
            Self::MountOverlay {
                target,
                layers,
                upper,
            } => {
                let (target, upper) = (target.display(), upper.display());
                write!(
                    f,
                    "mount overlay on {target} ({layers} layers, upper {upper})"
                )
            }
            Self::CloneMount { path } => {
                write!(f, "clone the mount of {}", path.display())
            }
            Self::IdMapMount { path, from } => {
                let path = path.display();
                write!(f, "id-map {path} to the machine's ids from {from}")
            }
            Self::Attach { source, target } => {
                let (source, target) = (source.display(), target.display());
                write!(f, "attach {source} on {target}")
            }
            Self::MakeReadOnly { path } => write!(f, "make {} read-only", path.display()),
            Self::StageMount { source, target } => {
                let (source, target) = (source.display(), target.display());
                write!(f, "stage {source} on {target}")
            }
            Self::Mount {
                fstype,
                target,
                options,
            } => {
                let options = options.join(",");
                write!(f, "mount {fstype} on {target} ({options})")
            }
            Self::Bind { source, target } => {
                write!(f, "bind {} on {target}", source.display())
            }
            Self::RemountReadOnly { path } => {
                write!(f, "remount {} read-only", path.display())
            }
            Self::BindConsole { pty, target } => {
                write!(f, "bind the console {} on {target}", pty.display())
            }
            Self::MaskTmpfs { target } => write!(f, "mask {target} with an empty tmpfs"),
            Self::MaskNull { target } => write!(f, "mask {target} with /dev/null"),
            Self::Link { target, points_to } => {
                write!(f, "link {target} to {points_to}")
            }
            Self::BindRoot { root } => write!(f, "bind {} onto itself", root.display()),
            Self::OpenRoot { root } => write!(f, "open the new root {}", root.display()),
            Self::PivotRoot { root } => write!(f, "pivot_root into {}", root.display()),
            Self::MapIds { kind } => write!(f, "map the machine's {}s", kind.name()),
            Self::FindUpper { path } => {
                write!(f, "find the writable layer {}", path.display())
            }
            Self::ChownConsole { path } => {
                let path = path.display();
                write!(f, "hand the console {path} to the machine's root")
            }
            Self::Register { machine } => {
                write!(f, "register {machine} with systemd-machined")
            }
            Self::EnterStage { path } => write!(f, "enter {}", path.display()),
            Self::JoinNamespace { name } => {
                write!(f, "join the machine's {name} namespace")
            }
            Self::JoinExisting { namespace, path } => {
                write!(f, "join the {namespace} namespace {}", path.display())
            }
            Self::Sysctl { key, value } => write!(f, "set the kernel parameter {key} to {value}"),
            Self::Unshare { namespaces } => {
                write!(f, "unshare the {} namespaces", namespaces.join(", "))
            }
            Self::Hostname { name } => write!(f, "set the hostname to {name}"),
            Self::Fork { argv } => write!(f, "fork {}", argv.join(" ")),
            Self::Chdir { path } => write!(f, "chdir {path}"),
            Self::LoadSeccomp {
                filter: Some(filter),
            } => write!(f, "load the seccomp filter {filter}"),
            Self::DropCapability { capability } => {
                write!(f, "drop {capability} from the bounding set")
            }
            Self::ReadMachineFile { path } => write!(f, "read the machine's {path}"),
            Self::WriteUserFile { path } => write!(f, "write the keep-id user into {path}"),
            Self::SeedHome { path } => write!(f, "seed the home {path} from /etc/skel"),
            Self::FindUser { spec } => write!(f, "find the user {spec}"),
            Self::SetGroups { groups } => {
                let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
                write!(f, "set the groups {}", groups.join(", "))
            }
            Self::BecomeGid { gid } => write!(f, "become gid {gid}"),
            Self::BecomeUid { uid } => write!(f, "become uid {uid}"),
            Self::Exec { argv } => write!(f, "exec {}", argv.join(" ")),
        }
    }
}

/// A launch step that failed, as the stage that failed saw it: the step, the errno if the
/// system gave one, and the message (an `io::Error`'s ends with `(os error N)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{step}: {message}")]
pub struct StepFailure {
    pub step: Step,
    pub errno: Option<i32>,
    pub message: String,
}

impl StepFailure {
    pub fn io(step: Step, e: &std::io::Error) -> Self {
        Self {
            step,
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    /// A failure the system gave an errno for, described by `detail`; the message ends
    /// with the errno as an `io::Error` shows it.
    pub fn errno(step: Step, errno: i32, detail: impl std::fmt::Display) -> Self {
        let os = std::io::Error::from_raw_os_error(errno);
        Self {
            step,
            errno: Some(errno),
            message: format!("{detail}: {os}"),
        }
    }

    pub fn other(step: Step, message: impl Into<String>) -> Self {
        Self {
            step,
            errno: None,
            message: message.into(),
        }
    }

    /// Whether an `execve` of a command failed, and then whether the program was missing.
    /// (`Step::Exec` without a command is a failure to set it up, not to execute it.)
    pub fn exec_failed(&self) -> Option<bool> {
        match &self.step {
            Step::Exec { argv } if !argv.is_empty() => Some(self.errno == Some(libc::ENOENT)),
            _ => None,
        }
    }
}

/// Names the step of an `io::Result` or a `nix::Result` that failed.
pub trait WithStep<T> {
    fn step(self, what: impl FnOnce() -> Step) -> Result<T, StepFailure>;
}

impl<T> WithStep<T> for std::io::Result<T> {
    fn step(self, what: impl FnOnce() -> Step) -> Result<T, StepFailure> {
        self.map_err(|e| StepFailure::io(what(), &e))
    }
}

impl<T> WithStep<T> for nix::Result<T> {
    fn step(self, what: impl FnOnce() -> Step) -> Result<T, StepFailure> {
        self.map_err(|e| StepFailure::io(what(), &std::io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exit code's decision rests on the step's kind, which survives the pipe and the
    /// supervisor's line to `mm start`.
    #[test]
    fn a_failure_crosses_a_boundary_with_its_step_and_errno() {
        let argv = vec!["/bin/nope".to_owned(), "x".to_owned()];
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        let failure = StepFailure::io(Step::Exec { argv }, &e);
        let line = serde_json::to_string(&failure).unwrap();
        let back: StepFailure = serde_json::from_str(&line).unwrap();
        assert_eq!(back, failure);
        assert_eq!(back.exec_failed(), Some(true));
        assert_eq!(
            back.to_string(),
            "exec /bin/nope x: No such file or directory (os error 2)"
        );
        let mount = StepFailure::errno(Step::CgroupTree, libc::EPERM, "refused");
        assert_eq!(mount.exec_failed(), None);
        assert_eq!(
            mount.to_string(),
            "mount the cgroup tree on /sys/fs/cgroup: refused: Operation not permitted (os error 1)"
        );
    }
}
