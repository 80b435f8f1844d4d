//! ICMP errors about a flow this host translated: which error it is, and
//! what its translation is. For the TC program that takes errors from
//! containers and for the decap (an error from a backend on another
//! host); `crate::rewrite::quote` writes it.

use netd_common::{
    icmp::ICMP_HLEN,
    parse::Frame,
    service::{CtTuple, HAIRPIN_IP, PROTO_TCP, PROTO_UDP},
};

use crate::{frame::PacketFrame, maps::NETD_REV_NAT, types::QuoteNat};

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
