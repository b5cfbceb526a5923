//! The rules of one machine, as nf_tables expressions: `plan` checks a machine's
//! description and turns it into rules, and each expression writes itself as netlink
//! attributes. The expressions are those nft compiles the same rules to (`nft
//! --debug=netlink`), except that prefixes are always matched with a mask.

use std::net::Ipv4Addr;

use super::nfnl::Attrs;
use super::{COMMENT_MAX, IFNAMSIZ, MachineRules, NF_ACCEPT, NftError, Proto, TAG, nfnl};

/// One rule: its chain and expressions.
#[derive(Debug, PartialEq)]
pub(super) struct Rule {
    pub chain: &'static str,
    exprs: Vec<Expr>,
}

impl Rule {
    /// Writes the expressions, each as an `NFTA_LIST_ELEM`.
    pub fn write_expressions(&self, a: &mut Attrs<'_>) {
        for expr in &self.exprs {
            a.nest(LIST_ELEM, |a| expr.encode(a));
        }
    }
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
        // The numbers are each expression's NFTA_* attributes (nf_tables.h), named beside.
        a.nest(EXPR_DATA, |a| match self {
            Expr::Payload { base, offset, len } => {
                // PAYLOAD_DREG, _BASE, _OFFSET, _LEN
                a.u32(1, REG_1).u32(2, *base).u32(3, *offset).u32(4, *len);
            }
            Expr::Meta(key) | Expr::Ct(key) => {
                // META_DREG, _KEY; CT_DREG, _KEY
                a.u32(1, REG_1).u32(2, *key);
            }
            Expr::FibDaddrType => {
                // FIB_DREG, _RESULT, _FLAGS
                a.u32(1, REG_1)
                    .u32(2, FIB_RESULT_ADDRTYPE)
                    .u32(3, FIB_F_DADDR);
            }
            Expr::And(mask) => {
                // BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
                a.u32(1, REG_1).u32(2, REG_1).u32(3, mask.len() as u32);
                a.nest(4, |a| value(a, mask))
                    .nest(5, |a| value(a, &vec![0; mask.len()]));
            }
            Expr::Cmp { equal, data } => {
                // CMP_SREG, _OP (NFT_CMP_EQ, _NEQ), _DATA
                a.u32(1, REG_1)
                    .u32(2, if *equal { 0 } else { 1 })
                    .nest(3, |a| value(a, data));
            }
            Expr::Immediate { reg, data } => {
                // IMMEDIATE_DREG, _DATA
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
                // NAT_TYPE, _FAMILY, _REG_ADDR_MIN, _REG_PROTO_MIN, _FLAGS
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
pub(super) fn plan(rules: &MachineRules<'_>) -> Result<Vec<Rule>, NftError> {
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
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
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
    use crate::network::nft::Forward;

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
}
