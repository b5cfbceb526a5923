//! The checker run after every kill, once the operation's next command has run: nothing
//! of the test's machines is left (mounts, cgroups, network, locks, temporary files,
//! processes), `mm status`/`mm list` say stopped, and every layer in the store is complete
//! and matches its diff_id. Each finding is a sentence; all are returned, none stops it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use super::procs;

/// What the checker looks at for one test.
pub struct Scene<'a> {
    /// The test's MM_ROOT.
    pub root: &'a Path,
    /// The test's machines.
    pub names: &'a [String],
    /// The network namespace the test's machines run in, when it made one.
    pub netns: Option<&'a str>,
    /// `mm ARGS` as the test runs it.
    pub mm: &'a dyn Fn(&[&str]) -> Command,
}

/// What the checker has verified already: layers by (path, inode), blobs by path.
#[derive(Default)]
pub struct Verified {
    layers: HashSet<(PathBuf, u64)>,
    /// A store blob's path → the sha256 of its tar stream (decompressed).
    blob_diff_ids: HashMap<PathBuf, Option<String>>,
    /// Known sources: diff_id hex → a blob holding that layer.
    pub sources: BTreeMap<String, PathBuf>,
}

impl Verified {
    pub fn with_sources(layouts: &[&Path]) -> Self {
        let mut verified = Self::default();
        for layout in layouts {
            verified
                .sources
                .extend(super::fixture::layout_layers(layout));
        }
        verified
    }
}

/// Every check; the violations found.
pub fn settled(scene: &Scene, verified: &mut Verified) -> Vec<String> {
    let mut found = Vec::new();
    found.extend(mounts(scene));
    found.extend(cgroups(scene));
    found.extend(network(scene));
    found.extend(locks_and_temporaries(scene));
    found.extend(orphans(scene));
    found.extend(status(scene));
    found.extend(layers(scene, verified));
    found
}

fn mounts(scene: &Scene) -> Vec<String> {
    let needle = scene.root.display().to_string();
    crate::support::mounts_anywhere(&needle)
        .into_iter()
        .map(|m| format!("a mount is left: {m}"))
        .collect()
}

fn cgroups(scene: &Scene) -> Vec<String> {
    let mut found = Vec::new();
    for name in scene.names {
        for dir in crate::support::cgroup_dirs(&format!("machine.slice/mm-{name}.scope")) {
            if dir.exists() {
                found.push(format!("a cgroup directory is left: {}", dir.display()));
            }
        }
    }
    found
}

/// A command's JSON output; `ok_codes` are the exit codes besides 0 that still answer
/// (`mm status` exits 3 for a stopped machine, as `systemctl status` does).
fn json_with(mut command: Command, ok_codes: &[i32]) -> Result<serde_json::Value, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    let answered = out.status.success() || out.status.code().is_some_and(|c| ok_codes.contains(&c));
    if !answered {
        return Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{command:?}: {e}"))
}

fn json_of(command: Command) -> Result<serde_json::Value, String> {
    json_with(command, &[])
}

/// The links, addresses and routes of the test's namespace beyond its own loopback and
/// uplink, and nft rules tagged with one of its machines.
fn network(scene: &Scene) -> Vec<String> {
    let Some(ns) = scene.netns else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let ip = |what: &str| {
        let mut command = Command::new("ip");
        command.args(["-n", ns, "-j", what, "show"]);
        json_of(command)
    };
    match ip("link") {
        Ok(links) => {
            for link in links.as_array().into_iter().flatten() {
                let name = link["ifname"].as_str().unwrap_or_default();
                if !matches!(name, "lo" | "uplink" | "outside0") {
                    found.push(format!("a network link is left: {name}"));
                }
            }
        }
        Err(e) => found.push(e),
    }
    match ip("addr") {
        Ok(links) => {
            for link in links.as_array().into_iter().flatten() {
                let name = link["ifname"].as_str().unwrap_or_default();
                for addr in link["addr_info"].as_array().into_iter().flatten() {
                    let local = addr["local"].as_str().unwrap_or_default();
                    let ours = matches!(local, "127.0.0.1" | "::1" | super::UPLINK_ADDRESS);
                    if !ours && addr["family"] == "inet" {
                        found.push(format!("an address is left: {local} on {name}"));
                    }
                }
            }
        }
        Err(e) => found.push(e),
    }
    match ip("route") {
        Ok(routes) => {
            for route in routes.as_array().into_iter().flatten() {
                let dev = route["dev"].as_str().unwrap_or_default();
                if !matches!(dev, "lo" | "uplink" | "outside0") {
                    found.push(format!("a route is left: {route}"));
                }
            }
        }
        Err(e) => found.push(e),
    }
    let mut nft = Command::new("ip");
    nft.args(["netns", "exec", ns, "nft", "-j", "list", "ruleset"]);
    match json_of(nft) {
        Ok(ruleset) => {
            for item in ruleset["nftables"].as_array().into_iter().flatten() {
                let Some(rule) = item.get("rule") else {
                    continue;
                };
                let comment = rule["comment"].as_str().unwrap_or_default();
                if scene.names.iter().any(|n| comment == format!("mm:{n}")) {
                    found.push(format!("an nft rule is left: {rule}"));
                }
            }
        }
        Err(e) => found.push(e),
    }
    found
}

/// Walks the test's MM_ROOT (not into layers or writable layers): every lock must be
/// free, and no temporary file or directory may be left.
fn locks_and_temporaries(scene: &Scene) -> Vec<String> {
    let mut found = Vec::new();
    let store_tmp = scene.root.join("images/tmp");
    if let Ok(entries) = std::fs::read_dir(&store_tmp) {
        for entry in entries.flatten() {
            found.push(format!(
                "a temporary entry is left in the store: {}",
                entry.path().display()
            ));
        }
    }
    let mut stack = vec![(scene.root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            // tempfile's own names, and write_atomically's `.NAME.PID.RANDOM.tmp`.
            if name.starts_with(".tmp") || (name.starts_with('.') && name.ends_with(".tmp")) {
                found.push(format!("a temporary file is left: {}", path.display()));
            }
            if kind.is_dir() {
                let layer = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
                let skip = layer || matches!(name.as_str(), "upper" | "work" | "tmp");
                if !skip && depth < 6 {
                    stack.push((path, depth + 1));
                }
            } else if kind.is_file()
                && (name == "lock" || name.ends_with(".lock"))
                && let Some(why) = held(&path)
            {
                found.push(why);
            }
        }
    }
    found
}

/// Whether someone holds `path`'s flock: tried without waiting.
fn held(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: flock on a descriptor this function owns.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    (!taken).then(|| format!("a lock is held: {}", path.display()))
}

/// Live processes of the test. A zombie is not one: it has released everything but its
/// pid, and is its parent's to reap (a machine's PID 1 killed with its supervisor is
/// reparented to the host's PID 1, which this VM's init reaps only now and then). A
/// process still ending is not one either: a supervisor lets go of its lock (what `mm
/// stop` waits for) just before it exits, so each is given 2 s to be gone.
fn orphans(scene: &Scene) -> Vec<String> {
    let live = || -> Vec<procs::Proc> {
        procs::ours(scene.root, scene.names)
            .into_iter()
            .filter(|p| p.state != 'Z')
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut left = live();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = live();
    }
    left.into_iter()
        .map(|p| {
            format!(
                "a process is left: {} {} ({}), parent {}",
                p.pid, p.comm, p.cmdline, p.ppid
            )
        })
        .collect()
}

/// `mm status NAME --json` and `mm list --json` say stopped for every machine.
fn status(scene: &Scene) -> Vec<String> {
    let mut found = Vec::new();
    for name in scene.names {
        match json_with((scene.mm)(&["status", name, "--json"]), &[3]) {
            Ok(status) if status["state"] == "stopped" => {}
            Ok(status) => found.push(format!(
                "mm status {name} says {status} with nothing running"
            )),
            Err(e) => found.push(format!("mm status {name}: {e}")),
        }
    }
    if !scene.names.is_empty() {
        match json_of((scene.mm)(&["list", "--json"])) {
            Ok(list) => {
                for machine in list.as_array().into_iter().flatten() {
                    if machine["state"] != "stopped" {
                        found.push(format!("mm list says {machine} with nothing running"));
                    }
                }
            }
            Err(e) => found.push(format!("mm list: {e}")),
        }
    }
    found
}

/// Every layer directory in the store has its record and is the tar stream of a blob
/// whose sha256 is its name: each entry's kind, size and bytes compared.
fn layers(scene: &Scene, verified: &mut Verified) -> Vec<String> {
    let mut found = Vec::new();
    let dir = scene.root.join("images/layers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return found;
    };
    let mut dirs = Vec::new();
    let mut records = HashSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_suffix(".json") {
            records.insert(hex.to_owned());
        } else if entry.file_type().is_ok_and(|k| k.is_dir()) {
            dirs.push((name, entry.path()));
        } else {
            found.push(format!("a stray file in the store's layers: {name}"));
        }
    }
    for (hex, path) in dirs {
        if !records.contains(&hex) {
            found.push(format!("layer {hex} has no {hex}.json"));
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if verified.layers.contains(&(path.clone(), meta.ino())) {
            continue;
        }
        let Some(blob) = blob_of(scene, verified, &hex) else {
            found.push(format!(
                "layer {hex}: no blob in the store or the sources has it"
            ));
            continue;
        };
        match compare(&blob, &path, &hex) {
            Ok(()) => {
                verified.layers.insert((path, meta.ino()));
            }
            Err(e) => found.push(format!("layer {hex} is not its blob's: {e}")),
        }
    }
    found
}

/// A blob whose tar stream has the sha256 `hex`: a source's, or one of the store's
/// (hashing each store blob once).
fn blob_of(scene: &Scene, verified: &mut Verified, hex: &str) -> Option<PathBuf> {
    if let Some(path) = verified.sources.get(hex) {
        return Some(path.clone());
    }
    let blobs = scene.root.join("images/blobs/sha256");
    for entry in std::fs::read_dir(&blobs).ok()?.flatten() {
        let path = entry.path();
        let diff_id = verified
            .blob_diff_ids
            .entry(path.clone())
            .or_insert_with(|| tar_digest(&path).ok());
        if diff_id.as_deref() == Some(hex) {
            return Some(path);
        }
    }
    None
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The blob as a tar stream (gzip or plain).
fn open_tar(blob: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut file = std::fs::File::open(blob)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = std::fs::File::open(blob)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(file)))
    } else if n >= 1 && magic[0] == b'{' {
        Err(std::io::Error::other("a JSON document"))
    } else {
        Ok(Box::new(file))
    }
}

/// The sha256 of a blob's tar stream.
fn tar_digest(blob: &Path) -> std::io::Result<String> {
    let mut reader = open_tar(blob)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex_of(&hasher.finalize()))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The layer directory `dir` holds what the blob's tar stream (whose sha256 must be
/// `hex`) says: each entry's kind, a file's size and bytes, a symlink's target.
fn compare(blob: &Path, dir: &Path, hex: &str) -> Result<(), String> {
    let reader = open_tar(blob).map_err(|e| format!("{}: {e}", blob.display()))?;
    let mut hashing = Hashing {
        inner: reader,
        hasher: Sha256::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            let name = entry.path().map_err(|e| e.to_string())?.into_owned();
            let name = name.strip_prefix("./").unwrap_or(&name).to_path_buf();
            if name.as_os_str().is_empty()
                || name
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
            {
                continue;
            }
            let path = dir.join(&name);
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| format!("{} is missing: {e}", name.display()))?;
            let kind = entry.header().entry_type();
            let ok = match kind {
                tar::EntryType::Directory => meta.is_dir(),
                tar::EntryType::Symlink => {
                    let target = entry.link_name().ok().flatten().map(|t| t.into_owned());
                    meta.file_type().is_symlink() && std::fs::read_link(&path).ok() == target
                }
                tar::EntryType::Link => meta.is_file(),
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    meta.is_file() && meta.len() == entry.size() && same_bytes(&mut entry, &path)
                }
                // Devices are made as root and skipped rootless (the kernel forbids
                // them): either way nothing to compare.
                _ => true,
            };
            if !ok {
                return Err(format!("{} differs ({kind:?})", name.display()));
            }
        }
    }
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| e.to_string())?;
    let digest = hex_of(&hashing.hasher.finalize());
    if digest != hex {
        return Err(format!("its blob's tar stream is sha256:{digest}"));
    }
    Ok(())
}

fn same_bytes(entry: &mut impl Read, path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let Ok(n) = entry.read(&mut a) else {
            return false;
        };
        if n == 0 {
            return file.read(&mut b).is_ok_and(|m| m == 0);
        }
        if file.read_exact(&mut b[..n]).is_err() || a[..n] != b[..n] {
            return false;
        }
    }
}
