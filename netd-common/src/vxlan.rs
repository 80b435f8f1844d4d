//! The outer headers of netd's VXLAN (RFC 7348): IPv4 with DF set and a
//! fresh ID, UDP to 4789 without checksum, and the VXLAN header. Pure, so
//! the same bytes serve every hook that encapsulates and are tested here.

use crate::{
    checksum,
    maps::{VXLAN_OVERHEAD, VXLAN_PORT},
};

pub const FLAG_VNI: u8 = 0x08;
/// Where the routing mesh's mark is: the last byte of the reserved field
/// after the flags.
pub const MESH_MARK_AT: usize = 3;
/// The mark on a packet the routing mesh tunnels from the host a client
/// connected to (the outer source) to the backend's host: its inner source
/// is that client, no endpoint, and its replies go back through the
/// ingress host. Only netd hosts send or accept it; a kernel VXLAN device
/// drops reserved bits it does not know.
pub const MESH_INGRESS: u8 = 0x01;
/// IPv4 + UDP + VXLAN: what precedes the inner Ethernet header.
pub const OUTER_LEN: usize = 36;

/// What one encapsulation writes besides the inner frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    pub local: [u8; 4],
    pub remote: [u8; 4],
    pub vni: u32,
    pub src_port: u16,
    pub ip_id: u16,
    /// Carries [`MESH_INGRESS`].
    pub mesh: bool,
}

/// IPv4 total length and UDP length of the outer packet around an inner
/// frame of `inner_frame_len` bytes. A GSO packet can hold more than 64 KB;
/// its lengths do not fit 16 bits, so they are written as 0, as the kernel
/// does for BIG TCP, and segmentation writes each segment's own.
#[inline(always)]
pub const fn outer_lengths(inner_frame_len: u32) -> (u16, u16) {
    let ip = inner_frame_len as u64 + (VXLAN_OVERHEAD - 14) as u64;
    if ip > 0xffff {
        return (0, 0);
    }
    (ip as u16, (ip - 20) as u16)
}

/// Outer IPv4, UDP and VXLAN headers for an inner frame of `inner_frame_len`.
#[inline(always)]
pub fn outer_headers(o: &Outer, inner_frame_len: u32) -> [u8; OUTER_LEN] {
    let (ip_len, udp_len) = outer_lengths(inner_frame_len);
    let (l, id, sp, dp, ul, v) = (
        ip_len.to_be_bytes(),
        o.ip_id.to_be_bytes(),
        o.src_port.to_be_bytes(),
        VXLAN_PORT.to_be_bytes(),
        udp_len.to_be_bytes(),
        o.vni.to_be_bytes(),
    );
    let mut ip: [u8; 20] = [
        0x45,
        0,
        l[0],
        l[1],
        id[0],
        id[1],
        0x40, // DF: the underlay must not fragment; PMTU errors reach the sender
        0,
        64,
        17,
        0,
        0,
        o.local[0],
        o.local[1],
        o.local[2],
        o.local[3],
        o.remote[0],
        o.remote[1],
        o.remote[2],
        o.remote[3],
    ];
    let csum = checksum::ipv4_header(&ip).to_be_bytes();
    ip[10] = csum[0];
    ip[11] = csum[1];
    let mut out = [0u8; OUTER_LEN];
    let mut i = 0;
    while i < 20 {
        out[i] = ip[i];
        i += 1;
    }
    let udp_vxlan = [
        sp[0],
        sp[1],
        dp[0],
        dp[1],
        ul[0],
        ul[1],
        0,
        0,
        FLAG_VNI,
        0,
        0,
        if o.mesh { MESH_INGRESS } else { 0 },
        v[1],
        v[2],
        v[3],
        0,
    ];
    while i < OUTER_LEN {
        out[i] = udp_vxlan[i - 20];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outer() -> Outer {
        Outer {
            local: [192, 0, 2, 1],
            remote: [192, 0, 2, 2],
            vni: 4096,
            src_port: 0xc123,
            ip_id: 0x1234,
            mesh: false,
        }
    }

    #[test]
    fn lengths_count_everything_after_the_outer_ethernet_header() {
        assert_eq!(outer_lengths(98), (98 + 36, 98 + 16));
        // The largest that fits, and one byte more (GSO only).
        assert_eq!(outer_lengths(0xffff - 36), (0xffff, 0xffff - 20));
        assert_eq!(outer_lengths(0xffff - 35), (0, 0));
        assert_eq!(outer_lengths(200_000), (0, 0));
        assert_eq!(outer_lengths(u32::MAX), (0, 0));
    }

    #[test]
    fn headers_carry_df_the_id_the_vni_and_a_valid_checksum() {
        let h = outer_headers(&outer(), 98);
        assert_eq!(h[0], 0x45);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 134);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 0x1234, "ID");
        assert_eq!(h[6] & 0x40, 0x40, "DF");
        assert_eq!(h[6] & 0x1f | h[7], 0, "no fragment offset");
        let mut sum: u32 = 0;
        for w in h[..20].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "IPv4 checksum verifies");
        assert_eq!(u16::from_be_bytes([h[20], h[21]]), 0xc123);
        assert_eq!(u16::from_be_bytes([h[22], h[23]]), 4789);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 114);
        assert_eq!(&h[26..28], &[0, 0], "no UDP checksum");
        assert_eq!(&h[28..36], &[0x08, 0, 0, 0, 0, 0x10, 0, 0]);
    }

    #[test]
    fn the_mesh_mark_sits_in_a_reserved_byte_and_nowhere_else() {
        let plain = outer_headers(&outer(), 98);
        let marked = outer_headers(
            &Outer {
                mesh: true,
                ..outer()
            },
            98,
        );
        let vxlan = 28;
        assert_eq!(marked[vxlan + MESH_MARK_AT], MESH_INGRESS);
        assert_eq!(marked[vxlan], FLAG_VNI);
        for i in (0..OUTER_LEN).filter(|i| *i != vxlan + MESH_MARK_AT) {
            assert_eq!(plain[i], marked[i], "byte {i}");
        }
    }
}
