//! What the pipeline decided for a packet. Decision stages only look; the
//! entry points alone rewrite the packet and turn this into an action.
//!
//! A [`Plan`] is the translations to apply (at most a new source and a new
//! destination: DNAT, SNAT, reverse NAT; see `netd_common::nat`), then one
//! terminal [`Outcome`]. One writer (`crate::nat::apply`) applies the
//! translations, before the entry point carries out the outcome.
//!
//! `Outcome<A>` is generic over the actions of one hook, so a stage can only
//! produce what the hook that runs it can carry out: the endpoint program
//! has [`EndpointAction`], the uplink program [`UplinkAction`].

use netd_common::{counters::DropReason, nat::Nat};

use crate::{icmp_quote::QuoteNat, nat::Target};

/// Translations of the packet `at`, then a terminal outcome.
#[derive(Clone, Copy)]
pub struct Plan<A> {
    pub nat: Nat,
    pub at: Target,
    pub outcome: Outcome<A>,
}

impl<A: Copy + Default> From<Outcome<A>> for Plan<A> {
    #[inline(always)]
    fn from(outcome: Outcome<A>) -> Self {
        Plan {
            nat: Nat::NONE,
            at: Target::default(),
            outcome,
        }
    }
}

/// The terminal step of a plan.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not netd's business, or nothing to change: hand it on untouched.
    Pass,
    Drop,
    Act,
}

/// What to do with the packet in the end: pass, drop for `reason`, or the
/// hook's `action`.
///
/// Structs with every field always set, not enums with payloads: copying
/// an enum moves its inactive variants' undefined bytes, which LLVM may
/// carry in any register (a packet pointer, say), and the verifier refuses
/// arithmetic on those even when the result is never used.
#[derive(Clone, Copy)]
pub struct Outcome<A> {
    pub step: Step,
    pub reason: DropReason,
    pub action: A,
}

impl<A: Copy + Default> Outcome<A> {
    #[inline(always)]
    pub fn pass() -> Self {
        Outcome {
            step: Step::Pass,
            reason: DropReason::Malformed,
            action: A::default(),
        }
    }

    #[inline(always)]
    pub fn drop(reason: DropReason) -> Self {
        Outcome {
            step: Step::Drop,
            reason,
            action: A::default(),
        }
    }

    #[inline(always)]
    pub fn act(action: A) -> Self {
        Outcome {
            step: Step::Act,
            reason: DropReason::Malformed,
            action,
        }
    }
}

/// Into the endpoint behind host veth `ifindex` (its peer), addressed to
/// `mac`: what the local-delivery stage hands every path that ends here.
/// Also out of an uplink to a client of the routing mesh, the way its
/// request came (`mac` the next hop, `gateway_mac` this host's).
#[derive(Clone, Copy, Default)]
pub struct Delivery {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The host end's MAC: the source of a frame netd addresses itself.
    pub gateway_mac: [u8; 6],
}

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
}

/// One of the endpoint's actions (`step`) and its arguments.
#[derive(Clone, Copy, Default)]
pub struct EndpointAction {
    pub step: EndpointStep,
    pub deliver: Delivery,
    pub arp: ArpAnswer,
    pub encap: crate::overlay::Encap,
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
    pub fn encap(encap: crate::overlay::Encap) -> Self {
        EndpointAction {
            step: EndpointStep::Encap,
            encap,
            ..Default::default()
        }
    }
}

/// What the XDP program on an uplink can do: strip `strip` bytes of outer
/// headers and deliver, after applying `nat` (a reply's reverse NAT) to
/// the inner packet `inner` (offsets from the inner frame).
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
}
