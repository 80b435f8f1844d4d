//! The translation of an ICMP error about a flow this host translated,
//! for the TC program that takes errors from containers and for the XDP
//! decap (an error from a backend on another host): which error it is
//! ([`quoted_flow`]) and the direct writes ([`write`]). An error's
//! checksums are complete (the kernel never leaves an ICMP checksum to
//! offload), so plain incremental arithmetic (`netd_common::icmp`) keeps
//! them right on either hook.

use netd_common::{
    checksum,
    icmp::{self, Quote, Rewritten, ICMP_CHECK, ICMP_HLEN},
    nat::{IP_CHECK, IP_DST, IP_SRC},
    parse::Frame,
    service::{CtTuple, HAIRPIN_IP, PROTO_TCP, PROTO_UDP},
};

use crate::{frame::PacketFrame, maps::NETD_REV_NAT};

/// An ICMP error's translation: its quote's destination becomes `to_ip`
/// / `to_port` again, and its own source `src_to`. For a hairpin flow
/// also the quote's source (the hairpin address) and the error's own
/// destination (the same address) become `client`.
#[derive(Clone, Copy, Default)]
pub struct QuoteNat {
    pub set: bool,
    pub hairpin: bool,
    pub l3: u16,
    /// Where the quoted IPv4 header starts (after the ICMP header).
    pub quote: u16,
    pub proto: u8,
    pub to_ip: [u8; 4],
    pub to_port: [u8; 2],
    pub src_from: [u8; 4],
    pub src_to: [u8; 4],
    pub client: [u8; 4],
}

/// The translation of an error whose quote is a flow this host translated
/// (its reply tuple is in `NETD_REV_NAT`), a hairpin flow's included: its
/// quote comes from the hairpin address.
#[inline(always)]
pub fn quoted_flow(frame: &PacketFrame, l3: u16, l4: u16, src: [u8; 4]) -> Option<QuoteNat> {
    let at = l4 as usize + ICMP_HLEN;
    let quoted = frame.read::<20>(at)?;
    let ports = frame.read::<4>(at + 20)?;
    let proto = quoted[9];
    if quoted[0] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let client = [quoted[12], quoted[13], quoted[14], quoted[15]];
    let backend = [quoted[16], quoted[17], quoted[18], quoted[19]];
    let reply = CtTuple {
        src: backend,
        dst: client,
        src_port: [ports[2], ports[3]],
        dst_port: [ports[0], ports[1]],
        proto,
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out at once.
    let rev = (unsafe { NETD_REV_NAT.get(&reply) }).copied()?;
    let hairpin = client == HAIRPIN_IP;
    if rev.client != client && !hairpin {
        return None;
    }
    Some(QuoteNat {
        set: true,
        hairpin,
        client: rev.client,
        l3,
        quote: at as u16,
        proto,
        to_ip: rev.vip,
        to_port: rev.vip_port,
        src_from: src,
        src_to: if src == backend { rev.vip } else { src },
    })
}

/// Where the checksums an error's translation touches are.
struct Checks {
    icmp: usize,
    quoted_ip: usize,
    quoted_l4: usize,
}

impl Checks {
    #[inline(always)]
    fn of(q: &QuoteNat) -> Self {
        let at = q.quote as usize;
        Checks {
            icmp: at - ICMP_HLEN + ICMP_CHECK,
            quoted_ip: at + IP_CHECK,
            quoted_l4: at + 20 + if q.proto == PROTO_TCP { 16 } else { 6 },
        }
    }

    #[inline(always)]
    fn read(&self, frame: &PacketFrame) -> Result<Rewritten, ()> {
        Ok(Rewritten {
            icmp_check: u16::from_be_bytes(frame.load::<2>(self.icmp)?),
            ip_check: u16::from_be_bytes(frame.load::<2>(self.quoted_ip)?),
            // A quote may stop short of the transport checksum (8 bytes is
            // all RFC 792 promises).
            l4_check: frame.load::<2>(self.quoted_l4).ok().map(u16::from_be_bytes),
        })
    }

    #[inline(always)]
    fn write(&self, frame: &PacketFrame, new: &Rewritten) -> Result<(), ()> {
        frame.put(self.quoted_ip, new.ip_check.to_be_bytes())?;
        if let Some(check) = new.l4_check {
            frame.put(self.quoted_l4, check.to_be_bytes())?;
        }
        frame.put(self.icmp, new.icmp_check.to_be_bytes())
    }
}

/// The error's own IPv4 address at `field` becomes `new`.
#[inline(always)]
fn readdress(
    frame: &PacketFrame,
    l3: usize,
    field: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), ()> {
    let check = u16::from_be_bytes(frame.load::<2>(l3 + IP_CHECK)?);
    let check = checksum::replace_u32(check, old, new);
    frame.put(l3 + IP_CHECK, check.to_be_bytes())?;
    frame.put(l3 + field, new)
}

/// Writes `q` into `frame` (offsets are the frame's).
#[inline(always)]
pub fn write(frame: &PacketFrame, q: &QuoteNat) -> Result<(), ()> {
    let at = q.quote as usize;
    let checks = Checks::of(q);
    let now = checks.read(frame)?;
    let fields = Quote {
        icmp_check: now.icmp_check,
        ip_check: now.ip_check,
        dst: frame.load::<4>(at + IP_DST)?,
        proto: q.proto,
        dst_port: frame.load::<2>(at + 22)?,
        l4_check: now.l4_check,
    };
    let new = icmp::rewrite_quoted_dst(&fields, q.to_ip, q.to_port);
    frame.put(at + IP_DST, q.to_ip)?;
    frame.put(at + 22, q.to_port)?;
    checks.write(frame, &new)?;
    if q.src_to != q.src_from {
        readdress(frame, q.l3 as usize, IP_SRC, q.src_from, q.src_to)?;
    }
    Ok(())
}

/// After [`write`], for a hairpin flow's error: the quote's source and the
/// error's destination, both the hairpin address, become the client.
#[inline(always)]
pub fn write_hairpin(frame: &PacketFrame, q: &QuoteNat) -> Result<(), ()> {
    let checks = Checks::of(q);
    let new = icmp::rewrite_quoted_src(&checks.read(frame)?, q.proto, HAIRPIN_IP, q.client);
    frame.put(q.quote as usize + IP_SRC, q.client)?;
    checks.write(frame, &new)?;
    readdress(frame, q.l3 as usize, IP_DST, HAIRPIN_IP, q.client)
}
