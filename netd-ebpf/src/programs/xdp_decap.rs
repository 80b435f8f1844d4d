//! XDP, tail-called by the uplink program for VXLAN to this host: the
//! checks, the inner packet's translations (a reply's reverse NAT, an
//! ICMP error's quote), the strip and the delivery. A program of its own,
//! so its stack is its own.

use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext};
use netd_common::{
    counters::DropReason,
    parse::{parse, Frame},
    service::CtTuple,
};

use crate::{
    exits::xdp,
    frame::PacketFrame,
    rewrite::{ethernet, nat, quote},
    stages::{decap, mesh},
    types::{PolicyFlow, QuoteNat, Step, UplinkAction, CHECK_INGRESS},
};

#[xdp]
pub fn netd_xdp_decap(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = verdict(ctx);
    xdp::finish(raw);
    verdict
}

#[inline(always)]
fn verdict(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    let outcome = match parse(&frame) {
        Ok(headers) => decap::decide(&frame, &headers),
        Err(error) => return xdp::drop(error.drop_reason(), bytes),
    };
    match outcome.step {
        Step::Act => {}
        Step::Drop => return xdp::drop(outcome.reason, bytes),
        Step::Pass => return xdp::pass(bytes),
    }
    let decap = outcome.action;
    if decap.mesh_ingress != [0; 4] {
        remember_ingress(&decap);
    }
    if nat::apply(&frame, decap.strip as usize, &decap.inner, &decap.nat).is_err()
        || (decap.quote.set && write_quote(&frame, decap.strip, &decap.quote).is_err())
    {
        return xdp::drop(DropReason::NatFailed, bytes);
    }
    // SAFETY: plain helper calls on our own packet; the kernel checks bounds.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, decap.strip as i32) } != 0 {
        return xdp::drop(DropReason::Malformed, bytes);
    }
    if decap.to_client {
        let out = decap.into;
        if ethernet::readdress_frame(&PacketFrame::xdp(&ctx), out.mac, out.gateway_mac).is_err() {
            return xdp::drop(DropReason::Malformed, bytes);
        }
        // SAFETY: reading a field of the context the program was given.
        let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
        return xdp::out_of(out.ifindex, ingress, bytes);
    }
    if decap.inner.is_icmp_error() {
        return xdp::redirect(decap.into.ifindex, bytes);
    }
    let flow = PolicyFlow::of(&decap.inner, &decap.nat, CHECK_INGRESS);
    xdp::deliver(&ctx, &flow, decap.into.ifindex, bytes)
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

/// Translates the quote of the ICMP error `strip` bytes into the frame.
#[inline(always)]
fn write_quote(frame: &PacketFrame, strip: u32, q: &QuoteNat) -> Result<(), ()> {
    quote::write(&frame.from(strip as usize).ok_or(())?, q)
}
