//! Keys and values of the routing mesh's maps: ports published on every
//! host's uplink, DNATed at XDP to a backend on any host, with the client's
//! own address kept (Calico's "tunnel" mode).
//!
//! - On the ingress host (the one the client connected to), a packet to
//!   `uplink address:published port` finds its [`PublishedKey`] →
//!   [`crate::service::ServiceEntry`] (the service's Maglev table, its
//!   target port); conntrack (`NETD_CT`, `NETD_REV_NAT`) keeps the flow as
//!   for a VIP, with the uplink address in the VIP's place. The next hop
//!   toward the client is kept in [`MeshNeighbour`] by client address, so
//!   replies leave the uplink the way the request came, with no neighbour
//!   lookup (the host stack never saw the client).
//! - A remote backend's host gets the packet in VXLAN marked with
//!   [`crate::vxlan::MESH_INGRESS`] and records in [`TunnelReturn`] (by
//!   the reply's tuple) which host the flow came in on: replies are
//!   encapsulated back to it.

use bytemuck::{Pod, Zeroable};

/// Published (port, protocol) pairs the datapath holds.
pub const MAX_PUBLISHED: u32 = 4096;
/// Clients whose next hop the ingress host remembers (LRU).
pub const MAX_MESH_NEIGHBOURS: u32 = 65536;

/// The Maglev table of a service's ports published with `mode=host` is
/// this bit with the service's index: this host's own backends only.
pub const HOST_MODE_TABLE: u32 = 1 << 31;

/// `NETD_PUBLISHED` key: a published port, on any local uplink address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PublishedKey {
    /// Network byte order.
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// `NETD_MESH_NEIGH` value, by client address: where the ingress host
/// sends replies to that client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MeshNeighbour {
    /// The uplink the client's packets came in on.
    pub ifindex: u32,
    /// The source MAC of the client's last new flow: the client, or the
    /// router in front of it.
    pub next_hop: [u8; 6],
    /// The destination MAC it used: this host's on that uplink.
    pub own: [u8; 6],
}

/// `NETD_MESH_RETURN` value, by the reply's tuple (backend → client) on
/// the backend's host: the host the flow came in on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TunnelReturn {
    /// The ingress host's underlay address (the outer source it came from).
    pub ingress: [u8; 4],
    /// The backend's network, whose VNI the reply goes back in.
    pub network: u32,
    /// `bpf_ktime_get_coarse_ns` of the last packet either way.
    pub last_seen: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are repr(C), Pod (checked by bytemuck), no padding.
    unsafe impl aya::Pod for super::PublishedKey {}
    unsafe impl aya::Pod for super::MeshNeighbour {}
    unsafe impl aya::Pod for super::TunnelReturn {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<PublishedKey>(), 4);
        assert_eq!(size_of::<MeshNeighbour>(), 16);
        assert_eq!(size_of::<TunnelReturn>(), 16);
    }
}
