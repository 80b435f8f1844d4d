//! A frame's MAC addresses.

use aya_ebpf::programs::TcContext;

use crate::frame::PacketFrame;

const ETH_DST: usize = 0;

/// A frame's destination then source MAC.
#[inline(always)]
pub fn addresses(dst: [u8; 6], src: [u8; 6]) -> [u8; 12] {
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&dst);
    macs[6..].copy_from_slice(&src);
    macs
}

/// A TC packet's destination MAC becomes `dst`.
#[inline(always)]
pub fn set_destination(ctx: &TcContext, dst: &[u8; 6]) -> Result<(), ()> {
    ctx.store(ETH_DST, dst, 0).map_err(|_| ())
}

/// A TC packet's MACs become `dst` and `src`.
#[inline(always)]
pub fn readdress(ctx: &TcContext, dst: [u8; 6], src: [u8; 6]) -> Result<(), ()> {
    write_addresses(ctx, addresses(dst, src))
}

/// A TC packet's destination and source MACs become `macs`.
#[inline(always)]
pub fn write_addresses(ctx: &TcContext, macs: [u8; 12]) -> Result<(), ()> {
    ctx.store(ETH_DST, &macs, 0).map_err(|_| ())
}

/// An XDP frame's MACs become `dst` and `src`.
#[inline(always)]
pub fn readdress_frame(frame: &PacketFrame, dst: [u8; 6], src: [u8; 6]) -> Result<(), ()> {
    frame.put(ETH_DST, addresses(dst, src))
}
