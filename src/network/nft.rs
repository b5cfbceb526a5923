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
//! and ten expression kinds cover every rule; `nftnl` 0.9 has no `fib` expression and no way
//! to read rules back with their handles and userdata short of libnftnl's C API through
//! `nftnl-sys`; and raw messages need no C library (libnftnl, libmnl) at build or run time.
//! The bytecode is the one `nft --debug=netlink` prints for the same rules.

mod nfnl;

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

/// A transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

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
    let planned = plan(rules)?;
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
                a.nest(RULE_EXPRESSIONS, |a| {
                    for expr in &rule.exprs {
                        a.nest(LIST_ELEM, |a| expr.encode(a));
                    }
                });
                a.bytes(RULE_USERDATA, &tag);
            });
        }
    })
}

/// Removes the machine's rules; removes the table when no rule of any machine is left.
/// Idempotent (no table → Ok). A rule without an mm tag (someone's own) keeps the table.
pub fn remove(machine: &str) -> Result<(), NftError> {
    change(machine, |listing, batch| {
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

/// One rule: its chain and expressions.
#[derive(Debug, PartialEq)]
struct Rule {
    chain: &'static str,
    exprs: Vec<Expr>,
}

/// The expressions mm's rules use. Loads and compares work on register 1.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Load `len` bytes at `offset` of the network or transport header.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    /// Load a meta key (`oifname`, `l4proto`).
    Meta(u32),
    /// Load a conntrack key (`state`, `status`).
    Ct(u32),
    /// Load `fib daddr type`.
    FibDaddrType,
    /// Register 1 &= mask.
    And(Vec<u8>),
    /// Compare register 1 with the data: equal or not.
    Cmp {
        equal: bool,
        data: Vec<u8>,
    },
    /// Put data in a register (1 or 2).
    Immediate {
        reg: u32,
        data: Vec<u8>,
    },
    Accept,
    Masquerade,
    /// Destination NAT to the address in register 1 and the port in register 2.
    Dnat,
}

impl Expr {
    /// Writes `NFTA_EXPR_NAME` and `NFTA_EXPR_DATA`.
    fn encode(&self, a: &mut Attrs<'_>) {
        let name = match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta(_) => "meta",
            Expr::Ct(_) => "ct",
            Expr::FibDaddrType => "fib",
            Expr::And(_) => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Immediate { .. } | Expr::Accept => "immediate",
            Expr::Masquerade => "masq",
            Expr::Dnat => "nat",
        };
        a.str(EXPR_NAME, name);
        if let Expr::Masquerade = self {
            return;
        }
        a.nest(EXPR_DATA, |a| match self {
            Expr::Payload { base, offset, len } => {
                a.u32(1, REG_1).u32(2, *base).u32(3, *offset).u32(4, *len);
            }
            Expr::Meta(key) | Expr::Ct(key) => {
                a.u32(1, REG_1).u32(2, *key);
            }
            Expr::FibDaddrType => {
                a.u32(1, REG_1)
                    .u32(2, FIB_RESULT_ADDRTYPE)
                    .u32(3, FIB_F_DADDR);
            }
            Expr::And(mask) => {
                a.u32(1, REG_1).u32(2, REG_1).u32(3, mask.len() as u32);
                a.nest(4, |a| value(a, mask))
                    .nest(5, |a| value(a, &vec![0; mask.len()]));
            }
            Expr::Cmp { equal, data } => {
                a.u32(1, REG_1)
                    .u32(2, if *equal { 0 } else { 1 })
                    .nest(3, |a| value(a, data));
            }
            Expr::Immediate { reg, data } => {
                a.u32(1, *reg).nest(2, |a| value(a, data));
            }
            Expr::Accept => {
                a.u32(1, REG_VERDICT).nest(2, |a| {
                    a.nest(DATA_VERDICT, |a| {
                        a.u32(VERDICT_CODE, NF_ACCEPT);
                    });
                });
            }
            Expr::Dnat => {
                a.u32(1, NAT_DNAT)
                    .u32(2, nfnl::FAMILY_IP.into())
                    .u32(3, REG_1)
                    .u32(5, REG_2);
                a.u32(7, NF_NAT_RANGE_PROTO_SPECIFIED);
            }
            Expr::Masquerade => {}
        });
    }
}

fn value(a: &mut Attrs<'_>, data: &[u8]) {
    a.bytes(DATA_VALUE, data);
}

/// Checks a machine's description and turns it into rules, in the order they are added.
fn plan(rules: &MachineRules<'_>) -> Result<Vec<Rule>, NftError> {
    let invalid = |problem| NftError::Invalid {
        machine: rules.machine.into(),
        problem,
    };
    let name = rules.machine;
    if name.is_empty() || name.contains('\0') || TAG.len() + name.len() + 1 > COMMENT_MAX {
        return Err(invalid(
            "a machine name must be 1 to 124 bytes, without NUL",
        ));
    }
    if rules.link.is_empty() || rules.link.len() >= IFNAMSIZ || rules.link.contains('\0') {
        return Err(invalid(
            "an interface name must be 1 to 15 bytes, without NUL",
        ));
    }
    let (net, prefix) = rules.subnet;
    if !(1..=32).contains(&prefix) {
        return Err(invalid("a subnet's prefix length must be 1 to 32"));
    }
    let address = rules.address;
    let mut link = [0u8; IFNAMSIZ];
    link[..rules.link.len()].copy_from_slice(rules.link.as_bytes());
    let accept = |mut exprs: Vec<Expr>| {
        exprs.push(Expr::Accept);
        Rule {
            chain: "forward",
            exprs,
        }
    };

    let mut out = vec![
        Rule {
            chain: "postrouting",
            exprs: [
                ip(SADDR, address, 32, true),
                ip(DADDR, net, prefix, false),
                vec![Expr::Masquerade],
            ]
            .concat(),
        },
        Rule {
            chain: "postrouting",
            exprs: [
                vec![
                    Expr::Meta(META_OIFNAME),
                    Expr::Cmp {
                        equal: true,
                        data: link.to_vec(),
                    },
                ],
                ip(SADDR, Ipv4Addr::new(127, 0, 0, 0), 8, true),
                ip(DADDR, address, 32, true),
                vec![Expr::Masquerade],
            ]
            .concat(),
        },
        accept(ip(SADDR, address, 32, true)),
        accept(
            [
                ip(DADDR, address, 32, true),
                ct_any(CT_STATE, CT_ESTABLISHED | CT_RELATED),
            ]
            .concat(),
        ),
    ];
    for forward in rules.forwards {
        let dport = |port| [l4proto(forward.proto), dport(port)].concat();
        out.push(accept(
            [
                ip(DADDR, forward.address, 32, true),
                dport(forward.port),
                ct_any(CT_STATUS, IPS_DST_NAT),
            ]
            .concat(),
        ));
        let local = match forward.host_address {
            Some(host) => ip(DADDR, host, 32, true),
            None => vec![
                Expr::FibDaddrType,
                Expr::Cmp {
                    equal: true,
                    data: RTN_LOCAL.to_ne_bytes().to_vec(),
                },
            ],
        };
        for chain in ["prerouting", "output"] {
            let mut exprs = [local.as_slice(), &dport(forward.host_port)].concat();
            exprs.push(Expr::Immediate {
                reg: REG_1,
                data: forward.address.octets().to_vec(),
            });
            exprs.push(Expr::Immediate {
                reg: REG_2,
                data: forward.port.to_be_bytes().to_vec(),
            });
            exprs.push(Expr::Dnat);
            out.push(Rule { chain, exprs });
        }
    }
    Ok(out)
}

/// `ip saddr|daddr [!=] ADDRESS/PREFIX`.
fn ip(offset: u32, address: Ipv4Addr, prefix: u8, equal: bool) -> Vec<Expr> {
    let mask = u32::MAX << (32 - u32::from(prefix.clamp(1, 32)));
    let net = u32::from(address) & mask;
    let mut exprs = vec![Expr::Payload {
        base: NETWORK_HEADER,
        offset,
        len: 4,
    }];
    if mask != u32::MAX {
        exprs.push(Expr::And(mask.to_be_bytes().to_vec()));
    }
    exprs.push(Expr::Cmp {
        equal,
        data: net.to_be_bytes().to_vec(),
    });
    exprs
}

/// `meta l4proto tcp|udp`.
fn l4proto(proto: Proto) -> Vec<Expr> {
    let number = match proto {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    };
    vec![
        Expr::Meta(META_L4PROTO),
        Expr::Cmp {
            equal: true,
            data: vec![number],
        },
    ]
}

/// `th dport PORT` (after `l4proto`: tcp and udp keep it at the same offset).
fn dport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: TRANSPORT_HEADER,
            offset: 2,
            len: 2,
        },
        Expr::Cmp {
            equal: true,
            data: port.to_be_bytes().to_vec(),
        },
    ]
}

/// `ct state|status` has any of the bits in `mask`.
fn ct_any(key: u32, mask: u32) -> Vec<Expr> {
    vec![
        Expr::Ct(key),
        Expr::And(mask.to_ne_bytes().to_vec()),
        Expr::Cmp {
            equal: false,
            data: vec![0; 4],
        },
    ]
}

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
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const UDATA_COMMENT: u8 = 0;
const FAMILY_INET: u8 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
const SADDR: u32 = 12;
const DADDR: u32 = 16;
const META_OIFNAME: u32 = 7;
const META_L4PROTO: u32 = 16;
const CT_STATE: u32 = 0;
const CT_STATUS: u32 = 2;
const CT_ESTABLISHED: u32 = 1 << 1;
const CT_RELATED: u32 = 1 << 2;
const IPS_DST_NAT: u32 = 1 << 5;
const FIB_RESULT_ADDRTYPE: u32 = 3;
const FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn machine<'a>(forwards: &'a [Forward]) -> MachineRules<'a> {
        MachineRules {
            machine: "web",
            link: "ve-web",
            address: Ipv4Addr::new(10, 0, 0, 2),
            subnet: (Ipv4Addr::new(10, 0, 0, 1), 24),
            forwards,
        }
    }

    #[test]
    fn a_machine_with_two_forwards_has_ten_rules() {
        let forwards = [
            Forward {
                proto: Proto::Tcp,
                host_address: None,
                host_port: 8080,
                address: Ipv4Addr::new(10, 0, 0, 2),
                port: 80,
            },
            Forward {
                proto: Proto::Udp,
                host_address: Some(Ipv4Addr::new(192, 0, 2, 1)),
                host_port: 53,
                address: Ipv4Addr::new(10, 0, 0, 2),
                port: 5353,
            },
        ];
        let rules = plan(&machine(&forwards)).map_err(|e| e.to_string());
        let chains: Vec<_> = rules.iter().flatten().map(|r| r.chain).collect();
        assert_eq!(
            chains,
            [
                "postrouting",
                "postrouting",
                "forward",
                "forward",
                "forward",
                "prerouting",
                "output",
                "forward",
                "prerouting",
                "output",
            ]
        );
    }

    #[test]
    fn the_subnet_is_masked() {
        let exprs = ip(DADDR, Ipv4Addr::new(10, 0, 0, 1), 24, false);
        assert_eq!(exprs[1], Expr::And(vec![255, 255, 255, 0]));
        assert_eq!(
            exprs[2],
            Expr::Cmp {
                equal: false,
                data: vec![10, 0, 0, 0]
            }
        );
        assert_eq!(ip(SADDR, Ipv4Addr::new(10, 0, 0, 2), 32, true).len(), 2);
    }

    #[test]
    fn bad_descriptions_are_refused_before_the_kernel() {
        let long = "x".repeat(125);
        for (name, link, prefix) in [
            ("", "ve-a", 24),
            (long.as_str(), "ve-a", 24),
            ("a", "", 24),
            ("a", "ve-0123456789abc", 24),
            ("a", "ve-a", 0),
            ("a", "ve-a", 33),
        ] {
            let rules = MachineRules {
                machine: name,
                link,
                subnet: (Ipv4Addr::new(10, 0, 0, 0), prefix),
                ..machine(&[])
            };
            assert!(
                matches!(plan(&rules), Err(NftError::Invalid { .. })),
                "{name} {link} {prefix}"
            );
        }
        let longest = "x".repeat(124);
        assert!(
            plan(&MachineRules {
                machine: &longest,
                ..machine(&[])
            })
            .is_ok()
        );
    }

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
