//! TC, tail-called by the endpoint program for an ICMP error from a
//! container. When the packet it quotes is a flow this host translated
//! (a backend's error about `client → backend:target`), the quote becomes
//! `client → VIP:port` again, and the error's source the VIP when the
//! backend sent it: the client's stack then finds the socket it concerns.
//! Then the error is forwarded like any packet. The source and MAC were
//! checked by the endpoint program.

use aya_ebpf::{bindings::__sk_buff, macros::classifier, programs::TcContext};
use netd_common::{
    counters::DropReason,
    nat::Nat,
    parse::{parse_without_ipv6_addresses, L3},
};

use crate::{
    endpoint::{self, carry_out},
    forward,
    frame::PacketFrame,
    icmp_quote::{self, quoted_flow, QuoteNat},
    maps::NETD_LOCAL_EPS,
    nat::Target,
    outcome::{EndpointAction, Outcome, Plan},
};

#[classifier]
pub fn netd_tc_icmp_error(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = netd_tc_icmp_error_verdict(ctx);
    crate::endpoint_stats::after_tc(skb, verdict);
    crate::events::after_tc(skb);
    verdict
}

#[inline(always)]
fn netd_tc_icmp_error_verdict(ctx: TcContext) -> i32 {
    let (bytes, ifindex) = endpoint::arrival(&ctx);
    let mut quote = QuoteNat::default();
    let plan = decide(ctx.skb.skb, ifindex, &mut quote);
    if quote.set && write_quote(ctx.skb.skb, &quote).is_err() {
        return endpoint::drop(DropReason::NatFailed, bytes);
    }
    carry_out(ctx.skb.skb, &plan, ifindex, bytes)
}

#[inline(never)]
fn decide(skb: *mut __sk_buff, ifindex: u32, quote: &mut QuoteNat) -> Plan<EndpointAction> {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    let h = match parse_without_ipv6_addresses(&frame) {
        Ok(h) => h,
        Err(e) => return Outcome::drop(e.drop_reason()).into(),
    };
    let L3::Ipv4(ip) = h.l3 else {
        return Outcome::drop(DropReason::UnknownL3).into();
    };
    // SAFETY: the value is copied out at once.
    let Some(me) = (unsafe { NETD_LOCAL_EPS.get(&ifindex) }).copied() else {
        return Outcome::pass().into();
    };
    let mut to = ip.dst;
    if let Some(q) = quoted_flow(&frame, h.l3_offset, h.l4_offset, ip.src) {
        if q.hairpin {
            to = q.client;
        }
        *quote = q;
    }
    Plan {
        nat: Nat::NONE,
        at: Target::default(),
        outcome: forward::ipv4(&me, to),
    }
}

/// The writes, in a frame of their own.
#[inline(never)]
fn write_quote(skb: *mut __sk_buff, q: &QuoteNat) -> Result<(), ()> {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    icmp_quote::write(&frame, q)?;
    if q.hairpin {
        icmp_quote::write_hairpin(&frame, q)?;
    }
    Ok(())
}
