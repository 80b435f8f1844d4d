//! TC ingress on the host end of an endpoint veth: packets leaving a
//! container. netd owns this traffic: it checks the source (anti-spoofing),
//! answers ARP, delivers to endpoints of the same network on this host,
//! drops what goes to another network, and hands the rest to the host.
//! On an interface that is not an endpoint's it only counts: one lookup.

use aya_ebpf::{macros::classifier, programs::TcContext};
use netd_common::{
    counters::DropReason,
    icmp,
    maps::{
        LocalEndpointEntry, LOCAL_NO_POLICY, LOCAL_NO_SERVICE, PROG_ICMP_ERROR, PROG_MASQUERADE,
        PROG_SERVICE,
    },
    nat::Nat,
    parse::{parse_without_ipv6_addresses, Frame, Headers, Ipv4, L3, L4},
};

use crate::{
    exits::tc,
    frame::PacketFrame,
    maps::NETD_LOCAL_EPS,
    stages::{arp, forward, masquerade, mesh, service},
    types::{ClientPacket, EndpointAction, EndpointStep, Outcome, Plan, ServiceKind, Step, Target},
};

const ETH_SRC: usize = 6;

#[classifier]
pub fn netd_tc_endpoint(ctx: TcContext) -> i32 {
    let (bytes, ifindex) = tc::arrival(&ctx);
    // Not an endpoint's veth (one netd has not written yet, or has just
    // let go): nothing of netd's applies. Nothing is parsed, and with no
    // endpoint and no event there is nothing for `finish` to do.
    // Read in place, not copied: the entry's frame is the base of the
    // deepest call chain, which has no byte to spare.
    // SAFETY: a map value stays valid for the program's run.
    let Some(me) = (unsafe { NETD_LOCAL_EPS.get(&ifindex) }) else {
        return tc::pass(bytes);
    };
    let skb = ctx.skb.skb;
    tc::start(skb);
    let verdict = verdict(ctx, me, ifindex, bytes);
    tc::finish(skb, verdict);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext, me: &LocalEndpointEntry, ifindex: u32, bytes: u64) -> i32 {
    let frame = PacketFrame::tc(&ctx);
    let plan = decide(&frame, me, bytes);
    if plan.outcome.step == Step::Act {
        // One tail call site for the three: each site is a path the
        // verifier walks.
        let slot = match plan.outcome.action.step {
            EndpointStep::ToServiceProgram => Some(PROG_SERVICE),
            EndpointStep::ToIcmpErrorProgram => Some(PROG_ICMP_ERROR),
            EndpointStep::ToMasqueradeProgram => Some(PROG_MASQUERADE),
            _ => None,
        };
        if let Some(slot) = slot {
            return tc::tail_call(&ctx, slot, bytes);
        }
    }
    let sender_policy_free = me.flags & LOCAL_NO_POLICY != 0;
    tc::judge_and_carry_out(ctx.skb.skb, &plan, ifindex, bytes, sender_policy_free)
}

#[inline(never)]
fn decide(frame: &PacketFrame, me: &LocalEndpointEntry, bytes: u64) -> Plan<EndpointAction> {
    let headers = match parse_without_ipv6_addresses(frame) {
        Ok(headers) => headers,
        Err(error) => return Outcome::drop(error.drop_reason()).into(),
    };
    if let L3::Other(_) = headers.l3 {
        return Outcome::drop(DropReason::UnknownL3).into();
    }
    let Some(src_mac) = frame.read::<6>(ETH_SRC) else {
        return Outcome::drop(DropReason::Malformed).into();
    };
    match headers.l3 {
        L3::Arp(arp) => Plan::from({
            // 0.0.0.0 is a duplicate-address probe (RFC 5227).
            if src_mac != me.mac
                || arp.sender_mac != me.mac
                || (arp.sender_ip != me.ipv4 && arp.sender_ip != [0; 4])
            {
                Outcome::drop(DropReason::Spoofed)
            } else {
                arp::answer(me, &arp, headers.l3_offset)
            }
        }),
        L3::Ipv4(ip) => {
            if src_mac != me.mac || ip.src != me.ipv4 {
                Outcome::drop(DropReason::Spoofed).into()
            } else {
                ipv4(me, &ip, &headers, bytes)
            }
        }
        // Not forwarded by netd yet, and it must not reach the host with
        // nothing but a MAC check (policy would have a bypass).
        L3::Ipv6(_) => Outcome::drop(DropReason::Ipv6).into(),
        L3::Other(_) => Outcome::drop(DropReason::UnknownL3).into(),
    }
}

/// Stages for IPv4 from a container, in order: ICMP errors (to their
/// program), a packet to a VIP (a tracked flow's DNAT here, anything else
/// to the service program), a reply from a backend (reverse NAT), plain
/// forwarding, and for what leaves the cluster the routing mesh's replies,
/// then the network's way out (the masquerade program). A reply is never
/// addressed to a VIP, so a packet to one skips the reverse probe; nor
/// does a sender that backs no service (`LOCAL_NO_SERVICE`) send one.
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
                ServiceKind::NewFlow | ServiceKind::Refuse => {
                    return Outcome::act(EndpointAction::step(EndpointStep::ToServiceProgram))
                        .into()
                }
                ServiceKind::Drop => return Outcome::drop(to.reason).into(),
                ServiceKind::No => (Nat::NONE, ip.dst),
            }
        }
        None if me.flags & LOCAL_NO_SERVICE != 0 => (Nat::NONE, ip.dst),
        None => service::reply(ip, &h.l4).unwrap_or((Nat::NONE, ip.dst)),
    };
    // One forwarding stage, inlined once, whatever the translation. Not a
    // VIP: `at` still gives the encap its flow hash. What it leaves to the
    // host may be a reply of the routing mesh.
    let mut outcome = forward::ipv4(me, route_to);
    if outcome.step == Step::Pass {
        if let Some(mesh) = mesh::from_backend(me, ip, &h.l4, !nat.is_none(), route_to) {
            outcome = mesh;
        } else if nat.is_none() && masquerade::applies(me.network, ip, &h.l4) {
            // Leaving the cluster, from a network with a way out of its
            // own: the masquerade program decides (and judges policy).
            return Outcome::act(EndpointAction::step(EndpointStep::ToMasqueradeProgram)).into();
        }
    }
    Plan {
        nat,
        at: Target::of(h),
        outcome,
    }
}
