//! Crafted packets for tests and benchmarks. They are only ever fed to
//! parsers and to `BPF_PROG_TEST_RUN`; none is sent on a network, so the
//! addresses below are just bytes.

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder, VlanId};

pub const MAC_A: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
pub const IP4_A: [u8; 4] = [10, 99, 0, 2];
pub const IP4_B: [u8; 4] = [10, 99, 0, 3];
pub const IP6_A: [u8; 16] = [0xfd, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const IP6_B: [u8; 16] = [0xfd, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
pub const PORT_A: u16 = 40000;
pub const PORT_B: u16 = 8080;
pub const PAYLOAD: &[u8] = b"netd test payload";

/// Offset of the IPv4/IPv6 header in an untagged frame.
pub const L3: usize = 14;

fn write(builder: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    builder(&mut out);
    out
}

pub fn ipv4_tcp() -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP4_A, IP4_B, 64)
            .tcp(PORT_A, PORT_B, 1000, 64240)
            .syn()
            .write(out, PAYLOAD)
            .expect("write ipv4 tcp")
    })
}

pub fn ipv4_udp() -> Vec<u8> {
    ipv4_udp_with_payload(PAYLOAD)
}

pub fn ipv4_udp_with_payload(payload: &[u8]) -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP4_A, IP4_B, 64)
            .udp(PORT_A, PORT_B)
            .write(out, payload)
            .expect("write ipv4 udp")
    })
}

pub fn ipv4_icmp_echo() -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP4_A, IP4_B, 64)
            .icmpv4_echo_request(7, 1)
            .write(out, PAYLOAD)
            .expect("write icmp echo")
    })
}

pub fn ipv6_tcp() -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(IP6_A, IP6_B, 64)
            .tcp(PORT_A, PORT_B, 1000, 64240)
            .syn()
            .write(out, PAYLOAD)
            .expect("write ipv6 tcp")
    })
}

pub fn ipv6_udp() -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(IP6_A, IP6_B, 64)
            .udp(PORT_A, PORT_B)
            .write(out, PAYLOAD)
            .expect("write ipv6 udp")
    })
}

pub fn ipv6_icmp_echo() -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(IP6_A, IP6_B, 64)
            .icmpv6_echo_request(7, 1)
            .write(out, PAYLOAD)
            .expect("write icmpv6 echo")
    })
}

/// IPv6 UDP behind a hop-by-hop options header (8 bytes, PadN).
pub fn ipv6_hopopts_udp() -> Vec<u8> {
    let mut pkt = ipv6_udp();
    let hbh = [etherparse::ip_number::UDP.0, 0, 1, 4, 0, 0, 0, 0];
    pkt[L3 + 6] = 0; // next header: hop-by-hop
    pkt.splice(L3 + 40..L3 + 40, hbh);
    let payload_len = u16::from_be_bytes([pkt[L3 + 4], pkt[L3 + 5]]) + 8;
    pkt[L3 + 4..L3 + 6].copy_from_slice(&payload_len.to_be_bytes());
    pkt
}

/// ARP request from A (`IP4_A`, `MAC_A`) asking for `target`.
pub fn arp_request_for(target: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_A,
        &IP4_A,
        &[0; 6],
        &target,
    )
    .expect("arp packet");
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, [0xff; 6])
            .arp(arp)
            .write(out)
            .expect("write arp")
    })
}

/// UDP from (`src_mac`, `src_ip`) to (`dst_mac`, `dst_ip`).
pub fn ipv4_udp_between(
    src_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_mac: [u8; 6],
    dst_ip: [u8; 4],
) -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src_ip, dst_ip, 64)
            .udp(PORT_A, PORT_B)
            .write(out, PAYLOAD)
            .expect("write ipv4 udp")
    })
}

/// An ARP packet (`op` 1 request, 2 reply) in an Ethernet frame.
pub fn arp(
    op: u16,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    (sender_mac, sender_ip): ([u8; 6], [u8; 4]),
    (target_mac, target_ip): ([u8; 6], [u8; 4]),
) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation(op),
        &sender_mac,
        &sender_ip,
        &target_mac,
        &target_ip,
    )
    .expect("arp packet");
    write(|out| {
        PacketBuilder::ethernet2(eth_src, eth_dst)
            .arp(arp)
            .write(out)
            .expect("write arp")
    })
}

/// `inner` (an Ethernet frame) in VXLAN with `vni`, from underlay `src`
/// to underlay `dst` (UDP 4789); `flags` is the VXLAN flags byte (0x08).
pub fn vxlan(src: [u8; 4], dst: [u8; 4], vni: u32, flags: u8, inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut payload = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
    payload.extend_from_slice(inner);
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src, dst, 64)
            .udp(50000, 4789)
            .write(out, &payload)
            .expect("write vxlan")
    })
}

pub fn arp_request() -> Vec<u8> {
    arp_request_for(IP4_B)
}

/// IPv4 UDP in one 802.1Q tag (VLAN 100).
pub fn vlan_ipv4_udp() -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(VlanId::try_new(100).expect("vlan id"))
            .ipv4(IP4_A, IP4_B, 64)
            .udp(PORT_A, PORT_B)
            .write(out, PAYLOAD)
            .expect("write vlan udp")
    })
}

/// IPv4 TCP behind 802.1ad + 802.1Q tags (QinQ).
pub fn qinq_ipv4_tcp() -> Vec<u8> {
    let mut pkt = vlan_ipv4_tcp();
    // Outer 802.1ad tag (S-VLAN 200) in front of the 802.1Q one.
    pkt.splice(12..12, [0x88, 0xa8, 0x00, 0xc8]);
    pkt
}

fn vlan_ipv4_tcp() -> Vec<u8> {
    write(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(VlanId::try_new(100).expect("vlan id"))
            .ipv4(IP4_A, IP4_B, 64)
            .tcp(PORT_A, PORT_B, 1000, 64240)
            .syn()
            .write(out, PAYLOAD)
            .expect("write vlan tcp")
    })
}

/// IPv4 TCP with 4 bytes of IP options (IHL 6: NOP, NOP, NOP, EOL).
pub fn ipv4_options_tcp() -> Vec<u8> {
    let mut pkt = ipv4_tcp();
    pkt.splice(L3 + 20..L3 + 20, [1, 1, 1, 0]);
    pkt[L3] = 0x46;
    let total = u16::from_be_bytes([pkt[L3 + 2], pkt[L3 + 3]]) + 4;
    pkt[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut pkt, L3);
    pkt
}

/// Every valid packet kind, by name. Tests run each of them (and each of
/// their truncations) through the programs; the bench measures each.
pub fn samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ipv4_tcp", ipv4_tcp()),
        ("ipv4_udp", ipv4_udp()),
        ("ipv4_icmp", ipv4_icmp_echo()),
        ("ipv4_options_tcp", ipv4_options_tcp()),
        ("ipv6_tcp", ipv6_tcp()),
        ("ipv6_udp", ipv6_udp()),
        ("ipv6_icmp", ipv6_icmp_echo()),
        ("ipv6_hopopts_udp", ipv6_hopopts_udp()),
        ("arp", arp_request()),
        ("vlan_ipv4_udp", vlan_ipv4_udp()),
        ("qinq_ipv4_tcp", qinq_ipv4_tcp()),
    ]
}

/// Sets the IPv4 IHL field of an untagged packet (checksum fixed up).
pub fn with_ihl(mut pkt: Vec<u8>, ihl: u8) -> Vec<u8> {
    pkt[L3] = 0x40 | (ihl & 0x0f);
    fix_ipv4_checksum(&mut pkt, L3);
    pkt
}

/// Sets the fragment fields of an untagged IPv4 packet: `offset` in 8-byte
/// units and the more-fragments flag (checksum fixed up).
pub fn with_fragment(mut pkt: Vec<u8>, offset: u16, more_fragments: bool) -> Vec<u8> {
    let field = (offset & 0x1fff) | if more_fragments { 0x2000 } else { 0 };
    pkt[L3 + 6..L3 + 8].copy_from_slice(&field.to_be_bytes());
    fix_ipv4_checksum(&mut pkt, L3);
    pkt
}

/// A first IPv4 fragment whose payload stops after `l4_bytes` bytes of the
/// transport header (a "tiny fragment", RFC 1858).
pub fn ipv4_tiny_first_fragment(l4_bytes: usize) -> Vec<u8> {
    let mut pkt = with_fragment(ipv4_tcp(), 0, true);
    pkt.truncate(L3 + 20 + l4_bytes);
    let total = (20 + l4_bytes) as u16;
    pkt[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut pkt, L3);
    pkt
}

/// Sets the IPv4 total length field of an untagged packet.
pub fn with_ipv4_total_len(mut pkt: Vec<u8>, total: u16) -> Vec<u8> {
    pkt[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut pkt, L3);
    pkt
}

/// Sets the EtherType of an untagged frame.
pub fn with_ethertype(mut pkt: Vec<u8>, ethertype: u16) -> Vec<u8> {
    pkt[12..14].copy_from_slice(&ethertype.to_be_bytes());
    pkt
}

/// Recomputes the IPv4 header checksum of the header at `l3`.
pub fn fix_ipv4_checksum(pkt: &mut [u8], l3: usize) {
    let hlen = ((pkt[l3] & 0x0f) as usize) * 4;
    pkt[l3 + 10] = 0;
    pkt[l3 + 11] = 0;
    let sum = internet_checksum(&pkt[l3..l3 + hlen.max(20).min(pkt.len() - l3)]);
    pkt[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
}

/// RFC 1071 one's-complement checksum.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::SlicedPacket;

    #[test]
    fn every_sample_is_a_valid_packet_for_etherparse() {
        for (name, pkt) in samples() {
            let sliced = SlicedPacket::from_ethernet(&pkt);
            assert!(sliced.is_ok(), "{name}: {sliced:?}");
        }
    }

    #[test]
    fn ipv4_checksum_of_a_built_packet_verifies_to_zero() {
        let pkt = ipv4_options_tcp();
        assert_eq!(internet_checksum(&pkt[L3..L3 + 24]), 0);
    }
}
