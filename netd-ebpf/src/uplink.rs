//! XDP on an uplink: packets arriving from the underlay.
//!
//! Only traffic netd owns (VXLAN from known hosts, published ports) will be
//! acted on; everything else goes to the host stack untouched, so attaching
//! netd to an uplink never breaks the host's own traffic. The one exception
//! is a packet the host would discard anyway (a truncated header, a bad IHL,
//! ...): it is dropped here, early and counted, like an XDP prefilter.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use netd_common::{
    counters::{Hook, Verdict},
    parse::{parse, Frame},
};

use crate::{frame::PacketFrame, metrics, outcome::Outcome};

const HOOK: Hook = Hook::XdpUplink;

#[xdp]
pub fn netd_xdp_uplink(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    match decide(&frame) {
        Outcome::Pass => {
            metrics::count_verdict(HOOK, Verdict::Pass, bytes);
            xdp_action::XDP_PASS
        }
        Outcome::Drop(reason) => {
            metrics::count_drop(HOOK, reason, bytes);
            xdp_action::XDP_DROP
        }
        // No uplink stage delivers or answers yet (VXLAN decap comes with the overlay).
        Outcome::Deliver { .. } | Outcome::ArpReply { .. } => {
            metrics::count_verdict(HOOK, Verdict::Pass, bytes);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn decide(frame: &PacketFrame) -> Outcome {
    let _headers = match parse(frame) {
        Ok(headers) => headers,
        Err(error) if error.invalid_for_every_receiver() => {
            return Outcome::Drop(error.drop_reason());
        }
        Err(_) => return Outcome::Pass,
    };
    // Stages to come, in order: VXLAN decap (overlay), published ports (service).
    Outcome::Pass
}
