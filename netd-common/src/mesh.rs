//! Keys and values of the routing mesh's maps: ports published on every
//! host's uplink, DNATed at XDP to a backend on any host, with the client's
//! own address kept (Calico's "tunnel" mode).
//!
//! - On the ingress host (the one the client connected to), a packet to
//!   `uplink address:published port` finds its [`PublishedKey`] →
//!   [`crate::service::ServiceEntry`] (the service's Maglev table, its
//!   target port); conntrack (`NETD_CT`, `NETD_REV_NAT`) keeps the flow as
//!   for a VIP, with the uplink address in the VIP's place. The next hop
//!   toward the client is kept in [`MeshNeighbour`] by client address, so
//!   replies leave the uplink the way the request came, with no neighbour
//!   lookup (the host stack never saw the client).
//! - A remote backend's host gets the packet in VXLAN marked with
//!   [`crate::vxlan::MESH_INGRESS`] and records in [`TunnelReturn`] (by
//!   the reply's tuple) which host the flow came in on: replies are
//!   encapsulated back to it.

use bytemuck::{Pod, Zeroable};

/// The Maglev table of a service's ports published with `mode=host` is
/// this bit with the service's index: this host's own backends only.
pub const HOST_MODE_TABLE: u32 = 1 << 31;

/// `NETD_PUBLISHED` key: a published port, on any local uplink address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PublishedKey {
    /// Network byte order.
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// `NETD_PUBLISHED_PORTS`: one bit per (port, protocol) that has a
/// `NETD_PUBLISHED` entry, in `PORT_WORDS` u64 words per protocol (TCP's
/// first, then UDP's), so the uplink's own traffic on other ports costs
/// an array load, not a hash lookup.
pub const PORT_WORDS: u32 = 1024;
/// The word that says the bitmap has been written (set with the first
/// published port); while it is 0 (no published port, or a new map before
/// netd's first pass) every port is looked up as before.
pub const PORTS_WRITTEN: u32 = 2 * PORT_WORDS;
/// How many words the map has.
pub const PUBLISHED_PORTS_WORDS: u32 = PORTS_WRITTEN + 1;

/// The word of `NETD_PUBLISHED_PORTS` and the bit in it for `port` (host
/// order) of `proto`; None for a protocol other than TCP and UDP.
pub const fn published_port_bit(port: u16, proto: u8) -> Option<(u32, u64)> {
    let base = match proto {
        6 => 0,
        17 => PORT_WORDS,
        _ => return None,
    };
    Some((base + (port as u32 >> 6), 1 << (port & 63)))
}

/// `NETD_PUBLISH_ALLOW` data: a published port and a source address (its
/// first bits: the prefix); present, the source may open flows to the port.
/// Only a port whose entry carries `SERVICE_SOURCE_RANGES` is checked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PublishAllow {
    /// Network byte order.
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
    pub source: [u8; 4],
}

/// `NETD_PUBLISH_ALLOW`'s whole key, as userspace writes it: the prefix
/// length, then the data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PublishAllowKey {
    pub prefixlen: u32,
    pub data: PublishAllow,
}

impl PublishAllowKey {
    /// The key of the range `source`/`source_bits` on a published port.
    pub fn range(port: u16, proto: u8, source: [u8; 4], source_bits: u8) -> Self {
        PublishAllowKey {
            prefixlen: PublishAllow::prefix_len(source_bits),
            data: PublishAllow::new(port.to_be_bytes(), proto, source),
        }
    }
}

/// The port's bits in a `NETD_PUBLISH_ALLOW` prefix: port, protocol and
/// the pad, matched whole.
pub const PUBLISH_ALLOW_PORT_BITS: u32 = 32;

impl PublishAllow {
    pub const fn new(port: [u8; 2], proto: u8, source: [u8; 4]) -> Self {
        PublishAllow {
            port,
            proto,
            _pad: 0,
            source,
        }
    }

    /// The LPM prefix length of a range of `source_bits` (a /24: 24).
    pub const fn prefix_len(source_bits: u8) -> u32 {
        PUBLISH_ALLOW_PORT_BITS + source_bits as u32
    }
}

/// `NETD_MESH_NEIGH` value, by client address: where the ingress host
/// sends replies to that client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MeshNeighbour {
    /// The uplink the client's packets came in on.
    pub ifindex: u32,
    /// The source MAC of the client's last new flow: the client, or the
    /// router in front of it.
    pub next_hop: [u8; 6],
    /// The destination MAC it used: this host's on that uplink.
    pub own: [u8; 6],
}

/// `NETD_MESH_RETURN` value, by the reply's tuple (backend → client) on
/// the backend's host: the host the flow came in on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TunnelReturn {
    /// The ingress host's underlay address (the outer source it came from).
    pub ingress: [u8; 4],
    /// The backend's network, whose VNI the reply goes back in. Once a
    /// u32: an entry an older netd wrote reads the same (little-endian,
    /// networks below 65536, the next two bytes 0).
    pub network: u16,
    /// [`RETURN_OPENING`] or 0.
    pub flags: u8,
    pub _pad: u8,
    /// `bpf_ktime_get_coarse_ns` of the last packet either way.
    pub last_seen: u64,
}

/// The flow's latest tunnelled packet was a TCP SYN: the backend's SYN-ACK
/// answers that one, through the tunnel.
pub const RETURN_OPENING: u8 = 1;

/// The flags a tunnelled packet with TCP flags `tcp` (0 for UDP) leaves in
/// its flow's return entry: a SYN without ACK opens a connection; any
/// later packet of the client's ends the opening.
pub const fn return_flags(tcp: u8) -> u8 {
    if tcp & crate::parse::TCP_SYN != 0 && tcp & crate::parse::TCP_ACK == 0 {
        RETURN_OPENING
    } else {
        0
    }
}

/// Whether a backend's reply with TCP flags `tcp` (0 for UDP) goes back
/// through the entry with `flags`. A SYN-ACK does only if a tunnelled SYN
/// opened the entry: otherwise its SYN came some other way (the host
/// itself dialling the backend directly, from a port an earlier tunnelled
/// flow used) and the entry is that earlier flow's, stale.
pub const fn reply_follows(flags: u8, tcp: u8) -> bool {
    let syn_ack = crate::parse::TCP_SYN | crate::parse::TCP_ACK;
    tcp & syn_ack != syn_ack || flags & RETURN_OPENING != 0
}

/// `NETD_SOCK_REVNAT` key: a socket of the host's own (by cookie) and the
/// backend address the hook sent its UDP datagrams to instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRevNatKey {
    pub cookie: u64,
    pub ip: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// `NETD_SOCK_REVNAT` value: the address the application sent to, which
/// its answers must seem to come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRevNatEntry {
    pub ip: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// Socket-level balancing of published ports for the host's own
/// connections (`connect()` to `127.0.0.1:P` or `uplink address:P`),
/// which XDP never sees. The cgroup hook rewrites the socket's
/// destination before the kernel routes it.
pub mod host_local {
    /// Whether `dst` is loopback: every published port answers there for
    /// the host itself (its published addresses as well, by map lookup).
    pub const fn is_loopback(dst: [u8; 4]) -> bool {
        dst[0] == 127
    }

    /// `bpf_sock_addr.user_port` (a 32-bit field holding the port in
    /// network byte order in its first two bytes) as network-order bytes.
    pub const fn port_of(user_port: u32) -> [u8; 2] {
        let b = user_port.to_ne_bytes();
        [b[0], b[1]]
    }

    /// Network-order port bytes as `bpf_sock_addr.user_port`.
    pub const fn user_port(port: [u8; 2]) -> u32 {
        u32::from_ne_bytes([port[0], port[1], 0, 0])
    }

    /// Where the host's connection goes: a backend here is dialled
    /// directly (netd routes its endpoints' addresses to their veths); a
    /// backend elsewhere through its host's published port, which that
    /// host's XDP balances, so no tunnel is needed from the host stack.
    pub const fn destination(
        backend: [u8; 4],
        target_port: [u8; 2],
        backend_host: Option<[u8; 4]>,
        published_port: [u8; 2],
    ) -> ([u8; 4], [u8; 2]) {
        match backend_host {
            None => (backend, target_port),
            Some(host) => (host, published_port),
        }
    }

    /// The reply tuple (backend → this host) of a socket of this host that
    /// dials a backend here directly from source port `sport` (host byte
    /// order, as `bpf_sock.src_port`). A socket bound to no address sends
    /// from the one the route picks; only the uplink's (`underlay`) can
    /// match a return entry, which a flow this host sent to another host's
    /// published port left.
    pub const fn direct_reply(
        backend: [u8; 4],
        target_port: [u8; 2],
        bound: [u8; 4],
        underlay: [u8; 4],
        sport: u16,
        proto: u8,
    ) -> crate::service::CtTuple {
        let dst = if matches!(bound, [0, 0, 0, 0]) {
            underlay
        } else {
            bound
        };
        crate::service::CtTuple {
            src: backend,
            dst,
            src_port: target_port,
            dst_port: sport.to_be_bytes(),
            proto,
            _pad: [0; 3],
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are repr(C), Pod (checked by bytemuck), no padding.
    unsafe impl aya::Pod for super::PublishedKey {}
    unsafe impl aya::Pod for super::PublishAllow {}
    unsafe impl aya::Pod for super::PublishAllowKey {}
    unsafe impl aya::Pod for super::MeshNeighbour {}
    unsafe impl aya::Pod for super::TunnelReturn {}
    unsafe impl aya::Pod for super::SockRevNatKey {}
    unsafe impl aya::Pod for super::SockRevNatEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn a_syn_ack_follows_a_return_entry_only_a_tunnelled_syn_opened() {
        use crate::parse::{TCP_ACK, TCP_FIN, TCP_SYN};
        // UDP carries no flags: 0.
        let (syn, syn_ack, ack, udp) = (TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, 0);
        assert_eq!(return_flags(syn), RETURN_OPENING);
        for later in [ack, TCP_FIN | TCP_ACK, udp] {
            assert_eq!(return_flags(later), 0);
        }
        assert!(reply_follows(return_flags(syn), syn_ack));
        assert!(!reply_follows(return_flags(ack), syn_ack), "stale");
        for reply in [ack, TCP_FIN | TCP_ACK, udp] {
            assert!(reply_follows(0, reply));
            assert!(reply_follows(RETURN_OPENING, reply));
        }
    }

    #[test]
    fn a_direct_dial_is_answered_on_the_tuple_a_tunnelled_one_left() {
        use crate::service::CtTuple;
        let (web, host, other) = ([10, 94, 0, 2], [10, 96, 0, 2], [192, 0, 2, 9]);
        // What the backend host's decap records for a flow this host sent
        // out to another host's published port from port 40200, tunnelled
        // back here: the reply tuple of the packet it delivered.
        let tunnelled = CtTuple {
            src: host,
            dst: web,
            src_port: 40200u16.to_be_bytes(),
            dst_port: 5353u16.to_be_bytes(),
            proto: crate::service::PROTO_UDP,
            _pad: [0; 3],
        };
        let left = tunnelled.reply(web, 5353u16.to_be_bytes(), host);
        let direct = |bound| {
            host_local::direct_reply(
                web,
                5353u16.to_be_bytes(),
                bound,
                host,
                40200,
                crate::service::PROTO_UDP,
            )
        };
        assert_eq!(direct([0; 4]), left, "unbound: the uplink's address");
        assert_eq!(direct(host), left);
        assert_ne!(direct(other), left, "bound elsewhere: another tuple");
    }

    #[test]
    fn a_return_entry_an_older_netd_wrote_reads_the_same() {
        let mut old = [0u8; 16];
        old[..4].copy_from_slice(&[192, 0, 2, 7]);
        old[4..8].copy_from_slice(&3u32.to_le_bytes());
        old[8..].copy_from_slice(&99u64.to_le_bytes());
        let entry: TunnelReturn = bytemuck::pod_read_unaligned(&old);
        assert_eq!(
            (entry.ingress, entry.network, entry.flags, entry.last_seen),
            ([192, 0, 2, 7], 3, 0, 99)
        );
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<PublishedKey>(), 4);
        assert_eq!(size_of::<MeshNeighbour>(), 16);
        assert_eq!(size_of::<TunnelReturn>(), 16);
        assert_eq!(size_of::<SockRevNatKey>(), 16);
        // The port's 32 bits, then the source's: a /24 is a 56-bit prefix.
        assert_eq!(size_of::<PublishAllow>(), 8);
        assert_eq!(PublishAllow::prefix_len(24), 56);
        assert_eq!(size_of::<SockRevNatEntry>(), 8);
    }

    #[test]
    fn the_host_dials_its_published_ports_on_loopback_and_its_uplink_address() {
        use super::host_local::*;
        assert!(is_loopback([127, 0, 0, 1]));
        assert!(is_loopback([127, 1, 2, 3]));
        assert!(!is_loopback([10, 99, 0, 2]));
        assert!(!is_loopback([0, 0, 0, 0]));
        // Port 8080 is 0x1f90: network order puts 0x1f first.
        let port = 8080u16.to_be_bytes();
        assert_eq!(port_of(user_port(port)), port);
        assert_eq!(user_port(port).to_ne_bytes()[..2], [0x1f, 0x90]);
        let (backend, here) = ([10, 71, 0, 4], 80u16.to_be_bytes());
        assert_eq!(destination(backend, here, None, port), (backend, here));
        let host = [10, 99, 0, 3];
        assert_eq!(destination(backend, here, Some(host), port), (host, port));
    }
}

#[cfg(test)]
mod published_ports_tests {
    use super::*;

    #[test]
    fn every_tcp_and_udp_port_has_its_own_bit_below_the_written_word() {
        let mut seen = std::collections::BTreeSet::new();
        for proto in [6u8, 17] {
            for port in 0..=u16::MAX {
                let (word, bit) = published_port_bit(port, proto).expect("tcp or udp");
                assert!(word < PORTS_WRITTEN, "{proto}/{port}: word {word}");
                assert_eq!(bit.count_ones(), 1);
                assert!(seen.insert((word, bit)), "{proto}/{port} shares a bit");
            }
        }
        assert_eq!(seen.len(), 2 * 65536);
        assert_eq!(published_port_bit(80, 1), None);
        assert_eq!(published_port_bit(8080, 6), Some((126, 1 << 16)));
        assert_eq!(published_port_bit(53, 17), Some((PORT_WORDS, 1 << 53)));
    }
}
