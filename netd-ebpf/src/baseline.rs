//! The benchmark baseline: an XDP program that does nothing. `cargo xtask
//! bench` runs it beside netd's programs in the same run, so the ratios
//! cancel out the cost of `BPF_PROG_TEST_RUN` itself.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn netd_xdp_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
