//! Shared between the kernel side (netd-ebpf, `bpfel-unknown-none`) and the
//! daemon (netd). Everything here is `no_std`, and every type that lives in a
//! BPF map is `#[repr(C)]` with no hidden padding (bytemuck's `Pod` derive
//! refuses to compile otherwise).
#![cfg_attr(not(test), no_std)]

pub mod checksum;
pub mod counters;
pub mod endpoint_stats;
pub mod events;
pub mod flow;
pub mod icmp;
pub mod maglev;
pub mod maps;
pub mod masquerade;
pub mod mesh;
pub mod nat;
pub mod parse;
pub mod policy;
pub mod refusal;
pub mod service;
pub mod tables;
pub mod vxlan;

/// Each pinned map's name (from [`tables`], where each is declared).
pub use tables::names as map_names;

/// Names of the programs in netd-ebpf, as aya sees them.
pub mod program_names {
    /// XDP on an uplink: packets arriving from the underlay.
    pub const XDP_UPLINK: &str = "netd_xdp_uplink";
    /// TC (clsact ingress) on the host end of an endpoint veth: packets
    /// leaving a container.
    pub const TC_ENDPOINT: &str = "netd_tc_endpoint";
    /// TC, tail-called by the endpoint program: new flows to a VIP.
    pub const TC_SERVICE: &str = "netd_tc_service";
    /// TC, tail-called by the endpoint program: ICMP errors, translated
    /// when they quote a flow to a VIP.
    pub const TC_ICMP_ERROR: &str = "netd_tc_icmp_error";
    /// TC, tail-called by the service program: the answer to a new flow
    /// for a service port without backends.
    pub const TC_REFUSE: &str = "netd_tc_refuse";
    /// TC, tail-called by the endpoint program: a packet leaving the
    /// cluster from a network with a way out (masquerade, internal).
    pub const TC_MASQUERADE: &str = "netd_tc_masquerade";
    /// The programs tail-called through `NETD_PROGS`, by slot.
    pub const TAIL_CALLED: [(u32, &str); 4] = [
        (crate::maps::PROG_SERVICE, TC_SERVICE),
        (crate::maps::PROG_ICMP_ERROR, TC_ICMP_ERROR),
        (crate::maps::PROG_REFUSE, TC_REFUSE),
        (crate::maps::PROG_MASQUERADE, TC_MASQUERADE),
    ];
    /// XDP, tail-called by the uplink program: VXLAN for this host, decapped
    /// and delivered (reverse NAT and ICMP errors of translated flows).
    pub const XDP_DECAP: &str = "netd_xdp_decap";
    /// XDP, tail-called by the uplink program: a published port of the
    /// routing mesh, DNATed to a backend here or tunnelled to its host.
    pub const XDP_MESH: &str = "netd_xdp_mesh";
    /// XDP, tail-called by the decap and mesh programs: a packet for a
    /// local endpoint, judged by its ingress policy and redirected.
    pub const XDP_DELIVER: &str = "netd_xdp_deliver";
    /// XDP, tail-called by the uplink program: a reply of a masqueraded
    /// flow, translated back and delivered to its endpoint.
    pub const XDP_MASQ_REPLY: &str = "netd_xdp_masq_reply";
    /// The programs in `NETD_XDP_PROGS`, by slot.
    pub const XDP_TAIL_CALLED: [(u32, &str); 4] = [
        (crate::maps::XDP_PROG_DECAP, XDP_DECAP),
        (crate::maps::XDP_PROG_MESH, XDP_MESH),
        (crate::maps::XDP_PROG_DELIVER, XDP_DELIVER),
        (crate::maps::XDP_PROG_MASQ_REPLY, XDP_MASQ_REPLY),
    ];
    /// TC ingress on an uplink whose XDP cannot be trusted (a veth: XDP
    /// sees neither an skb's checksum state nor whether the peer flushes
    /// XDP_TX): what `netd_xdp_uplink` does, on skbs.
    pub const TC_UPLINK: &str = "netd_tc_uplink";
    /// TC, tail-called by the TC uplink program: VXLAN for this host.
    pub const TC_UPLINK_DECAP: &str = "netd_tc_uplink_decap";
    /// TC, tail-called by the TC uplink program: a published port.
    pub const TC_UPLINK_MESH: &str = "netd_tc_uplink_mesh";
    /// TC, tail-called by the two above: into a local endpoint, once its
    /// ingress policy admits it.
    pub const TC_UPLINK_DELIVER: &str = "netd_tc_uplink_deliver";
    /// TC, tail-called by the TC uplink program: a reply of a masqueraded
    /// flow, translated back and delivered to its endpoint.
    pub const TC_UPLINK_MASQ_REPLY: &str = "netd_tc_uplink_masq_reply";
    /// The programs in `NETD_UPLINK_PROGS`, by slot.
    pub const UPLINK_TAIL_CALLED: [(u32, &str); 4] = [
        (crate::maps::UPLINK_PROG_DECAP, TC_UPLINK_DECAP),
        (crate::maps::UPLINK_PROG_MESH, TC_UPLINK_MESH),
        (crate::maps::UPLINK_PROG_DELIVER, TC_UPLINK_DELIVER),
        (crate::maps::UPLINK_PROG_MASQ_REPLY, TC_UPLINK_MASQ_REPLY),
    ];
    /// cgroup `connect4` on the cgroup2 root: the host's own connections to
    /// its published ports, balanced at the socket.
    pub const SOCK_CONNECT4: &str = "netd_sock_connect4";
    /// cgroup `sendmsg4`: the same for unconnected UDP, per datagram.
    pub const SOCK_SENDMSG4: &str = "netd_sock_sendmsg4";
    /// cgroup `recvmsg4`: answers to those datagrams seem to come from the
    /// address the application sent to.
    pub const SOCK_RECVMSG4: &str = "netd_sock_recvmsg4";
    /// cgroup `getpeername4`: a connected socket's peer is the address
    /// the application dialled, not the backend it was sent to.
    pub const SOCK_GETPEERNAME4: &str = "netd_sock_getpeername4";
    /// Every cgroup hook, with the name its pinned link takes.
    pub const SOCK_ADDR: [(&str, &str); 4] = [
        (SOCK_CONNECT4, "cgroup-connect4"),
        (SOCK_SENDMSG4, "cgroup-sendmsg4"),
        (SOCK_RECVMSG4, "cgroup-recvmsg4"),
        (SOCK_GETPEERNAME4, "cgroup-getpeername4"),
    ];
    /// An XDP program that only returns `XDP_PASS`: the benchmark baseline.
    pub const XDP_BASELINE: &str = "netd_xdp_baseline";
    /// A TC program that only returns `TC_ACT_OK`: the baseline of the TC hook.
    pub const TC_BASELINE: &str = "netd_tc_baseline";
    /// The bench's packet generator: XDP, run with live frames.
    pub const XDP_GENERATOR: &str = "netd_xdp_generator";
    /// A TC program that drops everything: the bench's packet sink.
    pub const TC_SINK: &str = "netd_tc_sink";
}
