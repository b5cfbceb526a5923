//! The command line: verbs, flags and their help. No logic lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mm — a declarative machine manager
///
/// Describe a machine in machines/NAME.toml; mm compiles it, with the facts of this host,
/// into a boot plan you can read before anything is touched, then boots it in its own
/// namespaces, overlay root, cgroup and user ids, as root or as an ordinary user.
#[derive(Debug, Parser)]
#[command(name = "mm", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Machines are found by NAME in ./machines, then /etc/mm/machines and \
/usr/share/mm/machines (root) or ~/.config/mm/machines (others); a path to a .toml file works \
wherever a NAME does. MM_PATH replaces that search path; MM_ROOT=DIR keeps all of mm's state \
under DIR.\n\nDocumentation: docs/definition.md (every key), docs/errors.md (exit codes)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check definitions for every error that can be found without changing anything
    ///
    /// With no argument, checks every definition on the search path. Exits 65 if a
    /// definition is invalid, 69 if it is valid but this host cannot run it as written.
    Validate {
        /// Machine names or paths to .toml files
        machines: Vec<String>,
        /// Print the results as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show, step by step, what starting a machine will do
    ///
    /// Compiles the definition with this host's facts into the boot plan: image and
    /// layers, id maps, namespaces, cgroup and limits, every mount in order, network,
    /// registration and PID 1. Nothing is changed.
    Plan {
        /// A machine name or a path to a .toml file
        machine: String,
        /// Print the plan as JSON (stable schema, with a plan_hash)
        #[arg(long)]
        json: bool,
        /// Compile against host facts saved by `mm host --json` instead of this host's
        #[arg(long, value_name = "FILE")]
        host_file: Option<PathBuf>,
    },
    /// List the machines defined on the search path, and whether each is running
    #[command(visible_alias = "ls")]
    List {
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Boot a machine in the foreground, like systemd-nspawn; ^] three times within 1s kills it
    ///
    /// The machine's console is this terminal (or, from a pipe, the standard streams as
    /// they are). On a terminal every key goes to the machine: Ctrl-C is the console's
    /// (it ends a command that takes it, and a booted machine's init ignores it). To leave,
    /// press ^] (Ctrl-]) three times within a second, as in systemd-nspawn: mm kills the
    /// machine, as nspawn does, and exits 137; `mm stop NAME` from another terminal stops
    /// it cleanly. Exits with PID 1's status: the command's, or 128+N if signal N ended it.
    Run {
        /// A machine name or a path to a .toml file
        machine: String,
        /// Stay in the systemd unit mm runs as (mm@.service passes it): the machine's
        /// cgroup goes below the unit's, and the unit is told READY=1 once PID 1 runs
        #[arg(long)]
        keep_unit: bool,
        /// Registry logins from FILE only, when the image must be pulled (default: as
        /// podman, $REGISTRY_AUTH_FILE or the files of containers-auth.json(5))
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
    },
    /// Boot a machine in the background; returns once its PID 1 runs
    ///
    /// Where systemd runs the host (as root) or your session (as a user) and mm@.service
    /// is installed, this starts mm@NAME.service and waits for it: the machine's output
    /// goes to the journal. Elsewhere mm's supervisor detaches by itself and the console
    /// goes to RUNTIME/NAME/console.log. `mm logs NAME` shows either. Exits 75 if the
    /// machine is already running.
    Start {
        /// A machine name or a path to a .toml file
        machine: String,
        /// Start the supervisor directly, even where systemd could run mm@NAME.service
        #[arg(long)]
        no_systemd: bool,
        /// Registry logins from FILE only, when the image must be pulled (default: as
        /// podman, $REGISTRY_AUTH_FILE or the files of containers-auth.json(5))
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
    },
    /// Stop a running machine: its stop signal to PID 1, then SIGKILL to all after a timeout
    ///
    /// A machine started as mm@NAME.service is stopped through systemd (with --timeout,
    /// by its supervisor, and the unit ends with it).
    Stop {
        machine: String,
        /// Seconds to wait before killing every process (default: the definition's)
        #[arg(long, value_name = "S")]
        timeout: Option<u32>,
    },
    /// Send a signal to a machine's PID 1 (the default), or to every process in it
    ///
    /// As `machinectl kill NAME --kill-whom=leader|all`, with another default: machinectl
    /// signals all processes unless told `--kill-whom=leader`; mm signals PID 1 alone
    /// unless told --all. PID 1 is mm's init (which passes the signal on to the command)
    /// or, for a booted machine, its init (SIGRTMIN+3 asks systemd to shut down). --all
    /// finds the machine's processes as `mm ps` does (its cgroup, else its PID namespace);
    /// mm's init is left out, since it passes each signal on: the command gets it once.
    Kill {
        machine: String,
        /// A name (TERM, SIGHUP, RTMIN+3) or a number
        #[arg(long, short, default_value = "SIGTERM")]
        signal: mm::signal::Signal,
        /// Every process of the machine (machinectl's `--kill-whom=all`)
        #[arg(long, conflicts_with = "leader")]
        all: bool,
        /// PID 1 only, the default (machinectl's `--kill-whom=leader`)
        #[arg(long)]
        leader: bool,
    },
    /// Bind a host path into a running machine
    ///
    /// As `machinectl bind NAME SRC DST`, which refuses machines with a user namespace
    /// (`systemd-nspawn -U`): mm binds a copy of SRC's mount (recursively) on DST, a
    /// path inside the machine that must exist, resolved inside the machine's root (a
    /// symlink there cannot aim it at the host). The bind lasts until the machine stops.
    /// Works as root and for an ordinary user's machine; when the kernel refuses, mm
    /// names the step and the reason.
    Bind {
        machine: String,
        /// The host path
        source: std::path::PathBuf,
        /// Where it shows in the machine (it must exist)
        target: String,
        /// Bind it read-only
        #[arg(long)]
        read_only: bool,
    },
    /// Show a running machine's processes, as a tree
    ///
    /// Each with its pid on the host (HPID) and in the machine (PID), its user in the
    /// machine and its command line, as `podman top NAME hpid pid user args` and the tree
    /// of `machinectl status`. The processes are those of the machine's cgroup (and the
    /// cgroups below it), or, without one, of its PID namespace; `mm exec` and `mm shell`
    /// sessions among them.
    #[command(visible_alias = "top")]
    Ps {
        machine: String,
        /// Print the processes as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show whether a machine is running, its PID 1, supervisor and how it last ended
    ///
    /// Exits 0 when the machine is running and 3 when it is not, as `systemctl status`.
    Status {
        machine: String,
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a running machine; its exit code becomes mm's
    ///
    /// For example: mm exec web ls -l /srv (as `podman exec`). mm's options go before the
    /// command; everything from the command on is the command's, options included. A `--`
    /// before the command is allowed (mm exec web -- ls -l /srv), and needed only for a
    /// command whose name starts with `-`.
    Exec {
        machine: String,
        /// Run as this user of the machine (NAME, UID or UID:GID; default: the machine's)
        #[arg(long, short)]
        user: Option<String>,
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Open an interactive login shell inside a running machine
    Shell {
        machine: String,
        /// Log in as this user of the machine (default: the keep_id user, else root)
        #[arg(long, short)]
        user: Option<String>,
        /// Run this command line with the user's shell (`SHELL -c LINE`), as `sh -c` does
        #[arg(short = 'c', value_name = "LINE")]
        command: Option<String>,
    },
    /// Show a machine's console output
    ///
    /// From the journal when it ran as mm@NAME.service, else from RUNTIME/NAME/console.log.
    Logs {
        machine: String,
        /// Keep printing new output until the machine stops (Ctrl-C to leave)
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines
        #[arg(long, short = 'n', value_name = "N")]
        lines: Option<usize>,
    },
    /// Start a machine at boot (root) or at login (user), like `systemctl enable`
    ///
    /// Links mm@NAME.service into machines.target (root) or default.target (user). Its
    /// definition must be where the service manager finds it: /etc/mm/machines or
    /// /usr/share/mm/machines (root), ~/.config/mm/machines (user). Needs systemd.
    Enable {
        machine: String,
        /// Start it now too
        #[arg(long)]
        now: bool,
    },
    /// Undo `mm enable`: the machine no longer starts at boot or login
    Disable {
        machine: String,
        /// Stop it now too
        #[arg(long)]
        now: bool,
    },
    /// Remove a stopped machine's writable layer and state (its definition stays)
    Rm { machine: String },
    /// Put a launcher on the host for a program (or a desktop app) inside a machine
    ///
    /// `mm export dev --bin /usr/bin/rg` writes ~/.local/bin/rg (as root: /usr/local/bin/rg),
    /// a shell script that runs /usr/bin/rg inside dev through `mm exec`: with the caller's
    /// arguments exactly (spaces, quotes, empty ones, `--`), standard streams, working
    /// directory and environment, and its exit status (128+N when signal N ended it). When
    /// the machine is stopped, the launcher starts it first (`mm start`) and then runs the
    /// program. The launcher keeps MM_ROOT and MM_PATH as they are now and names mm by its
    /// absolute path. `--app ID` reads ID.desktop from the running machine's
    /// /usr/share/applications (only its Name, Comment, Icon, Terminal, Categories,
    /// MimeType and Exec keys; nothing in it runs on the host), writes a launcher
    /// mm-MACHINE-ID and ~/.local/share/applications/mm-MACHINE-ID.desktop whose Exec is
    /// that launcher. An existing file is an error unless --force. `mm unexport` removes them.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["bin", "app", "list"])))]
    Export {
        machine: String,
        /// The program's absolute path inside the machine
        #[arg(long, value_name = "PATH")]
        bin: Option<String>,
        /// A desktop entry of the machine's /usr/share/applications (ID or ID.desktop)
        #[arg(long, value_name = "ID")]
        app: Option<String>,
        /// List the machine's exports instead
        #[arg(long)]
        list: bool,
        /// With --list: as JSON
        #[arg(long, requires = "list")]
        json: bool,
        /// The launcher's file name (default: the program's; for an app, mm-MACHINE-ID)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Replace a file already at the launcher's (or entry's) path
        #[arg(long)]
        force: bool,
        /// Where launchers go (default: ~/.local/bin; as root /usr/local/bin)
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Where desktop entries go (default: ~/.local/share/applications; as root
        /// /usr/local/share/applications)
        #[arg(long, value_name = "DIR")]
        apps_dir: Option<PathBuf>,
    },
    /// Remove launchers and desktop entries `mm export` wrote for a machine
    ///
    /// Only files that still carry mm's marker line are removed; any other file at their
    /// place is left alone, with an error.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["bin", "app", "all"])))]
    Unexport {
        machine: String,
        /// A launcher's name, as `mm export --list` shows it
        #[arg(long, value_name = "NAME")]
        bin: Option<String>,
        /// An app's ID
        #[arg(long, value_name = "ID")]
        app: Option<String>,
        /// Every export of the machine
        #[arg(long)]
        all: bool,
    },
    /// Turn a stopped machine's writable layer into a new image of the store
    ///
    /// The image is the machine's image with one more layer: what the machine added,
    /// changed and deleted (deletions as OCI whiteouts), owned as the machine sees it. It is
    /// named mm:TAG (default: mm:MACHINE); a definition starts from it with
    /// `source = "mm:TAG"`, and `mm image export mm:TAG oci-archive:FILE` shares it. The
    /// machine must be stopped (mm stop MACHINE); it stays stopped while mm reads it.
    Commit {
        machine: String,
        /// The image's name in the store, written mm:TAG in definitions
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
        /// Replace an image of that name
        #[arg(long)]
        force: bool,
    },
    /// Bring images into mm's store, list, extract and remove them
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run OCI bundles with runc's command line (podman --runtime, see docs/oci.md)
    ///
    /// Installed as /usr/bin/mm-runc (a symlink to mm), mm behaves as `mm oci`, so that
    /// `podman --runtime /usr/bin/mm-runc` drives it.
    Oci(OciArgs),
    /// Show what mm knows about this host: ids, subordinate ranges, cgroups, D-Bus, paths
    Host {
        /// Print the facts as JSON (usable with `mm plan --host-file`)
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script
    ///
    /// For example: mm completions bash > /etc/bash_completion.d/mm
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Write man pages (mm.1 and one per command) into a directory
    #[command(hide = true)]
    Man {
        /// Where to write the pages
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image into the store, verifying every blob against its sha256 digest
    ///
    /// SOURCE is written as in a definition: oci:PATH[:REF] (an OCI image layout, as made
    /// by skopeo, umoci or buildah; REF is a tag or, as podman writes it, a whole
    /// reference), oci-archive:PATH[:REF] (a tarball of one), dir:PATH (skopeo's
    /// directory layout), containers-storage:[STORE]IMAGE (an image in podman's store, read
    /// and never written, each layer rebuilt from podman's tar-split data and verified),
    /// docker-archive:PATH[:REF|:@INDEX] (from `docker save`, `podman save -m` or skopeo;
    /// which image, when it holds several), tar:PATH (a rootfs tarball,
    /// plain, gzip or zstd), or docker://REGISTRY/REPO[:TAG|@DIGEST] (credentials from
    /// `podman login` or `docker login`, and their credential helpers; mirrors, plain-HTTP
    /// and blocked registries from registries.conf, as podman reads it), or, as podman
    /// takes it, a name with no transport: quay.io/x/y:1, or a short name such as
    /// fedora:40, found through registries.conf's aliases and unqualified-search-registries
    /// (never by asking: with several registries and short-name-mode enforcing, mm
    /// refuses and says how to choose). Layers already in the store are shared, not unpacked again.
    /// As an ordinary user, files are owned by your subordinate ids (/etc/subuid).
    #[command(visible_alias = "pull")]
    Import {
        /// The image, such as oci:images/busybox:latest
        source: String,
        /// Refuse the image unless its manifest (or index) has this digest (sha256:…)
        #[arg(long, value_name = "DIGEST")]
        digest: Option<mm::image::Digest>,
        /// Registries: require HTTPS with a verified certificate (`--tls-verify=false` for a
        /// plain-HTTP registry, as with skopeo and podman)
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// Registries: logins from FILE only (default: as podman, $REGISTRY_AUTH_FILE or
        /// the files of containers-auth.json(5))
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
    },
    /// List the images in the store
    #[command(visible_alias = "ls")]
    List {
        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write an image as one directory tree, whiteouts applied (like `umoci unpack`)
    Extract {
        /// The image, such as oci:images/busybox:latest
        source: String,
        /// Registries: `--tls-verify=false` for a plain-HTTP registry
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// Registries: logins from FILE only
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
        /// A directory to create; it must not exist
        dir: PathBuf,
    },
    /// Write an image of the store for podman, skopeo and docker
    ///
    /// TARGET is oci:DIR[:TAG] (an OCI image layout, made or added to), oci-archive:FILE[:TAG]
    /// (a tarball of one; `podman load -i FILE` reads it) or docker-archive:FILE (as
    /// `docker save` writes); TAG defaults to latest. Layers made by `mm commit` are written
    /// as committed; imported layers, which the store keeps unpacked only, are packed
    /// again (same files, new digests).
    Export {
        /// An image as `mm image list` shows it, such as mm:dev
        image: String,
        /// Where to write it
        target: String,
    },
    /// Remove images from the store (their layers go at the next `mm image gc`)
    Rm {
        /// Names as `mm image list` shows them
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Verify every stored layer and blob again, and report what does not match
    ///
    /// Each unpacked layer is walked and compared, entry by entry, with the tree recorded
    /// when it was unpacked and verified against its diff_id (type, mode, owner, size, and
    /// the sha256 of each file's contents); each blob is hashed against its digest; each
    /// image's layers must be present. Exits 65 when anything is damaged (also after
    /// --repair), 0 when the store is intact.
    Check {
        /// Remove the damaged layers and blobs, so that the next import of their images
        /// unpacks them again (as `podman system check --repair`)
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove layers and blobs no image uses, and leftovers of interrupted imports
    Gc {
        /// Only show what would be removed
        #[arg(long)]
        dry_run: bool,
    },
}

/// `mm oci`: runc's global flags, then the verb.
#[derive(Debug, clap::Args)]
pub struct OciArgs {
    /// Where containers' state lives (default /run/mm-oci, or $XDG_RUNTIME_DIR/mm-oci)
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Also write errors (and with --debug, each command) to this file
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The log's format
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: OciLogFormat,
    /// linux.cgroupsPath is SLICE:PREFIX:NAME (systemd's form)
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Log each command to --log
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: OciCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OciPsFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OciLogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Create a container: its process set up and waiting for `start`
    Create {
        /// The bundle: a directory with config.json and the root file system
        #[arg(short, long, default_value = ".", value_name = "DIR")]
        bundle: PathBuf,
        /// Write the container's pid here
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// The unix socket that gets the terminal's master side (with process.terminal)
        #[arg(long, value_name = "SOCKET")]
        console_socket: Option<PathBuf>,
        /// Accepted as runc does: mm always pivots
        #[arg(long)]
        no_pivot: bool,
        /// Accepted as runc does: mm makes no session keyring
        #[arg(long)]
        no_new_keyring: bool,
        /// The container's id
        id: String,
    },
    /// Let a created container's process execute its command
    Start { id: String },
    /// Print a container's state (runtime-spec JSON)
    State { id: String },
    /// Send a signal to a container's process (default SIGTERM)
    Kill {
        /// To every process in its cgroup
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a stopped container and everything `create` made
    Delete {
        /// Kill it first if it still runs
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container, then wait for it and delete it (unless --detach)
    Run {
        #[arg(short, long, default_value = ".", value_name = "DIR")]
        bundle: PathBuf,
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Return once it runs
        #[arg(short, long)]
        detach: bool,
        id: String,
    },
    /// Run another process in a created or running container
    Exec {
        /// A runtime-spec `process` JSON: what runs, and how
        #[arg(short, long, value_name = "FILE")]
        process: Option<PathBuf>,
        /// On a terminal (with --console-socket: its master goes there)
        #[arg(short, long)]
        tty: bool,
        /// Return once it runs (it is re-parented to the caller's subreaper)
        #[arg(short, long)]
        detach: bool,
        /// Write its pid here
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// The unix socket that gets the terminal's master side (with --tty)
        #[arg(long, value_name = "SOCKET")]
        console_socket: Option<PathBuf>,
        /// Its working directory in the container
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// KEY=VALUE in its environment, over the container's (repeatable)
        #[arg(short, long, value_name = "K=V")]
        env: Vec<String>,
        /// UID[:GID] to run as
        #[arg(short, long, value_name = "UID[:GID]")]
        user: Option<String>,
        /// A capability to add (repeatable)
        #[arg(short, long, value_name = "CAP")]
        cap: Vec<String>,
        /// Set no_new_privs
        #[arg(long)]
        no_new_privs: bool,
        /// The AppArmor profile it runs under (default: the container's)
        #[arg(long, value_name = "PROFILE")]
        apparmor: Option<String>,
        /// Pass descriptors 3 to 3+N-1 on to the process
        #[arg(long, value_name = "N", default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        /// The command and its arguments (without --process)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List a container's processes (its cgroup's)
    Ps {
        /// `table` (ps(1)'s lines for them) or `json` (an array of host pids)
        #[arg(short, long, default_value = "table", value_name = "FORMAT")]
        format: OciPsFormat,
        id: String,
        /// ps(1)'s options for the table (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container (status `paused`)
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Change a container's limits (memory and swap, CPU quota and shares, cpuset, pids)
    Update {
        /// A runtime-spec linux.resources JSON
        #[arg(short, long, value_name = "FILE")]
        resources: Option<PathBuf>,
        /// Memory limit in bytes (-1: none)
        #[arg(short, long, value_name = "BYTES", allow_negative_numbers = true)]
        memory: Option<i64>,
        /// Memory and swap together in bytes, with --memory (-1: no limit)
        #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
        memory_swap: Option<i64>,
        /// Most processes (0 or -1: no limit)
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        pids_limit: Option<i64>,
        /// CPU time per period in µs (-1: none)
        #[arg(long, value_name = "US", allow_negative_numbers = true)]
        cpu_quota: Option<i64>,
        /// CFS period in µs (mm's is 100000)
        #[arg(long, value_name = "US")]
        cpu_period: Option<u64>,
        id: String,
    },
    /// Print what this runtime supports (runtime-spec features JSON)
    Features,
    /// Write a config.json that mm takes, for a rootfs/ beside it
    Spec {
        /// For an ordinary user: with a user namespace
        #[arg(long)]
        rootless: bool,
        #[arg(short, long, default_value = ".", value_name = "DIR")]
        bundle: PathBuf,
    },
    /// Show the plan a bundle compiles into (as `mm plan` shows a machine's)
    Plan {
        #[arg(short, long, default_value = ".", value_name = "DIR")]
        bundle: PathBuf,
        /// The container id the plan is for
        #[arg(long, default_value = "bundle")]
        id: String,
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
        /// Compile against host facts saved by `mm host --json` instead of this host's
        #[arg(long, value_name = "FILE")]
        host_file: Option<PathBuf>,
    },
}
