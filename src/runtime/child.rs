//! The machine's side of the launch, in two forked stages of the supervisor.
//!
//! The *spawner* waits until the supervisor has put it in the machine's cgroup, joins the
//! machine's user namespace, unshares the others and clones PID 1 (into a joined PID
//! namespace, PID 1 is cloned first and does those itself) as the supervisor's
//! own child (`CLONE_PARENT`), reports its pid and exits. *PID 1* dies with the
//! supervisor (`PR_SET_PDEATHSIG`), mounts the root, pivots into it, sets the hostname,
//! locks itself down and becomes the machine's init. Any failure is sent to the supervisor
//! as a [`Report::Failed`] naming the step; success is the report pipe closing at `exec`.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::thread::LinkNameSpaceType;

use super::launch::{Launch, Report, Step, StepFailure, WithStep};
use super::{account, exec, init, rootfs, security, sys};
use crate::plan::{Join, Namespace, Pid1};

/// What the forked stages inherit from the supervisor.
pub struct Inherited {
    /// Read end: one byte once the supervisor is ready for the spawner to go on.
    pub go: OwnedFd,
    /// Write end of the report pipe (close-on-exec).
    pub report: File,
    pub userns: OwnedFd,
    /// The console's slave side and its path, when the machine has one.
    pub console: Option<(OwnedFd, PathBuf)>,
    /// Read end, with `waits_for_start`: one byte when PID 1 may execute its command.
    pub barrier: Option<OwnedFd>,
    /// The file systems the spawner made as host root for PID 1 to attach
    /// ([`rootfs::make_host_fs`]), by their index in the plan's mounts.
    pub host_fs: Vec<(usize, OwnedFd)>,
    /// Connected to the caller's console socket, when PID 1 has a terminal.
    pub console_socket: Option<OwnedFd>,
}

/// The spawner: never returns. In the clone it makes, it goes on as the machine's PID 1.
pub fn spawner(launch: &Launch, mut inherited: Inherited) -> ! {
    sys::set_name("mm-spawn");
    let code = match spawn_pid1(launch, &mut inherited) {
        Ok(0) => pid1(launch, inherited),
        Ok(pid) => {
            Report::Leader { pid }.send(&mut inherited.report);
            0
        }
        Err(failure) => {
            Report::Failed(failure).send(&mut inherited.report);
            1
        }
    };
    // SAFETY: leaving a forked child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// Clones PID 1 into the machine's new namespaces: its pid in the spawner, 0 in PID 1.
fn spawn_pid1(launch: &Launch, inherited: &mut Inherited) -> Result<libc::pid_t, StepFailure> {
    wait_for_supervisor(&inherited.go, Step::WaitSupervisor)?;
    // While still host root: PID 1 reaches the staged overlay and binds from here.
    if launch.plan.root.idmapped_lowers {
        let stage = rootfs::stage_dir(&launch.plan);
        std::env::set_current_dir(&stage).step(|| Step::EnterStage {
            path: stage.clone(),
        })?;
    }
    // Joined while host root, before the machine's user namespace: they stay their
    // creator's, whose privilege joining them needs.
    for join in &launch.plan.joins {
        join_existing(join, &launch.plan.sysctls)?;
    }
    if launch.plan.joins(Namespace::Pid) {
        // A joined PID namespace is its children's only: PID 1, cloned into it now while
        // host root, makes its proc there and then enters the machine's other namespaces.
        // SAFETY: this process is single-threaded (forked from the single-threaded
        // supervisor).
        let pid = unsafe { sys::clone_fork(libc::CLONE_PARENT as libc::c_ulong) }
            .step(|| Step::ClonePid1)?;
        if pid == 0 {
            enter_own_namespaces(launch, inherited, false)?;
        }
        return Ok(pid);
    }
    enter_own_namespaces(launch, inherited, true)?;
    // SAFETY: this process is single-threaded (forked from the single-threaded supervisor).
    unsafe { sys::clone_fork(libc::CLONE_PARENT as libc::c_ulong) }.step(|| Step::ClonePid1)
}

/// Makes the plan's file systems of joined namespaces, enters the machine's user namespace
/// as its root and unshares the machine's own namespaces (its PID namespace with
/// `new_pid`, which PID 1 then enters as it is cloned).
fn enter_own_namespaces(
    launch: &Launch,
    inherited: &mut Inherited,
    new_pid: bool,
) -> Result<(), StepFailure> {
    // Kept through the clone: PID 1 has the same descriptors.
    inherited.host_fs = rootfs::make_host_fs(&mut rootfs::Kernel, &launch.plan)?;
    sys::setns(inherited.userns.as_fd(), LinkNameSpaceType::User).step(|| Step::JoinNamespace {
        name: "user".to_owned(),
    })?;
    nix::unistd::setgroups(&[]).step(|| Step::DropGroups)?;
    let zero_gid = nix::unistd::Gid::from_raw(0);
    let zero_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(zero_gid, zero_gid, zero_gid).step(|| Step::BecomeRootGid)?;
    nix::unistd::setresuid(zero_uid, zero_uid, zero_uid).step(|| Step::BecomeRootUid)?;
    let (mut flags, mut names) = if new_pid {
        (libc::CLONE_NEWNS | libc::CLONE_NEWPID, vec!["mount", "pid"])
    } else {
        (libc::CLONE_NEWNS, vec!["mount"])
    };
    for ns in &launch.plan.namespaces {
        let (flag, name) = match ns {
            Namespace::Uts => (libc::CLONE_NEWUTS, "uts"),
            Namespace::Ipc => (libc::CLONE_NEWIPC, "ipc"),
            Namespace::Net => (libc::CLONE_NEWNET, "net"),
            Namespace::Cgroup => (libc::CLONE_NEWCGROUP, "cgroup"),
            Namespace::User | Namespace::Mount | Namespace::Pid => continue,
        };
        flags |= flag;
        names.push(name);
    }
    nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(flags)).step(|| Step::Unshare {
        namespaces: names.iter().map(|n| (*n).to_owned()).collect(),
    })
}

/// Joins the existing namespace `join` names, which must be of the kind the plan says, and
/// writes the kernel parameters the plan has for it there (never in the spawner's own
/// namespace, the host's).
fn join_existing(join: &Join, sysctls: &[crate::plan::Sysctl]) -> Result<(), StepFailure> {
    let (kind, name, proc_name) = match join.namespace {
        Namespace::Net => (LinkNameSpaceType::Network, "network", "net"),
        Namespace::Ipc => (LinkNameSpaceType::InterProcessCommunication, "ipc", "ipc"),
        Namespace::Uts => (LinkNameSpaceType::HostNameAndNISDomainName, "uts", "uts"),
        Namespace::Pid => (LinkNameSpaceType::ProcessID, "pid", "pid_for_children"),
        other => {
            return Err(StepFailure::other(
                Step::JoinExisting {
                    namespace: format!("{other:?}").to_lowercase(),
                    path: join.path.clone(),
                },
                "mm joins only network, ipc, uts and pid namespaces",
            ));
        }
    };
    let step = || Step::JoinExisting {
        namespace: name.to_owned(),
        path: join.path.clone(),
    };
    // Not a terminal to take as the controlling one, whatever the path names.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        File::options()
            .read(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&join.path)
            .step(step)?
    };
    let own = format!("/proc/thread-self/ns/{proc_name}");
    let identity = |path: &str| {
        nix::sys::stat::stat(path)
            .map(|st| (st.st_dev, st.st_ino))
            .step(step)
    };
    let before = identity(&own)?;
    // setns with the type checks that the file is a namespace of that kind.
    sys::setns(file.as_fd(), kind).step(step)?;
    let theirs: Vec<_> = sysctls
        .iter()
        .filter(|s| s.joined == Some(join.namespace))
        .collect();
    if theirs.is_empty() {
        return Ok(());
    }
    if identity(&own)? == before {
        return Err(StepFailure::other(
            step(),
            format!(
                "it is mm's own {name} namespace, the host's, whose kernel parameters are not \
                 the container's to change"
            ),
        ));
    }
    theirs.into_iter().try_for_each(write_sysctl)
}

/// Writes a kernel parameter through /proc/sys: PID 1 before it enters its root (so not
/// through an image's /proc, and before /proc/sys is made read-only in it), the spawner for
/// a joined namespace. The parameters of the network, IPC and UTS namespaces are those of
/// the writer's, whichever proc file system shows them.
fn write_sysctl(sysctl: &crate::plan::Sysctl) -> Result<(), StepFailure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = sysctl.file();
    let step = || Step::Sysctl {
        key: sysctl.key.clone(),
        value: sysctl.value.clone(),
    };
    let proc = nix::sys::statfs::statfs("/proc/sys").step(step)?;
    if proc.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(StepFailure::other(
            step(),
            "/proc/sys is not a proc file system (mount proc on /proc)",
        ));
    }
    File::options()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)
        .and_then(|mut f| f.write_all(sysctl.value.as_bytes()))
        .step(step)
}

/// PID 1 of the machine: never returns.
fn pid1(launch: &Launch, mut inherited: Inherited) -> ! {
    // Only an OCI bundle's hooks are told it.
    let host_pid = if launch.plan.process.hooks.is_some() {
        pid_on_host()
    } else {
        0
    };
    let failure = match setup(launch, &mut inherited, host_pid) {
        Ok(()) if launch.boot => exec_init(launch, &inherited),
        Ok(()) if launch.plan.process.pid1 == Pid1::Direct => {
            direct(launch, &mut inherited, host_pid)
        }
        Ok(()) => init::run(launch, inherited.report),
        Err(failure) => failure,
    };
    Report::Failed(failure).send(&mut inherited.report);
    // SAFETY: leaving a forked child without running the parent's exit handlers.
    unsafe { libc::_exit(127) }
}

/// PID 1's pid on the host, from the host's /proc it still sees before it enters its
/// root (the pid an OCI hook's state gives).
fn pid_on_host() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn setup(launch: &Launch, inherited: &mut Inherited, host_pid: i32) -> Result<(), StepFailure> {
    // A re-parented PID 1's parent is the caller, which exits after `create`.
    if !launch.plan.process.reparented {
        sys::parent_death_signal(rustix::process::Signal::KILL).step(|| Step::DeathSignal)?;
    }
    sys::set_name("mm-init");
    let plan = &launch.plan;
    // Rootless, a machine whose root inside is not the user (keep-id: a subordinate id)
    // made PID 1 non-dumpable when it became that root, which would keep the user's own
    // `mm exec` out of /proc/PID/ns and /proc/PID/root. The default map never changes
    // PID 1's host uid, so this is how every rootless PID 1 is.
    if !plan.root.idmapped_lowers {
        nix::sys::prctl::set_dumpable(true).step(|| Step::Dumpable)?;
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .step(|| Step::KeepMounts)?;
    // Root: the supervisor mounted the overlay before forking (see rootfs::mount_as_root).
    if !plan.root.idmapped_lowers {
        rootfs::mount_rootless(&mut rootfs::Kernel, plan)?;
    }
    // Through the /proc PID 1 still sees, before its root's read-only paths: a kernel
    // parameter of a namespace is the writer's namespace's, whichever proc shows it.
    for sysctl in plan.sysctls.iter().filter(|s| s.joined.is_none()) {
        write_sysctl(sysctl)?;
    }
    let console = inherited.console.as_ref().map(|(_, path)| path.as_path());
    let mut hooks = || {
        let Some(hooks) = &plan.process.hooks else {
            return Ok(());
        };
        if !hooks.create_runtime.is_empty() {
            Report::RootReady.send(&mut inherited.report);
            wait_for_supervisor(&inherited.go, Step::WaitRuntimeHooks)?;
        }
        if hooks.create_container.is_empty() {
            return Ok(());
        }
        // Nothing PID 1 holds reaches a hook.
        sys::close_on_exec_from(3).step(|| Step::CloseOnExec)?;
        let state = super::hooks::container_state(&hooks.state, "creating", host_pid);
        super::hooks::run_as_step(&hooks.create_container, &state, "createContainer")
    };
    rootfs::enter(
        &mut rootfs::Kernel,
        plan,
        console,
        &inherited.host_fs,
        &mut hooks,
    )?;
    inherited.host_fs.clear();
    // A joined UTS namespace keeps its creator's hostname (and is not the machine's to set).
    if !plan.joins(Namespace::Uts) {
        nix::unistd::sethostname(&plan.process.hostname).step(|| Step::Hostname {
            name: plan.process.hostname.clone(),
        })?;
    }
    // As the machine's root, inside its root: nothing of the host is reachable any more.
    if let Some(keep) = &plan.keep_id {
        account::write(keep)?;
    }
    if super::network::pid1_waits(plan) {
        // The supervisor sets up the links, addresses and routes meanwhile.
        wait_for_supervisor(&inherited.go, Step::WaitNetwork)?;
    } else if plan.network.private() {
        sys::loopback_up().step(|| Step::Loopback)?;
    }
    if let Some((slave, _)) = &inherited.console {
        sys::dup_onto_standard_streams(slave.as_fd()).step(|| Step::AttachConsole)?;
    }
    // Inside the root, still with its capabilities and without its seccomp filter: the
    // terminal from the container's own devpts, its master to the caller.
    if let Some(terminal) = &plan.process.terminal {
        let Some(socket) = inherited.console_socket.take() else {
            return Err(StepFailure::other(Step::OpenTerminal, "no console socket"));
        };
        super::terminal::attach(socket, terminal.size).step(|| Step::OpenTerminal)?;
    }
    // What the supervisor had open (its lock, pipes, the user namespace) must not reach
    // the machine's programs: everything above the standard streams closes on exec.
    sys::close_on_exec_from(3).step(|| Step::CloseOnExec)?;
    security::lock_down(&plan.security, launch.seccomp.as_ref())
}

/// Waits for the supervisor's byte on the go-ahead pipe, `step` meanwhile.
fn wait_for_supervisor(go: &OwnedFd, step: Step) -> Result<(), StepFailure> {
    let mut byte = [0u8];
    let mut go = File::from(go.try_clone().step(|| Step::DupGoPipe)?);
    if go.read(&mut byte).step(|| step.clone())? != 1 {
        return Err(StepFailure::other(step, "the supervisor gave up"));
    }
    Ok(())
}

/// An OCI container's process: its limits, its user, its ambient capabilities and its
/// working directory; then, when the plan says so, the wait for `mm oci start`; then its
/// command. Returns only what failed.
fn direct(launch: &Launch, inherited: &mut Inherited, host_pid: i32) -> StepFailure {
    let ready = (|| {
        let user = security::numeric_user(&launch.user, &launch.plan.process.groups)?;
        // Its own session, as runc gives its container's process (with a terminal, it
        // has one already, whose controlling terminal that is).
        if launch.plan.process.terminal.is_none() {
            nix::unistd::setsid().step(|| Step::StartSession)?;
        }
        if let Some(mask) = launch.plan.process.umask {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        }
        security::become_user(&user)?;
        security::raise_ambient(&launch.plan.security)?;
        std::env::set_current_dir(&launch.workdir).step(|| Step::Chdir {
            path: launch.workdir.clone(),
        })?;
        if let Some(barrier) = inherited.barrier.take() {
            // From here on the supervisor no longer reads reports: it has answered
            // `mm oci create`, and the container is `created`.
            Report::Waiting.send(&mut inherited.report);
            let mut byte = [0u8];
            if File::from(barrier)
                .read(&mut byte)
                .step(|| Step::WaitForStart)?
                != 1
            {
                return Err(StepFailure::other(
                    Step::WaitForStart,
                    "the supervisor gave up",
                ));
            }
        }
        // Past the barrier the supervisor reads no reports: a failure is said on the
        // process's standard error (the caller's), too.
        let said = |f: &StepFailure| eprintln!("mm: {}: {}", f.step, f.message);
        if let Some(hooks) = &launch.plan.process.hooks {
            let state = super::hooks::container_state(&hooks.state, "created", host_pid);
            super::hooks::run_as_step(&hooks.start_container, &state, "startContainer")
                .inspect_err(said)?;
        }
        // With no_new_privileges, the profile: the last step before the command.
        security::load_late(&launch.plan.security, launch.seccomp.as_ref()).inspect_err(said)
    })();
    match ready {
        Ok(()) => exec::exec(&launch.argv, &launch.env),
        Err(failure) => failure,
    }
}

fn exec_init(launch: &Launch, inherited: &Inherited) -> StepFailure {
    if let Some((slave, _)) = &inherited.console {
        // systemd wants its console as the controlling terminal.
        if let Err(e) = nix::unistd::setsid() {
            return StepFailure::io(Step::StartSession, &e.into());
        }
        if let Err(e) = sys::controlling_terminal(slave.as_fd()) {
            return StepFailure::io(Step::ControllingTerminal, &e);
        }
    }
    if let Err(e) = std::env::set_current_dir("/") {
        return StepFailure::io(
            Step::Chdir {
                path: "/".to_owned(),
            },
            &e,
        );
    }
    exec::exec(&launch.argv, &launch.env)
}
