//! Per-CPU counters per (hook, verdict) and (hook, drop reason): no
//! atomics needed, the user side sums the CPUs.

use netd_common::counters::{drop_slot, verdict_slot, DropReason, Hook, Verdict};

use crate::maps::NETD_COUNTERS;

#[inline(always)]
fn bump(slot: u32, bytes: u64) {
    if let Some(counter) = NETD_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and BPF
        // programs are not preempted by others on the same CPU.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_verdict(hook: Hook, verdict: Verdict, bytes: u64) {
    bump(verdict_slot(hook, verdict), bytes);
}

#[inline(always)]
pub fn count_drop(hook: Hook, reason: DropReason, bytes: u64) {
    bump(verdict_slot(hook, Verdict::Drop), bytes);
    bump(drop_slot(hook, reason), bytes);
}
