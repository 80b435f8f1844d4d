//! Datapath counters: one per-CPU array, one [`Counter`] per (hook, slot).
//!
//! A slot is either a verdict (every packet a program sees lands in exactly
//! one) or a drop reason (every dropped packet also lands in exactly one).
//! The names returned here are the Prometheus label values, so the kernel
//! and the metrics can never disagree on what a number means.

use bytemuck::{Pod, Zeroable};

/// Packets and bytes seen in one slot, on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: Counter is repr(C), Pod (checked by bytemuck) and has no padding.
unsafe impl aya::Pod for Counter {}

impl Counter {
    /// Adds `other` into `self`: the user side sums the per-CPU values.
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// Where a netd program is attached.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP on an uplink: packets from the underlay.
    XdpUplink = 0,
    /// TC ingress on the host end of an endpoint veth: packets leaving a container.
    TcEndpoint = 1,
    /// TC ingress on an uplink whose XDP cannot be trusted (a veth): the
    /// same packets as `XdpUplink`, as skbs.
    TcUplink = 2,
    /// The cgroup socket hooks: the host's own connections to published
    /// ports (no bytes: each call counts once).
    Sock = 3,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::XdpUplink,
        Hook::TcEndpoint,
        Hook::TcUplink,
        Hook::Sock,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::XdpUplink => "xdp_uplink",
            Hook::TcEndpoint => "tc_endpoint",
            Hook::TcUplink => "tc_uplink",
            Hook::Sock => "sock",
        }
    }
}

/// What a program did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Handed on untouched (XDP_PASS / TC_ACT_OK).
    Pass = 0,
    /// Dropped; the reason is counted as well.
    Drop = 1,
    /// Redirected to another interface.
    Redirect = 2,
    /// Sent back out of the interface it came in on (XDP_TX, ARP replies).
    Tx = 3,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Pass, Verdict::Drop, Verdict::Redirect, Verdict::Tx];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::Redirect => "redirect",
            Verdict::Tx => "tx",
        }
    }
}

/// Why a packet was dropped. One table for the kernel and for the metric labels.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A header is cut short or inconsistent (truncated frame, IHL below 5,
    /// IPv4 total length beyond the frame, TCP data offset below 5, ...).
    Malformed = 0,
    /// An EtherType netd does not forward (neither IPv4, IPv6 nor ARP).
    UnknownL3 = 1,
    /// A fragment that cannot be handled safely: a first fragment too short
    /// to hold its transport header, or a TCP fragment at offset 8 bytes
    /// (RFC 1858 overlap attack).
    Fragment = 2,
    /// A container sent with a source IP or MAC that is not its endpoint's.
    Spoofed = 3,
    /// The destination is an endpoint of another network.
    Isolation = 4,
    /// VXLAN from an address that is no host of the cluster.
    UnknownHost = 5,
    /// VXLAN with a VNI of no network here.
    UnknownVni = 6,
    /// VXLAN whose inner destination is no endpoint of that network on this host.
    NotHere = 7,
    /// Encapsulation failed (no room, no route to the remote host).
    EncapFailed = 8,
    /// IPv6 from a container: netd does not forward it yet, and it must not
    /// reach the host unchecked.
    Ipv6 = 9,
    /// To a service port whose service has no backend taking new flows.
    NoBackend = 10,
    /// To a VIP on a port (or protocol) the service does not have.
    NoServicePort = 11,
    /// A translation could not be written (a helper refused it).
    NatFailed = 12,
    /// The service program was not there to hand a packet to.
    NoServiceProgram = 13,
    /// The routing mesh had no next hop's MAC for the tunnel to a
    /// backend's host (netd keeps those neighbours resolved; a new one
    /// may still be resolving).
    NoNeighbour = 14,
    /// A packet to a published port too big for the tunnel to its
    /// backend's host, without DF (with DF it is answered with ICMP
    /// fragmentation needed).
    TooBig = 15,
    /// Refused by policy: a deny rule, or no rule allowing it in a
    /// direction that is default-deny (the rule's own counters say which).
    PolicyDenied = 16,
    /// To a published port from a source its allowed ranges leave out.
    SourceRefused = 17,
    /// From an endpoint of an internal network to anywhere off this host.
    Internal = 18,
    /// A new masqueraded flow found the NAT table full (`NETD_SNAT`).
    NatTableFull = 19,
    /// A new masqueraded flow found no free source port toward its
    /// destination.
    NatPortsExhausted = 20,
}

impl DropReason {
    pub const ALL: [DropReason; 21] = [
        DropReason::Malformed,
        DropReason::UnknownL3,
        DropReason::Fragment,
        DropReason::Spoofed,
        DropReason::Isolation,
        DropReason::UnknownHost,
        DropReason::UnknownVni,
        DropReason::NotHere,
        DropReason::EncapFailed,
        DropReason::Ipv6,
        DropReason::NoBackend,
        DropReason::NoServicePort,
        DropReason::NatFailed,
        DropReason::NoServiceProgram,
        DropReason::NoNeighbour,
        DropReason::TooBig,
        DropReason::PolicyDenied,
        DropReason::SourceRefused,
        DropReason::Internal,
        DropReason::NatTableFull,
        DropReason::NatPortsExhausted,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownL3 => "unknown_l3",
            DropReason::Fragment => "fragment",
            DropReason::Spoofed => "spoofed",
            DropReason::Isolation => "isolation",
            DropReason::UnknownHost => "unknown_host",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::NotHere => "not_here",
            DropReason::EncapFailed => "encap_failed",
            DropReason::Ipv6 => "ipv6",
            DropReason::NoBackend => "no_backend",
            DropReason::NoServicePort => "no_service_port",
            DropReason::NatFailed => "nat_failed",
            DropReason::NoServiceProgram => "no_service_program",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::TooBig => "too_big",
            DropReason::PolicyDenied => "policy_denied",
            DropReason::SourceRefused => "source_refused",
            DropReason::Internal => "internal",
            DropReason::NatTableFull => "nat_table_full",
            DropReason::NatPortsExhausted => "nat_ports_exhausted",
        }
    }
}

/// Slots each hook owns, whatever it uses of them: verdicts first, then
/// drop reasons. Fixed, so a new drop reason, verdict or hook takes a slot
/// that was free and moves no existing counter (the map outlives netd).
pub const SLOTS_PER_HOOK: u32 = 64;
/// Verdicts a hook can have; drop reasons start after them.
pub const VERDICT_SLOTS: u32 = 8;
/// Hooks the counters map has room for.
pub const MAX_HOOKS: u32 = 8;

/// Number of entries in the counters map.
pub const COUNTER_SLOTS: u32 = MAX_HOOKS * SLOTS_PER_HOOK;

const _: () = assert!(Verdict::ALL.len() as u32 <= VERDICT_SLOTS);
const _: () = assert!(VERDICT_SLOTS + DropReason::ALL.len() as u32 <= SLOTS_PER_HOOK);
const _: () = assert!(Hook::ALL.len() as u32 <= MAX_HOOKS);

/// Index of the counter for packets that got `verdict` at `hook`.
#[inline(always)]
pub const fn verdict_slot(hook: Hook, verdict: Verdict) -> u32 {
    hook as u32 * SLOTS_PER_HOOK + verdict as u32
}

/// Index of the counter for packets dropped at `hook` for `reason`.
#[inline(always)]
pub const fn drop_slot(hook: Hook, reason: DropReason) -> u32 {
    hook as u32 * SLOTS_PER_HOOK + VERDICT_SLOTS + reason as u32
}

/// Layout 1 (round one) packed each hook's 4 verdicts and 9 drop reasons
/// into 13 slots, 26 in all. Where each of them lives now.
pub mod layout_v1 {
    pub const SLOTS: u32 = 26;
    const PER_HOOK: u32 = 13;
    const VERDICTS: u32 = 4;

    /// The slot in today's layout of layout 1's `slot`.
    pub const fn slot_now(slot: u32) -> u32 {
        let (hook, within) = (slot / PER_HOOK, slot % PER_HOOK);
        if within < VERDICTS {
            hook * super::SLOTS_PER_HOOK + within
        } else {
            hook * super::SLOTS_PER_HOOK + super::VERDICT_SLOTS + (within - VERDICTS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_slots() -> impl Iterator<Item = u32> {
        Hook::ALL.into_iter().flat_map(|h| {
            Verdict::ALL
                .into_iter()
                .map(move |v| verdict_slot(h, v))
                .chain(DropReason::ALL.into_iter().map(move |r| drop_slot(h, r)))
        })
    }

    #[test]
    fn slots_are_distinct_and_within_the_map() {
        let mut seen = [false; COUNTER_SLOTS as usize];
        for slot in all_slots() {
            assert!(slot < COUNTER_SLOTS, "slot {slot} out of range");
            assert!(!seen[slot as usize], "slot {slot} used twice");
            seen[slot as usize] = true;
        }
    }

    #[test]
    fn the_slots_of_layout_1_keep_their_meaning() {
        // Layout 1's order: per hook, pass drop redirect tx, then the nine
        // reasons in DropReason's order.
        let mut v1 = 0;
        for hook in [Hook::XdpUplink, Hook::TcEndpoint] {
            for verdict in Verdict::ALL {
                assert_eq!(layout_v1::slot_now(v1), verdict_slot(hook, verdict));
                v1 += 1;
            }
            for reason in &DropReason::ALL[..9] {
                assert_eq!(layout_v1::slot_now(v1), drop_slot(hook, *reason));
                v1 += 1;
            }
        }
        assert_eq!(v1, layout_v1::SLOTS);
    }

    #[test]
    fn pinned_slots_do_not_move() {
        // These numbers are in every pinned counters map of layout 2: a
        // change here needs a layout version and a migration.
        assert_eq!(verdict_slot(Hook::XdpUplink, Verdict::Pass), 0);
        assert_eq!(drop_slot(Hook::XdpUplink, DropReason::Malformed), 8);
        assert_eq!(verdict_slot(Hook::TcEndpoint, Verdict::Tx), 67);
        assert_eq!(drop_slot(Hook::TcEndpoint, DropReason::EncapFailed), 80);
        assert_eq!(COUNTER_SLOTS, 512);
    }

    #[test]
    fn enum_tables_match_discriminants() {
        for (i, h) in Hook::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i);
        }
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn label_names_are_unique_snake_case() {
        let names = DropReason::ALL.map(DropReason::name);
        for (i, n) in names.iter().enumerate() {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}"
            );
            assert!(!names[..i].contains(n), "{n} twice");
        }
    }

    #[test]
    fn counter_add_sums_both_fields() {
        let mut total = Counter::default();
        total.add(&Counter {
            packets: 2,
            bytes: 100,
        });
        total.add(&Counter {
            packets: 3,
            bytes: 60,
        });
        assert_eq!(
            total,
            Counter {
                packets: 5,
                bytes: 160
            }
        );
    }

    #[test]
    fn counter_layout_is_two_u64() {
        assert_eq!(core::mem::size_of::<Counter>(), 16);
        assert_eq!(core::mem::align_of::<Counter>(), 8);
    }
}
