//! Where an IPv4 packet from a container goes: straight into another
//! endpoint of its network on this host, in VXLAN to one on another host,
//! nowhere if that endpoint is on another network, else to the host stack.

use netd_common::{counters::DropReason, maps::LocalEndpointEntry};

use super::{deliver, encap};
use crate::{
    maps::NETD_ENDPOINTS,
    types::{EndpointAction, Outcome},
};

#[inline(always)]
pub fn ipv4(me: &LocalEndpointEntry, dst: [u8; 4]) -> Outcome<EndpointAction> {
    // SAFETY: map values are read, not kept.
    let Some(peer) = (unsafe { NETD_ENDPOINTS.get(&dst) }).copied() else {
        return Outcome::pass();
    };
    if peer.network != me.network {
        return Outcome::drop(DropReason::Isolation);
    }
    if peer.ifindex == 0 {
        return encap::to(&peer, me.mac);
    }
    // A stale entry: the host stack has the last word, as before netd.
    match deliver::to_local_judged(&peer) {
        Some((delivery, policy_free)) => Outcome::act(EndpointAction {
            receiver_policy_free: policy_free,
            ..EndpointAction::deliver(delivery)
        }),
        None => Outcome::pass(),
    }
}
