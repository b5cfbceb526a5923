//! `mm export`, `mm unexport` and `mm commit`: launchers on the host, and a machine's
//! writable layer kept as an image.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mm::error::{Error, ExitCode};
use mm::export::{ExportError, Exported, Kind, Request, Setting, What, Which};
use mm::host::{Dirs, Host};

use super::output::{print, print_json};

/// The launcher's setting: directories, mm's path, and the state variables as they are.
fn setting(bin_dir: Option<PathBuf>, apps_dir: Option<PathBuf>) -> Result<Setting, Error> {
    let uid = nix::unistd::geteuid().as_raw();
    let home = mm::host::home(uid);
    let (bin, apps) = Setting::default_dirs(uid, &home);
    let cwd = std::env::current_dir().map_err(|e| Error::Read {
        path: PathBuf::from("the working directory"),
        source: e,
    })?;
    let absolute = |p: PathBuf| mm::definition::source::absolute(&cwd, &p);
    let mm = std::env::current_exe().map_err(|e| Error::Read {
        path: PathBuf::from("/proc/self/exe"),
        source: e,
    })?;
    // Relative values are made absolute, so the launcher finds the same state from anywhere.
    let env = [mm::host::ENV_ROOT, mm::host::ENV_PATH]
        .into_iter()
        .map(|name| {
            let value = std::env::var_os(name).filter(|v| !v.is_empty()).map(|v| {
                std::env::split_paths(&v)
                    .map(&absolute)
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(":")
            });
            (name, value)
        })
        .collect();
    let dirs = Dirs::current();
    let records = dirs
        .machines
        .parent()
        .map_or_else(|| dirs.machines.join("exports"), |d| d.join("exports"));
    Ok(Setting {
        bin_dir: absolute(bin_dir.unwrap_or(bin)),
        apps_dir: absolute(apps_dir.unwrap_or(apps)),
        mm,
        env,
        records,
    })
}

/// What `mm export` was asked.
pub struct Asked {
    pub machine: String,
    pub bin: Option<String>,
    pub app: Option<String>,
    pub list: bool,
    pub json: bool,
    pub name: Option<String>,
    pub force: bool,
    pub bin_dir: Option<PathBuf>,
    pub apps_dir: Option<PathBuf>,
}

pub fn export(asked: Asked) -> Result<ExitCode, Error> {
    let setting = setting(asked.bin_dir, asked.apps_dir)?;
    let dirs = Dirs::current();
    let definition = mm::definition::discovery::resolve(&asked.machine, &dirs.search)?;
    let (name, _) = mm::machine::machine_paths(&definition.to_string_lossy())?;
    if asked.list {
        return list(&setting, &name, asked.json);
    }
    let what = match (asked.bin, asked.app) {
        (Some(program), _) => What::Bin { program },
        (None, Some(app)) => {
            let id = app.strip_suffix(".desktop").unwrap_or(&app).to_owned();
            let text = read_entry(&name, &id)?;
            What::App { id, text }
        }
        (None, None) => return Ok(ExitCode::Usage),
    };
    let exported = mm::export::export(
        &setting,
        &Request {
            machine: &name,
            definition: &definition,
            what,
            name: asked.name,
            force: asked.force,
        },
    )?;
    let mut out = format!(
        "{}: runs {} in {name}\n",
        exported.launcher.display(),
        exported.program
    );
    if let Some(desktop) = &exported.desktop {
        out.push_str(&format!("{}: its desktop entry\n", desktop.display()));
    }
    print(&out)?;
    Ok(ExitCode::Ok)
}

fn list(setting: &Setting, machine: &str, json: bool) -> Result<ExitCode, Error> {
    let all: Vec<Exported> = mm::export::list(setting, machine)?;
    if json {
        print_json(&all)?;
        return Ok(ExitCode::Ok);
    }
    if all.is_empty() {
        print(&format!("Nothing exported from {machine}.\n"))?;
        return Ok(ExitCode::Ok);
    }
    let mut out = format!(
        "{:<4} {:<20} {:<28} {}\n",
        "KIND", "NAME", "PROGRAM", "LAUNCHER"
    );
    for e in &all {
        let kind = match e.kind {
            Kind::Bin => "bin",
            Kind::App => "app",
        };
        out.push_str(&format!(
            "{kind:<4} {:<20} {:<28} {}\n",
            e.name,
            e.program,
            e.launcher.display()
        ));
    }
    print(&out)?;
    Ok(ExitCode::Ok)
}

/// An app's entry, read inside the running machine (`mm exec MACHINE -- cat FILE`), so
/// that its path resolves in the machine's root; at most 1 MiB of it.
fn read_entry(machine: &str, id: &str) -> Result<String, Error> {
    let bad = |why: String| ExportError::Desktop {
        machine: machine.to_owned(),
        name: id.to_owned(),
        why,
    };
    let valid = !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if !valid {
        return Err(
            bad("an app ID is a desktop file's name, such as org.gnome.gedit".to_owned()).into(),
        );
    }
    let (_, paths) = mm::machine::machine_paths(machine)?;
    if !mm::runtime::state::supervised(&paths).unwrap_or(false) {
        return Err(bad(format!(
            "mm reads the entry inside the machine, which is not running: start it first (mm start {machine})"
        ))
        .into());
    }
    let file = format!("/usr/share/applications/{id}.desktop");
    let exe = std::env::current_exe().map_err(|e| Error::Read {
        path: PathBuf::from("/proc/self/exe"),
        source: e,
    })?;
    let output = Command::new(exe)
        .args(["exec", machine, "--", "cat", "--", &file])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| Error::Read {
            path: Path::new(&file).to_owned(),
            source: e,
        })?;
    if !output.status.success() {
        return Err(bad(format!(
            "reading {file} inside the machine failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
        .into());
    }
    if output.stdout.len() > 1 << 20 {
        return Err(bad(format!("{file} is larger than 1 MiB")).into());
    }
    String::from_utf8(output.stdout).map_err(|_| bad(format!("{file} is not UTF-8")).into())
}

pub fn unexport(
    machine: &str,
    bin: Option<String>,
    app: Option<String>,
    all: bool,
) -> Result<ExitCode, Error> {
    let setting = setting(None, None)?;
    let (name, _) = mm::machine::machine_paths(machine)?;
    let which = match (bin, app, all) {
        (Some(name), _, _) => Which::One {
            kind: Kind::Bin,
            name,
        },
        (None, Some(id), _) => Which::One {
            kind: Kind::App,
            name: format!("mm-{name}-{}", id.strip_suffix(".desktop").unwrap_or(&id)),
        },
        _ => Which::All,
    };
    let removed = mm::export::unexport(&setting, &name, &which)?;
    let mut out = String::new();
    for path in removed {
        out.push_str(&format!("removed {}\n", path.display()));
    }
    print(&out)?;
    Ok(ExitCode::Ok)
}

pub fn commit(machine: &str, tag: Option<&str>, force: bool) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let (record, packed) = mm::commit::commit(&host, machine, tag, force)?;
    print(&format!(
        "{}: layer {} ({} entries, {} whiteouts, {} bytes compressed), manifest {}\n",
        record.name, packed.diff_id, packed.entries, packed.whiteouts, packed.size, record.manifest
    ))?;
    if packed.skipped_sockets > 0 {
        eprintln!(
            "mm: {} socket(s) left out (a tar cannot hold them)",
            packed.skipped_sockets
        );
    }
    Ok(ExitCode::Ok)
}
