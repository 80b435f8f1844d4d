//! TC, tail-called by the TC decap and mesh programs with a packet for a
//! local endpoint (`NETD_DELIVERY`): the receiver's ingress policy, then
//! the redirect into its veth's peer.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netd_common::counters::DropReason;

use crate::{exits::tc_uplink, maps::NETD_DELIVERY};

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
    // Counted as it arrived, before the decap stripped it; delivered as
    // it is now.
    let (flow, ifindex, bytes) = (scratch.flow, scratch.ifindex, scratch.bytes);
    tc_uplink::deliver_here(ctx.skb.skb, &flow, ifindex, bytes)
}
