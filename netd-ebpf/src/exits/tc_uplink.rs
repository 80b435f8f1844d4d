//! The exits of the TC uplink programs (an uplink taken at TC: every
//! such program counts as `tc_uplink`). Like the XDP uplink's, on skbs:
//! redirects leave through `bpf_redirect` (out of a device) or
//! `bpf_redirect_peer` (into an endpoint), never back into a ring.

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    maps::UPLINK_PROG_DELIVER,
};

use crate::{
    frame::PacketFrame,
    maps::{NETD_DELIVERY, NETD_UPLINK_PROGS},
    observe::{counters, endpoint_stats, events},
    stages::policy,
    types::PolicyFlow,
};

pub const HOOK: Hook = Hook::TcUplink;

/// A TC uplink entry point's last step: the event noted for the monitor,
/// if one listens.
#[inline(always)]
pub fn finish(skb: *mut __sk_buff) {
    events::after_tc(skb, HOOK);
}

/// Counts the packet as dropped for `reason`; the verdict is the caller's.
#[inline(always)]
pub fn count_drop(reason: DropReason, bytes: u64) {
    counters::count_drop(HOOK, reason, bytes);
    events::note_drop(reason);
}

#[inline(always)]
pub fn drop(reason: DropReason, bytes: u64) -> i32 {
    count_drop(reason, bytes);
    TC_ACT_SHOT
}

#[inline(always)]
pub fn pass(bytes: u64) -> i32 {
    counters::count_verdict(HOOK, Verdict::Pass, bytes);
    TC_ACT_OK
}

/// Out of the device `ifindex` (the uplink, toward a client or a host).
#[inline(always)]
pub fn redirect(ifindex: u32, bytes: u64) -> i32 {
    counters::count_verdict(HOOK, Verdict::Redirect, bytes);
    // SAFETY: a plain helper call; the kernel checks the ifindex.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// Into the endpoint behind host veth `ifindex` (its peer's ingress).
#[inline(always)]
pub fn redirect_peer(ifindex: u32, bytes: u64) -> i32 {
    counters::count_verdict(HOOK, Verdict::Redirect, bytes);
    // SAFETY: a plain helper call; the kernel checks the ifindex.
    unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
}

/// Into a local endpoint's veth, once policy admits it: the delivery
/// program judges `flow` and redirects it (a tail call, so policy gets a
/// stack of its own).
#[inline(always)]
pub fn deliver(ctx: &TcContext, flow: &PolicyFlow, ifindex: u32, bytes: u64) -> i32 {
    let Some(scratch) = NETD_DELIVERY.get_ptr_mut(0) else {
        return drop(DropReason::NoServiceProgram, bytes);
    };
    // SAFETY: this CPU's slot, read by the program tail-called next on
    // this CPU before anything else runs here.
    unsafe {
        (*scratch).flow = *flow;
        (*scratch).ifindex = ifindex;
        (*scratch).bytes = bytes;
    }
    tail_call(ctx, UPLINK_PROG_DELIVER, bytes)
}

/// The delivery itself: the receiver's ingress policy, then the redirect
/// into its veth's peer. The delivery program's whole work, and called
/// directly (no tail call) by a program whose stack leaves policy room
/// (the masquerade's reverse program). A BPF call of its own.
#[inline(never)]
pub fn deliver_here(skb: *mut __sk_buff, flow: &PolicyFlow, ifindex: u32, bytes: u64) -> i32 {
    let ctx = TcContext::new(skb);
    let mut flow = *flow;
    flow.tcp_flags = policy::frame_tcp_flags(&PacketFrame::tc(&ctx), flow.tuple.proto);
    if policy::admit(&flow, bytes) != policy::ADMITTED {
        return drop(DropReason::PolicyDenied, bytes);
    }
    endpoint_stats::received(ifindex, u64::from(ctx.len()));
    redirect_peer(ifindex, bytes)
}

/// Hands the packet to the program in `NETD_UPLINK_PROGS[slot]`; returns
/// only when the slot is empty, which is a counted drop.
#[inline(always)]
pub fn tail_call(ctx: &TcContext, slot: u32, bytes: u64) -> i32 {
    // SAFETY: the slot holds a TC program or nothing; on success this call
    // does not return.
    unsafe { NETD_UPLINK_PROGS.tail_call(ctx, slot) };
    drop(DropReason::NoServiceProgram, bytes)
}
