//! mm's firewall: the nftables table `ip mm`, holding each machine's NAT (masquerade out,
//! DNAT of port forwards) and forward rules, written to the kernel over nfnetlink without an
//! `nft` child process, in one atomic batch per change.
//!
//! The table has four base chains, created with it: `prerouting` (nat, dstnat -100),
//! `output` (nat, -100), `postrouting` (nat, srcnat 100) and `forward` (filter, 0, policy
//! accept). Each rule carries its machine's name as a comment `mm:NAME` in its userdata, in
//! the format nft uses (so `nft list ruleset` shows it), and that tag alone is how another
//! process finds a machine's rules again. Every call works on the network namespace of the
//! calling thread.
//!
//! Races: a change lists the table, then sends one batch that carries the ruleset
//! generation read before the listing; the kernel refuses the batch (`ERESTART`) if anyone
//! changed the ruleset in between, and the change starts again from the listing.
//!
//! Why raw nfnetlink messages (as systemd's `firewall-util-nft.c` does) and not the `nftnl`
//! crate: the messages needed are few (table, chain, rule, delete, generation, two dumps),
//! and ten expression kinds cover every rule; `nftnl` 0.9.4 has no `fib` expression, cannot
//! parse the rules the kernel lists (handles, comments), has no batch generation check and
//! leaves the socket to `mnl`; and raw messages need no C library (libnftnl, libmnl) at build
//! or run time.
//! Files: `nfnl` (the wire format and socket), `rules` (a machine's rules as expressions).

mod nfnl;
mod rules;

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use nfnl::{Attrs, Batch, Conn, F_APPEND, F_CREATE, F_REQUEST};

const TABLE: &str = "mm";
const DELETE_TABLE: &str = "delete table ip mm";
const TAG: &str = "mm:";
/// nft's longest comment, with its NUL.
const COMMENT_MAX: usize = 128;
const IFNAMSIZ: usize = 16;
/// How often a change starts again after the ruleset changed under it.
const TRIES: u32 = 8;

pub use super::addr::Proto;

/// A port forward: connections to `host_port` on the host (on `host_address`, or on any
/// local address) go to `address:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub host_address: Option<Ipv4Addr>,
    pub host_port: u16,
    pub address: Ipv4Addr,
    pub port: u16,
}

/// What one machine's rules are made from.
#[derive(Debug, Clone)]
pub struct MachineRules<'a> {
    /// The machine's name: the rules' tag.
    pub machine: &'a str,
    /// The host-side interface of the machine's link (`ve-NAME`, `vz-ZONE`).
    pub link: &'a str,
    /// The machine's address.
    pub address: Ipv4Addr,
    /// The subnet of its link, as address and prefix length.
    pub subnet: (Ipv4Addr, u8),
    pub forwards: &'a [Forward],
}

/// What failed, for whom, and the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The machine's description cannot become rules; nothing was sent.
    #[error("firewall rules of machine {machine:?}: {problem}")]
    Invalid {
        machine: String,
        problem: &'static str,
    },
    /// The netfilter netlink socket could not be opened, written or read.
    #[error("firewall: netfilter netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused a change; none of it was applied.
    #[error("firewall: cannot {what} for machine {machine:?}: {source}")]
    Refused {
        what: String,
        machine: String,
        source: io::Error,
    },
    /// The kernel refused to list objects.
    #[error("firewall: cannot list {what}: {source}")]
    List {
        what: &'static str,
        source: io::Error,
    },
    /// Other processes kept changing the ruleset between listing and change.
    #[error(
        "firewall: the ruleset changed under each of {TRIES} tries to change machine {machine:?}'s rules"
    )]
    Busy { machine: String },
}

/// Creates the table and chains if missing, removes any rules already tagged for this
/// machine, adds its rules — one batch.
pub fn add(rules: &MachineRules<'_>) -> Result<(), NftError> {
    let planned = rules::plan(rules)?;
    let tag = tag(rules.machine);
    change(rules.machine, |listing, batch| {
        // Chains already as wanted are left alone: the kernel takes milliseconds to
        // update a base chain, even to the same settings.
        let missing: Vec<_> = CHAINS
            .iter()
            .filter(|want| !listing.chains.iter().any(|have| want.is(have)))
            .collect();
        if !missing.is_empty() {
            batch.push(
                nfnl::NEWTABLE,
                F_REQUEST | F_CREATE,
                "create table ip mm".into(),
                |a| {
                    a.str(TABLE_NAME, TABLE);
                },
            );
        }
        for chain in missing {
            let what = format!("create chain {} in table ip mm", chain.name);
            batch.push(nfnl::NEWCHAIN, F_REQUEST | F_CREATE, what, |a| {
                a.str(CHAIN_TABLE, TABLE).str(CHAIN_NAME, chain.name);
                a.nest(CHAIN_HOOK, |a| {
                    a.u32(HOOK_HOOKNUM, chain.hook)
                        .u32(HOOK_PRIORITY, chain.priority as u32);
                });
                a.u32(CHAIN_POLICY, NF_ACCEPT).str(CHAIN_TYPE, chain.kind);
            });
        }
        for rule in listing
            .rules
            .iter()
            .filter(|r| r.machine.as_deref() == Some(rules.machine))
        {
            delete_rule(batch, rule);
        }
        for rule in &planned {
            let what = format!("add rule to chain {}", rule.chain);
            batch.push(nfnl::NEWRULE, F_REQUEST | F_CREATE | F_APPEND, what, |a| {
                a.str(RULE_TABLE, TABLE).str(RULE_CHAIN, rule.chain);
                a.nest(RULE_EXPRESSIONS, |a| rule.write_expressions(a));
                a.bytes(RULE_USERDATA, &tag);
            });
        }
    })
}

/// Removes the machine's rules; removes the table when no rule of any machine is left.
/// Idempotent (no table → Ok). A rule without an mm tag (someone's own) keeps the table.
pub fn remove(machine: &str) -> Result<(), NftError> {
    change(machine, |listing, batch| {
        // No table: nothing to send (the kernel's refusal of a batch costs a grace period,
        // 7 to 25 ms, and every start cleans up first).
        if listing.chains.is_empty() && listing.rules.is_empty() {
            return;
        }
        let (mine, others): (Vec<_>, Vec<_>) = listing
            .rules
            .iter()
            .partition(|r| r.machine.as_deref() == Some(machine));
        if others.is_empty() {
            batch.push(nfnl::DELTABLE, F_REQUEST, DELETE_TABLE.into(), |a| {
                a.str(TABLE_NAME, TABLE);
            });
        } else {
            mine.into_iter().for_each(|rule| delete_rule(batch, rule));
        }
    })
}

/// Machines that have rules in mm's table now (for cleanup after a crash).
pub fn machines() -> Result<Vec<String>, NftError> {
    let mut conn = Conn::open().map_err(NftError::Socket)?;
    let names: BTreeSet<String> = list_rules(&mut conn)?
        .into_iter()
        .filter_map(|r| r.machine)
        .collect();
    Ok(names.into_iter().collect())
}

/// Base chains of OTHER tables on the forward hook whose policy is drop (docker, firewalld
/// set that): e.g. "table ip filter, chain FORWARD". Empty when none. Only the families
/// that see IPv4 forwarding (`ip`, `inet`) are looked at.
pub fn dropping_forward_chains() -> Result<Vec<String>, NftError> {
    let mut conn = Conn::open().map_err(NftError::Socket)?;
    let found = list_chains(&mut conn, nfnl::FAMILY_ANY)?
        .into_iter()
        .filter(|c| c.hook == Some(NF_INET_FORWARD) && c.policy == Some(NF_DROP))
        .filter(|c| c.family == FAMILY_INET || (c.family == nfnl::FAMILY_IP && c.table != TABLE))
        .map(|c| {
            let family = if c.family == FAMILY_INET {
                "inet"
            } else {
                "ip"
            };
            format!("table {family} {}, chain {}", c.table, c.name)
        })
        .collect();
    Ok(found)
}

/// What a change is decided from: mm's table as the kernel has it.
struct Listing {
    rules: Vec<Listed>,
    /// The chains of table ip mm.
    chains: Vec<ListedChain>,
}

/// Runs one change: lists mm's table, lets `build` fill a batch from the listing, sends it;
/// starts again when the ruleset changed in between.
fn change(machine: &str, mut build: impl FnMut(&Listing, &mut Batch)) -> Result<(), NftError> {
    let mut conn = Conn::open().map_err(NftError::Socket)?;
    for _ in 0..TRIES {
        let generation = conn.generation().map_err(|source| NftError::List {
            what: "the ruleset's generation",
            source,
        })?;
        let mut chains = list_chains(&mut conn, nfnl::FAMILY_IP)?;
        chains.retain(|c| c.table == TABLE);
        let listing = Listing {
            rules: list_rules(&mut conn)?,
            chains,
        };
        let mut batch = Batch::new(generation);
        build(&listing, &mut batch);
        if batch.is_empty() {
            return Ok(());
        }
        match conn.commit(batch).map_err(NftError::Socket)? {
            Ok(()) => return Ok(()),
            Err(refusal) if refusal.errno == libc::ERESTART && refusal.what.is_none() => continue,
            // Deleting a table that is not there: nothing to remove.
            Err(refusal)
                if refusal.errno == libc::ENOENT
                    && refusal.what.as_deref() == Some(DELETE_TABLE) =>
            {
                return Ok(());
            }
            Err(refusal) => {
                return Err(NftError::Refused {
                    what: refusal.what.unwrap_or_else(|| "apply a batch".into()),
                    machine: machine.into(),
                    source: io::Error::from_raw_os_error(refusal.errno),
                });
            }
        }
    }
    Err(NftError::Busy {
        machine: machine.into(),
    })
}

/// A chain as listed by the kernel.
struct ListedChain {
    family: u8,
    table: String,
    name: String,
    /// Base chains: hook number and priority.
    hook: Option<u32>,
    priority: Option<i32>,
    kind: Option<String>,
    policy: Option<u32>,
}

fn list_chains(conn: &mut Conn, family: u8) -> Result<Vec<ListedChain>, NftError> {
    let mut chains = Vec::new();
    conn.dump(
        nfnl::GETCHAIN,
        family,
        |_| {},
        |family, attrs| {
            let mut chain = ListedChain {
                family,
                table: String::new(),
                name: String::new(),
                hook: None,
                priority: None,
                kind: None,
                policy: None,
            };
            let number = |value| nfnl::be_number(value).and_then(|n| u32::try_from(n).ok());
            for (kind, value) in attrs {
                match kind {
                    CHAIN_TABLE => chain.table = nfnl::string(value),
                    CHAIN_NAME => chain.name = nfnl::string(value),
                    CHAIN_POLICY => chain.policy = number(value),
                    CHAIN_TYPE => chain.kind = Some(nfnl::string(value)),
                    CHAIN_HOOK => {
                        for (kind, value) in nfnl::AttrIter(value) {
                            match kind {
                                HOOK_HOOKNUM => chain.hook = number(value),
                                HOOK_PRIORITY => chain.priority = number(value).map(|p| p as i32),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            chains.push(chain);
        },
    )
    .map_err(|source| NftError::List {
        what: "chains",
        source,
    })?;
    Ok(chains)
}

/// A rule of mm's table as listed by the kernel.
struct Listed {
    chain: String,
    handle: u64,
    /// From its tag; `None` for a rule without one.
    machine: Option<String>,
}

fn list_rules(conn: &mut Conn) -> Result<Vec<Listed>, NftError> {
    let mut rules = Vec::new();
    let table = |a: &mut Attrs<'_>| {
        a.str(RULE_TABLE, TABLE);
    };
    conn.dump(nfnl::GETRULE, nfnl::FAMILY_IP, table, |_, attrs| {
        let mut rule = Listed {
            chain: String::new(),
            handle: 0,
            machine: None,
        };
        let mut in_table = false;
        for (kind, value) in attrs {
            match kind {
                RULE_TABLE => in_table = nfnl::string(value) == TABLE,
                RULE_CHAIN => rule.chain = nfnl::string(value),
                RULE_HANDLE => rule.handle = nfnl::be_number(value).unwrap_or(0),
                RULE_USERDATA => rule.machine = machine_of(value),
                _ => {}
            }
        }
        if in_table && rule.handle != 0 {
            rules.push(rule);
        }
    })
    .map_err(|source| NftError::List {
        what: "the rules of table ip mm",
        source,
    })?;
    Ok(rules)
}

fn delete_rule(batch: &mut Batch, rule: &Listed) {
    let what = format!("delete rule {} from chain {}", rule.handle, rule.chain);
    batch.push(nfnl::DELRULE, F_REQUEST, what, |a| {
        a.str(RULE_TABLE, TABLE)
            .str(RULE_CHAIN, &rule.chain)
            .u64(RULE_HANDLE, rule.handle);
    });
}

/// A rule's userdata: one comment TLV (type 0, length, "mm:NAME\0"), as libnftnl writes it.
fn tag(machine: &str) -> Vec<u8> {
    let comment = format!("{TAG}{machine}\0");
    let mut data = vec![UDATA_COMMENT, comment.len() as u8];
    data.extend_from_slice(comment.as_bytes());
    data
}

/// The machine a rule's userdata names, if it has an mm tag.
fn machine_of(mut userdata: &[u8]) -> Option<String> {
    while let [kind, len, rest @ ..] = userdata {
        let value = rest.get(..usize::from(*len))?;
        if *kind == UDATA_COMMENT {
            let comment = nfnl::string(value);
            return comment.strip_prefix(TAG).map(str::to_owned);
        }
        userdata = &rest[value.len()..];
    }
    None
}

/// A base chain of mm's table.
struct BaseChain {
    name: &'static str,
    kind: &'static str,
    hook: u32,
    priority: i32,
}

impl BaseChain {
    /// Whether the listed chain of table ip mm is this one, with its settings.
    fn is(&self, have: &ListedChain) -> bool {
        have.name == self.name
            && have.kind.as_deref() == Some(self.kind)
            && have.hook == Some(self.hook)
            && have.priority == Some(self.priority)
            && have.policy == Some(NF_ACCEPT)
    }
}

const CHAINS: [BaseChain; 4] = [
    BaseChain {
        name: "prerouting",
        kind: "nat",
        hook: NF_INET_PRE_ROUTING,
        priority: -100,
    },
    BaseChain {
        name: "output",
        kind: "nat",
        hook: NF_INET_LOCAL_OUT,
        priority: -100,
    },
    BaseChain {
        name: "postrouting",
        kind: "nat",
        hook: NF_INET_POST_ROUTING,
        priority: 100,
    },
    BaseChain {
        name: "forward",
        kind: "filter",
        hook: NF_INET_FORWARD,
        priority: 0,
    },
];

// Attribute types and values from <linux/netfilter/nf_tables.h> and friends.
const TABLE_NAME: u16 = 1;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_HANDLE: u16 = 3;
const RULE_EXPRESSIONS: u16 = 4;
const RULE_USERDATA: u16 = 7;
const UDATA_COMMENT: u8 = 0;
const FAMILY_INET: u8 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        assert_eq!(tag("web"), b"\x00\x07mm:web\x00");
        assert_eq!(machine_of(&tag("web")).as_deref(), Some("web"));
        assert_eq!(
            machine_of(b"\x01\x02ab\x00\x07mm:web\x00").as_deref(),
            Some("web")
        );
        assert_eq!(machine_of(b"\x00\x04other"), None);
        assert_eq!(machine_of(b"\x00\x09mm:"), None);
    }
}
