//! `mm image …`: one small function per verb.

use std::path::Path;

use serde::Serialize;

use mm::definition::ImageSource;
use mm::error::{Error, ExitCode};
use mm::host::Host;
use mm::image::check::What;
use mm::image::progress::Progress;
use mm::image::{Digest, ImageRecord, Request, Store};

use super::output::{print, print_json};
use crate::cli::ImageCommand;

pub fn run(command: ImageCommand) -> Result<ExitCode, Error> {
    let host = Host::probe();
    let store = Store::new(&host.dirs.store);
    match command {
        ImageCommand::Import {
            source,
            digest,
            tls_verify,
            authfile,
        } => {
            let source = parse_source(&source)?;
            let request = Request {
                source: &source,
                pin: digest.as_ref(),
                host: &host,
                tls_verify,
                layout: mm::image::Layout::Default,
                authfile: authfile.as_deref(),
            };
            let record = mm::image::import(&request, &store, &Progress::new())?;
            print(&format!("{} {}\n", record.manifest, record.name))?;
        }
        ImageCommand::List { json } => list(&host, &store, json)?,
        ImageCommand::Extract {
            source,
            dir,
            tls_verify,
            authfile,
        } => {
            let source = parse_source(&source)?;
            let request = Request {
                source: &source,
                pin: None,
                host: &host,
                tls_verify,
                layout: mm::image::Layout::Default,
                authfile: authfile.as_deref(),
            };
            let stats = mm::image::extract(&request, &dir, &Progress::new())?;
            print(&format!(
                "{}: {} entries, {} bytes\n",
                dir.display(),
                stats.entries,
                stats.bytes
            ))?;
            for dropped in &stats.dropped_xattrs {
                print(&format!(
                    "not kept: {dropped} (the kernel lets only a privileged user set it)\n"
                ))?;
            }
        }
        ImageCommand::Export { image, target } => {
            let cwd = std::env::current_dir().map_err(|source| mm::image::ImageError::Io {
                path: Path::new("the working directory").to_owned(),
                source,
            })?;
            let target = mm::image::export::Target::parse(&target, &cwd)?;
            // As `mm image list` names it, or as a source relative to here.
            let record = match store.image(&image)? {
                Some(record) => record,
                None => {
                    let name = parse_source(&image)?.to_string();
                    store
                        .image(&name)?
                        .ok_or(mm::image::ImageError::NotInStore(image))?
                }
            };
            let exported = mm::image::export::export(&host, &store, &record, &target)?;
            print(&format!(
                "{} → manifest {} ({} layers, {} packed again from the store)\n",
                record.name,
                exported.manifest,
                exported.layers.len(),
                exported.repacked
            ))?;
        }
        ImageCommand::Rm { names } => {
            for name in names {
                store.remove_image(&name)?;
                print(&format!("removed {name}\n"))?;
            }
        }
        ImageCommand::Check { repair, json } => return check(&host, &store, repair, json),
        ImageCommand::Gc { dry_run } => {
            let unused = store.unused()?;
            if !dry_run && !unused.is_empty() {
                mm::image::remove(&host, unused.clone())?;
            }
            for path in unused {
                let verb = if dry_run { "would remove" } else { "removed" };
                print(&format!("{verb} {}\n", path.display()))?;
            }
        }
    }
    Ok(ExitCode::Ok)
}

/// `mm image check`: the report, and exit 65 when anything is damaged.
fn check(host: &Host, store: &Store, repair: bool, json: bool) -> Result<ExitCode, Error> {
    let in_use = mm::machine::layers_in_use(&host.dirs.runtime);
    let report = mm::image::check(host, store, repair, &in_use)?;
    let code = if report.is_clean() {
        ExitCode::Ok
    } else {
        ExitCode::InvalidDefinition
    };
    if json {
        print_json(&report)?;
        return Ok(code);
    }
    let mut out = String::new();
    for damage in &report.damaged {
        let what = match damage.what {
            What::Layer => "layer",
            What::Blob => "blob",
            What::MissingLayer => "missing layer",
        };
        let users = if damage.images.is_empty() {
            String::new()
        } else {
            format!(" (used by {})", damage.images.join(", "))
        };
        out.push_str(&format!(
            "damaged {what} {} at {}{users}\n",
            damage.digest,
            damage.path.display()
        ));
        for difference in &damage.differences {
            out.push_str(&format!("  {}: {}\n", difference.path, difference.what));
        }
        if damage.removed {
            out.push_str("  removed: the next import of its image unpacks it again\n");
        } else if damage.in_use && repair {
            out.push_str(
                "  not removed: a running machine is made of it; stop it, then repair again\n",
            );
        } else if damage.what == What::MissingLayer {
            out.push_str("  import its image again to bring it back\n");
        }
    }
    for dir in &report.unrecorded {
        out.push_str(&format!(
            "not verifiable: {} has no record of its tree (unpacked by an older mm; `mm image check --repair` does not touch it, `mm image gc` after removing its images does)\n",
            dir.display()
        ));
    }
    out.push_str(&format!(
        "{}: {} layers and {} blobs checked, {} damaged\n",
        if report.is_clean() { "OK" } else { "DAMAGED" },
        report.layers,
        report.blobs,
        report.damaged.len()
    ));
    print(&out)?;
    Ok(code)
}

/// A source on the command line: relative paths start at the working directory.
fn parse_source(text: &str) -> Result<ImageSource, Error> {
    let cwd = std::env::current_dir().map_err(|source| mm::image::ImageError::Io {
        path: Path::new("the working directory").to_owned(),
        source,
    })?;
    ImageSource::parse(text, &cwd).map_err(|e| Error::BadSource {
        text: text.to_owned(),
        why: e.to_string(),
    })
}

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    manifest: &'a Digest,
    layers: usize,
    /// Bytes of the unpacked layers (files' contents).
    size: u64,
    architecture: &'a str,
    /// Machines whose definition names this image as its source.
    machines: Vec<String>,
}

fn list(host: &Host, store: &Store, json: bool) -> Result<(), Error> {
    let images = store.images()?;
    let definitions: Vec<(String, String)> = mm::definition::discovery::list(&host.dirs.search)
        .into_iter()
        .filter_map(|found| {
            let def = mm::definition::Definition::load(&found.path).ok()?;
            Some((def.image.source.value.to_string(), found.name))
        })
        .collect();
    let users = |name: &str| {
        definitions
            .iter()
            .filter(|(source, _)| source == name)
            .map(|(_, m)| m.clone())
            .collect()
    };
    let size = |image: &ImageRecord| {
        image
            .layers
            .iter()
            .filter_map(|l| store.layer_info(&l.diff_id))
            .map(|i| i.stats.bytes)
            .sum::<u64>()
    };
    let listed: Vec<Listed<'_>> = images
        .iter()
        .map(|image| Listed {
            name: &image.name,
            manifest: &image.manifest,
            layers: image.layers.len(),
            size: size(image),
            architecture: &image.config.architecture,
            machines: users(&image.name),
        })
        .collect();
    if json {
        return print_json(&listed);
    }
    if listed.is_empty() {
        return print(&format!("No images in {}.\n", store.root().display()));
    }
    let mut out = format!(
        "{:<14} {:>6} {:>10}  {:<16} {}\n",
        "MANIFEST", "LAYERS", "SIZE", "MACHINES", "NAME"
    );
    for l in &listed {
        let machines = if l.machines.is_empty() {
            "-".to_owned()
        } else {
            l.machines.join(",")
        };
        out.push_str(&format!(
            "{:<14} {:>6} {:>10}  {:<16} {}\n",
            l.manifest.short(),
            l.layers,
            human(l.size),
            machines,
            l.name
        ));
    }
    print(&out)
}

fn human(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.1} TiB")
}
