//! TC, tail-called by the TC uplink program for a reply of a masqueraded
//! flow: translated back to its endpoint's address and port through the
//! checksum helpers (a veth's peer may leave the checksum partial) and
//! delivered, the endpoint's ingress policy judging it, here (no tail
//! call: this program has the stack).

use aya_ebpf::{bindings::__sk_buff, macros::classifier, programs::TcContext};
use netd_common::{
    counters::DropReason,
    parse::{parse, Frame},
};

use crate::{
    exits::tc_uplink,
    frame::PacketFrame,
    rewrite::{ethernet, nat, quote},
    stages::masquerade,
    types::{PolicyFlow, CHECK_INGRESS},
};

#[classifier]
pub fn netd_tc_uplink_masq_reply(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let verdict = verdict(ctx);
    tc_uplink::finish(skb);
    verdict
}

#[inline(always)]
fn verdict(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    let bytes = u64::from(ctx.len());
    let mut r = masquerade::Reverse::default();
    match decide(skb, &mut r) {
        Ok(true) => {}
        Ok(false) => return tc_uplink::pass(bytes),
        Err(reason) => return tc_uplink::drop(reason, bytes),
    }
    // An error's checksums are whole (the kernel never offloads ICMP's):
    // written directly, as at XDP.
    let written = if r.error {
        quote::unmasquerade(&PacketFrame::tc(&ctx), &r.quote)
    } else {
        nat::apply(&ctx, 0, &r.at, &r.nat)
    };
    if written.is_err() {
        return tc_uplink::drop(DropReason::NatFailed, bytes);
    }
    if ethernet::readdress(&ctx, r.into.mac, r.into.gateway_mac).is_err() {
        return tc_uplink::drop(DropReason::Malformed, bytes);
    }
    if r.error {
        // It belongs to its flow: policy does not judge it.
        return tc_uplink::redirect_peer(r.into.ifindex, bytes);
    }
    let flow = PolicyFlow::of(&r.at, &r.nat, CHECK_INGRESS);
    // No tail call to the delivery program: this one has the stack.
    tc_uplink::deliver_here(skb, &flow, r.into.ifindex, bytes)
}

/// The reverse translation into `r`: Ok(false) for a packet that is no
/// masqueraded flow's. A BPF call with its own frame.
#[inline(never)]
fn decide(skb: *mut __sk_buff, r: &mut masquerade::Reverse) -> Result<bool, DropReason> {
    let frame = PacketFrame::tc(&TcContext::new(skb));
    // Only untagged IPv4 comes here; said so up front, LLVM drops the
    // parser's other branches (see `netd_xdp_masq_reply`).
    if frame.read::<2>(12) != Some([0x08, 0x00]) {
        return Ok(false);
    }
    let headers = parse(&frame).map_err(|e| e.drop_reason())?;
    match masquerade::reverse(&frame, &headers)? {
        Some(found) => {
            *r = found;
            Ok(true)
        }
        None => Ok(false),
    }
}
