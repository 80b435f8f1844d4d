//! Each local endpoint's traffic, counted by the datapath per CPU and keyed
//! by its host veth's ifindex: what was delivered into it, and which of
//! its packets were dropped, by reason. What it sent, the kernel counts
//! already (its host veth's received packets). netd makes an entry when it
//! attaches an endpoint's link and removes it with the endpoint; the
//! programs only count into entries that exist.

use bytemuck::{Pod, Zeroable};

use crate::counters::{Counter, DropReason};

/// Drop reasons an entry has room for: more than there are, so a new
/// reason takes a free slot and the pinned map keeps its shape.
pub const ENDPOINT_DROP_SLOTS: usize = 32;
const _: () = assert!(DropReason::ALL.len() <= ENDPOINT_DROP_SLOTS);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct EndpointStats {
    /// Packets netd delivered into the endpoint.
    pub received: Counter,
    /// Of the packets it sent, those dropped, by [`DropReason`].
    pub drops: [u64; ENDPOINT_DROP_SLOTS],
}

impl Default for EndpointStats {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Pod (checked by bytemuck), no padding.
unsafe impl aya::Pod for EndpointStats {}

impl EndpointStats {
    /// Adds `other` into `self`: the user side sums the per-CPU values.
    pub fn add(&mut self, other: &EndpointStats) {
        self.received.add(&other.received);
        for (mine, theirs) in self.drops.iter_mut().zip(other.drops) {
            *mine = mine.wrapping_add(theirs);
        }
    }

    /// Every packet dropped.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().fold(0u64, |sum, n| sum.wrapping_add(*n))
    }

    /// The reasons that dropped anything, most first (ties in reason order).
    pub fn top_drops(&self) -> impl Iterator<Item = (DropReason, u64)> {
        let mut by_count: [(DropReason, u64); DropReason::ALL.len()] =
            DropReason::ALL.map(|r| (r, self.drops[r as usize]));
        by_count.sort_unstable_by(|a, b| b.1.cmp(&a.1).then((a.0 as u8).cmp(&(b.0 as u8))));
        by_count.into_iter().filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_sum_and_the_top_reasons_come_first() {
        let mut a = EndpointStats {
            received: Counter {
                packets: 3,
                bytes: 300,
            },
            ..EndpointStats::default()
        };
        a.drops[DropReason::Spoofed as usize] = 1;
        let mut b = EndpointStats {
            received: Counter {
                packets: 2,
                bytes: 100,
            },
            ..EndpointStats::default()
        };
        b.drops[DropReason::Isolation as usize] = 4;
        b.drops[DropReason::Spoofed as usize] = 1;
        a.add(&b);
        assert_eq!((a.received.packets, a.received.bytes), (5, 400));
        assert_eq!(a.dropped(), 6);
        let top: Vec<_> = a.top_drops().collect();
        assert_eq!(top, [(DropReason::Isolation, 4), (DropReason::Spoofed, 2)]);
        assert_eq!(EndpointStats::default().top_drops().count(), 0);
        assert_eq!(
            core::mem::size_of::<EndpointStats>(),
            16 + 8 * ENDPOINT_DROP_SLOTS
        );
    }
}
