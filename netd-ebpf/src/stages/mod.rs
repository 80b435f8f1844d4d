//! The stages: each looks at a packet (and the maps) and decides, in an
//! `Outcome` or a plain value. A stage never changes the packet (that is
//! `crate::rewrite`'s) and never counts or emits (the exits do). It may
//! note an event for its entry point to emit, and it writes only the
//! state maps it owns, each named in its module's docs:
//!
//! | stage | writes |
//! |---|---|
//! | `service` | `NETD_CT`, `NETD_REV_NAT`, `NETD_AFFINITY` |
//! | `policy` | `NETD_POLICY_CT`, `NETD_RULE_HITS` |
//! | `mesh` | `NETD_MESH_NEIGH`, `NETD_MESH_RETURN` |
//! | `masquerade` | `NETD_SNAT`, `NETD_SNAT_REV` |
//! | every other | nothing |

pub mod arp;
pub mod clock;
pub mod decap;
pub mod deliver;
pub mod encap;
pub mod forward;
pub mod icmp_quote;
pub mod masquerade;
pub mod mesh;
pub mod policy;
pub mod service;
