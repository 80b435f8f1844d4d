//! Masquerading (see `netd_common::masquerade`): a packet from an endpoint
//! to the world leaves with the address of the uplink the FIB sends it
//! out of, on a source port of netd's range; its replies are turned back
//! at the uplink ([`reply_to`]) and delivered like any delivery.
//!
//! Writes its own state: `NETD_SNAT` and `NETD_SNAT_REV` (a new flow's
//! pair in [`claim`]; `last_seen` and the TCP closing flags on every
//! packet after).

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, BPF_NOEXIST,
    },
    cty::c_void,
    helpers::generated::bpf_fib_lookup,
    maps::lpm_trie::Key,
};
use netd_common::{
    counters::DropReason,
    icmp,
    masquerade::{
        candidate, EgressEntry, NoMasqKey, RevSnatEntry, SnatEntry, EGRESS_INTERNAL,
        EGRESS_MASQUERADE, EVERY_NETWORK, PORT_TRIES,
    },
    mesh::PublishedKey,
    nat::{Addr, Nat},
    parse::{Headers, Ipv4, L3, L4, TCP_ACK, TCP_SYN},
    policy::PROTO_ICMP,
    service::{closing_flags, CtTuple, CT_SEEN_REPLY, PROTO_TCP, PROTO_UDP},
};

use super::{clock::now, deliver};
use crate::{
    frame::PacketFrame,
    maps::{
        NETD_EGRESS, NETD_EGRESS_DEVS, NETD_ENDPOINTS, NETD_MASQ_CONFIG, NETD_NO_MASQ,
        NETD_PUBLISHED, NETD_SNAT, NETD_SNAT_REV,
    },
    types::{Delivery, QuoteBack, Target},
};

const AF_INET: u8 = 2;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// `-E2BIG`: a full hash map refused the insert.
const E2BIG: i32 = -7;

/// A network's way out, if it has one other than the host's routing.
#[inline(always)]
pub fn egress_of(network: u32) -> Option<EgressEntry> {
    // SAFETY: the value is copied out at once.
    unsafe { NETD_EGRESS.get(&network) }.copied()
}

/// The identifier of an ICMP echo of type `kind`, at `l4 + 4`.
#[inline(always)]
pub fn echo_id(frame: &PacketFrame, h: &Headers, kind: u8) -> Option<[u8; 2]> {
    match h.l4 {
        L4::Icmp { kind: k, .. } if k == kind => frame.load::<2>(usize::from(h.l4_offset) + 4).ok(),
        _ => None,
    }
}

/// Whether a packet leaving the cluster from `network` is the masquerade
/// program's: its network has a way out of its own, and the packet can
/// start or continue a masqueraded flow. A TCP segment that is no SYN
/// and of no masqueraded flow (a reply of a flow the routing mesh
/// tunnelled here, say) goes on as before, without the tail call; an
/// internal network's packets all go, so nothing leaves it.
#[inline(always)]
pub fn applies(network: u32, ip: &Ipv4, l4: &L4) -> bool {
    let Some(egress) = egress_of(network) else {
        return false;
    };
    let L4::Tcp {
        src_port,
        dst_port,
        flags,
    } = *l4
    else {
        return true;
    };
    if egress.flags & EGRESS_INTERNAL != 0 || flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return true;
    }
    let t = CtTuple {
        src: ip.src,
        dst: ip.dst,
        src_port,
        dst_port,
        proto: PROTO_TCP,
        _pad: [0; 3],
    };
    // SAFETY: the value is only tested for presence.
    unsafe { NETD_SNAT.get(&t) }.is_some()
}

/// The tuple masquerading tracks a packet by: TCP and UDP by their ports,
/// an ICMP echo request by its identifier (as source port).
#[inline(always)]
pub fn tuple_of(frame: &PacketFrame, h: &Headers) -> Option<CtTuple> {
    let L3::Ipv4(ip) = h.l3 else {
        return None;
    };
    let (src_port, dst_port) = match h.l4 {
        L4::Tcp {
            src_port, dst_port, ..
        }
        | L4::Udp { src_port, dst_port } => (src_port, dst_port),
        L4::Icmp { .. } => (echo_id(frame, h, ICMP_ECHO_REQUEST)?, [0; 2]),
        _ => return None,
    };
    Some(CtTuple {
        src: ip.src,
        dst: ip.dst,
        src_port,
        dst_port,
        proto: ip.protocol,
        _pad: [0; 3],
    })
}

/// A packet of a flow masquerading tracks already: its entry, refreshed.
#[inline(always)]
pub fn established(t: &CtTuple, tcp_flags: u8) -> Option<SnatEntry> {
    let entry = NETD_SNAT.get_ptr_mut(t)?;
    // SAFETY: the entry is this flow's; a racing write only costs a time.
    let entry = unsafe { &mut *entry };
    entry.last_seen = now();
    let closing = closing_flags(tcp_flags);
    if closing & !entry.flags != 0 {
        entry.flags |= closing;
    }
    Some(*entry)
}

/// Whether `dst` is reached with the container's own address: a netd
/// subnet or a CIDR left unmasqueraded, for every network or `network`.
#[inline(always)]
pub fn unmasqueraded(network: u32, dst: [u8; 4]) -> bool {
    let every = NoMasqKey::new(EVERY_NETWORK, dst);
    let own = NoMasqKey::new(network, dst);
    NETD_NO_MASQ
        .get(&Key::new(NoMasqKey::prefix_len(32), every))
        .is_some()
        || NETD_NO_MASQ
            .get(&Key::new(NoMasqKey::prefix_len(32), own))
            .is_some()
}

/// Where the FIB sends a packet of a new flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Not forwarded: this host itself (or a broadcast, an unreachable
    /// route): the host stack has it, as without netd.
    Host,
    /// Out of a device netd takes replies on, from `src`.
    Out { ifindex: u32, src: [u8; 4] },
    /// Out of a device netd does not watch: routed by the host as it is.
    Elsewhere,
    /// Larger than the device's MTU.
    TooBig,
}

/// Asks the FIB, as the host would forward the packet `t` that came in on
/// the endpoint's host veth `ingress`; `ctx` is the program's skb.
#[inline(always)]
pub fn way_out(ctx: *mut c_void, t: &CtTuple, ingress: u32) -> Way {
    // SAFETY: all-zero bytes are a valid bpf_fib_lookup.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = t.proto;
    if t.proto != PROTO_ICMP {
        fib.sport = u16::from_ne_bytes(t.src_port);
        fib.dport = u16::from_ne_bytes(t.dst_port);
    }
    fib.ifindex = ingress;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(t.src);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(t.dst);
    // SAFETY: the helper reads and writes `fib`, which lives on this stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx,
            &mut fib as *mut FibParams,
            core::mem::size_of::<FibParams>() as i32,
            // The neighbour is the redirect's to resolve; the source is
            // the route's preferred one on the way out.
            BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC,
        )
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => {
            // SAFETY: the value is only tested for presence.
            if unsafe { NETD_EGRESS_DEVS.get(&fib.ifindex) }.is_none() {
                return Way::Elsewhere;
            }
            // SAFETY: the helper wrote the source into the union.
            let src = unsafe { fib.__bindgen_anon_3.ipv4_src }.to_ne_bytes();
            if src == [0; 4] {
                return Way::Elsewhere;
            }
            Way::Out {
                ifindex: fib.ifindex,
                src,
            }
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Way::TooBig,
        _ => Way::Host,
    }
}

/// What a new flow of a network with `egress` does, leaving by `way`:
/// the address to translate to and the device, or the host's routing
/// (`Ok(None)`), or a counted drop.
#[inline(always)]
pub fn decide(egress: &EgressEntry, way: Way) -> Result<Option<(u32, [u8; 4])>, DropReason> {
    match way {
        Way::Host => Ok(None),
        _ if egress.flags & EGRESS_INTERNAL != 0 => Err(DropReason::Internal),
        Way::TooBig => Err(DropReason::TooBig),
        Way::Elsewhere => Ok(None),
        Way::Out { .. } if egress.flags & EGRESS_MASQUERADE == 0 => Ok(None),
        Way::Out { ifindex, src } => {
            let to = if egress.egress_ip != [0; 4] {
                egress.egress_ip
            } else {
                src
            };
            Ok(Some((ifindex, to)))
        }
    }
}

/// Claims a source port on `to` for the new flow `t` leaving by
/// `ifindex`: the flow's own if it is in the range and free, else the
/// first free one of [`PORT_TRIES`] candidates. Makes the flow's two
/// entries; returns the port.
#[inline(always)]
pub fn claim(t: &CtTuple, to: [u8; 4], ifindex: u32, hash: u32) -> Result<[u8; 2], DropReason> {
    let config = NETD_MASQ_CONFIG
        .get(0)
        .copied()
        .ok_or(DropReason::NatPortsExhausted)?;
    let stamp = now();
    let back = RevSnatEntry {
        ip: t.src,
        port: t.src_port,
        flags: 0,
        last_seen: stamp,
    };
    // From the remote end to the translated source (an ICMP echo's:
    // 0 → the identifier, as `reply_tuple` reads it).
    let mut reply = CtTuple {
        src: t.dst,
        dst: to,
        src_port: t.dst_port,
        dst_port: [0; 2],
        proto: t.proto,
        _pad: [0; 3],
    };
    let own = u16::from_be_bytes(t.src_port);
    let mut port = 0u16;
    let mut attempt = 0u32;
    let mut first = config.holds(own);
    while attempt < PORT_TRIES {
        let candidate = if first {
            own
        } else {
            let c = candidate(&config, hash, attempt);
            attempt += 1;
            c
        };
        first = false;
        reply.dst_port = candidate.to_be_bytes();
        if t.proto != PROTO_ICMP && is_published(reply.dst_port, t.proto) {
            continue;
        }
        match NETD_SNAT_REV.insert(&reply, &back, u64::from(BPF_NOEXIST)) {
            Ok(()) => {
                port = candidate;
                break;
            }
            Err(E2BIG) => return Err(DropReason::NatTableFull),
            Err(_) => {}
        }
    }
    if port == 0 {
        return Err(DropReason::NatPortsExhausted);
    }
    let entry = SnatEntry {
        to_ip: to,
        to_port: port.to_be_bytes(),
        flags: 0,
        ifindex,
        _pad: 0,
        last_seen: stamp,
        created: stamp,
    };
    if NETD_SNAT.insert(t, &entry, u64::from(BPF_NOEXIST)).is_err() {
        let _ = NETD_SNAT_REV.remove(&reply);
        return Err(DropReason::NatTableFull);
    }
    Ok(port.to_be_bytes())
}

/// A port published on this host's uplinks: never handed out, or the
/// replies would go to the mesh.
#[inline(always)]
fn is_published(port: [u8; 2], proto: u8) -> bool {
    let key = PublishedKey {
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: the value is only tested for presence.
    unsafe { NETD_PUBLISHED.get(&key) }.is_some()
}

/// The reply tuple of a packet arriving on an uplink, if it could be a
/// masqueraded flow's: TCP or UDP to a port in netd's range, or an ICMP
/// echo reply.
#[inline(always)]
pub fn reply_tuple(frame: &PacketFrame, h: &Headers) -> Option<CtTuple> {
    let L3::Ipv4(ip) = h.l3 else {
        return None;
    };
    let (src_port, dst_port) = match h.l4 {
        L4::Tcp {
            src_port, dst_port, ..
        }
        | L4::Udp { src_port, dst_port } => (src_port, dst_port),
        L4::Icmp { .. } => ([0; 2], echo_id(frame, h, ICMP_ECHO_REPLY)?),
        _ => return None,
    };
    let config = NETD_MASQ_CONFIG.get(0)?;
    if !config.holds(u16::from_be_bytes(dst_port)) && ip.protocol != PROTO_ICMP {
        return None;
    }
    Some(CtTuple {
        src: ip.src,
        dst: ip.dst,
        src_port,
        dst_port,
        proto: ip.protocol,
        _pad: [0; 3],
    })
}

/// The reply tuple of the packet an ICMP error `h` quotes, if that could
/// be a masqueraded flow's packet (it left translated: from the
/// translated address and port, to the remote), with where the quote
/// starts.
#[inline(always)]
pub fn quoted_reply(frame: &PacketFrame, h: &Headers) -> Option<(CtTuple, u16)> {
    let at = usize::from(h.l4_offset) + icmp::ICMP_HLEN;
    let quoted = frame.load::<20>(at).ok()?;
    if quoted[0] != 0x45 {
        return None;
    }
    let proto = quoted[9];
    let l4 = frame.load::<8>(at + 20).ok()?;
    let (src_port, dst_port) = match proto {
        PROTO_TCP | PROTO_UDP => ([l4[0], l4[1]], [l4[2], l4[3]]),
        PROTO_ICMP if l4[0] == ICMP_ECHO_REQUEST => ([l4[4], l4[5]], [0; 2]),
        _ => return None,
    };
    Some((
        CtTuple {
            src: [quoted[16], quoted[17], quoted[18], quoted[19]],
            dst: [quoted[12], quoted[13], quoted[14], quoted[15]],
            src_port: dst_port,
            dst_port: src_port,
            proto,
            _pad: [0; 3],
        },
        at as u16,
    ))
}

#[inline(always)]
fn is_icmp_error(h: &Headers) -> bool {
    matches!(h.l4, L4::Icmp { kind, .. } if icmp::is_error(kind))
}

/// Whether the uplink program hands `h` to the reverse translation: a
/// reply of a masqueraded flow, or an ICMP error about one of its packets.
#[inline(always)]
pub fn is_reply(frame: &PacketFrame, h: &Headers) -> bool {
    let t = if is_icmp_error(h) {
        quoted_reply(frame, h).map(|(t, _)| t)
    } else {
        reply_tuple(frame, h)
    };
    match t {
        // SAFETY: the value is only tested for presence.
        Some(t) => unsafe { NETD_SNAT_REV.get(&t) }.is_some(),
        None => false,
    }
}

/// The container a reply `t` goes back to, its entry refreshed; the
/// flow's forward entry learns it was replied (and a FIN or RST), once.
#[inline(always)]
pub fn reply_to(t: &CtTuple, tcp_flags: u8) -> Option<RevSnatEntry> {
    let entry = NETD_SNAT_REV.get_ptr_mut(t)?;
    // SAFETY: as in `established`.
    let entry = unsafe { &mut *entry };
    entry.last_seen = now();
    let news = (CT_SEEN_REPLY | closing_flags(tcp_flags)) & !entry.flags;
    if news != 0 {
        entry.flags |= news;
        replied(t, entry, news);
    }
    Some(*entry)
}

/// Marks the flow of reply `t` (to the container at `back`) with `flags`.
#[inline(always)]
fn replied(t: &CtTuple, back: &RevSnatEntry, flags: u16) {
    let flow = CtTuple {
        src: back.ip,
        dst: t.src,
        src_port: back.port,
        dst_port: t.src_port,
        proto: t.proto,
        _pad: [0; 3],
    };
    if let Some(entry) = NETD_SNAT.get_ptr_mut(&flow) {
        // SAFETY: as in `established`.
        let entry = unsafe { &mut *entry };
        entry.flags |= flags;
    }
}

/// What becomes of a reply of a masqueraded flow: the translation back to
/// its endpoint and the delivery into it, if it is still here.
#[derive(Clone, Copy, Default)]
pub struct Reverse {
    pub at: Target,
    pub nat: Nat,
    pub into: Delivery,
    /// An ICMP error about the flow: its quote (`quote`) is translated
    /// back instead (`rewrite::quote::unmasquerade`), and policy does not
    /// judge it. A flag and a struct always set, not an `Option`: copying
    /// an enum's unset payload is what the verifier refuses.
    pub error: bool,
    pub quote: QuoteBack,
}

/// A reply at the uplink: its flow's endpoint, translated back, or None
/// (not a masqueraded flow's: the host has it). The endpoint gone is a
/// counted drop.
#[inline(always)]
pub fn reverse(frame: &PacketFrame, h: &Headers) -> Result<Option<Reverse>, DropReason> {
    if is_icmp_error(h) {
        return error_back(frame, h);
    }
    // Everything the headers tell, read before any map call: LLVM would
    // otherwise keep the parsed enum across them, copying bytes an ARP
    // parse never set, which the verifier refuses.
    let Some(t) = reply_tuple(frame, h) else {
        return Ok(None);
    };
    let (tcp_flags, echo) = match h.l4 {
        L4::Tcp { flags, .. } => (flags, false),
        L4::Icmp { .. } => (0, true),
        _ => (0, false),
    };
    let mut at = Target::of(h);
    if echo {
        at = at.echo(t.dst_port);
    }
    let at = core::hint::black_box(at);
    let Some(back) = reply_to(&t, tcp_flags) else {
        return Ok(None);
    };
    // SAFETY: the value is copied out at once.
    let peer = unsafe { NETD_ENDPOINTS.get(&back.ip) }
        .copied()
        .ok_or(DropReason::NotHere)?;
    let into = deliver::to_local(&peer).ok_or(DropReason::NotHere)?;
    Ok(Some(Reverse {
        at,
        nat: Nat::NONE.dst(Addr {
            ip: back.ip,
            port: back.port,
        }),
        into,
        error: false,
        quote: QuoteBack::default(),
    }))
}

/// An ICMP error about a masqueraded flow's packet: back to its endpoint,
/// with the quote it can match to its socket.
#[inline(always)]
fn error_back(frame: &PacketFrame, h: &Headers) -> Result<Option<Reverse>, DropReason> {
    let Some((t, quote)) = quoted_reply(frame, h) else {
        return Ok(None);
    };
    let l3 = h.l3_offset;
    // SAFETY: the value is copied out at once.
    let Some(back) = (unsafe { NETD_SNAT_REV.get(&t) }).copied() else {
        return Ok(None);
    };
    // SAFETY: as above.
    let peer = unsafe { NETD_ENDPOINTS.get(&back.ip) }
        .copied()
        .ok_or(DropReason::NotHere)?;
    let into = deliver::to_local(&peer).ok_or(DropReason::NotHere)?;
    Ok(Some(Reverse {
        into,
        error: true,
        quote: QuoteBack {
            l3,
            quote,
            proto: t.proto,
            from: t.dst,
            from_port: t.dst_port,
            to: back.ip,
            to_port: back.port,
        },
        ..Reverse::default()
    }))
}
