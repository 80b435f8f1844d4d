//! XDP on an uplink: packets arriving from the underlay.
//!
//! Only traffic netd owns (VXLAN from the cluster's hosts to this host,
//! later published ports) is acted on; everything else goes to the host
//! stack untouched, so attaching netd to an uplink never breaks the host's
//! own traffic. The one exception is a packet the host would discard anyway
//! (a truncated header, a bad IHL, ...): it is dropped here, early and
//! counted, like an XDP prefilter.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head},
    macros::xdp,
    programs::XdpContext,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    parse::{parse, Frame},
};

use crate::{
    frame::PacketFrame,
    icmp_quote::{self, QuoteNat},
    metrics, nat,
    outcome::{Outcome, Step, UplinkAction},
    overlay,
};

const HOOK: Hook = Hook::XdpUplink;

#[xdp]
pub fn netd_xdp_uplink(ctx: XdpContext) -> u32 {
    let frame = PacketFrame::xdp(&ctx);
    let bytes = frame.wire_len() as u64;
    let outcome = decide(&frame);
    match outcome.step {
        Step::Act => {
            let decap = outcome.action;
            if nat::apply(&frame, decap.strip as usize, &decap.inner, &decap.nat).is_err()
                || (decap.quote.set && write_quote(&frame, decap.strip, &decap.quote).is_err())
            {
                metrics::count_drop(HOOK, DropReason::NatFailed, bytes);
                return xdp_action::XDP_DROP;
            }
            // SAFETY: plain helper calls on our own packet; the kernel checks bounds.
            if unsafe { bpf_xdp_adjust_head(ctx.ctx, decap.strip as i32) } != 0 {
                metrics::count_drop(HOOK, DropReason::Malformed, bytes);
                return xdp_action::XDP_DROP;
            }
            metrics::count_verdict(HOOK, Verdict::Redirect, bytes);
            // SAFETY: as above.
            unsafe { bpf_redirect(decap.into.ifindex, 0) as u32 }
        }
        Step::Drop => {
            metrics::count_drop(HOOK, outcome.reason, bytes);
            xdp_action::XDP_DROP
        }
        Step::Pass => {
            metrics::count_verdict(HOOK, Verdict::Pass, bytes);
            xdp_action::XDP_PASS
        }
    }
}

/// Translates the quote of the ICMP error `strip` bytes into the frame.
/// Inlined: as a BPF call, the spills around it made the chain longer
/// than the entry's frame is now (408 bytes).
#[inline(always)]
fn write_quote(frame: &PacketFrame, strip: u32, q: &QuoteNat) -> Result<(), ()> {
    icmp_quote::write(&frame.from(strip as usize).ok_or(())?, q)
}

#[inline(always)]
fn decide(frame: &PacketFrame) -> Outcome<UplinkAction> {
    let headers = match parse(frame) {
        Ok(headers) => headers,
        Err(error) if error.invalid_for_every_receiver() => {
            return Outcome::drop(error.drop_reason());
        }
        Err(_) => return Outcome::pass(),
    };
    // Stages in order: VXLAN decap (overlay); published ports (service) to come.
    overlay::decap_decision(frame, &headers)
}
