//! TC ingress on the host end of an endpoint veth: packets leaving a
//! container. netd owns this traffic: it checks the source (anti-spoofing),
//! answers ARP, delivers to endpoints of the same network on this host,
//! drops what goes to another network, and hands the rest to the host.
//! On an interface that is not an endpoint's it only parses and counts.

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    icmp,
    maps::LocalEndpointEntry,
    maps::{PROG_ICMP_ERROR, PROG_SERVICE},
    nat::Nat,
    parse::{parse_without_ipv6_addresses, Frame, Headers, Ipv4, L3, L4},
};

use crate::{
    arp, endpoint_stats, forward,
    frame::PacketFrame,
    maps::{NETD_LOCAL_EPS, NETD_PROGS},
    mesh, metrics,
    nat::{self, Target},
    outcome::{ArpAnswer, Delivery, EndpointAction, EndpointStep, Outcome, Plan, Step},
    overlay,
    policy::{self, PolicyFlow, CHECK_EGRESS, CHECK_INGRESS},
    service::{self, ClientPacket, ServiceKind},
};

pub const HOOK: Hook = Hook::TcEndpoint;
const ETH_DST: usize = 0;
const ETH_SRC: usize = 6;

#[classifier]
pub fn netd_tc_endpoint(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    endpoint_stats::arrived(skb);
    let verdict = netd_tc_endpoint_verdict(ctx);
    endpoint_stats::after_tc(skb, verdict);
    crate::events::after_tc(skb);
    verdict
}

#[inline(always)]
fn netd_tc_endpoint_verdict(ctx: TcContext) -> i32 {
    let (bytes, ifindex) = arrival(&ctx);
    let frame = PacketFrame::tc(&ctx);
    let plan = decide(&frame, ifindex, bytes);
    if plan.outcome.step == Step::Act {
        match plan.outcome.action.step {
            EndpointStep::ToServiceProgram => return tail_call(&ctx, PROG_SERVICE, bytes),
            EndpointStep::ToIcmpErrorProgram => return tail_call(&ctx, PROG_ICMP_ERROR, bytes),
            _ => {}
        }
    }
    admit_and_carry_out(ctx.skb.skb, &plan, ifindex, bytes)
}

/// Policy's verdict on `plan`, then [`carry_out`] for what it admits. A
/// BPF call of its own, so the policy flow is not in the entry's frame,
/// which `decide`'s frame is stacked on. (The service program, whose
/// deepest call is shallower, calls the two itself.)
#[inline(never)]
pub fn admit_and_carry_out(
    skb: *mut __sk_buff,
    plan: &Plan<EndpointAction>,
    ifindex: u32,
    bytes: u64,
) -> i32 {
    if let Some(mut flow) = policy_flow(plan) {
        flow.tcp_flags = policy::tc_tcp_flags(skb, plan.at.proto, plan.at.l4);
        let verdict = policy::admit(&flow, bytes);
        if verdict != policy::ADMITTED {
            return denied(bytes);
        }
    }
    carry_out(skb, plan, ifindex, bytes)
}

/// What policy judges of a plan: an IPv4 packet leaving its container,
/// for its sender's egress and, delivered here, its receiver's ingress.
/// ARP answers and drops are not judged.
#[inline(always)]
pub fn policy_flow(plan: &Plan<EndpointAction>) -> Option<PolicyFlow> {
    let o = &plan.outcome;
    let check = match (o.step, o.action.step) {
        (Step::Act, EndpointStep::Deliver) => CHECK_EGRESS | CHECK_INGRESS,
        (Step::Act, EndpointStep::Encap | EndpointStep::Uplink) | (Step::Pass, _) => CHECK_EGRESS,
        _ => return None,
    };
    if plan.at.l3 == 0 {
        return None;
    }
    Some(PolicyFlow::of(&plan.at, &plan.nat, check))
}

/// A drop by policy: counted as `policy_denied` (the rule has its own count).
#[inline(always)]
pub fn denied(bytes: u64) -> i32 {
    drop(DropReason::PolicyDenied, bytes)
}

/// What every endpoint-side program counts a packet by and where it came
/// from: its length, and the host veth it left its container through.
#[inline(always)]
pub fn arrival(ctx: &TcContext) -> (u64, u32) {
    // SAFETY: reading a field of the skb the program was given.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    (u64::from(ctx.len()), ifindex)
}

/// Hands the packet, as it came, to the program in `NETD_PROGS[slot]`;
/// returns only when the slot is empty, which is a counted drop.
#[inline(always)]
pub fn tail_call(ctx: &TcContext, slot: u32, bytes: u64) -> i32 {
    // SAFETY: the slot holds a program of this type or nothing; on success
    // this call does not return.
    unsafe { NETD_PROGS.tail_call(ctx, slot) };
    drop(DropReason::NoServiceProgram, bytes)
}

/// Applies `plan`'s translations and carries out its outcome (ICMP errors
/// go straight here: they belong to a flow, and policy does not judge
/// them). A BPF call with its own frame. Tail calls are the entry points' own.
#[inline(never)]
pub fn carry_out(
    skb: *mut __sk_buff,
    plan: &Plan<EndpointAction>,
    ifindex: u32,
    bytes: u64,
) -> i32 {
    let ctx = &TcContext::new(skb);
    let frame = &PacketFrame::tc(ctx);
    let (outcome, action) = (&plan.outcome, &plan.outcome.action);
    // Usually the sender already addressed the peer (its ARP answer): only
    // a frame sent to the gateway's MAC needs the rewrite. Read before the
    // writer's helpers invalidate the packet pointers.
    let addressed = outcome.step == Step::Act
        && action.step == EndpointStep::Deliver
        && frame.read::<6>(ETH_DST) == Some(action.deliver.mac);
    if nat::apply(ctx, 0, &plan.at, &plan.nat).is_err() {
        return drop(DropReason::NatFailed, bytes);
    }
    match outcome.step {
        Step::Pass => {
            metrics::count_verdict(HOOK, Verdict::Pass, bytes);
            TC_ACT_OK
        }
        Step::Drop => drop(outcome.reason, bytes),
        Step::Act => match action.step {
            EndpointStep::Deliver => {
                let Delivery { ifindex, mac, .. } = action.deliver;
                if !addressed && ctx.store(ETH_DST, &mac, 0).is_err() {
                    return drop(DropReason::Malformed, bytes);
                }
                endpoint_stats::delivering_to(skb, ifindex);
                metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
                // SAFETY: plain helper call; the kernel checks the ifindex.
                unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
            }
            EndpointStep::Encap => {
                let e = action.encap;
                if overlay::write_encap(ctx, &e, plan.at.flow_hash()).is_err() {
                    return drop(DropReason::EncapFailed, bytes);
                }
                metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
                // The kernel picks the next hop and its MAC for the outer header.
                // SAFETY: plain helper call; the kernel checks the ifindex.
                unsafe { bpf_redirect_neigh(e.uplink, core::ptr::null_mut(), 0, 0) as i32 }
            }
            EndpointStep::Uplink => {
                let out = action.deliver;
                if ctx
                    .store(ETH_DST, &mesh::addresses(out.mac, out.gateway_mac), 0)
                    .is_err()
                {
                    return drop(DropReason::Malformed, bytes);
                }
                metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
                // Out of the uplink, addressed already: no neighbour lookup.
                // SAFETY: plain helper call; the kernel checks the ifindex.
                unsafe { bpf_redirect(out.ifindex, 0) as i32 }
            }
            EndpointStep::ArpReply => {
                if write_arp_reply(ctx, &action.arp).is_err() {
                    return drop(DropReason::Malformed, bytes);
                }
                metrics::count_verdict(HOOK, Verdict::Tx, bytes);
                // Back out of the host veth, to the container that asked.
                // SAFETY: plain helper call.
                unsafe { bpf_redirect(ifindex, 0) as i32 }
            }
            // Handled by the entry points before this.
            EndpointStep::ToServiceProgram | EndpointStep::ToIcmpErrorProgram => {
                drop(DropReason::Malformed, bytes)
            }
        },
    }
}

#[inline(always)]
pub fn drop(reason: DropReason, bytes: u64) -> i32 {
    metrics::count_drop(HOOK, reason, bytes);
    TC_ACT_SHOT
}

#[inline(never)]
fn decide(frame: &PacketFrame, ifindex: u32, bytes: u64) -> Plan<EndpointAction> {
    let headers = match parse_without_ipv6_addresses(frame) {
        Ok(headers) => headers,
        Err(error) => return Outcome::drop(error.drop_reason()).into(),
    };
    if let L3::Other(_) = headers.l3 {
        return Outcome::drop(DropReason::UnknownL3).into();
    }
    // SAFETY: the value is copied out at once.
    let Some(me) = (unsafe { NETD_LOCAL_EPS.get(&ifindex) }).copied() else {
        return Outcome::pass().into();
    };
    let Some(src_mac) = frame_src_mac(frame) else {
        return Outcome::drop(DropReason::Malformed).into();
    };
    let plan = match headers.l3 {
        L3::Arp(arp) => Plan::from({
            // 0.0.0.0 is a duplicate-address probe (RFC 5227).
            if src_mac != me.mac
                || arp.sender_mac != me.mac
                || (arp.sender_ip != me.ipv4 && arp.sender_ip != [0; 4])
            {
                Outcome::drop(DropReason::Spoofed)
            } else {
                arp::answer(&me, &arp, headers.l3_offset)
            }
        }),
        L3::Ipv4(ip) => {
            if src_mac != me.mac || ip.src != me.ipv4 {
                Outcome::drop(DropReason::Spoofed).into()
            } else {
                ipv4(&me, &ip, &headers, bytes)
            }
        }
        // Not forwarded by netd yet, and it must not reach the host with
        // nothing but a MAC check (policy would have a bypass).
        L3::Ipv6(_) => Outcome::drop(DropReason::Ipv6).into(),
        L3::Other(_) => Outcome::drop(DropReason::UnknownL3).into(),
    };
    plan
}

/// Stages for IPv4 from a container, in order: ICMP errors (to their
/// program), a packet to a VIP (a tracked flow's DNAT here, anything else
/// to the service program), a reply from a backend (reverse NAT), plain
/// forwarding. A reply is never addressed to a VIP, so a packet to one
/// skips the reverse probe.
#[inline(always)]
fn ipv4(me: &LocalEndpointEntry, ip: &Ipv4, h: &Headers, bytes: u64) -> Plan<EndpointAction> {
    if let L4::Icmp { kind, .. } = h.l4 {
        if icmp::is_error(kind) {
            return Outcome::act(EndpointAction::step(EndpointStep::ToIcmpErrorProgram)).into();
        }
    }
    let (nat, route_to) = match service::vip_of(&ip.dst) {
        Some(_) => {
            let to = service::established(&ClientPacket::of(me.network, ip, &h.l4, bytes));
            match to.kind {
                ServiceKind::Nat => (to.nat, to.route_to),
                ServiceKind::NewFlow | ServiceKind::Refuse => return to_service_program(),
                ServiceKind::Drop => return Outcome::drop(to.reason).into(),
                ServiceKind::No => (Nat::NONE, ip.dst),
            }
        }
        None => service::reply(ip, &h.l4).unwrap_or((Nat::NONE, ip.dst)),
    };
    // One forwarding stage, inlined once, whatever the translation. Not a
    // VIP: `at` still gives the encap its flow hash. What it leaves to the
    // host may be a reply of the routing mesh.
    let mut outcome = forward::ipv4(me, route_to);
    if outcome.step == Step::Pass {
        if let Some(mesh) = mesh::from_backend(me, ip, &h.l4, !nat.is_none(), route_to) {
            outcome = mesh;
        }
    }
    Plan {
        nat,
        at: Target::of(h),
        outcome,
    }
}

#[inline(always)]
fn to_service_program() -> Plan<EndpointAction> {
    Outcome::act(EndpointAction::step(EndpointStep::ToServiceProgram)).into()
}

#[inline(always)]
fn frame_src_mac(frame: &PacketFrame) -> Option<[u8; 6]> {
    frame.read::<6>(ETH_SRC)
}

/// Turns the request in place into the reply `answer`.
#[inline(always)]
fn write_arp_reply(ctx: &TcContext, answer: &ArpAnswer) -> Result<(), i64> {
    let ArpAnswer {
        ip,
        mac,
        asker_ip,
        asker_mac,
        at,
    } = *answer;
    let arp = at as usize;
    ctx.store(ETH_DST, &asker_mac, 0)?;
    ctx.store(ETH_SRC, &mac, 0)?;
    ctx.store(arp + 6, &[0u8, 2], 0)?; // op: reply
    ctx.store(arp + 8, &mac, 0)?; // sender hardware address
    ctx.store(arp + 14, &ip, 0)?; // sender protocol address
    ctx.store(arp + 18, &asker_mac, 0)?; // target hardware address
    ctx.store(arp + 24, &asker_ip, 0)?; // target protocol address
    Ok(())
}

const _: () = assert!(TC_ACT_REDIRECT == 7);
