//! Where an IPv4 packet from a container goes: straight into another
//! endpoint of its network on this host, nowhere if that endpoint is on
//! another network, else to the host stack.

use netd_common::{counters::DropReason, maps::LocalEndpointEntry};

use crate::{
    maps::{NETD_ENDPOINTS, NETD_LOCAL_EPS},
    outcome::Outcome,
};

#[inline(always)]
pub fn ipv4(me: &LocalEndpointEntry, dst: [u8; 4]) -> Outcome {
    // SAFETY: map values are read, not kept.
    let Some(peer) = (unsafe { NETD_ENDPOINTS.get(&dst) }).copied() else {
        return Outcome::Pass;
    };
    if peer.network != me.network {
        return Outcome::Drop(DropReason::Isolation);
    }
    if peer.ifindex == 0 {
        return crate::overlay::encap_to(&peer, me.mac);
    }
    ingress(peer.ifindex, peer.network, peer.mac)
}

/// The destination's side: it must still be the endpoint the address map
/// says (an ifindex can be reused once a veth is gone).
#[inline(always)]
fn ingress(ifindex: u32, network: u32, mac: [u8; 6]) -> Outcome {
    // SAFETY: as above.
    match unsafe { NETD_LOCAL_EPS.get(&ifindex) } {
        Some(dst) if dst.network == network && dst.mac == mac => Outcome::Deliver { ifindex, mac },
        _ => Outcome::Pass,
    }
}
