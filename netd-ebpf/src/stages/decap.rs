//! VXLAN from the underlay, the decision: whether it is netd's (to this
//! host's underlay address, from a host of the cluster, with a VNI of one
//! of its networks), whether its inner packet may come from where it says,
//! and where that packet goes: a local endpoint, or back out of the
//! uplink to a client of the routing mesh. Replies get their reverse NAT
//! and ICMP errors their quote's, decided here and written by the writer.

use netd_common::{
    counters::DropReason,
    icmp,
    nat::Nat,
    parse::{parse, Frame, Headers, L3, L4},
    vxlan,
};

use super::{deliver, encap, icmp_quote::quoted_flow, mesh, service};
use crate::{
    frame::PacketFrame,
    maps::{NETD_ENDPOINTS, NETD_HOST_BY_IP, NETD_VNIS},
    types::{flow_tuple, Outcome, QuoteNat, Target, UplinkAction},
};

/// What XDP does with a packet from the underlay: pass when it is not
/// VXLAN for this host (the host stack's business).
#[inline(always)]
pub fn decide(frame: &PacketFrame, h: &Headers) -> Outcome<UplinkAction> {
    let L3::Ipv4(ip) = h.l3 else {
        return Outcome::pass();
    };
    if !encap::is_vxlan_for_us(h) {
        return Outcome::pass();
    }
    // VXLAN from a sender that is no host of the cluster, or (below) with
    // a VNI of no network here, is not netd's: a kernel VXLAN device or
    // another overlay on this host may own it.
    // SAFETY: map values are read, not kept.
    let Some(sender) = unsafe { NETD_HOST_BY_IP.get(&ip.src) }.copied() else {
        return Outcome::pass();
    };
    let vxlan_at = h.l4_offset as usize + 8;
    let Some(vxlan) = frame.read::<8>(vxlan_at) else {
        return Outcome::drop(DropReason::Malformed);
    };
    if vxlan[0] & vxlan::FLAG_VNI == 0 {
        return Outcome::drop(DropReason::Malformed);
    }
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    // SAFETY: as above.
    let Some(network) = (unsafe { NETD_VNIS.get(&vni) }).copied() else {
        return Outcome::pass();
    };
    let inner = vxlan_at + 8;
    let Some(inner_frame) = frame.from(inner) else {
        return Outcome::drop(DropReason::Malformed);
    };
    let inner_headers = match parse(&inner_frame) {
        Ok(h) => h,
        Err(e) => return Outcome::drop(e.drop_reason()),
    };
    let L3::Ipv4(inner_ip) = inner_headers.l3 else {
        return Outcome::drop(DropReason::UnknownL3);
    };
    let (mut mesh_ingress, mut tcp_flags) = ([0; 4], 0);
    if vxlan[vxlan::MESH_MARK_AT] & vxlan::MESH_INGRESS != 0 {
        // A client of the routing mesh, let in by the host it connected
        // to: its source is its own, and its replies go back that way
        // (`mesh::remember_ingress`, as it is delivered).
        let Some((_, flags)) = flow_tuple(&inner_ip, &inner_headers.l4) else {
            return Outcome::drop(DropReason::Malformed);
        };
        (mesh_ingress, tcp_flags) = (ip.src, flags);
    } else {
        // The inner source must be an endpoint of that network on the host
        // that sent it: a host can speak only for its own endpoints.
        // SAFETY: as above.
        match unsafe { NETD_ENDPOINTS.get(&inner_ip.src) } {
            Some(e) if u32::from(e.host) == sender && e.ifindex == 0 && e.network == network => {}
            _ => return Outcome::drop(DropReason::Spoofed),
        }
    }
    // A backend's reply to a client of this host: back to VIP:port; a
    // backend's ICMP error about such a flow: its quote, likewise.
    let (nat, quote, client) = match inner_headers.l4 {
        L4::Icmp { kind, .. } if icmp::is_error(kind) => (
            Nat::NONE,
            quoted_flow(
                &inner_frame,
                inner_headers.l3_offset,
                inner_headers.l4_offset,
                inner_ip.src,
            )
            .unwrap_or_default(),
            None,
        ),
        _ => match service::reply(&inner_ip, &inner_headers.l4) {
            Some((nat, client)) => (nat, QuoteNat::default(), Some(client)),
            None => (Nat::NONE, QuoteNat::default(), None),
        },
    };
    // SAFETY: as above.
    let Some(peer) = (unsafe { NETD_ENDPOINTS.get(&inner_ip.dst) }).copied() else {
        // A remote backend's reply to a client of the routing mesh that
        // connected here: back out of the uplink.
        return match client.and_then(|c| mesh::egress_to(&c)) {
            Some(into) => Outcome::act(UplinkAction {
                strip: inner as u32,
                into,
                nat,
                inner: Target::of(&inner_headers),
                to_client: true,
                ..UplinkAction::default()
            }),
            None => Outcome::drop(DropReason::NotHere),
        };
    };
    if peer.ifindex == 0 || peer.network != network {
        return Outcome::drop(DropReason::NotHere);
    }
    match deliver::to_local(&peer) {
        Some(into) => Outcome::act(UplinkAction {
            strip: inner as u32,
            into,
            nat,
            inner: Target::of(&inner_headers),
            quote,
            mesh_ingress,
            // Networks are numbered below NETD_NETWORKS' capacity, far
            // below 65536.
            network: network as u16,
            tcp_flags,
            ..UplinkAction::default()
        }),
        None => Outcome::drop(DropReason::NotHere),
    }
}
