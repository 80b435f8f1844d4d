//! The packet as the parser sees it: a bounds-checked window over
//! `data..data_end`, each read a pointer comparison the verifier can follow.

use aya_ebpf::programs::{TcContext, XdpContext};
use netd_common::parse::Frame;

/// Headers the TC programs want in the linear part of the skb.
const TC_LINEAR_WANTED: u32 = 128;

/// How deep into a frame `load` and `put` reach: past the outer and
/// inner headers of a VXLAN packet with options, well short of the
/// verifier's 64 KiB packet range.
const MAX_WRITE_OFFSET: usize = 1024;

pub struct PacketFrame {
    start: usize,
    end: usize,
    wire_len: usize,
}

impl PacketFrame {
    #[inline(always)]
    pub fn xdp(ctx: &XdpContext) -> Self {
        let (start, end) = (ctx.data(), ctx.data_end());
        Self {
            start,
            end,
            // Opaque: later arithmetic must work on this scalar, never on
            // `end` itself (the verifier refuses any on the packet end).
            wire_len: core::hint::black_box(end - start),
        }
    }

    /// Makes sure the headers are in the linear part first: an skb may carry
    /// them in paged fragments, out of reach of direct packet access.
    #[inline(always)]
    pub fn tc(ctx: &TcContext) -> Self {
        let wire_len = ctx.len();
        let wanted = if wire_len < TC_LINEAR_WANTED {
            wire_len
        } else {
            TC_LINEAR_WANTED
        };
        if ((ctx.data_end() - ctx.data()) as u32) < wanted {
            // On failure the reads below come up short and the packet counts as malformed.
            let _ = ctx.pull_data(wanted);
        }
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
            wire_len: wire_len as usize,
        }
    }
}

impl PacketFrame {
    /// The frame from `offset` on: the inner packet of a tunnel, say.
    /// `None` past [`MAX_WRITE_OFFSET`]: the bound lets the verifier
    /// range-check reads of the inner frame.
    #[inline(always)]
    pub fn from(&self, offset: usize) -> Option<Self> {
        // Opaque, as in `load`: the bound must stay on the register used.
        let offset = core::hint::black_box(offset);
        if offset > MAX_WRITE_OFFSET {
            return None;
        }
        Some(Self {
            start: self.start + offset,
            end: self.end,
            wire_len: self.wire_len.saturating_sub(offset),
        })
    }

    #[inline(always)]
    pub fn load<const N: usize>(&self, offset: usize) -> Result<[u8; N], ()> {
        // Opaque to the optimiser: each access keeps its own bounds check,
        // which the verifier needs (LLVM would drop one it can derive from
        // another, and the verifier cannot follow that derivation).
        let offset = core::hint::black_box(offset);
        if offset > MAX_WRITE_OFFSET {
            return Err(());
        }
        self.read::<N>(offset).ok_or(())
    }

    /// Writes in place (XDP; TC writes through helpers).
    #[inline(always)]
    pub fn put<const N: usize>(&self, offset: usize, bytes: [u8; N]) -> Result<(), ()> {
        let offset = core::hint::black_box(offset);
        // Bounded, so the verifier can range-check the pointer at all.
        if offset > MAX_WRITE_OFFSET {
            return Err(());
        }
        let at = self.start + offset;
        if at + N > self.end {
            return Err(());
        }
        // SAFETY: at..at+N lies inside data..data_end, checked just above,
        // and the program may write its packet.
        unsafe { core::ptr::write_unaligned(at as *mut [u8; N], bytes) };
        Ok(())
    }
}

impl Frame for PacketFrame {
    #[inline(always)]
    fn wire_len(&self) -> usize {
        self.wire_len
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        // SAFETY: at..at+N lies inside data..data_end, checked just above.
        Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }
}
