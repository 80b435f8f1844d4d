//! Flow hashing: the same inner flow always maps to the same value (so a
//! flow keeps its VXLAN source port and its path through the underlay's
//! ECMP), different flows spread.

use crate::parse::{Headers, L3, L4};

/// FNV-1a over the 5-tuple, then a final avalanche so low bits mix too.
#[inline(always)]
pub fn flow_hash(
    src: [u8; 4],
    dst: [u8; 4],
    protocol: u8,
    src_port: [u8; 2],
    dst_port: [u8; 2],
) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let bytes = [
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
        protocol,
        src_port[0],
        src_port[1],
        dst_port[0],
        dst_port[1],
    ];
    let mut i = 0;
    while i < bytes.len() {
        h ^= u32::from(bytes[i]);
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h
}

/// The hash of a parsed IPv4 packet (ports are 0 for non-TCP/UDP).
#[inline(always)]
pub fn headers_hash(h: &Headers) -> u32 {
    let L3::Ipv4(ip) = h.l3 else { return 0 };
    let (sp, dp) = match h.l4 {
        L4::Tcp {
            src_port, dst_port, ..
        }
        | L4::Udp { src_port, dst_port } => (src_port, dst_port),
        _ => ([0; 2], [0; 2]),
    };
    flow_hash(ip.src, ip.dst, ip.protocol, sp, dp)
}

/// The VXLAN source port for a flow hash: 49152..=65535 (RFC 7348 asks for
/// the dynamic range).
#[inline(always)]
pub fn vxlan_source_port(hash: u32) -> u16 {
    0xc000 | (hash as u16 & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_flow_same_hash_and_flows_spread_over_ports() {
        let a = flow_hash([10, 1, 0, 2], [10, 1, 0, 3], 17, [0x9c, 0x40], [0x1f, 0x90]);
        assert_eq!(
            a,
            flow_hash([10, 1, 0, 2], [10, 1, 0, 3], 17, [0x9c, 0x40], [0x1f, 0x90])
        );
        let ports: std::collections::BTreeSet<u16> = (0u16..256)
            .map(|p| {
                vxlan_source_port(flow_hash(
                    [10, 1, 0, 2],
                    [10, 1, 0, 3],
                    6,
                    p.to_be_bytes(),
                    [0, 80],
                ))
            })
            .collect();
        assert!(ports.len() > 240, "256 flows on {} ports", ports.len());
        assert!(ports.iter().all(|p| *p >= 0xc000));
    }
}
