//! Every map of the datapath, one line each on what it holds.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netd_common::counters::{Counter, COUNTER_SLOTS};

/// Packets and bytes per (hook, verdict) and per (hook, drop reason);
/// pinned so the numbers survive a netd restart.
#[map(name = "NETD_COUNTERS")]
pub static NETD_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(COUNTER_SLOTS, 0);
