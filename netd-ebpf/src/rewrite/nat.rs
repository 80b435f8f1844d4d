//! Address translations, written. [`apply`] decides which fields
//! change (from the plan and the parsed headers); a [`Rewriter`] per hook
//! does the writing and the checksums:
//! - TC through the kernel's csum helpers, which also keep an offloaded
//!   (CHECKSUM_PARTIAL) checksum right: a container's veth leaves the
//!   transport checksum to be finished later, and only the pseudo-header
//!   part may then be updated;
//! - XDP by direct writes and the incremental arithmetic of
//!   `netd_common::nat`, on frames whose checksums are complete.

use aya_ebpf::programs::TcContext;
use netd_common::nat::{self, Nat, IP_CHECK, IP_DST, IP_SRC, L4_DST_PORT, L4_SRC_PORT};

use crate::{frame::PacketFrame, types::Target};

/// Where the transport checksum is, and for which protocol.
#[derive(Clone, Copy)]
pub struct L4Check {
    pub at: usize,
    pub proto: u8,
}

pub trait Rewriter {
    /// Writes `new` over the address `old` at `at`, updating the IPv4
    /// header checksum at `l3_check` and the transport's (pseudo-header).
    fn address(
        &self,
        at: usize,
        l3_check: usize,
        l4: L4Check,
        old: [u8; 4],
        new: [u8; 4],
    ) -> Result<(), ()>;
    /// Writes `new` over the address `old` at `at`, updating the IPv4
    /// header checksum only (ICMP's checksum has no pseudo-header).
    fn address_only(
        &self,
        at: usize,
        l3_check: usize,
        old: [u8; 4],
        new: [u8; 4],
    ) -> Result<(), ()>;
    /// Writes port `new` over `old` at `at`, updating the transport checksum.
    fn port(&self, at: usize, l4: L4Check, old: [u8; 2], new: [u8; 2]) -> Result<(), ()>;
}

/// Applies `plan` to the packet `t`, found `base` bytes into what `w`
/// writes (the inner packet of a VXLAN frame not yet stripped, say).
#[inline(always)]
pub fn apply<W: Rewriter>(w: &W, base: usize, t: &Target, plan: &Nat) -> Result<(), ()> {
    if plan.is_none() {
        return Ok(());
    }
    if t.echo {
        return apply_echo(w, base, t, plan);
    }
    if !t.ports {
        return Err(());
    }
    let l3 = base + t.l3 as usize;
    let l4 = base + t.l4 as usize;
    let check = L4Check {
        at: l4 + nat::l4_check_offset(t.proto).ok_or(())?,
        proto: t.proto,
    };
    if let Some(src) = plan.new_src() {
        if src.ip != t.src {
            w.address(l3 + IP_SRC, l3 + IP_CHECK, check, t.src, src.ip)?;
        }
        if src.port != t.src_port {
            w.port(l4 + L4_SRC_PORT, check, t.src_port, src.port)?;
        }
    }
    if let Some(dst) = plan.new_dst() {
        if dst.ip != t.dst {
            w.address(l3 + IP_DST, l3 + IP_CHECK, check, t.dst, dst.ip)?;
        }
        if dst.port != t.dst_port {
            w.port(l4 + L4_DST_PORT, check, t.dst_port, dst.port)?;
        }
    }
    Ok(())
}

/// An ICMP echo's translation: its addresses, and its identifier (in
/// `t.src_port`) as the one port it has.
#[inline(always)]
fn apply_echo<W: Rewriter>(w: &W, base: usize, t: &Target, plan: &Nat) -> Result<(), ()> {
    let l3 = base + t.l3 as usize;
    let l4 = base + t.l4 as usize;
    let check = L4Check {
        at: l4 + ICMP_CHECK,
        proto: t.proto,
    };
    let mut id = t.src_port;
    if let Some(src) = plan.new_src() {
        if src.ip != t.src {
            w.address_only(l3 + IP_SRC, l3 + IP_CHECK, t.src, src.ip)?;
        }
        if src.port != id {
            w.port(l4 + ICMP_ID, check, id, src.port)?;
            id = src.port;
        }
    }
    if let Some(dst) = plan.new_dst() {
        if dst.ip != t.dst {
            w.address_only(l3 + IP_DST, l3 + IP_CHECK, t.dst, dst.ip)?;
        }
        if dst.port != id {
            w.port(l4 + ICMP_ID, check, id, dst.port)?;
        }
    }
    Ok(())
}

const ICMP_CHECK: usize = 2;
const ICMP_ID: usize = 4;

const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
/// A UDP checksum of 0 (none) stays 0, a computed 0 becomes 0xffff.
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

#[inline(always)]
fn l4_flags(proto: u8, size: u64) -> u64 {
    if proto == netd_common::service::PROTO_UDP {
        size | BPF_F_MARK_MANGLED_0
    } else {
        size
    }
}

impl Rewriter for TcContext {
    #[inline(always)]
    fn address(
        &self,
        at: usize,
        l3_check: usize,
        l4: L4Check,
        old: [u8; 4],
        new: [u8; 4],
    ) -> Result<(), ()> {
        let (from, to) = (
            u64::from(u32::from_ne_bytes(old)),
            u64::from(u32::from_ne_bytes(new)),
        );
        self.l4_csum_replace(l4.at, from, to, l4_flags(l4.proto, 4) | BPF_F_PSEUDO_HDR)
            .map_err(|_| ())?;
        self.l3_csum_replace(l3_check, from, to, 4)
            .map_err(|_| ())?;
        self.store(at, &new, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn address_only(
        &self,
        at: usize,
        l3_check: usize,
        old: [u8; 4],
        new: [u8; 4],
    ) -> Result<(), ()> {
        let (from, to) = (
            u64::from(u32::from_ne_bytes(old)),
            u64::from(u32::from_ne_bytes(new)),
        );
        self.l3_csum_replace(l3_check, from, to, 4)
            .map_err(|_| ())?;
        self.store(at, &new, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn port(&self, at: usize, l4: L4Check, old: [u8; 2], new: [u8; 2]) -> Result<(), ()> {
        let (from, to) = (
            u64::from(u16::from_ne_bytes(old)),
            u64::from(u16::from_ne_bytes(new)),
        );
        self.l4_csum_replace(l4.at, from, to, l4_flags(l4.proto, 2))
            .map_err(|_| ())?;
        self.store(at, &new, 0).map_err(|_| ())
    }
}

impl Rewriter for PacketFrame {
    #[inline(always)]
    fn address(
        &self,
        at: usize,
        l3_check: usize,
        l4: L4Check,
        old: [u8; 4],
        new: [u8; 4],
    ) -> Result<(), ()> {
        let c3 = u16::from_be_bytes(self.load::<2>(l3_check)?);
        let c4 = u16::from_be_bytes(self.load::<2>(l4.at)?);
        self.put(
            l3_check,
            netd_common::checksum::replace_u32(c3, old, new).to_be_bytes(),
        )?;
        self.put(
            l4.at,
            nat::l4_check_after(l4.proto, c4, old, new).to_be_bytes(),
        )?;
        self.put(at, new)
    }

    #[inline(always)]
    fn address_only(
        &self,
        at: usize,
        l3_check: usize,
        old: [u8; 4],
        new: [u8; 4],
    ) -> Result<(), ()> {
        let c3 = u16::from_be_bytes(self.load::<2>(l3_check)?);
        self.put(
            l3_check,
            netd_common::checksum::replace_u32(c3, old, new).to_be_bytes(),
        )?;
        self.put(at, new)
    }

    #[inline(always)]
    fn port(&self, at: usize, l4: L4Check, old: [u8; 2], new: [u8; 2]) -> Result<(), ()> {
        let c4 = u16::from_be_bytes(self.load::<2>(l4.at)?);
        self.put(
            l4.at,
            nat::l4_check_after_port(l4.proto, c4, old, new).to_be_bytes(),
        )?;
        self.put(at, new)
    }
}
