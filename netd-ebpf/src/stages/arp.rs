//! Answers the ARP requests of containers, as a bridge's neighbours would:
//! the gateway is the endpoint's host veth, another endpoint of the same
//! network is itself. With no bridge, nothing else would answer.

use netd_common::{maps::LocalEndpointEntry, parse::Arp};

use crate::{
    maps::{NETD_ENDPOINTS, NETD_NETWORKS, NETD_VIPS},
    types::{ArpAnswer, EndpointAction, Outcome},
};

const ARP_REQUEST: u16 = 1;

#[inline(always)]
pub fn answer(me: &LocalEndpointEntry, arp: &Arp, at: u16) -> Outcome<EndpointAction> {
    let reply = |ip: [u8; 4], mac: [u8; 6]| {
        Outcome::act(EndpointAction::arp_reply(ArpAnswer {
            ip,
            mac,
            asker_ip: arp.sender_ip,
            asker_mac: arp.sender_mac,
            at,
        }))
    };
    if arp.op != ARP_REQUEST || arp.target_ip == me.ipv4 {
        // Replies, announcements and duplicate-address probes need no answer.
        return Outcome::pass();
    }
    // SAFETY: map values are read, not kept.
    if let Some(network) = unsafe { NETD_NETWORKS.get(&me.network) } {
        if network.gateway == arp.target_ip {
            return reply(arp.target_ip, me.host_mac);
        }
    }
    // A VIP of this network is at the gateway: its packets must come to
    // the host veth, where the service stage translates them.
    // SAFETY: as above.
    if let Some(vip) = unsafe { NETD_VIPS.get(&arp.target_ip) } {
        if vip.network == me.network {
            return reply(arp.target_ip, me.host_mac);
        }
    }
    // SAFETY: as above.
    match unsafe { NETD_ENDPOINTS.get(&arp.target_ip) } {
        Some(peer) if peer.network == me.network => reply(arp.target_ip, peer.mac),
        // Another network's address is not on this link: no answer, as on a real LAN.
        _ => Outcome::pass(),
    }
}
