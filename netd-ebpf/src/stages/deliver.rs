//! Local delivery: the one stage every path into an endpoint of this host
//! ends in (from another endpoint here, decapsulated from another host,
//! translated by a service or the routing mesh). Ingress policy judges
//! what it hands on, in the exits.

use netd_common::maps::{EndpointEntry, LOCAL_NO_POLICY};

use crate::{maps::NETD_LOCAL_EPS, types::Delivery};

/// Where a packet for `peer` (an entry of NETD_ENDPOINTS with an ifindex)
/// goes, if that veth is still the endpoint the address map says: an
/// ifindex can be reused once a veth is gone, and a stale address entry
/// must not deliver into someone else.
#[inline(always)]
pub fn to_local(peer: &EndpointEntry) -> Option<Delivery> {
    to_local_judged(peer).map(|(to, _)| to)
}

/// [`to_local`], and whether the endpoint is known to have no policy
/// (its entry's `LOCAL_NO_POLICY`).
#[inline(always)]
pub fn to_local_judged(peer: &EndpointEntry) -> Option<(Delivery, bool)> {
    // SAFETY: the map value is read, not kept.
    match unsafe { NETD_LOCAL_EPS.get(&peer.ifindex) } {
        Some(local) if local.network == peer.network && local.mac == peer.mac => Some((
            Delivery {
                ifindex: peer.ifindex,
                mac: peer.mac,
                gateway_mac: local.host_mac,
            },
            local.flags & LOCAL_NO_POLICY != 0,
        )),
        _ => None,
    }
}
