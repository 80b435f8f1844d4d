//! Published ports for the host's own connections. `connect()` to
//! `127.0.0.1:P` or a published address's `P` never crosses the uplink, so
//! this cgroup hook balances at the socket instead (as Cilium's socket LB
//! does): the socket's destination becomes the backend (one on this host,
//! reached through the route netd keeps to its veth) or the published port
//! of the backend's host (whose XDP takes it from there). TCP and
//! connected UDP at `connect()`; unconnected UDP at each `sendmsg()`, with
//! the socket and the backend remembered so that `recvmsg()` shows the
//! answer coming from the address the application sent to. Nothing is
//! translated per packet. `getpeername()` shows the address dialled too.
//!
//! A port published with source ranges obeys them here too: the host's
//! own connection comes from the address it dials (127.0.0.1, or the
//! uplink address), and one the ranges leave out is refused (EPERM).
//! Calls for published ports count under hook `sock`: balanced
//! (`redirect`), left alone (`pass`: no active backend), refused (`drop`,
//! `source_refused`); other calls are not netd's and are not counted.
//!
//! The hook sits on the cgroup root, so it acts only for sockets of netd's
//! own network namespace (`NETD_NETNS_COOKIE`, set at load).

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use netd_common::{
    counters::{DropReason, Hook, Verdict},
    mesh::{host_local, PublishedKey, SockRevNatEntry, SockRevNatKey},
    service::{maglev_slot, BackendKey, ServiceEntry, BACKEND_ACTIVE, PROTO_TCP, PROTO_UDP},
};

use crate::{
    maps::{
        NETD_BACKENDS, NETD_ENDPOINTS, NETD_HOSTS, NETD_MAGLEV, NETD_OVERLAY, NETD_PUBLISHED,
        NETD_PUBLISH_ADDRS, NETD_SOCK_REVNAT,
    },
    observe::counters,
    stages::mesh,
};

const AF_INET: u32 = 2;
/// The cgroup hook's "let the call go on" (rewritten or not).
const PROCEED: i32 = 1;
/// The cgroup hook's "refuse the call" (EPERM).
const REFUSE: i32 = 0;
const HOOK: Hook = Hook::Sock;

/// The cookie of netd's network namespace; set by the loader.
#[unsafe(no_mangle)]
static NETD_NETNS_COOKIE: u64 = 0;

#[cgroup_sock_addr(connect4)]
pub fn netd_sock_connect4(ctx: SockAddrContext) -> i32 {
    balance(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn netd_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    balance(&ctx)
}

/// An answer from a backend a socket's datagrams were sent to instead:
/// its source becomes the address the application sent to.
#[cgroup_sock_addr(recvmsg4)]
pub fn netd_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    show_dialled(&ctx);
    PROCEED
}

/// A connected socket's peer, as `getpeername()` reports it: the address
/// the application dialled, not the backend `connect4` sent it to.
#[cgroup_sock_addr(getpeername4)]
pub fn netd_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    show_dialled(&ctx);
    PROCEED
}

/// The socket address, if it is a backend this socket was sent to
/// instead, becomes the address the application asked for.
#[inline(always)]
fn show_dialled(ctx: &SockAddrContext) {
    // SAFETY: the kernel hands the hook a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    let key = revnat_key(
        &ctx,
        sa.user_ip4.to_ne_bytes(),
        host_local::port_of(sa.user_port),
    );
    // SAFETY: the value is copied out at once.
    if let Some(asked) = unsafe { NETD_SOCK_REVNAT.get(&key) }.copied() {
        sa.user_ip4 = u32::from_ne_bytes(asked.ip);
        sa.user_port = host_local::user_port(asked.port);
    }
}

/// Rewrites the destination of a connection or datagram to a published
/// port; for UDP also remembers it, for `recvmsg`. Counts and answers.
#[inline(always)]
fn balance(ctx: &SockAddrContext) -> i32 {
    let r = match rewrite(ctx) {
        Balanced::NotPublished => return PROCEED,
        Balanced::Refused => {
            counters::count_drop(HOOK, DropReason::SourceRefused, 0);
            return REFUSE;
        }
        Balanced::LeftAlone => {
            counters::count_verdict(HOOK, Verdict::Pass, 0);
            return PROCEED;
        }
        Balanced::To(r) => r,
    };
    counters::count_verdict(HOOK, Verdict::Redirect, 0);
    // Remembered for every socket: `recvmsg` (UDP) and `getpeername` show
    // the address asked for. Swept by netd once the socket is gone.
    let key = revnat_key(ctx, r.to_ip, r.to_port);
    let asked = SockRevNatEntry {
        ip: r.asked_ip,
        port: r.asked_port,
        _pad: [0; 2],
    };
    // A failed insert leaves that answer showing the backend's address.
    let _ = NETD_SOCK_REVNAT.insert(&key, &asked, 0);
    PROCEED
}

/// The `NETD_SOCK_REVNAT` key of this socket and a backend address.
#[inline(always)]
fn revnat_key(ctx: &SockAddrContext, ip: [u8; 4], port: [u8; 2]) -> SockRevNatKey {
    SockRevNatKey {
        // SAFETY: a sock_addr context is a valid argument of this helper.
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        ip,
        port,
        _pad: [0; 2],
    }
}

/// A backend here is about to be dialled directly. If this socket's port
/// was used before by a flow this host sent to another host's published
/// port, and that host tunnelled it back to this backend, the return entry
/// it left would take the backend's replies back through that host, from
/// its address: the datapath never sees the direct flow's requests, so the
/// entry goes here. The port is known for an unconnected UDP datagram (the
/// socket is bound before the hook) and a bound socket's `connect()`; an
/// unbound one is given its port after `connect4`, and for TCP the
/// return entry's opening mark does the same job.
#[inline(always)]
fn forget_tunnelled_return(
    ctx: &SockAddrContext,
    backend: [u8; 4],
    target_port: [u8; 2],
    proto: u8,
    underlay: [u8; 4],
) {
    // SAFETY: the kernel hands the hook a valid bpf_sock_addr, whose `sk`
    // is the calling socket.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    if sk.is_null() {
        return;
    }
    // SAFETY: as above; reads of bpf_sock fields the verifier allows.
    let (bound, sport) = unsafe { ((*sk).src_ip4, (*sk).src_port) };
    if sport == 0 {
        return;
    }
    let reply = host_local::direct_reply(
        backend,
        target_port,
        bound.to_ne_bytes(),
        underlay,
        sport as u16,
        proto,
    );
    mesh::forget_return(&reply);
}

/// What [`rewrite`] made of a call.
enum Balanced {
    /// Not to a published port of this host: not netd's business.
    NotPublished,
    /// From a source the port's ranges leave out.
    Refused,
    /// To a published port without an active backend to send it to.
    LeftAlone,
    To(Rewrite),
}

/// The address asked for, and the one written.
struct Rewrite {
    asked_ip: [u8; 4],
    asked_port: [u8; 2],
    to_ip: [u8; 4],
    to_port: [u8; 2],
}

/// The new destination of a connection to a published port, written into
/// the socket address.
#[inline(always)]
fn rewrite(ctx: &SockAddrContext) -> Balanced {
    let Some(published) = published_port(ctx) else {
        return Balanced::NotPublished;
    };
    let (key, service, dst) = published;
    // The host's own source: loopback's, or the address it dials.
    let source = if dst[0] == 127 { [127, 0, 0, 1] } else { dst };
    if !mesh::source_allowed(&key, &service, source) {
        return Balanced::Refused;
    }
    match pick(ctx, &key, &service, dst) {
        Some(r) => Balanced::To(r),
        None => Balanced::LeftAlone,
    }
}

/// The published port a call is for, its entry and the address dialled;
/// `None` for any other call.
#[inline(always)]
fn published_port(ctx: &SockAddrContext) -> Option<(PublishedKey, ServiceEntry, [u8; 4])> {
    // SAFETY: the kernel hands the hook a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.user_family != AF_INET {
        return None;
    }
    // SAFETY: the global is read-only after load.
    let ours = unsafe { core::ptr::read_volatile(&NETD_NETNS_COOKIE) };
    // SAFETY: a sock_addr context is a valid argument of this helper.
    if ours == 0 || unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } != ours {
        return None;
    }
    let proto = match sa.protocol as u8 {
        p @ (PROTO_TCP | PROTO_UDP) => p,
        _ => return None,
    };
    let dst = sa.user_ip4.to_ne_bytes();
    // SAFETY: the value is only tested for presence.
    if !host_local::is_loopback(dst) && unsafe { NETD_PUBLISH_ADDRS.get(&dst) }.is_none() {
        return None;
    }
    let key = PublishedKey {
        port: host_local::port_of(sa.user_port),
        proto,
        _pad: 0,
    };
    // SAFETY: map values are copied out at once.
    let service = unsafe { NETD_PUBLISHED.get(&key) }.copied()?;
    Some((key, service, dst))
}

/// A backend for the call, written into the socket address; `None` when
/// none takes new flows.
#[inline(always)]
fn pick(
    ctx: &SockAddrContext,
    key: &PublishedKey,
    service: &ServiceEntry,
    dst: [u8; 4],
) -> Option<Rewrite> {
    // SAFETY: the kernel hands the hook a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (port, proto) = (key.port, key.proto);
    let underlay = NETD_OVERLAY.get(0).map_or([0; 4], |c| c.underlay);
    if service.active == 0 {
        return None;
    }
    // No ports exist yet to hash: a random slot spreads connections the
    // same way Maglev's table weights them.
    // SAFETY: a helper without arguments.
    let slot = maglev_slot(unsafe { bpf_get_prandom_u32() });
    let slot = core::hint::black_box(slot);
    let table = NETD_MAGLEV.get_ptr(&service.table)?;
    // SAFETY: the pointer is the map value's; `slot` is below its length.
    let backend = unsafe { (*table).slots.get(slot) }?.to_ne_bytes();
    let state = unsafe {
        NETD_BACKENDS.get(&BackendKey {
            table: service.table,
            ip: backend,
        })
    }
    .map(|b| b.state)?;
    if state != BACKEND_ACTIVE {
        return None;
    }
    // SAFETY: map values are copied out at once.
    let peer = unsafe { NETD_ENDPOINTS.get(&backend) }.copied()?;
    let host = if peer.ifindex != 0 {
        forget_tunnelled_return(ctx, backend, service.target_port, proto, underlay);
        None
    } else {
        // SAFETY: as above.
        Some(unsafe { NETD_HOSTS.get(&(peer.host as u32)) }?.underlay)
    };
    let (ip, to_port) = host_local::destination(backend, service.target_port, host, port);
    sa.user_ip4 = u32::from_ne_bytes(ip);
    sa.user_port = host_local::user_port(to_port);
    Some(Rewrite {
        asked_ip: dst,
        asked_port: port,
        to_ip: ip,
        to_port,
    })
}
