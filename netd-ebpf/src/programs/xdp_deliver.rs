//! XDP, tail-called by the decap and mesh programs with a packet for a
//! local endpoint (`NETD_DELIVERY`): the receiver's ingress policy,
//! then the redirect into its veth.

use aya_ebpf::{macros::xdp, programs::XdpContext};
use netd_common::{counters::DropReason, parse::Frame};

use crate::{
    exits::xdp, frame::PacketFrame, maps::NETD_DELIVERY, observe::endpoint_stats, stages::policy,
};

#[xdp]
pub fn netd_xdp_deliver(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = verdict(ctx);
    xdp::finish(raw);
    verdict
}

#[inline(always)]
fn verdict(ctx: XdpContext) -> u32 {
    let Some(scratch) = NETD_DELIVERY.get(0) else {
        let bytes = PacketFrame::xdp(&ctx).wire_len() as u64;
        return xdp::drop(DropReason::NoServiceProgram, bytes);
    };
    // Counted as it arrived, before the decap stripped it.
    let (mut flow, ifindex, bytes) = (scratch.flow, scratch.ifindex, scratch.bytes);
    flow.tcp_flags = policy::xdp_tcp_flags(&ctx, flow.tuple.proto);
    if policy::admit(&flow, bytes) != policy::ADMITTED {
        return xdp::drop(DropReason::PolicyDenied, bytes);
    }
    // As delivered: decapsulated.
    endpoint_stats::received(ifindex, PacketFrame::xdp(&ctx).wire_len() as u64);
    xdp::redirect(ifindex, bytes)
}
