//! `linux.devices`: device nodes a container gets.
//!
//! mm gives every container a user namespace, and a user namespace cannot make device
//! nodes (`mknod` of one needs `CAP_MKNOD` in the host's), so each node is the host's node
//! at the same path, bound, as runc and crun do in a user namespace. Its mode and owner
//! are therefore the host node's (`fileMode`, `uid` and `gid` are the engine's copy of
//! them: podman and containerd fill them in from the host's node). [`nodes`] checks the
//! fields, purely; [`check_host`], at `mm oci create`, that the host's node at each path
//! is the device asked for.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::fields::FieldError;
use super::spec;

/// A device node of `linux.devices`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub block: bool,
    pub major: u64,
    pub minor: u64,
}

impl Node {
    fn describe(&self) -> String {
        let kind = if self.block { "block" } else { "character" };
        format!("{kind} device {}:{}", self.major, self.minor)
    }
}

/// `linux.devices`, checked: each problem a [`FieldError`] at its path.
pub fn nodes(devices: &[spec::Device], errors: &mut Vec<FieldError>) -> Vec<Node> {
    let mut all = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let at = |field: &str| format!("linux.devices[{i}].{field}");
        let before = errors.len();
        let mut error = |field: &str, why: String| {
            errors.push(FieldError {
                path: at(field),
                why,
            })
        };
        let path = &device.path;
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") || path == "/" {
            error(
                "path",
                format!("`{path}` is not an absolute path without `..`"),
            );
        }
        let block = match device.kind.as_str() {
            "c" | "u" => false,
            "b" => true,
            "p" => {
                error(
                    "type",
                    "a FIFO in linux.devices is not supported by mm yet (make it in the \
                     image, or with mkfifo in the container)"
                        .to_owned(),
                );
                continue;
            }
            other => {
                error(
                    "type",
                    format!("`{other}` is not a device type (c, u, b or p)"),
                );
                continue;
            }
        };
        let mut number = |field: &str, value: Option<i64>| -> u64 {
            match value.map(u64::try_from) {
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    error(field, "is below 0".to_owned());
                    0
                }
                None => {
                    error(field, "a character or block device needs it".to_owned());
                    0
                }
            }
        };
        let major = number("major", device.major);
        let minor = number("minor", device.minor);
        if errors.len() == before {
            all.push(Node {
                path: path.clone(),
                block,
                major,
                minor,
            });
        }
    }
    all
}

/// That the host has, at each node's path, that very device (a node mm can bind).
pub fn check_host(nodes: &[Node]) -> Result<(), Vec<FieldError>> {
    let errors: Vec<FieldError> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| {
            host_mismatch(node).map(|why| FieldError {
                path: format!("linux.devices[{i}]"),
                why: format!(
                    "{}: {why} (a user namespace cannot make device nodes, so mm binds the \
                     host's node at the same path)",
                    node.path
                ),
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Why the host's node at `node.path` is not `node`, if it is not.
fn host_mismatch(node: &Node) -> Option<String> {
    let meta = match std::fs::symlink_metadata(Path::new(&node.path)) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("the host has no {} there: {e}", node.describe())),
    };
    let kind = meta.file_type();
    let is = if kind.is_block_device() {
        Some(true)
    } else if kind.is_char_device() {
        Some(false)
    } else {
        None
    };
    let rdev = meta.rdev();
    let (major, minor) = (
        u64::from(rustix::fs::major(rdev)),
        u64::from(rustix::fs::minor(rdev)),
    );
    match is {
        None => Some(format!(
            "the host's {} is not a device node, and the {} was asked for",
            node.path,
            node.describe()
        )),
        Some(block) if block != node.block || major != node.major || minor != node.minor => {
            let host = Node {
                path: node.path.clone(),
                block,
                major,
                minor,
            };
            Some(format!(
                "the host's node there is the {}, not the {} asked for",
                host.describe(),
                node.describe()
            ))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(path: &str, kind: &str, major: Option<i64>, minor: Option<i64>) -> spec::Device {
        spec::Device {
            path: path.to_owned(),
            kind: kind.to_owned(),
            major,
            minor,
            file_mode: Some(0o666),
            uid: Some(0),
            gid: Some(0),
        }
    }

    #[test]
    fn fields_are_checked_at_their_paths() {
        let mut errors = Vec::new();
        let nodes = nodes(
            &[
                device("/dev/fuse", "c", Some(10), Some(229)),
                device("dev/x", "c", Some(1), Some(3)),
                device("/dev/f", "p", None, None),
                device("/dev/b", "b", None, Some(-1)),
            ],
            &mut errors,
        );
        assert_eq!(
            nodes,
            [Node {
                path: "/dev/fuse".to_owned(),
                block: false,
                major: 10,
                minor: 229
            }]
        );
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "linux.devices[1].path",
                "linux.devices[2].type",
                "linux.devices[3].major",
                "linux.devices[3].minor",
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn the_hosts_node_must_be_the_device_asked_for() {
        let node = |path: &str, block, major, minor| Node {
            path: path.to_owned(),
            block,
            major,
            minor,
        };
        assert_eq!(check_host(&[node("/dev/null", false, 1, 3)]), Ok(()));
        let errors = check_host(&[
            node("/dev/null", false, 1, 5),
            node("/dev/null", true, 1, 3),
            node("/etc/hostname", false, 1, 3),
            node("/dev/mm-no-such-node", false, 1, 3),
        ])
        .unwrap_err();
        let whys: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            whys[0].starts_with("linux.devices[0]: /dev/null: the host's node there is the character device 1:3, not the character device 1:5 asked for"),
            "{whys:?}"
        );
        assert!(whys[1].contains("not the block device 1:3"), "{whys:?}");
        assert!(whys[2].contains("is not a device node"), "{whys:?}");
        assert!(
            whys[3].contains("the host has no character device 1:3 there"),
            "{whys:?}"
        );
    }
}
