//! Bounds-checked packet parsing shared by every netd program.
//!
//! The parser reads through the [`Frame`] trait, so the same code runs in
//! the kernel (over `data..data_end`, where each read is a pointer check the
//! verifier can follow) and in host unit tests (over a byte slice).
//! Addresses and ports stay as the bytes on the wire (network byte order).

use crate::counters::DropReason;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV6: u16 = 0x86dd;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_MH: u8 = 135;

/// TCP header flags (`L4::Tcp::flags`).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// VLAN tags followed before giving up (802.1ad + 802.1Q = 2).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
use crate::icmp::ICMP_HLEN;
const ARP_IPV4_LEN: usize = 28;

/// Read access to a packet.
pub trait Frame {
    /// Length of the whole packet (for an skb this includes paged data that
    /// `read` cannot reach).
    fn wire_len(&self) -> usize;

    /// The `N` bytes at `offset`, or `None` when they are not all readable.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Frame for [u8] {
    fn wire_len(&self) -> usize {
        self.len()
    }

    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }
}

/// Why a packet could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The frame ends inside a header.
    Truncated,
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    TooManyVlanTags,
    /// IPv4 version field is not 4 (or IPv6 not 6).
    BadIpVersion,
    /// IPv4 IHL below 5 (20 bytes).
    BadIhl,
    /// IPv4 total length shorter than its own header.
    BadTotalLength,
    /// TCP data offset below 5 or past the packet.
    BadTcpOffset,
    /// More IPv6 extension headers than [`MAX_IPV6_EXT_HEADERS`].
    TooManyExtHeaders,
    /// A first fragment too short to hold its transport header (RFC 1858).
    TinyFragment,
    /// A TCP fragment at offset 8 bytes, which can rewrite the TCP flags
    /// of the first fragment (RFC 1858).
    OverlappingFragment,
}

impl ParseError {
    /// True when the packet breaks a rule every receiver enforces, so the
    /// Linux stack would discard it on input anyway (truncated headers, bad
    /// version, IHL or total length, TCP data offset). Dropping such a
    /// packet early never changes what the host accepts. The other errors
    /// (many VLAN tags or IPv6 extension headers, odd fragments) are
    /// unusual but can be legal, so only netd's own traffic is held to them.
    pub const fn invalid_for_every_receiver(self) -> bool {
        matches!(
            self,
            ParseError::Truncated
                | ParseError::BadIpVersion
                | ParseError::BadIhl
                | ParseError::BadTotalLength
                | ParseError::BadTcpOffset
        )
    }

    pub const fn drop_reason(self) -> DropReason {
        match self {
            ParseError::TinyFragment | ParseError::OverlappingFragment => DropReason::Fragment,
            _ => DropReason::Malformed,
        }
    }
}

/// ARP for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: [u8; 4],
    pub target_ip: [u8; 4],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: u8,
    /// More-fragments flag set, or a fragment offset other than 0.
    pub fragmented: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The upper-layer protocol after the extension headers.
    pub next_header: u8,
    pub fragmented: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    Arp(Arp),
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// An EtherType the parser does not look into (the value is host order).
    Other(u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        src_port: [u8; 2],
        dst_port: [u8; 2],
        flags: u8,
    },
    Udp {
        src_port: [u8; 2],
        dst_port: [u8; 2],
    },
    Icmp {
        kind: u8,
        code: u8,
    },
    Icmpv6 {
        kind: u8,
        code: u8,
    },
    /// A non-first fragment: its transport header is in an earlier packet.
    LaterFragment,
    /// A transport the parser does not look into.
    Other(u8),
    /// No transport header (ARP, other EtherTypes, IPv6 "no next header").
    None,
}

/// The parsed headers of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    pub vlan_tags: u8,
    /// Offset of the L3 header from the start of the frame.
    pub l3_offset: u16,
    pub l3: L3,
    /// Offset of the L4 header (0 when there is none).
    pub l4_offset: u16,
    pub l4: L4,
}

#[inline(always)]
fn read<F: Frame + ?Sized, const N: usize>(
    frame: &F,
    offset: usize,
) -> Result<[u8; N], ParseError> {
    frame.read::<N>(offset).ok_or(ParseError::Truncated)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses Ethernet, up to two VLAN tags, ARP / IPv4 / IPv6 and the
/// transport header.
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(frame: &F) -> Result<Headers, ParseError> {
    parse_with::<F, true>(frame)
}

/// As [`parse`], for a hook that never looks at IPv6 addresses: they come
/// back as zeros (the packet is still checked whole). In BPF this keeps
/// the IPv6 variant's bytes constant, so LLVM never merges them with the
/// undefined bytes of the smaller variants (see `netd-ebpf`'s outcome).
#[inline(always)]
pub fn parse_without_ipv6_addresses<F: Frame + ?Sized>(frame: &F) -> Result<Headers, ParseError> {
    parse_with::<F, false>(frame)
}

#[inline(always)]
fn parse_with<F: Frame + ?Sized, const IPV6_ADDRESSES: bool>(
    frame: &F,
) -> Result<Headers, ParseError> {
    let mut ethertype = be16(read(frame, 12)?);
    let mut offset = ETH_HLEN;
    let mut vlan_tags = 0u8;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16(read(frame, offset + 2)?);
        offset += 4;
        vlan_tags += 1;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(ParseError::TooManyVlanTags);
    }

    let l3_offset = offset as u16;
    let (l3, l4_offset, l4) = match ethertype {
        ETH_P_ARP => (parse_arp(frame, offset)?, 0, L4::None),
        ETH_P_IPV4 => parse_ipv4(frame, offset)?,
        ETH_P_IPV6 => parse_ipv6::<F, IPV6_ADDRESSES>(frame, offset)?,
        other => (L3::Other(other), 0, L4::None),
    };
    Ok(Headers {
        vlan_tags,
        l3_offset,
        l3,
        l4_offset,
        l4,
    })
}

#[inline(always)]
fn parse_arp<F: Frame + ?Sized>(frame: &F, offset: usize) -> Result<L3, ParseError> {
    let fixed: [u8; 8] = read(frame, offset)?;
    // Only Ethernet hardware addresses with IPv4 protocol addresses.
    if fixed[0..2] != [0, 1] || fixed[2..4] != [0x08, 0x00] || fixed[4] != 6 || fixed[5] != 4 {
        return Ok(L3::Other(ETH_P_ARP));
    }
    let arp: [u8; ARP_IPV4_LEN] = read(frame, offset)?;
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&arp[8..14]);
    let mut sender_ip = [0u8; 4];
    sender_ip.copy_from_slice(&arp[14..18]);
    let mut target_ip = [0u8; 4];
    target_ip.copy_from_slice(&arp[24..28]);
    Ok(L3::Arp(Arp {
        op: u16::from_be_bytes([arp[6], arp[7]]),
        sender_mac,
        sender_ip,
        target_ip,
    }))
}

#[inline(always)]
fn parse_ipv4<F: Frame + ?Sized>(frame: &F, offset: usize) -> Result<(L3, u16, L4), ParseError> {
    let hdr: [u8; IPV4_MIN_HLEN] = read(frame, offset)?;
    if hdr[0] >> 4 != 4 {
        return Err(ParseError::BadIpVersion);
    }
    let hlen = ((hdr[0] & 0x0f) as usize) * 4;
    if hlen < IPV4_MIN_HLEN {
        return Err(ParseError::BadIhl);
    }
    let total_len = be16([hdr[2], hdr[3]]) as usize;
    let available = frame.wire_len().saturating_sub(offset);
    // A total length of 0 marks an IPv4 BIG TCP GSO packet: its length is the skb's.
    let ip_len = if total_len == 0 { available } else { total_len };
    if ip_len < hlen {
        return Err(ParseError::BadTotalLength);
    }
    if ip_len > available {
        return Err(ParseError::Truncated);
    }
    let frag = be16([hdr[6], hdr[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    let protocol = hdr[9];
    let mut src = [0u8; 4];
    src.copy_from_slice(&hdr[12..16]);
    let mut dst = [0u8; 4];
    dst.copy_from_slice(&hdr[16..20]);
    let l3 = L3::Ipv4(Ipv4 {
        src,
        dst,
        protocol,
        fragmented: more_fragments || frag_offset != 0,
    });

    let l4_offset = offset + hlen;
    if frag_offset != 0 {
        if frag_offset == 1 && protocol == IPPROTO_TCP {
            return Err(ParseError::OverlappingFragment);
        }
        return Ok((l3, l4_offset as u16, L4::LaterFragment));
    }
    let l4_end = offset + ip_len;
    let l4 = parse_l4(frame, protocol, l4_offset, l4_end, more_fragments)?;
    Ok((l3, l4_offset as u16, l4))
}

#[inline(always)]
fn parse_ipv6<F: Frame + ?Sized, const ADDRESSES: bool>(
    frame: &F,
    offset: usize,
) -> Result<(L3, u16, L4), ParseError> {
    let hdr: [u8; IPV6_HLEN] = read(frame, offset)?;
    if hdr[0] >> 4 != 6 {
        return Err(ParseError::BadIpVersion);
    }
    let payload_len = be16([hdr[4], hdr[5]]) as usize;
    let available = frame.wire_len().saturating_sub(offset + IPV6_HLEN);
    // Payload length 0 is a jumbogram / BIG TCP GSO packet: its length is the skb's.
    let payload_len = if payload_len == 0 {
        available
    } else {
        payload_len
    };
    if payload_len > available {
        return Err(ParseError::Truncated);
    }
    let l4_end = offset + IPV6_HLEN + payload_len;

    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if ADDRESSES {
        src.copy_from_slice(&hdr[8..24]);
        dst.copy_from_slice(&hdr[24..40]);
    }

    let mut next_header = hdr[6];
    let mut l4_offset = offset + IPV6_HLEN;
    let mut more_fragments = false;
    let mut fragmented = false;
    let mut later_fragment = false;
    let mut ext_headers = 0;
    while ext_headers <= MAX_IPV6_EXT_HEADERS {
        match next_header {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH => {
                let ext: [u8; 2] = read(frame, l4_offset)?;
                next_header = ext[0];
                l4_offset += (ext[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let ext: [u8; 2] = read(frame, l4_offset)?;
                next_header = ext[0];
                l4_offset += (ext[1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let ext: [u8; 4] = read(frame, l4_offset)?;
                next_header = ext[0];
                let frag = be16([ext[2], ext[3]]);
                fragmented = true;
                more_fragments = frag & 1 != 0;
                later_fragment = frag >> 3 != 0;
                l4_offset += 8;
            }
            _ => break,
        }
        ext_headers += 1;
    }
    if ext_headers > MAX_IPV6_EXT_HEADERS {
        return Err(ParseError::TooManyExtHeaders);
    }
    if l4_offset > l4_end {
        return Err(ParseError::Truncated);
    }
    let l3 = L3::Ipv6(Ipv6 {
        src,
        dst,
        next_header,
        fragmented,
    });
    if later_fragment {
        return Ok((l3, l4_offset as u16, L4::LaterFragment));
    }
    let l4 = parse_l4(frame, next_header, l4_offset, l4_end, more_fragments)?;
    Ok((l3, l4_offset as u16, l4))
}

/// `l4_end` is where the IP payload ends; `first_fragment` says the rest of
/// the payload comes in later fragments.
#[inline(always)]
fn parse_l4<F: Frame + ?Sized>(
    frame: &F,
    protocol: u8,
    offset: usize,
    l4_end: usize,
    first_fragment: bool,
) -> Result<L4, ParseError> {
    let needed = match protocol {
        IPPROTO_TCP => TCP_MIN_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => ICMP_HLEN,
        IPPROTO_NONE => return Ok(L4::None),
        other => return Ok(L4::Other(other)),
    };
    if offset + needed > l4_end {
        return Err(if first_fragment {
            ParseError::TinyFragment
        } else {
            ParseError::Truncated
        });
    }
    match protocol {
        IPPROTO_TCP => {
            let tcp: [u8; TCP_MIN_HLEN] = read(frame, offset)?;
            let data_offset = ((tcp[12] >> 4) as usize) * 4;
            if data_offset < TCP_MIN_HLEN || offset + data_offset > l4_end {
                return Err(ParseError::BadTcpOffset);
            }
            Ok(L4::Tcp {
                src_port: [tcp[0], tcp[1]],
                dst_port: [tcp[2], tcp[3]],
                flags: tcp[13],
            })
        }
        IPPROTO_UDP => {
            let udp: [u8; UDP_HLEN] = read(frame, offset)?;
            Ok(L4::Udp {
                src_port: [udp[0], udp[1]],
                dst_port: [udp[2], udp[3]],
            })
        }
        _ => {
            let icmp: [u8; ICMP_HLEN] = read(frame, offset)?;
            if protocol == IPPROTO_ICMP {
                Ok(L4::Icmp {
                    kind: icmp[0],
                    code: icmp[1],
                })
            } else {
                Ok(L4::Icmpv6 {
                    kind: icmp[0],
                    code: icmp[1],
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
