//! XDP, tail-called by the uplink program for a reply of a masqueraded
//! flow: translated back to its endpoint's address and port (the frame's
//! checksums are whole on a NIC) and delivered through the delivery
//! program, which judges the endpoint's ingress policy.

use aya_ebpf::{macros::xdp, programs::XdpContext};
use netd_common::{
    counters::DropReason,
    parse::{parse, Frame},
};

use crate::{
    exits::xdp,
    frame::PacketFrame,
    rewrite::{ethernet, nat, quote},
    stages::masquerade,
    types::{PolicyFlow, CHECK_INGRESS},
};

#[xdp]
pub fn netd_xdp_masq_reply(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    let verdict = verdict(ctx);
    xdp::finish(raw);
    verdict
}

#[inline(always)]
fn verdict(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    let mut r = masquerade::Reverse::default();
    match decide(&frame, &mut r) {
        Ok(true) => {}
        Ok(false) => return xdp::pass(bytes),
        Err(reason) => return xdp::drop(reason, bytes),
    }
    let written = if r.error {
        quote::unmasquerade(&frame, &r.quote)
    } else {
        nat::apply(&frame, 0, &r.at, &r.nat)
    };
    if written.is_err() {
        return xdp::drop(DropReason::NatFailed, bytes);
    }
    if ethernet::readdress_frame(&frame, r.into.mac, r.into.gateway_mac).is_err() {
        return xdp::drop(DropReason::Malformed, bytes);
    }
    if r.error {
        // It belongs to its flow: policy does not judge it.
        return xdp::redirect(r.into.ifindex, bytes);
    }
    let flow = PolicyFlow::of(&r.at, &r.nat, CHECK_INGRESS);
    xdp::deliver(&ctx, &flow, r.into.ifindex, bytes)
}

/// The reverse translation into `r`: Ok(false) for a packet that is no
/// masqueraded flow's. A BPF call: the parsed headers stay in its frame.
#[inline(never)]
fn decide(frame: &PacketFrame, r: &mut masquerade::Reverse) -> Result<bool, DropReason> {
    // The uplink program sent only untagged IPv4 here. Said so up front,
    // LLVM drops the parser's other branches, whose partly set headers it
    // would otherwise copy whole (the verifier refuses reading what an
    // ARP parse never wrote).
    if frame.read::<2>(12) != Some([0x08, 0x00]) {
        return Ok(false);
    }
    let headers = parse(frame).map_err(|e| e.drop_reason())?;
    match masquerade::reverse(frame, &headers)? {
        Some(found) => {
            *r = found;
            Ok(true)
        }
        None => Ok(false),
    }
}
