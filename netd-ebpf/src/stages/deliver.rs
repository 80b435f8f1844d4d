//! Local delivery: the one stage every path into an endpoint of this host
//! ends in (from another endpoint here, decapsulated from another host,
//! translated by a service or the routing mesh). Ingress policy judges
//! what it hands on, in the exits.

use netd_common::maps::EndpointEntry;

use crate::{maps::NETD_LOCAL_EPS, types::Delivery};

/// Where a packet for `peer` (an entry of NETD_ENDPOINTS with an ifindex)
/// goes, if that veth is still the endpoint the address map says: an
/// ifindex can be reused once a veth is gone, and a stale address entry
/// must not deliver into someone else.
#[inline(always)]
pub fn to_local(peer: &EndpointEntry) -> Option<Delivery> {
    // SAFETY: the map value is read, not kept.
    match unsafe { NETD_LOCAL_EPS.get(&peer.ifindex) } {
        Some(local) if local.network == peer.network && local.mac == peer.mac => Some(Delivery {
            ifindex: peer.ifindex,
            mac: peer.mac,
            gateway_mac: local.host_mac,
        }),
        _ => None,
    }
}
