//! Networking for machines run by an ordinary user: a `slirp4netns` helper process gives
//! the machine's network namespace a tap device (`tap0`) behind user-mode NAT, and forwards
//! host ports into it.
//!
//! An ordinary user cannot make veth pairs on the host, so the supervisor (running as the
//! user, outside the machine's user namespace) starts the helper for PID 1's namespaces and
//! waits until the namespace has its address and default route. Why slirp4netns and not
//! pasta (`bench/rootless-net.sh`, figures in `docs/performance.md`): it carries the
//! machine's own traffic (namespace → host TCP) 1.5 times faster and more steadily, sets up
//! in 5 ms rather than 8, reports readiness exactly (`--ready-fd`) and takes forwards at
//! run time; pasta is 2.7 times faster only for forwards used from the host's loopback,
//! which it splices.
//!
//! The helper runs as `slirp4netns --configure --mtu=M --disable-host-loopback
//! --enable-sandbox --enable-seccomp --ready-fd=3 [--api-socket S] PID tap0`: the machine
//! cannot reach the host's `127.0.0.1`, and the helper (which parses the machine's packets)
//! runs in a mount namespace of its own under seccomp. It writes `1` on descriptor 3 once
//! the namespace is configured and its API socket listens; each port forward is then one
//! `add_hostfwd` request on that socket, whose private directory is removed afterwards.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;

/// The helper program, looked up on `PATH`.
pub const TOOL: &str = "slirp4netns";
/// The tap device the machine gets.
pub const INTERFACE: &str = "tap0";
/// The device the helper opens in the machine's namespace.
pub const TUN: &str = "/dev/net/tun";
/// How long [`start`] waits for the helper to be ready, forwards included.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// The MTU to ask for: slirp4netns's fastest (namespace → host TCP 3 times faster than at
/// 1500 here, forwards 2.4 times).
pub const DEFAULT_MTU: u32 = 65520;
/// The largest MTU slirp4netns accepts.
pub const MAX_MTU: u32 = 65521;
/// The smallest MTU IPv4 allows.
pub const MIN_MTU: u32 = 68;

/// The descriptor on which the helper reports readiness.
const READY_FD: RawFd = 3;
/// How much of the helper's standard error is kept for error messages.
const STDERR_KEPT: usize = 8192;
/// How many of its last lines an error shows.
const STDERR_LINES: usize = 10;

pub use super::addr::Proto;

/// A host port forwarded to a port of the machine (at its address, [`addresses`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    /// The host address to listen on; `None` is every address (`0.0.0.0`).
    pub host_address: Option<Ipv4Addr>,
    pub host_port: u16,
    /// The machine's port.
    pub port: u16,
}

impl Forward {
    /// The host socket address this forward listens on.
    pub fn host(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            self.host_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
        )
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> port {}", self.proto, self.host(), self.port)
    }
}

/// What [`start`] needs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// A process in the machine's user and network namespaces (PID 1), as the host sees it.
    pub pid: i32,
    /// The tap device's MTU, [`MIN_MTU`] to [`MAX_MTU`]; [`DEFAULT_MTU`] is the fastest.
    pub mtu: u32,
    pub forwards: &'a [Forward],
}

/// The network the machine sees: what to show in `mm status` and write in its resolv.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The machine's address on [`INTERFACE`].
    pub machine: Ipv4Addr,
    pub prefix_len: u8,
    /// Its default gateway (the helper; not the host's loopback).
    pub gateway: Ipv4Addr,
    /// The helper's DNS forwarder, which asks the host's resolvers.
    pub dns: Ipv4Addr,
}

/// slirp4netns's defaults with `--configure` (10.0.2.0/24).
pub const fn addresses() -> Addresses {
    Addresses {
        machine: Ipv4Addr::new(10, 0, 2, 100),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 2, 2),
        dns: Ipv4Addr::new(10, 0, 2, 3),
    }
}

/// Why rootless networking could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RootlessNetError {
    #[error("{TOOL} was not found on PATH: install Debian's slirp4netns package")]
    ToolMissing,
    #[error("could not start {TOOL}: {0}")]
    Spawn(#[source] io::Error),
    #[error(
        "{TUN} does not exist: rootless networking needs the tun driver (as root: modprobe tun)"
    )]
    TunMissing,
    #[error(
        "{TUN} is mode {mode}, so an ordinary user cannot open it and a rootless machine \
         cannot have a network; as root, run `chmod 0666 {TUN}` (Debian's default)",
        mode = describe_mode(*.mode)
    )]
    TunNotUsable { mode: Option<u32> },
    #[error("could not open {TUN}: {0}")]
    Tun(#[source] io::Error),
    #[error("MTU {0} is out of range: {TOOL} takes {MIN_MTU} to {MAX_MTU}")]
    BadMtu(u32),
    #[error("port forward {0}: ports must not be 0")]
    ZeroPort(Forward),
    #[error(
        "{TOOL} exited before the network was ready ({status}){}",
        tail(stderr)
    )]
    Exited { status: ExitStatus, stderr: String },
    #[error("{TOOL} was not ready within {} s{}", timeout.as_secs(), tail(stderr))]
    TimedOut { timeout: Duration, stderr: String },
    #[error(
        "cannot forward {forward}: the host port is already in use; stop what listens \
         there or forward another port"
    )]
    PortInUse { forward: Forward },
    #[error(
        "cannot forward {forward}: host ports below {first_unprivileged} are privileged; \
         forward a higher port, or as root lower net.ipv4.ip_unprivileged_port_start"
    )]
    PortNotPermitted {
        forward: Forward,
        first_unprivileged: u32,
    },
    #[error("cannot forward {forward}: {} is not an address of this host", forward.host().ip())]
    NotLocal { forward: Forward },
    #[error("{TOOL} refused to forward {forward}: {desc}")]
    ForwardRefused { forward: Forward, desc: String },
    #[error("could not make a private directory for {TOOL}'s API socket: {0}")]
    ApiDir(#[source] io::Error),
    #[error("{TOOL}'s API socket {}: {source}", path.display())]
    Api { path: PathBuf, source: io::Error },
    #[error("{TOOL}'s API socket answered what mm does not understand: {answer:?}")]
    ApiAnswer { answer: String },
    #[error("waiting for {TOOL}: {0}")]
    Wait(#[source] io::Error),
}

fn describe_mode(mode: Option<u32>) -> String {
    match mode {
        Some(mode) => format!("{mode:04o}"),
        None => "unknown".to_owned(),
    }
}

/// `":\n  LINE…"` with the last lines of a helper's standard error, or nothing.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(STDERR_LINES);
    let mut out = String::new();
    for line in &lines[start..] {
        out.push_str(if out.is_empty() { ":\n  " } else { "\n  " });
        out.push_str(line);
    }
    out
}

/// Checks that this process may open [`TUN`], as the helper must.
pub fn check_tun() -> Result<(), RootlessNetError> {
    match std::fs::OpenOptions::new().read(true).write(true).open(TUN) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RootlessNetError::TunMissing),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            let mode = std::fs::metadata(TUN)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777);
            Err(RootlessNetError::TunNotUsable { mode })
        }
        Err(e) => Err(RootlessNetError::Tun(e)),
    }
}

/// A running helper. Dropping it (or [`Helper::stop`]) kills and reaps it; it also dies
/// (`SIGTERM`) when the thread that started it exits.
#[derive(Debug)]
pub struct Helper {
    child: Child,
    /// The read end of its standard error. Kept open and never read once started: the
    /// write end is non-blocking, so a chatty helper loses lines instead of blocking.
    stderr: OwnedFd,
    kept: Vec<u8>,
}

impl Helper {
    /// The helper's process id.
    pub fn pid(&self) -> i32 {
        // A pid_t, which std widened to u32.
        self.child.id() as i32
    }

    /// Whether the helper has ended (it is reaped then).
    pub fn ended(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the helper and reaps it.
    pub fn stop(self) {
        drop(self);
    }

    /// Reads what the helper wrote to standard error so far (up to what would block);
    /// `false` once it is closed.
    fn read_stderr(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(&self.stderr, &mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.kept.extend_from_slice(&buf[..n]);
                    let excess = self.kept.len().saturating_sub(STDERR_KEPT);
                    self.kept.drain(..excess);
                }
                Err(Errno::INTR) => {}
                Err(_) => return true,
            }
        }
    }

    fn stderr_text(&mut self) -> String {
        self.read_stderr();
        String::from_utf8_lossy(&self.kept).into_owned()
    }

    /// The error for a helper that closed its ready descriptor without being ready: its
    /// exit status once it has one (before `deadline`).
    fn exited(&mut self, deadline: Instant) -> RootlessNetError {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return RootlessNetError::Exited {
                        status,
                        stderr: self.stderr_text(),
                    };
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => return self.timed_out(),
                Err(e) => return RootlessNetError::Wait(e),
            }
        }
    }

    fn timed_out(&mut self) -> RootlessNetError {
        RootlessNetError::TimedOut {
            timeout: START_TIMEOUT,
            stderr: self.stderr_text(),
        }
    }

    /// Waits until the helper writes to `ready`, bounded by `deadline`.
    fn wait_ready(&mut self, ready: &OwnedFd, deadline: Instant) -> Result<(), RootlessNetError> {
        let mut stderr_open = true;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out());
            }
            let timeout = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let (ready_events, stderr_events) = {
                let mut fds = vec![PollFd::new(ready, PollFlags::IN)];
                if stderr_open {
                    fds.push(PollFd::new(&self.stderr, PollFlags::IN));
                }
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(_) => {}
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(RootlessNetError::Wait(e.into())),
                }
                (
                    fds[0].revents(),
                    fds.get(1)
                        .map(|fd| fd.revents())
                        .unwrap_or(PollFlags::empty()),
                )
            };
            if !stderr_events.is_empty() {
                stderr_open = self.read_stderr();
            }
            if ready_events.is_empty() {
                continue;
            }
            let mut byte = [0u8; 1];
            match rustix::io::read(ready, &mut byte) {
                Ok(1) if byte[0] == b'1' => return Ok(()),
                Ok(0) => return Err(self.exited(deadline)),
                Ok(_) | Err(Errno::INTR) | Err(Errno::AGAIN) => {}
                Err(e) => return Err(RootlessNetError::Wait(e.into())),
            }
        }
    }

    /// One `add_hostfwd` request on the API socket.
    fn add_forward(
        &mut self,
        path: &Path,
        forward: &Forward,
        deadline: Instant,
    ) -> Result<(), RootlessNetError> {
        if deadline <= Instant::now() {
            return Err(self.timed_out());
        }
        add_hostfwd(path, forward, forward.port, deadline)
    }
}

/// One request on the helper's API socket at `path`, and its answer, by `deadline`.
fn request(
    path: &Path,
    request: &serde_json::Value,
    deadline: Instant,
) -> Result<Answer, RootlessNetError> {
    let api = |source| RootlessNetError::Api {
        path: path.to_owned(),
        source,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let left = left.max(Duration::from_millis(1));
    let mut stream = UnixStream::connect(path).map_err(api)?;
    stream.set_read_timeout(Some(left)).map_err(api)?;
    stream.set_write_timeout(Some(left)).map_err(api)?;
    // slirp4netns reads one request until end of file and answers it.
    stream
        .write_all(request.to_string().as_bytes())
        .map_err(api)?;
    stream.shutdown(Shutdown::Write).map_err(api)?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(api)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    match serde_json::from_str::<Answer>(&text) {
        // list_hostfwd answers its entries without `return` (slirp4netns 1.2).
        Ok(answer @ (Answer { ok: Some(_), .. } | Answer { error: Some(_), .. })) => Ok(answer),
        Ok(Answer { entries, .. }) if !entries.is_null() => Ok(Answer {
            ok: Some(serde_json::json!({ "entries": entries })),
            error: None,
            entries: serde_json::Value::Null,
        }),
        _ => Err(RootlessNetError::ApiAnswer { answer: text }),
    }
}

/// `add_hostfwd`: `forward`'s host port to `guest_port` at the helper's [`addresses`].
fn add_hostfwd(
    path: &Path,
    forward: &Forward,
    guest_port: u16,
    deadline: Instant,
) -> Result<(), RootlessNetError> {
    let answer = request(
        path,
        &serde_json::json!({
            "execute": "add_hostfwd",
            "arguments": {
                "proto": forward.proto.name(),
                "host_addr": forward.host().ip().to_string(),
                "host_port": forward.host_port,
                "guest_port": guest_port,
            }
        }),
        deadline,
    )?;
    match answer.error {
        Some(error) => Err(refused(forward, error.desc)),
        None => Ok(()),
    }
}

/// Forwards through a running helper's API socket (a zone's, [`start_serving`]): each
/// host port to the same port at the helper's [`addresses`]`.machine`, where the namespace
/// passes it on. Bounded by [`START_TIMEOUT`].
pub fn add_forwards(api: &Path, forwards: &[Forward]) -> Result<(), RootlessNetError> {
    let deadline = Instant::now() + START_TIMEOUT;
    for forward in forwards {
        if forward.host_port == 0 {
            return Err(RootlessNetError::ZeroPort(*forward));
        }
        add_hostfwd(api, forward, forward.host_port, deadline)?;
    }
    Ok(())
}

/// Takes `forwards` (as [`add_forwards`] made them) off a running helper; those it does
/// not have are skipped.
pub fn remove_forwards(api: &Path, forwards: &[Forward]) -> Result<(), RootlessNetError> {
    if forwards.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let listed = request(
        api,
        &serde_json::json!({ "execute": "list_hostfwd" }),
        deadline,
    )?;
    let entries: Vec<HostFwd> = listed
        .ok
        .and_then(|v| v.get("entries").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    for entry in entries {
        let ours = forwards.iter().any(|f| {
            f.proto.name() == entry.proto
                && f.host_port == entry.host_port
                && f.host().ip().to_string() == entry.host_addr
        });
        if ours {
            let request_ = serde_json::json!({
                "execute": "remove_hostfwd",
                "arguments": { "id": entry.id }
            });
            if let Some(error) = request(api, &request_, deadline)?.error {
                return Err(RootlessNetError::ApiAnswer { answer: error.desc });
            }
        }
    }
    Ok(())
}

/// One of `list_hostfwd`'s entries.
#[derive(serde::Deserialize)]
struct HostFwd {
    id: u64,
    proto: String,
    host_addr: String,
    host_port: u16,
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Fails only when it was reaped already, which only this type does.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the helper for the namespaces of `options.pid` and waits until it is ready: the
/// namespace has [`addresses`] on [`INTERFACE`] and a default route, and every forward is
/// bound on the host (bounded by [`START_TIMEOUT`]). The helper's standard input and output
/// are /dev/null and its standard error is kept for errors; it inherits no other descriptor
/// than its ready pipe (everything else is made close-on-exec in the child).
pub fn start(options: &Options<'_>) -> Result<Helper, RootlessNetError> {
    start_with(options, None)
}

/// As [`start`], with the helper's API socket at `api` (whose directory must be private to
/// the user), kept for [`add_forwards`] and [`remove_forwards`] while the helper runs.
pub fn start_serving(options: &Options<'_>, api: &Path) -> Result<Helper, RootlessNetError> {
    start_with(options, Some(api))
}

fn start_with(options: &Options<'_>, serving: Option<&Path>) -> Result<Helper, RootlessNetError> {
    let deadline = Instant::now() + START_TIMEOUT;
    if !(MIN_MTU..=MAX_MTU).contains(&options.mtu) {
        return Err(RootlessNetError::BadMtu(options.mtu));
    }
    if let Some(forward) = options
        .forwards
        .iter()
        .find(|f| f.host_port == 0 || f.port == 0)
    {
        return Err(RootlessNetError::ZeroPort(*forward));
    }
    check_tun()?;
    let api_dir = if options.forwards.is_empty() || serving.is_some() {
        None
    } else {
        Some(private_dir().map_err(RootlessNetError::ApiDir)?)
    };
    let api_socket = match serving {
        Some(path) => Some(path.to_owned()),
        None => api_dir.as_ref().map(|dir| dir.path().join("api.sock")),
    };

    let (ready_r, ready_w) = pipe(PipeFlags::CLOEXEC).map_err(RootlessNetError::Spawn)?;
    let (stderr_r, stderr_w) =
        pipe(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).map_err(RootlessNetError::Spawn)?;
    let child = spawn(options, &ready_w, stderr_w, api_socket.as_deref())?;
    drop(ready_w);
    let mut helper = Helper {
        child,
        stderr: stderr_r,
        kept: Vec::new(),
    };
    helper.wait_ready(&ready_r, deadline)?;
    if let Some(path) = &api_socket {
        for forward in options.forwards {
            helper.add_forward(path, forward, deadline)?;
        }
    }
    Ok(helper)
}

/// A directory only this user can enter, for the API socket; removed when dropped.
fn private_dir() -> io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("mm-slirp4netns-");
    let dir = builder.tempdir()?;
    // A socket path must fit in sun_path (108 bytes); TMPDIR may be long.
    if dir.path().join("api.sock").as_os_str().len() < 100 {
        return Ok(dir);
    }
    builder.tempdir_in("/tmp")
}

/// A pipe whose ends are not standard streams (std puts /dev/null over those in the
/// child).
fn pipe(flags: PipeFlags) -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(flags)?;
    let above = |fd: OwnedFd| -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            Ok(fd)
        } else {
            Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
        }
    };
    Ok((above(r)?, above(w)?))
}

fn spawn(
    options: &Options<'_>,
    ready: &OwnedFd,
    stderr: OwnedFd,
    api_socket: Option<&Path>,
) -> Result<Child, RootlessNetError> {
    let mut command = Command::new(TOOL);
    command
        .arg("--configure")
        .arg(format!("--mtu={}", options.mtu))
        .args([
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
        ])
        .arg(format!("--ready-fd={READY_FD}"));
    if let Some(path) = api_socket {
        command.arg("--api-socket").arg(path);
    }
    command
        .arg(options.pid.to_string())
        .arg(INTERFACE)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    let ready = ready.as_fd().as_raw_fd();
    let parent = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls on descriptors it does not own.
    unsafe {
        command.pre_exec(move || prepare_child(ready, parent));
    }
    command.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => RootlessNetError::ToolMissing,
        _ => RootlessNetError::Spawn(e),
    })
}

/// In the child, after std set up its standard streams: the ready pipe on [`READY_FD`],
/// every other descriptor close-on-exec, and death with its parent.
fn prepare_child(ready: RawFd, parent: libc::pid_t) -> io::Result<()> {
    fn check(ret: libc::c_long) -> io::Result<()> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
    // SAFETY: plain system calls on integers; none allocates or takes a lock.
    unsafe {
        if ready == READY_FD {
            check(libc::fcntl(READY_FD, libc::F_SETFD, 0).into())?;
        } else {
            check(libc::dup2(ready, READY_FD).into())?;
        }
        check(libc::syscall(
            libc::SYS_close_range,
            READY_FD + 1,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ))?;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM).into())?;
        // The parent may have died before the line above.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "return")]
    ok: Option<serde_json::Value>,
    error: Option<AnswerError>,
    #[serde(default)]
    entries: serde_json::Value,
}

#[derive(serde::Deserialize)]
struct AnswerError {
    desc: String,
}

/// slirp4netns says only "slirp_add_hostfwd failed": binding the same address here (in
/// the same network namespace, as the same user) tells why.
fn refused(forward: &Forward, desc: String) -> RootlessNetError {
    let probe = match forward.proto {
        Proto::Tcp => TcpListener::bind(forward.host()).map(drop),
        Proto::Udp => UdpSocket::bind(forward.host()).map(drop),
    };
    let forward = *forward;
    match probe.map_err(|e| e.kind()) {
        Err(io::ErrorKind::AddrInUse) => RootlessNetError::PortInUse { forward },
        Err(io::ErrorKind::PermissionDenied) => RootlessNetError::PortNotPermitted {
            forward,
            first_unprivileged: first_unprivileged_port(),
        },
        Err(io::ErrorKind::AddrNotAvailable) => RootlessNetError::NotLocal { forward },
        _ => RootlessNetError::ForwardRefused { forward, desc },
    }
}

fn first_unprivileged_port() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(port: u16) -> Forward {
        Forward {
            proto: Proto::Tcp,
            host_address: Some(Ipv4Addr::LOCALHOST),
            host_port: port,
            port: 80,
        }
    }

    #[test]
    fn messages_name_the_fix() {
        let tun = RootlessNetError::TunNotUsable { mode: Some(0o600) }.to_string();
        assert!(tun.contains("mode 0600"), "{tun}");
        assert!(tun.contains("chmod 0666 /dev/net/tun"), "{tun}");
        assert!(
            RootlessNetError::ToolMissing
                .to_string()
                .contains("install Debian's slirp4netns")
        );
        let taken = RootlessNetError::PortInUse {
            forward: forward(8080),
        }
        .to_string();
        assert!(taken.contains("127.0.0.1:8080"), "{taken}");
        assert!(taken.contains("already in use"), "{taken}");
    }

    #[test]
    fn a_forward_shows_both_ends() {
        let all = Forward {
            host_address: None,
            proto: Proto::Udp,
            ..forward(5353)
        };
        assert_eq!(all.to_string(), "udp 0.0.0.0:5353 -> port 80");
    }

    #[test]
    fn the_stderr_tail_keeps_the_last_lines() {
        let text: String = (1..=15).map(|i| format!("line {i}\n\n")).collect();
        let shown = tail(&text);
        assert!(shown.starts_with(":\n  line 6\n"), "{shown}");
        assert!(shown.ends_with("  line 15"), "{shown}");
        assert_eq!(tail(""), "");
    }

    #[test]
    fn bad_options_are_refused_before_anything_runs() {
        let options = Options {
            pid: 1,
            mtu: 70000,
            forwards: &[],
        };
        assert!(matches!(
            start(&options),
            Err(RootlessNetError::BadMtu(70000))
        ));
        let zero = [forward(0)];
        let options = Options {
            pid: 1,
            mtu: DEFAULT_MTU,
            forwards: &zero,
        };
        assert!(matches!(
            start(&options),
            Err(RootlessNetError::ZeroPort(_))
        ));
    }

    #[test]
    fn the_addresses_are_slirp4netns_defaults() {
        let a = addresses();
        assert_eq!(a.machine, Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(
            (a.prefix_len, a.gateway, a.dns),
            (24, Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 3))
        );
    }
}
