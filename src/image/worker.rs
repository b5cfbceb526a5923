//! Rootless unpacking: a helper process in a user namespace mapped onto the user's
//! subordinate ids, so that files get their owners shifted into that range and overlayfs
//! whiteouts can be made.
//!
//! The parent re-executes mm as `mm __worker`. The worker unshares its user namespace first
//! thing, while it still has one thread, and says `Ready`; the parent writes its maps with
//! newuidmap and newgidmap, then sends the job; the worker answers with one reply. Both
//! directions are one JSON message per line.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::check::{self, Report};
use super::error::{ImageError, WorkerFailure, WorkerStep};
use super::install::install_layers;
use super::opened::LayerJob;
use super::pack::{self, OverlayXattrs, Owners, Packed};
use super::progress::Progress;
use super::store::{Installed, Layout, Store};
use super::unpack::UnpackMode;
use crate::host::Host;
use crate::idmap::{IdKind, IdMapEntry, keep_id_map, rootless_map, write_map};

/// The hidden argument that runs the worker.
pub const WORKER_ARG: &str = "__worker";

#[derive(Debug, Serialize, Deserialize)]
pub enum Job {
    Install {
        store: PathBuf,
        layers: Vec<LayerJob>,
        /// The owners' layout; the worker's maps are the ones a machine of it has.
        #[serde(default)]
        layout: Layout,
    },
    Remove {
        paths: Vec<PathBuf>,
    },
    /// A directory in overlayfs form packed into the layer blob `out` (created).
    Pack {
        dir: PathBuf,
        out: PathBuf,
        owners: Owners,
        overlay: OverlayXattrs,
    },
    /// `mm image check` of one layout's layers (removing the damaged ones with `repair`).
    Check {
        store: PathBuf,
        layout: Layout,
        repair: bool,
        /// Layer directories running machines are made of: never removed.
        #[serde(default)]
        in_use: Vec<PathBuf>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum FromWorker {
    Ready,
    Installed(Vec<Installed>),
    Removed,
    Packed(Packed),
    Checked(Report),
    Failed(WorkerFailure),
}

/// Runs `job` in a worker inside a user namespace mapped like a rootless machine's.
pub fn run(host: &Host, job: &Job) -> Result<Option<Vec<Installed>>, ImageError> {
    match start(host, job)? {
        FromWorker::Installed(installed) => Ok(Some(installed)),
        FromWorker::Removed => Ok(None),
        _ => Err(ImageError::Rootless(
            "the unpack worker answered another job".to_owned(),
        )),
    }
}

/// Runs a [`Job::Pack`] in a worker: the blob's digests.
pub fn pack(host: &Host, job: &Job) -> Result<Packed, ImageError> {
    match start(host, job)? {
        FromWorker::Packed(packed) => Ok(packed),
        _ => Err(ImageError::Rootless(
            "the unpack worker answered another job".to_owned(),
        )),
    }
}

/// Runs a [`Job::Check`] in a worker: what it found.
pub fn check(host: &Host, job: &Job) -> Result<Report, ImageError> {
    match start(host, job)? {
        FromWorker::Checked(report) => Ok(report),
        _ => Err(ImageError::Rootless(
            "the unpack worker answered another job".to_owned(),
        )),
    }
}

/// The worker's uid and gid maps (inside: what it sees; outside: the host's ids).
pub fn maps(host: &Host, layout: Layout) -> (Vec<IdMapEntry>, Vec<IdMapEntry>) {
    match layout {
        Layout::Default => (
            rootless_map(host.uid, &host.subuid),
            rootless_map(host.gid, &host.subgid),
        ),
        Layout::KeepId { uid, gid } => (
            keep_id_map(host.uid, uid, &host.subuid),
            keep_id_map(host.gid, gid, &host.subgid),
        ),
    }
}

fn start(host: &Host, job: &Job) -> Result<FromWorker, ImageError> {
    if host.subuid.is_empty() || host.subgid.is_empty() {
        return Err(ImageError::Rootless(format!(
            "user `{}` has no subordinate id range in /etc/subuid and /etc/subgid, which unpacking needs; \
             add one as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
            host.user, host.user
        )));
    }
    let exe = std::env::current_exe()
        .map_err(|e| ImageError::Rootless(format!("finding mm's own executable: {e}")))?;
    let mut child = Command::new(exe)
        .arg(WORKER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| ImageError::Rootless(format!("starting the unpack worker: {e}")))?;
    let result = drive(host, job, &mut child);
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| ImageError::Rootless(format!("waiting for the unpack worker: {e}")))?;
    match result? {
        FromWorker::Failed(failure) => Err(ImageError::Worker(failure)),
        FromWorker::Ready => Err(ImageError::Rootless(format!(
            "the unpack worker said Ready twice ({status})"
        ))),
        answer => Ok(answer),
    }
}

fn drive(
    host: &Host,
    job: &Job,
    child: &mut std::process::Child,
) -> Result<FromWorker, ImageError> {
    let broken = |what: &str| ImageError::Rootless(format!("the unpack worker {what}"));
    let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| broken("has no output"))?);
    let mut stdin = child.stdin.take().ok_or_else(|| broken("has no input"))?;
    match receive(&mut stdout)? {
        FromWorker::Ready => {}
        FromWorker::Failed(failure) => return Err(ImageError::Worker(failure)),
        _ => return Err(broken("did not start as expected")),
    }
    let pid = child.id();
    let layout = match job {
        Job::Install { layout, .. } | Job::Check { layout, .. } => *layout,
        Job::Remove { .. } | Job::Pack { .. } => Layout::Default,
    };
    let (uids, gids) = maps(host, layout);
    for (kind, map) in [(IdKind::Uid, uids), (IdKind::Gid, gids)] {
        write_map(pid, kind, &map, true).map_err(|e| ImageError::Rootless(e.to_string()))?;
    }
    let line = serde_json::to_string(job).expect("a job serializes");
    writeln!(stdin, "{line}").map_err(|e| broken(&format!("did not take its job: {e}")))?;
    drop(stdin);
    receive(&mut stdout)
}

fn receive(from: &mut impl BufRead) -> Result<FromWorker, ImageError> {
    let mut line = String::new();
    from.read_line(&mut line)
        .map_err(|e| ImageError::Rootless(format!("reading from the unpack worker: {e}")))?;
    if line.is_empty() {
        return Err(ImageError::Rootless(
            "the unpack worker exited without an answer".to_owned(),
        ));
    }
    serde_json::from_str(&line)
        .map_err(|e| ImageError::Rootless(format!("the unpack worker's answer: {e}")))
}

/// The worker's side: called from `main` before anything else can start a thread.
pub fn main(error_code: impl Fn(&ImageError) -> u8) -> ! {
    let say = |message: &FromWorker| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(message).expect("a reply serializes")
        );
        let _ = out.flush();
    };
    // SAFETY: NEWUSER alone does not unshare the file descriptor table.
    let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) };
    if let Err(e) = unshared {
        let e = std::io::Error::from(e);
        say(&FromWorker::Failed(WorkerFailure::new(
            WorkerStep::Unshare,
            69,
            &e,
        )));
        std::process::exit(1);
    }
    say(&FromWorker::Ready);
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.is_empty() {
        std::process::exit(1);
    }
    let reply = match serde_json::from_str::<Job>(&line) {
        Err(e) => FromWorker::Failed(WorkerFailure::new(WorkerStep::ReadJob, 70, &e)),
        Ok(job) => {
            let step = match &job {
                Job::Install { store, .. } => WorkerStep::Install {
                    store: store.clone(),
                },
                Job::Remove { .. } => WorkerStep::Remove,
                Job::Pack { dir, .. } => WorkerStep::Pack { dir: dir.clone() },
                Job::Check { store, .. } => WorkerStep::Check {
                    store: store.clone(),
                },
            };
            match work(job) {
                Ok(reply) => reply,
                Err(e) => FromWorker::Failed(WorkerFailure::new(step, error_code(&e), &e)),
            }
        }
    };
    say(&reply);
    std::process::exit(0);
}

fn work(job: Job) -> Result<FromWorker, ImageError> {
    match job {
        Job::Install {
            store,
            layers,
            layout,
        } => {
            let installed = install_layers(
                &Store::new(store),
                layout,
                &layers,
                UnpackMode::ROOTLESS,
                &Progress::new(),
            )?;
            Ok(FromWorker::Installed(installed))
        }
        Job::Remove { paths } => {
            for path in paths {
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|source| ImageError::Io { path, source })?;
            }
            Ok(FromWorker::Removed)
        }
        Job::Pack {
            dir,
            out,
            owners,
            overlay,
        } => {
            let file = std::fs::File::create_new(&out).map_err(|source| ImageError::Io {
                path: out.clone(),
                source,
            })?;
            let packed = pack::pack(&dir, std::io::BufWriter::new(file), &owners, overlay)?;
            Ok(FromWorker::Packed(packed))
        }
        Job::Check {
            store,
            layout,
            repair,
            in_use,
        } => Ok(FromWorker::Checked(check::check_layout(
            &Store::new(store),
            layout,
            repair,
            &in_use,
        )?)),
    }
}
