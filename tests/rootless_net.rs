//! `network::rootless` as an ordinary user: slirp4netns attached to a namespace made by
//! `unshare -rn`, its address and route, a port forward, a taken port, a missing tool, an
//! unusable /dev/net/tun, and no helper left behind.
//!
//! Each test runs twice. Run by root, it re-executes this test binary, for that test only,
//! as the test user `mm-test`, inside new network, mount and PID namespaces: the network
//! namespace has only loopback (nothing can leave it), the mount namespace puts a tun
//! device of the mode the test asks for over /dev/net/tun (whatever the host's is), and
//! killing the PID namespace's first process ends everything the test started. The second
//! run (`MM_ROOTLESS_NET_INNER` set) is the test body. Run by anyone but root, it skips.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mm::network::rootless::{self, Forward, Options, Proto, RootlessNetError};
use support::*;

const INNER: &str = "MM_ROOTLESS_NET_INNER";
const USER: (&str, Option<u32>) = ("mm-test", Some(300_000));

/// Runs `body` as the test user in namespaces of its own (see the module comment), with a
/// tun device of `tun_mode`; or, in that run, runs `body`.
fn as_test_user(test: &str, tun_mode: u32, body: fn()) {
    if std::env::var_os(INNER).is_some() {
        return body();
    }
    if !is_root() {
        return skip(test, "making the test user's namespaces needs root");
    }
    for tool in [
        "slirp4netns",
        "unshare",
        "nsenter",
        "setpriv",
        "ip",
        "busybox",
    ] {
        if !on_path(tool) {
            return skip(test, &format!("{tool} is not installed"));
        }
    }
    let user = test_user(USER.0, USER.1);
    let dir = shared_tempdir();
    // The user must be able to run this binary, wherever the checkout is.
    let exe = dir.path().join("rootless_net");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    set_mode(&exe, 0o755);
    let tmp = dir.path().join("tmp");
    user.give(&tmp);
    let tun = dir.path().join("tun");
    std::fs::create_dir(&tun).unwrap();

    let script = format!(
        "set -e; ip link set lo up; mount -t tmpfs -o mode=0755 mm-tun {tun}; \
         mknod -m {tun_mode:o} {tun}/tun c 10 200; mount --bind {tun}/tun /dev/net/tun; \
         exec setpriv --reuid {name} --regid users --init-groups -- {exe} --exact {test} \
         --nocapture --test-threads=1",
        tun = tun.display(),
        name = user.name,
        exe = exe.display(),
    );
    let mut command = Command::new("unshare");
    command
        .args(["--net", "--mount", "--propagation", "private"])
        .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["sh", "-c", &script])
        .env_clear()
        .env(INNER, "1")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", &user.home)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(command.spawn().unwrap());
    let (status, stdout, stderr) = finish(child, Duration::from_secs(60));
    // Shown with --nocapture: the messages the inner run printed.
    eprint!("{stderr}");
    assert!(
        status.success() && stdout.contains("1 passed"),
        "the run as {} failed ({status}):\n{stdout}\n{stderr}",
        user.name
    );
    // Forwards' API sockets live in a private directory that start() removes.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

fn on_path(tool: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .any(|dir| Path::new(dir).join(tool).exists())
}

/// Waits for a child at most `limit` (killing it then), and returns its status and output.
fn finish(mut child: KillOnDrop, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

/// Polls `done` every 10 ms for at most 5 s.
fn within_5s(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `unshare -rn sleep 60`: a user and network namespace, as a machine's PID 1 has.
fn namespace_holder() -> KillOnDrop {
    let child = Command::new("unshare")
        .args(["-rn", "sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    within_5s("the namespace holder", || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == sleep)
    });
    KillOnDrop(child)
}

fn pid_of(holder: &KillOnDrop) -> i32 {
    holder.0.id() as i32
}

/// `nsenter -t PID -U -n --preserve-credentials ARGS`.
fn in_namespace(pid: i32, args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .args(["-t", &pid.to_string(), "-U", "-n", "--preserve-credentials"])
        .args(args);
    command
}

fn json_of(mut command: Command) -> serde_json::Value {
    let out = command.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A port nothing listens on (in this test's own network namespace).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The processes named slirp4netns in this PID namespace.
fn helpers() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "slirp4netns")
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether `pid`'s namespace listens on TCP `port` (/proc/PID/net/tcp or tcp6, state 0A).
fn listens(pid: i32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&want) && fields[3] == "0A"
            })
        })
    })
}

#[test]
fn the_helper_gives_the_namespace_its_network_and_forwards_a_port() {
    as_test_user(
        "the_helper_gives_the_namespace_its_network_and_forwards_a_port",
        0o666,
        network_and_forward,
    );
}

fn network_and_forward() {
    let holder = namespace_holder();
    let pid = pid_of(&holder);
    let tcp_port = free_port();
    let udp_port = free_port();
    let forwards = [
        Forward {
            proto: Proto::Tcp,
            host_address: Some(Ipv4Addr::LOCALHOST),
            host_port: tcp_port,
            port: 8080,
        },
        Forward {
            proto: Proto::Udp,
            host_address: Some(Ipv4Addr::LOCALHOST),
            host_port: udp_port,
            port: 53,
        },
    ];
    // A descriptor without close-on-exec, as a supervisor's inherited one may be: the
    // helper must not get it.
    let marker = tempfile::NamedTempFile::new().unwrap();
    let marker_fd = marker.as_file().as_raw_fd();
    nix::fcntl::fcntl(
        marker.as_file(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();

    let started = Instant::now();
    let helper = rootless::start(&Options {
        pid,
        mtu: rootless::DEFAULT_MTU,
        forwards: &forwards,
    })
    .unwrap_or_else(|e| panic!("start: {e}"));
    eprintln!("rootless::start with two forwards: {:?}", started.elapsed());
    assert_eq!(helpers(), [helper.pid().to_string()]);

    // The address and route, as the namespace sees them.
    let want = rootless::addresses();
    let links = json_of(in_namespace(
        pid,
        &["ip", "-j", "addr", "show", "dev", rootless::INTERFACE],
    ));
    let link = &links[0];
    assert_eq!(link["mtu"], rootless::DEFAULT_MTU);
    assert!(
        link["addr_info"].as_array().unwrap().iter().any(|a| {
            a["family"] == "inet"
                && a["local"] == want.machine.to_string()
                && a["prefixlen"] == want.prefix_len
        }),
        "{link}"
    );
    let routes = json_of(in_namespace(pid, &["ip", "-j", "route", "show", "default"]));
    assert_eq!(routes[0]["gateway"], want.gateway.to_string(), "{routes}");
    assert_eq!(routes[0]["dev"], rootless::INTERFACE, "{routes}");

    // No descriptor of ours in the helper.
    let ours = std::fs::read_link(format!("/proc/self/fd/{marker_fd}")).unwrap();
    for fd in std::fs::read_dir(format!("/proc/{}/fd", helper.pid())).unwrap() {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap();
        assert_ne!(
            target, ours,
            "the helper inherited the supervisor's descriptor"
        );
    }

    // Both forwards are bound on the host.
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, udp_port));
    assert!(udp.is_err(), "the UDP forward is not bound");

    // TCP from the host's 127.0.0.1:PORT reaches a listener in the namespace.
    let listener = KillOnDrop(
        in_namespace(pid, &["busybox", "nc", "-l", "-p", "8080"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    within_5s("the listener in the namespace", || listens(pid, 8080));
    let mut stream = TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, tcp_port).into(),
        Duration::from_secs(5),
    )
    .unwrap();
    stream.write_all(b"through the forward\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (status, out, err) = finish(listener, Duration::from_secs(5));
    assert!(status.success(), "nc: {status} {err}");
    assert_eq!(out, "through the forward\n");

    let helper_pid = helper.pid();
    helper.stop();
    assert!(!Path::new(&format!("/proc/{helper_pid}")).exists());
    assert!(helpers().is_empty(), "left running: {:?}", helpers());
    drop(holder);
}

#[test]
fn a_taken_host_port_is_named_and_no_helper_is_left() {
    as_test_user(
        "a_taken_host_port_is_named_and_no_helper_is_left",
        0o666,
        taken_port,
    );
}

fn taken_port() {
    let holder = namespace_holder();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let forwards = [Forward {
        proto: Proto::Tcp,
        host_address: Some(Ipv4Addr::LOCALHOST),
        host_port: port,
        port: 80,
    }];
    let err = rootless::start(&Options {
        pid: pid_of(&holder),
        mtu: rootless::DEFAULT_MTU,
        forwards: &forwards,
    })
    .unwrap_err();
    assert!(matches!(err, RootlessNetError::PortInUse { .. }), "{err:?}");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("already in use"), "{message}");
    assert!(helpers().is_empty(), "left running: {:?}", helpers());
}

#[test]
fn a_helper_that_exits_early_shows_its_last_words() {
    as_test_user(
        "a_helper_that_exits_early_shows_its_last_words",
        0o666,
        exits_early,
    );
}

fn exits_early() {
    // A pid nothing has in this PID namespace.
    let err = rootless::start(&Options {
        pid: 999_999,
        mtu: rootless::DEFAULT_MTU,
        forwards: &[],
    })
    .unwrap_err();
    assert!(matches!(err, RootlessNetError::Exited { .. }), "{err:?}");
    let message = err.to_string();
    eprintln!("{message}");
    assert!(message.contains("999999"), "{message}");
    assert!(helpers().is_empty(), "left running: {:?}", helpers());
}

#[test]
fn a_tun_device_of_mode_0600_is_refused_with_the_fix() {
    as_test_user(
        "a_tun_device_of_mode_0600_is_refused_with_the_fix",
        0o600,
        tun_0600,
    );
}

fn tun_0600() {
    let err = rootless::check_tun().unwrap_err();
    assert!(
        matches!(err, RootlessNetError::TunNotUsable { mode: Some(0o600) }),
        "{err:?}"
    );
    let message = err.to_string();
    eprintln!("{message}");
    assert!(message.contains("mode 0600"), "{message}");
    assert!(message.contains("chmod 0666 /dev/net/tun"), "{message}");
    let holder = namespace_holder();
    let err = rootless::start(&Options {
        pid: pid_of(&holder),
        mtu: rootless::DEFAULT_MTU,
        forwards: &[],
    })
    .unwrap_err();
    assert!(
        matches!(err, RootlessNetError::TunNotUsable { .. }),
        "{err:?}"
    );
    assert!(helpers().is_empty());
}

#[test]
fn a_missing_slirp4netns_says_which_package() {
    as_test_user(
        "a_missing_slirp4netns_says_which_package",
        0o666,
        missing_tool,
    );
}

fn missing_tool() {
    // SAFETY: this run has one test on one thread; nothing else reads the environment.
    unsafe { std::env::set_var("PATH", "/nonexistent") };
    let err = rootless::start(&Options {
        pid: 1,
        mtu: rootless::DEFAULT_MTU,
        forwards: &[],
    })
    .unwrap_err();
    assert!(matches!(err, RootlessNetError::ToolMissing), "{err:?}");
    assert!(
        err.to_string().contains("install Debian's slirp4netns"),
        "{err}"
    );
}
