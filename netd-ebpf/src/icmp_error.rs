//! TC, tail-called by the endpoint program for an ICMP error from a
//! container. When the packet it quotes is a flow this host translated
//! (a backend's error about `client → backend:target`), the quote becomes
//! `client → VIP:port` again, and the error's source the VIP when the
//! backend sent it: the client's stack then finds the socket it concerns.
//! Then the error is forwarded like any packet. The source and MAC were
//! checked by the endpoint program.

use aya_ebpf::{bindings::__sk_buff, macros::classifier, programs::TcContext};
use netd_common::{
    checksum,
    counters::DropReason,
    icmp::{self, Quote, ICMP_CHECK, ICMP_HLEN},
    nat::{Nat, IP_CHECK, IP_SRC},
    parse::{parse_without_ipv6_addresses, Frame, L3},
    service::{CtTuple, PROTO_TCP, PROTO_UDP},
};

use crate::{
    endpoint::{self, carry_out},
    forward,
    frame::PacketFrame,
    maps::{NETD_LOCAL_EPS, NETD_REV_NAT},
    nat::Target,
    outcome::{EndpointAction, Outcome, Plan},
};

#[classifier]
pub fn netd_tc_icmp_error(ctx: TcContext) -> i32 {
    let (bytes, ifindex) = endpoint::arrival(&ctx);
    let mut quote = QuoteNat::default();
    let plan = decide(ctx.skb.skb, ifindex, &mut quote);
    if quote.set && write_quote(ctx.skb.skb, &quote).is_err() {
        return endpoint::drop(&ctx, DropReason::NatFailed, bytes);
    }
    carry_out(ctx.skb.skb, &plan, ifindex, bytes)
}

/// An ICMP error's translation: its quote's destination becomes `to_ip`
/// / `to_port` again, and its own source `src_to`.
#[derive(Clone, Copy, Default)]
struct QuoteNat {
    set: bool,
    l3: u16,
    /// Where the quoted IPv4 header starts (after the ICMP header).
    quote: u16,
    proto: u8,
    to_ip: [u8; 4],
    to_port: [u8; 2],
    src_from: [u8; 4],
    src_to: [u8; 4],
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
    if let Some(q) = quoted_flow(&frame, h.l3_offset, h.l4_offset, ip.src) {
        *quote = q;
    }
    Plan {
        nat: Nat::NONE,
        at: Target::default(),
        outcome: forward::ipv4(&me, ip.dst),
    }
}

/// The translation of an error whose quote is a flow this host translated
/// (its reply tuple is in `NETD_REV_NAT`). A hairpin flow's errors are not
/// translated.
#[inline(always)]
fn quoted_flow(frame: &PacketFrame, l3: u16, l4: u16, src: [u8; 4]) -> Option<QuoteNat> {
    let at = l4 as usize + ICMP_HLEN;
    let quoted = frame.read::<20>(at)?;
    let ports = frame.read::<4>(at + 20)?;
    let proto = quoted[9];
    if quoted[0] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let client = [quoted[12], quoted[13], quoted[14], quoted[15]];
    let backend = [quoted[16], quoted[17], quoted[18], quoted[19]];
    let reply = CtTuple {
        src: backend,
        dst: client,
        src_port: [ports[2], ports[3]],
        dst_port: [ports[0], ports[1]],
        proto,
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out at once.
    let rev = (unsafe { NETD_REV_NAT.get(&reply) }).copied()?;
    if rev.client != client {
        return None;
    }
    Some(QuoteNat {
        set: true,
        l3,
        quote: at as u16,
        proto,
        to_ip: rev.vip,
        to_port: rev.vip_port,
        src_from: src,
        src_to: if src == backend { rev.vip } else { src },
    })
}

/// Writes the translation directly: an error's checksums are complete
/// (the kernel never leaves an ICMP checksum to offload), so plain
/// incremental arithmetic (`netd_common::icmp`) keeps them right.
#[inline(never)]
fn write_quote(skb: *mut __sk_buff, q: &QuoteNat) -> Result<(), ()> {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    let (l3, at) = (q.l3 as usize, q.quote as usize);
    let icmp_check_at = at - ICMP_HLEN + ICMP_CHECK;
    let l4_check_at = at + 20 + if q.proto == PROTO_TCP { 16 } else { 6 };
    let fields = Quote {
        icmp_check: u16::from_be_bytes(frame.load::<2>(icmp_check_at)?),
        ip_check: u16::from_be_bytes(frame.load::<2>(at + IP_CHECK)?),
        dst: frame.load::<4>(at + 16)?,
        proto: q.proto,
        dst_port: frame.load::<2>(at + 22)?,
        // A quote may stop short of the transport checksum (8 bytes is all
        // RFC 792 promises).
        l4_check: frame.load::<2>(l4_check_at).ok().map(u16::from_be_bytes),
    };
    let new = icmp::rewrite_quoted_dst(&fields, q.to_ip, q.to_port);
    frame.put(at + 16, q.to_ip)?;
    frame.put(at + 22, q.to_port)?;
    frame.put(at + IP_CHECK, new.ip_check.to_be_bytes())?;
    if let Some(check) = new.l4_check {
        frame.put(l4_check_at, check.to_be_bytes())?;
    }
    frame.put(icmp_check_at, new.icmp_check.to_be_bytes())?;
    if q.src_to != q.src_from {
        let check = u16::from_be_bytes(frame.load::<2>(l3 + IP_CHECK)?);
        let check = checksum::replace_u32(check, q.src_from, q.src_to);
        frame.put(l3 + IP_CHECK, check.to_be_bytes())?;
        frame.put(l3 + IP_SRC, q.src_to)?;
    }
    Ok(())
}
