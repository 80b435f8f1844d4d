//! The XDP programs' exits (the uplink side: every XDP program of netd
//! counts as `xdp_uplink`).

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::generated::bpf_redirect,
    programs::XdpContext,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    maps::XDP_PROG_DELIVER,
};

use crate::{
    maps::{NETD_DELIVERY, NETD_XDP_PROGS},
    observe::{counters, events},
    types::PolicyFlow,
};

pub const HOOK: Hook = Hook::XdpUplink;

/// An XDP entry point's last step: the event noted for the monitor, if
/// one listens.
#[inline(always)]
pub fn finish(ctx: *mut xdp_md) {
    events::after_xdp(ctx);
}

/// Counts the packet as dropped for `reason`; the verdict is the caller's.
#[inline(always)]
pub fn count_drop(reason: DropReason, bytes: u64) {
    counters::count_drop(HOOK, reason, bytes);
    events::note_drop(reason);
}

#[inline(always)]
pub fn drop(reason: DropReason, bytes: u64) -> u32 {
    count_drop(reason, bytes);
    xdp_action::XDP_DROP
}

#[inline(always)]
pub fn pass(bytes: u64) -> u32 {
    counters::count_verdict(HOOK, Verdict::Pass, bytes);
    xdp_action::XDP_PASS
}

/// Into the veth (or out of the device) `ifindex`.
#[inline(always)]
pub fn redirect(ifindex: u32, bytes: u64) -> u32 {
    counters::count_verdict(HOOK, Verdict::Redirect, bytes);
    // SAFETY: a plain helper call; the kernel checks the ifindex.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// Sends the frame out of `ifindex`: back where it came from (XDP_TX) or
/// through a redirect.
#[inline(always)]
pub fn out_of(ifindex: u32, ingress: u32, bytes: u64) -> u32 {
    if ifindex == ingress {
        counters::count_verdict(HOOK, Verdict::Tx, bytes);
        return xdp_action::XDP_TX;
    }
    redirect(ifindex, bytes)
}

/// Into a local endpoint's veth, once policy admits it: the packet is
/// ready (translated, stripped, addressed); the delivery program judges
/// `flow` and redirects it. A tail call, so policy gets a stack of its
/// own: the decap and mesh programs have none to spare.
#[inline(always)]
pub fn deliver(ctx: &XdpContext, flow: &PolicyFlow, ifindex: u32, bytes: u64) -> u32 {
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
    tail_call(ctx, XDP_PROG_DELIVER, bytes)
}

/// Hands the packet to the program in `NETD_XDP_PROGS[slot]`; returns
/// only when the slot is empty, which is a counted drop.
#[inline(always)]
pub fn tail_call(ctx: &XdpContext, slot: u32, bytes: u64) -> u32 {
    // SAFETY: the slot holds an XDP program or nothing; on success this
    // call does not return.
    unsafe { NETD_XDP_PROGS.tail_call(ctx, slot) };
    drop(DropReason::NoServiceProgram, bytes)
}
