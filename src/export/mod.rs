//! `mm export` / `mm unexport`: launchers on the host for programs and desktop entries
//! inside a machine, and the record of what mm wrote.
//!
//! A launcher (`launcher.rs`) is a shell script in the bin directory (`~/.local/bin`, as
//! root `/usr/local/bin`) that runs the program through `mm exec`; an app also gets a
//! `.desktop` entry (`desktop.rs`) in the applications directory whose `Exec` is its
//! launcher. Every file starts with a marker line (`# mm-export: {…}`), and the files are
//! recorded in `DATA/exports/MACHINE.json`, so `mm export --list` lists them and
//! `mm unexport` removes only files mm wrote (a file whose marker is gone is left alone,
//! with an error).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod desktop;
pub mod launcher;

use launcher::{Launcher, MARKER};

/// What kind of thing was exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Bin,
    App,
}

/// One export, as recorded and as `mm export --list --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    pub machine: String,
    pub kind: Kind,
    /// The name `mm unexport --bin|--app NAME` takes.
    pub name: String,
    /// The program inside the machine (for an app: its `Exec`'s).
    pub program: String,
    pub launcher: PathBuf,
    /// An app's `.desktop` entry on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<PathBuf>,
}

/// The marker line's content: which machine and export a file belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    machine: String,
    kind: Kind,
    name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exists; `--force` replaces it", .0.display())]
    Exists(PathBuf),
    #[error("{} was not written by mm export (it has no marker line for it); mm leaves it alone", .0.display())]
    Foreign(PathBuf),
    #[error(
        "machine {machine} has no exported {kind} `{name}`; `mm export --list {machine}` shows what it has"
    )]
    NotExported {
        machine: String,
        kind: &'static str,
        name: String,
    },
    #[error("`{0}` is not a launcher name: it must be a file name (no `/`, not `.` or `..`)")]
    BadName(String),
    #[error("`{0}` is not a program inside the machine: give its absolute path")]
    BadProgram(String),
    #[error("desktop entry {name} in machine {machine}: {why}")]
    Desktop {
        machine: String,
        name: String,
        why: String,
    },
    #[error("the export record {}: {why}", path.display())]
    Record { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where launchers and entries go, and what they need to reach mm's state.
pub struct Setting {
    pub bin_dir: PathBuf,
    pub apps_dir: PathBuf,
    /// mm, by absolute path.
    pub mm: PathBuf,
    /// `MM_ROOT` and `MM_PATH` now.
    pub env: Vec<(&'static str, Option<String>)>,
    /// Where the records are: `DATA/exports`.
    pub records: PathBuf,
}

impl Setting {
    /// The default directories: root's `/usr/local/bin` and `/usr/local/share/applications`;
    /// a user's `~/.local/bin` and `$XDG_DATA_HOME/applications`.
    pub fn default_dirs(uid: u32, home: &Path) -> (PathBuf, PathBuf) {
        if uid == 0 {
            return (
                "/usr/local/bin".into(),
                "/usr/local/share/applications".into(),
            );
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".local/share"));
        (home.join(".local/bin"), data.join("applications"))
    }

    fn record_path(&self, machine: &str) -> PathBuf {
        self.records.join(format!("{machine}.json"))
    }
}

/// What to export.
pub enum What {
    /// A program, by its absolute path inside the machine.
    Bin { program: String },
    /// A desktop entry: its id (file name without `.desktop`) and the file's text, read
    /// inside the machine.
    App { id: String, text: String },
}

/// One export to make.
pub struct Request<'a> {
    pub machine: &'a str,
    /// The machine's definition, by absolute path.
    pub definition: &'a Path,
    pub what: What,
    /// The launcher's file name (default: the program's file name; an app's `mm-MACHINE-ID`).
    pub name: Option<String>,
    pub force: bool,
}

/// Writes the launcher (and an app's entry), and records them.
pub fn export(setting: &Setting, request: &Request<'_>) -> Result<Exported, ExportError> {
    let machine = request.machine;
    let (kind, argv, entry, default_name) = match &request.what {
        What::Bin { program } => {
            if !program.starts_with('/') {
                return Err(ExportError::BadProgram(program.clone()));
            }
            let base = Path::new(program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| ExportError::BadProgram(program.clone()))?;
            (Kind::Bin, vec![program.clone()], None, base)
        }
        What::App { id, text } => {
            let entry = desktop::parse(text).map_err(|e| ExportError::Desktop {
                machine: machine.to_owned(),
                name: id.clone(),
                why: e.to_string(),
            })?;
            let argv = entry.argv.clone();
            (Kind::App, argv, Some(entry), format!("mm-{machine}-{id}"))
        }
    };
    let name = request.name.clone().unwrap_or(default_name);
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(ExportError::BadName(name));
    }
    let marker = serde_json::to_string(&Marker {
        machine: machine.to_owned(),
        kind,
        name: name.clone(),
    })
    .map_err(|e| ExportError::Record {
        path: setting.record_path(machine),
        why: e.to_string(),
    })?;
    let launcher_path = setting.bin_dir.join(&name);
    let script = Launcher {
        marker: &marker,
        machine,
        definition: request.definition,
        mm: &setting.mm,
        env: &setting.env,
        argv: &argv,
    }
    .script();
    let desktop = match (&entry, &request.what) {
        (Some(entry), What::App { id, .. }) => {
            let path = setting.apps_dir.join(format!("mm-{machine}-{id}.desktop"));
            let text =
                desktop::host_entry(entry, &marker, machine, &launcher_path.to_string_lossy());
            Some((path, text))
        }
        _ => None,
    };
    // Both targets are checked before either is written.
    for path in std::iter::once(&launcher_path).chain(desktop.as_ref().map(|(p, _)| p)) {
        if !request.force && path.symlink_metadata().is_ok() {
            return Err(ExportError::Exists(path.clone()));
        }
    }
    write_file(&launcher_path, &script, 0o755)?;
    if let Some((path, text)) = &desktop {
        write_file(path, text, 0o644)?;
    }
    let exported = Exported {
        machine: machine.to_owned(),
        kind,
        name,
        program: argv.first().cloned().unwrap_or_default(),
        launcher: launcher_path,
        desktop: desktop.map(|(p, _)| p),
    };
    let mut all = list(setting, machine)?;
    all.retain(|e| !(e.kind == exported.kind && e.name == exported.name));
    all.push(exported.clone());
    save(setting, machine, &all)?;
    Ok(exported)
}

/// Writes `text` at `path` (its directory made if missing) through a temporary file
/// renamed over it, so a reader never sees half a launcher.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), ExportError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{}.mm-export.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io(path))
}

/// The machine's exports, as recorded.
pub fn list(setting: &Setting, machine: &str) -> Result<Vec<Exported>, ExportError> {
    let path = setting.record_path(machine);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ExportError::Record {
            path,
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ExportError::Io { path, source }),
    }
}

fn save(setting: &Setting, machine: &str, all: &[Exported]) -> Result<(), ExportError> {
    let path = setting.record_path(machine);
    if all.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(&setting.records).map_err(io(&setting.records))?;
    let json = serde_json::to_vec_pretty(all).map_err(|e| ExportError::Record {
        path: path.clone(),
        why: e.to_string(),
    })?;
    crate::state::write_atomically(&path, &json).map_err(io(&path))
}

/// Which exports to remove.
pub enum Which {
    One { kind: Kind, name: String },
    All,
}

/// Removes exports, each file only if it still carries its marker: the files removed.
/// A file that is already gone is fine; one that is not mm's stops the removal.
pub fn unexport(
    setting: &Setting,
    machine: &str,
    which: &Which,
) -> Result<Vec<PathBuf>, ExportError> {
    let mut all = list(setting, machine)?;
    let chosen: Vec<Exported> = match which {
        Which::All => all.clone(),
        Which::One { kind, name } => {
            let found: Vec<Exported> = all
                .iter()
                .filter(|e| e.kind == *kind && e.name == *name)
                .cloned()
                .collect();
            if found.is_empty() {
                return Err(ExportError::NotExported {
                    machine: machine.to_owned(),
                    kind: match kind {
                        Kind::Bin => "program",
                        Kind::App => "app",
                    },
                    name: name.clone(),
                });
            }
            found
        }
    };
    let mut removed = Vec::new();
    for export in &chosen {
        let marker = Marker {
            machine: machine.to_owned(),
            kind: export.kind,
            name: export.name.clone(),
        };
        let files: Vec<&PathBuf> = std::iter::once(&export.launcher)
            .chain(export.desktop.as_ref())
            .collect();
        // Every file is checked before any is removed.
        let mut present = Vec::new();
        for path in files {
            match std::fs::read(path) {
                Ok(bytes) if carries(&bytes, &marker) => present.push(path),
                Ok(_) => return Err(ExportError::Foreign(path.clone())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(path)(e)),
            }
        }
        for path in present {
            std::fs::remove_file(path).map_err(io(path))?;
            removed.push(path.clone());
        }
        all.retain(|e| e != export);
        save(setting, machine, &all)?;
    }
    Ok(removed)
}

/// Whether one of the file's first lines is the marker for `marker`.
fn carries(bytes: &[u8], marker: &Marker) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    text.lines().take(3).any(|line| {
        line.strip_prefix(MARKER)
            .and_then(|json| serde_json::from_str::<Marker>(json).ok())
            .is_some_and(|m| m == *marker)
    })
}
