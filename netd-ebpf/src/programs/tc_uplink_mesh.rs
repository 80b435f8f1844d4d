//! TC, tail-called by the TC uplink program for a published port of the
//! routing mesh: the mesh stage decides the backend and the way there;
//! this program writes (DNAT through the checksum helpers, which keep a
//! partial checksum right; then the backend's MACs, or the tunnel's
//! headers) and sends it: into a local backend through the delivery
//! program, or out of the uplink toward the backend's host. Never back
//! into a ring: a redirect out of the device.

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT},
    helpers::generated::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};
use netd_common::{counters::DropReason, parse::parse};

use crate::{
    exits::tc_uplink,
    frame::PacketFrame,
    maps::NETD_MESH_PLAN,
    observe::events,
    rewrite::{answers, encap, ethernet, nat},
    stages::mesh,
    types::{MeshAction, MeshStep, Plan, PolicyFlow, Step, CHECK_INGRESS},
};

/// Ethernet, IPv4 and TCP headers without options: with a GSO packet's
/// segment size, the length of each of its segments.
const SEGMENT_HEADERS: usize = 14 + 20 + 20;

#[classifier]
pub fn netd_tc_uplink_mesh(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc_uplink::finish(skb);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let bytes = u64::from(ctx.len());
    let Some(slot) = NETD_MESH_PLAN.get_ptr_mut(0) else {
        return tc_uplink::drop(DropReason::NoServiceProgram, bytes);
    };
    // The mesh stage's two halves and the writer, each a BPF call with a
    // frame of its own, handing on the plan in this CPU's slot (read and
    // written by this program alone until it returns).
    if let Err(reason) = translate(skb, bytes, slot) {
        return tc_uplink::drop(reason, bytes);
    }
    find_way(skb, bytes, slot);
    // SAFETY: as above.
    let outcome = unsafe { (*slot).outcome };
    if outcome.action.new_flow {
        // The translation's event, with the packet as the client sent
        // it; delivery's policy may note a verdict of its own.
        events::after_tc(skb, tc_uplink::HOOK);
    }
    match outcome.step {
        Step::Pass => tc_uplink::pass(bytes),
        Step::Drop => tc_uplink::drop(outcome.reason, bytes),
        Step::Act if outcome.action.step == MeshStep::TooBig => too_big(skb, bytes, slot),
        Step::Act => carry_out(skb, bytes, slot),
    }
}

/// The packet goes no further: it becomes the answer, untranslated, back
/// out of the uplink it came in on.
#[inline(always)]
fn too_big(skb: *mut __sk_buff, bytes: u64, plan: *const Plan<MeshAction>) -> i32 {
    // SAFETY: the caller's per-CPU slot.
    let plan = unsafe { &*plan };
    if answers::too_big_tc(skb, &plan.at, plan.outcome.action.mtu).is_err() {
        return tc_uplink::drop(DropReason::TooBig, bytes);
    }
    tc_uplink::count_drop(DropReason::TooBig, bytes);
    // SAFETY: a field of the skb, then a plain helper call.
    unsafe { bpf_redirect((*skb).ifindex, 0) as i32 }
}

/// The backend and translation into `plan`; Err for a packet that does
/// not parse.
#[inline(never)]
fn translate(
    skb: *mut __sk_buff,
    bytes: u64,
    plan: *mut Plan<MeshAction>,
) -> Result<(), DropReason> {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    let headers = parse(&frame).map_err(|e| e.drop_reason())?;
    // SAFETY: a field of the skb the program was given.
    let ingress = unsafe { (*skb).ifindex };
    let translated = mesh::translate(&frame, &headers, ingress, bytes);
    // SAFETY: the caller's per-CPU slot.
    unsafe { *plan = translated };
    Ok(())
}

/// The way there, into `plan`.
#[inline(never)]
fn find_way(skb: *mut __sk_buff, bytes: u64, plan: *mut Plan<MeshAction>) {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    // SAFETY: a field of the skb the program was given.
    let gso_size = unsafe { (*skb).gso_size };
    // A GSO packet leaves in segments of its segment size, sized by the
    // MSS the backend announced: those are what must fit the tunnel.
    let mtu_len = match gso_size {
        0 => bytes as usize,
        segment => SEGMENT_HEADERS + segment as usize,
    };
    // SAFETY: the caller's per-CPU slot.
    mesh::find_way(skb.cast(), &frame, mtu_len, unsafe { &mut *plan });
}

/// The plan carried out.
#[inline(never)]
fn carry_out(skb: *mut __sk_buff, bytes: u64, plan: *const Plan<MeshAction>) -> i32 {
    let ctx = TcContext::new(skb);
    // SAFETY: the caller's per-CPU slot.
    let plan = unsafe { &*plan };
    let action = plan.outcome.action;
    if nat::apply(&ctx, 0, &plan.at, &plan.nat).is_err() {
        return tc_uplink::drop(DropReason::NatFailed, bytes);
    }
    match action.step {
        MeshStep::Deliver => {
            let d = action.deliver;
            if ethernet::readdress(&ctx, d.mac, d.gateway_mac).is_err() {
                return tc_uplink::drop(DropReason::Malformed, bytes);
            }
            let flow = PolicyFlow::of(&plan.at, &plan.nat, CHECK_INGRESS);
            tc_uplink::deliver(&ctx, &flow, d.ifindex, bytes)
        }
        MeshStep::Tunnel => {
            if encap::write_tunnel_tc(&ctx, &action, plan.at.flow_hash()).is_err() {
                return tc_uplink::drop(DropReason::EncapFailed, bytes);
            }
            tc_uplink::redirect(action.hop.ifindex, bytes)
        }
        MeshStep::TooBig => TC_ACT_SHOT,
    }
}
