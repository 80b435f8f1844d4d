//! ICMP errors about a translated flow. A backend (or a router on its
//! way) that cannot take a packet of a flow the client sent to `VIP:port`
//! answers about the packet as it saw it, `client → backend:target`. The
//! client's stack matches an error to a socket by the packet it quotes,
//! so the quote must read `client → VIP:port` again, and the error must
//! come from the VIP when the backend sent it. This module is the
//! arithmetic: which fields change and the checksums after.

use crate::{
    checksum,
    nat::{l4_check_after, l4_check_after_port},
};

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// The ICMP header: type, code, checksum, 4 more bytes.
pub const ICMP_HLEN: usize = 8;
/// Where the ICMP checksum is in the ICMP header.
pub const ICMP_CHECK: usize = 2;

/// An error type, whose body quotes the packet it is about.
#[inline(always)]
pub const fn is_error(kind: u8) -> bool {
    matches!(
        kind,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}

/// The fields of an error that translating its quote touches, as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quote {
    pub icmp_check: u16,
    /// The quoted IPv4 header's checksum and destination.
    pub ip_check: u16,
    pub dst: [u8; 4],
    pub proto: u8,
    pub dst_port: [u8; 2],
    /// The quoted transport checksum, when the quote reaches it.
    pub l4_check: Option<u16>,
}

/// The same fields after the quoted destination became `dst:dst_port`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub icmp_check: u16,
    pub ip_check: u16,
    pub l4_check: Option<u16>,
}

/// The checksums after the quote's destination becomes `dst:dst_port`.
/// The ICMP checksum covers the quote, so every word that changes in it
/// (address, port, the quote's own checksums) changes it too.
#[inline(always)]
pub fn rewrite_quoted_dst(q: &Quote, dst: [u8; 4], dst_port: [u8; 2]) -> Rewritten {
    let ip_check = checksum::replace_u32(q.ip_check, q.dst, dst);
    let mut icmp = checksum::replace_u32(q.icmp_check, q.dst, dst);
    icmp = checksum::replace_u16(
        icmp,
        u16::from_be_bytes(q.dst_port),
        u16::from_be_bytes(dst_port),
    );
    icmp = checksum::replace_u16(icmp, q.ip_check, ip_check);
    let l4_check = match q.l4_check {
        Some(old) => {
            let new = l4_check_after_port(
                q.proto,
                l4_check_after(q.proto, old, q.dst, dst),
                q.dst_port,
                dst_port,
            );
            icmp = checksum::replace_u16(icmp, old, new);
            Some(new)
        }
        None => None,
    };
    Rewritten {
        icmp_check: icmp,
        ip_check,
        l4_check,
    }
}

/// The checksums `now` after the quote's source address becomes `new`
/// (a hairpin flow's quote, whose source was SNATed): the address is in
/// the quoted IPv4 header and the quoted transport's pseudo-header, and
/// the ICMP checksum covers all three.
#[inline(always)]
pub fn rewrite_quoted_src(now: &Rewritten, proto: u8, old: [u8; 4], new: [u8; 4]) -> Rewritten {
    let ip_check = checksum::replace_u32(now.ip_check, old, new);
    let mut icmp = checksum::replace_u32(now.icmp_check, old, new);
    icmp = checksum::replace_u16(icmp, now.ip_check, ip_check);
    let l4_check = match now.l4_check {
        Some(before) => {
            let after = l4_check_after(proto, before, old, new);
            icmp = checksum::replace_u16(icmp, before, after);
            Some(after)
        }
        None => None,
    };
    Rewritten {
        icmp_check: icmp,
        ip_check,
        l4_check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Header, Icmpv4Type, PacketBuilder};

    const CLIENT: [u8; 4] = [10, 1, 0, 2];
    const BACKEND: [u8; 4] = [10, 1, 0, 7];
    const VIP: [u8; 4] = [10, 1, 0, 200];

    const HAIRPIN: [u8; 4] = crate::service::HAIRPIN_IP;

    /// An ICMP body quoting `client:40000 → dst:port`, as a Linux backend
    /// quotes a datagram (whole) or a segment (its first 28 bytes here).
    fn quote(tcp: bool, dst: [u8; 4], port: u16, len: usize) -> Vec<u8> {
        quote_from(CLIENT, tcp, dst, port, len)
    }

    fn quote_from(src: [u8; 4], tcp: bool, dst: [u8; 4], port: u16, len: usize) -> Vec<u8> {
        let mut packet = Vec::new();
        let b = PacketBuilder::ipv4(src, dst, 63);
        if tcp {
            b.tcp(40000, port, 1, 1000).write(&mut packet, b"").unwrap();
        } else {
            b.udp(40000, port).write(&mut packet, b"query").unwrap();
        }
        packet.truncate(len);
        packet
    }

    fn icmp_check(body: &[u8]) -> u16 {
        let t = Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port);
        Icmpv4Header::with_checksum(t, body).checksum
    }

    fn fields(body: &[u8]) -> Quote {
        let proto = body[9];
        let at = if proto == 6 { 20 + 16 } else { 20 + 6 };
        Quote {
            icmp_check: icmp_check(body),
            ip_check: u16::from_be_bytes([body[10], body[11]]),
            dst: body[16..20].try_into().unwrap(),
            proto,
            dst_port: [body[22], body[23]],
            l4_check: body
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]])),
        }
    }

    #[test]
    fn the_rewritten_checksums_equal_a_full_recompute() {
        for (tcp, len) in [(false, 33), (false, 28), (true, 40), (true, 28)] {
            let seen = quote(tcp, BACKEND, 8080, len);
            let want = quote(tcp, VIP, 80, len);
            let out = rewrite_quoted_dst(&fields(&seen), VIP, 80u16.to_be_bytes());
            let expect = fields(&want);
            assert_eq!(out.icmp_check, expect.icmp_check, "tcp {tcp} len {len}");
            assert_eq!(out.ip_check, expect.ip_check, "tcp {tcp} len {len}");
            assert_eq!(out.l4_check, expect.l4_check, "tcp {tcp} len {len}");
        }
    }

    #[test]
    fn a_hairpin_quote_gets_its_source_back_with_checksums_equal_a_full_recompute() {
        for (tcp, len) in [(false, 33), (false, 28), (true, 40), (true, 28)] {
            let seen = quote_from(HAIRPIN, tcp, CLIENT, 8080, len);
            let want = quote_from(CLIENT, tcp, VIP, 80, len);
            let dst = rewrite_quoted_dst(&fields(&seen), VIP, 80u16.to_be_bytes());
            let proto = if tcp { 6 } else { 17 };
            let out = rewrite_quoted_src(&dst, proto, HAIRPIN, CLIENT);
            let expect = fields(&want);
            assert_eq!(out.icmp_check, expect.icmp_check, "tcp {tcp} len {len}");
            assert_eq!(out.ip_check, expect.ip_check, "tcp {tcp} len {len}");
            assert_eq!(out.l4_check, expect.l4_check, "tcp {tcp} len {len}");
        }
    }

    #[test]
    fn errors_are_the_types_that_quote() {
        assert!(is_error(3) && is_error(11) && is_error(12));
        assert!(!is_error(0) && !is_error(8) && !is_error(5));
    }
}
