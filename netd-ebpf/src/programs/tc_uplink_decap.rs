//! TC, tail-called by the TC uplink program for VXLAN to this host: the
//! decap stage's checks and decision, the inner packet's translations
//! (through the checksum helpers, which keep a partial checksum right),
//! the strip, and the delivery: into a local endpoint after its ingress
//! policy, or back out of the uplink to a client of the routing mesh.

use aya_ebpf::{bindings::__sk_buff, macros::classifier, programs::TcContext};
use netd_common::{counters::DropReason, parse::parse, service::CtTuple};

use crate::{
    exits::tc_uplink,
    frame::PacketFrame,
    maps::NETD_DECAP,
    rewrite::{encap, ethernet, nat, quote},
    stages::{decap, mesh},
    types::{PolicyFlow, QuoteNat, Step, UplinkAction, CHECK_INGRESS},
};

#[classifier]
pub fn netd_tc_uplink_decap(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc_uplink::finish(skb);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let bytes = u64::from(ctx.len());
    let (step, reason) = decide(skb);
    match step {
        Step::Act => {}
        Step::Drop => return tc_uplink::drop(reason, bytes),
        Step::Pass => return tc_uplink::pass(bytes),
    }
    carry_out(skb, bytes)
}

/// The decision in `NETD_DECAP` carried out: the mesh's return entry, the
/// translations, the strip, the delivery. A frame of its own beside the
/// decision's.
#[inline(never)]
fn carry_out(skb: *mut __sk_buff, bytes: u64) -> i32 {
    let ctx = TcContext::new(skb);
    let Some(d) = NETD_DECAP.get(0) else {
        return tc_uplink::drop(DropReason::NoServiceProgram, bytes);
    };
    if d.mesh_ingress != [0; 4] {
        remember_ingress(d);
    }
    if nat::apply(&ctx, d.strip as usize, &d.inner, &d.nat).is_err()
        || (d.quote.set && write_quote(skb, d.strip, &d.quote).is_err())
    {
        return tc_uplink::drop(DropReason::NatFailed, bytes);
    }
    let into = d.into;
    // The strip keeps the outer Ethernet header: it takes the inner one's
    // addresses (as XDP's decap leaves the inner frame), or, toward a
    // client, the next hop's.
    let macs = if d.to_client {
        Ok(ethernet::addresses(into.mac, into.gateway_mac))
    } else {
        PacketFrame::tc(&ctx).load::<12>(d.strip as usize)
    };
    let Ok(macs) = macs else {
        return tc_uplink::drop(DropReason::Malformed, bytes);
    };
    if encap::strip_tc(&ctx, d.strip).is_err() || ethernet::write_addresses(&ctx, macs).is_err() {
        return tc_uplink::drop(DropReason::Malformed, bytes);
    }
    if d.to_client {
        return tc_uplink::redirect(into.ifindex, bytes);
    }
    if d.inner.is_icmp_error() {
        return tc_uplink::redirect_peer(into.ifindex, bytes);
    }
    let flow = PolicyFlow::of(&d.inner, &d.nat, CHECK_INGRESS);
    tc_uplink::deliver(&ctx, &flow, into.ifindex, bytes)
}

/// The decap stage's decision, in a frame of its own: the step and drop
/// reason, and the action left in this CPU's `NETD_DECAP`.
#[inline(never)]
fn decide(skb: *mut __sk_buff) -> (Step, DropReason) {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    let outcome = match parse(&frame) {
        Ok(headers) => decap::decide(&frame, &headers),
        Err(error) => return (Step::Drop, error.drop_reason()),
    };
    if outcome.step == Step::Act {
        let Some(slot) = NETD_DECAP.get_ptr_mut(0) else {
            return (Step::Drop, DropReason::NoServiceProgram);
        };
        // SAFETY: this CPU's slot, read by the caller before anything
        // else runs on this CPU.
        unsafe { *slot = outcome.action };
    }
    (outcome.step, outcome.reason)
}

/// The mesh's return entry for a flow another host took in and
/// tunnelled here.
#[inline(always)]
fn remember_ingress(d: &UplinkAction) {
    let t = CtTuple {
        src: d.inner.src,
        dst: d.inner.dst,
        src_port: d.inner.src_port,
        dst_port: d.inner.dst_port,
        proto: d.inner.proto,
        _pad: [0; 3],
    };
    mesh::remember_ingress(d.mesh_ingress, d.network, &t, d.tcp_flags);
}

/// Translates the quote of the ICMP error `strip` bytes into the frame
/// (direct writes, on a frame read afresh after the helpers).
#[inline(never)]
fn write_quote(skb: *mut __sk_buff, strip: u32, q: &QuoteNat) -> Result<(), ()> {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    quote::write(&frame.from(strip as usize).ok_or(())?, q)
}
