//! TC, tail-called by the service program for a new flow to a service
//! port without a backend: the packet becomes netd's answer
//! (`netd_common::refusal`: a TCP RST or an ICMP port unreachable), sent
//! back to the container. The packet itself counts as a `no_backend` drop.

use aya_ebpf::{
    bindings::TC_ACT_SHOT, helpers::generated::bpf_redirect, macros::classifier,
    programs::TcContext,
};
use netd_common::{counters::DropReason, parse::parse_without_ipv6_addresses};

use crate::{exits::tc, frame::PacketFrame, observe::events, rewrite::answers, types::Target};

#[classifier]
pub fn netd_tc_refuse(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    // Refused whatever the verdict (the answer goes back to the sender).
    tc::finish(skb, TC_ACT_SHOT);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let (bytes, ifindex) = tc::arrival(&ctx);
    let at = match parse_without_ipv6_addresses(&PacketFrame::tc(&ctx)) {
        Ok(h) => Target::of(&h),
        Err(e) => return tc::drop(skb, e.drop_reason(), bytes),
    };
    tc::count_drop(skb, DropReason::NoBackend, bytes);
    // The event carries the client's packet, not the answer it becomes.
    events::after_tc(skb, tc::HOOK);
    if answers::refusal(skb, &at).is_err() {
        return TC_ACT_SHOT;
    }
    // Back out of the host veth, to the container that sent it.
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}
