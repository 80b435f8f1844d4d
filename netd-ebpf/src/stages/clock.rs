//! The time conntrack, affinity and policy's flows are stamped with.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;

/// CLOCK_MONOTONIC at the last tick: the sweeper's timeouts are seconds,
/// and on the established path the precise clock cost about 35 ns a
/// packet, a tenth of the path.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
}
