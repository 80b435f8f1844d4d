//! VXLAN between hosts: the decision to encapsulate (TC, packets from a
//! container to an endpoint on another host), the checks of what arrives
//! from the underlay (XDP), and the header writing, done last.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
    },
    helpers::generated::bpf_get_prandom_u32,
    programs::TcContext,
};
use netd_common::{
    counters::DropReason,
    icmp,
    maps::{EndpointEntry, VXLAN_OVERHEAD, VXLAN_PORT},
    nat::Nat,
    parse::{parse, Frame, Headers, L3, L4},
    vxlan,
};

use crate::{
    deliver,
    frame::PacketFrame,
    icmp_quote::{quoted_flow, QuoteNat},
    maps::{NETD_ENDPOINTS, NETD_HOSTS, NETD_HOST_BY_IP, NETD_NETWORKS, NETD_OVERLAY, NETD_VNIS},
    mesh,
    nat::Target,
    outcome::{EndpointAction, Outcome, UplinkAction},
    service,
};

const INNER_L2: u64 = 14;
/// BPF_F_ADJ_ROOM_ENCAP_L2(len): the inner MAC header length, for GSO.
const ENCAP_L2_FLAGS: u64 = (INNER_L2 & 0xff) << 56;

/// Everything the encapsulation writes.
#[derive(Clone, Copy, Default)]
pub struct Encap {
    pub vni: u32,
    pub local: [u8; 4],
    pub remote: [u8; 4],
    pub uplink: u32,
    pub inner_dst: [u8; 6],
    pub inner_src: [u8; 6],
}

/// A packet from `src_mac` to `peer`, an endpoint of the same network on
/// another host.
#[inline(always)]
pub fn encap_to(peer: &EndpointEntry, src_mac: [u8; 6]) -> Outcome<EndpointAction> {
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

/// What XDP does with a packet from the underlay: pass when it is not
/// VXLAN for this host (the host stack's business).
#[inline(always)]
pub fn decap_decision(frame: &PacketFrame, h: &Headers) -> Outcome<UplinkAction> {
    let L3::Ipv4(ip) = h.l3 else {
        return Outcome::pass();
    };
    if !is_vxlan_for_us(h) {
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
    if vxlan[vxlan::MESH_MARK_AT] & vxlan::MESH_INGRESS != 0 {
        // A client of the routing mesh, let in by the host it connected
        // to: its source is its own, and its replies go back that way.
        if !mesh::remember_ingress(ip.src, network, &inner_ip, &inner_headers.l4) {
            return Outcome::drop(DropReason::Malformed);
        }
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
            ..UplinkAction::default()
        }),
        None => Outcome::drop(DropReason::NotHere),
    }
}

/// Makes room for the outer headers after the Ethernet header and writes
/// outer IPv4 / UDP / VXLAN and the inner Ethernet header. The outer
/// Ethernet addresses are left to bpf_redirect_neigh.
#[inline(always)]
pub fn write_encap(ctx: &TcContext, e: &Encap, flow_hash: u32) -> Result<(), i64> {
    let inner_len = ctx.len();
    ctx.adjust_room(
        VXLAN_OVERHEAD as i32,
        BPF_ADJ_ROOM_MAC,
        (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP) as u64 | ENCAP_L2_FLAGS,
    )?;
    // One write of all 50 bytes: each bpf_skb_store_bytes call has its own
    // checks and may have to unclone the skb.
    ctx.store(14, &encap_headers(e, flow_hash, inner_len, false), 0)?;
    Ok(())
}

/// The 50 bytes VXLAN puts between the outer Ethernet header and the
/// inner packet: outer IPv4, UDP and VXLAN, then the inner Ethernet
/// header. `mesh` marks a routing-mesh packet. TC and XDP both write it.
#[inline(always)]
pub fn encap_headers(
    e: &Encap,
    flow_hash: u32,
    inner_len: u32,
    mesh: bool,
) -> [u8; VXLAN_OVERHEAD as usize] {
    let outer = vxlan::outer_headers(
        &vxlan::Outer {
            local: e.local,
            remote: e.remote,
            vni: e.vni,
            src_port: netd_common::flow::vxlan_source_port(flow_hash),
            // SAFETY: a plain helper call.
            ip_id: unsafe { bpf_get_prandom_u32() } as u16,
            mesh,
        },
        inner_len,
    );
    let mut headers = [0u8; VXLAN_OVERHEAD as usize];
    headers[..vxlan::OUTER_LEN].copy_from_slice(&outer);
    headers[36..42].copy_from_slice(&e.inner_dst);
    headers[42..48].copy_from_slice(&e.inner_src);
    headers[48] = 0x08;
    headers
}
