//! Keys and values of the service maps (VIP load balancing) and of
//! conntrack, which the datapath writes and netd sweeps.
//!
//! A packet from a container to `VIP:port` finds its [`ServiceEntry`] by
//! [`ServiceKey`]; a new flow picks a backend from the service's Maglev
//! table ([`MaglevTable`], by `ServiceEntry::table`), the backend's
//! address comes from [`BackendEntry`], and the choice is kept in
//! conntrack under the flow's [`CtTuple`]. The reply finds its way back to
//! `VIP:port` through the reverse entry ([`RevNatEntry`]).

use bytemuck::{Pod, Zeroable};

/// Conntrack entries each way, unless `[conntrack] max-entries` says otherwise.
pub const DEFAULT_CT_ENTRIES: u32 = 262_144;

/// Slots of a service's Maglev table in the datapath: a prime. 4 KiB a
/// service; the balance and the disruption stay within 1% of ideal up to
/// about 10 backends (see `maglev`'s tests), which a larger prime would
/// extend at the cost of memory per service.
pub const SERVICE_TABLE_SIZE: usize = 1021;

/// The Maglev slot of a flow's hash: `hash * M / 2^32` (Lemire's
/// fast range), uniform like `hash % M`, cheaper, and visibly below M to
/// the BPF verifier, which does not follow a modulo's bound.
#[inline(always)]
pub const fn maglev_slot(hash: u32) -> usize {
    ((hash as u64 * SERVICE_TABLE_SIZE as u64) >> 32) as usize
}

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;

/// The source address a client is SNATed to when it reaches itself
/// through a VIP (hairpin): a packet from its own address would be dropped
/// by its own stack. Link-local, never on any network.
pub const HAIRPIN_IP: [u8; 4] = [169, 254, 42, 1];

/// `NETD_SERVICES` key: a service port as the client addresses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct ServiceKey {
    pub vip: [u8; 4],
    /// Network byte order, as on the wire.
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// `NETD_SERVICES` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ServiceEntry {
    /// The service's index: its Maglev table, and the key of its metrics.
    pub table: u32,
    /// Backends that take new flows; 0: refuse new flows (RST / ICMP).
    pub active: u32,
    /// The port on the backends, network byte order.
    pub target_port: [u8; 2],
    /// [`SERVICE_AFFINITY`], [`SERVICE_SOURCE_RANGES`], or 0.
    pub flags: u16,
    /// With [`SERVICE_AFFINITY`]: how long a client keeps its backend
    /// after its last new flow, in seconds.
    pub affinity_secs: u32,
}

/// A client's new flows go to the backend its last one had (while that
/// backend takes new flows and within `affinity_secs`): `NETD_AFFINITY`.
pub const SERVICE_AFFINITY: u16 = 1;

/// A published port open only to the sources in `NETD_PUBLISH_ALLOW`.
pub const SERVICE_SOURCE_RANGES: u16 = 2;

/// `NETD_AFFINITY` key: a client of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct AffinityKey {
    pub table: u32,
    pub client: [u8; 4],
}

/// `NETD_AFFINITY` value: the backend the client's last new flow got.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AffinityEntry {
    pub backend: [u8; 4],
    /// The service's `affinity_secs` when written: what the sweeper
    /// removes the entry after.
    pub timeout_secs: u32,
    /// `bpf_ktime_get_ns` of the client's last new flow.
    pub last_seen: u64,
}

impl AffinityEntry {
    /// Whether the entry still holds at `now` for a service whose
    /// affinity lasts `secs`.
    #[inline(always)]
    pub const fn holds(&self, secs: u32, now: u64) -> bool {
        now.saturating_sub(self.last_seen) <= secs as u64 * 1_000_000_000
    }
}

/// `NETD_VIPS` value, by VIP: the network the VIP belongs to (clients of
/// other networks are isolated from it) and that the gateway answers ARP for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VipEntry {
    pub network: u32,
    /// The service's index (for counting).
    pub table: u32,
}

/// `NETD_BACKENDS` key: a backend is its address within its service. The
/// same on every host without any allocation, and a conntrack entry whose
/// backend left the service finds no entry and is balanced again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct BackendKey {
    pub table: u32,
    pub ip: [u8; 4],
}

/// `NETD_BACKENDS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BackendEntry {
    /// [`BACKEND_ACTIVE`] or [`BACKEND_DRAINING`].
    pub state: u32,
    /// Its Maglev weight (what `netd conntrack ls` and the metrics show).
    pub weight: u32,
}

pub const BACKEND_ACTIVE: u32 = 0;
/// Keeps its flows, gets no new one (it has no slot in the table).
pub const BACKEND_DRAINING: u32 = 1;

/// `NETD_MAGLEV` value, by service index: backend addresses (as the
/// four bytes on the wire), looked up as `slots[maglev_slot(flow_hash)]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct MaglevTable {
    pub slots: [u32; SERVICE_TABLE_SIZE],
}

impl Default for MaglevTable {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// A flow's addresses as one packet carries them: conntrack's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct CtTuple {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// `NETD_CT` value, by the client's tuple to `VIP:port`: the backend the
/// flow was given, and what the sweeper needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry {
    pub _pad0: u32,
    pub backend_ip: [u8; 4],
    pub backend_port: [u8; 2],
    /// [`CT_SEEN_FIN`], [`CT_SEEN_RST`], [`CT_HAIRPIN`], [`CT_SEEN_REPLY`].
    pub flags: u16,
    pub table: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) of the last packet either way.
    pub last_seen: u64,
    pub created: u64,
    pub packets: u64,
    pub bytes: u64,
}

pub const CT_SEEN_FIN: u16 = 1;
pub const CT_SEEN_RST: u16 = 2;
/// The client is its own backend: its source was SNATed to [`HAIRPIN_IP`].
pub const CT_HAIRPIN: u16 = 4;
pub const CT_SEEN_REPLY: u16 = 8;

/// What a segment's flags tell the sweeper: a FIN or RST puts its flow on
/// conntrack's short closing timeout (the service's and policy's alike).
#[inline(always)]
pub const fn closing_flags(tcp_flags: u8) -> u16 {
    let mut f = 0;
    if tcp_flags & crate::parse::TCP_FIN != 0 {
        f |= CT_SEEN_FIN;
    }
    if tcp_flags & crate::parse::TCP_RST != 0 {
        f |= CT_SEEN_RST;
    }
    f
}

/// A SYN on the tuple of a flow that closed: a client port reused for a
/// new connection, recorded afresh (as the kernel's conntrack does from
/// TIME_WAIT).
#[inline(always)]
pub const fn is_reopening(tcp_flags: u8, ct_flags: u16) -> bool {
    use crate::parse::{TCP_ACK, TCP_SYN};
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && ct_flags & (CT_SEEN_FIN | CT_SEEN_RST) != 0
}

/// `NETD_REV_NAT` value, by the reply's tuple (backend → client, or
/// backend → [`HAIRPIN_IP`]): what the reply's source becomes, and who
/// it goes to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RevNatEntry {
    pub vip: [u8; 4],
    pub vip_port: [u8; 2],
    pub _pad: [u8; 2],
    /// The client's own address (differs from the key's `dst` for hairpin).
    pub client: [u8; 4],
    pub _pad2: u32,
    pub last_seen: u64,
}

impl CtTuple {
    /// The tuple of the reply to a flow `self` DNATed to `backend:port`.
    pub const fn reply(&self, backend_ip: [u8; 4], backend_port: [u8; 2], to: [u8; 4]) -> Self {
        CtTuple {
            src: backend_ip,
            dst: to,
            src_port: backend_port,
            dst_port: self.src_port,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are repr(C), Pod (checked by bytemuck), no padding.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceEntry {}
    unsafe impl aya::Pod for super::VipEntry {}
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::BackendEntry {}
    unsafe impl aya::Pod for super::MaglevTable {}
    unsafe impl aya::Pod for super::CtTuple {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::RevNatEntry {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityEntry {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn fin_and_rst_close_a_flow_and_a_syn_after_them_reopens_it() {
        use crate::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
        assert_eq!(closing_flags(TCP_ACK), 0);
        assert_eq!(closing_flags(TCP_FIN | TCP_ACK), CT_SEEN_FIN);
        assert_eq!(closing_flags(TCP_RST), CT_SEEN_RST);
        assert!(is_reopening(TCP_SYN, CT_SEEN_FIN));
        assert!(is_reopening(TCP_SYN, CT_SEEN_RST | CT_SEEN_REPLY));
        assert!(!is_reopening(TCP_SYN | TCP_ACK, CT_SEEN_FIN));
        assert!(!is_reopening(TCP_SYN, CT_SEEN_REPLY));
    }

    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceEntry>(), 16);
        assert_eq!(size_of::<BackendKey>(), 8);
        assert_eq!(size_of::<BackendEntry>(), 8);
        assert_eq!(size_of::<CtTuple>(), 16);
        assert_eq!(size_of::<CtEntry>(), 48);
        assert_eq!(size_of::<RevNatEntry>(), 24);
        assert_eq!(size_of::<AffinityKey>(), 8);
        assert_eq!(size_of::<AffinityEntry>(), 16);
        assert_eq!(size_of::<MaglevTable>(), SERVICE_TABLE_SIZE * 4);
        assert!(crate::maglev::is_prime(SERVICE_TABLE_SIZE));
    }

    #[test]
    fn every_hash_has_a_slot_and_slots_spread_evenly() {
        assert_eq!(maglev_slot(0), 0);
        assert_eq!(maglev_slot(u32::MAX), SERVICE_TABLE_SIZE - 1);
        let mut hits = vec![0u32; SERVICE_TABLE_SIZE];
        let n = 1u64 << 22;
        for i in 0..n {
            hits[maglev_slot(crate::flow::flow_hash(
                (i as u32).to_be_bytes(),
                [10, 0, 0, 100],
                6,
                [0, 1],
                [0, 80],
            ))] += 1;
        }
        let mean = n as f64 / SERVICE_TABLE_SIZE as f64;
        let (lo, hi) = (
            *hits.iter().min().unwrap() as f64,
            *hits.iter().max().unwrap() as f64,
        );
        assert!(
            lo > mean * 0.85 && hi < mean * 1.15,
            "{lo} .. {hi} around {mean}"
        );
    }

    #[test]
    fn affinity_holds_for_its_timeout_after_the_last_new_flow() {
        let e = AffinityEntry {
            backend: [10, 0, 0, 5],
            timeout_secs: 60,
            last_seen: 5_000_000_000,
        };
        assert!(e.holds(60, 5_000_000_000));
        assert!(e.holds(60, 65_000_000_000));
        assert!(!e.holds(60, 65_000_000_001));
        assert!(
            !e.holds(10, 16_000_000_000),
            "a shorter timeout applies at once"
        );
        assert!(e.holds(60, 0), "a clock behind the entry is not expiry");
    }

    #[test]
    fn the_reply_tuple_swaps_to_the_backend() {
        let flow = CtTuple {
            src: [10, 0, 0, 2],
            dst: [10, 0, 0, 100],
            src_port: [0x30, 0x39],
            dst_port: [0, 80],
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let r = flow.reply([10, 0, 0, 5], [0x1f, 0x90], flow.src);
        assert_eq!(
            (r.src, r.dst, r.src_port, r.dst_port),
            ([10, 0, 0, 5], [10, 0, 0, 2], [0x1f, 0x90], [0x30, 0x39])
        );
    }
}
