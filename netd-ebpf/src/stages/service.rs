//! Services, on the client's side: a packet to `VIP:port` gets a backend
//! (conntrack first, Maglev for a new flow) and a DNAT to it; a reply from
//! a backend gets its source turned back into `VIP:port`. This stage only
//! decides; the writer rewrites.
//!
//! Writes its own state: `NETD_CT` (each client flow's backend, and its
//! times and counts), `NETD_REV_NAT` (each flow's reply translation) and
//! `NETD_AFFINITY` (each client's backend, for services with affinity).

use netd_common::{
    counters::DropReason,
    flow::flow_hash,
    nat::{Addr, Nat},
    parse::{Ipv4, L4},
    service::{
        closing_flags, is_reopening, maglev_slot, AffinityEntry, AffinityKey, BackendKey, CtEntry,
        CtTuple, RevNatEntry, ServiceEntry, ServiceKey, VipEntry, BACKEND_ACTIVE, CT_HAIRPIN,
        CT_SEEN_REPLY, HAIRPIN_IP, SERVICE_AFFINITY,
    },
};

use super::clock::now;
use crate::{
    maps::{
        NETD_AFFINITY, NETD_BACKENDS, NETD_CT, NETD_MAGLEV, NETD_REV_NAT, NETD_SERVICES, NETD_VIPS,
    },
    observe::events,
    types::{flow_tuple, ClientPacket, ServiceKind, ToService},
};

/// The VIP a packet is addressed to, if it is one.
#[inline(always)]
pub fn vip_of(dst: &[u8; 4]) -> Option<VipEntry> {
    // SAFETY: the value is copied out at once.
    unsafe { NETD_VIPS.get(dst) }.copied()
}

/// The service port a packet to `vip` is for: `Err` when it is refused.
#[inline(always)]
fn port_of(p: &ClientPacket, vip: &VipEntry) -> Result<ServiceEntry, ToService> {
    let flow = &p.flow;
    if vip.network != p.network {
        return Err(ToService::drop(DropReason::Isolation));
    }
    if !p.ports {
        return Err(ToService::drop(DropReason::NoServicePort));
    }
    let key = ServiceKey {
        vip: flow.dst,
        port: flow.dst_port,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    match unsafe { NETD_SERVICES.get(&key) } {
        Some(service) => Ok(*service),
        None => Err(ToService::drop(DropReason::NoServicePort)),
    }
}

/// The flow's conntrack entry, when its backend is still one of the
/// service's (draining or not): the packet keeps it, and the port it was
/// given. Like the kernel's conntrack under kube-proxy, a flow keeps its
/// translation when the service's ports change; only new flows see them.
#[inline(always)]
fn tracked(p: &ClientPacket, now: u64) -> Option<ToService> {
    let ct = NETD_CT.get_ptr_mut(&p.flow)?;
    // SAFETY: the entry is this flow's; concurrent updates of the
    // counters may race, which only costs a count.
    let entry = unsafe { &mut *ct };
    let key = BackendKey {
        table: entry.table,
        ip: entry.backend_ip,
    };
    // SAFETY: as above.
    if unsafe { NETD_BACKENDS.get(&key) }.is_none() {
        // The backend left (or the service went): balanced again as if
        // new (see conntrack in the docs).
        return None;
    }
    if is_reopening(p.tcp_flags, entry.flags) {
        // A client port reused after its flow closed is a new connection,
        // recorded afresh (as the kernel's conntrack does from TIME_WAIT):
        // through the routing mesh, it may have come in on another host.
        return None;
    }
    entry.last_seen = now;
    entry.flags |= closing_flags(p.tcp_flags);
    entry.packets += 1;
    entry.bytes += p.bytes;
    Some(translate(
        &p.flow,
        entry.backend_ip,
        entry.backend_port,
        entry.flags,
    ))
}

/// The endpoint program's service stage, for a packet to a VIP: a packet
/// of a tracked flow gets its backend; anything else goes to the service
/// program ([`ServiceKind::NewFlow`]), which has the stack for the rest
/// (and the checks a flow passed when it was tracked: the VIP's network,
/// the port).
#[inline(always)]
pub fn established(p: &ClientPacket) -> ToService {
    if !p.ports {
        return ToService::NEW_FLOW;
    }
    tracked(p, now()).unwrap_or(ToService::NEW_FLOW)
}

/// The service program's stage, for what [`established`] found no live
/// conntrack entry for: a new flow gets its backend from Maglev, and is
/// recorded. A BPF call with its own frame.
#[inline(never)]
pub fn new_flow(p: &ClientPacket) -> ToService {
    let Some(vip) = vip_of(&p.flow.dst) else {
        return ToService::NO;
    };
    match port_of(p, &vip) {
        Ok(service) => admit(p, &service),
        Err(to) => to,
    }
}

/// A new flow to `service` (a VIP's port, or a port the routing mesh
/// publishes): its backend, recorded both ways in conntrack, with the
/// address the client addressed in the VIP's place for the reply.
#[inline(always)]
pub fn admit(p: &ClientPacket, service: &ServiceEntry) -> ToService {
    let service = *service;
    let flow = p.flow;
    let (tcp_flags, bytes) = (p.tcp_flags, p.bytes);
    let now = now();
    let closing = closing_flags(tcp_flags);
    let refuse = ToService {
        kind: ServiceKind::Refuse,
        reason: DropReason::NoBackend,
        ..ToService::NO
    };
    let Some(backend_ip) = (service.active != 0)
        .then(|| choose(&service, &flow, now))
        .flatten()
    else {
        events::note_translation(service.table, [0; 4]);
        return refuse;
    };
    events::note_translation(service.table, backend_ip);
    let hairpin = backend_ip == flow.src;
    let flags = closing | if hairpin { CT_HAIRPIN } else { 0 };
    let entry = CtEntry {
        _pad0: 0,
        backend_ip,
        backend_port: service.target_port,
        flags,
        table: service.table,
        last_seen: now,
        created: now,
        packets: 1,
        bytes,
    };
    let reply_to = if hairpin { HAIRPIN_IP } else { flow.src };
    let rev = RevNatEntry {
        vip: flow.dst,
        vip_port: flow.dst_port,
        _pad: [0; 2],
        client: flow.src,
        _pad2: 0,
        last_seen: now,
    };
    // The reverse entry first: a reply must never find a flow it cannot
    // translate back. A failed insert (a full LRU evicts, so only an
    // allocation failure) still forwards: Maglev gives the same backend to
    // the next packet, and the flow is tracked then.
    let _ = NETD_REV_NAT.insert(
        &flow.reply(backend_ip, service.target_port, reply_to),
        &rev,
        0,
    );
    let _ = NETD_CT.insert(&flow, &entry, 0);
    translate(&flow, backend_ip, service.target_port, flags)
}

/// The backend of a new flow: the client's last one, for a service with
/// affinity while it holds, else Maglev's. Affinity is refreshed by each
/// new flow (as kube-proxy's `recent` match does), not by every packet.
#[inline(always)]
fn choose(service: &ServiceEntry, flow: &CtTuple, now: u64) -> Option<[u8; 4]> {
    if service.flags & SERVICE_AFFINITY == 0 {
        return pick(service, flow);
    }
    let key = AffinityKey {
        table: service.table,
        client: flow.src,
    };
    // SAFETY: the value is copied out at once.
    let sticky = match unsafe { NETD_AFFINITY.get(&key) } {
        Some(a) if a.holds(service.affinity_secs, now) => Some(a.backend),
        _ => None,
    };
    let backend = match sticky {
        Some(ip) if takes_new_flows(service.table, ip) => ip,
        _ => pick(service, flow)?,
    };
    let entry = AffinityEntry {
        backend,
        timeout_secs: service.affinity_secs,
        last_seen: now,
    };
    // A failed insert only loses the stickiness of the next flow.
    let _ = NETD_AFFINITY.insert(&key, &entry, 0);
    Some(backend)
}

/// The Maglev table's slot for the flow.
#[inline(always)]
fn pick(service: &ServiceEntry, flow: &CtTuple) -> Option<[u8; 4]> {
    let slot = maglev_slot(flow_hash(
        flow.src,
        flow.dst,
        flow.proto,
        flow.src_port,
        flow.dst_port,
    ));
    // Opaque, so the bounds check below stays for the verifier to see.
    let slot = core::hint::black_box(slot);
    let table = NETD_MAGLEV.get_ptr(&service.table)?;
    // SAFETY: the pointer is the map value's; `slot` is below its length.
    let ip = unsafe { (*table).slots.get(slot) }?.to_ne_bytes();
    takes_new_flows(service.table, ip).then_some(ip)
}

#[inline(always)]
fn takes_new_flows(table: u32, ip: [u8; 4]) -> bool {
    // SAFETY: map values are copied out at once.
    matches!(
        unsafe { NETD_BACKENDS.get(&BackendKey { table, ip }) },
        Some(b) if b.state == BACKEND_ACTIVE
    )
}

#[inline(always)]
fn translate(flow: &CtTuple, backend: [u8; 4], port: [u8; 2], flags: u16) -> ToService {
    let mut nat = Nat::NONE.dst(Addr { ip: backend, port });
    if flags & CT_HAIRPIN != 0 {
        nat = nat.src(Addr {
            ip: HAIRPIN_IP,
            port: flow.src_port,
        });
    }
    ToService {
        kind: ServiceKind::Nat,
        nat,
        route_to: backend,
        ..ToService::NO
    }
}

/// A reply from a backend to a client whose flow was translated on this
/// host: its source becomes `VIP:port` again (and, for hairpin, its
/// destination the client).
#[inline(always)]
pub fn reply(ip: &Ipv4, l4: &L4) -> Option<(Nat, [u8; 4])> {
    let (reply, tcp_flags) = flow_tuple(ip, l4)?;
    let rev = NETD_REV_NAT.get_ptr_mut(&reply)?;
    // SAFETY: the entry is this flow's; see `tracked`.
    let rev = unsafe { &mut *rev };
    rev.last_seen = now();
    let closing = closing_flags(tcp_flags);
    let original = CtTuple {
        src: rev.client,
        dst: rev.vip,
        src_port: reply.dst_port,
        dst_port: rev.vip_port,
        proto: reply.proto,
        _pad: [0; 3],
    };
    if let Some(ct) = NETD_CT.get_ptr_mut(&original) {
        // SAFETY: as above.
        let ct = unsafe { &mut *ct };
        ct.flags |= closing | CT_SEEN_REPLY;
        ct.last_seen = rev.last_seen;
    }
    let mut nat = Nat::NONE.src(Addr {
        ip: rev.vip,
        port: rev.vip_port,
    });
    if reply.dst != rev.client {
        nat = nat.dst(Addr {
            ip: rev.client,
            port: reply.dst_port,
        });
    }
    Some((nat, rev.client))
}

/// Forgets the reverse translation of the flow whose reply is `reply`: a
/// flow another host took in now holds that tuple (see `mesh`).
#[inline(always)]
pub fn forget_reply(reply: &CtTuple) {
    let _ = NETD_REV_NAT.remove(reply);
}
