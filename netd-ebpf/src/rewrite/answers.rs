//! A packet turned into netd's answer to it, sent back where it came
//! from: an ARP reply, a TCP RST or ICMP port unreachable for a service
//! port without backends (`netd_common::refusal`), an ICMP fragmentation
//! needed for what the routing mesh's tunnel cannot carry.

use aya_ebpf::{
    bindings::{__sk_buff, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_md},
    helpers::generated::{bpf_skb_change_tail, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
};
use netd_common::{
    parse::Frame,
    refusal::{
        fragmentation_needed, fragmentation_needed_around, port_unreachable, tcp_reset,
        AROUND_HEADERS, QUOTED_TRANSPORT, RESET_LEN, UNREACHABLE_LEN,
    },
    service::{PROTO_TCP, PROTO_UDP},
};

use crate::{
    frame::PacketFrame,
    types::{ArpAnswer, Target},
};

const ETH_DST: usize = 0;
const ETH_SRC: usize = 6;

/// Turns the request in place into the reply `answer`.
#[inline(always)]
pub fn arp_reply(ctx: &TcContext, answer: &ArpAnswer) -> Result<(), i64> {
    let ArpAnswer {
        ip,
        mac,
        asker_ip,
        asker_mac,
        at,
    } = *answer;
    let arp = at as usize;
    ctx.store(ETH_DST, &asker_mac, 0)?;
    ctx.store(ETH_SRC, &mac, 0)?;
    ctx.store(arp + 6, &[0u8, 2], 0)?; // op: reply
    ctx.store(arp + 8, &mac, 0)?; // sender hardware address
    ctx.store(arp + 14, &ip, 0)?; // sender protocol address
    ctx.store(arp + 18, &asker_mac, 0)?; // target hardware address
    ctx.store(arp + 24, &asker_ip, 0)?; // target protocol address
    Ok(())
}

const ETH_ALEN: usize = 6;

/// Rewrites the TCP segment or UDP datagram `at` into its refusal: the
/// Ethernet addresses swapped, then the answer's IPv4 packet, the frame cut
/// (or grown) to fit. Packets with IP options, and a RST (never answered),
/// are refused with `Err`: the caller drops them.
///
/// A BPF call with its own frame: the answer is built on the stack.
#[inline(never)]
pub fn refusal(skb: *mut __sk_buff, at: &Target) -> Result<(), ()> {
    let ctx = &TcContext::new(skb);
    let frame = PacketFrame::tc(ctx);
    let (l3, l4) = (at.l3 as usize, at.l4 as usize);
    let ip: [u8; 20] = frame.load(l3)?;
    if ip[0] != 0x45 || l4 != l3 + 20 {
        return Err(());
    }
    let macs: [u8; 2 * ETH_ALEN] = frame.load(0)?;
    match at.proto {
        PROTO_TCP => {
            let tcp: [u8; 20] = frame.load(l4)?;
            let total = u16::from_be_bytes([ip[2], ip[3]]);
            let headers = 20 + u16::from(tcp[12] >> 4) * 4;
            let answer = tcp_reset(&ip, &tcp, total.saturating_sub(headers)).ok_or(())?;
            resize(ctx, l3 + RESET_LEN)?;
            ctx.store(l3, &answer, 0).map_err(|_| ())?;
        }
        PROTO_UDP => {
            let udp: [u8; 8] = frame.load(l4)?;
            let answer = port_unreachable(&ip, &udp);
            resize(ctx, l3 + UNREACHABLE_LEN)?;
            ctx.store(l3, &answer, 0).map_err(|_| ())?;
        }
        _ => return Err(()),
    }
    let mut swapped = [0u8; 2 * ETH_ALEN];
    swapped[..ETH_ALEN].copy_from_slice(&macs[ETH_ALEN..]);
    swapped[ETH_ALEN..].copy_from_slice(&macs[..ETH_ALEN]);
    ctx.store(0, &swapped, 0).map_err(|_| ())
}

#[inline(always)]
fn resize(ctx: &TcContext, len: usize) -> Result<(), ()> {
    // SAFETY: a plain helper call on the program's own skb.
    match unsafe { bpf_skb_change_tail(ctx.skb.skb as *mut _, len as u32, 0) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

/// Turns the packet into the ICMP fragmentation needed that answers it
/// (`netd_common::refusal`), from the address it was sent to, back to the
/// MAC it came from; the frame is cut to the answer's length.
#[inline(always)]
pub fn too_big(ctx: *mut xdp_md, l3: u16, l4: u16, mtu: u16) -> Result<(), ()> {
    let ctx = XdpContext::new(ctx);
    let (l3, l4) = (usize::from(l3), usize::from(l4));
    let frame = PacketFrame::xdp(&ctx);
    let ip: [u8; 20] = frame.load(l3)?;
    if ip[0] != 0x45 || l4 != l3 + 20 {
        return Err(());
    }
    let quoted: [u8; 8] = frame.load(l4)?;
    let macs: [u8; 12] = frame.load(0)?;
    let answer = fragmentation_needed(&ip, &quoted, mtu);
    let shrink = frame
        .wire_len()
        .checked_sub(l3 + UNREACHABLE_LEN)
        .ok_or(())?;
    // SAFETY: a plain helper call on the program's own packet.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(shrink as i32)) } != 0 {
        return Err(());
    }
    let frame = PacketFrame::xdp(&ctx);
    frame.put(l3, answer)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    frame.put(0, swapped)
}

/// At TC: the packet becomes the ICMP fragmentation needed that answers
/// it, built around it (`refusal::fragmentation_needed_around`): its IPv4
/// header and first transport bytes stay where they are, quoted, the rest
/// is cut off, and the answer's headers go in front. An skb from a veth
/// may carry a partial checksum the kernel finishes on the way out; so
/// built, the answer stays whole either way. A BPF call with its own
/// frame: the answer is built on the stack.
#[inline(never)]
pub fn too_big_tc(skb: *mut __sk_buff, at: &Target, mtu: u16) -> Result<(), ()> {
    let ctx = &TcContext::new(skb);
    let frame = PacketFrame::tc(ctx);
    let (l3, l4) = (at.l3 as usize, at.l4 as usize);
    let ip: [u8; 20] = frame.load(l3)?;
    if ip[0] != 0x45 || l4 != l3 + 20 {
        return Err(());
    }
    let transport: [u8; QUOTED_TRANSPORT] = frame.load(l4)?;
    let macs: [u8; 2 * ETH_ALEN] = frame.load(0)?;
    let (headers, quoted) = fragmentation_needed_around(&ip, &transport, mtu).ok_or(())?;
    resize(ctx, l4 + QUOTED_TRANSPORT)?;
    ctx.adjust_room(AROUND_HEADERS as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| ())?;
    ctx.store(l3, &headers, 0).map_err(|_| ())?;
    ctx.store(l4 + AROUND_HEADERS, &quoted, 0).map_err(|_| ())?;
    let mut swapped = [0u8; 2 * ETH_ALEN];
    swapped[..ETH_ALEN].copy_from_slice(&macs[ETH_ALEN..]);
    swapped[ETH_ALEN..].copy_from_slice(&macs[..ETH_ALEN]);
    ctx.store(0, &swapped, 0).map_err(|_| ())
}
