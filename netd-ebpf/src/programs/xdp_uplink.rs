//! XDP on an uplink: packets arriving from the underlay.
//!
//! Only traffic netd owns (VXLAN from the cluster's hosts to this host,
//! published ports of the routing mesh) is acted on; everything else goes
//! to the host stack untouched, so attaching netd to an uplink never
//! breaks the host's own traffic. The one exception is a packet the host
//! would discard anyway (a truncated header, a bad IHL, ...): it is
//! dropped here, early and counted, like an XDP prefilter.
//!
//! This program parses and sorts: it tail-calls `netd_xdp_decap` for VXLAN
//! to this host and `netd_xdp_mesh` for a published port
//! (`NETD_XDP_PROGS`), so each has a stack of its own.

use aya_ebpf::{macros::xdp, programs::XdpContext};
use netd_common::{
    maps::{XDP_PROG_DECAP, XDP_PROG_MASQ_REPLY, XDP_PROG_MESH},
    parse::{parse, Frame},
};

use crate::{
    exits::xdp,
    frame::PacketFrame,
    stages::{encap, masquerade, mesh},
};

#[xdp]
pub fn netd_xdp_uplink(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = verdict(ctx);
    xdp::finish(raw);
    verdict
}

#[inline(always)]
fn verdict(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    let headers = match parse(&frame) {
        Ok(headers) => headers,
        Err(error) if error.invalid_for_every_receiver() => {
            return xdp::drop(error.drop_reason(), bytes);
        }
        Err(_) => return xdp::pass(bytes),
    };
    // Stages in order: VXLAN for this host (the decap program), then a
    // published port of the routing mesh (the mesh program).
    if encap::is_vxlan_for_us(&headers) {
        return xdp::tail_call(&ctx, XDP_PROG_DECAP, bytes);
    }
    if mesh::is_published(&headers) {
        return xdp::tail_call(&ctx, XDP_PROG_MESH, bytes);
    }
    if masquerade::is_reply(&frame, &headers) {
        return xdp::tail_call(&ctx, XDP_PROG_MASQ_REPLY, bytes);
    }
    xdp::pass(bytes)
}
