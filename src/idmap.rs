//! User and group id ranges: `/etc/subuid` and `/etc/subgid`, id maps, mm's root pool.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::{MachineRecords, RecordError};

/// A contiguous range of ids on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

impl IdRange {
    /// One past the last id, in 64 bits so that the top of the id space does not overflow.
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.count)
    }

    /// Whether the two ranges share an id.
    pub fn overlaps(&self, other: &IdRange) -> bool {
        u64::from(self.start) < other.end() && u64::from(other.start) < self.end()
    }

    pub fn contains(&self, other: &IdRange) -> bool {
        other.start >= self.start && other.end() <= self.end()
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} ({} ids)", self.start, self.end() - 1, self.count)
    }
}

/// Where root's machines get their ids: the range systemd-nspawn allocates from, 0x80000 up
/// to 0x6FFF0000, above the ids of ordinary host users and below the ids reserved for
/// systemd's dynamic users and for `nobody`.
pub const ROOT_POOL: IdRange = IdRange {
    start: 0x0008_0000,
    count: 0x6FFF_0000 - 0x0008_0000,
};

/// The ids one machine gets: 0..65535 inside, as on a full Linux system.
pub const MACHINE_IDS: u32 = 65536;

/// One line of a uid or gid map: `inside` in the machine is `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapEntry {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl fmt::Display for IdMapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = |start: u32| u64::from(start) + u64::from(self.count) - 1;
        if self.count == 1 {
            write!(f, "{} → {}", self.inside, self.outside)
        } else {
            write!(
                f,
                "{}-{} → {}-{}",
                self.inside,
                last(self.inside),
                self.outside,
                last(self.outside)
            )
        }
    }
}

/// A rootless map: root inside is the user outside (podman's default); ids 1 and up come
/// from the user's subordinate ranges, in file order, up to 65535 of them.
pub fn rootless_map(own: u32, ranges: &[IdRange]) -> Vec<IdMapEntry> {
    let mut entries = vec![IdMapEntry {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next = 1u32;
    for range in ranges {
        let count = range.count.min(MACHINE_IDS - next);
        if count == 0 {
            break;
        }
        entries.push(IdMapEntry {
            inside: next,
            outside: range.start,
            count,
        });
        next += count;
    }
    entries
}

/// A rootless keep-id map: inside `keep` is the user outside (`own`), and every other
/// inside id below 65536 comes from the subordinate ranges, in file order, skipping
/// `keep`: inside 0..keep-1 are the first subordinate ids, keep+1.. the next ones. The
/// same number of subordinate ids as [`rootless_map`] uses, laid out around the user.
pub fn keep_id_map(own: u32, keep: u32, ranges: &[IdRange]) -> Vec<IdMapEntry> {
    let mut entries = Vec::new();
    let mut next = 0u32;
    let mut kept = false;
    for range in ranges {
        let mut outside = u64::from(range.start);
        let mut left = range.count;
        while left > 0 && next < MACHINE_IDS {
            if next == keep {
                entries.push(IdMapEntry {
                    inside: keep,
                    outside: own,
                    count: 1,
                });
                kept = true;
                next += 1;
                continue;
            }
            let stop = if keep > next {
                keep.min(MACHINE_IDS)
            } else {
                MACHINE_IDS
            };
            let count = left.min(stop - next);
            entries.push(IdMapEntry {
                inside: next,
                outside: outside as u32,
                count,
            });
            next += count;
            outside += u64::from(count);
            left -= count;
        }
    }
    if !kept {
        entries.push(IdMapEntry {
            inside: keep,
            outside: own,
            count: 1,
        });
    }
    entries.sort_by_key(|e| e.inside);
    entries
}

/// Root's keep-id map: the machine's block (inside n is `block.start + n`) with each
/// `(inside, outside)` of `carve` cut out of it, so that those inside ids are the given
/// host ids (the named user, its groups). Carved ids beyond the block are added after it.
pub fn carved_map(block: IdRange, carve: &[(u32, u32)]) -> Vec<IdMapEntry> {
    let mut cuts: Vec<(u32, u32)> = carve.to_vec();
    cuts.sort();
    cuts.dedup_by_key(|c| c.0);
    let mut entries = Vec::new();
    let mut next = 0u32;
    for &(inside, outside) in &cuts {
        if inside < block.count && inside > next {
            entries.push(IdMapEntry {
                inside: next,
                outside: block.start + next,
                count: inside - next,
            });
        }
        entries.push(IdMapEntry {
            inside,
            outside,
            count: 1,
        });
        if inside < block.count {
            next = inside + 1;
        }
    }
    if next < block.count {
        entries.push(IdMapEntry {
            inside: next,
            outside: block.start + next,
            count: block.count - next,
        });
    }
    entries.sort_by_key(|e| e.inside);
    entries
}

/// The host id that inside id `inside` is under `entries`, if it is mapped.
pub fn outside_of(entries: &[IdMapEntry], inside: u32) -> Option<u32> {
    entries.iter().find_map(|e| {
        (inside >= e.inside && u64::from(inside) < u64::from(e.inside) + u64::from(e.count))
            .then(|| e.outside + (inside - e.inside))
    })
}

/// A `/proc/PID/uid_map` or `gid_map` as the kernel prints it (`inside outside count` per
/// line); lines that are not three numbers are left out.
pub fn parse_map(text: &str) -> Vec<IdMapEntry> {
    text.lines()
        .filter_map(|line| {
            let mut n = line.split_whitespace().map(|w| w.parse::<u32>().ok());
            Some(IdMapEntry {
                inside: n.next()??,
                outside: n.next()??,
                count: n.next()??,
            })
        })
        .collect()
}

/// The identity map of the ids a map gives (each extent's inside ids onto themselves): in a
/// user namespace whose parent has those ids, every id keeps its number.
pub fn identity_of(map: &[IdMapEntry]) -> Vec<IdMapEntry> {
    map.iter()
        .map(|e| IdMapEntry {
            inside: e.inside,
            outside: e.inside,
            count: e.count,
        })
        .collect()
}

/// The ranges `/etc/subuid` or `/etc/subgid` grants a user (by name or by uid), in file
/// order. Lines that do not parse are reported, as shadow's tools would skip them.
pub fn parse_subid(text: &str, user: &str, uid: u32) -> (Vec<IdRange>, Vec<String>) {
    let mut ranges = Vec::new();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let parsed = match fields.as_slice() {
            [owner, start, count] => start
                .parse::<u32>()
                .ok()
                .zip(count.parse::<u32>().ok())
                .map(|r| (*owner, r)),
            _ => None,
        };
        match parsed {
            Some((owner, (start, count)))
                if count > 0 && u64::from(start) + u64::from(count) <= 1 << 32 =>
            {
                if owner == user || owner.parse::<u32>() == Ok(uid) {
                    ranges.push(IdRange { start, count });
                }
            }
            _ => problems.push(format!(
                "line {} is not `USER:START:COUNT`: {line}",
                number + 1
            )),
        }
    }
    (ranges, problems)
}

/// Root's id blocks: each machine gets one, recorded in `MACHINES/NAME/ids.json` and kept
/// across restarts; a new block is chosen under `MACHINES/.ids.lock`, so that two machines
/// never share an id however many `mm start` run at once.
pub struct Allocator {
    records: MachineRecords,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("machine id records: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an id record ({why}); remove it to let mm allocate again", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "mm's id pool {ROOT_POOL} is full: every block of {MACHINE_IDS} ids belongs to a machine"
    )]
    Exhausted,
    #[error("{wanted} overlaps machine `{machine}`'s ids, {theirs}")]
    Overlap {
        wanted: IdRange,
        machine: String,
        theirs: IdRange,
    },
}

impl From<RecordError> for AllocError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Io { path, source } => Self::Io { path, source },
            RecordError::Corrupt { path, why } => Self::Corrupt { path, why },
        }
    }
}

impl Allocator {
    pub fn new(machines: impl Into<PathBuf>) -> Self {
        Self {
            records: MachineRecords::new(machines, "ids.json", ".ids.lock"),
        }
    }

    /// The block recorded for `machine`, if it has one.
    pub fn recorded(&self, machine: &str) -> Result<Option<IdRange>, AllocError> {
        Ok(self.records.read(machine)?)
    }

    /// Every other machine's block, by machine name.
    pub fn others(&self, machine: &str) -> Result<Vec<(String, IdRange)>, AllocError> {
        Ok(self.records.others(machine)?)
    }

    fn record(&self, machine: &str, range: IdRange) -> Result<(), AllocError> {
        Ok(self.records.write(machine, &range)?)
    }

    fn lock(&self) -> Result<std::fs::File, AllocError> {
        Ok(self.records.lock()?)
    }

    /// `machine`'s block: the recorded one, or the lowest free block of the pool, recorded.
    pub fn allocate(&self, machine: &str) -> Result<IdRange, AllocError> {
        let _lock = self.lock()?;
        if let Some(range) = self.recorded(machine)? {
            return Ok(range);
        }
        let mut taken: Vec<IdRange> = self.others(machine)?.into_iter().map(|(_, r)| r).collect();
        taken.sort();
        let mut base = u64::from(ROOT_POOL.start);
        for range in &taken {
            if u64::from(range.start) >= base + u64::from(MACHINE_IDS) {
                break;
            }
            if range.end() > base {
                // Skip past it, to the next block boundary of the pool.
                let past = range.end() - u64::from(ROOT_POOL.start);
                base = u64::from(ROOT_POOL.start)
                    + past.div_ceil(u64::from(MACHINE_IDS)) * u64::from(MACHINE_IDS);
            }
        }
        if base + u64::from(MACHINE_IDS) > ROOT_POOL.end() {
            return Err(AllocError::Exhausted);
        }
        let range = IdRange {
            start: base as u32,
            count: MACHINE_IDS,
        };
        self.record(machine, range)?;
        Ok(range)
    }

    /// Records an explicit range for `machine` (`users.range = { base, size }`), refused if
    /// it overlaps another machine's.
    pub fn claim(&self, machine: &str, wanted: IdRange) -> Result<(), AllocError> {
        let _lock = self.lock()?;
        for (other, theirs) in self.others(machine)? {
            if wanted.overlaps(&theirs) {
                return Err(AllocError::Overlap {
                    wanted,
                    machine: other,
                    theirs,
                });
            }
        }
        self.record(machine, wanted)
    }

    /// Forgets `machine`'s block (when the machine is removed).
    pub fn release(&self, machine: &str) -> Result<(), AllocError> {
        let _lock = self.lock()?;
        Ok(self.records.remove(machine)?)
    }
}

/// Which of a process's two id maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    Uid,
    Gid,
}

impl IdKind {
    /// `uid` or `gid`.
    pub fn name(self) -> &'static str {
        match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        }
    }

    fn file(self) -> &'static str {
        match self {
            IdKind::Uid => "uid_map",
            IdKind::Gid => "gid_map",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            IdKind::Uid => "newuidmap",
            IdKind::Gid => "newgidmap",
        }
    }
}

/// Why a uid or gid map could not be written, with which map and which ranges.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("writing {path} ({ranges}): {source}")]
    Write {
        path: String,
        ranges: String,
        source: std::io::Error,
    },
    #[error("running {tool}: {source} (it comes with Debian's `uidmap` package)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} {pid} {ranges} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        pid: u32,
        ranges: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

impl MapError {
    /// The errno the system gave, when mm made the call itself (a tool's is in its words).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Write { source, .. } | Self::Spawn { source, .. } => source.raw_os_error(),
            Self::Tool { .. } => None,
        }
    }
}

/// Writes `entries` as the uid or gid map of process `pid`'s user namespace: into
/// `/proc/PID/uid_map` directly (root), or through the setuid `newuidmap`/`newgidmap`,
/// which check the ranges against `/etc/subuid` and `/etc/subgid` (rootless).
pub fn write_map(
    pid: u32,
    kind: IdKind,
    entries: &[IdMapEntry],
    through_tool: bool,
) -> Result<(), MapError> {
    let ranges: Vec<String> = entries
        .iter()
        .map(|e| format!("{} {} {}", e.inside, e.outside, e.count))
        .collect();
    if !through_tool {
        let path = format!("/proc/{pid}/{}", kind.file());
        let text = ranges.join("\n") + "\n";
        return std::fs::write(&path, text).map_err(|source| MapError::Write {
            path,
            ranges: ranges.join(", "),
            source,
        });
    }
    let tool = kind.tool();
    let mut command = std::process::Command::new(tool);
    command.arg(pid.to_string());
    for e in entries {
        command.args([
            e.inside.to_string(),
            e.outside.to_string(),
            e.count.to_string(),
        ]);
    }
    let output = command
        .output()
        .map_err(|source| MapError::Spawn { tool, source })?;
    if !output.status.success() {
        return Err(MapError::Tool {
            tool,
            pid,
            ranges: ranges.join(" "),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_map_is_read_and_its_identity_keeps_each_id() {
        let map = parse_map("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(
            map,
            [
                IdMapEntry {
                    inside: 0,
                    outside: 1001,
                    count: 1
                },
                IdMapEntry {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                },
            ]
        );
        assert_eq!(
            identity_of(&map),
            [
                IdMapEntry {
                    inside: 0,
                    outside: 0,
                    count: 1
                },
                IdMapEntry {
                    inside: 1,
                    outside: 1,
                    count: 65536
                },
            ]
        );
        assert!(parse_map("garbage\n0 0\n").is_empty());
    }

    /// Malformed /etc/subuid lines (hostile or broken files): each is reported by its line
    /// number and skipped, the good lines still count, and nothing panics.
    #[test]
    fn malformed_subid_lines_are_reported_and_skipped() {
        let bytes: &[u8] = b"alice:abc:65536\nalice:100000\n\xff\xfe:1:2\nalice:4294967295:10\n\
alice:-1:5\nalice:1:99999999999\n:::\nalice:100000:65536:extra\n\0\nalice:200000:10\r\n\
alice: 300000 :5\nalice:400000:0\n";
        // As Host::probe reads it: bytes, lossily.
        let text = String::from_utf8_lossy(bytes);
        let (ranges, problems) = parse_subid(&text, "alice", 1000);
        // `alice:200000:10` (its CR trimmed) is the one good line of hers.
        assert_eq!(
            ranges,
            [IdRange {
                start: 200_000,
                count: 10
            }]
        );
        let lines: Vec<&str> = problems
            .iter()
            .map(|p| p.split(' ').nth(1).unwrap_or_default())
            .collect();
        assert_eq!(
            lines,
            ["1", "2", "4", "5", "6", "7", "8", "9", "11", "12"],
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .all(|p| p.contains("is not `USER:START:COUNT`"))
        );
        // Arbitrary bytes: no panic.
        for seed in 0u32..2000 {
            let junk: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 13) as u8)
                .map(|b| {
                    if b % 7 == 0 {
                        b':'
                    } else if b % 11 == 0 {
                        b'\n'
                    } else {
                        b
                    }
                })
                .collect();
            let _ = parse_subid(&String::from_utf8_lossy(&junk), "alice", 1000);
        }
    }

    #[test]
    fn subid_files_match_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\n1000:300000:1000\nbob:200000:65536\nbroken line\nx:1:0\n";
        let (ranges, problems) = parse_subid(text, "alice", 1000);
        assert_eq!(
            ranges,
            [
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 300000,
                    count: 1000
                }
            ]
        );
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("line 5"));
    }

    #[test]
    fn keep_id_maps_carve_the_user_out_of_the_subordinate_ids() {
        let sub = [IdRange {
            start: 100_000,
            count: 65536,
        }];
        let map = keep_id_map(1000, 1000, &sub);
        assert_eq!(
            map,
            [
                IdMapEntry {
                    inside: 0,
                    outside: 100_000,
                    count: 1000
                },
                IdMapEntry {
                    inside: 1000,
                    outside: 1000,
                    count: 1
                },
                IdMapEntry {
                    inside: 1001,
                    outside: 101_000,
                    count: 64535
                },
            ]
        );
        let mapped: u32 = map.iter().map(|e| e.count).sum();
        assert_eq!(mapped, MACHINE_IDS, "as many ids as the default map");
        assert_eq!(outside_of(&map, 0), Some(100_000));
        assert_eq!(outside_of(&map, 999), Some(100_999));
        assert_eq!(outside_of(&map, 1000), Some(1000));
        assert_eq!(outside_of(&map, 1001), Some(101_000));
        assert_eq!(outside_of(&map, 65535), Some(165_534));
        assert_eq!(outside_of(&map, 65536), None);
        // Split ranges fill in order; a uid above the machine's ids is added alone.
        let split = [
            IdRange {
                start: 200_000,
                count: 10,
            },
            IdRange {
                start: 300_000,
                count: 100,
            },
        ];
        let map = keep_id_map(70_000, 5, &split);
        assert_eq!(outside_of(&map, 4), Some(200_004));
        assert_eq!(outside_of(&map, 5), Some(70_000));
        assert_eq!(outside_of(&map, 6), Some(200_005));
        assert_eq!(outside_of(&map, 10), Some(200_009));
        assert_eq!(outside_of(&map, 11), Some(300_000));
        let high = keep_id_map(70_000, 70_000, &sub);
        assert_eq!(outside_of(&high, 65535), Some(165_535));
        assert_eq!(outside_of(&high, 70_000), Some(70_000));
    }

    #[test]
    fn root_keep_id_maps_carve_users_and_groups_out_of_the_block() {
        let block = IdRange {
            start: ROOT_POOL.start,
            count: MACHINE_IDS,
        };
        let map = carved_map(block, &[(1000, 1000), (27, 27), (100_000, 100_000)]);
        assert_eq!(outside_of(&map, 0), Some(ROOT_POOL.start));
        assert_eq!(outside_of(&map, 26), Some(ROOT_POOL.start + 26));
        assert_eq!(outside_of(&map, 27), Some(27));
        assert_eq!(outside_of(&map, 28), Some(ROOT_POOL.start + 28));
        assert_eq!(outside_of(&map, 1000), Some(1000));
        assert_eq!(outside_of(&map, 1001), Some(ROOT_POOL.start + 1001));
        assert_eq!(outside_of(&map, 65535), Some(ROOT_POOL.start + 65535));
        assert_eq!(outside_of(&map, 100_000), Some(100_000));
        assert_eq!(map.len(), 6);
        let inside: Vec<u32> = map.iter().map(|e| e.inside).collect();
        let mut sorted = inside.clone();
        sorted.sort();
        assert_eq!(inside, sorted, "in inside order, root first");
        // Nothing to carve: the block as one entry.
        assert_eq!(
            carved_map(block, &[]),
            [IdMapEntry {
                inside: 0,
                outside: ROOT_POOL.start,
                count: MACHINE_IDS
            }]
        );
    }

    #[test]
    fn ranges_contain_and_display() {
        let outer = IdRange {
            start: 100,
            count: 100,
        };
        assert!(outer.contains(&IdRange {
            start: 150,
            count: 50
        }));
        assert!(!outer.contains(&IdRange {
            start: 150,
            count: 51
        }));
        assert_eq!(
            IdMapEntry {
                inside: 0,
                outside: 1000,
                count: 1
            }
            .to_string(),
            "0 → 1000"
        );
        assert_eq!(ROOT_POOL.end(), 0x6FFF_0000);
    }

    #[test]
    fn blocks_are_stable_disjoint_and_reused_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Allocator::new(dir.path());
        let web = ids.allocate("web").unwrap();
        assert_eq!(
            web,
            IdRange {
                start: ROOT_POOL.start,
                count: MACHINE_IDS
            }
        );
        assert_eq!(ids.allocate("web").unwrap(), web, "stable across starts");
        let dev = ids.allocate("dev").unwrap();
        assert_eq!(dev.start, web.start + MACHINE_IDS);
        // An explicit range in the middle of the pool, off the block grid.
        let odd = IdRange {
            start: ROOT_POOL.start + 2 * MACHINE_IDS + 10,
            count: 100,
        };
        ids.claim("odd", odd).unwrap();
        let third = ids.allocate("third").unwrap();
        assert_eq!(
            third.start,
            ROOT_POOL.start + 3 * MACHINE_IDS,
            "skips past the explicit range"
        );
        match ids.claim(
            "clash",
            IdRange {
                start: dev.start + 5,
                count: 10,
            },
        ) {
            Err(AllocError::Overlap { machine, .. }) => assert_eq!(machine, "dev"),
            other => panic!("{other:?}"),
        }
        ids.release("dev").unwrap();
        assert_eq!(
            ids.allocate("new").unwrap(),
            dev,
            "a released block is reused"
        );
    }

    #[test]
    fn concurrent_allocations_never_share_ids() {
        let dir = tempfile::tempdir().unwrap();
        let ranges: Vec<IdRange> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let path = dir.path().to_owned();
                    scope.spawn(move || Allocator::new(path).allocate(&format!("m{i}")).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut starts: Vec<u32> = ranges.iter().map(|r| r.start).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 16, "{ranges:?}");
    }

    #[test]
    fn a_damaged_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("web")).unwrap();
        std::fs::write(dir.path().join("web/ids.json"), "{").unwrap();
        let err = Allocator::new(dir.path()).allocate("dev").unwrap_err();
        assert!(err.to_string().contains("web/ids.json"), "{err}");
    }
}
