//! TC, tail-called by the endpoint program for a packet to a VIP that
//! conntrack did not settle: a new flow (Maglev picks its backend and
//! conntrack records it) or one whose backend left. A port without a
//! backend hands the packet on to the refusal program. The packet is the
//! one the endpoint program parsed and checked (source, MAC), unchanged.
//!
//! Each step is a BPF call with its own frame, called from here in turn,
//! so the deepest chain is this frame plus one step's.

use aya_ebpf::{bindings::__sk_buff, macros::classifier, programs::TcContext};
use netd_common::{
    counters::DropReason,
    maps::PROG_REFUSE,
    nat::Nat,
    parse::{parse_without_ipv6_addresses, L3},
};

use crate::{
    exits::tc,
    frame::PacketFrame,
    maps::NETD_LOCAL_EPS,
    observe::events,
    stages::{forward, policy, service},
    types::{ClientPacket, EndpointAction, Outcome, Plan, ServiceKind, Target},
};

#[classifier]
pub fn netd_tc_service(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc::finish(skb, verdict);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let (bytes, ifindex) = tc::arrival(&ctx);
    let mut p = Packet::default();
    if let Err(reason) = classify(skb, ifindex, bytes, &mut p) {
        return tc::drop(skb, reason, bytes);
    }
    let to = service::new_flow(&p.client);
    let (nat, route_to) = match to.kind {
        ServiceKind::Nat => {
            // The translation's event, with the packet as the client sent
            // it; policy may note a verdict of its own.
            events::after_tc(skb, tc::HOOK);
            (to.nat, to.route_to)
        }
        ServiceKind::No => (Nat::NONE, p.client.flow.dst),
        ServiceKind::Refuse => return tc::tail_call(&ctx, PROG_REFUSE, bytes),
        ServiceKind::Drop | ServiceKind::NewFlow => return tc::drop(skb, to.reason, bytes),
    };
    let plan = plan(ifindex, route_to, &nat, &p.at);
    if let Some(mut flow) = tc::policy_flow(&plan) {
        flow.tcp_flags = policy::tc_tcp_flags(skb, plan.at.proto, plan.at.l4);
        let verdict = policy::admit(&flow, bytes);
        if verdict != policy::ADMITTED {
            return tc::denied(skb, bytes);
        }
    }
    tc::carry_out(skb, &plan, ifindex, bytes)
}

/// The packet as the service stage and the writer need it. (Not the
/// sender's entry: `plan` reads it in place, so the entry's frame, the
/// base of the deepest chain, does not hold it.)
#[derive(Clone, Copy, Default)]
struct Packet {
    client: ClientPacket,
    at: Target,
}

#[inline(never)]
fn classify(
    skb: *mut __sk_buff,
    ifindex: u32,
    bytes: u64,
    p: &mut Packet,
) -> Result<(), DropReason> {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    let h = parse_without_ipv6_addresses(&frame).map_err(|e| e.drop_reason())?;
    let L3::Ipv4(ip) = h.l3 else {
        return Err(DropReason::UnknownL3);
    };
    // SAFETY: the value is read at once.
    let network = (unsafe { NETD_LOCAL_EPS.get(&ifindex) })
        .map(|me| me.network)
        .ok_or(DropReason::NotHere)?;
    p.client = ClientPacket::of(network, &ip, &h.l4, bytes);
    p.at = Target::of(&h);
    Ok(())
}

#[inline(never)]
fn plan(ifindex: u32, route_to: [u8; 4], nat: &Nat, at: &Target) -> Plan<EndpointAction> {
    // SAFETY: a map value stays valid for the program's run.
    let outcome = match unsafe { NETD_LOCAL_EPS.get(&ifindex) } {
        Some(me) => forward::ipv4(me, route_to),
        None => Outcome::drop(DropReason::NotHere),
    };
    Plan {
        nat: *nat,
        at: *at,
        outcome,
    }
}
