//! The actions each hook can carry out, with their arguments: what the
//! stages put in an `Outcome` and the exits carry out.

use netd_common::nat::Nat;

use super::{outcome::Delivery, target::Target};

/// The answer to an ARP request at offset `at` from `asker_ip` /
/// `asker_mac`: `ip` is at `mac`.
#[derive(Clone, Copy, Default)]
pub struct ArpAnswer {
    pub ip: [u8; 4],
    pub mac: [u8; 6],
    pub asker_ip: [u8; 4],
    pub asker_mac: [u8; 6],
    pub at: u16,
}

/// Everything the VXLAN encapsulation writes.
#[derive(Clone, Copy, Default)]
pub struct Encap {
    pub vni: u32,
    pub local: [u8; 4],
    pub remote: [u8; 4],
    pub uplink: u32,
    pub inner_dst: [u8; 6],
    pub inner_src: [u8; 6],
}

/// What the TC program on an endpoint's host veth can do.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointStep {
    #[default]
    Deliver,
    ArpReply,
    /// Wrap in VXLAN to another host and send it out of the uplink.
    Encap,
    /// Hand the packet, untouched, to the service program (a tail call):
    /// a new flow to a VIP, which needs more stack than the endpoint
    /// program has left.
    ToServiceProgram,
    /// The same, to the ICMP error program.
    ToIcmpErrorProgram,
    /// A backend's reply to a client of the routing mesh: out of the uplink.
    Uplink,
    /// Hand the packet, untouched, to the masquerade program: it leaves
    /// the cluster from a network with a way out of its own.
    ToMasqueradeProgram,
    /// Masqueraded (the plan's SNAT): out of the device `deliver.ifindex`,
    /// the kernel resolving the next hop.
    Masquerade,
}

/// One of the endpoint's actions (`step`) and its arguments.
#[derive(Clone, Copy, Default)]
pub struct EndpointAction {
    pub step: EndpointStep,
    /// Deliver: the receiver is known to have no policy
    /// (`LOCAL_NO_POLICY`), so its ingress is not judged. (Here, not in
    /// `Delivery`: this struct has the spare byte, and the endpoint
    /// program's deepest frame has none.)
    pub receiver_policy_free: bool,
    pub deliver: Delivery,
    pub arp: ArpAnswer,
    pub encap: Encap,
}

impl EndpointAction {
    #[inline(always)]
    pub fn uplink(out: Delivery) -> Self {
        EndpointAction {
            step: EndpointStep::Uplink,
            deliver: out,
            ..Default::default()
        }
    }

    #[inline(always)]
    pub fn masquerade(out_of: u32) -> Self {
        EndpointAction {
            step: EndpointStep::Masquerade,
            deliver: Delivery {
                ifindex: out_of,
                ..Delivery::default()
            },
            ..Default::default()
        }
    }

    #[inline(always)]
    pub fn deliver(to: Delivery) -> Self {
        EndpointAction {
            step: EndpointStep::Deliver,
            deliver: to,
            ..Default::default()
        }
    }

    #[inline(always)]
    pub fn arp_reply(answer: ArpAnswer) -> Self {
        EndpointAction {
            step: EndpointStep::ArpReply,
            arp: answer,
            ..Default::default()
        }
    }

    #[inline(always)]
    pub fn step(step: EndpointStep) -> Self {
        EndpointAction {
            step,
            ..Default::default()
        }
    }

    #[inline(always)]
    pub fn encap(encap: Encap) -> Self {
        EndpointAction {
            step: EndpointStep::Encap,
            encap,
            ..Default::default()
        }
    }
}

/// An ICMP error's translation: its quote's destination becomes `to_ip`
/// / `to_port` again, and its own source `src_to`. For a hairpin flow
/// also the quote's source (the hairpin address) and the error's own
/// destination (the same address) become `client`.
#[derive(Clone, Copy, Default)]
pub struct QuoteNat {
    pub set: bool,
    pub hairpin: bool,
    pub l3: u16,
    /// Where the quoted IPv4 header starts (after the ICMP header).
    pub quote: u16,
    pub proto: u8,
    pub to_ip: [u8; 4],
    pub to_port: [u8; 2],
    pub src_from: [u8; 4],
    pub src_to: [u8; 4],
    pub client: [u8; 4],
}

/// What the decap program can do: strip `strip` bytes of outer headers
/// and deliver, after applying `nat` (a reply's reverse NAT) to the inner
/// packet `inner` (offsets from the inner frame).
#[derive(Clone, Copy, Default)]
pub struct UplinkAction {
    pub strip: u32,
    pub into: Delivery,
    pub nat: Nat,
    pub inner: Target,
    /// An ICMP error's quote to translate (offsets in the inner frame).
    pub quote: QuoteNat,
    /// A backend's reply to a client of the routing mesh: `into` is an
    /// uplink and the client's next hop.
    pub to_client: bool,
    /// A client of the routing mesh that the host at this underlay
    /// address took in and tunnelled here (0.0.0.0: none): its replies go
    /// back there (`mesh::remember_ingress`, with the inner flow's
    /// network and TCP flags).
    pub mesh_ingress: [u8; 4],
    pub network: u16,
    pub tcp_flags: u8,
}

/// Into a local backend, through the tunnel to a remote one, or, for a
/// packet with DF set that the tunnel would make too big, back to the
/// client as ICMP fragmentation needed.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum MeshStep {
    #[default]
    Deliver,
    Tunnel,
    TooBig,
}

/// The next hop toward a backend's host, from the FIB.
#[derive(Clone, Copy, Default)]
pub struct Hop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// What the mesh program can do, and with what.
#[derive(Clone, Copy, Default)]
pub struct MeshAction {
    pub step: MeshStep,
    pub deliver: Delivery,
    pub encap: Encap,
    pub hop: Hop,
    /// TooBig: the largest packet the tunnel takes.
    pub mtu: u16,
    /// A new flow was translated: its event is emitted before the rewrite,
    /// with the packet as the client sent it.
    pub new_flow: bool,
}

/// What the masquerade program decided for a packet: the plan (passed to
/// the host untranslated unless an established flow's SNAT is in it), a
/// drop, or a new flow whose port is still to be claimed.
#[derive(Clone, Copy)]
pub struct MasqDecision {
    pub plan: super::outcome::Plan<EndpointAction>,
    pub drop: bool,
    pub reason: netd_common::counters::DropReason,
    /// A new flow from `flow`, to leave by `ifindex` translated to `to`.
    pub claim: bool,
    pub flow: netd_common::service::CtTuple,
    pub to: [u8; 4],
    pub ifindex: u32,
}

impl Default for MasqDecision {
    fn default() -> Self {
        MasqDecision {
            plan: super::outcome::Outcome::pass().into(),
            drop: false,
            reason: netd_common::counters::DropReason::Malformed,
            claim: false,
            flow: Default::default(),
            to: [0; 4],
            ifindex: 0,
        }
    }
}

impl MasqDecision {
    #[inline(always)]
    pub fn drop_for(&mut self, reason: netd_common::counters::DropReason) {
        self.drop = true;
        self.reason = reason;
    }
}

/// An ICMP error's translation back: its own destination `from` becomes
/// `to`, and its quote's source `from:from_port` becomes `to:to_port`.
#[derive(Clone, Copy, Default)]
pub struct QuoteBack {
    pub l3: u16,
    /// Where the quoted IPv4 header starts.
    pub quote: u16,
    pub proto: u8,
    pub from: [u8; 4],
    pub from_port: [u8; 2],
    pub to: [u8; 4],
    pub to_port: [u8; 2],
}
