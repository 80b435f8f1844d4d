//! TC ingress on an uplink whose XDP cannot be trusted (a veth): what
//! `netd_xdp_uplink` does, on skbs, which know their checksum state (a
//! veth's peer leaves a TCP/UDP checksum partial) and leave through
//! redirects rather than a ring the peer may never flush.
//!
//! Only netd's traffic is acted on (VXLAN from the cluster's hosts to this
//! host, published ports); everything else goes to the host stack
//! untouched. It parses and sorts, and tail-calls `netd_tc_uplink_decap`
//! or `netd_tc_uplink_mesh` (`NETD_UPLINK_PROGS`).

use aya_ebpf::{macros::classifier, programs::TcContext};
use netd_common::{
    maps::{UPLINK_PROG_DECAP, UPLINK_PROG_MASQ_REPLY, UPLINK_PROG_MESH},
    parse::parse,
};

use crate::{
    exits::tc_uplink,
    frame::PacketFrame,
    stages::{encap, masquerade, mesh},
};

#[classifier]
pub fn netd_tc_uplink(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc_uplink::finish(skb);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let bytes = u64::from(ctx.len());
    let frame = PacketFrame::tc(&ctx);
    let headers = match parse(&frame) {
        Ok(headers) => headers,
        Err(error) if error.invalid_for_every_receiver() => {
            return tc_uplink::drop(error.drop_reason(), bytes);
        }
        Err(_) => return tc_uplink::pass(bytes),
    };
    if encap::is_vxlan_for_us(&headers) {
        return tc_uplink::tail_call(&ctx, UPLINK_PROG_DECAP, bytes);
    }
    if mesh::is_published(&headers) {
        return tc_uplink::tail_call(&ctx, UPLINK_PROG_MESH, bytes);
    }
    if masquerade::is_reply(&frame, &headers) {
        return tc_uplink::tail_call(&ctx, UPLINK_PROG_MASQ_REPLY, bytes);
    }
    tc_uplink::pass(bytes)
}
