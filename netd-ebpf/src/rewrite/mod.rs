//! The writer: the only code that changes a packet's bytes. The exits call
//! it with what the stages decided, once every decision is made.
//!
//! - `nat`: address translations (DNAT, SNAT, reverse NAT), TC and XDP;
//! - `quote`: the quote of an ICMP error about a translated flow;
//! - `encap`: VXLAN's outer headers, TC and XDP;
//! - `ethernet`: a frame's MAC addresses;
//! - `ip`: a forwarded packet's TTL;
//! - `answers`: a packet turned into netd's answer to it (ARP reply, TCP
//!   RST, ICMP port unreachable, ICMP fragmentation needed).

pub mod answers;
pub mod encap;
pub mod ethernet;
pub mod ip;
pub mod nat;
pub mod quote;
