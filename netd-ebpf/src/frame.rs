//! The packet as the parser sees it: a bounds-checked window over
//! `data..data_end`, each read a pointer comparison the verifier can follow.

use aya_ebpf::programs::{TcContext, XdpContext};
use netd_common::parse::Frame;

/// Headers the TC programs want in the linear part of the skb.
const TC_LINEAR_WANTED: u32 = 128;

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
            wire_len: end - start,
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
