//! The translation of an ICMP error about a flow this host translated
//! (`crate::stages::icmp_quote` finds it), written directly. An error's
//! checksums are complete (the kernel never leaves an ICMP checksum to
//! offload), so plain incremental arithmetic (`netd_common::icmp`) keeps
//! them right on either hook.

use netd_common::{
    checksum,
    icmp::{self, Quote, Rewritten, ICMP_CHECK, ICMP_HLEN},
    masquerade::{unmasquerade_quote, QuotedSource},
    nat::{IP_CHECK, IP_DST, IP_SRC},
    policy::PROTO_ICMP,
    service::{HAIRPIN_IP, PROTO_TCP},
};

use crate::{
    frame::PacketFrame,
    types::{QuoteBack, QuoteNat},
};

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

/// An ICMP error about a masqueraded flow's packet, back to its endpoint
/// (`q`, offsets the frame's): the quote's source and port (or echo
/// identifier) become the endpoint's, and so does the error's destination.
#[inline(always)]
pub fn unmasquerade(frame: &PacketFrame, q: &QuoteBack) -> Result<(), ()> {
    let at = q.quote as usize;
    let (port_at, check_at) = match q.proto {
        PROTO_TCP => (at + 20, at + 20 + 16),
        PROTO_ICMP => (at + 20 + 4, at + 20 + 2),
        _ => (at + 20, at + 20 + 6),
    };
    let icmp_at = at - ICMP_HLEN + ICMP_CHECK;
    let fields = QuotedSource {
        icmp_check: u16::from_be_bytes(frame.load::<2>(icmp_at)?),
        ip_check: u16::from_be_bytes(frame.load::<2>(at + IP_CHECK)?),
        // A quote may stop short of the transport checksum.
        l4_check: frame.load::<2>(check_at).ok().map(u16::from_be_bytes),
        proto: q.proto,
        src: q.from,
        src_port: q.from_port,
    };
    let new = unmasquerade_quote(&fields, q.to, q.to_port);
    frame.put(at + IP_SRC, q.to)?;
    frame.put(port_at, q.to_port)?;
    frame.put(at + IP_CHECK, new.ip_check.to_be_bytes())?;
    if let Some(check) = new.l4_check {
        frame.put(check_at, check.to_be_bytes())?;
    }
    frame.put(icmp_at, new.icmp_check.to_be_bytes())?;
    readdress(frame, q.l3 as usize, IP_DST, q.from, q.to)
}
