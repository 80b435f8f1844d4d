//! The routing mesh, decided at XDP: a packet from outside the cluster to
//! a port published on this host's uplink address gets a backend
//! (conntrack, then Maglev over the service's backends on every host) and
//! a DNAT to it, keeping the client's own source address. A local backend
//! gets it straight into its veth; a remote one in VXLAN to its host,
//! marked so that host sends the replies back through this one. Replies
//! are turned back into `uplink address:published port` on the way out
//! (`egress_to`, `from_backend`) and leave the uplink the way the request
//! came.
//!
//! A port published with source ranges takes new flows only from them
//! (`source_allowed`): others are dropped, counted as `source_refused`.
//!
//! Writes its own state: `NETD_MESH_NEIGH` (each client's next hop, on
//! the host that took it in) and `NETD_MESH_RETURN` (on a backend's host,
//! the host each tunnelled flow came in on).

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
    },
    cty::c_void,
    helpers::generated::bpf_fib_lookup,
    maps::lpm_trie::Key,
};
use netd_common::{
    counters::DropReason,
    maps::{EndpointEntry, LocalEndpointEntry, VXLAN_OVERHEAD},
    mesh::{
        published_port_bit, reply_follows, return_flags, MeshNeighbour, PublishAllow, PublishedKey,
        TunnelReturn, PORTS_WRITTEN,
    },
    parse::{Headers, Ipv4, L3, L4},
    refusal::dont_fragment,
    service::{CtTuple, ServiceEntry, SERVICE_SOURCE_RANGES},
};

use super::{clock::now, deliver, encap, service};
use crate::{
    frame::PacketFrame,
    maps::{
        NETD_ENDPOINTS, NETD_MESH_NEIGH, NETD_MESH_RETURN, NETD_NETWORKS, NETD_OVERLAY,
        NETD_PUBLISHED, NETD_PUBLISHED_PORTS, NETD_PUBLISH_ADDRS, NETD_PUBLISH_ALLOW,
    },
    types::{
        flow_tuple, ClientPacket, Delivery, Encap, EndpointAction, Hop, MeshAction, MeshStep,
        Outcome, Plan, ServiceKind, Step, Target,
    },
};

const AF_INET: u8 = 2;
const ETH_HLEN: usize = 14;

/// Whether the uplink program hands `h` to the mesh program: TCP or UDP to
/// a published address of this host (`NETD_PUBLISH_ADDRS`) on a published
/// port.
#[inline(always)]
pub fn is_published(h: &Headers) -> bool {
    let L3::Ipv4(ip) = h.l3 else {
        return false;
    };
    let port = match h.l4 {
        L4::Tcp { dst_port, .. } | L4::Udp { dst_port, .. } => dst_port,
        _ => return false,
    };
    if !maybe_published(u16::from_be_bytes(port), ip.protocol) {
        return false;
    }
    let key = PublishedKey {
        port,
        proto: ip.protocol,
        _pad: 0,
    };
    // The port first: the host's own traffic comes to its own addresses
    // (the published ones), so it would pay for both.
    // SAFETY: the values are only tested for presence.
    unsafe { NETD_PUBLISHED.get(&key) }.is_some()
        && unsafe { NETD_PUBLISH_ADDRS.get(&ip.dst) }.is_some()
}

/// Whether `port` of `proto` may be published: its bit in
/// `NETD_PUBLISHED_PORTS` (array loads, which the verifier inlines), or
/// anything while the bitmap is not written yet (the first moments of a
/// netd that brought the map).
#[inline(never)]
fn maybe_published(port: u16, proto: u8) -> bool {
    let Some((word, bit)) = published_port_bit(port, proto) else {
        return false;
    };
    match NETD_PUBLISHED_PORTS.get(word) {
        Some(bits) if *bits & bit != 0 => true,
        _ => !matches!(NETD_PUBLISHED_PORTS.get(PORTS_WRITTEN), Some(&w) if w != 0),
    }
}

/// What becomes of a packet to a published port that came in on
/// `ingress`: its backend and translation ([`translate`]), then how it
/// gets there ([`find_way`]). `ctx` is the program's context (XDP or TC),
/// for the FIB lookup toward a remote backend's host; `mtu_len` the length
/// the tunnel's MTU is checked for.
#[inline(always)]
pub fn decide(
    ctx: *mut c_void,
    frame: &PacketFrame,
    h: &Headers,
    ingress: u32,
    bytes: u64,
    mtu_len: usize,
) -> Plan<MeshAction> {
    let mut plan = translate(frame, h, ingress, bytes);
    find_way(ctx, frame, mtu_len, &mut plan);
    plan
}

/// The way for a plan [`translate`] made to act: into the backend's veth
/// here, or through the tunnel toward its host, or, too big for the
/// tunnel, back to the client as ICMP fragmentation needed (if it forbids
/// fragments; else a counted drop). `mtu_len` is a GSO packet's segments'
/// length (0 for none: they were sized by the MSS the backend announced).
/// Apart from `translate` so a program short of stack can give each half
/// a frame of its own.
#[inline(always)]
pub fn find_way(
    ctx: *mut c_void,
    frame: &PacketFrame,
    mtu_len: usize,
    plan: &mut Plan<MeshAction>,
) {
    if plan.outcome.step != Step::Act {
        return;
    }
    let Some(backend) = plan.nat.new_dst() else {
        plan.outcome = Outcome::drop(DropReason::NatFailed);
        return;
    };
    let new_flow = plan.outcome.action.new_flow;
    plan.outcome = toward(ctx, backend.ip, mtu_len);
    if plan.outcome.step == Step::Act
        && plan.outcome.action.step == MeshStep::TooBig
        && !frame
            .load::<20>(usize::from(plan.at.l3))
            .is_ok_and(|ip| dont_fragment(&ip))
    {
        // Fragments are not made here: a packet that allows them is
        // dropped, counted.
        plan.outcome = Outcome::drop(DropReason::TooBig);
    }
    plan.outcome.action.new_flow = new_flow;
}

/// The flow's backend and DNAT (conntrack, else Maglev): a plan that acts,
/// its way still to be found, with `new_flow` set for a flow admitted now.
#[inline(always)]
pub fn translate(frame: &PacketFrame, h: &Headers, ingress: u32, bytes: u64) -> Plan<MeshAction> {
    let L3::Ipv4(ip) = h.l3 else {
        return Outcome::pass().into();
    };
    let p = ClientPacket::of(0, &ip, &h.l4, bytes);
    if !p.ports {
        return Outcome::pass().into();
    }
    let mut to = service::established(&p);
    let mut new_flow = false;
    if to.kind == ServiceKind::NewFlow {
        let key = PublishedKey {
            port: p.flow.dst_port,
            proto: p.flow.proto,
            _pad: 0,
        };
        // SAFETY: the value is copied out at once.
        let Some(published) = (unsafe { NETD_PUBLISHED.get(&key) }).copied() else {
            return Outcome::pass().into();
        };
        if !source_allowed(&key, &published, p.flow.src) {
            return Outcome::drop(DropReason::SourceRefused).into();
        }
        to = service::admit(&p, &published);
        if to.kind == ServiceKind::Nat {
            new_flow = true;
            remember_client(frame, ip.src, ingress);
            // This host takes the flow in now: a return entry left by an
            // earlier flow on the same client port that another host
            // tunnelled here must not pull its replies there (nor, by
            // matching, spare a stale reverse entry in `remember_ingress`).
            let reply = p.flow.reply(to.route_to, published.target_port, p.flow.src);
            forget_return(&reply);
        }
    }
    match to.kind {
        ServiceKind::Nat => {}
        ServiceKind::Drop => return Outcome::drop(to.reason).into(),
        ServiceKind::Refuse => return Outcome::drop(DropReason::NoBackend).into(),
        ServiceKind::No | ServiceKind::NewFlow => return Outcome::pass().into(),
    }
    Plan {
        nat: to.nat,
        at: Target::of(h),
        outcome: Outcome::act(MeshAction {
            new_flow,
            ..MeshAction::default()
        }),
    }
}

/// Whether `source` may open flows to the published port `key`: any
/// source, unless the port has ranges (`SERVICE_SOURCE_RANGES`), then one
/// in them (`NETD_PUBLISH_ALLOW`). Also the socket hook's check for the
/// host's own connections.
#[inline(always)]
pub fn source_allowed(key: &PublishedKey, published: &ServiceEntry, source: [u8; 4]) -> bool {
    if published.flags & SERVICE_SOURCE_RANGES == 0 {
        return true;
    }
    let allow = PublishAllow::new(key.port, key.proto, source);
    NETD_PUBLISH_ALLOW
        .get(&Key::new(PublishAllow::prefix_len(32), allow))
        .is_some()
}

/// Where the client's replies leave: the uplink its new flow came in on,
/// to the MAC it came from. The host stack never saw the client, so its
/// neighbour table may not know it (Cilium keeps the same map for the
/// same reason).
#[inline(always)]
fn remember_client(frame: &PacketFrame, client: [u8; 4], ingress: u32) {
    let Ok(macs) = frame.load::<12>(0) else {
        return;
    };
    let mut n = MeshNeighbour {
        ifindex: ingress,
        ..MeshNeighbour::default()
    };
    n.own.copy_from_slice(&macs[..6]);
    n.next_hop.copy_from_slice(&macs[6..]);
    // A failed insert leaves the replies with the last known next hop.
    let _ = NETD_MESH_NEIGH.insert(&client, &n, 0);
}

/// Into the backend's veth here, or toward its host.
#[inline(always)]
fn toward(ctx: *mut c_void, backend: [u8; 4], frame_len: usize) -> Outcome<MeshAction> {
    // SAFETY: the value is copied out at once.
    let Some(peer) = (unsafe { NETD_ENDPOINTS.get(&backend) }).copied() else {
        return Outcome::drop(DropReason::NotHere);
    };
    if peer.ifindex != 0 {
        return match deliver::to_local(&peer) {
            Some(deliver) => Outcome::act(MeshAction {
                step: MeshStep::Deliver,
                deliver,
                ..MeshAction::default()
            }),
            None => Outcome::drop(DropReason::NotHere),
        };
    }
    tunnel(ctx, &peer, frame_len)
}

/// VXLAN to the backend's host: the outer addresses from the overlay maps,
/// the next hop's MACs from the FIB (netd keeps the neighbours of the
/// cluster's hosts resolved), and the MTU check on the grown packet.
#[inline(always)]
fn tunnel(ctx: *mut c_void, peer: &EndpointEntry, frame_len: usize) -> Outcome<MeshAction> {
    let Some(mut encap) = encap::encap_for(peer, [0; 6]) else {
        return Outcome::drop(DropReason::EncapFailed);
    };
    // SAFETY: all-zero bytes are a valid bpf_fib_lookup.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = netd_common::service::PROTO_UDP;
    // 0: no MTU check.
    fib.__bindgen_anon_1.tot_len = match frame_len {
        0 => 0,
        n => (n.saturating_sub(ETH_HLEN) + VXLAN_OVERHEAD as usize) as u16,
    };
    fib.ifindex = encap.uplink;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(encap.local);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(encap.remote);
    // SAFETY: the helper reads and writes `fib`, which lives on this stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx,
            &mut fib as *mut FibParams,
            core::mem::size_of::<FibParams>() as i32,
            // As this host's own output: the tunnel starts here. The
            // kernel still answers only for a device that forwards, so
            // netd turns forwarding on for the uplink.
            BPF_FIB_LOOKUP_OUTPUT,
        )
    } as u32;
    encap.uplink = fib.ifindex;
    encap.inner_src = fib.smac;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => Outcome::act(MeshAction {
            step: MeshStep::Tunnel,
            encap,
            hop: Hop {
                ifindex: fib.ifindex,
                smac: fib.smac,
                dmac: fib.dmac,
            },
            ..MeshAction::default()
        }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Outcome::drop(DropReason::NoNeighbour),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Outcome::act(MeshAction {
            step: MeshStep::TooBig,
            // SAFETY: the helper wrote the MTU into the union it answered with.
            mtu: unsafe { fib.__bindgen_anon_1.mtu_result }.saturating_sub(VXLAN_OVERHEAD as u16),
            ..MeshAction::default()
        }),
        _ => Outcome::drop(DropReason::EncapFailed),
    }
}

/// A backend's reply on its way to a client of the routing mesh: out of
/// the uplink the client's request came in on, if this host took it in.
#[inline(always)]
pub fn egress_to(client: &[u8; 4]) -> Option<Delivery> {
    // SAFETY: the value is copied out at once.
    let n = unsafe { NETD_MESH_NEIGH.get(client) }.copied()?;
    Some(Delivery {
        ifindex: n.ifindex,
        mac: n.next_hop,
        gateway_mac: n.own,
    })
}

/// On a backend's host, a flow `t` the routing mesh tunnelled from the
/// host `ingress` (marked): its return entry, so replies go back there.
#[inline(always)]
pub fn remember_ingress(ingress: [u8; 4], network: u16, t: &CtTuple, tcp_flags: u8) {
    let reply = t.reply(t.dst, t.dst_port, t.src);
    let now = now();
    let flags = return_flags(tcp_flags);
    if let Some(entry) = NETD_MESH_RETURN.get_ptr_mut(&reply) {
        // SAFETY: the entry is this flow's; a racing write only costs a time.
        let entry = unsafe { &mut *entry };
        if entry.ingress == ingress && entry.network == network {
            entry.last_seen = now;
            entry.flags = flags;
            return;
        }
    }
    let entry = TunnelReturn {
        ingress,
        network,
        flags,
        _pad: 0,
        last_seen: now,
    };
    // A reverse NAT entry left by an earlier flow this host took in itself
    // on the same client port would send the replies out of this host's
    // uplink, from the wrong address: the new ingress wins.
    service::forget_reply(&reply);
    // A failed insert (LRU: allocation only) leaves the reply untunnelled,
    // and the client retransmits.
    let _ = NETD_MESH_RETURN.insert(&reply, &entry, 0);
}

/// Forgets where the flow whose reply is `reply` came in: it is this
/// host's now (or a socket here dials its backend directly).
#[inline(always)]
pub fn forget_return(reply: &CtTuple) {
    let _ = NETD_MESH_RETURN.remove(reply);
}

/// For a packet from a local endpoint that no other stage took (its
/// destination is outside the cluster): a backend's reply to a client of
/// the routing mesh. Translated already (`translated`: this host took the
/// client in), it leaves the uplink to the client; else, if a host
/// tunnelled the flow here, it goes back to that host in VXLAN.
#[inline(always)]
pub fn from_backend(
    me: &LocalEndpointEntry,
    ip: &Ipv4,
    l4: &L4,
    translated: bool,
    to: [u8; 4],
) -> Option<Outcome<EndpointAction>> {
    if translated {
        return egress_to(&to).map(|e| Outcome::act(EndpointAction::uplink(e)));
    }
    let (t, tcp_flags) = flow_tuple(ip, l4)?;
    let back = NETD_MESH_RETURN.get_ptr_mut(&t)?;
    // SAFETY: as in `remember_ingress`.
    let back = unsafe { &mut *back };
    if !reply_follows(back.flags, tcp_flags) {
        // An earlier flow's: this connection is answered the way it came.
        forget_return(&t);
        return None;
    }
    let config = NETD_OVERLAY.get(0).copied()?;
    // A reply to this host itself (it dialled another host's published
    // port) keeps nothing alive: only the tunnelled requests keep such an
    // entry. A later direct dial from the same port, whose requests netd
    // never sees, must not keep a stale one alive with its replies; idle,
    // netd sweeps it.
    if to != config.underlay {
        back.last_seen = now();
    }
    // SAFETY: map values are copied out at once.
    let network = unsafe { NETD_NETWORKS.get(&me.network) }.copied()?;
    if network.vni == 0 || u32::from(back.network) != me.network {
        return None;
    }
    Some(Outcome::act(EndpointAction::encap(Encap {
        vni: network.vni,
        local: config.underlay,
        remote: back.ingress,
        uplink: config.uplink_ifindex,
        // The ingress host strips it and addresses the frame itself.
        inner_dst: me.mac,
        inner_src: me.mac,
    })))
}
