//! Answers the ARP requests of containers, as a bridge's neighbours would:
//! the gateway is the endpoint's host veth, another endpoint of the same
//! network is itself. With no bridge, nothing else would answer.

use netd_common::{maps::LocalEndpointEntry, parse::Arp};

use crate::{
    maps::{NETD_ENDPOINTS, NETD_NETWORKS},
    outcome::{EndpointAction, Outcome},
};

const ARP_REQUEST: u16 = 1;

#[inline(always)]
pub fn answer(me: &LocalEndpointEntry, arp: &Arp) -> Outcome<EndpointAction> {
    if arp.op != ARP_REQUEST || arp.target_ip == me.ipv4 {
        // Replies, announcements and duplicate-address probes need no answer.
        return Outcome::Pass;
    }
    // SAFETY: map values are read, not kept.
    if let Some(network) = unsafe { NETD_NETWORKS.get(&me.network) } {
        if network.gateway == arp.target_ip {
            return Outcome::Act(EndpointAction::ArpReply {
                ip: arp.target_ip,
                mac: me.host_mac,
            });
        }
    }
    // SAFETY: as above.
    match unsafe { NETD_ENDPOINTS.get(&arp.target_ip) } {
        Some(peer) if peer.network == me.network => Outcome::Act(EndpointAction::ArpReply {
            ip: arp.target_ip,
            mac: peer.mac,
        }),
        // Another network's address is not on this link: no answer, as on a real LAN.
        _ => Outcome::Pass,
    }
}
