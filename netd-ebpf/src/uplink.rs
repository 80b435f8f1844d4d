//! XDP on an uplink: packets arriving from the underlay.
//!
//! Only traffic netd owns (VXLAN from the cluster's hosts to this host,
//! later published ports) is acted on; everything else goes to the host
//! stack untouched, so attaching netd to an uplink never breaks the host's
//! own traffic. The one exception is a packet the host would discard anyway
//! (a truncated header, a bad IHL, ...): it is dropped here, early and
//! counted, like an XDP prefilter.
//!
//! Two programs, like the endpoint side: `netd_xdp_uplink` (attached)
//! parses and sorts, and tail-calls `netd_xdp_decap` (`NETD_XDP_PROGS`)
//! for VXLAN to this host, and `netd_xdp_mesh` for a published port of
//! the routing mesh, so each has a stack of its own.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head},
    macros::xdp,
    programs::XdpContext,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    icmp,
    maps::{XDP_PROG_DECAP, XDP_PROG_DELIVER, XDP_PROG_MESH},
    parse::{parse, Frame},
    policy::PROTO_ICMP,
};

use crate::{
    frame::PacketFrame,
    icmp_quote::{self, QuoteNat},
    maps::{NETD_XDP_DELIVERY, NETD_XDP_PROGS},
    mesh, metrics,
    nat::{self, Target},
    outcome::{Outcome, Step},
    overlay,
    policy::{self, PolicyFlow, CHECK_INGRESS},
};

const HOOK: Hook = Hook::XdpUplink;

#[xdp]
pub fn netd_xdp_uplink(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = netd_xdp_uplink_verdict(ctx);
    crate::events::after_xdp(raw);
    verdict
}

#[inline(always)]
fn netd_xdp_uplink_verdict(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    let headers = match parse(&frame) {
        Ok(headers) => headers,
        Err(error) if error.invalid_for_every_receiver() => {
            return drop(error.drop_reason(), bytes);
        }
        Err(_) => return pass(bytes),
    };
    // Stages in order: VXLAN for this host (the decap program), then a
    // published port of the routing mesh (the mesh program).
    if overlay::is_vxlan_for_us(&headers) {
        // SAFETY: the slot holds an XDP program or nothing; on success
        // this call does not return.
        unsafe { NETD_XDP_PROGS.tail_call(&ctx, XDP_PROG_DECAP) };
        return drop(DropReason::NoServiceProgram, bytes);
    }
    if mesh::is_published(&headers) {
        // SAFETY: as above.
        unsafe { NETD_XDP_PROGS.tail_call(&ctx, XDP_PROG_MESH) };
        return drop(DropReason::NoServiceProgram, bytes);
    }
    pass(bytes)
}

/// Tail-called by the uplink program for VXLAN to this host: the checks,
/// the inner packet's translations (a reply's reverse NAT, an ICMP
/// error's quote), the strip and the delivery. A program of its own, so
/// its stack is its own.
#[xdp]
pub fn netd_xdp_decap(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = netd_xdp_decap_verdict(ctx);
    crate::events::after_xdp(raw);
    verdict
}

#[inline(always)]
fn netd_xdp_decap_verdict(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    let outcome = match parse(&frame) {
        Ok(headers) => overlay::decap_decision(&frame, &headers),
        Err(error) => Outcome::drop(error.drop_reason()),
    };
    match outcome.step {
        Step::Act => {
            let decap = outcome.action;
            if nat::apply(&frame, decap.strip as usize, &decap.inner, &decap.nat).is_err()
                || (decap.quote.set && write_quote(&frame, decap.strip, &decap.quote).is_err())
            {
                return drop(DropReason::NatFailed, bytes);
            }
            // SAFETY: plain helper calls on our own packet; the kernel checks bounds.
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, decap.strip as i32) } != 0 {
                return drop(DropReason::Malformed, bytes);
            }
            if decap.to_client {
                let out = decap.into;
                if PacketFrame::xdp(&ctx)
                    .put(0, mesh::addresses(out.mac, out.gateway_mac))
                    .is_err()
                {
                    return drop(DropReason::Malformed, bytes);
                }
                // SAFETY: reading a field of the context the program was given.
                let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
                return mesh::out_of(out.ifindex, ingress, bytes);
            }
            if is_icmp_error(&decap.inner) {
                metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
                // SAFETY: as above.
                return unsafe { bpf_redirect(decap.into.ifindex, 0) as u32 };
            }
            let flow = PolicyFlow::of(&decap.inner, &decap.nat, CHECK_INGRESS);
            deliver(&ctx, &flow, decap.into.ifindex, bytes)
        }
        Step::Drop => drop(outcome.reason, bytes),
        Step::Pass => pass(bytes),
    }
}

/// Into a local endpoint's veth, once policy admits it: the packet is
/// ready (translated, stripped, addressed); the delivery program judges
/// `flow` and redirects it. A tail call, so policy gets a stack of its
/// own: the decap and mesh programs have none to spare.
#[inline(always)]
pub fn deliver(ctx: &XdpContext, flow: &PolicyFlow, ifindex: u32, bytes: u64) -> u32 {
    let Some(scratch) = NETD_XDP_DELIVERY.get_ptr_mut(0) else {
        return drop(DropReason::NoServiceProgram, bytes);
    };
    // SAFETY: this CPU's slot, read by the program tail-called next on
    // this CPU before anything else runs here.
    unsafe {
        (*scratch).flow = *flow;
        (*scratch).ifindex = ifindex;
        (*scratch).bytes = bytes;
    }
    // SAFETY: the slot holds an XDP program or nothing; on success this
    // call does not return.
    unsafe { NETD_XDP_PROGS.tail_call(ctx, XDP_PROG_DELIVER) };
    drop(DropReason::NoServiceProgram, bytes)
}

/// Tail-called by the decap and mesh programs with a packet for a local
/// endpoint (`NETD_XDP_DELIVERY`): the receiver's ingress policy, then
/// the redirect into its veth.
#[xdp]
pub fn netd_xdp_deliver(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = netd_xdp_deliver_verdict(ctx);
    crate::events::after_xdp(raw);
    verdict
}

#[inline(always)]
fn netd_xdp_deliver_verdict(ctx: XdpContext) -> u32 {
    let Some(scratch) = NETD_XDP_DELIVERY.get(0) else {
        let bytes = PacketFrame::xdp(&ctx).wire_len() as u64;
        return drop(DropReason::NoServiceProgram, bytes);
    };
    // Counted as it arrived, before the decap stripped it.
    let (mut flow, ifindex, bytes) = (scratch.flow, scratch.ifindex, scratch.bytes);
    flow.tcp_flags = policy::xdp_tcp_flags(&ctx, flow.tuple.proto);
    if policy::admit(&flow, bytes) != policy::ADMITTED {
        return drop(DropReason::PolicyDenied, bytes);
    }
    metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
    // As delivered: decapsulated.
    crate::endpoint_stats::received(ifindex, PacketFrame::xdp(&ctx).wire_len() as u64);
    // SAFETY: a plain helper call; the kernel checks the ifindex.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// What the decap and mesh programs hand the delivery program.
#[derive(Clone, Copy, Default)]
pub struct XdpDelivery {
    pub flow: PolicyFlow,
    pub ifindex: u32,
    pub bytes: u64,
}

/// The uplink hook's verdicts, counted (also the mesh program's).
#[inline(always)]
pub fn drop(reason: DropReason, bytes: u64) -> u32 {
    metrics::count_drop(HOOK, reason, bytes);
    xdp_action::XDP_DROP
}

#[inline(always)]
pub fn pass(bytes: u64) -> u32 {
    metrics::count_verdict(HOOK, Verdict::Pass, bytes);
    xdp_action::XDP_PASS
}

/// ICMP errors belong to a flow (their quote's): policy does not judge them.
#[inline(always)]
pub fn is_icmp_error(t: &Target) -> bool {
    t.proto == PROTO_ICMP && icmp::is_error(t.dst_port[0])
}

/// Translates the quote of the ICMP error `strip` bytes into the frame.
#[inline(always)]
fn write_quote(frame: &PacketFrame, strip: u32, q: &QuoteNat) -> Result<(), ()> {
    icmp_quote::write(&frame.from(strip as usize).ok_or(())?, q)
}
