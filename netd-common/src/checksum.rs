//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624),
//! for every hook: a full sum over a header netd writes, and the delta when
//! a translation replaces a field of a header it did not write.

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// One's-complement sum of `bytes` taken as big-endian 16-bit words (a
/// trailing odd byte is padded with zero), not yet folded or inverted.
#[inline(always)]
pub fn sum(bytes: &[u8]) -> u32 {
    let mut total: u32 = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        total += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    if i < bytes.len() {
        total += u32::from(bytes[i]) << 8;
    }
    total
}

/// The checksum to write into an IPv4 header whose checksum field is zero.
#[inline(always)]
pub fn ipv4_header(header: &[u8; 20]) -> u16 {
    !fold(sum(header))
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data
/// changed from `old` to `new`: HC' = ~(~HC + ~m + m').
#[inline(always)]
pub const fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// As [`replace_u16`] for a 4-byte field (an IPv4 address).
#[inline(always)]
pub const fn replace_u32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let check = replace_u16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    replace_u16(
        check,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with a valid checksum (RFC 1071 verification sums to 0xffff).
    fn header() -> [u8; 20] {
        let mut h = [
            0x45, 0, 0, 84, 0x1c, 0x46, 0x40, 0, 64, 1, 0, 0, 10, 1, 0, 2, 10, 1, 0, 3,
        ];
        let c = ipv4_header(&h).to_be_bytes();
        h[10] = c[0];
        h[11] = c[1];
        h
    }

    #[test]
    fn a_full_checksum_verifies() {
        assert_eq!(fold(sum(&header())), 0xffff);
        // A known header (Wikipedia's IPv4 example): checksum 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
    }

    #[test]
    fn incremental_updates_equal_a_full_recompute() {
        for (old, new) in [
            ([10, 1, 0, 3], [10, 2, 0, 9]),
            ([10, 1, 0, 3], [255, 255, 255, 255]),
            ([10, 1, 0, 3], [0, 0, 0, 0]),
            ([10, 1, 0, 3], [10, 1, 0, 3]),
        ] {
            let mut h = header();
            let check = u16::from_be_bytes([h[10], h[11]]);
            let updated = replace_u32(check, old, new);
            h[16..20].copy_from_slice(&new);
            h[10] = 0;
            h[11] = 0;
            let full = ipv4_header(&h);
            // 0x0000 and 0xffff are the same number in one's complement.
            assert!(
                updated == full || (updated ^ full == 0xffff && (full == 0 || full == 0xffff)),
                "{old:?} -> {new:?}: {updated:#x} != {full:#x}"
            );
        }
        let h = header();
        let check = u16::from_be_bytes([h[10], h[11]]);
        assert_eq!(replace_u16(check, 0x0054, 0x0054), check);
    }

    #[test]
    fn an_odd_length_is_padded() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
