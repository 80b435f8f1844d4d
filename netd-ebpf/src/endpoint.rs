//! TC ingress on the host end of an endpoint veth: packets leaving a
//! container. netd owns this traffic: it checks the source (anti-spoofing),
//! answers ARP, delivers to endpoints of the same network on this host,
//! drops what goes to another network, and hands the rest to the host.
//! On an interface that is not an endpoint's it only parses and counts.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    parse::{parse, Frame, Headers, L3},
};

use crate::{
    arp, forward,
    frame::PacketFrame,
    maps::NETD_LOCAL_EPS,
    metrics,
    outcome::{Delivery, EndpointAction, Outcome},
    overlay,
};

const HOOK: Hook = Hook::TcEndpoint;
const ETH_DST: usize = 0;
const ETH_SRC: usize = 6;

#[classifier]
pub fn netd_tc_endpoint(ctx: TcContext) -> i32 {
    let bytes = u64::from(ctx.len());
    // SAFETY: reading a field of the skb the program was given.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let frame = PacketFrame::tc(&ctx);
    let (outcome, headers) = decide(&frame, ifindex);
    match outcome {
        Outcome::Pass => {
            metrics::count_verdict(HOOK, Verdict::Pass, bytes);
            TC_ACT_OK
        }
        Outcome::Drop(reason) => drop(&ctx, reason, bytes),
        Outcome::Act(EndpointAction::Deliver(Delivery { ifindex, mac })) => {
            // Usually the sender already addressed the peer (its ARP answer):
            // only a frame sent to the gateway's MAC needs the rewrite.
            let addressed = frame.read::<6>(ETH_DST) == Some(mac);
            if !addressed && ctx.store(ETH_DST, &mac, 0).is_err() {
                return drop(&ctx, DropReason::Malformed, bytes);
            }
            metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
            // SAFETY: plain helper call; the kernel checks the ifindex.
            unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
        }
        Outcome::Act(EndpointAction::Encap(e)) => {
            let hash = headers
                .as_ref()
                .map(netd_common::flow::headers_hash)
                .unwrap_or(0);
            if overlay::write_encap(&ctx, &e, hash).is_err() {
                return drop(&ctx, DropReason::EncapFailed, bytes);
            }
            metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
            // The kernel picks the next hop and its MAC for the outer header.
            // SAFETY: plain helper call; the kernel checks the ifindex.
            unsafe { bpf_redirect_neigh(e.uplink, core::ptr::null_mut(), 0, 0) as i32 }
        }
        Outcome::Act(EndpointAction::ArpReply { ip, mac }) => match headers {
            Some(h) if write_arp_reply(&ctx, &h, ip, mac).is_ok() => {
                metrics::count_verdict(HOOK, Verdict::Tx, bytes);
                // Back out of the host veth, to the container that asked.
                // SAFETY: plain helper call.
                unsafe { bpf_redirect(ifindex, 0) as i32 }
            }
            _ => drop(&ctx, DropReason::Malformed, bytes),
        },
    }
}

#[inline(always)]
fn drop(ctx: &TcContext, reason: DropReason, bytes: u64) -> i32 {
    metrics::count_drop(HOOK, reason, bytes);
    debug!(ctx, "endpoint: drop, reason {}", reason as u32);
    TC_ACT_SHOT
}

#[inline(always)]
fn decide(frame: &PacketFrame, ifindex: u32) -> (Outcome<EndpointAction>, Option<Headers>) {
    let headers = match parse(frame) {
        Ok(headers) => headers,
        Err(error) => return (Outcome::Drop(error.drop_reason()), None),
    };
    if let L3::Other(_) = headers.l3 {
        return (Outcome::Drop(DropReason::UnknownL3), Some(headers));
    }
    // SAFETY: the value is copied out at once.
    let Some(me) = (unsafe { NETD_LOCAL_EPS.get(&ifindex) }).copied() else {
        return (Outcome::Pass, Some(headers));
    };
    let Some(src_mac) = frame_src_mac(frame) else {
        return (Outcome::Drop(DropReason::Malformed), Some(headers));
    };
    let outcome = match headers.l3 {
        L3::Arp(arp) => {
            // 0.0.0.0 is a duplicate-address probe (RFC 5227).
            if src_mac != me.mac
                || arp.sender_mac != me.mac
                || (arp.sender_ip != me.ipv4 && arp.sender_ip != [0; 4])
            {
                Outcome::Drop(DropReason::Spoofed)
            } else {
                arp::answer(&me, &arp)
            }
        }
        L3::Ipv4(ip) => {
            if src_mac != me.mac || ip.src != me.ipv4 {
                Outcome::Drop(DropReason::Spoofed)
            } else {
                forward::ipv4(&me, ip.dst)
            }
        }
        // Not forwarded by netd yet, and it must not reach the host with
        // nothing but a MAC check (policy would have a bypass).
        L3::Ipv6(_) => Outcome::Drop(DropReason::Ipv6),
        L3::Other(_) => Outcome::Drop(DropReason::UnknownL3),
    };
    (outcome, Some(headers))
}

#[inline(always)]
fn frame_src_mac(frame: &PacketFrame) -> Option<[u8; 6]> {
    frame.read::<6>(ETH_SRC)
}

/// Turns the request in place into the reply "`ip` is at `mac`".
#[inline(always)]
fn write_arp_reply(ctx: &TcContext, h: &Headers, ip: [u8; 4], mac: [u8; 6]) -> Result<(), i64> {
    let L3::Arp(req) = h.l3 else { return Err(-1) };
    let arp = h.l3_offset as usize;
    ctx.store(ETH_DST, &req.sender_mac, 0)?;
    ctx.store(ETH_SRC, &mac, 0)?;
    ctx.store(arp + 6, &[0u8, 2], 0)?; // op: reply
    ctx.store(arp + 8, &mac, 0)?; // sender hardware address
    ctx.store(arp + 14, &ip, 0)?; // sender protocol address
    ctx.store(arp + 18, &req.sender_mac, 0)?; // target hardware address
    ctx.store(arp + 24, &req.sender_ip, 0)?; // target protocol address
    Ok(())
}

const _: () = assert!(TC_ACT_REDIRECT == 7);
