//! TC, tail-called by the TC decap and mesh programs with a packet for a
//! local endpoint (`NETD_DELIVERY`): the receiver's ingress policy, then
//! the redirect into its veth's peer.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netd_common::counters::DropReason;

use crate::{
    exits::tc_uplink, frame::PacketFrame, maps::NETD_DELIVERY, observe::endpoint_stats,
    stages::policy,
};

#[classifier]
pub fn netd_tc_uplink_deliver(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc_uplink::finish(skb);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let Some(scratch) = NETD_DELIVERY.get(0) else {
        return tc_uplink::drop(DropReason::NoServiceProgram, u64::from(ctx.len()));
    };
    // Counted as it arrived, before the decap stripped it.
    let (mut flow, ifindex, bytes) = (scratch.flow, scratch.ifindex, scratch.bytes);
    flow.tcp_flags = policy::frame_tcp_flags(&PacketFrame::tc(&ctx), flow.tuple.proto);
    if policy::admit(&flow, bytes) != policy::ADMITTED {
        return tc_uplink::drop(DropReason::PolicyDenied, bytes);
    }
    // As delivered: decapsulated.
    endpoint_stats::received(ifindex, u64::from(ctx.len()));
    tc_uplink::redirect_peer(ifindex, bytes)
}
