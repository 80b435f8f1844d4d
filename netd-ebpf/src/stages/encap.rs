//! VXLAN between hosts, the decisions: what wraps a packet to an endpoint
//! on another host, and whether a packet from the underlay is VXLAN for
//! this host. The headers are written by `crate::rewrite::encap`.

use netd_common::{
    counters::DropReason,
    maps::{EndpointEntry, VXLAN_PORT},
    parse::{Headers, L3, L4},
};

use crate::{
    maps::{NETD_HOSTS, NETD_NETWORKS, NETD_OVERLAY},
    types::{Encap, EndpointAction, Outcome},
};

/// A packet from `src_mac` to `peer`, an endpoint of the same network on
/// another host.
#[inline(always)]
pub fn to(peer: &EndpointEntry, src_mac: [u8; 6]) -> Outcome<EndpointAction> {
    match encap_for(peer, src_mac) {
        Some(encap) => Outcome::act(EndpointAction::encap(encap)),
        None => Outcome::drop(DropReason::EncapFailed),
    }
}

/// The VXLAN wrapping of a frame from `inner_src` to `peer` (on another
/// host) out of the configured uplink; none when its network has no VNI,
/// its host is unknown or this host has no underlay address.
#[inline(always)]
pub fn encap_for(peer: &EndpointEntry, inner_src: [u8; 6]) -> Option<Encap> {
    // SAFETY: map values are copied out.
    let (Some(network), Some(host), Some(config)) = (
        unsafe { NETD_NETWORKS.get(&peer.network) }.copied(),
        unsafe { NETD_HOSTS.get(&u32::from(peer.host)) }.copied(),
        NETD_OVERLAY.get(0).copied(),
    ) else {
        return None;
    };
    if network.vni == 0 || config.underlay == [0; 4] {
        return None;
    }
    Some(Encap {
        vni: network.vni,
        local: config.underlay,
        remote: host.underlay,
        uplink: config.uplink_ifindex,
        inner_dst: peer.mac,
        inner_src,
    })
}

/// Whether a packet from the underlay is VXLAN to this host's underlay
/// address: the uplink program hands it to the decap program, which
/// checks the rest.
#[inline(always)]
pub fn is_vxlan_for_us(h: &Headers) -> bool {
    let (L3::Ipv4(ip), L4::Udp { dst_port, .. }) = (h.l3, h.l4) else {
        return false;
    };
    u16::from_be_bytes(dst_port) == VXLAN_PORT
        && matches!(NETD_OVERLAY.get(0), Some(c) if c.underlay != [0; 4] && c.underlay == ip.dst)
}
