//! An IPv4 header's own fields: what a router changes.

use aya_ebpf::programs::TcContext;
use netd_common::nat::IP_CHECK;

use crate::frame::PacketFrame;

/// Where the TTL is (with the protocol, one 16-bit word of the checksum).
const IP_TTL: usize = 8;

/// A forwarded packet's TTL goes down by one, as the host's forwarding
/// would take it: the IPv4 checksum follows. The caller has checked it is
/// above 1 (at 1 the host answers time exceeded itself).
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, l3: usize) -> Result<(), ()> {
    let frame = PacketFrame::tc(ctx);
    let [ttl, proto] = frame.load::<2>(l3 + IP_TTL)?;
    let (old, new) = (
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([ttl.wrapping_sub(1), proto]),
    );
    ctx.l3_csum_replace(
        l3 + IP_CHECK,
        u64::from(old.to_be()),
        u64::from(new.to_be()),
        2,
    )
    .map_err(|_| ())?;
    ctx.store(l3 + IP_TTL, &[ttl.wrapping_sub(1)], 0)
        .map_err(|_| ())
}

/// A packet's TTL. (Read with the protocol: a one-byte read's bounds
/// check compiles to a form the verifier cannot follow.)
#[inline(always)]
pub fn ttl(frame: &PacketFrame, l3: usize) -> Option<u8> {
    frame.load::<2>(l3 + IP_TTL).ok().map(|[t, _]| t)
}
