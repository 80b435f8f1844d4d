//! TC ingress on the host end of an endpoint veth: packets leaving a
//! container. netd owns this traffic, so what it cannot parse, or an
//! EtherType it does not forward, is dropped and counted here instead of
//! reaching the host stack.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    parse::{parse, L3},
};

use crate::{frame::PacketFrame, metrics, outcome::Outcome};

const HOOK: Hook = Hook::TcEndpoint;

#[classifier]
pub fn netd_tc_endpoint(ctx: TcContext) -> i32 {
    let bytes = u64::from(ctx.len());
    let frame = PacketFrame::tc(&ctx);
    match decide(&frame) {
        Outcome::Pass => {
            metrics::count_verdict(HOOK, Verdict::Pass, bytes);
            TC_ACT_OK
        }
        Outcome::Drop(reason) => {
            metrics::count_drop(HOOK, reason, bytes);
            debug!(&ctx, "endpoint: drop, reason {}", reason as u32);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn decide(frame: &PacketFrame) -> Outcome {
    let headers = match parse(frame) {
        Ok(headers) => headers,
        Err(error) => return Outcome::Drop(error.drop_reason()),
    };
    if let L3::Other(_) = headers.l3 {
        return Outcome::Drop(DropReason::UnknownL3);
    }
    // Stages to come, in order: anti-spoofing, egress policy, service VIP, local delivery / encap.
    Outcome::Pass
}
