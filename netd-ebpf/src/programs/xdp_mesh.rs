//! XDP, tail-called by the uplink program for a published port of the
//! routing mesh: the mesh stage decides the backend and the way there,
//! and this program writes (DNAT, then the backend's MACs or the tunnel's
//! headers) and sends it: into a local backend's veth through the
//! delivery program, or out of the uplink toward the backend's host.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use netd_common::{
    counters::DropReason,
    parse::{parse, Frame},
};

use crate::{
    exits::xdp,
    frame::PacketFrame,
    observe::events,
    rewrite::{answers, encap, ethernet, nat},
    stages::mesh,
    types::{MeshStep, PolicyFlow, Step, CHECK_INGRESS},
};

#[xdp]
pub fn netd_xdp_mesh(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = verdict(ctx);
    xdp::finish(raw);
    verdict
}

#[inline(always)]
fn verdict(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    let headers = match parse(&frame) {
        Ok(h) => h,
        Err(e) => return xdp::drop(e.drop_reason(), bytes),
    };
    // SAFETY: reading a field of the context the program was given.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let plan = mesh::decide(
        ctx.ctx.cast(),
        &frame,
        &headers,
        ingress,
        bytes,
        frame.wire_len(),
    );
    let action = plan.outcome.action;
    if action.new_flow {
        // The translation's event, with the packet as the client sent
        // it; delivery's policy may note a verdict of its own.
        events::after_xdp(ctx.ctx);
    }
    match plan.outcome.step {
        Step::Pass => return xdp::pass(bytes),
        Step::Drop => return xdp::drop(plan.outcome.reason, bytes),
        Step::Act => {}
    }
    if action.step == MeshStep::TooBig {
        // The packet goes no further: it becomes the answer, untranslated.
        if answers::too_big(ctx.ctx, plan.at.l3, plan.at.l4, action.mtu).is_err() {
            return xdp::drop(DropReason::TooBig, bytes);
        }
        xdp::count_drop(DropReason::TooBig, bytes);
        return xdp_action::XDP_TX;
    }
    if nat::apply(&frame, 0, &plan.at, &plan.nat).is_err() {
        return xdp::drop(DropReason::NatFailed, bytes);
    }
    match action.step {
        MeshStep::Deliver => {
            let d = action.deliver;
            if ethernet::readdress_frame(&frame, d.mac, d.gateway_mac).is_err() {
                return xdp::drop(DropReason::Malformed, bytes);
            }
            let flow = PolicyFlow::of(&plan.at, &plan.nat, CHECK_INGRESS);
            xdp::deliver(&ctx, &flow, d.ifindex, bytes)
        }
        MeshStep::Tunnel => {
            if encap::write_xdp(&ctx, &action, plan.at.flow_hash()).is_err() {
                return xdp::drop(DropReason::EncapFailed, bytes);
            }
            xdp::out_of(action.hop.ifindex, ingress, bytes)
        }
        MeshStep::TooBig => xdp::drop(DropReason::TooBig, bytes),
    }
}
