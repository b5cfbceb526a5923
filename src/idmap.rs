//! User and group id ranges: `/etc/subuid` and `/etc/subgid`, id maps, mm's root pool.

use std::fmt;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
