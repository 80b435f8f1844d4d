//! A packet as one stage sees it, and what the service stage decided.
//! Every byte of each is defined, so they can cross BPF calls and tail
//! calls (see `Outcome`).

use netd_common::{
    counters::DropReason,
    nat::Nat,
    parse::{Ipv4, L4},
    policy::PROTO_ICMP,
    service::CtTuple,
};

use super::target::Target;

/// The flow's tuple and the TCP flags, for TCP and UDP.
#[inline(always)]
pub fn flow_tuple(ip: &Ipv4, l4: &L4) -> Option<(CtTuple, u8)> {
    let (src_port, dst_port, flags) = match *l4 {
        L4::Tcp {
            src_port,
            dst_port,
            flags,
        } => (src_port, dst_port, flags),
        L4::Udp { src_port, dst_port } => (src_port, dst_port, 0),
        _ => return None,
    };
    Some((
        CtTuple {
            src: ip.src,
            dst: ip.dst,
            src_port,
            dst_port,
            proto: ip.protocol,
            _pad: [0; 3],
        },
        flags,
    ))
}

/// A packet from a local endpoint (or a client of the routing mesh)
/// toward some address, as the service stage needs it.
#[derive(Clone, Copy, Default)]
pub struct ClientPacket {
    /// For TCP and UDP; ports are 0 otherwise.
    pub flow: CtTuple,
    /// The sender's network.
    pub network: u32,
    pub bytes: u64,
    pub tcp_flags: u8,
    /// TCP or UDP: `flow` has real ports.
    pub ports: bool,
}

impl ClientPacket {
    #[inline(always)]
    pub fn of(network: u32, ip: &Ipv4, l4: &L4, bytes: u64) -> Self {
        let (flow, tcp_flags, ports) = match flow_tuple(ip, l4) {
            Some((flow, flags)) => (flow, flags, true),
            None => (
                CtTuple {
                    src: ip.src,
                    dst: ip.dst,
                    proto: ip.protocol,
                    ..CtTuple::default()
                },
                0,
                false,
            ),
        };
        ClientPacket {
            flow,
            network,
            bytes,
            tcp_flags,
            ports,
        }
    }
}

/// What the service stage decided: `kind` says which of the fields count.
#[derive(Clone, Copy)]
pub struct ToService {
    pub kind: ServiceKind,
    pub reason: DropReason,
    pub nat: Nat,
    /// Where the translated packet goes: the backend (or the client).
    pub route_to: [u8; 4],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// Not a VIP: the packet goes on as it is.
    No,
    Drop,
    /// Translate by `nat`, then forward to `route_to`.
    Nat,
    /// Not settled by conntrack: a new flow, or one whose backend left.
    /// The endpoint program hands it to the service program.
    NewFlow,
    /// A service port with no backend for a new flow: answer the client
    /// (TCP RST, ICMP port unreachable) and count the drop as `reason`.
    Refuse,
}

impl ToService {
    pub const NO: ToService = ToService {
        kind: ServiceKind::No,
        reason: DropReason::Malformed,
        nat: Nat::NONE,
        route_to: [0; 4],
    };

    pub const NEW_FLOW: ToService = ToService {
        kind: ServiceKind::NewFlow,
        ..Self::NO
    };

    #[inline(always)]
    pub fn drop(reason: DropReason) -> Self {
        ToService {
            kind: ServiceKind::Drop,
            reason,
            ..Self::NO
        }
    }
}

/// Judge the sender's egress (it is on this host).
pub const CHECK_EGRESS: u8 = 1;
/// Judge the receiver's ingress (it is on this host).
pub const CHECK_INGRESS: u8 = 2;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// A packet as policy judges it.
#[derive(Clone, Copy, Default)]
pub struct PolicyFlow {
    pub tuple: CtTuple,
    /// What rules match on: the destination port, or ICMP type and code.
    pub port: [u8; 2],
    /// `CHECK_*` bits.
    pub check: u8,
    /// TCP: the packet's flags, set by the entry point that has the
    /// packet (`policy::tc_tcp_flags`, `policy::xdp_tcp_flags`); 0 otherwise.
    pub tcp_flags: u8,
}

impl PolicyFlow {
    /// The packet `at`, after `nat` when it has a new destination (a
    /// service's backend); `check` says which of its ends are here.
    #[inline(always)]
    pub fn of(at: &Target, nat: &Nat, check: u8) -> Self {
        let (dst, dst_port) = match nat.new_dst() {
            Some(to) => (to.ip, to.port),
            None => (at.dst, at.dst_port),
        };
        // ICMP is tracked by message: an echo request as [0] → [8, 0],
        // so the echo reply ([8, 0] → [0]) is its reverse; anything else
        // by its own type and code, which nothing answers in kind.
        let (src_port, tuple_dst_port) = if at.ports {
            (at.src_port, dst_port)
        } else if at.proto == PROTO_ICMP && at.dst_port[0] == ICMP_ECHO_REPLY {
            ([ICMP_ECHO_REQUEST, 0], [0; 2])
        } else if at.proto == PROTO_ICMP {
            ([0; 2], at.dst_port)
        } else {
            ([0; 2], [0; 2])
        };
        PolicyFlow {
            tuple: CtTuple {
                src: at.src,
                dst,
                src_port,
                dst_port: tuple_dst_port,
                proto: at.proto,
                _pad: [0; 3],
            },
            port: dst_port,
            check,
            tcp_flags: 0,
        }
    }
}

/// What the decap and mesh programs hand the delivery program they
/// tail-call (`NETD_DELIVERY`).
#[derive(Clone, Copy, Default)]
pub struct Delivering {
    pub flow: PolicyFlow,
    pub ifindex: u32,
    pub bytes: u64,
}
