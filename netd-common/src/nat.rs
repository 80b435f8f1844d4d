//! Address translations: what a decision stage asks the writer to do to a
//! packet's IPv4 addresses and TCP/UDP ports, and the checksum arithmetic
//! for a writer that edits the bytes itself (XDP; TC lets the kernel's
//! csum helpers do it, which also know about offloaded checksums).
//!
//! A plan holds at most one new source and one new destination:
//! - DNAT (service): new destination `backend:port`;
//! - SNAT (hairpin): new source [`crate::service::HAIRPIN_IP`];
//! - reverse NAT (reply): new source `VIP:port`, and for hairpin a new
//!   destination, the client.

use crate::{
    checksum,
    service::{PROTO_TCP, PROTO_UDP},
};

/// An address and port, both as on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr {
    pub ip: [u8; 4],
    pub port: [u8; 2],
}

/// The translations of one packet, applied together by one writer.
///
/// Plain fields and flags rather than `Option`s: every byte of a plan is
/// defined, so the BPF code LLVM makes for copying one never does
/// arithmetic on whatever register held an undefined payload (a pointer,
/// say), which the verifier refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat {
    src: Addr,
    dst: Addr,
    set: u8,
}

const SET_SRC: u8 = 1;
const SET_DST: u8 = 2;

impl Nat {
    pub const NONE: Nat = Nat {
        src: Addr {
            ip: [0; 4],
            port: [0; 2],
        },
        dst: Addr {
            ip: [0; 4],
            port: [0; 2],
        },
        set: 0,
    };

    /// A new destination (DNAT).
    pub const fn dst(self, to: Addr) -> Self {
        Nat {
            dst: to,
            set: self.set | SET_DST,
            ..self
        }
    }

    /// A new source (SNAT, reverse DNAT).
    pub const fn src(self, to: Addr) -> Self {
        Nat {
            src: to,
            set: self.set | SET_SRC,
            ..self
        }
    }

    pub const fn new_src(&self) -> Option<Addr> {
        if self.set & SET_SRC != 0 {
            Some(self.src)
        } else {
            None
        }
    }

    pub const fn new_dst(&self) -> Option<Addr> {
        if self.set & SET_DST != 0 {
            Some(self.dst)
        } else {
            None
        }
    }

    pub const fn is_none(&self) -> bool {
        self.set == 0
    }
}

/// Offsets within the IPv4 header.
pub const IP_CHECK: usize = 10;
pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;
/// Offsets within the TCP/UDP header.
pub const L4_SRC_PORT: usize = 0;
pub const L4_DST_PORT: usize = 2;

/// Where the transport checksum sits in the header of `proto`, if it is
/// one netd translates.
#[inline(always)]
pub const fn l4_check_offset(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        _ => None,
    }
}

/// The transport checksum after an address (pseudo-header) or port
/// change. A UDP checksum of 0 means "none" and stays 0; a computed 0 is
/// sent as 0xffff (RFC 768).
#[inline(always)]
pub const fn l4_check_after(proto: u8, check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    if proto == PROTO_UDP && check == 0 {
        return 0;
    }
    udp_nonzero(proto, checksum::replace_u32(check, old, new))
}

/// As [`l4_check_after`] for a port.
#[inline(always)]
pub const fn l4_check_after_port(proto: u8, check: u16, old: [u8; 2], new: [u8; 2]) -> u16 {
    if proto == PROTO_UDP && check == 0 {
        return 0;
    }
    udp_nonzero(
        proto,
        checksum::replace_u16(check, u16::from_be_bytes(old), u16::from_be_bytes(new)),
    )
}

#[inline(always)]
const fn udp_nonzero(proto: u8, check: u16) -> u16 {
    if proto == PROTO_UDP && check == 0 {
        0xffff
    } else {
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UDP checksum of `ip` header + `udp` segment, computed whole.
    fn udp_full(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src);
        pseudo[4..8].copy_from_slice(&dst);
        pseudo[9] = PROTO_UDP;
        pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
        let mut zeroed = udp.to_vec();
        zeroed[6] = 0;
        zeroed[7] = 0;
        let c = !checksum::fold(checksum::sum(&pseudo) + checksum::sum(&zeroed));
        if c == 0 {
            0xffff
        } else {
            c
        }
    }

    #[test]
    fn dnat_of_address_and_port_equals_a_full_recompute() {
        let (src, dst, backend) = ([10, 0, 0, 2], [10, 0, 0, 100], [10, 0, 0, 7]);
        let mut udp = vec![0x30, 0x39, 0, 53, 0, 13, 0, 0, b'h', b'e', b'l', b'l', b'o'];
        let c = udp_full(src, dst, &udp);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let after_ip = l4_check_after(PROTO_UDP, c, dst, backend);
        let after = l4_check_after_port(PROTO_UDP, after_ip, [0, 53], [0x14, 0xe9]);
        udp[2..4].copy_from_slice(&[0x14, 0xe9]);
        assert_eq!(after, udp_full(src, backend, &udp));
    }

    #[test]
    fn a_udp_packet_without_checksum_keeps_none() {
        assert_eq!(l4_check_after(PROTO_UDP, 0, [1, 2, 3, 4], [5, 6, 7, 8]), 0);
        assert_eq!(l4_check_after_port(PROTO_UDP, 0, [0, 1], [0, 2]), 0);
    }

    #[test]
    fn only_tcp_and_udp_have_a_translated_checksum() {
        assert_eq!(l4_check_offset(PROTO_TCP), Some(16));
        assert_eq!(l4_check_offset(PROTO_UDP), Some(6));
        assert_eq!(l4_check_offset(1), None);
    }
}
