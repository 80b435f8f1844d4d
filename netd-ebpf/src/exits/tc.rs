//! The TC programs' exits (the endpoint side: every TC program of netd
//! counts as `tc_endpoint`).

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    parse::Frame,
};

use crate::{
    frame::PacketFrame,
    maps::NETD_PROGS,
    observe::{counters, endpoint_stats, events},
    rewrite::{answers, encap, ethernet, ip, nat},
    stages::policy,
    types::{EndpointAction, EndpointStep, Plan, PolicyFlow, Step, CHECK_EGRESS, CHECK_INGRESS},
};

pub const HOOK: Hook = Hook::TcEndpoint;
const ETH_DST: usize = 0;

/// A TC entry point's first step.
#[inline(always)]
pub fn start(skb: *mut __sk_buff) {
    endpoint_stats::arrived(skb);
}

/// A TC entry point's last step: the sender's or receiver's counters, and
/// the event noted for the monitor, if one listens.
#[inline(always)]
pub fn finish(skb: *mut __sk_buff, verdict: i32) {
    endpoint_stats::after_tc(skb, verdict);
    events::after_tc(skb, HOOK);
}

/// What every endpoint-side program counts a packet by and where it came
/// from: its length, and the host veth it left its container through.
#[inline(always)]
pub fn arrival(ctx: &TcContext) -> (u64, u32) {
    // SAFETY: reading a field of the skb the program was given.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    (u64::from(ctx.len()), ifindex)
}

/// Counts the packet as dropped for `reason`, for the hook, the monitor
/// and the endpoint that sent it; the verdict is the caller's.
#[inline(always)]
pub fn count_drop(skb: *mut __sk_buff, reason: DropReason, bytes: u64) {
    counters::count_drop(HOOK, reason, bytes);
    events::note_drop(reason);
    endpoint_stats::dropping(skb, reason);
}

#[inline(always)]
pub fn drop(skb: *mut __sk_buff, reason: DropReason, bytes: u64) -> i32 {
    count_drop(skb, reason, bytes);
    TC_ACT_SHOT
}

/// Hands the packet on untouched, counted.
#[inline(always)]
pub fn pass(bytes: u64) -> i32 {
    counters::count_verdict(HOOK, Verdict::Pass, bytes);
    TC_ACT_OK
}

/// A drop by policy: counted as `policy_denied` (the rule has its own count).
#[inline(always)]
pub fn denied(skb: *mut __sk_buff, bytes: u64) -> i32 {
    drop(skb, DropReason::PolicyDenied, bytes)
}

/// Hands the packet, as it came, to the program in `NETD_PROGS[slot]`;
/// returns only when the slot is empty, which is a counted drop.
#[inline(always)]
pub fn tail_call(ctx: &TcContext, slot: u32, bytes: u64) -> i32 {
    // SAFETY: the slot holds a program of this type or nothing; on success
    // this call does not return.
    unsafe { NETD_PROGS.tail_call(ctx, slot) };
    drop(ctx.skb.skb, DropReason::NoServiceProgram, bytes)
}

/// What policy judges of a plan: an IPv4 packet leaving its container,
/// for its sender's egress and, delivered here, its receiver's ingress.
/// ARP answers and drops are not judged.
#[inline(always)]
pub fn policy_flow(plan: &Plan<EndpointAction>) -> Option<PolicyFlow> {
    let o = &plan.outcome;
    let check = match (o.step, o.action.step) {
        (Step::Act, EndpointStep::Deliver) => CHECK_EGRESS | CHECK_INGRESS,
        (Step::Act, EndpointStep::Encap | EndpointStep::Uplink | EndpointStep::Masquerade)
        | (Step::Pass, _) => CHECK_EGRESS,
        _ => return None,
    };
    if plan.at.l3 == 0 {
        return None;
    }
    Some(PolicyFlow::of(&plan.at, &plan.nat, check))
}

/// Policy's verdict on `plan`, then [`carry_out`] for what it admits. A
/// BPF call of its own, so the policy flow is not in the entry's frame,
/// which the decision's frame is stacked on. (The service program, whose
/// deepest call is shallower, calls the two itself.) Policy judges only
/// the ends that may have one: not the sender when `sender_policy_free`,
/// nor a receiver here whose entry says it has none; with neither left,
/// it is not asked at all.
#[inline(never)]
pub fn judge_and_carry_out(
    skb: *mut __sk_buff,
    plan: &Plan<EndpointAction>,
    ifindex: u32,
    bytes: u64,
    sender_policy_free: bool,
) -> i32 {
    // `admitted`'s body, written out: calling it (inlined or not) made
    // the verifier walk carry_out once per policy path, and the endpoint
    // program's load 4-7x slower.
    if let Some(mut flow) = policy_flow(plan) {
        // Without branches: each would be a path the verifier walks.
        let open = (u8::from(sender_policy_free) * CHECK_EGRESS)
            | (u8::from(plan.outcome.action.receiver_policy_free) * CHECK_INGRESS);
        flow.check &= !open;
        if flow.check != 0 {
            flow.tcp_flags = policy::tc_tcp_flags(skb, plan.at.proto, plan.at.l4);
            if policy::admit(&flow, bytes) != policy::ADMITTED {
                return denied(skb, bytes);
            }
        }
    }
    carry_out(skb, plan, ifindex, bytes)
}

/// Policy's verdict on `plan`: whether it may go on (what policy does not
/// judge may).
#[inline(always)]
pub fn admitted(skb: *mut __sk_buff, plan: &Plan<EndpointAction>, bytes: u64) -> bool {
    let Some(mut flow) = policy_flow(plan) else {
        return true;
    };
    flow.tcp_flags = policy::tc_tcp_flags(skb, plan.at.proto, plan.at.l4);
    policy::admit(&flow, bytes) == policy::ADMITTED
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
        return drop(skb, DropReason::NatFailed, bytes);
    }
    match outcome.step {
        Step::Pass => {
            counters::count_verdict(HOOK, Verdict::Pass, bytes);
            TC_ACT_OK
        }
        Step::Drop => drop(skb, outcome.reason, bytes),
        Step::Act => match action.step {
            EndpointStep::Deliver => {
                let to = action.deliver;
                if !addressed && ethernet::set_destination(ctx, &to.mac).is_err() {
                    return drop(skb, DropReason::Malformed, bytes);
                }
                endpoint_stats::delivering_to(skb, to.ifindex);
                counters::count_verdict(HOOK, Verdict::Redirect, bytes);
                // SAFETY: plain helper call; the kernel checks the ifindex.
                unsafe { bpf_redirect_peer(to.ifindex, 0) as i32 }
            }
            EndpointStep::Encap => {
                let e = action.encap;
                if encap::write_tc(ctx, &e, plan.at.flow_hash()).is_err() {
                    return drop(skb, DropReason::EncapFailed, bytes);
                }
                counters::count_verdict(HOOK, Verdict::Redirect, bytes);
                // The kernel picks the next hop and its MAC for the outer header.
                // SAFETY: plain helper call; the kernel checks the ifindex.
                unsafe { bpf_redirect_neigh(e.uplink, core::ptr::null_mut(), 0, 0) as i32 }
            }
            EndpointStep::Uplink => {
                let out = action.deliver;
                if ethernet::readdress(ctx, out.mac, out.gateway_mac).is_err() {
                    return drop(skb, DropReason::Malformed, bytes);
                }
                counters::count_verdict(HOOK, Verdict::Redirect, bytes);
                // Out of the uplink, addressed already: no neighbour lookup.
                // SAFETY: plain helper call; the kernel checks the ifindex.
                unsafe { bpf_redirect(out.ifindex, 0) as i32 }
            }
            EndpointStep::ArpReply => {
                if answers::arp_reply(ctx, &action.arp).is_err() {
                    return drop(skb, DropReason::Malformed, bytes);
                }
                counters::count_verdict(HOOK, Verdict::Tx, bytes);
                // Back out of the host veth, to the container that asked.
                // SAFETY: plain helper call.
                unsafe { bpf_redirect(ifindex, 0) as i32 }
            }
            // Handled by the entry points before this.
            EndpointStep::ToServiceProgram
            | EndpointStep::ToIcmpErrorProgram
            | EndpointStep::ToMasqueradeProgram
            | EndpointStep::Masquerade => drop(skb, DropReason::Malformed, bytes),
        },
    }
}

/// Sends a masqueraded packet out of the host: `plan`'s SNAT applied, one
/// hop less to live, out of the device the FIB chose
/// (`deliver.ifindex`), the kernel resolving the next hop. Kept out of
/// `carry_out`: the endpoint program never masquerades, yet a step there
/// would cost its load time (the verifier walks every arm). A BPF call
/// with its own frame.
#[inline(never)]
pub fn send_masqueraded(skb: *mut __sk_buff, plan: &Plan<EndpointAction>, bytes: u64) -> i32 {
    let ctx = &TcContext::new(skb);
    if nat::apply(ctx, 0, &plan.at, &plan.nat).is_err() {
        return drop(skb, DropReason::NatFailed, bytes);
    }
    // Routed out of the host: one hop, as its forwarding counts.
    if ip::decrement_ttl(ctx, plan.at.l3 as usize).is_err() {
        return drop(skb, DropReason::Malformed, bytes);
    }
    counters::count_verdict(HOOK, Verdict::Redirect, bytes);
    // SAFETY: plain helper call; the kernel checks the ifindex.
    unsafe {
        bpf_redirect_neigh(
            plan.outcome.action.deliver.ifindex,
            core::ptr::null_mut(),
            0,
            0,
        ) as i32
    }
}

const _: () = assert!(TC_ACT_REDIRECT == 7);
