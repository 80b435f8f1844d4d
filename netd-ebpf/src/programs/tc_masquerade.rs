//! TC, tail-called by the endpoint program for a packet leaving the
//! cluster from a network with a way out of its own (`NETD_EGRESS`): a
//! masqueraded flow's packet is SNATed and sent out of its uplink; a new
//! flow is judged by egress policy first, then gets its port; an internal
//! network's packet is dropped; anything for this host itself, or for a
//! destination reached unmasqueraded, goes to the host as it is.
//!
//! The packet is the one the endpoint program parsed and checked
//! (source, MAC), unchanged.

use aya_ebpf::{bindings::__sk_buff, macros::classifier, programs::TcContext};
use netd_common::{
    counters::DropReason,
    masquerade::EGRESS_INTERNAL,
    nat::{Addr, Nat},
    parse::{parse_without_ipv6_addresses, Headers, L4, TCP_ACK, TCP_SYN},
    service::{CtTuple, PROTO_TCP},
};

use crate::{
    exits::tc,
    frame::PacketFrame,
    maps::{NETD_LOCAL_EPS, NETD_MASQ_PLAN},
    rewrite::ip,
    stages::masquerade,
    types::{EndpointAction, MasqDecision, Outcome, Step, Target},
};

#[classifier]
pub fn netd_tc_masquerade(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc::finish(skb, verdict);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let (bytes, ifindex) = tc::arrival(&ctx);
    let Some(slot) = NETD_MASQ_PLAN.get_ptr_mut(0) else {
        return tc::drop(skb, DropReason::NoServiceProgram, bytes);
    };
    // The decision is made in a frame of its own and read in place, from
    // this CPU's slot, so the exits' frames have the stack.
    decide(skb, ifindex, slot);
    // SAFETY: this CPU's slot, written by `decide` and read by this
    // program alone until it returns.
    let d = unsafe { &mut *slot };
    if d.drop {
        return tc::drop(skb, d.reason, bytes);
    }
    // Policy first, so a refused new flow claims no port.
    if !tc::admitted(skb, &d.plan, bytes) {
        return tc::denied(skb, bytes);
    }
    if d.claim {
        match masquerade::claim(&d.flow, d.to, d.ifindex, d.plan.at.flow_hash()) {
            Ok(port) => d.plan.nat = Nat::NONE.src(Addr { ip: d.to, port }),
            Err(reason) => return tc::drop(skb, reason, bytes),
        }
    }
    if d.plan.outcome.step == Step::Act {
        // Established or just claimed: translated, out of its device.
        return tc::send_masqueraded(skb, &d.plan, bytes);
    }
    // To the host as it is.
    tc::carry_out(skb, &d.plan, ifindex, bytes)
}

/// The flow and what becomes of it, into `slot`. A BPF call with its own
/// frame.
#[inline(never)]
fn decide(skb: *mut __sk_buff, ifindex: u32, slot: *mut MasqDecision) {
    // SAFETY: the caller's per-CPU slot.
    let d = unsafe { &mut *slot };
    *d = MasqDecision::default();
    let ctx = TcContext::new(skb);
    let frame = PacketFrame::tc(&ctx);
    let h = match parse_without_ipv6_addresses(&frame) {
        Ok(h) => h,
        Err(e) => {
            d.drop_for(e.drop_reason());
            return;
        }
    };
    d.plan.at = match masquerade::echo_id(&frame, &h, masquerade::ICMP_ECHO_REQUEST) {
        Some(id) => Target::of(&h).echo(id),
        None => Target::of(&h),
    };
    // SAFETY: the value is copied out at once.
    let Some(me) = (unsafe { NETD_LOCAL_EPS.get(&ifindex) }).copied() else {
        return;
    };
    let Some(egress) = masquerade::egress_of(me.network) else {
        return;
    };
    let internal = egress.flags & EGRESS_INTERNAL != 0;
    // Its last hop: the host's forwarding answers time exceeded (and
    // traceroute sees the gateway), untranslated.
    if !internal && ip::ttl(&frame, usize::from(d.plan.at.l3)).unwrap_or(0) <= 1 {
        return;
    }
    let flow = masquerade::tuple_of(&frame, &h);
    if let Some(flow) = flow {
        if let Some(entry) = masquerade::established(&flow, tcp_flags_of(&h)) {
            d.plan.nat = Nat::NONE.src(Addr {
                ip: entry.to_ip,
                port: entry.to_port,
            });
            d.plan.outcome = Outcome::act(EndpointAction::masquerade(entry.ifindex));
            return;
        }
    }
    if internal {
        // Nothing leaves: only this host itself (its DNS, say) is reached.
        if way_of(skb, &frame, ifindex, &d.plan.at) != masquerade::Way::Host {
            d.drop_for(DropReason::Internal);
        }
        return;
    }
    // Neither TCP, UDP nor an echo request (never translated), or to a
    // destination reached unmasqueraded: to the host as it is.
    let Some(flow) = flow else {
        return;
    };
    if masquerade::unmasqueraded(me.network, flow.dst) {
        return;
    }
    // A TCP flow is translated from its SYN on: one that began before
    // masquerading (routed, under an older netd) goes on as it began.
    if flow.proto == PROTO_TCP && tcp_flags_of(&h) & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return;
    }
    let way = masquerade::way_out(skb.cast(), &flow, ifindex);
    match masquerade::decide(&egress, way) {
        Ok(Some((out_of, to))) => {
            d.claim = true;
            d.flow = flow;
            d.to = to;
            d.ifindex = out_of;
            d.plan.outcome = Outcome::act(EndpointAction::masquerade(out_of));
        }
        Ok(None) => {}
        Err(reason) => d.drop_for(reason),
    }
}

#[inline(always)]
fn tcp_flags_of(h: &Headers) -> u8 {
    match h.l4 {
        L4::Tcp { flags, .. } => flags,
        _ => 0,
    }
}

/// Where the FIB sends the packet `at`, by its addresses alone.
#[inline(always)]
fn way_of(skb: *mut __sk_buff, frame: &PacketFrame, ifindex: u32, at: &Target) -> masquerade::Way {
    let Ok(ip) = frame.load::<20>(usize::from(at.l3)) else {
        return masquerade::Way::TooBig;
    };
    let flow = CtTuple {
        src: [ip[12], ip[13], ip[14], ip[15]],
        dst: [ip[16], ip[17], ip[18], ip[19]],
        proto: ip[9],
        ..CtTuple::default()
    };
    masquerade::way_out(skb.cast(), &flow, ifindex)
}
