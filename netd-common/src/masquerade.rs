//! Masquerading: a container's packet to the world leaves with the address
//! of the uplink it goes out of, and the replies find their way back.
//!
//! - A network's way out is its [`EgressEntry`] (`NETD_EGRESS`): masquerade
//!   (Docker's default), internal (no way out), or neither (routed by the
//!   host with the container's own address, as before). A destination in
//!   `NETD_NO_MASQ` ([`NoMasqKey`]: every netd subnet, and the CIDRs a
//!   network or the host reaches unmasqueraded) is never translated.
//! - Each flow has two entries, made together: [`SnatEntry`] by the
//!   container's tuple (`NETD_SNAT`) and [`RevSnatEntry`] by the reply's
//!   tuple (`NETD_SNAT_REV`), whose insert with `BPF_NOEXIST` is what claims
//!   a port. ICMP echo is tracked as a flow whose identifier is its port.
//! - Ports come from [`MasqConfig`]'s range, which netd keeps disjoint from
//!   the host's `ip_local_port_range`: the host never picks one of them for
//!   a connection of its own, so a host socket and a masqueraded flow never
//!   share a tuple. A flow keeps its source port when it lies in the range
//!   and is free; else [`candidate`] walks the range from a point the flow
//!   hashes to. Ports are reused per destination: the reverse key holds
//!   the remote address and port.

use bytemuck::{Pod, Zeroable};

/// [`EgressEntry::flags`]: translate packets to the world.
pub const EGRESS_MASQUERADE: u32 = 1;
/// [`EgressEntry::flags`]: nothing leaves the host (Docker's `--internal`).
pub const EGRESS_INTERNAL: u32 = 2;

/// `NETD_EGRESS` value, by network index: how its packets to the world
/// leave. A network without an entry is routed by the host as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EgressEntry {
    pub flags: u32,
    /// The address to masquerade to; 0.0.0.0: the uplink's own (the FIB's
    /// preferred source on the device the packet leaves by).
    pub egress_ip: [u8; 4],
}

/// `NETD_NO_MASQ` data: a network (big-endian, so the trie matches it
/// whole before the address; 0 for every network) and a destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct NoMasqKey {
    pub network: [u8; 4],
    pub addr: [u8; 4],
}

/// The network every network's entries are under.
pub const EVERY_NETWORK: u32 = 0;

impl NoMasqKey {
    pub const fn new(network: u32, addr: [u8; 4]) -> Self {
        NoMasqKey {
            network: network.to_be_bytes(),
            addr,
        }
    }

    /// The trie's prefix length for a destination prefix of `bits`.
    pub const fn prefix_len(bits: u8) -> u32 {
        32 + bits as u32
    }
}

/// `NETD_NO_MASQ`'s whole key, as userspace writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct NoMasqFullKey {
    pub prefixlen: u32,
    pub data: NoMasqKey,
}

impl NoMasqFullKey {
    pub const fn range(network: u32, addr: [u8; 4], bits: u8) -> Self {
        NoMasqFullKey {
            prefixlen: NoMasqKey::prefix_len(bits),
            data: NoMasqKey::new(network, addr),
        }
    }
}

/// `NETD_MASQ_CONFIG` (one entry, written at start): the source ports
/// masquerading hands out, `port_min..=port_max` (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MasqConfig {
    pub port_min: u16,
    pub port_max: u16,
    pub _pad: u32,
}

impl MasqConfig {
    pub const fn holds(&self, port: u16) -> bool {
        port >= self.port_min && port <= self.port_max && self.port_min != 0
    }

    pub const fn size(&self) -> u32 {
        if self.port_min == 0 || self.port_max < self.port_min {
            0
        } else {
            (self.port_max - self.port_min) as u32 + 1
        }
    }
}

/// How many ports a new flow tries before it is dropped as
/// `nat_ports_exhausted`.
pub const PORT_TRIES: u32 = 32;

/// The `attempt`th port a flow hashing to `hash` tries: each attempt an
/// independent point of the range (a walk from one point would pile
/// flows up behind busy stretches, as linear probing does), so with a
/// fraction `f` of the range busy all [`PORT_TRIES`] fail with chance
/// `f^32`.
pub const fn candidate(config: &MasqConfig, hash: u32, attempt: u32) -> u16 {
    let size = config.size();
    if size == 0 {
        return 0;
    }
    let mixed = mix(hash ^ attempt.wrapping_mul(0x9E37_79B9));
    config.port_min + ((mixed as u64 * size as u64) >> 32) as u16
}

/// A 32-bit finaliser (murmur3's): every input bit moves every output bit.
const fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// `NETD_SNAT` value, by the container's tuple (for ICMP echo: the
/// identifier as source port, 0 as destination port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SnatEntry {
    /// The translated source.
    pub to_ip: [u8; 4],
    pub to_port: [u8; 2],
    /// `service::CT_SEEN_*` bits, as conntrack keeps them: what sets the
    /// idle timeout.
    pub flags: u16,
    /// The device the flow leaves by.
    pub ifindex: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_coarse_ns` of the last packet out.
    pub last_seen: u64,
    pub created: u64,
}

/// `NETD_SNAT_REV` value, by the reply's tuple (remote → translated
/// source): the container's address and port the reply goes back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RevSnatEntry {
    pub ip: [u8; 4],
    pub port: [u8; 2],
    /// The `service::CT_SEEN_*` flags the flow's `SnatEntry` has been
    /// told of: a reply looks the flow up only when it has news.
    pub flags: u16,
    /// Of the last reply.
    pub last_seen: u64,
}

/// An ICMP error about a masqueraded flow's packet, as it came: the
/// checksums it carries and the quote's source (the translated address
/// and port, or an echo's identifier).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotedSource {
    pub icmp_check: u16,
    pub ip_check: u16,
    /// The quoted transport's checksum, when the quote reaches it.
    pub l4_check: Option<u16>,
    pub proto: u8,
    pub src: [u8; 4],
    pub src_port: [u8; 2],
}

/// The checksums after the quote's source becomes the endpoint's
/// `ip:port` again, so its stack matches the error to its socket. The
/// ICMP checksum covers the whole quote: every word that changes in it
/// (address, port, the quote's own checksums) changes it too. A quoted
/// ICMP echo has no pseudo-header: only its identifier moves its checksum.
pub fn unmasquerade_quote(q: &QuotedSource, ip: [u8; 4], port: [u8; 2]) -> crate::icmp::Rewritten {
    use crate::{checksum, nat};
    let ip_check = checksum::replace_u32(q.ip_check, q.src, ip);
    let mut icmp = checksum::replace_u32(q.icmp_check, q.src, ip);
    icmp = checksum::replace_u16(icmp, q.ip_check, ip_check);
    icmp = checksum::replace_u16(
        icmp,
        u16::from_be_bytes(q.src_port),
        u16::from_be_bytes(port),
    );
    let l4_check = q.l4_check.map(|old| {
        let new = if q.proto == crate::policy::PROTO_ICMP {
            checksum::replace_u16(
                old,
                u16::from_be_bytes(q.src_port),
                u16::from_be_bytes(port),
            )
        } else {
            nat::l4_check_after_port(
                q.proto,
                nat::l4_check_after(q.proto, old, q.src, ip),
                q.src_port,
                port,
            )
        };
        icmp = checksum::replace_u16(icmp, old, new);
        new
    });
    crate::icmp::Rewritten {
        icmp_check: icmp,
        ip_check,
        l4_check,
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are repr(C), Pod (checked by bytemuck), no padding.
    unsafe impl aya::Pod for super::EgressEntry {}
    unsafe impl aya::Pod for super::NoMasqKey {}
    unsafe impl aya::Pod for super::NoMasqFullKey {}
    unsafe impl aya::Pod for super::MasqConfig {}
    unsafe impl aya::Pod for super::SnatEntry {}
    unsafe impl aya::Pod for super::RevSnatEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: MasqConfig = MasqConfig {
        port_min: 61000,
        port_max: 61009,
        _pad: 0,
    };

    #[test]
    fn candidates_stay_in_the_range_and_reach_all_of_it() {
        for hash in [0, 1, 0x8000_0000, u32::MAX] {
            let mut seen = std::collections::BTreeSet::new();
            for attempt in 0..PORT_TRIES {
                let port = candidate(&RANGE, hash, attempt);
                assert!(RANGE.holds(port), "{port}");
                seen.insert(port);
            }
            assert!(seen.len() >= 9, "{seen:?} for hash {hash:#x}");
        }
    }

    #[test]
    fn a_third_full_range_gives_every_flow_a_port() {
        // 10,000 flows into 31,744 ports, each taking the first free of
        // its candidates, as the datapath does.
        let range = MasqConfig {
            port_min: 1024,
            port_max: 32767,
            _pad: 0,
        };
        let mut busy = std::collections::BTreeSet::new();
        for flow in 0..10_000u32 {
            let hash = mix(flow.wrapping_mul(2_654_435_761));
            let port = (0..PORT_TRIES)
                .map(|a| candidate(&range, hash, a))
                .find(|p| !busy.contains(p))
                .expect("a free port");
            busy.insert(port);
        }
    }

    #[test]
    fn different_flows_start_at_different_points() {
        let range = MasqConfig {
            port_min: 1024,
            port_max: 2023,
            _pad: 0,
        };
        let starts: std::collections::BTreeSet<u16> =
            (0..100u32).map(|i| candidate(&range, i, 0)).collect();
        assert!(starts.len() >= 90, "{}", starts.len());
    }

    #[test]
    fn an_empty_range_holds_nothing() {
        let none = MasqConfig::default();
        assert!(!none.holds(0) && !none.holds(1024));
        assert_eq!(none.size(), 0);
        assert_eq!(candidate(&none, 7, 0), 0);
        let whole = MasqConfig {
            port_min: 1024,
            port_max: 65535,
            _pad: 0,
        };
        assert_eq!(whole.size(), 64512);
        assert!(whole.holds(candidate(&whole, u32::MAX, 0)));
    }

    /// An ICMP error's body quoting `src:sport → 192.0.2.80:53` (UDP),
    /// `:443` (TCP) or an echo request with identifier `sport`, cut at
    /// `len` bytes.
    fn quote(proto: u8, src: [u8; 4], sport: u16, len: usize) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4(src, [192, 0, 2, 80], 1);
        let mut packet = Vec::new();
        match proto {
            6 => b.tcp(sport, 443, 7, 1000).write(&mut packet, b"").unwrap(),
            17 => b.udp(sport, 53).write(&mut packet, b"query").unwrap(),
            _ => b
                .icmpv4_echo_request(sport, 1)
                .write(&mut packet, b"ping")
                .unwrap(),
        }
        packet.truncate(len);
        packet
    }

    fn fields(body: &[u8]) -> QuotedSource {
        let proto = body[9];
        let check_at = 20
            + match proto {
                6 => 16,
                17 => 6,
                _ => 2,
            };
        let port_at = if proto == 1 { 24 } else { 20 };
        let t = etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        );
        QuotedSource {
            icmp_check: etherparse::Icmpv4Header::with_checksum(t, body).checksum,
            ip_check: u16::from_be_bytes([body[10], body[11]]),
            l4_check: body
                .get(check_at..check_at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]])),
            proto,
            src: body[12..16].try_into().unwrap(),
            src_port: [body[port_at], body[port_at + 1]],
        }
    }

    #[test]
    fn an_unmasqueraded_quote_has_the_checksums_of_a_full_recompute() {
        let (translated, endpoint) = ([198, 51, 100, 1], [10, 44, 0, 2]);
        for (proto, len) in [(17, 33), (17, 28), (6, 40), (6, 28), (1, 32), (1, 28)] {
            let seen = quote(proto, translated, 1024, len);
            let want = quote(proto, endpoint, 40000, len);
            let out = unmasquerade_quote(&fields(&seen), endpoint, 40000u16.to_be_bytes());
            let expect = fields(&want);
            assert_eq!(out.icmp_check, expect.icmp_check, "proto {proto} len {len}");
            assert_eq!(out.ip_check, expect.ip_check, "proto {proto} len {len}");
            assert_eq!(out.l4_check, expect.l4_check, "proto {proto} len {len}");
        }
    }

    #[test]
    fn no_masq_keys_match_the_network_before_the_address() {
        let k = NoMasqFullKey::range(3, [10, 0, 0, 0], 8);
        assert_eq!(k.prefixlen, 40);
        assert_eq!(k.data.network, [0, 0, 0, 3]);
        assert_eq!(core::mem::size_of::<NoMasqFullKey>(), 12);
        assert_eq!(core::mem::size_of::<SnatEntry>(), 32);
        assert_eq!(core::mem::size_of::<RevSnatEntry>(), 16);
    }
}
