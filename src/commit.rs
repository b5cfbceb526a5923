//! `mm commit MACHINE`: a stopped machine's writable layer, as the machine sees it, becomes
//! a new image of the store (`mm:NAME`), through [`crate::image::commit`].
//!
//! The machine must be stopped, and stays so while its layer is read: mm holds its
//! runtime lock meanwhile, so `mm start` waits or fails rather than changing the files
//! under the packer (podman pauses a running container instead; mm does not freeze).

use crate::definition::discovery;
use crate::error::Error;
use crate::host::Host;
use crate::image::commit::{Commit, STORE_TRANSPORT, commit as commit_layer};
use crate::image::pack::Packed;
use crate::image::{ImageError, ImageRecord, Store};
use crate::machine::{compile, machine_paths, reconciled};
use crate::plan::{IdMapping, Layers, Upper};
use crate::runtime::RuntimeError;

/// Commits `machine`'s writable layer as `mm:TAG` (default: the machine's name).
pub fn commit(
    host: &Host,
    machine: &str,
    tag: Option<&str>,
    force: bool,
) -> Result<(ImageRecord, Packed), Error> {
    let path = discovery::resolve(machine, &host.dirs.search)?;
    let (name, paths) = machine_paths(&path.to_string_lossy())?;
    reconciled(&paths)?;
    let cannot = |why: String| ImageError::Commit {
        machine: name.clone(),
        why,
    };
    // Held until the layer is in the store: no supervisor can start meanwhile.
    let _lock = if paths.lock().exists() {
        match crate::state::lock(&paths.lock(), false) {
            Ok(lock) => Some(lock),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                return Err(cannot(format!(
                    "it is running; stop it first (mm stop {name}): mm reads a writable layer \
                     only while nothing changes it"
                ))
                .into());
            }
            Err(e) => return Err(RuntimeError::io(&paths.lock(), e).into()),
        }
    } else {
        None
    };
    let plan = compile(&path, host)?;
    let upper = match &plan.root.upper {
        Upper::Persistent { upper, .. } => upper.clone(),
        Upper::Volatile { .. } => {
            return Err(cannot(
                "its writable layer is volatile (storage.persistent = false): it went when the \
                 machine stopped"
                    .to_owned(),
            )
            .into());
        }
        Upper::InPlace { .. } => {
            return Err(cannot(
                "it is an OCI container: its root is its bundle's directory".to_owned(),
            )
            .into());
        }
        Upper::ReadOnly => {
            return Err(
                cannot("it has no writable layer (its root is read-only)".to_owned()).into(),
            );
        }
    };
    if !upper.is_dir() {
        return Err(cannot(format!(
            "it has no writable layer yet ({} is missing): start it once",
            upper.display()
        ))
        .into());
    }
    let (uids, gids) = match (&plan.ids.uid, &plan.ids.gid) {
        (IdMapping::Map { entries: u }, IdMapping::Map { entries: g }) => (u.clone(), g.clone()),
        _ => {
            return Err(cannot("it has no id block yet: start it once".to_owned()).into());
        }
    };
    if !matches!(plan.image.layers, Layers::Stored { .. }) {
        return Err(cannot(format!(
            "its image {} is not a set of layers in the store",
            plan.image.source
        ))
        .into());
    }
    let store = Store::new(&host.dirs.store);
    let source = plan.image.source.to_string();
    let base = store
        .image(&source)?
        .ok_or_else(|| ImageError::NotInStore(source.clone()))?;
    let tag = tag.unwrap_or(&name);
    let image = crate::definition::ImageSource::parse(&format!("{STORE_TRANSPORT}:{tag}"), &upper)
        .map_err(|e| Error::BadSource {
            text: tag.to_owned(),
            why: e.to_string(),
        })?;
    let request = Commit {
        base: &base,
        upper: &upper,
        map: (&uids, &gids),
        name: image.to_string(),
        force,
        created_by: format!("mm commit {name} (on {source})"),
    };
    Ok(commit_layer(host, &store, &request)?)
}
