//! Events from the datapath to `netd monitor`: what happened to one packet
//! (dropped and why, judged by policy, translated by a service), with its
//! first bytes. They go through a BPF ring buffer, only while a monitor
//! listens, and at most at a per-CPU rate: a flood of drops cannot slow
//! forwarding, and what the budget refused is counted.

use bytemuck::{Pod, Zeroable};

/// Bytes of each packet an event carries (enough for Ethernet, IPv4 with
/// options, and a TCP header with options).
pub const CAPTURE_BYTES: usize = 128;
// The programs mask lengths with CAPTURE_BYTES - 1.
const _: () = assert!(CAPTURE_BYTES.is_power_of_two());

/// The ring buffer's size: about 6,000 events a reader has not taken yet.
pub const EVENTS_RING_BYTES: u32 = 1 << 20;

/// What an event tells.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A dropped packet: its hook and reason.
    Drop = 1,
    /// A policy verdict on a flow's first packet: allowed or denied, by
    /// which rule.
    Policy = 2,
    /// A service translation: a new flow to a VIP or published port, and
    /// the backend it got.
    Translation = 3,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Drop, EventKind::Policy, EventKind::Translation];

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Drop => "drop",
            EventKind::Policy => "policy",
            EventKind::Translation => "translation",
        }
    }

    /// Its bit in [`MonitorConfig::kinds`].
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == value)
    }
}

/// An event's fixed part; `captured` bytes of the packet follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventHeader {
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub ts_ns: u64,
    /// An [`EventKind`].
    pub kind: u8,
    /// The [`crate::counters::Hook`] that saw the packet.
    pub hook: u8,
    /// A drop's [`crate::counters::DropReason`].
    pub reason: u8,
    /// A policy event's verdict: 1 allowed, 0 denied.
    pub allowed: u8,
    /// The interface the packet came in on: an endpoint's host veth, or
    /// an uplink.
    pub ifindex: u32,
    /// A policy event's rule, or a policy drop's (as `NETD_RULE_HITS`
    /// numbers it); a translation's service index; 0 when none applies.
    pub object: u32,
    /// A translation's backend address, as the wire has it.
    pub backend: [u8; 4],
    /// The packet's whole length.
    pub len: u32,
    /// How many of its bytes follow (at most [`CAPTURE_BYTES`]).
    pub captured: u32,
}

/// What the ring buffer holds: a header and the packet's first bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Event {
    pub header: EventHeader,
    pub packet: [u8; CAPTURE_BYTES],
}

/// Set by netd while at least one monitor listens (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MonitorConfig {
    /// [`EventKind::bit`]s wanted; 0: no listener, nothing is emitted.
    pub kinds: u32,
    /// Events per second each CPU may emit at most.
    pub rate: u32,
    /// Events a CPU may emit at once after a quiet spell.
    pub burst: u32,
    pub _pad: u32,
}

/// Default emission budget per CPU.
pub const DEFAULT_RATE: u32 = 10_000;
pub const DEFAULT_BURST: u32 = 1_000;

/// Each CPU's emission budget and its tallies (a per-CPU entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EmitBudget {
    pub tokens: u64,
    /// When tokens were last added.
    pub refilled_ns: u64,
    /// Events written to the ring.
    pub emitted: u64,
    /// Events the budget refused.
    pub suppressed: u64,
    /// Events the ring had no room for (no reader keeping up).
    pub lost: u64,
}

/// An event a stage noted where it counted the packet, for the entry
/// point to emit with the packet's bytes (per CPU, one entry; `kind` 0:
/// none). The stages run too deep in the stack to call the emitter. The
/// event's hook is the emitting entry point's: XDP programs are the
/// uplink's, TC programs the endpoint's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Pending {
    pub kind: u8,
    pub reason: u8,
    pub allowed: u8,
    /// Unused (it held the last drop's reason for the per-endpoint
    /// counters, which now read it from the packet's control block); kept
    /// so the pinned layout stays.
    pub _reserved: u8,
    pub object: u32,
    /// A translation's backend.
    pub backend: [u8; 4],
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Pod (checked by bytemuck), no padding.
unsafe impl aya::Pod for MonitorConfig {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Pending {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for EmitBudget {}

const NANOS: u64 = 1_000_000_000;

impl EmitBudget {
    /// Whether one more event may go out at `now_ns`, taking its token
    /// (or counting it suppressed). A token bucket of `burst` refilled at
    /// `rate` per second; time is only spent when it added a whole token,
    /// so drops nanoseconds apart still refill it.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, rate: u32, burst: u32) -> bool {
        let elapsed = now_ns.saturating_sub(self.refilled_ns);
        let added = if elapsed >= NANOS {
            u64::from(burst)
        } else {
            elapsed * u64::from(rate) / NANOS
        };
        if added > 0 {
            self.refilled_ns = now_ns;
        }
        // Clamped every time: a smaller burst set meanwhile holds at once.
        self.tokens = (self.tokens + added).min(u64::from(burst));
        if self.tokens == 0 {
            self.suppressed += 1;
            return false;
        }
        self.tokens -= 1;
        self.emitted += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_what_both_sides_read() {
        assert_eq!(core::mem::size_of::<EventHeader>(), 32);
        assert_eq!(core::mem::size_of::<Event>(), 32 + CAPTURE_BYTES);
        assert_eq!(core::mem::size_of::<MonitorConfig>(), 16);
        assert_eq!(core::mem::size_of::<EmitBudget>(), 40);
        assert_eq!(core::mem::size_of::<Pending>(), 12);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(EventKind::from_u8(0), None);
    }

    #[test]
    fn a_flood_gets_the_burst_then_the_rate_and_the_rest_is_counted() {
        let mut b = EmitBudget::default();
        let start = 5 * NANOS;
        // One drop every 100 ns for one second: 10 million tries.
        let mut sent = 0u64;
        for i in 0..10_000_000u64 {
            if b.take(start + i * 100, 1_000, 50) {
                sent += 1;
            }
        }
        // The burst, then about 1,000 in the second.
        assert!((1_040..=1_051).contains(&sent), "{sent}");
        assert_eq!(b.emitted, sent);
        assert_eq!(b.suppressed, 10_000_000 - sent);
        // After a quiet second the burst is back, and no more.
        let later = start + 3 * NANOS;
        let again = (0..100).filter(|i| b.take(later + i, 1_000, 50)).count();
        assert_eq!(again, 50);
    }
}
