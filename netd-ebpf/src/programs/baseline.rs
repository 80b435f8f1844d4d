//! The benchmark baselines: programs that do nothing. `cargo xtask bench`
//! runs them beside netd's programs in the same run, so the ratios cancel
//! out the cost of `BPF_PROG_TEST_RUN` and of the hook itself.

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[xdp]
pub fn netd_xdp_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn netd_tc_baseline(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
