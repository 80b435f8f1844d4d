//! Each local endpoint's counters (`netd_common::endpoint_stats`): what was
//! delivered into it, counted where it is handed over; its dropped packets
//! by reason, counted as the TC entry point leaves. Only into entries netd
//! made for its endpoints. What it sent, its veth counts (netd reads it):
//! a packet that passes or is forwarded elsewhere costs no lookup here.
//!
//! A TC program says into which endpoint it delivers, and why it drops,
//! in the skb's control block: it goes with the packet through tail
//! calls, and costs no stack where the deepest chains have none left.

use aya_ebpf::bindings::{__sk_buff, TC_ACT_REDIRECT, TC_ACT_SHOT};
use netd_common::{counters::DropReason, endpoint_stats::ENDPOINT_DROP_SLOTS};

use crate::maps::NETD_EP_STATS;

/// The control block word that holds the endpoint a TC program delivers
/// into (its host veth's ifindex; 0: none).
const DELIVERED_TO: usize = 0;
/// The control block word that holds the reason + 1 of the drop a TC
/// program counted (0: none).
const DROPPED_FOR: usize = 1;

/// A TC entry point's first step: no delivery and no drop yet.
#[inline(always)]
pub fn arrived(skb: *mut __sk_buff) {
    // SAFETY: control block words of the skb the program was given.
    unsafe {
        (*skb).cb[DELIVERED_TO] = 0;
        (*skb).cb[DROPPED_FOR] = 0;
    }
}

/// Marks the packet as delivered into the endpoint behind `ifindex`.
#[inline(always)]
pub fn delivering_to(skb: *mut __sk_buff, ifindex: u32) {
    // SAFETY: a control block word of the skb the program was given.
    unsafe { (*skb).cb[DELIVERED_TO] = ifindex };
}

/// Marks the packet as dropped for `reason`.
#[inline(always)]
pub fn dropping(skb: *mut __sk_buff, reason: DropReason) {
    // SAFETY: a control block word of the skb the program was given.
    unsafe { (*skb).cb[DROPPED_FOR] = reason as u32 + 1 };
}

/// A TC entry point's last step: the packet's drop against the endpoint
/// that sent it, or its delivery into another. A BPF call: the entry
/// points' frames stay as they were.
#[inline(never)]
pub fn after_tc(skb: *mut __sk_buff, verdict: i32) {
    // SAFETY: fields of the skb the program was given.
    let (from, to, dropped, len) = unsafe {
        (
            (*skb).ifindex,
            (*skb).cb[DELIVERED_TO],
            (*skb).cb[DROPPED_FOR],
            (*skb).len,
        )
    };
    if verdict == TC_ACT_SHOT {
        if dropped == 0 {
            return;
        }
        if let Some(sender) = NETD_EP_STATS.get_ptr_mut(&from) {
            let slot = (dropped - 1) as usize & (ENDPOINT_DROP_SLOTS - 1);
            // SAFETY: this CPU's value; the slot is masked into range.
            unsafe { (*sender).drops[slot] += 1 };
        }
    } else if verdict == TC_ACT_REDIRECT && to != 0 {
        received(to, u64::from(len));
    }
}

/// Counts a packet delivered into the endpoint behind `ifindex`.
#[inline(always)]
pub fn received(ifindex: u32, bytes: u64) {
    if let Some(s) = NETD_EP_STATS.get_ptr_mut(&ifindex) {
        // SAFETY: this CPU's value.
        unsafe {
            (*s).received.packets += 1;
            (*s).received.bytes += bytes;
        }
    }
}
