//! What a client hears when it opens a flow to a service port that has no
//! backend: a TCP RST (RFC 9293 §3.10.7.1) or an ICMP port unreachable
//! (RFC 1122 §3.2.2.1), as if the VIP were a host with nothing listening.
//! Pure functions of the offending packet's headers; the datapath writes
//! what they return over that packet and sends it back.

use crate::{
    checksum,
    icmp::ICMP_DEST_UNREACH,
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    service::{PROTO_ICMP, PROTO_TCP},
};

pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// The TTL of what netd sends: Linux's default.
const TTL: u8 = 64;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
/// ICMP header, then the offending IP header and its first 8 bytes.
pub const UNREACHABLE_LEN: usize = IPV4_HLEN + 8 + IPV4_HLEN + 8;
pub const RESET_LEN: usize = IPV4_HLEN + TCP_HLEN;

#[inline(always)]
fn ipv4_header(total_len: u16, proto: u8, src: [u8; 4], dst: [u8; 4]) -> [u8; IPV4_HLEN] {
    let len = total_len.to_be_bytes();
    let mut h = [
        0x45, 0, len[0], len[1], 0, 0, 0x40, 0, TTL, proto, 0, 0, src[0], src[1], src[2], src[3],
        dst[0], dst[1], dst[2], dst[3],
    ];
    let check = checksum::ipv4_header(&h).to_be_bytes();
    h[10] = check[0];
    h[11] = check[1];
    h
}

/// The RST answering the TCP segment `tcp` (its first 20 bytes) inside
/// `ip` (a 20-byte header without options) that carried `payload_len`
/// bytes of data: IPv4 and TCP headers, from the segment's destination
/// to its source. `None` for a segment that is itself a RST, which is
/// never answered.
#[inline(always)]
pub fn tcp_reset(
    ip: &[u8; IPV4_HLEN],
    tcp: &[u8; TCP_HLEN],
    payload_len: u16,
) -> Option<[u8; RESET_LEN]> {
    let flags = tcp[13];
    if flags & TCP_RST != 0 {
        return None;
    }
    let (src, dst) = (addr(ip, 16), addr(ip, 12));
    let seq_in = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    // With ACK: a RST whose sequence number is the acknowledgment. Without:
    // sequence 0, acknowledging all the segment occupied.
    let (seq, ack, out_flags) = if flags & TCP_ACK != 0 {
        (
            u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
            0,
            TCP_RST,
        )
    } else {
        let occupied = u32::from(payload_len)
            + u32::from(flags & TCP_SYN != 0)
            + u32::from(flags & TCP_FIN != 0);
        (0, seq_in.wrapping_add(occupied), TCP_RST | TCP_ACK)
    };
    let mut out = [0u8; RESET_LEN];
    out[..IPV4_HLEN].copy_from_slice(&ipv4_header(RESET_LEN as u16, PROTO_TCP, src, dst));
    let t = &mut out[IPV4_HLEN..];
    t[0..2].copy_from_slice(&tcp[2..4]);
    t[2..4].copy_from_slice(&tcp[0..2]);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = (TCP_HLEN as u8 / 4) << 4;
    t[13] = out_flags;
    // Window, checksum and urgent pointer stay 0 until the checksum below.
    let pseudo = checksum::sum(&src) + checksum::sum(&dst) + u32::from(PROTO_TCP) + TCP_HLEN as u32;
    let check = !checksum::fold(pseudo + checksum::sum(t));
    t[16..18].copy_from_slice(&check.to_be_bytes());
    Some(out)
}

/// The ICMP port unreachable answering the datagram whose IP header (20
/// bytes, no options) is `ip` and whose first 8 bytes after it are `l4`:
/// a new IPv4 header from the datagram's destination, the ICMP header,
/// then `ip` and `l4` as they came.
#[inline(always)]
pub fn port_unreachable(ip: &[u8; IPV4_HLEN], l4: &[u8; 8]) -> [u8; UNREACHABLE_LEN] {
    unreachable(ip, l4, ICMP_PORT_UNREACH, 0)
}

/// The ICMP fragmentation needed (RFC 1191) answering a packet with DF
/// set that cannot go on without fragments: like [`port_unreachable`],
/// with the largest packet that can, `mtu`, in the header's second word.
#[inline(always)]
pub fn fragmentation_needed(ip: &[u8; IPV4_HLEN], l4: &[u8; 8], mtu: u16) -> [u8; UNREACHABLE_LEN] {
    unreachable(ip, l4, ICMP_FRAG_NEEDED, mtu)
}

#[inline(always)]
fn unreachable(ip: &[u8; IPV4_HLEN], l4: &[u8; 8], code: u8, mtu: u16) -> [u8; UNREACHABLE_LEN] {
    let (src, dst) = (addr(ip, 16), addr(ip, 12));
    let mut out = [0u8; UNREACHABLE_LEN];
    out[..IPV4_HLEN].copy_from_slice(&ipv4_header(UNREACHABLE_LEN as u16, PROTO_ICMP, src, dst));
    let icmp = &mut out[IPV4_HLEN..];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = code;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..28].copy_from_slice(ip);
    icmp[28..36].copy_from_slice(l4);
    let check = (!checksum::fold(checksum::sum(icmp))).to_be_bytes();
    icmp[2] = check[0];
    icmp[3] = check[1];
    out
}

/// How much of the transport header the answer built around an skb quotes
/// ([`fragmentation_needed_around`]): a TCP header without options whole
/// (its checksum is at 16), then a word no receiver reads and the
/// compensation word.
pub const QUOTED_TRANSPORT: usize = 24;
/// The headers that answer puts in front of the packet's own IPv4 header:
/// its IPv4 header and its ICMP header.
pub const AROUND_HEADERS: usize = IPV4_HLEN + 8;

/// The ICMP fragmentation needed answering a TCP segment or UDP datagram
/// that an skb may still carry with a partial checksum (sent over a veth
/// by a local stack, which leaves its transport checksum for the device:
/// the kernel sums from the transport header to the end of the packet and
/// writes the result over the checksum field, on the way out of any
/// device that does not offload it).
///
/// The packet's IPv4 header `ip` and first [`QUOTED_TRANSPORT`] bytes `l4`
/// stay where they are, quoted, and the answer's headers go in front. The
/// last quoted word is set so that the kernel's sum comes out to the
/// checksum field's own value: finishing the checksum changes nothing, and
/// the ICMP checksum holds whether or not a device finishes it. Returns
/// the headers to insert and the quoted transport bytes to write back;
/// `None` for a protocol other than TCP and UDP.
#[inline(always)]
pub fn fragmentation_needed_around(
    ip: &[u8; IPV4_HLEN],
    l4: &[u8; QUOTED_TRANSPORT],
    mtu: u16,
) -> Option<([u8; AROUND_HEADERS], [u8; QUOTED_TRANSPORT])> {
    let field = crate::nat::l4_check_offset(ip[9])?;
    let mut quoted = *l4;
    quoted[QUOTED_TRANSPORT - 2] = 0;
    quoted[QUOTED_TRANSPORT - 1] = 0;
    let seed = u32::from(u16::from_be_bytes([quoted[field], quoted[field + 1]]));
    // The kernel writes ~(sum of the quote), the field included: with the
    // rest summing to ~(2 * field), that is the field itself.
    let compensation = !checksum::fold(checksum::sum(&quoted) + seed);
    quoted[QUOTED_TRANSPORT - 2..].copy_from_slice(&compensation.to_be_bytes());

    const TOTAL: usize = AROUND_HEADERS + IPV4_HLEN + QUOTED_TRANSPORT;
    let (src, dst) = (addr(ip, 16), addr(ip, 12));
    let mut headers = [0u8; AROUND_HEADERS];
    headers[..IPV4_HLEN].copy_from_slice(&ipv4_header(TOTAL as u16, PROTO_ICMP, src, dst));
    let icmp = &mut headers[IPV4_HLEN..];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_FRAG_NEEDED;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    let sum = checksum::sum(icmp) + checksum::sum(ip) + checksum::sum(&quoted);
    icmp[2..4].copy_from_slice(&(!checksum::fold(sum)).to_be_bytes());
    Some((headers, quoted))
}

/// Whether the IPv4 header `ip` forbids fragmenting its packet.
#[inline(always)]
pub fn dont_fragment(ip: &[u8; IPV4_HLEN]) -> bool {
    ip[6] & 0x40 != 0
}

#[inline(always)]
fn addr(ip: &[u8; IPV4_HLEN], at: usize) -> [u8; 4] {
    [ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, IpNumber, PacketBuilder, SlicedPacket, TransportSlice};

    const CLIENT: [u8; 4] = [10, 1, 0, 2];
    const VIP: [u8; 4] = [10, 1, 0, 200];

    fn split(packet: &[u8], l4_len: usize) -> ([u8; 20], Vec<u8>) {
        let ip: [u8; 20] = packet[..20].try_into().unwrap();
        (ip, packet[20..20 + l4_len].to_vec())
    }

    fn tcp_segment(syn: bool, ack: Option<u32>, rst: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(CLIENT, VIP, 64).tcp(40000, 80, 1000, 64240);
        if syn {
            b = b.syn();
        }
        if let Some(n) = ack {
            b = b.ack(n);
        }
        if rst {
            b = b.rst();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn parse_reset(out: &[u8]) -> etherparse::TcpHeader {
        let p = SlicedPacket::from_ip(out).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source(), VIP);
        assert_eq!(ip.header().destination(), CLIENT);
        assert_eq!(ip.header().protocol(), IpNumber::TCP);
        // An independent check of both checksums.
        let header = ip.header().to_header();
        assert_eq!(header.calc_header_checksum(), header.header_checksum);
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not TCP")
        };
        let h = tcp.to_header();
        assert_eq!(
            h.calc_checksum_ipv4(&header, tcp.payload()).unwrap(),
            h.checksum
        );
        h
    }

    #[test]
    fn a_syn_gets_a_rst_acknowledging_it() {
        let (ip, tcp) = split(&tcp_segment(true, None, false, &[]), 20);
        let out = tcp_reset(&ip, &tcp.try_into().unwrap(), 0).unwrap();
        let h = parse_reset(&out);
        assert!(h.rst && h.ack && !h.syn);
        assert_eq!((h.source_port, h.destination_port), (80, 40000));
        assert_eq!((h.sequence_number, h.acknowledgment_number), (0, 1001));
    }

    #[test]
    fn a_segment_with_ack_gets_a_rst_at_that_sequence() {
        let (ip, tcp) = split(&tcp_segment(false, Some(777), false, b"hello"), 20);
        let out = tcp_reset(&ip, &tcp.try_into().unwrap(), 5).unwrap();
        let h = parse_reset(&out);
        assert!(h.rst && !h.ack);
        assert_eq!(h.sequence_number, 777);
    }

    #[test]
    fn a_rst_is_never_answered() {
        let (ip, tcp) = split(&tcp_segment(false, None, true, &[]), 20);
        assert!(tcp_reset(&ip, &tcp.try_into().unwrap(), 0).is_none());
    }

    #[test]
    fn a_packet_too_big_gets_fragmentation_needed_with_the_mtu() {
        let mut segment = Vec::new();
        let mut header = etherparse::Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, VIP).unwrap();
        header.dont_fragment = true;
        PacketBuilder::ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
            .tcp(40000, 80, 1000, 64240)
            .write(&mut segment, &[7; 1460])
            .unwrap();
        let (ip, l4) = split(&segment, 8);
        assert!(dont_fragment(&ip));
        let out = fragmentation_needed(&ip, &l4.try_into().unwrap(), 1450);
        let p = SlicedPacket::from_ip(&out).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(outer)) = &p.net else {
            panic!("not IPv4")
        };
        let header = outer.header().to_header();
        assert_eq!(header.calc_header_checksum(), header.header_checksum);
        assert_eq!(
            outer.header().source(),
            VIP,
            "from where the client sent it"
        );
        assert_eq!(outer.header().destination(), CLIENT);
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1450
                }
            )
        );
        let again = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
        assert_eq!(again.checksum, icmp.checksum());
        assert_eq!(
            icmp.payload(),
            &segment[..28],
            "the header and 8 bytes quoted"
        );
        let mut unset = ip;
        unset[6] &= !0x40;
        assert!(!dont_fragment(&unset));
    }

    /// What the kernel's skb_checksum_help does to a packet whose partial
    /// checksum starts at `start` with its field `offset` bytes further.
    fn finish_partial(packet: &mut [u8], start: usize, offset: usize) {
        let folded = !crate::checksum::fold(crate::checksum::sum(&packet[start..]));
        let written = if folded == 0 { 0xffff } else { folded };
        packet[start + offset..start + offset + 2].copy_from_slice(&written.to_be_bytes());
    }

    #[test]
    fn an_answer_around_a_partial_checksum_stays_whole_whether_or_not_it_is_finished() {
        let mut syn = Vec::new();
        PacketBuilder::ipv4(CLIENT, VIP, 64)
            .tcp(40000, 80, 1000, 64240)
            .syn()
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
            .unwrap()
            .write(&mut syn, &[7; 1400])
            .unwrap();
        let mut datagram = Vec::new();
        PacketBuilder::ipv4(CLIENT, VIP, 64)
            .udp(40000, 53)
            .write(&mut datagram, &[9; 1400])
            .unwrap();
        for (packet, field) in [(syn, 16), (datagram, 6)] {
            // A partial checksum: the pseudo-header's sum, not the final one.
            let mut packet = packet;
            packet[20 + field..20 + field + 2].copy_from_slice(&0x1234u16.to_be_bytes());
            let (ip, l4) = split(&packet, QUOTED_TRANSPORT);
            let (headers, quoted) =
                fragmentation_needed_around(&ip, &l4.clone().try_into().unwrap(), 1450)
                    .expect("TCP and UDP are answered");
            assert_eq!(
                quoted[..22],
                l4[..22],
                "the transport header quoted as it came"
            );
            let mut answer = [&headers[..], &ip[..], &quoted[..]].concat();
            let check = |answer: &[u8], what: &str| {
                let p = SlicedPacket::from_ip(answer).expect("parses");
                let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
                    panic!("not ICMP")
                };
                assert_eq!(
                    icmp.icmp_type(),
                    Icmpv4Type::DestinationUnreachable(
                        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                            next_hop_mtu: 1450
                        }
                    ),
                    "{what}"
                );
                let again =
                    etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
                assert_eq!(again.checksum, icmp.checksum(), "{what}: ICMP checksum");
                assert_eq!(
                    &icmp.payload()[..20],
                    &ip[..],
                    "{what}: the IPv4 header quoted"
                );
            };
            check(&answer, "as written");
            let transport = AROUND_HEADERS + IPV4_HLEN;
            finish_partial(&mut answer, transport, field);
            check(&answer, "once a device finished the partial checksum");
        }
    }

    #[test]
    fn an_answer_around_a_partial_checksum_is_for_tcp_and_udp_only() {
        let mut ip = [0u8; IPV4_HLEN];
        ip[0] = 0x45;
        ip[9] = PROTO_ICMP;
        assert!(fragmentation_needed_around(&ip, &[0; QUOTED_TRANSPORT], 1450).is_none());
    }

    #[test]
    fn a_datagram_gets_a_port_unreachable_quoting_it() {
        let mut datagram = Vec::new();
        PacketBuilder::ipv4(CLIENT, VIP, 64)
            .udp(40000, 53)
            .write(&mut datagram, b"query")
            .unwrap();
        let (ip, l4) = split(&datagram, 8);
        let out = port_unreachable(&ip, &l4.try_into().unwrap());
        let p = SlicedPacket::from_ip(&out).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(outer)) = &p.net else {
            panic!("not IPv4")
        };
        let header = outer.header().to_header();
        assert_eq!(header.calc_header_checksum(), header.header_checksum);
        assert_eq!(outer.header().source(), VIP);
        assert_eq!(outer.header().destination(), CLIENT);
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not ICMP")
        };
        assert!(matches!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
        ));
        let again = etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
        assert_eq!(again.checksum, icmp.checksum());
        assert_eq!(icmp.payload(), &datagram[..28]);
    }
}
