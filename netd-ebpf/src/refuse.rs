//! TC, tail-called by the service program for a new flow to a service
//! port without a backend: the packet becomes netd's answer
//! (`netd_common::refusal`: a TCP RST or an ICMP port unreachable), sent
//! back to the container. The packet itself counts as a `no_backend` drop.

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_skb_change_tail},
    macros::classifier,
    programs::TcContext,
};
use netd_common::{
    counters::DropReason,
    parse::parse_without_ipv6_addresses,
    refusal::{port_unreachable, tcp_reset, RESET_LEN, UNREACHABLE_LEN},
    service::{PROTO_TCP, PROTO_UDP},
};

use crate::{endpoint, frame::PacketFrame, metrics, nat::Target};

#[classifier]
pub fn netd_tc_refuse(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = netd_tc_refuse_verdict(ctx);
    // Refused whatever the verdict (the answer goes back to the sender).
    crate::endpoint_stats::after_tc(skb, TC_ACT_SHOT);
    crate::events::after_tc(skb);
    verdict
}

#[inline(always)]
fn netd_tc_refuse_verdict(ctx: TcContext) -> i32 {
    let (bytes, ifindex) = endpoint::arrival(&ctx);
    let at = match parse_without_ipv6_addresses(&PacketFrame::tc(&ctx)) {
        Ok(h) => Target::of(&h),
        Err(e) => return endpoint::drop(e.drop_reason(), bytes),
    };
    metrics::count_drop(endpoint::HOOK, DropReason::NoBackend, bytes);
    // The event carries the client's packet, not the answer it becomes.
    crate::events::after_tc(ctx.skb.skb);
    if write(ctx.skb.skb, &at).is_err() {
        return TC_ACT_SHOT;
    }
    // Back out of the host veth, to the container that sent it.
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

const ETH_ALEN: usize = 6;

/// Rewrites the TCP segment or UDP datagram `at` into its refusal: the
/// Ethernet addresses swapped, then the answer's IPv4 packet, the frame cut
/// (or grown) to fit. Packets with IP options, and a RST (never answered),
/// are refused with `Err`: the caller drops them.
///
/// A BPF call with its own frame: the answer is built on the stack.
#[inline(never)]
pub fn write(skb: *mut __sk_buff, at: &Target) -> Result<(), ()> {
    let ctx = &TcContext::new(skb);
    let frame = PacketFrame::tc(ctx);
    let (l3, l4) = (at.l3 as usize, at.l4 as usize);
    let ip: [u8; 20] = frame.load(l3)?;
    if ip[0] != 0x45 || l4 != l3 + 20 {
        return Err(());
    }
    let macs: [u8; 2 * ETH_ALEN] = frame.load(0)?;
    match at.proto {
        PROTO_TCP => {
            let tcp: [u8; 20] = frame.load(l4)?;
            let total = u16::from_be_bytes([ip[2], ip[3]]);
            let headers = 20 + u16::from(tcp[12] >> 4) * 4;
            let answer = tcp_reset(&ip, &tcp, total.saturating_sub(headers)).ok_or(())?;
            resize(ctx, l3 + RESET_LEN)?;
            ctx.store(l3, &answer, 0).map_err(|_| ())?;
        }
        PROTO_UDP => {
            let udp: [u8; 8] = frame.load(l4)?;
            let answer = port_unreachable(&ip, &udp);
            resize(ctx, l3 + UNREACHABLE_LEN)?;
            ctx.store(l3, &answer, 0).map_err(|_| ())?;
        }
        _ => return Err(()),
    }
    let mut swapped = [0u8; 2 * ETH_ALEN];
    swapped[..ETH_ALEN].copy_from_slice(&macs[ETH_ALEN..]);
    swapped[ETH_ALEN..].copy_from_slice(&macs[..ETH_ALEN]);
    ctx.store(0, &swapped, 0).map_err(|_| ())
}

#[inline(always)]
fn resize(ctx: &TcContext, len: usize) -> Result<(), ()> {
    // SAFETY: a plain helper call on the program's own skb.
    match unsafe { bpf_skb_change_tail(ctx.skb.skb as *mut _, len as u32, 0) } {
        0 => Ok(()),
        _ => Err(()),
    }
}
