//! Events for `netd monitor`, written to the ring buffer only while a
//! monitor listens, within each CPU's budget (see `netd_common::events`).
//!
//! What happened is noted in this CPU's slot of `NETD_PENDING` (`note_drop`
//! by the exits, `note_policy` and `note_translation` by their stages;
//! inline: a map write); the entry point, whose frame is the shallowest,
//! emits it on its way out (`after_tc`, `after_xdp`) with the packet's
//! first bytes. With no listener, each costs one array read.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
};
use netd_common::{
    counters::{DropReason, Hook},
    events::{Event, EventKind, Pending, CAPTURE_BYTES},
};

use crate::maps::{NETD_EMIT, NETD_EVENTS, NETD_MONITOR, NETD_PENDING};

/// The kinds some monitor wants now; 0 when none listens.
#[inline(always)]
fn wanted() -> u32 {
    NETD_MONITOR.get(0).map_or(0, |c| c.kinds)
}

/// Notes a drop, for the entry point to emit if a monitor wants drops.
/// A policy denial keeps the rule its stage noted, and a service without
/// backends the service: the reason says which `object` is.
#[inline(always)]
pub fn note_drop(reason: DropReason) {
    if wanted() & EventKind::Drop.bit() == 0 {
        return;
    }
    let Some(pending) = NETD_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's own slot; programs on one CPU do not preempt
    // each other.
    unsafe {
        let noted = (*pending).kind;
        let keeps = (reason == DropReason::PolicyDenied && noted == EventKind::Policy as u8)
            || (reason == DropReason::NoBackend && noted == EventKind::Translation as u8);
        (*pending).kind = EventKind::Drop as u8;
        (*pending).reason = reason as u8;
        (*pending).allowed = 0;
        if !keeps {
            (*pending).object = 0;
            (*pending).backend = [0; 4];
        }
    }
}

/// Notes a policy verdict on a flow's first packet: allowed by `rule`, or
/// denied by it (a denial is noted for drops as well, which carry it).
#[inline(always)]
pub fn note_policy(allowed: bool, rule: u32) {
    let wants = if allowed {
        EventKind::Policy.bit()
    } else {
        EventKind::Policy.bit() | EventKind::Drop.bit()
    };
    if wanted() & wants == 0 {
        return;
    }
    note(EventKind::Policy, allowed as u8, rule, [0; 4]);
}

/// Notes a new flow's translation to a service's backend; `backend` all
/// zero: the service had none (a drop follows, which carries the service).
#[inline(always)]
pub fn note_translation(service: u32, backend: [u8; 4]) {
    if wanted() & (EventKind::Translation.bit() | EventKind::Drop.bit()) == 0 {
        return;
    }
    note(EventKind::Translation, 0, service, backend);
}

/// An event in this CPU's slot.
#[inline(always)]
fn note(kind: EventKind, allowed: u8, object: u32, backend: [u8; 4]) {
    if let Some(pending) = NETD_PENDING.get_ptr_mut(0) {
        // SAFETY: as in `note_drop`.
        unsafe {
            (*pending).kind = kind as u8;
            (*pending).reason = 0;
            (*pending).allowed = allowed;
            (*pending).object = object;
            (*pending).backend = backend;
        }
    }
}

/// A TC entry point's last step, at `hook`.
#[inline(always)]
pub fn after_tc(skb: *mut __sk_buff, hook: Hook) {
    if wanted() != 0 {
        emit_tc(skb, hook);
    }
}

/// An XDP entry point's last step.
#[inline(always)]
pub fn after_xdp(ctx: *mut xdp_md) {
    if wanted() != 0 {
        emit_xdp(ctx);
    }
}

/// Room in the ring for one event, if this CPU's budget allows it; what
/// the budget or the ring refused is counted.
#[inline(always)]
fn reserve() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<Event>> {
    let config = NETD_MONITOR.get(0)?;
    let budget = NETD_EMIT.get_ptr_mut(0)?;
    // SAFETY: a plain helper call; this CPU's own budget slot.
    unsafe {
        if !(*budget).take(bpf_ktime_get_ns(), config.rate, config.burst) {
            return None;
        }
        let entry = NETD_EVENTS.reserve::<Event>(0);
        if entry.is_none() {
            (*budget).lost += 1;
        }
        entry
    }
}

/// How many bytes of a `len`-byte packet an event carries: 1 to
/// CAPTURE_BYTES in a form the verifier can see is never 0 (a `len > 0`
/// check is lost to the compiler's rewriting). A 0-byte packet asks for
/// CAPTURE_BYTES; that copy fails, and the event says nothing was captured.
#[inline(always)]
fn captured(len: u32) -> u32 {
    const MOST: u32 = CAPTURE_BYTES as u32;
    if len >= MOST {
        MOST
    } else {
        (len.wrapping_sub(1) & (MOST - 1)) + 1
    }
}

/// Moves this CPU's noted event into `event`'s header with the emitting
/// program's `hook` and the packet's `ifindex` and `len`, and says how
/// many bytes to capture. Written so that few values live across helper
/// calls: the emitters' frames are stacked on the deepest entry points
/// (the mesh program's), and a spill costs stack they do not have.
#[inline(always)]
fn fill(event: *mut Event, slot: *mut Pending, hook: Hook, ifindex: u32, len: u32) -> u32 {
    let n = captured(len);
    // SAFETY: `event` is a reserved ring entry the size of an Event;
    // `slot` is this CPU's pending slot.
    unsafe {
        let h = &mut (*event).header;
        h.kind = (*slot).kind;
        h.hook = hook as u8;
        h.reason = (*slot).reason;
        h.allowed = (*slot).allowed;
        h.object = (*slot).object;
        h.ifindex = ifindex;
        h.backend = (*slot).backend;
        h.len = len;
        h.captured = n;
        (*slot).kind = 0;
    }
    n
}

/// This CPU's pending slot, if something is noted in it.
#[inline(always)]
fn noted() -> Option<*mut Pending> {
    let slot = NETD_PENDING.get_ptr_mut(0)?;
    // SAFETY: this CPU's own slot, as in `note_drop`.
    (unsafe { (*slot).kind } != 0).then_some(slot)
}

#[inline(never)]
fn emit_tc(skb: *mut __sk_buff, hook: Hook) {
    let Some(slot) = noted() else {
        return;
    };
    let Some(mut entry) = reserve() else {
        // SAFETY: as in `noted`.
        unsafe { (*slot).kind = 0 };
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: a plain helper call; reading fields of the skb the program
    // was given; then copying at most CAPTURE_BYTES into the entry's
    // packet array (a failure leaves the header saying nothing was
    // captured).
    unsafe {
        (*event).header.ts_ns = bpf_ktime_get_ns();
        let n = fill(event, slot, hook, (*skb).ifindex, (*skb).len);
        let to = (*event).packet.as_mut_ptr().cast();
        if bpf_skb_load_bytes(skb.cast(), 0, to, n) < 0 {
            (*event).header.captured = 0;
        }
    }
    entry.submit(0);
}

#[inline(never)]
fn emit_xdp(ctx: *mut xdp_md) {
    let Some(slot) = noted() else {
        return;
    };
    let Some(mut entry) = reserve() else {
        // SAFETY: as in `noted`.
        unsafe { (*slot).kind = 0 };
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: as in `emit_tc`, for the XDP context.
    unsafe {
        (*event).header.ts_ns = bpf_ktime_get_ns();
        let len = (*ctx).data_end.wrapping_sub((*ctx).data);
        let n = fill(event, slot, Hook::XdpUplink, (*ctx).ingress_ifindex, len);
        let to = (*event).packet.as_mut_ptr().cast();
        if bpf_xdp_load_bytes(ctx, 0, to, n) < 0 {
            (*event).header.captured = 0;
        }
    }
    entry.submit(0);
}
