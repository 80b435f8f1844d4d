//! Each local endpoint's counters (`netd_common::endpoint_stats`): what was
//! delivered into it, counted where it is handed over; its dropped packets
//! by reason, counted as the TC entry point leaves. Only into entries netd
//! made for its endpoints. What it sent, its veth counts (netd reads it):
//! a packet that passes or is forwarded elsewhere costs no lookup here.
//!
//! A TC program that delivers into a local endpoint says which in the
//! skb's control block: no stack, where the deepest chains have none left.

use aya_ebpf::bindings::{__sk_buff, TC_ACT_REDIRECT, TC_ACT_SHOT};
use netd_common::endpoint_stats::ENDPOINT_DROP_SLOTS;

use crate::{events, maps::NETD_EP_STATS};

/// The control block word that holds the endpoint a TC program delivers
/// into (its host veth's ifindex; 0: none).
const DELIVERED_TO: usize = 0;

/// A TC entry point's first step: no delivery yet.
#[inline(always)]
pub fn arrived(skb: *mut __sk_buff) {
    // SAFETY: a control block word of the skb the program was given.
    unsafe { (*skb).cb[DELIVERED_TO] = 0 };
}

/// Marks the packet as delivered into the endpoint behind `ifindex`.
#[inline(always)]
pub fn delivering_to(skb: *mut __sk_buff, ifindex: u32) {
    // SAFETY: a control block word of the skb the program was given.
    unsafe { (*skb).cb[DELIVERED_TO] = ifindex };
}

/// A TC entry point's last step: the packet's drop against the endpoint
/// that sent it, or its delivery into another. A BPF call: the entry
/// points' frames stay as they were.
#[inline(never)]
pub fn after_tc(skb: *mut __sk_buff, verdict: i32) {
    // SAFETY: fields of the skb the program was given.
    let (from, to, len) = unsafe { ((*skb).ifindex, (*skb).cb[DELIVERED_TO], (*skb).len) };
    if verdict == TC_ACT_SHOT {
        let reason = events::take_dropped();
        if reason == 0 {
            return;
        }
        if let Some(sender) = NETD_EP_STATS.get_ptr_mut(&from) {
            let slot = usize::from(reason - 1) & (ENDPOINT_DROP_SLOTS - 1);
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
