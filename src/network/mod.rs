//! Machine networking: links, addresses, firewall rules.

pub mod rootless;
