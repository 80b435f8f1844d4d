//! VXLAN's headers, written: grown into the packet and filled in one
//! store, on TC (a container's packet to another host, the routing mesh's
//! tunnel on a TC uplink) and XDP (the mesh's tunnel); and taken off at TC.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
    },
    helpers::generated::{bpf_get_prandom_u32, bpf_xdp_adjust_head},
    programs::{TcContext, XdpContext},
};
use netd_common::{maps::VXLAN_OVERHEAD, vxlan};

use super::ethernet::addresses;
use crate::{
    frame::PacketFrame,
    types::{Encap, MeshAction},
};

const ETH_HLEN: usize = 14;
const INNER_L2: u64 = 14;
/// BPF_F_ADJ_ROOM_ENCAP_L2(len): the inner MAC header length, for GSO.
const ENCAP_L2_FLAGS: u64 = (INNER_L2 & 0xff) << 56;

/// Makes room for the outer headers after the Ethernet header and writes
/// outer IPv4 / UDP / VXLAN and the inner Ethernet header. The outer
/// Ethernet addresses are left to bpf_redirect_neigh.
#[inline(always)]
pub fn write_tc(ctx: &TcContext, e: &Encap, flow_hash: u32) -> Result<(), i64> {
    let inner_len = ctx.len();
    ctx.adjust_room(
        VXLAN_OVERHEAD as i32,
        BPF_ADJ_ROOM_MAC,
        (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP) as u64 | ENCAP_L2_FLAGS,
    )?;
    // One write of all 50 bytes: each bpf_skb_store_bytes call has its own
    // checks and may have to unclone the skb.
    ctx.store(14, &headers(e, flow_hash, inner_len, false), 0)?;
    Ok(())
}

/// The routing mesh's tunnel at TC: room for the outer headers after the
/// Ethernet header, the 50 bytes written in one store (marked as the
/// mesh's), and the outer Ethernet header readdressed to the next hop.
#[inline(always)]
pub fn write_tunnel_tc(ctx: &TcContext, a: &MeshAction, flow_hash: u32) -> Result<(), i64> {
    let inner_len = ctx.len();
    ctx.adjust_room(
        VXLAN_OVERHEAD as i32,
        BPF_ADJ_ROOM_MAC,
        (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP) as u64 | ENCAP_L2_FLAGS,
    )?;
    ctx.store(14, &headers(&a.encap, flow_hash, inner_len, true), 0)?;
    ctx.store(0, &addresses(a.hop.dmac, a.hop.smac), 0)?;
    Ok(())
}

/// Takes VXLAN's outer headers off at TC: the `strip` bytes after the
/// outer Ethernet header (outer IPv4, UDP, VXLAN and the inner Ethernet
/// header) go, and the outer Ethernet header stays, for the caller to
/// readdress. A GSO packet keeps its segment size: the inner segments are
/// what they were.
#[inline(always)]
pub fn strip_tc(ctx: &TcContext, strip: u32) -> Result<(), i64> {
    ctx.adjust_room(
        -(strip as i32),
        BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_FIXED_GSO),
    )
}

/// Grows the frame by the 50 bytes of outer headers and writes them, the
/// outer and inner Ethernet headers included, in one store: the routing
/// mesh's tunnel to a backend's host (marked as such).
#[inline(always)]
pub fn write_xdp(ctx: &XdpContext, a: &MeshAction, flow_hash: u32) -> Result<(), ()> {
    let inner_len = (ctx.data_end() - ctx.data()) as u32;
    // SAFETY: a plain helper call on the program's own packet.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(VXLAN_OVERHEAD as i32)) } != 0 {
        return Err(());
    }
    let mut outer = [0u8; VXLAN_OVERHEAD as usize + ETH_HLEN];
    outer[..12].copy_from_slice(&addresses(a.hop.dmac, a.hop.smac));
    outer[12] = 0x08;
    outer[ETH_HLEN..].copy_from_slice(&headers(&a.encap, flow_hash, inner_len, true));
    PacketFrame::xdp(ctx).put(0, outer)
}

/// The 50 bytes VXLAN puts between the outer Ethernet header and the
/// inner packet: outer IPv4, UDP and VXLAN, then the inner Ethernet
/// header. `mesh` marks a routing-mesh packet.
#[inline(always)]
fn headers(e: &Encap, flow_hash: u32, inner_len: u32, mesh: bool) -> [u8; VXLAN_OVERHEAD as usize] {
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
