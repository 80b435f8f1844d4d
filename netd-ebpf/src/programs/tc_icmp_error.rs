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
    exits::tc,
    frame::PacketFrame,
    maps::NETD_LOCAL_EPS,
    rewrite::quote,
    stages::{forward, icmp_quote::quoted_flow},
    types::{EndpointAction, Outcome, Plan, QuoteNat, Target},
};

#[classifier]
pub fn netd_tc_icmp_error(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc::finish(skb, verdict);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let (bytes, ifindex) = tc::arrival(&ctx);
    let mut quote = QuoteNat::default();
    let plan = decide(skb, ifindex, &mut quote);
    if quote.set && write_quote(skb, &quote).is_err() {
        return tc::drop(skb, DropReason::NatFailed, bytes);
    }
    tc::carry_out(skb, &plan, ifindex, bytes)
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
    quote::write(&frame, q)?;
    if q.hairpin {
        quote::write_hairpin(&frame, q)?;
    }
    Ok(())
}
