//! Machine networking: links, addresses, firewall rules.

pub mod addr;
pub mod ipam;
pub mod netlink;
pub mod nft;
pub mod ports;
pub mod rootless;
