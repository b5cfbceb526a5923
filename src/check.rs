//! Checks of a definition against the file system: do the paths it names exist?
//!
//! These read and never write. They run in `mm validate` and `mm plan`, and again at start,
//! so that a missing image or bind source is reported at the definition's line.

use std::path::Path;

use crate::definition::{BindSource, Definition, Diagnostic, Diagnostics};
use crate::host::Host;

/// Every path in `def` that must exist, checked; all problems are reported together.
pub fn paths(def: &Definition, host: &Host) -> Result<(), Diagnostics> {
    let mut problems = Vec::new();
    let source = &def.image.source;
    if let Some(path) = source.value.local_path() {
        let want_dir = source.value.wants_directory();
        if let Some(why) = missing(path, want_dir) {
            let kind = if want_dir { "directory" } else { "file" };
            let mut d = def
                .file
                .error_at(
                    &source.span,
                    format!("the image {kind} {} {why}", path.display()),
                )
                .key("image.source");
            if matches!(source.value, crate::definition::ImageSource::Oci { .. }) {
                d = d.help("make an OCI layout with `skopeo copy` or `umoci init`; see README.md for the default image");
            }
            problems.push(d);
        }
    }
    if let crate::definition::ImageSource::Name(name) = &source.value
        && name.qualified().is_none()
        && let Some(dir) = def.file.path().parent()
        && dir.join(&name.name).exists()
    {
        problems.push(
            def.file
                .error_at(
                    &source.span,
                    format!(
                        "`{name}` is a path beside the definition, and without a transport it \
                         names an image in a registry, as in podman"
                    ),
                )
                .key("image.source")
                .help(format!(
                    "write `oci:{name}` for the image layout there, or `docker://{name}` for Docker Hub's"
                )),
        );
    }
    for (i, bind) in def.storage.binds.iter().enumerate() {
        let path = match &bind.value.source {
            BindSource::Path(path) => path.clone(),
            BindSource::Home(rest) => host.home.join(rest),
        };
        if !path.exists() {
            problems.push(bind_missing(def, i, &path));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Diagnostics(problems))
    }
}

fn bind_missing(def: &Definition, index: usize, path: &Path) -> Diagnostic {
    def.file
        .error_at(
            &def.storage.binds[index].span,
            format!("the bind source {} does not exist", path.display()),
        )
        .key(format!("storage.binds[{index}].source"))
        .help(
            "create it first, or fix the path (relative paths start at the definition's directory)",
        )
}

/// Why `path` cannot serve, if it cannot.
fn missing(path: &Path, want_dir: bool) -> Option<&'static str> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Some("cannot be read (permission denied)")
        }
        Err(_) => Some("cannot be read"),
        Ok(meta) if want_dir && !meta.is_dir() => Some("is not a directory"),
        Ok(meta) if !want_dir && meta.is_dir() => Some("is a directory, not a file"),
        Ok(_) => None,
    }
}
