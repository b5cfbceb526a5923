//! The processes of one test's operations, found by that test's own identifiers (its
//! MM_ROOT in a process's environment or command line, its machines' cgroups), never by a
//! global name: other tests run at the same time.

use std::path::Path;

/// Which of an operation's processes a round kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The `mm` command the user ran.
    Cli,
    /// `mm __supervise`, the machine's supervisor.
    Supervisor,
    /// The supervisor's registrar child (machined registration).
    Registrar,
    /// The spawner (`mm-spawn`), which makes PID 1.
    Spawner,
    /// The machine's PID 1 (mm's init, or a booted systemd).
    Pid1,
    /// The rootless image worker (`mm __worker`).
    Worker,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Cli => "cli",
            Target::Supervisor => "supervisor",
            Target::Registrar => "registrar",
            Target::Spawner => "spawner",
            Target::Pid1 => "pid1",
            Target::Worker => "worker",
        }
    }
}

/// One process as /proc shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    pub environ: Vec<u8>,
    pub cgroup: String,
    pub userns: String,
    /// The state letter of /proc/PID/status (`Z` for a zombie).
    pub state: char,
}

impl Proc {
    fn read(pid: u32) -> Option<Self> {
        let dir = Path::new("/proc").join(pid.to_string());
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let cmdline = std::fs::read(dir.join("cmdline"))
            .ok()?
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        Some(Self {
            pid,
            ppid: field("PPid:")?.parse().ok()?,
            comm: field("Name:")?,
            cmdline,
            environ: std::fs::read(dir.join("environ")).unwrap_or_default(),
            cgroup: std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default(),
            state: field("State:")?.chars().next()?,
            userns: std::fs::read_link(dir.join("ns/user"))
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })
    }

    /// Whether its environment sets `MM_ROOT=root`.
    pub fn has_root(&self, root: &Path) -> bool {
        let needle = format!("MM_ROOT={}", root.display());
        self.environ
            .split(|b| *b == 0)
            .any(|v| v == needle.as_bytes())
    }
}

/// Every process now, but this one.
pub fn all() -> Vec<Proc> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(Proc::read)
        .collect()
}

/// The processes of the test whose MM_ROOT is `root` and whose machines are `names`: by
/// environment, command line or cgroup (`mm-NAME.scope`).
pub fn ours(root: &Path, names: &[String]) -> Vec<Proc> {
    let text = root.display().to_string();
    all()
        .into_iter()
        .filter(|p| {
            p.has_root(root)
                || p.cmdline.contains(&text)
                || names
                    .iter()
                    .any(|n| p.cgroup.contains(&format!("/mm-{n}.scope")))
        })
        .collect()
}

/// The processes whose `comm` is one of `comms`: read in full only for those, so that a
/// look is quick enough to catch a process that lives a few milliseconds.
fn named(comms: &[&str]) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| comms.contains(&c.trim_end()))
        })
        .filter_map(Proc::read)
        .collect()
}

/// The pid of `target` among the processes of the test with MM_ROOT `root` whose machine
/// is `name` (`cli` is the command the test started).
pub fn find(target: Target, root: &Path, name: &str, cli: u32) -> Option<u32> {
    if target == Target::Cli {
        return Some(cli);
    }
    let scope = format!("/mm-{name}.scope");
    let procs: Vec<Proc> = named(&["mm-supervise", "mm-spawn", "mm-init", "systemd", "mm"])
        .into_iter()
        .filter(|p| p.has_root(root) || p.cgroup.contains(&scope))
        .collect();
    let supervisor = || {
        procs.iter().find(|p| {
            p.comm == "mm-supervise"
                && !procs
                    .iter()
                    .any(|q| q.pid == p.ppid && q.comm == "mm-supervise")
        })
    };
    match target {
        Target::Cli => Some(cli),
        Target::Supervisor => supervisor().map(|p| p.pid),
        Target::Registrar => {
            let sup = supervisor()?;
            procs
                .iter()
                .find(|p| p.ppid == sup.pid && p.comm == "mm-supervise" && p.userns == sup.userns)
                .map(|p| p.pid)
        }
        Target::Spawner => procs.iter().find(|p| p.comm == "mm-spawn").map(|p| p.pid),
        Target::Pid1 => {
            let sup = supervisor()?;
            procs
                .iter()
                .find(|p| p.ppid == sup.pid && matches!(p.comm.as_str(), "mm-init" | "systemd"))
                .map(|p| p.pid)
        }
        Target::Worker => procs
            .iter()
            .find(|p| p.cmdline.contains("__worker") && p.pid != cli)
            .map(|p| p.pid),
    }
}
