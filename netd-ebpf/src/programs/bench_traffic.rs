//! The routing-mesh bench's two ends, the same for every setup it
//! compares: a packet generator and a container that drops what it gets.
//! Neither is attached by netd.

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_SHOT},
    helpers::bpf_get_prandom_u32,
    macros::{classifier, map, xdp},
    maps::Array,
    programs::{TcContext, XdpContext},
};
use netd_common::maps::{BenchFrame, BENCH_FRAMES, BENCH_FRAME_LEN};

/// The frames the generator sends, written by the bench. Not pinned: it
/// lives with the bench's own load of the object.
#[map(name = "NETD_BENCH_FRAMES")]
static NETD_BENCH_FRAMES: Array<BenchFrame> = Array::with_max_entries(BENCH_FRAMES, 0);

/// Rewrites the frame with one of the bench's frames, picked at random,
/// and sends it back out where it came in. Run by BPF_PROG_TEST_RUN with
/// live frames, this is the kernel facility xdp-trafficgen drives. Every
/// frame is written afresh because the test run recycles its pages with
/// whatever the receiver (a NAT) left in them.
#[xdp]
pub fn netd_xdp_generator(ctx: XdpContext) -> u32 {
    // SAFETY: a helper without arguments.
    let pick = unsafe { bpf_get_prandom_u32() } % BENCH_FRAMES;
    let Some(frame) = NETD_BENCH_FRAMES.get(pick) else {
        return xdp_action::XDP_ABORTED;
    };
    let start = ctx.data();
    if start + BENCH_FRAME_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the BENCH_FRAME_LEN bytes at `start` are inside the packet,
    // checked above.
    unsafe { (start as *mut BenchFrame).write_unaligned(*frame) };
    xdp_action::XDP_TX
}

/// A container that takes every packet and keeps none: the bench's sink
/// on a backend's `eth0` ingress, so what is measured is the host's path
/// to the container.
#[classifier]
pub fn netd_tc_sink(_ctx: TcContext) -> i32 {
    TC_ACT_SHOT
}
