//! Container Device Interface specs (`/etc/cdi`, `/var/run/cdi`): the NVIDIA one, when
//! present, is the source of truth for the nodes, files and variables `desktop.nvidia`
//! passes. mm reads JSON specs (`nvidia-ctk cdi generate --format=json`); a YAML one is
//! named in the reason rather than skipped.

use std::path::PathBuf;

use serde::Deserialize;

/// The kind NVIDIA's specs declare.
const NVIDIA_KIND: &str = "nvidia.com/gpu";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<MountEdit>,
    #[serde(default)]
    hooks: Vec<Hook>,
}

/// A node of a spec: where it goes inside, and its host path when that differs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: PathBuf,
    pub host_path: Option<PathBuf>,
}

/// A file or directory of a spec, bound from the host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountEdit {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hook {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Vec<String>,
}

/// What a spec's `all` device (or, without one, every device) and its common edits add up
/// to, duplicates left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdiEdits {
    pub device_nodes: Vec<DeviceNode>,
    pub mounts: Vec<MountEdit>,
    pub env: Vec<String>,
    /// Each hook as `HOOK: PATH ARGS…`.
    pub hooks: Vec<String>,
}

impl CdiEdits {
    fn add(&mut self, edits: Edits) {
        for node in edits.device_nodes {
            if !self.device_nodes.contains(&node) {
                self.device_nodes.push(node);
            }
        }
        for mount in edits.mounts {
            if !self.mounts.contains(&mount) {
                self.mounts.push(mount);
            }
        }
        for kv in edits.env {
            if !self.env.contains(&kv) {
                self.env.push(kv);
            }
        }
        for hook in edits.hooks {
            let args = hook.args.get(1..).unwrap_or_default().join(" ");
            self.hooks
                .push(format!("{}: {} {args}", hook.hook_name, hook.path));
        }
    }
}

/// The first NVIDIA spec in `dirs` (in order, files sorted by name), with its edits; or
/// `Ok(None)` when there is none; or why a spec that may be NVIDIA's cannot be used.
pub fn find(dirs: &[PathBuf]) -> Result<Option<(PathBuf, CdiEdits)>, String> {
    let mut yaml = None;
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files {
            match file.extension().and_then(|e| e.to_str()) {
                Some("json") => {}
                Some("yaml" | "yml") => {
                    yaml.get_or_insert(file);
                    continue;
                }
                _ => continue,
            }
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read the CDI spec {}: {e}", file.display()))?;
            let spec: Spec = serde_json::from_str(&text)
                .map_err(|e| format!("the CDI spec {} does not parse: {e}", file.display()))?;
            if spec.kind != NVIDIA_KIND {
                continue;
            }
            return Ok(Some((file, edits(spec))));
        }
    }
    match yaml {
        Some(file) => Err(format!(
            "the CDI spec {} is YAML, which mm does not read; write a JSON one \
             (nvidia-ctk cdi generate --format=json --output=/etc/cdi/nvidia.json)",
            file.display()
        )),
        None => Ok(None),
    }
}

fn edits(spec: Spec) -> CdiEdits {
    let mut all = CdiEdits::default();
    all.add(spec.container_edits);
    let (every, named_all): (Vec<Device>, Vec<Device>) =
        spec.devices.into_iter().partition(|d| d.name != "all");
    for device in if named_all.is_empty() {
        every
    } else {
        named_all
    } {
        all.add(device.container_edits);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{
      "cdiVersion": "0.5.0",
      "kind": "nvidia.com/gpu",
      "devices": [
        {"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}]}},
        {"name": "all", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}, {"path": "/dev/nvidia1"}]}}
      ],
      "containerEdits": {
        "env": ["NVIDIA_VISIBLE_DEVICES=void"],
        "deviceNodes": [{"path": "/dev/nvidiactl"}],
        "mounts": [{"hostPath": "/usr/lib/x86_64-linux-gnu/libcuda.so.535.1", "containerPath": "/usr/lib/x86_64-linux-gnu/libcuda.so.535.1", "options": ["ro", "bind"]}],
        "hooks": [{"hookName": "createContainer", "path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "hook", "update-ldcache"]}]
      }
    }"#;

    #[test]
    fn an_nvidia_spec_gives_its_all_device_and_common_edits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.json"), r#"{"kind": "vendor.com/x"}"#).unwrap();
        std::fs::write(dir.path().join("nvidia.json"), SPEC).unwrap();
        let (file, edits) = find(&[dir.path().to_owned()]).unwrap().unwrap();
        assert_eq!(file, dir.path().join("nvidia.json"));
        let paths: Vec<_> = edits.device_nodes.iter().map(|n| n.path.clone()).collect();
        assert_eq!(
            paths,
            ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia1"].map(PathBuf::from)
        );
        assert_eq!(edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
        assert_eq!(edits.mounts.len(), 1);
        assert_eq!(
            edits.hooks,
            ["createContainer: /usr/bin/nvidia-ctk hook update-ldcache"]
        );
    }

    #[test]
    fn a_yaml_spec_is_named_and_none_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(&[dir.path().to_owned()]), Ok(None));
        std::fs::write(dir.path().join("nvidia.yaml"), "kind: nvidia.com/gpu\n").unwrap();
        let why = find(&[dir.path().to_owned()]).unwrap_err();
        assert!(why.contains("nvidia.yaml is YAML"), "{why}");
    }
}
